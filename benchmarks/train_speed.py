"""Training throughput by precision: fp32 against bf16 (`train` / `retrain --precision`), side by side.

The training step `crossneuron retrain` runs (train.step_loss, then backward and an SGD step), on a
checkpoint's own training images with its augmentation, optionally with a search's masks predicting,
distillation from the original network and the predictability term. The precisions take turns batch by
batch so that both see the same machine state; the first batches of each are warm-up and not counted.
Prints images/s per precision and their ratio, and one JSON line.

    .venv/bin/python benchmarks/train_speed.py --checkpoint checkpoints/resnet18-cifar10 \\
        [--masks RUN/uniform-layer/eps-5/result.json] [--distill 0.5] [--predictability 10] \\
        [--batches 8] [--warmup 2] [--batch-size 128] [--precisions fp32,bf16] [--device cpu] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from reproduce import machine

from crossneuron import checkpoint
from crossneuron.context import open_checkpoint
from crossneuron.predictability import Predictability
from crossneuron.splits import batches
from crossneuron.train import TrainConfig, memory_format, step_loss, with_masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--masks", help="a search's result.json: train with those masks predicting")
    ap.add_argument("--distill", type=float, default=0.0)
    ap.add_argument("--predictability", type=float, default=0.0)
    ap.add_argument("--batches", type=int, default=8, help="timed batches per precision")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches per precision first")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root")
    args = ap.parse_args()

    ctx = open_checkpoint(args.checkpoint, args.data_root, args.device)
    x, y = ctx.data("train")
    runs = {}
    for precision in args.precisions.split(","):
        cfg = TrainConfig(model=ctx.meta["model"], dataset=ctx.meta["dataset"], width=ctx.meta["width"],
                          device=args.device, init=args.checkpoint, masks=args.masks, distill=args.distill,
                          predictability=args.predictability, precision=precision)  # fmt: skip
        cfg.check()
        fmt = memory_format(precision)
        model = checkpoint.load(args.checkpoint, args.device)[0].to(memory_format=fmt).train()
        teacher = None
        if args.distill > 0:
            teacher = checkpoint.load(args.checkpoint, args.device)[0].to(memory_format=fmt).eval()
            teacher.requires_grad_(False)
        runner = with_masks(model, ctx.spec, args.masks)
        term = Predictability(runner) if args.predictability > 0 else contextlib.nullcontext()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        stream = batches(x, y, ctx.spec, args.batch_size, args.device, torch.Generator().manual_seed(0), True)
        runs[precision] = {"cfg": cfg, "runner": runner, "teacher": teacher, "term": term, "opt": optimizer,
                           "stream": stream, "seconds": 0.0, "images": 0}  # fmt: skip
    for r in runs.values():
        r["term"].__enter__()
    for i in range(args.warmup + args.batches):
        for r in runs.values():
            xb, yb = next(r["stream"])
            t0 = time.perf_counter()
            _, loss = step_loss(r["cfg"], r["runner"], r["teacher"], r["term"], xb, yb)
            r["opt"].zero_grad(set_to_none=True)
            loss.backward()
            r["opt"].step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= args.warmup:
                r["seconds"] += time.perf_counter() - t0
                r["images"] += len(yb)
    rates = {p: r["images"] / r["seconds"] for p, r in runs.items()}
    base = rates.get("fp32")
    for p, rate in rates.items():
        ratio = f"  ({rate / base:.2f}x fp32)" if base and p != "fp32" else ""
        print(f"{p}: {rate:.1f} images/s{ratio}")
    print(json.dumps({"checkpoint": args.checkpoint, "masks": args.masks, "distill": args.distill,
                      "predictability": args.predictability, "batch_size": args.batch_size, "batches": args.batches,
                      "images_per_s": rates, "machine": machine(args.device)}))  # fmt: skip


if __name__ == "__main__":
    main()
