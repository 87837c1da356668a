"""Time training steps of a registry model on the current device with the project's own batch pipeline.

    PYTHONPATH=src python3 scripts/device/probe_train.py [--device cuda] [--steps 60] [--model resnet18]

Prints ms per step and the implied seconds per CIFAR-10 epoch (45,000 images), so that a lease can
size its training run before starting it.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from crossneuron.data import dataset_spec
from crossneuron.models import build_model
from crossneuron.splits import batches

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
ap.add_argument("--steps", type=int, default=60)
ap.add_argument("--model", default="resnet18")
ap.add_argument("--dataset", default="cifar10")
ap.add_argument("--batch-size", type=int, default=128)
args = ap.parse_args()

spec = dataset_spec(args.dataset)
if args.device.startswith("cuda"):
    torch.backends.cudnn.benchmark = True
    print("gpu:", torch.cuda.get_device_name(), "torch", torch.__version__)
model = build_model(args.model, spec.num_classes, spec.input_shape, 1.0).to(args.device)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
n = args.batch_size * (args.steps + 10)
x = torch.randint(0, 256, (n, *spec.input_shape), dtype=torch.uint8)
y = torch.randint(0, spec.num_classes, (n,))
g = torch.Generator().manual_seed(0)
times = []
for i, (xb, yb) in enumerate(batches(x, y, spec, args.batch_size, args.device, g, train_augment=True)):
    if i == 10:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
    loss = F.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    loss.item()
if args.device.startswith("cuda"):
    torch.cuda.synchronize()
step = (time.perf_counter() - t0) / args.steps
print(f"{args.model} {args.dataset} batch {args.batch_size} on {args.device}: {1000 * step:.1f} ms/step, "
      f"{args.batch_size / step:.0f} img/s, {45000 / args.batch_size * step:.1f} s per 45,000-image epoch")
