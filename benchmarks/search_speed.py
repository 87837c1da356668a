"""Search speed: engines side by side on one checkpoint, in one process (issue 5, parts a and b).

    .venv/bin/python benchmarks/search_speed.py --checkpoint checkpoints/resnet18-w0.25-fashion-mnist \\
        [--mode uniform-layer] [--calib 1000] [--ones 1-2] [--engines naive,fast] [--targets 200] [--device cuda]
        [--threads 2]

An engine ``ray-ENGINE:W`` (e.g. ``ray-naive:2``) is ENGINE on W Ray workers of one thread each
(issue 18; a local cluster is started), ``ray-ENGINE:WxG`` the same in G groups (``--groups``); its Ray
overhead per evaluation (wall time beyond the slowest shard's own) is printed with it.

Part a (default): runs the complete search (all stages of the mode, calibration images only: the test-split
measurement afterwards is the same for every engine and is left out) with each engine into a
temporary record database, then prints wall times, their ratio and the number of evaluation
records that differ (must be 0). Engine set-up (the fast engine's cache pass) is included.

Part b (``--targets N``): the max-granularity first level on a fixed random sample of N targets
(site, channel, block, pattern; seed 0), each evaluated alone by every engine, interleaved target by
target (``--candidates`` at a time: the ``batched`` engine takes each round in one ``evaluate_many``
call); prints the wall ratio of the evaluations (set-up reported apart) and differing records.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

import torch

from crossneuron.context import open_checkpoint
from crossneuron.runfolder import make_engine
from crossneuron.search.options import SearchOptions
from crossneuron.search.run import Search
from crossneuron.search.store import Store


def machine(device: str) -> str:
    where = f"machine: {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    return f"{where}, {torch.cuda.get_device_name()}" if device.startswith("cuda") else where


def records(folder: Path) -> dict:
    db = sqlite3.connect(folder / "records.sqlite")
    rows = db.execute("SELECT key, correct, images, macs_saved, mispredicted, cut_short FROM evals").fetchall()
    return {r[0]: r[1:] for r in rows}


def same(ref, other, min_correct) -> bool:
    """Equal, or one of them cut short (its correct count an upper bound) where the other's exact
    accuracy is also beyond the cut."""
    if other[-1] and not ref[-1]:
        return ref[0] <= other[0] and ref[0] < min_correct
    if ref[-1] and not other[-1]:
        return other[0] <= ref[0] and other[0] < min_correct
    return ref[:4] == other[:4]


def build_engine(name: str, ctx, opts):
    """make_engine, or for ``ray-ENGINE:W[xG]`` that engine on W Ray workers in G groups."""
    if name.startswith("ray-"):
        from crossneuron.search.ray_engine import RayBackend

        inner, _, workers = name[4:].partition(":")
        w, _, g = (workers or "2").partition("x")
        return make_engine(inner, ctx, opts, RayBackend(int(w), groups=int(g or 1)))
    return make_engine(name, ctx, opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--mode", default="uniform-layer")
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--ones", default="1-2")
    ap.add_argument("--patch-size", type=int, default=2)
    ap.add_argument("--engines", default="naive,fast")
    ap.add_argument("--candidates", type=int, default=20, help="--targets: targets per round (a batched call)")
    ap.add_argument("--targets", type=int, default=0, help="part b: this many random max-granularity targets")
    ap.add_argument("--gt", type=float, default=10.0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the net and the images are")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of this process (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.targets:
        return part_b(args)
    a, b = (int(v) for v in args.ones.split("-"))
    ctx = open_checkpoint(args.checkpoint, args.data_root, device=args.device)
    options = dict(modes=args.mode.split(","), patch_size=args.patch_size, ones=(a, b), calib=args.calib)
    times, recs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            opts = SearchOptions(**options)
            opts.check(len(ctx.split.val))
            t0 = time.perf_counter()
            net, eng, _ = build_engine(engine, ctx, opts)
            store = Store(Path(tmp) / engine / "records.sqlite", {"engine": engine})
            search = Search(net, eng, store, opts)
            for _ in search.run():  # every mode (and the baseline record, since 0.4)
                pass
            times[engine] = time.perf_counter() - t0
            recs[engine] = records(Path(tmp) / engine)
            extra = f"  Ray overhead {1000 * eng.overhead / max(1, eng.calls):.1f} ms per evaluation" \
                if hasattr(eng, "overhead") else ""  # fmt: skip
            print(f"{engine:6s} {times[engine]:8.1f} s  {store.count()} evaluations{extra}")
            if hasattr(eng, "close"):  # a Ray engine gives its workers' CPUs back for the next one
                eng.close()
    names = list(times)
    ref = recs[names[0]]
    base = ref["base|-|None|None|None|None|None"][0]
    min_correct = base - max(SearchOptions().eps) * args.calib / 100
    print(machine(args.device))
    print(f"checkpoint {args.checkpoint}, mode {args.mode}, calib {args.calib}, p {args.patch_size}, ones {args.ones}")
    for name in names[1:]:
        other = recs[name]
        differ = [k for k in ref if k not in other or not same(ref[k], other[k], min_correct)]
        differ += sorted(set(other) - set(ref))
        cut = sum(r[-1] for r in other.values())
        print(
            f"{names[0]} / {name} wall ratio: {times[names[0]] / times[name]:.2f}x   differing records: "
            f"{len(differ)}   cut short: {cut}"
        )
        for k in differ[:5]:
            print(f"  differs: {k}: {ref.get(k)} vs {other.get(k)}")


def part_b(args) -> None:
    import random

    from crossneuron.patterns import pattern_codes
    from crossneuron.search.plan import Piece, block_grid, block_side, plan_mask

    a, b = (int(v) for v in args.ones.split("-"))
    ctx = open_checkpoint(args.checkpoint, args.data_root, device=args.device)
    opts = SearchOptions(modes=["max-granularity"], patch_size=args.patch_size, ones=(a, b), calib=args.calib,
                         gt=args.gt)  # fmt: skip
    opts.check(len(ctx.split.val))
    engines, setup = {}, {}
    for name in args.engines.split(","):
        t0 = time.perf_counter()
        engines[name] = make_engine(name, ctx, opts)[1]
        setup[name] = time.perf_counter() - t0
    net = next(iter(engines.values())).net
    p = args.patch_size
    space = []
    for s in net.sites:
        shape = tuple(net.spatial(s).mask.shape)
        side = block_side(s.shape[1], s.shape[2], p, args.gt)
        space += [(s.index, shape, side, c, k) for c in range(shape[0]) for k in range(len(block_grid(shape, side)))]
    rng = random.Random(0)
    codes = pattern_codes(p, (a, b))
    sample = [(*rng.choice(space), rng.choice(codes)) for _ in range(args.targets)]
    times = dict.fromkeys(engines, 0.0)
    results = {name: [] for name in engines}
    step = args.candidates  # targets per round; an engine with evaluate_many (batched) takes them in one call
    for i in range(0, len(sample), step):
        if i:
            print(f"  {i} targets: " + ", ".join(f"{n} {t:.1f} s" for n, t in times.items()), flush=True)
        chunk = [{site: plan_mask((Piece(channel, block, code),), shape, p, side)}
                 for site, shape, side, channel, block, code in sample[i : i + step]]  # fmt: skip
        for name, engine in engines.items():
            t0 = time.perf_counter()
            many = getattr(engine, "evaluate_many", None)
            got = many(chunk) if many else [engine.evaluate(masks) for masks in chunk]
            times[name] += time.perf_counter() - t0
            results[name] += [(r.correct, r.macs_saved, r.mispredicted) for r in got]
    names = list(engines)
    print(machine(args.device))
    print(f"checkpoint {args.checkpoint}, max-granularity first level, {args.targets} random targets, "
          f"calib {args.calib}, p {p}, ones {args.ones}, GT {args.gt:g}")  # fmt: skip
    for name in names:
        print(f"{name:6s} evaluations {times[name]:8.1f} s  set-up {setup[name]:6.1f} s")
    for name in names[1:]:
        differ = sum(x != y for x, y in zip(results[names[0]], results[name], strict=True))
        print(f"{names[0]} / {name} wall ratio (evaluations): {times[names[0]] / times[name]:.2f}x, "
              f"with set-up: {(times[names[0]] + setup[names[0]]) / (times[name] + setup[name]):.2f}x   "
              f"differing records: {differ}")  # fmt: skip


if __name__ == "__main__":
    main()
