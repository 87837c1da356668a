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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--sizes", default="2,3,4,5")
    ap.add_argument("--ones-cap", type=int, default=3)
    ap.add_argument("--patterns", default="all", help="all (up to --ones-cap computed), permutations, or "
                    "permutations+ones (both: the permutations and up to --ones-cap computed)")
    ap.add_argument("--mode", default="uniform-layer")
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--eps", default="0,0.5,1,3")
    ap.add_argument("--engine", default="fast", help="naive, fast or batched (on a GPU: batched)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ctx = open_checkpoint(args.checkpoint, args.data_root, device=args.device)
    eps = [float(e) for e in args.eps.split(",")]
    rows = []
    for p in (int(v) for v in args.sizes.split(",")):
        ones = (p, p) if args.patterns == "permutations" else (1, min(args.ones_cap, p * p - 1))
        options = SearchOptions(modes=[args.mode], patch_size=p, ones=ones, patterns=args.patterns, calib=args.calib,
                                eps=eps)  # fmt: skip
        summary = optimize(ctx, options, Path(args.out) / f"p{p}", args.engine)
        diag = summary["baseline"]["test"]
        cells = [summary["modes"][args.mode]["eps"][f"{e:g}"] for e in eps]
        rows.append((p, options.ones, diag, cells, summary["seconds"], summary["evaluations"]))
        print(f"p {p}: {summary['evaluations']} evaluations, {summary['seconds']:.0f} s", flush=True)
    print(f"\n{args.checkpoint}, {args.mode}, patterns {args.patterns}, calib {args.calib}, budget {options.budget}, "
          f"optimizer {options.optimizer}; {platform.machine()}, torch {torch.__version__}\n")  # fmt: skip
    head = " | ".join(f"eps {e:g}" for e in eps)
    print(f"| p | ones | diagonal | {head} | oracle | search seconds |")
    print("|---|---|---|" + "---|" * len(eps) + "---|---|")
    for p, ones, diag, cells, seconds, _ in rows:
        body = " | ".join(f"{c['macs_saved_pct_network']:.2f} / {c['test_drop']:.2f}" for c in cells)
        print(f"| {p} | {ones[0]}-{ones[1]} | {diag['macs_saved_pct_network']:.2f} / {diag['drop']:.2f} | {body} | "
              f"{cells[0]['oracle_pct_network']:.2f} | {seconds:.0f} |")  # fmt: skip
    (Path(args.out) / "patch_size.json").write_text(json.dumps(
        [{"p": p, "ones": list(ones), "patterns": args.patterns, "diagonal": diag, "eps": cells, "seconds": s,
          "evaluations": n}
         for p, ones, diag, cells, s, n in rows], indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
