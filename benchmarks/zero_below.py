"""Zero tolerance (``--zero-below``, 0.14): how far does counting small computed values as zero pay?

    .venv/bin/python benchmarks/zero_below.py --checkpoint checkpoints/resnet18-w0.25-fashion-mnist \\
        --out runs/zb/fm [--fractions 0,0.1,0.25,0.5] [--patch-size 2] [--ones A-B] [--patterns all] \\
        [--mode uniform-layer] [--calib 1000] [--eps 0,0.5,1,3] [--data-root DIR]

For every fraction F one search (``optimize`` with the default optimiser and budget rule, resumable: run it
again after a kill) into OUT/zb<F>, then one table: per F and epsilon, MACs saved (% of network, test split)
with the test drop beside it, the 2018 diagonal (at F) and the oracle. F = 0 is SPEC 4's exact-zero rule.
"""

from __future__ import annotations

from patch_size import open_sweep, sweep, sweep_parser

from crossneuron.search.options import SearchOptions


def main() -> None:
    ap = sweep_parser(__doc__)
    ap.add_argument("--fractions", default="0,0.1,0.25,0.5")
    ap.add_argument("--patch-size", type=int, default=2)
    ap.add_argument("--ones", help="A-B: computed positions per pattern (default 1 to p*p-1)")
    ap.add_argument("--patterns", default="all", help="all, permutations or permutations+ones")
    args, ctx, eps = open_sweep(ap)
    ones = tuple(int(v) for v in args.ones.split("-")) if args.ones else None
    points = [(f"zb{f:g}", SearchOptions(modes=[args.mode], patch_size=args.patch_size, ones=ones,
                                         patterns=args.patterns, calib=args.calib, eps=eps, zero_below=f))
              for f in (float(v) for v in args.fractions.split(","))]  # fmt: skip
    sweep(ctx, args, points, "zero-below", f"p {args.patch_size}, patterns {args.patterns}")


if __name__ == "__main__":
    main()
