"""The budget study (issue 15): how far the test drop strays above epsilon for each budget rule and
calibration size, with the MACs saved in each cell.

    .venv/bin/python benchmarks/budget_study.py --checkpoint checkpoints/resnet18-w0.25-fashion-mnist \\
        --out runs/budget-study/fmnist-w025 [--calib 1000,2500,4000] [--budgets net,flips,ucb:0.9] \\
        [--modes uniform-layer,uniform-patch] [--eps 0,0.5,1,3] [--optimizers layer,milp] \\
        [--patch-size 2] [--ones 1-2] [--data-root DIR] [--collect]

One run folder per (mode, optimizer, calibration size, rule) under --out, each an ordinary ``optimize``
run (``--engine``, default fast; uniform-patch screened; ``layer``: the layer quantizer then refine, ``milp``: the milp
optimiser alone, 20 s of HiGHS per solve, ``--milp-seconds``), so a killed study resumes where it stopped and a
finished cell is never run again; each cell reuses the records of the cells on the same calibration
images (``optimize(reuse=...)``: same masks, same record). The check images are the same 1,000 val images in every cell.
``--collect`` only reads what is there: ``study.json`` and a Markdown table on stdout, per cell
calibration / check / test drop, test drop - eps and MACs saved (% of network, test split).

Every cell also audits its trajectory (``optimize(audit=True)``: each configuration measured on the check
images), and ``--rules`` replays each rule's pick (``audit.replay``) among all configurations the cells on
the same calibration images evaluated: per rule and eps, the check drop and the MACs saved on the check
images, without searching again. A rule's own search would also steer which configurations exist, so the
replay compares the rules' acceptance on one common pool; the cells run with a rule say what it finds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from crossneuron.audit import pool_audits, replay
from crossneuron.context import open_checkpoint
from crossneuron.fsutil import write_json
from crossneuron.runfolder import optimize
from crossneuron.search.budget import get_budget
from crossneuron.search.options import SearchOptions


def cell_folder(out: Path, mode: str, calib: int, budget: str, optimizer: str = "layer", verify: int = 0) -> Path:
    kind = "" if optimizer == "layer" else f"-{optimizer}"
    return out / f"{mode}{kind}-c{calib}-{budget.replace(':', '')}{f'-v{verify}' if verify else ''}"


def run_cell(
    ctx,
    out: Path,
    mode: str,
    calib: int,
    budget: str,
    eps: list[float],
    optimizer: str = "layer",
    patch: dict | None = None,
    verify: int = 0,
    engine: str = "fast",
    milp_seconds: float = 20.0,
) -> dict:
    """One cell: ``layer`` is the layer quantizer then refine; ``milp`` the milp optimiser alone
    (``milp-verify``: with ``--milp-verify``, each round judged on the verify images too); ``verify``
    images (``--verify``) that the chosen masks must keep the budget on too."""
    folder = cell_folder(out, mode, calib, budget, optimizer, verify)
    if (folder / "summary.json").is_file():
        return json.loads((folder / "summary.json").read_text())
    options = SearchOptions(modes=[mode], calib=calib, budget=budget, eps=eps, refine=optimizer == "layer",
                            screen=mode != "uniform-layer", optimizer=optimizer.removesuffix("-verify"),
                            milp_seconds=milp_seconds, verify=verify, milp_verify=optimizer == "milp-verify",
                            **(patch or {}))  # fmt: skip
    # the same masks on the same calibration images: records of the other cells are facts here too
    reuse = [f for f in out.glob(f"*-c{calib}-*") if f != folder and (f / "records.sqlite").is_file()]
    t0 = time.perf_counter()
    summary = optimize(ctx, options, folder, engine_name=engine, reuse=reuse, audit=True)
    print(f"{folder.name}: {time.perf_counter() - t0:.0f} s, {summary['evaluations']} records", flush=True)
    return summary


def optimizer_label(options: dict) -> str:
    """A cell's optimiser as the tables name it, read from its run's options (not its folder's name):
    ``layer+refine``, ``milp``, ``milp-verify``, or the optimisers joined by ``+``."""
    names = options.get("optimizer", "layer").split(",")
    if options.get("refine"):
        names.append("refine")
    label = "+".join(n.strip() for n in names)
    return f"{label}-verify" if options.get("milp_verify") else label


def collect(out: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(out.glob("*/summary.json")):
        s = json.loads(summary_path.read_text())
        for mode, info in s["modes"].items():
            for e, r in info["eps"].items():
                result = summary_path.parent / mode / f"eps-{e}" / "result.json"
                optimizer = optimizer_label(json.loads(result.read_text())["options"])
                verify = s.get("verify_images", 0)
                rows.append({"cell": summary_path.parent.name, "mode": mode, "optimizer": optimizer,
                             "verify": verify, "verify_drop": r.get("verify_drop"),
                             "calib": s["calib_images"],
                             "budget": s.get("budget", "net") + (f" +verify {verify}" if verify else ""),
                             "eps": float(e), "calib_drop": r["calib_drop"],
                             "check_drop": r["check_drop"], "test_drop": r["test_drop"],
                             "macs_saved_pct_network": r["macs_saved_pct_network"],
                             "oracle_pct_network": r["oracle_pct_network"], "seconds": info["seconds"]})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| mode | optimizer | calib | budget | eps | calib drop | check drop | test drop | test - eps | "
             "% network |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["mode"], r["optimizer"], r["calib"], r["budget"], r["eps"])):
        lines.append(f"| {r['mode']} | {r['optimizer']} | {r['calib']} | {r['budget']} | {r['eps']:g} | "
                     f"{r['calib_drop']:.2f} | "
                     f"{r['check_drop']:.2f} | {r['test_drop']:.2f} | {r['test_drop'] - r['eps']:+.2f} | "
                     f"{r['macs_saved_pct_network']:.2f} |")  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["optimizer"], r["calib"], r["budget"]), []).append(r)
    lines += ["", "| optimizer | calib | budget | cells eps <= 1 | test <= eps + 0.25 | check <= eps + 0.25 | "
              "mean test - eps |", "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for (optimizer, calib, budget), rs in sorted(groups.items()):
        small = [r for r in rs if r["eps"] <= 1]
        ok = sum(r["test_drop"] <= r["eps"] + 0.25 for r in small)
        ok_check = sum(r["check_drop"] <= r["eps"] + 0.25 for r in small)
        mean = sum(r["test_drop"] - r["eps"] for r in small) / max(1, len(small))
        lines.append(f"| {optimizer} | {calib} | {budget} | {len(small)} | {ok} | {ok_check} | {mean:+.2f} |")
    return "\n".join(lines)


def replay_table(out: Path, rules: list[str], eps: list[float]) -> tuple[str, list[dict]]:
    """Each rule's pick among the pooled configurations: check drop and check MACs saved per eps."""
    rows, lines = [], []
    for (calib, mode), pool in sorted(pool_audits(sorted(out.glob("*/*/audit.json"))).items()):
        lines += [f"\n{mode}, {calib} calibration images, {pool['check_images']} check images, "
                  f"{len(pool['rows'])} configurations pooled; cells: % network saved / drop on the check images\n",
                  "| rule | " + " | ".join(f"eps {e:g}" for e in eps) + " | check <= eps + 0.25 (eps <= 1) | "
                  "most saved at a check drop <= 1 |", "|---|" + "---|" * len(eps) + "---:|---:|"]  # fmt: skip
        for rule in rules:
            picks = [replay(pool, get_budget(rule), e) for e in eps]
            rows += [{"calib": calib, "mode": mode, "rule": rule, "eps": e, "check_drop": p["check_drop"],
                      "check_macs_saved_pct_network": p["check_macs_saved_pct_network"], "config": p["config"]}
                     for e, p in zip(eps, picks, strict=True)]  # fmt: skip
            small = [(e, p) for e, p in zip(eps, picks, strict=True) if e <= 1]
            ok = sum(p["check_drop"] <= e + 0.25 + 1e-9 for e, p in small)
            inside = [p["check_macs_saved_pct_network"] for p in picks if p["check_drop"] <= 1 + 1e-9]
            body = " | ".join(f"{p['check_macs_saved_pct_network']:.2f} / {p['check_drop']:.2f}" for p in picks)
            lines.append(f"| {rule} | {body} | {ok} of {len(small)} | {max(inside, default=0.0):.2f} |")
    return "\n".join(lines), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--calib", default="1000,2500,4000")
    ap.add_argument("--budgets", default="net,flips,ucb:0.9")
    ap.add_argument("--modes", default="uniform-layer,uniform-patch")
    ap.add_argument("--eps", default="0,0.5,1,3")
    ap.add_argument("--optimizers", default="layer",
                    help="layer (layer quantizer + refine), milp, milp-verify (--milp-verify), comma separated")
    ap.add_argument("--patch-size", type=int, default=2)
    ap.add_argument("--ones", help="A-B: ones per pattern (default 1 to p*p-1)")
    ap.add_argument("--patterns", default="all", help="pattern family: all, permutations or permutations+ones")
    ap.add_argument("--collect", action="store_true", help="only read the finished cells")
    ap.add_argument("--engine", default="fast", help="naive, fast or batched (on a GPU: batched)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--verify", default="0", help="verify images per cell, comma separated (0: none)")
    ap.add_argument("--milp-seconds", type=float, default=20.0, help="HiGHS's limit per solve (0: exchanges only)")
    ap.add_argument("--rules", help="budget rules to replay on the pooled audits, e.g. net,flips,paired:0.9")
    args = ap.parse_args()
    out = Path(args.out)
    if not args.collect:
        ctx = open_checkpoint(args.checkpoint, args.data_root, device=args.device)
        eps = [float(e) for e in args.eps.split(",")]
        patch = {"patch_size": args.patch_size, "patterns": args.patterns,
                 "ones": tuple(int(k) for k in args.ones.split("-")) if args.ones else None}  # fmt: skip
        for calib in (int(c) for c in args.calib.split(",")):
            for mode in args.modes.split(","):
                for optimizer in args.optimizers.split(","):
                    for verify in (int(v) for v in args.verify.split(",")):
                        for budget in args.budgets.split(","):
                            run_cell(ctx, out, mode, calib, budget, eps, optimizer, patch, verify, args.engine,
                                     args.milp_seconds)
    rows = collect(out)
    study = {"checkpoint": args.checkpoint, "rows": rows}
    text = table(rows)
    if args.rules:
        replayed, study["replay"] = replay_table(out, args.rules.split(","), [float(e) for e in args.eps.split(",")])
        text += "\n" + replayed
    write_json(out / "study.json", study)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
