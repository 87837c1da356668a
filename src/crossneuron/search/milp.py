"""The global optimiser (``--optimizer milp``; not SPEC 6): one option per site, chosen at once by a
mixed-integer program solved with HiGHS (``scipy.optimize.milp``).

Model. Site s takes at most one of its options k (none otherwise): binary x[s, k]. MACs saved add
up over sites (each option's isolated record). An image's outcome is estimated to first order, as
the screen does: its base margin (true-class logit minus the runner-up's) moves by the sum of the
chosen options' per-image margin changes ``delta[s][k, i]``; the image stays right while the margin
stays at least ``tau`` (a safety margin, 0 at first). A binary z[i] per base-right image that some
choice could push below ``tau`` lets it be lost; at most ``allowed`` may be. Images turned right
are not credited (the ``flips`` view; ``net`` and ``ucb`` accept whatever ``flips`` accepts at the
same count of lost images, see ``allowed_lost``)::

    maximise   sum macs[s][k] x[s, k]
    subject to sum_k x[s, k] <= 1                                   for every site s
               margin[i] + sum delta[s][k, i] x[s, k] + M[i] z[i] >= tau   for every image i at risk
               sum z[i] <= allowed

with M[i] the most the margin can fall below ``tau``. ``solve`` is the pure solver (a greedy choice
improved by 1- and 2-site exchanges, then HiGHS started above its MACs); the stage
(``stages.milp_stage``) evaluates each solution exactly and, where it breaks the budget, tightens
(fewer lost images allowed, then a larger ``tau``) and solves again; where it keeps the budget with
room to spare (the first-order model is often pessimistic), it loosens (more images allowed in the
model) until a solution breaks the budget, then bisects between the two; every exact evaluation
joins the trajectory, so ``pick`` chooses among them like among refine's steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .records import EvalResult


@dataclass
class Problem:
    macs: list[np.ndarray]  # per site: (options,) MACs saved by each option (isolated record)
    deltas: list[np.ndarray]  # per site: (options, N) first-order margin change per image
    margin: np.ndarray  # (N,) base margins
    base_hit: np.ndarray  # (N,) bool: right with no prediction

    def lost(self, choice: Sequence[int | None], tau: float = 0.0) -> int:
        """Base-right images at or above ``tau`` that this choice pushes below it in the model (the count
        ``solve`` bounds)."""
        m = self.margin.astype(np.float64).copy()
        for d, k in zip(self.deltas, choice, strict=True):
            if k is not None:
                m += d[k]
        return int((self.base_hit & (self.margin >= tau) & (m < tau)).sum())

    def saved(self, choice: Sequence[int | None]) -> int:
        return int(sum(mac[k] for mac, k in zip(self.macs, choice, strict=True) if k is not None))


def greedy(problem: Problem, allowed: int, tau: float = 0.0) -> list[int | None]:
    """A quick feasible choice in the model: from no prediction, repeatedly move one site to a more
    saving option, the move with the most MACs gained per image lost (+1) that keeps at most
    ``allowed`` images lost, until none does. ``solve``'s starting point and floor."""
    choice: list[int | None] = [None] * len(problem.macs)
    saved = 0
    while True:
        best, best_key = None, None
        for s, macs in enumerate(problem.macs):
            now = -1 if choice[s] is None else macs[choice[s]]
            for k in np.flatnonzero(macs > now):
                trial = [*choice[:s], int(k), *choice[s + 1 :]]
                lost = problem.lost(trial, tau)
                if lost > allowed:
                    continue
                gain = problem.saved(trial) - saved
                key = (gain / (1 + lost), gain)
                if best_key is None or key > best_key:
                    best, best_key = trial, key
        if best is None:
            return choice
        choice, saved = best, problem.saved(best)


EXCHANGE_REACH = 8  # double moves: each site to an option at most this many places from its own, or none


def _near(k: int, count: int) -> np.ndarray:
    """Option rows a double move may take a site at row ``k`` to (of ``count``, the last being none): those
    within ``EXCHANGE_REACH`` places (options are sorted by MACs saved), and none; this bounds a sweep's
    work on sites with hundreds of options."""
    return np.unique(np.r_[np.arange(max(0, k - EXCHANGE_REACH), min(count, k + EXCHANGE_REACH + 1)), count - 1])


