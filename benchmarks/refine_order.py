"""Refine's move order side by side (issue 14, item 6): the same search with each ``--refine-order``,
every result measured on the calibration images, the held-out check images (val minus calibration)
and the test split.

    .venv/bin/python benchmarks/refine_order.py --checkpoint checkpoints/resnet18-w0.25-fashion-mnist \\
        [--mode uniform-layer] [--orders mispredictions,index] [--out runs/bench/refine-order]

Each order's search goes to OUT/<mode>-<order> (re-run to resume). Prints one Markdown row per order and
budget: % of network MACs saved on test, and the accuracy drop on calibration, check and test images.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from crossneuron.context import open_checkpoint
from crossneuron.evaluate import measure
from crossneuron.optimize import check_images, optimize
from crossneuron.result import attach_result, load_result
from crossneuron.search.options import SearchOptions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--mode", default="uniform-layer")
    ap.add_argument("--orders", default="mispredictions,index")
    ap.add_argument("--eps", default="0,0.5,1,3")
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--engine", default="fast")
    ap.add_argument("--out", default="runs/bench/refine-order")
    args = ap.parse_args()
    ctx = open_checkpoint(args.checkpoint, args.data_root)
    eps = [float(e) for e in args.eps.split(",")]
    x_check, y_check = check_images(ctx, args.calib, 0)
    print(f"# {args.checkpoint}, {args.mode}, calib {args.calib}, check {len(y_check)} images; "
          f"{platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| order | eps | % network (test) | calib drop | check drop | test drop | search s |")
    print("|---|---|---|---|---|---|---|")
    for order in args.orders.split(","):
        options = SearchOptions(modes=[args.mode], patch_size=2, ones=(1, 2), eps=eps, calib=args.calib, screen=True,
                                refine=True, refine_order=order)  # fmt: skip
        out = Path(args.out) / f"{args.mode}-{order}"
        t0 = time.perf_counter()
        summary = optimize(ctx, options, out, args.engine)
        seconds = time.perf_counter() - t0
        for label in [f"eps-{e:g}" for e in eps] + ["at-baseline"]:
            result = load_result(out / args.mode / label / "result.json")
            check = measure(attach_result(ctx.model, ctx.spec.input_shape, result), ctx.spec, x_check, y_check, None)
            print(f"| {order} | {label[4:] if label.startswith('eps') else f'baseline ({result.eps:.2f})'} | "
                  f"{result.macs_saved_pct_network:.2f} | {result.calib_drop:.2f} | {check.drop:.2f} | "
                  f"{result.test_drop:.2f} | {seconds:.0f} |", flush=True)
        del summary


if __name__ == "__main__":
    main()
