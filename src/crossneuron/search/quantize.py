"""The quantizers of SPEC 6 as pure functions over evaluation records.

An *option* is a plan (tuple of pieces, at one site) with the record of its isolated evaluation.
"none" (no prediction: macs 0, the base accuracy) is implicit at the end of every option list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .budget import NET, Budget
from .plan import SitePlan
from .records import EvalResult


@dataclass(frozen=True)
class Option:
    plan: SitePlan
    result: EvalResult


def rank(options: Sequence[Option], base: EvalResult, eps: float, top_m: int | None = None,
         budget: Budget = NET) -> list[Option]:  # fmt: skip
    """Options within ``eps`` (by ``budget``), sorted by MACs saved then accuracy (both descending), at most
    ``top_m``."""
    kept = [o for o in options if budget.within(o.result, base, eps)]
    kept.sort(key=lambda o: (-o.result.macs_saved, -o.result.correct))  # stable: ties keep their order
    return kept[:top_m] if top_m is not None else kept


def combine(sub_options: Sequence[Sequence[Option]]) -> list[SitePlan]:
    """Patch/channel quantizer candidates: candidate k gives every sub-target its k-th option, or
    nothing where it has fewer than k + 1."""
    count = max((len(o) for o in sub_options), default=0)
    return [tuple(p for opts in sub_options if k < len(opts) for p in opts[k].plan) for k in range(count)]


def combine_slope(sub_options: Sequence[Sequence[Option]], count: int | None = None) -> list[SitePlan]:
    """A Lagrangian alternative to ``combine`` (``--combine slope``; not SPEC 6): ``count`` candidates
    (default: as many as ``combine`` makes), the most saving first, each giving every sub-target the
    option that maximises MACs saved - lambda x mispredictions for one lambda.

    Within a site, MACs saved and mispredictions of disjoint pieces add up exactly, and isolated
    accuracy of a single block or channel rarely moves, so ``combine``'s "k-th most saving option
    everywhere" picks, per sub-target, by MACs alone: the most mispredicting pattern first. Here each
    sub-target's options are reduced to their upper concave hull over (mispredictions, MACs) from
    none; the hull segments of all sub-targets are taken in order of MACs per misprediction, and the
    candidates are the configurations reached at even steps of the MACs this can save. The most
    saving candidate is every sub-target at its most saving option, as ``combine``'s first."""
    segments = []  # (MACs per misprediction, MACs, sub-target, option index), along each hull
    for i, opts in enumerate(sub_options):
        hull: list[tuple[int, int, int]] = [(0, 0, -1)]  # (mispredicted, macs, option index); -1: none
        by_cost = sorted(range(len(opts)), key=lambda k: (opts[k].result.mispredicted, -opts[k].result.macs_saved))
        for k in by_cost:
            m, g = opts[k].result.mispredicted, opts[k].result.macs_saved
            if g <= hull[-1][1]:
                continue  # dominated: no more saving than a cheaper option
            while len(hull) >= 2 and _turns_up(hull[-2], hull[-1], (m, g)):
                hull.pop()
            hull.append((m, g, k))
        for (m0, g0, _), (m1, g1, k) in zip(hull, hull[1:], strict=False):
            segments.append(((g1 - g0) / (m1 - m0) if m1 > m0 else float("inf"), g1 - g0, i, k))
    segments.sort(key=lambda t: -t[0])  # stable: equal slopes keep sub-target order
    count = max((len(o) for o in sub_options), default=0) if count is None else count
    total = sum(t[1] for t in segments)
    choice: dict[int, int] = {}
    configs: list[SitePlan] = []
    taken, level = 0, 1
    for n, (_, gain, i, k) in enumerate(segments):
        choice[i], taken = k, taken + gain
        last = n + 1 == len(segments) or segments[n + 1][0] != segments[n][0]  # equal slopes: all or none
        if last and taken * count >= level * total:
            configs.append(tuple(p for j in sorted(choice) for p in sub_options[j][choice[j]].plan))
            level = taken * count // total + 1  # the next even step not yet reached
    return configs[::-1]


COMBINERS = {"slope": combine_slope, "rank": combine}  # --combine: the patch/channel quantizer's candidates


def _turns_up(a: tuple, b: tuple, c: tuple) -> bool:
    """Whether b lies on or below the segment a-c (so the upper hull drops it)."""
    return (b[1] - a[1]) * (c[0] - a[0]) <= (c[1] - a[1]) * (b[0] - a[0])