def exchange(problem: Problem, choice: Sequence[int | None], allowed: int, tau: float = 0.0) -> list[int | None]:
    """Local search from a feasible ``choice``: repeatedly make the move that saves the most MACs more with
    at most ``allowed`` images lost in the model, a move being one site to another option (or none) or,
    where no such move is left, two sites at once (``_near``; one may give up MACs to free images for the
    other); stops at a choice no such move improves. Deterministic, about a second on 17 sites x 12
    options x 2,500 images. Measured necessary (RESULTS.md, session 15): HiGHS spent its whole 20 s at
    the root node on such problems and often returned nothing above the greedy floor."""
    n = len(problem.margin)
    deltas = [np.vstack([d.astype(np.float64), np.zeros((1, n))]) for d in problem.deltas]  # last row: none
    gains = [np.append(m.astype(np.float64), 0.0) for m in problem.macs]
    at = [len(m) if k is None else k for m, k in zip(problem.macs, choice, strict=True)]
    live = problem.base_hit & (problem.margin >= tau)  # the images the model counts when they fall below tau
    m = problem.margin.astype(np.float64) + sum(d[k] for d, k in zip(deltas, at, strict=True))

    def lost(margins: np.ndarray) -> np.ndarray:
        return ((margins < tau) & live).sum(-1)

    while True:
        best_gain, best = 0.0, None
        for s, (d, g) in enumerate(zip(deltas, gains, strict=True)):
            gain = g - g[at[s]]
            ok = np.flatnonzero((lost(m - d[at[s]] + d) <= allowed) & (gain > best_gain))
            if len(ok):
                k = int(ok[np.argmax(gain[ok])])
                best_gain, best = gain[k], [(s, k)]
        for s1 in range(len(deltas)) if best is None else ():
            near1 = _near(at[s1], len(gains[s1]))
            first = m - deltas[s1][at[s1]] + deltas[s1][near1]
            gain1 = gains[s1][near1] - gains[s1][at[s1]]
            for s2 in range(s1 + 1, len(deltas)):
                near2 = _near(at[s2], len(gains[s2]))
                second = deltas[s2][near2] - deltas[s2][at[s2]]
                gain2 = gains[s2][near2] - gains[s2][at[s2]]
                for i1 in np.flatnonzero(gain1 + gain2.max() > best_gain):
                    gain = gain1[i1] + gain2
                    ok = np.flatnonzero((lost(first[i1] + second) <= allowed) & (gain > best_gain))
                    if len(ok):
                        i2 = int(ok[np.argmax(gain[ok])])
                        best_gain, best = gain[i2], [(s1, int(near1[i1])), (s2, int(near2[i2]))]
        if best is None:
            return [None if k == len(mac) else k for mac, k in zip(problem.macs, at, strict=True)]
        for s, k in best:
            m += deltas[s][k] - deltas[s][at[s]]
            at[s] = k


def solve(problem: Problem, allowed: int, tau: float = 0.0, time_limit: float = 30.0) -> list[int | None] | None:
    """The choice (per site an option index or None) that saves the most MACs with at most ``allowed``
    base-right images below ``tau`` in the model: ``greedy``, improved by ``exchange``, then HiGHS with the
    objective bounded below by that choice (a cut-off that prunes its search; measured necessary: without
    it, 60 s left HiGHS with incumbents far below the greedy's on the demo checkpoint) and, where HiGHS
    finds more within ``time_limit`` seconds, its choice improved by ``exchange`` again. Optimal (in the
    model) when HiGHS finishes; ``time_limit`` 0 leaves HiGHS out, so the result does not depend on how
    fast the machine is."""
    start = exchange(problem, greedy(problem, allowed, tau), allowed, tau)
    if time_limit <= 0:
        return start
    found = _highs(problem, allowed, tau, time_limit, floor=problem.saved(start))
    if found is None or problem.saved(found) <= problem.saved(start):
        return start
    return exchange(problem, found, allowed, tau)


