"""Overhead of the Spatial layers: plain forward vs forward with every site predicting the diagonal.

CIFAR ResNet-18 (torchvision blocks, CIFAR stem, 10 classes), random images, one process, the two
forwards interleaved batch by batch so that both see the same machine state. Prints the ratio.

    .venv/bin/python benchmarks/overhead.py [--images 1000] [--batch 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import crossneuron as cn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--checkpoint", help="use this checkpoint and its first test images instead of random ones")
    ap.add_argument("--data-root")
    ap.add_argument("--zero-below", type=float, default=0.0,
                    help="site thresholds (0.14): F x each site's mean positive activation on these images")
    args = ap.parse_args()

    torch.manual_seed(0)
    count = args.images // args.batch
    if args.checkpoint:
        from crossneuron.context import open_checkpoint
        from crossneuron.splits import normalise

        ctx = open_checkpoint(args.checkpoint, args.data_root, args.device)
        model, shape = ctx.model, ctx.spec.input_shape
        x, _ = ctx.data("test")
        x = normalise(x[: count * args.batch], ctx.spec).to(args.device)
        batches = list(x.split(args.batch))
    else:
        shape = (3, 32, 32)
        model = cn.build_model("resnet18", 10, shape, width=args.width).to(args.device).eval()
        batches = [torch.randn(args.batch, *shape, device=args.device) for _ in range(count)]
    net = cn.attach(model, shape, patch_size=2).eval()
    for site in net.sites:
        net.set_mask(site, cn.diagonal(2))
    if args.zero_below:
        from crossneuron.thresholds import apply_thresholds, site_thresholds

        apply_thresholds(net, site_thresholds(net, torch.cat(batches), args.zero_below, args.batch))

    def timed(fn, x):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(x)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    with torch.inference_mode():
        model(batches[0]), net(batches[0])  # warm-up
        net.reset_stats()
        plain = predicted = 0.0
        for i, x in enumerate(batches):  # alternate which goes first
            order = [(model, "plain"), (net, "net")] if i % 2 == 0 else [(net, "net"), (model, "plain")]
            for fn, kind in order:
                dt = timed(fn, x)
                if kind == "plain":
                    plain += dt
                else:
                    predicted += dt
    stats = net.stats()
    n = len(batches) * args.batch
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}"
    )
    print(
        f"images: {n}, batch {args.batch}, "
        + (f"checkpoint {args.checkpoint}" if args.checkpoint else f"random, CIFAR ResNet-18 width {args.width}")
        + (f", --zero-below {args.zero_below:g}" if args.zero_below else "")
    )
    print(f"plain forward:     {plain:8.2f} s  ({n / plain:7.1f} images/s)")
    print(f"diagonal at all {len(net.sites)}: {predicted:8.2f} s  ({n / predicted:7.1f} images/s)")
    print(f"MACs saved: {stats.macs_saved_pct_network:.2f}% of network")
    print(f"ratio (predicted / plain): {predicted / plain:.3f}   goal <= 1.10")


if __name__ == "__main__":
    main()
