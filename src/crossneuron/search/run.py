"""Orchestration of one search: targets per mode, first level, quantizers, layer quantizer."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..errors import CrossneuronError
from ..net import PredictiveNet
from ..patterns import check_ones, pattern_codes
from .engine import EvalResult
from .plan import Piece, SitePlan, block_grid, block_side, full_mask, plan_json
from .quantize import Option, Step, combine, layer_quantize, pick, rank, within
from .store import Store, Where

MODES = ("uniform-layer", "uniform-patch", "uniform-filters", "max-granularity")


@dataclass
class SearchOptions:
    modes: list[str] = field(default_factory=lambda: ["uniform-layer"])
    patch_size: int = 2
    ones: tuple[int, int] | None = None  # None: 1 .. p*p-1
    gt: float = 10.0
    eps: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 3.0])
    top_m: int | None = None
    calib: int = 1000
    batch_size: int = 500
    seed: int = 0
    couple: str = "none"  # none | residual | explicit groups "a+b,c+d" of site names

    def check(self, val_size: int | None = None) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise CrossneuronError(f"unknown mode '{(bad or [''])[0]}': choose from {', '.join(MODES)} or all")
        self.ones = check_ones(self.patch_size, self.ones)
        if any(e < 0 for e in self.eps) or not self.eps:
            raise CrossneuronError(f"epsilon must be >= 0 percentage points, got {self.eps}")
        if self.gt < 0:
            raise CrossneuronError(f"GT must be >= 0 (0 means single p x p patches), got {self.gt}")
        if self.top_m is not None and self.top_m < 1:
            raise CrossneuronError(f"top-M must be at least 1, got {self.top_m}")
        if self.calib < 1 or (val_size is not None and self.calib > val_size):
            raise CrossneuronError(f"calibration size must be 1..{val_size} (the val split's size), got {self.calib}")
        if self.batch_size < 1:
            raise CrossneuronError(f"batch size must be at least 1, got {self.batch_size}")

    def identity(self) -> dict:
        d = asdict(self)
        d["ones"] = list(self.ones) if self.ones else None
        return d


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


def config_hash(plans: dict[int, SitePlan]) -> str:
    canon = json.dumps({str(k): plan_json(v) for k, v in sorted(plans.items()) if v}, separators=(",", ":"))
    return hashlib.sha1(canon.encode()).hexdigest()


@dataclass
class ModeResult:
    mode: str
    options: dict[int, list[Option]]  # per site, after all quantizers below the layer quantizer
    units: list[list[int]]
    trajectory: list[Step]
    plans_by_step: list[dict[int, SitePlan]]

    def best(self, base: EvalResult, eps: float) -> tuple[Step, dict[int, SitePlan]]:
        step = pick(self.trajectory, base, eps)
        return step, self.plans_by_step[step.step]


class Search:
    """One search over a net with an engine and a store (evaluations are memoised in the store)."""

    def __init__(self, net: PredictiveNet, engine, store: Store, options: SearchOptions,
                 progress: Callable[[str, int, int, float], None] | None = None):  # fmt: skip
        self.net, self.engine, self.store, self.o = net, engine, store, options
        self.p = options.patch_size
        self.codes = pattern_codes(self.p, options.ones)
        self.eps = max(options.eps)
        self._report = progress or (lambda stage, done, total, best: None)
        self._stage, self._best = None, 0
        self.sides = {s.index: block_side(s.shape[1], s.shape[2], self.p, options.gt) for s in net.sites}
        self.shapes = {s.index: tuple(net.spatial(s).mask.shape) for s in net.sites}
        self.base = self.evaluate(Where("base", "-"), {})

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, where: Where, plans: dict[int, SitePlan], may_cut: bool = False) -> EvalResult:
        """Memoised evaluation. ``may_cut``: the engine may stop once the candidate provably falls
        outside the largest epsilon (its record says so); only options within it matter there."""
        plans = {k: v for k, v in plans.items() if v}
        key = config_hash(plans)
        found = self.store.find(where, key)
        if found is not None:
            return found
        masks = {s: full_mask(plan, self.shapes[s], self.p, self.sides[s]) for s, plan in plans.items()}
        min_correct = None
        if may_cut:
            n = self.base.images
            min_correct = math.ceil(self.base.correct - self.eps * n / 100 - 1e-9)
        result = self.engine.evaluate(masks, min_correct)
        self.store.add(where, key, result, self.engine.name)
        return result

    def progress(self, stage: str, done: int, total: int, result: EvalResult) -> None:
        """Report progress with the most MACs saved (% of network) within the largest epsilon so far."""
        if stage != self._stage:
            self._stage, self._best = stage, 0
        if within(result, self.base, self.eps):
            self._best = max(self._best, result.macs_saved)
        self._report(stage, done, total, 100.0 * self._best / (self.base.images * self.net.network_macs))

    def blocks(self, site: int) -> int:
        return len(block_grid(self.shapes[site], self.sides[site]))

    # -- stages ----------------------------------------------------------------------------------
    def first_level(self, mode: str) -> dict[tuple, list[Option]]:
        """(site, channel, block) -> ranked options, each pattern evaluated with only that target predicting."""
        targets = []
        for s in self.net.sites:
            chans = [None] if mode in ("uniform-layer", "uniform-filters") else range(s.shape[0])
            blocks = [None] if mode in ("uniform-layer", "uniform-patch") else range(self.blocks(s.index))
            targets += [(s.index, c, b) for c in chans for b in blocks]
        total, done, ranked = len(targets) * len(self.codes), 0, {}
        for site, channel, block in targets:
            opts = []
            for code in self.codes:
                plan = (Piece(channel, block, code),)
                where = Where("first", mode, site, channel, block, pattern=code)
                result = self.evaluate(where, {site: plan}, may_cut=True)
                opts.append(Option(plan, result))
                done += 1
                self.progress(f"{mode}: first level", done, total, result)
            ranked[(site, channel, block)] = rank(opts, self.base, self.eps, self.o.top_m)
        return ranked

    def quantize_units(
        self, mode: str, stage: str, units: dict[tuple, list[list[Option]]]
    ) -> dict[tuple, list[Option]]:
        """Patch or channel quantizer over units (site, channel|None) of sub-target option lists."""
        total = sum(max((len(o) for o in subs), default=0) for subs in units.values())
        done, out = 0, {}
        for (site, channel), subs in units.items():
            opts = []
            for k, plan in enumerate(combine(subs)):
                where = Where(stage, mode, site, channel, candidate=k)
                opts.append(Option(plan, self.evaluate(where, {site: plan}, may_cut=True)))
                done += 1
                self.progress(f"{mode}: {stage} quantizer", done, total, opts[-1].result)
            out[(site, channel)] = rank(opts, self.base, self.eps, self.o.top_m)
        return out

    def site_options(self, mode: str) -> dict[int, list[Option]]:
        first = self.first_level(mode)
        sites = [s.index for s in self.net.sites]
        if mode == "uniform-layer":
            return {s: first[(s, None, None)] for s in sites}
        if mode == "uniform-patch":
            units = {(s, None): [first[(s, c, None)] for c in range(self.shapes[s][0])] for s in sites}
            return {s: o for (s, _), o in self.quantize_units(mode, "channel", units).items()}
        if mode == "uniform-filters":
            units = {(s, None): [first[(s, None, b)] for b in range(self.blocks(s))] for s in sites}
            return {s: o for (s, _), o in self.quantize_units(mode, "patch", units).items()}
        units = {
            (s, c): [first[(s, c, b)] for b in range(self.blocks(s))] for s in sites for c in range(self.shapes[s][0])
        }
        per_channel = self.quantize_units(mode, "patch", units)
        units = {(s, None): [per_channel[(s, c)] for c in range(self.shapes[s][0])] for s in sites}
        return {s: o for (s, _), o in self.quantize_units(mode, "channel", units).items()}

    def run_mode(self, mode: str) -> ModeResult:
        options = self.site_options(mode)
        units = coupled_units(self.net, self.o.couple)
        plans_by_step: list[dict[int, SitePlan]] = []
        total = sum(len(v) for v in options.values()) + 1

        def evaluate(plans: dict[int, SitePlan], step: int) -> EvalResult:
            plans_by_step.append(plans)
            result = self.evaluate(Where("layer", mode, candidate=step), plans)
            self.progress(f"{mode}: layer quantizer", step + 1, total, result)
            return result

        trajectory = layer_quantize(units, options, self.base, evaluate)
        return ModeResult(mode, options, units, trajectory, plans_by_step)


def run_search(net, engine, store, options: SearchOptions, progress=None) -> tuple[EvalResult, dict[str, ModeResult]]:
    """Run every mode of ``options``; returns the base evaluation and each mode's result."""
    search = Search(net, engine, store, options, progress)
    return search.base, {mode: search.run_mode(mode) for mode in options.modes}