def _highs(problem: Problem, allowed: int, tau: float, time_limit: float, floor: int = 0) -> list[int | None] | None:
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    sizes = [len(m) for m in problem.macs]
    offsets = np.cumsum([0, *sizes])
    nx = int(offsets[-1])
    if nx == 0:
        return [None] * len(sizes)
    delta = np.concatenate([d.astype(np.float64) for d in problem.deltas if len(d)], 0)  # (nx, N)
    margin = problem.margin.astype(np.float64)
    # the lowest margin any choice can reach: every site at its most harmful option (or none)
    worst = margin + sum(np.minimum(0.0, d.min(0)) for d in problem.deltas if len(d))
    # at risk: base-right images some choice can push below tau (those already below it cannot be helped)
    risk = np.flatnonzero(problem.base_hit & (worst < tau) & (margin >= tau))
    big = tau - worst[risk]
    nz = len(risk)
    rows, cols, vals = [], [], []
    lb, ub = [], []
    for s, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):  # one option per site
        rows += [s] * (b - a)
        cols += list(range(a, b))
        vals += [1.0] * (b - a)
        lb.append(-np.inf)
        ub.append(1.0)
    r0 = len(sizes)
    sub = delta[:, risk].T  # (nz, nx)
    ri, ci = np.nonzero(sub)
    rows += list(r0 + ri)
    cols += list(ci)
    vals += list(sub[ri, ci])
    rows += list(r0 + np.arange(nz))
    cols += list(nx + np.arange(nz))
    vals += list(big)
    lb += list(tau - margin[risk])
    ub += [np.inf] * nz
    rows += [r0 + nz] * nz  # the budget row
    cols += list(nx + np.arange(nz))
    vals += [1.0] * nz
    lb.append(-np.inf)
    ub.append(float(allowed))
    gains = np.concatenate([m.astype(np.float64) for m in problem.macs])
    scale = max(1.0, float(gains.max()))
    rows += [r0 + nz + 1] * nx  # the floor: at least what a known choice saves
    cols += list(range(nx))
    vals += list(gains / scale)
    lb.append(floor / scale * (1 - 1e-9))
    ub.append(np.inf)
    a = coo_array((vals, (rows, cols)), shape=(r0 + nz + 2, nx + nz)).tocsr()
    c = -np.concatenate([gains, np.zeros(nz)])
    res = milp(c / scale, integrality=np.ones(nx + nz), bounds=Bounds(0, 1),
               constraints=LinearConstraint(a, lb, ub), options={"time_limit": time_limit})  # fmt: skip
    if res.x is None:  # infeasible above the floor, or nothing found in time
        return None
    x = np.round(res.x[:nx]).astype(int)
    return [next((k for k in range(b - a) if x[a + k]), None) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def allowed_lost(accepts: Callable[[EvalResult], bool], base: EvalResult) -> int:
    """The most images a configuration may lose (none gained) and still be accepted by the rule."""
    best = 0
    for lost in range(base.correct + 1):
        if not accepts(EvalResult(base.correct - lost, base.images, 0, 0, lost=lost)):
            break
        best = lost
    return best


def loosen(allowed: int, charged: float, cap: int, most: int) -> int | None:
    """The next allowance after an exact evaluation kept the budget with room to spare: the model let
    ``allowed`` images go where the rule charged the network only ``charged`` images (its charge in
    images) of the ``cap`` it allows, so allow ``allowed`` x cap / charged (at least one more, at most
    ``most``: the images any choice could lose); None when nothing is left to loosen."""
    if allowed >= most:
        return None
    grown = allowed * cap / charged if charged >= 1 else allowed * max(cap, 2) + cap
    return min(most, max(allowed + 1, int(grown)))


def tighten(allowed: int, tau: float, result: EvalResult, scale: float) -> tuple[int, float] | None:
    """The next round's (allowed, tau) after an exact evaluation broke the budget: fewer lost images
    allowed, in proportion to how far the model undercounted them (``allowed`` x allowed / lost: the
    model lost ``allowed`` where the network lost ``lost``), and once none are allowed a larger safety
    margin (``scale``: the margins' typical size); None when there is nothing left to tighten."""
    lost = max(result.lost or 0, allowed + 1)
    if allowed > 0:
        return min(allowed - 1, allowed * allowed // lost), tau
    if tau > 16 * scale:
        return None
    return 0, (2 * tau if tau > 0 else scale / 8)
