"""Refine's move order side by side (issue 14, item 6): the same search with each ``--refine-order``,
every result measured on the calibration images, the held-out check images (val minus calibration)
and the test split.

    .venv/bin/python benchmarks/refine_order.py --checkpoint checkpoints/resnet18-w0.25-fashion-mnist \\
        [--mode uniform-layer] [--orders mispredictions,index] [--out runs/bench/refine-order]

Each order's search goes to OUT/<mode>-<order> (re-run to resume). The stages before refine do not depend
on the order, so each later order's records database starts as a copy of the first's without its refine
rows (same keys, same masks: the search finds them and evaluates only its own refine steps). Prints one
Markdown row per order and budget: % of network MACs saved on test, and the accuracy drop on calibration,
check and test images.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sqlite3
import time
from pathlib import Path

import torch

from crossneuron.context import open_checkpoint
from crossneuron.evaluate import measure
from crossneuron.result import attach_result, load_result
from crossneuron.runfolder import check_images, optimize
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
    ap.add_argument("--trace", action="store_true", help="replay each order's refine passes from its records")
    args = ap.parse_args()
    if args.trace:
        return trace_all(args)
    ctx = open_checkpoint(args.checkpoint, args.data_root)
    eps = [float(e) for e in args.eps.split(",")]
    x_check, y_check = check_images(ctx, args.calib, 0)
    print(
        f"# {args.checkpoint}, {args.mode}, calib {args.calib}, check {len(y_check)} images; "
        f"{platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print("| order | eps | % network (test) | calib drop | check drop | test drop | search s |")
    print("|---|---|---|---|---|---|---|")
    first = None
    for order in args.orders.split(","):
        options = SearchOptions(modes=[args.mode], patch_size=2, ones=(1, 2), eps=eps, calib=args.calib, screen=True,
                                refine=True, refine_order=order)  # fmt: skip
        out = Path(args.out) / f"{args.mode}-{order}"
        if first is not None and not (out / "records.sqlite").exists():
            seed_records(first / "records.sqlite", out / "records.sqlite", options)
        first = first or out
        t0 = time.perf_counter()
        summary = optimize(ctx, options, out, args.engine)
        seconds = time.perf_counter() - t0
        for label in [f"eps-{e:g}" for e in eps] + ["at-baseline"]:
            result = load_result(out / args.mode / label / "result.json")
            check = measure(attach_result(ctx.model, ctx.spec.input_shape, result), ctx.spec, x_check, y_check, None)
            print(
                f"| {order} | {label[4:] if label.startswith('eps') else f'baseline ({result.eps:.2f})'} | "
                f"{result.macs_saved_pct_network:.2f} | {result.calib_drop:.2f} | {check.drop:.2f} | "
                f"{result.test_drop:.2f} | {seconds:.0f} |",
                flush=True,
            )
        del summary


def trace_all(args) -> None:
    """Per order and epsilon of the first refine pass: moves tried and kept, MACs reached, and the first
    moves in order (site, the move's isolated tier, kept or not): replayed from the stored records on a
    copy of each database (an evaluation not found there would be an error, not a silent new one)."""
    import tempfile

    from crossneuron.runfolder import make_engine
    from crossneuron.search.budget import NET
    from crossneuron.search.quantize import move_key
    from crossneuron.search.run import Search
    from crossneuron.search.store import Store

    ctx = open_checkpoint(args.checkpoint, args.data_root)
    eps = [float(e) for e in args.eps.split(",")]
    for order in args.orders.split(","):
        folder = Path(args.out) / f"{args.mode}-{order}"
        options = SearchOptions(modes=[args.mode], patch_size=2, ones=(1, 2), eps=eps, calib=args.calib, screen=True,
                                refine=True, refine_order=order)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            db = sqlite3.connect(folder / "records.sqlite")
            identity = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM run")}
            db.close()
            shutil.copyfile(folder / "records.sqlite", Path(tmp) / "records.sqlite")
            net, engine, _ = make_engine("naive", ctx, options)
            engine.evaluate = lambda masks, min_correct=None: (_ for _ in ()).throw(RuntimeError("not recorded"))
            search = Search(net, engine, Store(Path(tmp) / "records.sqlite", identity), options)
            log = []
            evaluate = search.evaluator.evaluate

            def logged(where, plans, may_cut=False, cut_eps=None, log=log, evaluate=evaluate):
                result = evaluate(where, plans, may_cut, cut_eps)
                if where.stage == "refine":
                    log.append((cut_eps, plans, result))
                return result

            search.evaluator.evaluate = logged
            mode = search.run_mode(args.mode)
        base, names = search.base, {s.index: s.name for s in net.sites}
        current: dict = {}
        reached = base
        for e in eps:
            steps = [(p, r) for c, p, r in log if c == e]
            kept, moves = 0, []
            for plans, result in steps:
                moved = [s for s in plans if plans[s] != current.get(s)] + [s for s in current if s not in plans]
                ok = NET.within(result, base, e)
                site = moved[0] if moved else None
                opts = mode.options[site] if site is not None else []
                pos = next((k for k, o in enumerate(opts) if o.plan == plans.get(site)), len(opts))
                then = [opts[pos].result] if pos < len(opts) else [base]
                tier = move_key([opts[pos + 1].result if pos + 1 < len(opts) else base], then)[0]  # 2: free alone
                moves.append(f"{names.get(site, '?')}{'' if ok else ' x'}(t{tier})")
                if ok:
                    kept, current, reached = kept + 1, dict(plans), result
            saved = 100.0 * reached.macs_saved / (base.images * net.network_macs)
            print(
                f"{order} eps {e:g}: {len(steps)} moves tried, {kept} kept, ends at {saved:.2f}% network MACs, "
                f"drop {base.accuracy - reached.accuracy:.2f} (calib); first moves: {', '.join(moves[:8])}"
            )


def seed_records(source: Path, target: Path, options: SearchOptions) -> None:
    """``source``'s records less its refine steps, relabelled with ``options`` (only the order differs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(source)
    db.execute("PRAGMA wal_checkpoint(FULL)")
    db.close()
    shutil.copyfile(source, target)
    db = sqlite3.connect(target)
    with db:
        db.execute("DELETE FROM evals WHERE stage = 'refine'")
        db.execute("UPDATE run SET value = ? WHERE key = 'options'", (json.dumps(options.identity()),))
    db.close()


if __name__ == "__main__":
    main()
