"""``dry_run``: what an ``optimize`` run will evaluate, stage by stage, and about how long it takes.

Every stage the run executes is counted from the mode registry and the options: the engine's
set-up, the baseline, the first level (screened: the screen pass, the estimates, the exact
evaluations near the epsilon boundary, the proxy check), the quantizer chain, the layer quantizer,
refine and its seeded pass, and the test-split measurements. Seconds come from evaluations timed
here with the run's own engine: one site predicting (first level and site-level candidates, cut
short as there), every site predicting (layer quantizer, refine), a forward pass of test images.

Counts are exact for the first level (and, screened, for its exact evaluations: the estimates are
computed here); quantizer and layer counts are upper bounds (``at most``); refine's are a model
(``about``: per epsilon one rejected move per unit, plus kept moves, about half of the options).
"""

from __future__ import annotations

import time

import numpy as np

from .context import Context
from .evaluate import correct_count
from .runfolder import make_engine
from .search.evaluator import Space, min_correct, near_boundary
from .search.modes import get_mode
from .search.options import SearchOptions
from .search.plan import Piece
from .search.run import baseline_plans, coupled_units


def _timed(fn) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def dry_run(ctx: Context, options: SearchOptions, engine_name: str = "naive", timed: int = 3) -> dict:
    """Per mode: evaluations and seconds per stage and in all; the run's shared costs apart."""
    options.check(len(ctx.split.val))
    (net, engine, _), setup = _timed(lambda: make_engine(engine_name, ctx, options))
    space = Space.of(net, options.patch_size, options.ones, options.gt, options.patterns)
    codes = len(space.codes)
    per_unit = min(codes, options.top_m or codes)
    sites, units = len(net.sites), len(coupled_units(net, options.couple))
    eps = max(options.eps)
    base = engine.base
    cut = min_correct(base, eps)
    rng = np.random.default_rng(options.seed)
    picks = [net.sites[int(i)].index for i in np.linspace(0, sites - 1, max(1, min(timed, sites)))]
    _, t = _timed(lambda: [engine.evaluate({s: space.mask(s, (Piece(None, None, space.codes[rng.integers(codes)]),))},
                                           cut) for s in picks])  # fmt: skip
    one_site = t / len(picks)
    everywhere = {s: space.mask(s, plan) for s, plan in baseline_plans(net, options.patch_size).items()}
    _, every_site = _timed(lambda: engine.evaluate(everywhere))
    x_test, y_test = ctx.data("test")
    k = min(len(y_test), options.batch_size)
    _, t = _timed(lambda: correct_count(ctx.model, x_test[:k], y_test[:k], ctx.spec, options.batch_size, ctx.device))
    test_pass = t / k * len(y_test)  # a measurement is two passes (with and without the masks)

    screened = options.screen and any(get_mode(m).below_site for m in options.modes)
    screener, screen_pass = None, 0.0
    if screened:
        from .search.screen import Screen

        screener, screen_pass = _timed(lambda: Screen(net, engine.batches, list(space.codes), space.sides))
    shared = {"engine set-up": setup, "baseline": every_site + (2 * test_pass if options.baseline else 0.0),
              "screen pass": screen_pass}  # fmt: skip
    modes = {}
    for name in options.modes:
        mode = get_mode(name)
        count: dict[str, int] = {}
        seconds: dict[str, float] = {}
        targets = len(mode.targets(space.channels(), space.blocks()))
        band_share = 0.0
        if screener is not None and mode.below_site:
            (near, estimated), t = _timed(lambda mode=mode: _near_boundary(screener, space, mode, base, eps,
                                                                          options.screen_band))  # fmt: skip
            band_share = near / max(1, targets * codes)
            count["first"], seconds["first"] = targets * codes, t  # estimates, computed here as in the run
            count["first: exact near eps"], seconds["first: exact near eps"] = near, near * one_site
            count["screen check"] = min(options.screen_check, estimated)
            seconds["screen check"] = count["screen check"] * one_site
        else:
            count["first"] = targets * codes
            seconds["first"] = count["first"] * one_site
        for stage, n in mode.stage_units(space.channels(), space.blocks()):
            count[stage] = n * per_unit
            below_site = n > sites
            exact = count[stage] * band_share if screener is not None and below_site else count[stage]
            seconds[stage] = exact * one_site
        if "layer" in options.optimizers:
            count["layer"] = sites * per_unit + 1
            seconds["layer"] = count["layer"] * every_site
        if "milp" in options.optimizers:  # at most: every round of every epsilon (solver time not counted)
            count["milp"] = len(options.eps) * options.milp_rounds + ("layer" not in options.optimizers)
            seconds["milp"] = count["milp"] * every_site
        if options.refine:  # a pass (and a seeded pass) per move order
            orders = len(options.refine_orders)
            count["refine"] = orders * (len(options.eps) * units + sites * per_unit // 2)
            seconds["refine"] = count["refine"] * every_site
            if options.baseline:
                count["seeded refine"] = orders * (1 + units + sites * per_unit // 4)
                seconds["seeded refine"] = count["seeded refine"] * every_site + sites * one_site
        measurements = len(options.eps) + (1 if options.baseline else 0)
        count["test measurements"] = measurements
        seconds["test measurements"] = measurements * 2 * test_pass
        modes[name] = {"evaluations": count, "stage_seconds": seconds, "seconds": sum(seconds.values())}
    total = sum(shared.values()) + sum(m["seconds"] for m in modes.values())
    per = {"one site": one_site, "every site": every_site, "test pass": test_pass}
    return {"modes": modes, "shared_seconds": shared, "seconds": total, "seconds_per_evaluation": per}


def _near_boundary(screener, space: Space, mode, base, eps: float, band: float) -> tuple[int, int]:
    """First-level estimates a screened search will evaluate exactly (those that move an image and
    lie within ``band`` points of ``eps``), and the number it keeps as estimates."""
    near = estimated = 0
    for site in space.sites:
        for est in screener.first_level(site, mode.by_channel, mode.by_block).values():
            if est.mispredicted == 0:
                continue
            if near_boundary(est, base, eps, band):
                near += 1
            else:
                estimated += 1
    return near, estimated
