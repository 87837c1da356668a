"""SnaPEA's exact mode (``crossneuron.snapea``, issue 19) on a checkpoint's test images: MACs skipped
per site and network, alone and combined with the 2018 diagonal (or a result's masks).

    .venv/bin/python benchmarks/snapea_exact.py --checkpoint checkpoints/resnet18-w0.25-fashion-mnist \\
        [--images 200] [--period 1,4] [--result RUN/uniform-layer/eps-1/result.json] [--data-root DIR]

The first ``--images`` test images; accuracy is unchanged by construction (the test suite checks that
every position cut short ends at or below zero), so only MACs are reported: % of network MACs.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import crossneuron as cn
from crossneuron.context import open_checkpoint
from crossneuron.result import load_result, result_masks
from crossneuron.snapea import measure
from crossneuron.splits import normalise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--period", default="1")
    ap.add_argument("--patch-size", type=int, default=2)
    ap.add_argument("--result", help="a result.json whose masks to combine with (default: the diagonal everywhere)")
    args = ap.parse_args()
    ctx = open_checkpoint(args.checkpoint, args.data_root)
    x, _ = ctx.data("test")
    x = normalise(x[: args.images], ctx.spec)
    net = cn.attach(ctx.model, ctx.spec.input_shape, args.patch_size)
    print(f"{args.checkpoint}, {len(x)} test images, {platform.machine()}, torch {torch.__version__}")
    for period in (int(k) for k in args.period.split(",")):
        t0 = time.perf_counter()
        alone = measure(net, x, period)
        print(f"\nperiod {period}: SnaPEA exact alone saves {alone.macs_skipped_pct_network:.2f}% of network MACs "
              f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        for s in alone.sites:
            share = 100.0 * s.macs_skipped / max(1, s.computed * s.macs_per_output)
            print(
                f"  {s.name:18s} {s.conv:24s} "
                + (f"{share:6.2f}% of its main conv" if s.eligible else f"not eligible: {s.why}")
            )
        masks = result_masks(net, load_result(args.result)) if args.result else \
            {s.index: cn.diagonal(args.patch_size) for s in net.sites}  # fmt: skip
        for site, mask in masks.items():
            net.set_mask(site, mask)
        net.reset_stats()
        both = measure(net, x, period)
        spatial = net.stats()
        for s in net.sites:
            net.set_mask(s, None)
        which = args.result or "diagonal"
        print(f"  spatial ({which}) {spatial.macs_saved_pct_network:.2f}%; combined "
              f"{spatial.macs_saved_pct_network + both.macs_skipped_pct_network:.2f}% "
              f"(SnaPEA on the computed positions {both.macs_skipped_pct_network:.2f}%); oracle "
              f"{spatial.oracle_pct_network:.2f}%")  # fmt: skip


if __name__ == "__main__":
    main()
