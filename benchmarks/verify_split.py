"""Would a second held-out set keep the budget? A replay on the budget study's audits (issue 15).

    .venv/bin/python benchmarks/verify_split.py --out /work/runs/study-demo [--rules flips,paired:0.9] \\
        [--eps 0,0.5,1,3] [--splits 200] [--seed 0]

Every audited configuration (``budget_study.py``; ``audit.py``) carries which check images it gets right.
For each of ``--splits`` random halvings of the check images into A (``verify``) and B (``measure``),
each rule picks, per eps, one configuration among the pooled ones in three ways, and the pick's drop is
measured on B, which no way has seen:

- ``calib``: on the calibration records alone (what the search does today);
- ``verify``: on A alone (the configurations come from the search; A only accepts);
- ``both``: on the calibration and A counts added (lost, gained and images summed);
- ``and``: within on the calibration records and, separately, on A.

Printed per rule and way: the mean of (B drop - eps) over eps <= 1, how often the B drop stays within
eps + 0.25, and the mean saving (% of network MACs on the check images) at each eps.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from crossneuron.audit import pool_audits, unbits
from crossneuron.search.budget import get_budget
from crossneuron.search.quantize import Step, pick
from crossneuron.search.records import EvalResult


def choose(ways: list[tuple[list[EvalResult], EvalResult]], saved: np.ndarray, rule, eps: float) -> int:
    """Index of the configuration ``quantize.pick`` takes at ``eps``: the most saved (calibration order)
    that ``rule`` accepts on the first (results, base) of ``ways`` and, where there is one, the second."""
    (results, base), *held = ways
    order = np.round(saved * 1e6).astype(np.int64)  # pick orders by integer MACs; the same order
    steps = [Step(i, None, (), replace(r, macs_saved=int(m)))
             for i, (r, m) in enumerate(zip(results, order, strict=True))]
    second = (held[0][1], dict(enumerate(held[0][0]))) if held else None
    return pick(steps, base, eps, rule, second).step


def study(pool: dict, rules: list[str], eps: list[float], splits: int, seed: int) -> list[dict]:
    rows = pool["rows"]
    n = pool["check_images"]
    base_right = unbits(pool["check_base_right"], n)
    right = np.stack([unbits(r["check_right"], n) for r in rows])
    saved = np.array([r["calib_macs_saved_pct_network"] for r in rows])
    check_saved = np.array([r["check_macs_saved_pct_network"] for r in rows])
    c_img, c_base = pool["calib_images"], pool["calib_base_correct"]
    calib = [(r["calib_lost"], r["calib_correct"] - c_base + r["calib_lost"]) for r in rows]  # (lost, gained)
    out = []
    for rule_name in rules:
        rule = get_budget(rule_name)
        rng = np.random.default_rng(seed)  # every rule on the same halvings
        stats = {way: {"over": [], "held": [], "saved": {e: [] for e in eps}}
                 for way in ("calib", "verify", "both", "and")}
        for _ in range(splits):
            a = np.zeros(n, dtype=bool)
            a[rng.permutation(n)[: n // 2]] = True
            b = ~a
            lost_a = (base_right[None] & ~right)[:, a].sum(1)
            gained_a = (~base_right[None] & right)[:, a].sum(1)
            base_a, base_b = int(base_right[a].sum()), int(base_right[b].sum())
            drop_b = 100.0 * (base_b - right[:, b].sum(1)) / b.sum()
            ways = {
                "calib": ([EvalResult(c_base - lo + g, c_img, 0, 0, lost=lo) for lo, g in calib],
                          EvalResult(c_base, c_img, 0, 0, lost=0)),
                "verify": ([EvalResult(base_a - int(lo) + int(g), int(a.sum()), 0, 0, lost=int(lo))
                            for lo, g in zip(lost_a, gained_a, strict=True)], EvalResult(base_a, int(a.sum()), 0, 0)),
                "both": ([EvalResult(c_base + base_a - lo - int(la) + g + int(ga), c_img + int(a.sum()), 0, 0,
                                     lost=lo + int(la))
                          for (lo, g), la, ga in zip(calib, lost_a, gained_a, strict=True)],
                         EvalResult(c_base + base_a, c_img + int(a.sum()), 0, 0)),
            }  # fmt: skip
            ways = {k: [v] for k, v in ways.items()} | {"and": [ways["calib"], ways["verify"]]}
            for way, tests in ways.items():
                for e in eps:
                    i = choose(tests, saved, rule, e)  # the no-prediction configuration is always within
                    d = float(drop_b[i])
                    stats[way]["saved"][e].append(float(check_saved[i]))
                    if e <= 1:
                        stats[way]["over"].append(d - e)
                        stats[way]["held"].append(d <= e + 0.25 + 1e-9)
        for way, s in stats.items():
            out.append({"rule": rule_name, "way": way, "mean_over": float(np.mean(s["over"])),
                        "held": float(np.mean(s["held"])),
                        "saved": {f"{e:g}": float(np.mean(v)) for e, v in s["saved"].items()}})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the budget study's folder")
    ap.add_argument("--rules", default="net,flips,paired:0.9,paired:0.95,paired:0.99")
    ap.add_argument("--eps", default="0,0.5,1,3")
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    eps = [float(e) for e in args.eps.split(",")]
    report = {}
    for (calib, mode), pool in sorted(pool_audits(sorted(Path(args.out).glob("*/*/audit.json"))).items()):
        print(f"\n{args.out}: {mode}, {calib} calibration images, {len(pool['rows'])} configurations, "
              f"{pool['check_images']} check images halved {args.splits} times (A: verify, B: measure)\n")  # fmt: skip
        print("| rule | way | mean B drop - eps (eps <= 1) | B drop <= eps + 0.25 | "
              + " | ".join(f"% saved at eps {e:g}" for e in eps) + " |")
        print("|---|---|---:|---:|" + "---:|" * len(eps))
        rows = study(pool, args.rules.split(","), eps, args.splits, args.seed)
        for r in rows:
            print(f"| {r['rule']} | {r['way']} | {r['mean_over']:+.2f} | {100 * r['held']:.0f}% | "
                  + " | ".join(f"{v:.2f}" for v in r["saved"].values()) + " |")
        report[f"{mode}-c{calib}"] = rows
    (Path(args.out) / "verify_split.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