@dataclass(frozen=True)
class Step:
    """One evaluated configuration of the layer quantizer."""

    step: int
    moved: int | None  # the unit (index into units) moved to reach it; None for the start
    positions: tuple[int, ...]  # per site: index into its options (len(options) = none)
    result: EvalResult
    stage: str = "layer"  # layer (SPEC 6's layer quantizer), refine (forward_quantize) or milp
    eps: float | None = None  # the epsilon whose round found it (refine, milp); None: found for every eps


def layer_quantize(
    units: Sequence[Sequence[int]],
    options: dict[int, Sequence[Option]],
    base: EvalResult,
    evaluate: Callable[[dict[int, SitePlan], int], EvalResult],
) -> list[Step]:
    """SPEC 6's layer quantizer. ``units`` are groups of sites that move together (a site alone is a
    group of one); ``options`` are per site; ``evaluate(plans, step)`` runs the whole network.

    Start with every site at its first option, then repeatedly move the unit with the largest ratio
    of accuracy regained (isolated records) to MACs given up to its next option, evaluating after
    each move, until every site is at none."""
    sites = sorted({s for unit in units for s in unit})
    pos = {s: 0 for s in sites}

    def record(s: int, k: int) -> EvalResult:
        return options[s][k].result if k < len(options[s]) else base

    def plans() -> dict[int, SitePlan]:
        return {s: options[s][pos[s]].plan for s in sites if pos[s] < len(options[s])}

    def snapshot(step: int, moved: int | None) -> Step:
        return Step(step, moved, tuple(pos[s] for s in sites), evaluate(plans(), step))

    trajectory = [snapshot(0, None)]
    while True:
        best, best_ratio = None, None
        for u, unit in enumerate(units):
            movable = [s for s in unit if pos[s] < len(options[s])]
            if not movable:
                continue
            regained = sum(record(s, pos[s] + 1).correct / record(s, pos[s] + 1).images
                           - record(s, pos[s]).correct / record(s, pos[s]).images for s in movable)  # fmt: skip
            given_up = sum(record(s, pos[s]).macs_saved - record(s, pos[s] + 1).macs_saved for s in movable)
            ratio = regained / given_up if given_up > 0 else float("inf")
            if best_ratio is None or ratio > best_ratio:
                best, best_ratio = u, ratio
        if best is None:
            return trajectory
        for s in units[best]:
            pos[s] = min(pos[s] + 1, len(options[s]))
        trajectory.append(snapshot(len(trajectory), best))


def pick(trajectory: Sequence[Step], base: EvalResult, eps: float, budget: Budget = NET,
         held: tuple[EvalResult, dict[int, EvalResult]] | None = None) -> Step:  # fmt: skip
    """The evaluated configuration with the most MACs saved within ``eps`` by ``budget`` (ties: higher
    accuracy, then earlier). The final all-none step is always within any eps >= 0. Steps cut short
    carry only an upper bound of their accuracy and are never picked. ``held`` (``--verify``: the base's
    and each step's record on images the search never evaluated, ``audit.held_records``): a step must be
    within ``eps`` on them too.

    Only steps found for ``eps`` or a smaller epsilon compete (``Step.eps``; since 0.16): a step that a
    larger epsilon's round found is not a candidate, so the result at one epsilon does not depend on
    which larger ones the same run also asked for (before 0.16 it did, and the extra candidates fitted
    the calibration images more: RESULTS.md, session 18)."""
    ok = [t for t in trajectory if eligible(t, base, eps, budget)
          and (held is None or budget.within(held[1][t.step], held[0], eps))]  # fmt: skip
    return max(ok, key=pick_order)


def eligible(t: Step, base: EvalResult, eps: float, budget: Budget = NET) -> bool:
    """Whether ``pick`` at ``eps`` may take ``t`` on the calibration records: found for ``eps`` or less,
    not cut short, within ``eps`` by ``budget``."""
    return (t.eps is None or t.eps <= eps) and not t.result.cut_short and budget.within(t.result, base, eps)


def pick_order(t: Step) -> tuple:
    """``pick``'s preference, largest first: MACs saved, then accuracy, then the earlier step."""
    return (t.result.macs_saved, t.result.correct, -t.step)


