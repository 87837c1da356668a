"""The stages of one mode's search, as functions over a ``Stages`` context (SPEC 6):

first level -> the mode's quantizer chain (``modes.Mode.chain``) -> layer quantizer and/or the milp
optimiser -> refine -> refine's seeded pass. Every evaluation goes through the ``Evaluator`` (memoised in the store);
the decisions are the pure functions of ``quantize.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .evaluator import Evaluator, Space, config_hash
from .milp import Problem, allowed_lost, loosen, solve, tighten
from .modes import QUANTIZERS, Key, Mode
from .options import SearchOptions
from .plan import Piece, SitePlan
from .progress import Progress
from .quantize import COMBINERS, MOVE_ORDERS, Option, Step, forward_quantize, layer_quantize, rank
from .records import EvalResult
from .store import Where


@dataclass
class Stages:
    space: Space
    ev: Evaluator
    options: SearchOptions
    progress: Progress
    screen_checks: dict[str, dict] = field(default_factory=dict)
    model: object | None = None  # a Screen for the milp optimiser's per-image margins (None: not asked)
    held: object | None = None  # an audit.Held on the verify images: the milp's rounds must keep the budget there too

    @property
    def base(self) -> EvalResult:
        return self.ev.base

    def rank(self, options: list[Option]) -> list[Option]:
        """Options within the largest epsilon, ranked (SPEC 6), at most top-M."""
        return rank(options, self.base, self.ev.eps, self.options.top_m, self.ev.budget)


def first_level(st: Stages, mode: Mode) -> dict[Key, list[Option]]:
    """Target -> ranked options, each pattern evaluated with only that target predicting; targets below
    site level take the screen's estimate in a screened search."""
    if st.ev.screener is not None and mode.below_site:
        return _first_level_screened(st, mode)
    targets = mode.targets(st.space.channels(), st.space.blocks())
    codes = st.space.codes
    total, done, ranked = len(targets) * len(codes), 0, {}
    # targets' patterns are independent: one call per chunk of targets (batched engines, Ray groups)
    for chunk in chunks(targets, len(codes), st.ev.parallel):
        plans = [(Piece(channel, block, code),) for _, channel, block in chunk for code in codes]
        wheres = [Where("first", mode.name, *target, pattern=code) for target in chunk for code in codes]
        sites = [site for site, _, _ in chunk for _ in codes]
        results = st.ev.evaluate_many([(w, {s: p}) for w, s, p in zip(wheres, sites, plans, strict=True)], may_cut=True)
        for t, target in enumerate(chunk):
            part = slice(t * len(codes), (t + 1) * len(codes))
            opts = [Option(plan, r) for plan, r in zip(plans[part], results[part], strict=True)]
            for option in opts:
                done += 1
                st.progress(f"{mode.name}: first level", done, total, option.result)
            ranked[target] = st.rank(opts)
    return ranked


