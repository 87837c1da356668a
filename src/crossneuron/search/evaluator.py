"""Memoised evaluation: every configuration a search evaluates goes through ``Evaluator``.

A configuration is a dict site -> plan. Its record is found in the store by its key (what was
evaluated, in words: ``Where``) and the hash of its plans, so a resumed search re-evaluates
nothing; otherwise the engine runs (cut short against an epsilon where the caller allows it) or, in
a screened search, the screen's first-order estimate stands in for targets below site level.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch

from ..net import PredictiveNet
from ..patterns import pattern_codes
from .budget import NET, Budget
from .engine import Engine
from .plan import SitePlan, block_grid, block_side, plan_json, plan_mask
from .records import EvalResult
from .store import Store, Where


def config_hash(plans: dict[int, SitePlan]) -> str:
    """sha1 of the canonical per-site plans (empty plans dropped): the records' ``config`` column."""
    canon = json.dumps({str(k): plan_json(v) for k, v in sorted(plans.items()) if v}, separators=(",", ":"))
    return hashlib.sha1(canon.encode()).hexdigest()


def min_correct(base: EvalResult, eps: float) -> int:
    """The fewest correct images a configuration within ``eps`` of ``base`` can have (the engines' cut-off)."""
    return math.ceil(base.correct - eps * base.images / 100 - 1e-9)


def near_boundary(estimate: EvalResult, base: EvalResult, eps: float, band: float, budget: Budget = NET) -> bool:
    """Whether a screened estimate's charge (``budget``) lies within ``band`` points of ``eps`` (then it is
    evaluated exactly)."""
    return abs(budget.charge(estimate, base) - eps) <= band


@dataclass(frozen=True)
class Space:
    """What a search's plans range over: the net's sites, the patch size, the pattern codes and
    each site's block side (SPEC 6) and padded mask shape."""

    net: PredictiveNet
    p: int
    codes: tuple[int, ...]
    sides: dict[int, int]
    shapes: dict[int, tuple[int, int, int]]

    @classmethod
    def of(cls, net: PredictiveNet, p: int, ones: tuple[int, int] | None, gt: float, patterns: str = "all") -> Space:
        return cls(
            net, p, tuple(pattern_codes(p, ones, patterns)),
            {s.index: block_side(s.shape[1], s.shape[2], p, gt) for s in net.sites},
            {s.index: tuple(net.spatial(s).mask.shape) for s in net.sites},
        )  # fmt: skip

    @property
    def sites(self) -> list[int]:
        return [s.index for s in self.net.sites]

    def channels(self) -> dict[int, int]:
        return {s: shape[0] for s, shape in self.shapes.items()}

    def blocks(self) -> dict[int, int]:
        return {s: len(block_grid(self.shapes[s], self.sides[s])) for s in self.shapes}

    def mask(self, site: int, plan: SitePlan) -> torch.Tensor | None:
        return plan_mask(plan, self.shapes[site], self.p, self.sides[site])


class Evaluator:
    """Evaluations through the store. ``eps`` is the largest epsilon asked (the default cut-off);
    ``screener`` (a ``Screen``, or None), ``screen_band`` and ``budget`` (the rule that decides which
    estimates lie near ``eps``) serve ``screened``."""

    def __init__(self, engine: Engine, store: Store, space: Space, eps: float, screener=None,
                 screen_band: float = 1.0, budget: Budget = NET):  # fmt: skip
        self.engine, self.store, self.space = engine, store, space
        self.eps, self.screener, self.screen_band, self.budget = eps, screener, screen_band, budget
        self._pending: list = []
        self.base = self.evaluate(Where("base", "-"), {})

    @property
    def parallel(self) -> int:
        """Independent candidates the engine can use at once (Ray groups; 1 for one process)."""
        return getattr(self.engine, "parallel", 1)

    def _lookup(self, where: Where, plans: dict[int, SitePlan]) -> tuple[str, dict[int, SitePlan], EvalResult | None]:
        """The configuration's key, its predicting plans, and its stored record (None if not evaluated yet)."""
        plans = {k: v for k, v in plans.items() if v}
        key = config_hash(plans)
        return key, plans, self.store.find(where, key)

    def evaluate(self, where: Where, plans: dict[int, SitePlan], may_cut: bool = False,
                 cut_eps: float | None = None) -> EvalResult:  # fmt: skip
        """Memoised evaluation. ``may_cut``: the engine may stop once the configuration provably falls
        outside the largest epsilon, or ``cut_eps`` (its record says so); only options within it
        matter there."""
        key, plans, found = self._lookup(where, plans)
        if found is not None:
            return found
        masks = {s: self.space.mask(s, plan) for s, plan in plans.items()}
        cut = min_correct(self.base, self.eps if cut_eps is None else cut_eps) if may_cut else None
        result = self.engine.evaluate(masks, cut)
        self.store.add(where, key, result, self.engine.name)
        return result

    def evaluate_many(self, items: list[tuple[Where, dict[int, SitePlan]]], may_cut: bool = False) -> list[EvalResult]:
        """``evaluate`` for independent candidates: memoised ones are found, the others go to the
        engine's ``evaluate_many`` in one call where it has one (``batched``), else one by one."""
        many = getattr(self.engine, "evaluate_many", None)
        if many is None:
            return [self.evaluate(where, plans, may_cut) for where, plans in items]
        out: list[EvalResult | None] = [None] * len(items)
        todo = []
        for i, (where, plans) in enumerate(items):
            key, plans, out[i] = self._lookup(where, plans)
            if out[i] is None:
                todo.append((i, where, key, plans))
        if todo:
            cut = min_correct(self.base, self.eps) if may_cut else None
            results = many([{s: self.space.mask(s, plan) for s, plan in plans.items()} for *_, plans in todo], cut)
            self.store.add_many([(where, key, r) for (_, where, key, _), r in zip(todo, results, strict=True)],
                                self.engine.name)  # fmt: skip
            for (i, *_), r in zip(todo, results, strict=True):
                out[i] = r
        return out

    def screened(self, where: Where, site: int, plan: SitePlan, estimate: EvalResult | None = None) -> EvalResult:
        """A candidate below site level in a screened search: its estimate, unless it moves no image
        (then exactly the base) or its estimated drop is within the band around the largest
        epsilon (then evaluated exactly). Memoised like ``evaluate``; estimates are stored in
        batches (``flush``)."""
        key = config_hash({site: plan})
        found = self.store.find(where, key)
        if found is not None:
            return found
        est = estimate or self.screener.estimate(site, plan)
        if est.mispredicted == 0:  # nothing changes: exactly the base accuracy
            result = EvalResult(self.base.correct, est.images, est.macs_saved, 0, lost=0)
        elif near_boundary(est, self.base, self.eps, self.screen_band, self.budget):
            return self.evaluate(where, {site: plan}, may_cut=True)
        else:
            result = est
        self._pending.append((where, key, result))
        if len(self._pending) >= 5000:
            self.flush()
        return result

    def flush(self) -> None:
        if self._pending:
            self.store.add_many(self._pending, "screen")
            self._pending = []
