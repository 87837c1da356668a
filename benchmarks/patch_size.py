"""Patch size, the 2019 project's open question (issue 19, item 4): where does a larger patch stop paying?

    .venv/bin/python benchmarks/patch_size.py --checkpoint checkpoints/resnet18-w0.25-fashion-mnist \\
        --out runs/patch/fm [--sizes 2,3,4,5] [--ones-cap 3 | --patterns permutations] [--mode uniform-layer] \\
        [--calib 1000] [--data-root DIR]

For every patch size p one search (``optimize`` with the default optimiser and budget rule, resumable:
run it again after a kill) into OUT/p<p>, then one table: per p and epsilon, MACs saved (% of network,
test split) with the test drop beside it, the 2018 diagonal of that p, and the oracle. Patterns compute
at most ``--ones-cap`` positions of a patch (all p x p - 1 patterns of p = 5 are 2^25: too many to
search); the diagonal computes p. ``--patterns permutations`` searches instead the p! patterns that, like the
diagonal, compute one position in every row and every column (the share 1/p of each patch).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from crossneuron.context import open_checkpoint
from crossneuron.runfolder import optimize
from crossneuron.search.options import SearchOptions


def sweep_parser(doc: str) -> argparse.ArgumentParser:
    """The options every sweep shares (checkpoint, out, data, mode, calibration, eps, engine, device)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--mode", default="uniform-layer")
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--eps", default="0,0.5,1,3")
    ap.add_argument("--engine", default="fast", help="naive, fast or batched (on a GPU: batched)")
    ap.add_argument("--device", default="cpu")
    return ap


def open_sweep(ap: argparse.ArgumentParser):
    """Parsed arguments, the checkpoint's context and the epsilons."""
    args = ap.parse_args()
    ctx = open_checkpoint(args.checkpoint, args.data_root, device=args.device)
    return args, ctx, [float(e) for e in args.eps.split(",")]


def main() -> None:
    ap = sweep_parser(__doc__)
    ap.add_argument("--sizes", default="2,3,4,5")
    ap.add_argument("--ones-cap", type=int, default=3)
    ap.add_argument("--patterns", default="all", help="all (up to --ones-cap computed), permutations, or "
                    "permutations+ones (both: the permutations and up to --ones-cap computed)")
    args, ctx, eps = open_sweep(ap)
    points = []
    for p in (int(v) for v in args.sizes.split(",")):
        ones = (p, p) if args.patterns == "permutations" else (1, min(args.ones_cap, p * p - 1))
        points.append((f"p{p}", SearchOptions(modes=[args.mode], patch_size=p, ones=ones, patterns=args.patterns,
                                              calib=args.calib, eps=eps)))  # fmt: skip
    sweep(ctx, args, points, "p", f"patterns {args.patterns}")


def sweep(ctx, args, points: list[tuple[str, SearchOptions]], column: str, about: str) -> None:
    """One resumable search per point into OUT/<label>, then one table (and OUT/<column>.json): per point,
    MACs saved (% of network, test split) / test drop at every epsilon, the diagonal, the oracle, seconds."""
    rows = []
    for label, options in points:
        summary = optimize(ctx, options, Path(args.out) / label, args.engine)
        cells = [summary["modes"][args.mode]["eps"][f"{e:g}"] for e in options.eps]
        rows.append((label, options, summary["baseline"]["test"], cells, summary["seconds"], summary["evaluations"]))
        print(f"{label}: {summary['evaluations']} evaluations, {summary['seconds']:.0f} s", flush=True)
    options = points[-1][1]
    print(f"\n{args.checkpoint}, {args.mode}, {about}, calib {options.calib}, budget {options.budget}, "
          f"optimizer {options.optimizer}; {platform.machine()}, torch {torch.__version__}\n")  # fmt: skip
    head = " | ".join(f"eps {e:g}" for e in options.eps)
    print(f"| {column} | ones | diagonal | {head} | oracle | search seconds |")
    print("|---|---|---|" + "---|" * len(options.eps) + "---|---|")
    for label, o, diag, cells, seconds, _ in rows:
        body = " | ".join(f"{c['macs_saved_pct_network']:.2f} / {c['test_drop']:.2f}" for c in cells)
        print(f"| {label} | {o.ones[0]}-{o.ones[1]} | {diag['macs_saved_pct_network']:.2f} / {diag['drop']:.2f} | "
              f"{body} | {cells[0]['oracle_pct_network']:.2f} | {seconds:.0f} |")  # fmt: skip
    name = "patch_size.json" if column == "p" else f"{column.replace('-', '_')}.json"
    (Path(args.out) / name).write_text(json.dumps(
        [{"point": label, "p": o.patch_size, "ones": list(o.ones), "patterns": o.patterns, "zero_below": o.zero_below,
          "diagonal": diag, "eps": cells, "seconds": s, "evaluations": n}
         for label, o, diag, cells, s, n in rows], indent=2))  # fmt: skip

if __name__ == "__main__":
    main()
