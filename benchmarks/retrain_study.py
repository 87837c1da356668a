"""Retraining strategies side by side (issue 17): what does each buy on one checkpoint and one set of masks?

    .venv/bin/python benchmarks/retrain_study.py --checkpoint checkpoints/alexnet-cifar10 \\
        --masks RUN/uniform-layer/eps-10/result.json --out runs/r17/ax3 [--epochs 2] [--lr 0.005] [--warmup 0] \\
        [--strategies labels,predictability,distill,distill+predictability] [--distill 0.5] [--temperature 4] \\
        [--predictability 10] [--slack 0] [--rounds 0] [--precision fp32] [--engine fast] [--device cpu] \\
        [--data-root DIR]

Every strategy is one ``crossneuron retrain`` into OUT/<strategy>-e<epochs> (resumable: run this again after a
kill; a finished strategy is read back, never trained again). ``--rounds N`` adds N search-retrain rounds
with distillation and the predictability term (OUT/rounds-e<epochs>). Then one table (also OUT/retrain_study.md
and .json): per strategy, the test accuracy with the masks, its drop against the *original* model, MACs
saved (% of network, test split), the oracle after retraining, the mispredicted share and the retraining
wall time (a round's search not included), with the masks on the original model as the first row.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from crossneuron.report.load import strategy
from crossneuron.retrain import retrain, rounds

STRATEGIES = {  # name -> which of the options it switches on
    "labels": (),
    "predictability": ("predictability",),
    "distill": ("distill",),
    "distill+predictability": ("distill", "predictability"),
}


def strategy_options(name: str, args) -> dict:
    """retrain()'s keyword arguments for one strategy (epochs, schedule, and what the strategy switches on)."""
    if name not in STRATEGIES:
        raise SystemExit(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
    on = STRATEGIES[name]
    return {"epochs": args.epochs, "lr": args.lr, "warmup": args.warmup, "temperature": args.temperature,
            "precision": args.precision,
            "distill": args.distill if "distill" in on else 0.0,
            "predictability": args.predictability if "predictability" in on else 0.0,
            "slack": args.slack if "predictability" in on else 0.0}  # fmt: skip


def row(label: str, numbers: dict, drop: float, epochs, seconds) -> dict:
    """One table row from a measurement on the test split (retrain's keys) and its drop against the original."""
    return {"strategy": label, "epochs": epochs, "test_accuracy": numbers["accuracy"], "drop_vs_original": drop,
            "macs_saved_pct_network": numbers["macs_saved_pct_network"],
            "oracle_pct_network": numbers["oracle_pct_network"], "mispredicted_rate": numbers["mispredicted_rate"],
            "no_prediction_accuracy": numbers["no_prediction_accuracy"], "seconds": seconds}  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = ["| strategy | epochs | test accuracy with masks | drop vs original | % network saved | oracle after | "
             "mispredicted | no-prediction accuracy | retrain wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        lines.append(f"| {r['strategy']} | {r['epochs']} | {r['test_accuracy']:.2f} | {r['drop_vs_original']:.2f} | "
                     f"{r['macs_saved_pct_network']:.2f} | {r['oracle_pct_network']:.2f} | "
                     f"{r['mispredicted_rate']:.2f}% | {r['no_prediction_accuracy']:.2f} | {seconds} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--masks", required=True, help="a search's result.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--warmup", type=float, default=0.0)
    ap.add_argument("--distill", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--predictability", type=float, default=10.0)
    ap.add_argument("--slack", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--precision", default="fp32", help="training passes: fp32 or bf16 (retrain --precision)")
    ap.add_argument("--engine", default="fast", help="the rounds' searches: naive, fast or batched")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root")
    args = ap.parse_args()
    out = Path(args.out)
    names = [s for s in args.strategies.split(",") if s]
    options = {name: strategy_options(name, args) for name in names}  # unknown names stop before any work
    common = {"data_root": args.data_root, "device": args.device}
    rows = []
    for name, kw in options.items():
        folder = out / f"{name}-e{args.epochs}"
        done = folder / "retrain.json"
        record = json.loads(done.read_text()) if done.is_file() else retrain(
            args.checkpoint, args.masks, out=folder, resume=True, quiet=True, **common, **kw)  # fmt: skip
        before, after, original = record["before"]["test"], record["after"]["test"], record["base_accuracy"]
        if not rows:
            rows.append(row("masks on the original model", before, original - before["accuracy"], 0, None))
        label = f"{name} ({strategy(record)})"
        rows.append(row(label, after, original - after["accuracy"], args.epochs, record["seconds"]))
        print(f"{name}: {record['seconds']:.0f} s", flush=True)
    if args.rounds:
        kw = strategy_options("distill+predictability", args)
        summary = rounds(args.checkpoint, args.masks, args.rounds, out=out / f"rounds-e{args.epochs}",
                         engine=args.engine, **common, **kw)  # fmt: skip
        for r in summary["rounds"]:
            label = f"round {r['round']} (distill+predictability, kept {r['kept']})"
            rows.append(row(label, r["chosen"], r["chosen"]["drop_vs_original"], args.epochs, r["seconds"]))
    text = (f"{args.checkpoint}, masks {args.masks}; lr {args.lr}, warm-up {args.warmup}, distill {args.distill} "
            f"(T {args.temperature}), predictability {args.predictability} (slack {args.slack}); "
            f"{platform.machine()}, {args.device}, torch {torch.__version__}\n\n{table(rows)}\n")  # fmt: skip
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrain_study.md").write_text(text)
    (out / "retrain_study.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
