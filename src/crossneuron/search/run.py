"""One search, the public entry point: ``Search(net, engine, store, options).run()``.

``Search`` evaluates the base (no prediction) and the baseline (``options.baseline``: the 2018
diagonal at every site), builds the screen when asked, and runs each mode's stages
(``stages.py``) in turn, yielding one ``ModeResult`` per mode. ``optimize`` and Python users call it
the same way; nothing here reads command-line state.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import CrossneuronError
from ..net import PredictiveNet
from ..patterns import diagonal, pattern_to_code
from .budget import NET, Budget, get_budget
from .engine import Engine
from .evaluator import Evaluator, Space
from .modes import MODES, get_mode
from .options import SearchOptions
from .plan import Piece, SitePlan
from .progress import Progress
from .quantize import Option, Step, pick
from .records import EvalResult
from .stages import Stages, layer_stage, milp_stage, refine_stage, site_options, with_seed
from .store import Store, Where

__all__ = ["MODES", "ModeResult", "Search", "SearchOptions", "baseline_plans", "coupled_units"]


def coupled_units(net: PredictiveNet, couple: str) -> list[list[int]]:
    """Decision units of the layer quantizer: each site alone, the sites of each residual block
    (``residual``: the calls of one block's ReLU, e.g. layer1.0.relu and layer1.0.relu@1), or explicit
    groups of site names ``a+b,c+d``."""
    if couple == "none":
        return [[s.index] for s in net.sites]
    if couple == "residual":
        groups: dict[str, list[int]] = {}
        for s in net.sites:
            groups.setdefault(re.sub(r"@\d+$", "", s.name), []).append(s.index)
        return list(groups.values())
    taken: set[int] = set()
    units = []
    for group in couple.split(","):
        members = [net.site(name.strip()).index for name in group.split("+") if name.strip()]
        if taken & set(members):
            raise CrossneuronError(f"--couple names a site twice: '{couple}'")
        taken |= set(members)
        units.append(members)
    return units + [[s.index] for s in net.sites if s.index not in taken]


def baseline_plans(net: PredictiveNet, p: int) -> dict[int, SitePlan]:
    """The reference mask as search plans: the 2018 diagonal pattern tiled over every site (the one
    ``SearchOptions.baseline`` there is so far)."""
    code = pattern_to_code(diagonal(p))
    return {s.index: (Piece(None, None, code),) for s in net.sites}


@dataclass
class ModeResult:
    mode: str
    options: dict[int, list[Option]]  # per site, after all quantizers below the layer quantizer
    units: list[list[int]]
    trajectory: list[Step]
    plans_by_step: list[dict[int, SitePlan]]
    screen: dict | None = None  # the proxy's check against exact evaluations, when screened
    seconds: float = 0.0

    budget: Budget = NET  # the rule the search judged "within" by

    def best(self, base: EvalResult, eps: float, held=None) -> tuple[Step, dict[int, SitePlan]]:
        """``pick``'s step and plans (``held``: records on the verify images, ``audit.held_records``)."""
        step = pick(self.trajectory, base, eps, self.budget, held)
        return step, self.plans_by_step[step.step]


class Search:
    """A search over ``net`` with an engine and a store (every evaluation memoised there).

    Construction evaluates the base and the baseline; ``run()`` yields each mode's result as it
    finishes. ``progress(stage, done, total, best_pct)`` is called as the search goes. ``held`` (an
    ``audit.Held`` on the verify images, or None): the milp optimiser judges each round on them too."""

    def __init__(self, net: PredictiveNet, engine: Engine, store: Store, options: SearchOptions,
                 progress: Callable[[str, int, int, float], None] | None = None, held=None):  # fmt: skip
        options.check()
        units = coupled_units(net, options.couple)  # a bad --couple fails before any work
        self.net, self.options, self.units = net, options, units
        self.space = Space.of(net, options.patch_size, options.ones, options.gt, options.patterns)
        screener = model = None
        screened = options.screen and any(get_mode(m).below_site for m in options.modes)
        if screened or "milp" in options.optimizers:  # one gradient pass serves both
            from .screen import Screen

            modes = [get_mode(m) for m in options.modes]  # keep the finest granularity a mode asks for
            split = {"channels": any(m.by_channel for m in modes), "blocks": any(m.by_block for m in modes)}
            model = Screen(net, engine.batches, list(self.space.codes), self.space.sides, **split)
            screener = model if screened else None
        eps = max(options.eps)
        self.budget = get_budget(options.budget)
        self.evaluator = Evaluator(engine, store, self.space, eps, screener, options.screen_band, self.budget)
        self.base = self.evaluator.base
        self.baseline: EvalResult | None = None
        self.baseline_plans: dict[int, SitePlan] | None = None
        if options.baseline is not None:
            self.baseline_plans = baseline_plans(net, options.patch_size)
            self.baseline = self.evaluator.evaluate(Where("baseline", "-"), self.baseline_plans)
        self.stages = Stages(self.space, self.evaluator, options,
                             Progress(progress, self.base, eps, net.network_macs, self.budget),
                             model=model if "milp" in options.optimizers else None, held=held)  # fmt: skip

    @property
    def baseline_drop(self) -> float | None:
        """What the budget rule charges the baseline on the calibration images (points, at least 0; with
        ``net``, its calibration drop): refine's seeded pass budget and the at-baseline choice."""
        return None if self.baseline is None else max(0.0, self.budget.charge(self.baseline, self.base))

    def run(self) -> Iterator[ModeResult]:
        for mode in self.options.modes:
            yield self.run_mode(mode)

    def run_mode(self, mode: str) -> ModeResult:
        t0 = time.perf_counter()
        st = self.stages
        options = site_options(st, get_mode(mode))
        plans_by_step: list[dict[int, SitePlan]] = []
        trajectory = layer_stage(st, mode, self.units, options, plans_by_step) if "layer" in self.options.optimizers \
            else []  # fmt: skip
        if "milp" in self.options.optimizers:
            trajectory += milp_stage(st, mode, options, plans_by_step, len(trajectory))
        for order in self.options.refine_orders if self.options.refine else ():
            trajectory += refine_stage(st, mode, self.units, options, plans_by_step, len(trajectory),
                                       self.options.eps, order=order)  # fmt: skip
            if self.baseline_plans is not None:  # a separate pass: a seed adopted early can trap the greedy
                seeded, seed = with_seed(st, mode, options, self.baseline_plans)
                trajectory += refine_stage(st, mode, self.units, seeded, plans_by_step, len(trajectory),
                                           [self.baseline_drop], seed, order)  # fmt: skip
        return ModeResult(mode, options, self.units, trajectory, plans_by_step, st.screen_checks.get(mode),
                          time.perf_counter() - t0, self.budget)  # fmt: skip