def move_key(now: Sequence[EvalResult], then: Sequence[EvalResult]) -> tuple[int, float]:
    """How good a refine move from records ``now`` to ``then`` (the unit's sites) looks, larger first.

    Moves that lose accuracy in isolation rank by MACs gained per accuracy lost (tier 1). Moves that
    lose none (tier 2, before them) rank by MACs gained per misprediction added: at high accuracy most
    isolated records equal the base's to within an image or two, and ordering those by unit index (as
    an infinite ratio would) spends the budget blindly; mispredictions are exact and additive within a
    site. Moves that gain nothing come last (tier 0)."""
    gained = sum(b.macs_saved - a.macs_saved for a, b in zip(now, then, strict=True))
    lost = sum(a.correct / a.images - b.correct / b.images for a, b in zip(now, then, strict=True))
    if gained <= 0:
        return (0, 0.0)
    if lost > 0:
        return (1, gained / lost)
    added = sum(b.mispredicted - a.mispredicted for a, b in zip(now, then, strict=True))
    return (2, gained / added if added > 0 else float("inf"))


def ratio_key(now: Sequence[EvalResult], then: Sequence[EvalResult]) -> tuple[int, float]:
    """0.2.2's refine order (``--refine-order index``): MACs gained per isolated accuracy lost; moves that
    lose none rank first, among themselves in unit order (the first unit wins a tie)."""
    gained = sum(b.macs_saved - a.macs_saved for a, b in zip(now, then, strict=True))
    lost = sum(a.correct / a.images - b.correct / b.images for a, b in zip(now, then, strict=True))
    return (0, gained / lost if lost > 0 else float("inf") if gained > 0 else 0.0)


MOVE_ORDERS = {"mispredictions": move_key, "index": ratio_key}  # --refine-order


def forward_quantize(
    units: Sequence[Sequence[int]],
    options: dict[int, Sequence[Option]],
    base: EvalResult,
    evaluate: Callable[[dict[int, SitePlan], int, float], EvalResult],
    eps_list: Sequence[float],
    start: int = 0,
    seed: dict[int, int] | None = None,
    key: Callable[[Sequence[EvalResult], Sequence[EvalResult]], tuple] = move_key,
    budget: Budget = NET,
) -> list[Step]:
    """The ``refine`` stage (not in SPEC 6; opt-in): a forward greedy with joint acceptance.

    For each epsilon, smallest first, starting from the previous epsilon's configuration (at first:
    no prediction): repeatedly take the unit whose move to its next more-saving option looks best
    (``move_key``, from isolated records), evaluate the whole network, keep the move when it stays
    within that epsilon, else undo it and freeze the unit; until every unit is frozen or at its
    first option. Every kept configuration is within its epsilon by evaluation, not by estimate.
    Steps are numbered from ``start`` and carry the epsilon they were found for (``Step.eps``; ``pick``
    at a smaller epsilon passes them by); ``moved`` is the unit index; rejected moves are steps too
    (``evaluate(plans, step, eps)`` may cut them short against ``eps``). ``key`` orders the moves
    (``MOVE_ORDERS``); ``budget`` judges "within".

    ``seed``: a known configuration (per site, an index into ``options``; e.g. the 2018 diagonal mask
    everywhere), evaluated first (against the largest epsilon); at each epsilon where it is within and
    saves more than the configuration reached so far, the greedy continues from it instead."""
    sites = sorted({s for unit in units for s in unit})
    pos = {s: len(options[s]) for s in sites}  # len = none

    def record(s: int, k: int) -> EvalResult:
        return options[s][k].result if k < len(options[s]) else base

    def plans() -> dict[int, SitePlan]:
        return {s: options[s][pos[s]].plan for s in sites if pos[s] < len(options[s])}

    trajectory: list[Step] = []
    current, seeded = base, None
    if seed is not None:
        saved = dict(pos)
        pos.update(seed)
        seeded = evaluate(plans(), start, max(eps_list))
        trajectory.append(Step(start, None, tuple(pos[s] for s in sites), seeded, "refine"))  # given: any eps
        pos.update(saved)
    for eps in sorted(eps_list):
        frozen: set[int] = set()
        if (seeded is not None and budget.within(seeded, base, eps)
                and seeded.macs_saved > current.macs_saved):  # fmt: skip
            pos.update(seed)
            current, seeded = seeded, None
        while True:
            best, best_key = None, None
            for u, unit in enumerate(units):
                movable = [s for s in unit if pos[s] > 0]
                if u in frozen or not movable:
                    continue
                value = key([record(s, pos[s]) for s in movable], [record(s, pos[s] - 1) for s in movable])
                if best_key is None or value > best_key:
                    best, best_key = u, value
            if best is None:
                break
            before = dict(pos)
            for s in units[best]:
                pos[s] = max(pos[s] - 1, 0)
            step = start + len(trajectory)
            result = evaluate(plans(), step, eps)
            trajectory.append(Step(step, best, tuple(pos[s] for s in sites), result, "refine", eps))
            if budget.within(result, base, eps):
                current = result
            else:
                pos.update(before)
                frozen.add(best)
    return trajectory
