"""Which steps may ``pick`` choose at an epsilon? Both scopes on one trajectory (issue 15, session 19).

    .venv/bin/python benchmarks/pick_scope.py RUN_DIR --out DIR [--checkpoint CKPT] [--data-root D]

Before 0.16, ``pick`` at epsilon e chose among every step of the trajectory, including those the milp
or refine rounds of a *larger* epsilon found (scope ``all``); since 0.16 only among the steps found for e
or a smaller epsilon (scope ``own``), so e's result no longer depends on which larger epsilons the run
was also asked for. This runs RUN_DIR's search once more with its options, every evaluation reused from
its records (only the solver and the screen's gradient pass run again; a solve that comes out
otherwise, e.g. with ``--milp-seconds 0``, is evaluated and counted), then for each epsilon picks in
both scopes from the same trajectory, asking the verify images as ``pick`` does (each step's verify
record made only when a pick reaches it), and measures each distinct pick on the check images and the
test split.

Printed: one Markdown table (per mode and epsilon, both scopes: % of network MACs saved on test, test
drop, check drop, calibration drop, the epsilon the pick was found for); written: DIR/pick_scope.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from crossneuron.audit import Held
from crossneuron.context import open_checkpoint
from crossneuron.evaluate import measure, plain_pass
from crossneuron.fsutil import output_folder, write_json
from crossneuron.net import attach
from crossneuron.runfolder import REUSE_SAME, check_images, make_engine, verify_images
from crossneuron.search.evaluator import config_hash
from crossneuron.search.options import SearchOptions
from crossneuron.search.quantize import eligible, pick_order
from crossneuron.search.run import Search
from crossneuron.search.store import Store, reusable_records
from crossneuron.thresholds import apply_thresholds

SCOPES = ("own", "all")


def lazy_pick(trajectory, plans_by_step, base, eps, budget, held, space, scope):
    """``quantize.pick`` in ``scope`` (``own``: its 0.16 behaviour; ``all``: every step a candidate), the
    verify record of a step made only when the candidates above it have failed."""
    steps = trajectory if scope == "own" else [replace(t, eps=None) for t in trajectory]
    for t in sorted((t for t in steps if eligible(t, base, eps, budget)), key=pick_order, reverse=True):
        if held is None or budget.within(held.record(plans_by_step[t.step], space), held.base, eps):
            return t
    raise AssertionError("the no-prediction step is always within")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished optimize run folder (its options and records)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoint", help="default: the one RUN's results name")
    ap.add_argument("--data-root")
    ap.add_argument("--milp-seconds", type=float, help="HiGHS's limit per solve (default: RUN's; 0: the exchanges "
                    "alone, a trajectory that does not depend on the machine's speed)")
    args = ap.parse_args()
    first = json.loads(next(args.run.glob("*/eps-*/result.json")).read_text())
    ctx = open_checkpoint(args.checkpoint or first["checkpoint"], args.data_root)
    opts = dict(first["options"])
    opts["ones"] = tuple(opts["ones"]) if opts.get("ones") else None
    if args.milp_seconds is not None:
        opts["milp_seconds"] = args.milp_seconds
    options = SearchOptions(**opts)
    options.check(len(ctx.split.val))
    net, engine, calib_hash = make_engine("fast", ctx, options)
    identity = {"checkpoint": str(ctx.path.resolve()), "weights_hash": ctx.weights_hash,
                "val_hash": ctx.meta["val_hash"], "calib_hash": calib_hash, "options": options.identity()}  # fmt: skip
    reused = reusable_records(args.run, identity, REUSE_SAME)
    out = output_folder(args.out)
    store = Store(out / "records.sqlite", identity)
    store.reuse(reused)
    test_net = attach(ctx.model, ctx.spec.input_shape, options.patch_size)
    apply_thresholds(test_net, net.thresholds())
    held = None
    if options.verify:
        xv, yv, _ = verify_images(ctx, options.calib, options.verify, options.seed)
        held = Held(test_net, ctx.spec, xv, yv, options.batch_size, ctx.device)
    search = Search(net, engine, store, options, held=held if options.milp_verify else None)
    xt, yt = ctx.data("test")
    xc, yc, _ = check_images(ctx, options.calib + options.verify, options.seed)
    plain_t = plain_pass(test_net, ctx.spec, xt, yt, options.batch_size, ctx.device)
    plain_c = plain_pass(test_net, ctx.spec, xc, yc, options.batch_size, ctx.device)
    measured: dict[str, tuple] = {}
    rows = []
    for mode in search.run():
        found = {u.step: u.eps for u in mode.trajectory}
        for eps in options.eps:
            for scope in SCOPES:
                t = lazy_pick(mode.trajectory, mode.plans_by_step, search.base, eps, search.budget, held,
                              search.space, scope)  # fmt: skip
                plans = mode.plans_by_step[t.step]
                key = config_hash(plans)
                if key not in measured:
                    masks = {s: search.space.mask(s, plans.get(s, ())) for s in search.space.sites}
                    measured[key] = (measure(test_net, ctx.spec, xt, yt, masks, options.batch_size, ctx.device,
                                             plain_t),
                                     measure(test_net, ctx.spec, xc, yc, masks, options.batch_size, ctx.device,
                                             plain_c))  # fmt: skip
                test, check = measured[key]
                rows.append({"mode": mode.mode, "eps": eps, "scope": scope, "step": t.step, "stage": t.stage,
                             "found_for_eps": found[t.step], "calib_drop": search.base.accuracy - t.result.accuracy,
                             "check_drop": check.drop, "test_drop": test.drop,
                             "macs_saved_pct_network": test.macs_saved_pct_network,
                             "oracle_pct_network": test.oracle_pct_network})  # fmt: skip
    new = store.db.execute("SELECT COUNT(*) FROM evals WHERE substr(key, 1, 7) != 'reused|' "
                           "AND engine NOT IN ('reused', 'screen')").fetchone()[0]  # exact, not in RUN's records
    write_json(out / "pick_scope.json", {"run": str(args.run), "new_evaluations": new, "rows": rows})
    print(f"{args.run} (milp seconds {options.milp_seconds:g}): {new} exact evaluations not in its records\n")
    print("| mode | eps | scope | found for | % network (test) | test drop | check drop | calib drop |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        found = "any" if r["found_for_eps"] is None else f"{r['found_for_eps']:g}"
        print(f"| {r['mode']} | {r['eps']:g} | {r['scope']} | {found} | {r['macs_saved_pct_network']:.2f} | "
              f"{r['test_drop']:.2f} | {r['check_drop']:.2f} | {r['calib_drop']:.2f} |")
    store.close()


if __name__ == "__main__":
    main()