def chunks(units: list, per_unit: int, parallel: int) -> list[list]:
    """``units`` (each ``per_unit`` independent candidates) in consecutive chunks with enough candidates
    to keep ``parallel`` evaluators busy: one unit per chunk where ``parallel`` is 1 (so a kill loses at
    most one unit's records)."""
    step = max(1, -(-parallel // max(1, per_unit)))
    return [units[i : i + step] for i in range(0, len(units), step)]


def _first_level_screened(st: Stages, mode: Mode) -> dict[Key, list[Option]]:
    stage = f"{mode.name}: first level (screened)"
    total = len(mode.targets(st.space.channels(), st.space.blocks())) * len(st.space.codes)
    done, ranked, options = 0, {}, []
    st.progress(stage, 0, total, st.base)
    for site in st.space.sites:
        per_target: dict[Key, list[Option]] = {}
        for (channel, block, code), est in st.ev.screener.first_level(site, mode.by_channel, mode.by_block).items():
            plan = (Piece(channel, block, code),)
            where = Where("first", mode.name, site, channel, block, pattern=code)
            option = Option(plan, st.ev.screened(where, site, plan, est))
            per_target.setdefault((site, channel, block), []).append(option)
            options.append(((site, channel, block), option))
            st.progress.seen(option.result)
        done += len(per_target) * len(st.space.codes)
        st.progress(stage, done, total)
        st.ev.flush()
        ranked.update({t: st.rank(o) for t, o in per_target.items()})
    check = check_screen(st, mode.name, options)
    if check is not None:
        st.screen_checks[mode.name] = check
    return ranked


def check_screen(st: Stages, mode: str, estimates: list[tuple[Key, Option]]) -> dict | None:
    """Evaluate a fixed random sample of screened first-level estimates exactly; the proxy's rank
    correlation with exact accuracy and its error (None when nothing was estimated)."""
    from .screen import spearman

    pool = [(t, o) for t, o in estimates if o.result.estimated]
    if not pool or not st.options.screen_check:
        return None
    rng = np.random.default_rng(st.options.seed)
    sample = [pool[i] for i in sorted(rng.permutation(len(pool))[: st.options.screen_check])]
    est, exact = [], []
    for (site, channel, block), option in sample:
        where = Where("check", mode, site, channel, block, pattern=option.plan[0].code)
        exact.append(st.ev.evaluate(where, {site: option.plan}).correct)
        est.append(option.result.correct)
    return {
        "sample": len(sample),
        "spearman": spearman(est, exact),
        "mean_abs_error_points": float(np.mean(np.abs(np.array(est) - np.array(exact)))) * 100.0 / st.base.images,
        "estimated_records": len(pool),
        "band_points": st.options.screen_band,
    }


def quantize(st: Stages, mode: str, stage: str, units: dict[Key, list[list[Option]]]) -> dict[Key, list[Option]]:
    """One quantizer (``patch`` or ``channel``): per unit, candidates from its sub-targets' options
    (``--combine``), each evaluated with only its site predicting (screened below site level)."""
    combine = COMBINERS[st.options.combine]
    total = sum(max((len(o) for o in subs), default=0) for subs in units.values())
    done, out = 0, {}
    plans = {key: list(combine(subs)) for key, subs in units.items()}
    width = max((len(p) for p in plans.values()), default=1)
    # units' candidates are independent: one call per chunk of units (batched engines, Ray groups)
    for chunk in chunks(list(plans), width, st.ev.parallel):
        items = [(Where(stage, mode, site, channel, block, candidate=k), {site: plan})
                 for site, channel, block in chunk for k, plan in enumerate(plans[(site, channel, block)])]  # fmt: skip
        if st.ev.screener is not None and chunk[0][1:] != (None, None):  # below site level
            results = [st.ev.screened(w, site, plan) for w, ps in items for site, plan in ps.items()]
        else:
            results = st.ev.evaluate_many(items, may_cut=True)
        start = 0
        for key in chunk:
            opts = [Option(plan, r) for plan, r in zip(plans[key], results[start : start + len(plans[key])],
                                                       strict=True)]  # fmt: skip
            start += len(plans[key])
            for option in opts:
                done += 1
                st.progress(f"{mode}: {stage} quantizer", done, total, option.result)
            out[key] = st.rank(opts)
    st.ev.flush()
    return out


def _merge(level: dict[Key, list[Option]], dimension: str) -> dict[Key, list[list[Option]]]:
    """Units of the next quantizer: the targets of ``level`` grouped with ``dimension`` set to all,
    each unit's sub-targets in channel and block order."""
    units: dict[Key, list[list[Option]]] = {}
    for site, channel, block in sorted(level, key=lambda k: tuple(-1 if v is None else v for v in k)):
        unit = (site, None, block) if dimension == "channel" else (site, channel, None)
        units.setdefault(unit, []).append(level[(site, channel, block)])
    return units


def site_options(st: Stages, mode: Mode) -> dict[int, list[Option]]:
    """Each site's ranked options for the layer quantizer: the first level merged by the mode's chain."""
    level = first_level(st, mode)
    for stage in mode.chain:
        level = quantize(st, mode.name, stage, _merge(level, QUANTIZERS[stage]))
    return {site: level[(site, None, None)] for site in st.space.sites}


def layer_stage(st: Stages, mode: str, units, options, plans_by_step: list) -> list[Step]:
    """SPEC 6's layer quantizer; every step evaluated on the whole network (cut short outside the
    largest epsilon: moves follow isolated records and ``pick`` never takes a step cut short)."""
    total = sum(len(v) for v in options.values()) + 1

    def evaluate(plans: dict[int, SitePlan], step: int) -> EvalResult:
        plans_by_step.append(plans)
        result = st.ev.evaluate(Where("layer", mode, candidate=step), plans, may_cut=True)
        st.progress(f"{mode}: layer quantizer", step + 1, total, result)
        return result

    return layer_quantize(units, options, st.base, evaluate)


def refine_stage(st: Stages, mode: str, units, options, plans_by_step: list, start: int, eps: list[float],
                 seed: dict[int, int] | None = None, order: str = "mispredictions") -> list[Step]:  # fmt: skip
    """``quantize.forward_quantize`` from no prediction (or from ``seed``) with the move order ``order``,
    steps numbered from ``start``."""
    total = sum(len(v) for v in options.values()) + 1

    def evaluate(plans: dict[int, SitePlan], step: int, cut: float) -> EvalResult:
        plans_by_step.append(plans)
        result = st.ev.evaluate(Where("refine", mode, candidate=step), plans, may_cut=True, cut_eps=cut)
        st.progress(f"{mode}: refine", step + 1 - start, total, result)
        return result

    return forward_quantize(units, options, st.base, evaluate, eps, start, seed, MOVE_ORDERS[order], st.ev.budget)


def with_seed(st: Stages, mode: str, options: dict[int, list[Option]],
              seed_plans: dict[int, SitePlan]) -> tuple[dict[int, list[Option]], dict[int, int]]:  # fmt: skip
    """Each site's options with the seed's plan among them (evaluated alone where it is not, and
    placed by MACs saved), and the seed as an index into each list."""
    out, seed = {}, {}
    for site, opts in options.items():
        plan = seed_plans[site]
        index = next((k for k, o in enumerate(opts) if o.plan == plan), None)
        if index is None:
            option = Option(plan, st.ev.evaluate(Where("seed", mode, site=site), {site: plan}))
            key = (-option.result.macs_saved, -option.result.correct)
            index = next((k for k, o in enumerate(opts) if (-o.result.macs_saved, -o.result.correct) > key),
                         len(opts))  # fmt: skip
            opts = [*opts[:index], option, *opts[index:]]
        out[site], seed[site] = opts, index
    return out, seed


def milp_stage(st: Stages, mode: str, options: dict[int, list[Option]], plans_by_step: list,
               start: int) -> list[Step]:  # fmt: skip
    """The milp optimiser (``milp.py``) for each epsilon, smallest first: solve, evaluate the choice
    exactly; while it breaks the budget, tighten and solve again; while it keeps the budget and none
    has failed yet, loosen; once there is a verified allowance and a failed one, bisect between them
    (at most ``milp_rounds`` solves). With ``st.held`` (``--milp-verify``) a choice keeps the budget only
    where it keeps it on the verify images too (``pick`` asks both anyway), so the rounds search below
    the boundary that counts instead of beyond it.
    Records are keyed by their masks (``candidate`` = a prefix of the plans' hash), so a resumed run
    finds them whatever the solver's timing. Steps numbered from ``start``, each tagged with the
    epsilon it was solved for (``pick`` at a smaller one passes it by); with nothing before them, the
    first step is no prediction (always within, tagged for every epsilon)."""
    sites = st.space.sites
    screen = st.model
    n = len(screen.margin)
    problem = Problem(
        macs=[np.array([o.result.macs_saved for o in options[s]], dtype=np.int64) for s in sites],
        deltas=[np.stack([screen.delta(s, o.plan).cpu().numpy() for o in options[s]]) if options[s]
                else np.zeros((0, n), dtype=np.float32) for s in sites],
        margin=screen.margin.cpu().numpy(), base_hit=screen.base_hit.cpu().numpy(),
    )  # fmt: skip
    right = problem.margin[problem.base_hit]
    scale = float(np.median(right)) if len(right) else 1.0
    steps: list[Step] = []

    def evaluate(choice: list[int | None], eps: float, found: float | None) -> EvalResult:
        plans = {s: options[s][k].plan for s, k in zip(sites, choice, strict=True) if k is not None}
        step = start + len(steps)
        plans_by_step.append(plans)
        where = Where("milp", mode, candidate=int(config_hash(plans)[:12], 16))
        result = st.ev.evaluate(where, plans, may_cut=True, cut_eps=eps)
        positions = tuple(len(options[s]) if k is None else k for s, k in zip(sites, choice, strict=True))
        steps.append(Step(step, None, positions, result, "milp", found))
        st.progress(f"{mode}: milp", len(steps), len(st.options.eps) * st.options.milp_rounds, result)
        return result, plans

    def judged(result: EvalResult, plans, eps: float) -> EvalResult | None:
        """None where the choice keeps the budget (on the verify images too, with ``st.held``), else the
        record that broke it, its lost images on the calibration scale (what ``tighten`` reads)."""
        if result.cut_short or not st.ev.budget.within(result, st.base, eps):
            return result
        if st.held is None:
            return None
        held = st.held.record(plans, st.space)
        if st.ev.budget.within(held, st.held.base, eps):
            return None
        scaled = round((held.lost or 0) * result.images / held.images)
        return EvalResult(result.correct, result.images, result.macs_saved, result.mispredicted,
                          lost=max(result.lost or 0, scaled))  # fmt: skip

    if start == 0:
        evaluate([None] * len(sites), max(st.options.eps), None)  # no prediction: a candidate at every eps
    most = int((problem.base_hit & (problem.margin >= 0)).sum())  # images any choice could lose
    for eps in sorted(st.options.eps):
        cap = allowed = allowed_lost(lambda r, eps=eps: st.ev.budget.within(r, st.base, eps), st.base)
        tau, good, bad = 0.0, None, None  # the largest allowance verified within eps, the smallest not
        for _ in range(st.options.milp_rounds):
            choice = solve(problem, allowed, tau, st.options.milp_seconds)
            if choice is None:
                break
            result, plans = evaluate(choice, eps, eps)
            broke = judged(result, plans, eps)
            if broke is None:
                good = allowed
                if tau > 0 or (bad is not None and bad - good <= 1):
                    break
                if bad is None:  # room to spare: the model was pessimistic, allow more
                    charged = st.ev.budget.charge(result, st.base) * st.base.images / 100.0
                    following = loosen(allowed, charged, cap, most)
                    if following is None:
                        break
                    allowed = following
                else:
                    allowed = (good + bad) // 2  # verified: try between it and the last allowance that failed
                continue
            bad = allowed if tau == 0 else bad
            following = tighten(allowed, tau, broke, scale)
            if following is None:
                break
            allowed, tau = following
            if good is not None and tau == 0 and allowed <= good:
                allowed = (good + bad) // 2
                if allowed <= good:
                    break
    return steps
