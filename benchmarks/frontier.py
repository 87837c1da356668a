"""The most any exactly evaluated configuration saves at each calibration drop: what a search's records
can offer its pick (issue 15, session 21).

    .venv/bin/python benchmarks/frontier.py --checkpoint CKPT RUN [RUN ...] [--drops 0,0.5,1,2,3]

RUN: run folders (or their records.sqlite) searched on CKPT. Only databases whose recorded weights and
calibration images match the first RUN's are pooled, and none searched with a zero tolerance
(`--zero-below`, another prediction rule). Every exact evaluation (not cut short, not a screened
estimate) is one configuration of masks with its correct count and its lost images on the calibration
images; a configuration evaluated in several runs counts once. Per calibration drop d the table gives the
most MACs saved (% of network, on the calibration images) by any configuration whose net drop (`net`) or
whose lost share (`flips`) is at most d. A pick among these configurations cannot save more at that
calibration drop, and its test drop is on average larger than its calibration drop, not smaller
(RESULTS.md, the budget studies): where the frontier stays below a saving at calibration drop d, that
saving at a test drop <= d needs configurations the searches never evaluated, or another network.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from crossneuron import checkpoint
from crossneuron.context import spec_of
from crossneuron.net import attach


def database(run: Path) -> Path:
    return run if run.suffix == ".sqlite" else run / "records.sqlite"


def identity(db: sqlite3.Connection) -> dict:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM run")}


def pool(runs: list[Path]) -> tuple[dict[str, tuple[int, int, int]], int, int, list[str]]:
    """config -> (correct, macs saved, lost) over the matching databases; the base correct count, the
    calibration images, and the databases used."""
    first = None
    configs: dict[str, tuple[int, int, int]] = {}
    base = images = None
    used = []
    for run in dict.fromkeys(r.resolve() for r in runs):  # each database once
        try:
            db = sqlite3.connect(f"file:{database(run)}?mode=ro", uri=True)
            ident = identity(db)
        except sqlite3.Error as exc:
            print(f"skipped {run}: no readable records.sqlite ({exc})")
            continue
        try:
            key = (ident.get("weights_hash"), ident.get("calib_hash"))
            first = first or key
            if key != first or (ident.get("options") or {}).get("zero_below"):
                print(f"skipped {run}: other weights, calibration images or prediction rule")
                continue
            used.append(str(run))
            for config, stage, correct, n, macs, lost, cut, est in db.execute(
                "SELECT config, stage, correct, images, macs_saved, lost, cut_short, estimated FROM evals"
            ):
                if stage == "base":
                    base, images = correct, n
                elif not cut and not est and lost is not None:
                    configs[config] = (correct, macs, lost)
        finally:
            db.close()
    if base is None:
        raise SystemExit("error: no base record in these runs: are they crossneuron run folders?")
    return configs, base, images, used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--checkpoint", required=True, help="the checkpoint the runs searched (for its network MACs)")
    ap.add_argument("--drops", default="0,0.5,1,1.5,2,3", help="calibration drops in points, comma separated")
    args = ap.parse_args()
    model, meta = checkpoint.load(Path(args.checkpoint), "cpu")
    network = attach(model, spec_of(meta).input_shape, 2).network_macs
    configs, base, images, used = pool(args.runs)
    rows = [(100 * macs / (network * images), 100 * (base - correct) / images, 100 * lost / images)
            for correct, macs, lost in configs.values()]  # fmt: skip
    print(f"{len(rows):,} exact configurations from {len(used)} databases; {images} calibration images, "
          f"{base} right without prediction")
    print("\n".join(f"  {u}" for u in used) + "\n")
    print("| calibration drop <= | most saved, `net` (its net drop, lost share) | most saved, `flips` (its net drop) |")
    print("|---:|---|---|")
    for d in (float(x) for x in args.drops.split(",")):
        net = max((r for r in rows if r[1] <= d + 1e-9), default=None)
        flips = max((r for r in rows if r[2] <= d + 1e-9), default=None)
        print(f"| {d:g} | {cell(net, True)} | {cell(flips, False)} |")


def cell(row, lost: bool) -> str:
    if row is None:
        return "-"
    return f"{row[0]:.2f} ({row[1]:.1f}" + (f", {row[2]:.1f})" if lost else ")")


if __name__ == "__main__":
    main()
