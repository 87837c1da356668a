"""The most any exactly evaluated configuration saves at each calibration drop: what a search's records
can offer its pick (issue 15, session 21).

    .venv/bin/python benchmarks/frontier.py --checkpoint CKPT RUN [RUN ...] [--drops 0,0.5,1,2,3] [--rules net,flips]

RUN: run folders (or their records.sqlite) searched on CKPT. Only databases whose recorded weights and
calibration images match the first RUN's are pooled, and none searched with a zero tolerance
(`--zero-below`, another prediction rule). Every exact evaluation (not cut short, not a screened
estimate) is one configuration of masks with its correct count and its lost images on the calibration
images; a configuration evaluated in several runs counts once. Per calibration drop d the table gives the
most MACs saved (% of network, on the calibration images) by any configuration that each budget rule
(`--rules`, judged by the search's own `Budget.within`) accepts at eps d, with that configuration's net drop.
A pick among these configurations cannot save more at that
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
from crossneuron.macs import pct
from crossneuron.net import attach
from crossneuron.search.budget import get_budget
from crossneuron.search.records import EvalResult


def database(run: Path) -> Path:
    return run if run.suffix == ".sqlite" else run / "records.sqlite"


def identity(db: sqlite3.Connection) -> dict:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM run")}


def pool(runs: list[Path]) -> tuple[dict[str, EvalResult], EvalResult, list[str]]:
    """config -> its exact record over the matching databases; the base record; the databases used."""
    first = None
    configs: dict[str, EvalResult] = {}
    base = None
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
                record = EvalResult(correct, n, macs, 0, lost=lost)
                if stage == "base":
                    base = record
                elif not cut and not est and lost is not None:
                    configs[config] = record
        finally:
            db.close()
    if base is None:
        raise SystemExit("error: no base record in these runs: are they crossneuron run folders?")
    return configs, base, used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--checkpoint", required=True, help="the checkpoint the runs searched (for its network MACs)")
    ap.add_argument("--drops", default="0,0.5,1,1.5,2,3", help="calibration drops in points, comma separated")
    ap.add_argument("--rules", default="net,flips", help="budget rules (as --budget takes them), comma separated")
    args = ap.parse_args()
    model, meta = checkpoint.load(Path(args.checkpoint), "cpu")
    network = attach(model, spec_of(meta).input_shape, 2).network_macs
    configs, base, used = pool(args.runs)
    rules = [get_budget(r) for r in args.rules.split(",")]
    net = get_budget("net")
    print(f"{len(configs):,} exact configurations from {len(used)} databases; {base.images} calibration images, "
          f"{base.correct} right without prediction")
    print("\n".join(f"  {u}" for u in used) + "\n")
    print("| calibration drop <= | " + " | ".join(f"most saved, `{r.name}` (its net drop)" for r in rules) + " |")
    print("|---:|" + "---|" * len(rules))
    for d in (float(x) for x in args.drops.split(",")):
        cells = []
        for rule in rules:
            best = max((r for r in configs.values() if rule.within(r, base, d)), key=lambda r: r.macs_saved,
                       default=None)  # fmt: skip
            cells.append("-" if best is None else
                         f"{pct(best.macs_saved, best.images, network):.2f} ({net.charge(best, base):.1f})")
        print(f"| {d:g} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
