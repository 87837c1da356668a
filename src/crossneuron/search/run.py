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
from .quantize import Option, Step, combine, combine_slope, forward_quantize, layer_quantize, pick, rank, within
from .store import Store, Where

MODES = ("uniform-layer", "uniform-patch", "uniform-filters", "max-granularity")
COMBINERS = {"rank": combine, "slope": combine_slope}


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
    screen: bool = False  # estimate targets below site level; exact only near the epsilon boundary
    screen_band: float = 1.0  # points around the largest epsilon where a screened estimate is re-evaluated
    screen_check: int = 30  # screened estimates also evaluated exactly, to measure the proxy
    refine: bool = False  # after the layer quantizer, a forward greedy with joint acceptance per eps
    site_wide: bool = False  # finer modes also offer each site's uniform-layer options (exact, site level)
    combine: str = "rank"  # patch/channel quantizer: rank (SPEC 6) or slope (MACs per misprediction)

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
        if self.screen_band < 0 or self.screen_check < 0:
            raise CrossneuronError(
                f"--screen-band and --screen-check must be >= 0, got {self.screen_band} and {self.screen_check}"
            )
        if self.combine not in COMBINERS:
            raise CrossneuronError(f"unknown --combine '{self.combine}': choose {' or '.join(COMBINERS)}")
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
    screen: dict | None = None  # the proxy's check against exact evaluations, when screened

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
        self.screener = None
        if options.screen and any(m != "uniform-layer" for m in options.modes):
            from .screen import Screen

            self.screener = Screen(net, engine.batches, self.codes, self.sides)
        self.screen_checks: dict[str, dict] = {}
        self._pending: list = []
        # refine only: a second, seeded pass from a known configuration (optimize sets the 2018 diagonal
        # mask everywhere) at its own budgets (the diagonal's calibration drop); the first pass is unchanged
        self.seed_plans: dict[int, SitePlan] | None = None
        self.seed_eps: list[float] = []

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, where: Where, plans: dict[int, SitePlan], may_cut: bool = False,
                 cut_eps: float | None = None) -> EvalResult:  # fmt: skip
        """Memoised evaluation. ``may_cut``: the engine may stop once the candidate provably falls
        outside the largest epsilon, or ``cut_eps`` (its record says so); only options within it
        matter there."""
        plans = {k: v for k, v in plans.items() if v}
        key = config_hash(plans)
        found = self.store.find(where, key)
        if found is not None:
            return found
        masks = {s: full_mask(plan, self.shapes[s], self.p, self.sides[s]) for s, plan in plans.items()}
        min_correct = None
        if may_cut:
            n = self.base.images
            eps = self.eps if cut_eps is None else cut_eps
            min_correct = math.ceil(self.base.correct - eps * n / 100 - 1e-9)
        result = self.engine.evaluate(masks, min_correct)
        self.store.add(where, key, result, self.engine.name)
        return result

    def screened(self, where: Where, site: int, plan: SitePlan, estimate: EvalResult | None = None) -> EvalResult:
        """A candidate below site level in a screened search: its estimate, unless it moves no image
        (then exactly the base) or its estimated drop is within the band around the largest
        epsilon (then evaluated exactly). Memoised like ``evaluate``."""
        key = config_hash({site: plan})
        found = self.store.find(where, key)
        if found is not None:
            return found
        est = estimate or self.screener.estimate(site, plan)
        if est.mispredicted == 0:  # nothing changes: exactly the base accuracy
            result = EvalResult(self.base.correct, est.images, est.macs_saved, 0)
        elif abs(100.0 * (self.base.correct - est.correct) / est.images - self.eps) <= self.o.screen_band:
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

    def check_screen(self, mode: str, estimates: list[tuple]) -> None:
        """Evaluate a fixed random sample of screened first-level estimates exactly; record the proxy's
        rank correlation with exact accuracy and its error."""
        import numpy as np

        from .screen import spearman

        pool = [(t, o) for t, o in estimates if o.result.estimated]
        if not pool or not self.o.screen_check:
            return
        rng = np.random.default_rng(self.o.seed)
        sample = [pool[i] for i in sorted(rng.permutation(len(pool))[: self.o.screen_check])]
        est, exact = [], []
        for (site, channel, block), option in sample:
            code = option.plan[0].code
            where = Where("check", mode, site, channel, block, pattern=code)
            exact.append(self.evaluate(where, {site: option.plan}).correct)
            est.append(option.result.correct)
        n = self.base.images
        self.screen_checks[mode] = {
            "sample": len(sample),
            "spearman": spearman(est, exact),
            "mean_abs_error_points": float(np.mean(np.abs(np.array(est) - np.array(exact)))) * 100.0 / n,
            "estimated_records": len(pool),
            "band_points": self.o.screen_band,
        }

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
        if self.screener is not None and mode != "uniform-layer":  # uniform-layer's targets are whole sites
            return self._first_level_screened(mode, total)
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

    def _first_level_screened(self, mode: str, total: int) -> dict[tuple, list[Option]]:
        by_channel = mode in ("uniform-patch", "max-granularity")
        by_block = mode in ("uniform-filters", "max-granularity")
        done, ranked, options = 0, {}, []
        self.progress(f"{mode}: first level (screened)", 0, total, self.base)
        for s in self.net.sites:
            per_target: dict[tuple, list[Option]] = {}
            for (channel, block, code), est in self.screener.first_level(s.index, by_channel, by_block).items():
                plan = (Piece(channel, block, code),)
                where = Where("first", mode, s.index, channel, block, pattern=code)
                option = Option(plan, self.screened(where, s.index, plan, est))
                per_target.setdefault((s.index, channel, block), []).append(option)
                options.append(((s.index, channel, block), option))
                if within(option.result, self.base, self.eps):
                    self._best = max(self._best, option.result.macs_saved)
            done += len(per_target) * len(self.codes)
            self.progress(f"{mode}: first level (screened)", done, total, self.base)
            self.flush()
            ranked.update({t: rank(o, self.base, self.eps, self.o.top_m) for t, o in per_target.items()})
        self.check_screen(mode, options)
        return ranked

    def quantize_units(
        self, mode: str, stage: str, units: dict[tuple, list[list[Option]]]
    ) -> dict[tuple, list[Option]]:
        """Patch or channel quantizer over units (site, channel|None) of sub-target option lists."""
        total = sum(max((len(o) for o in subs), default=0) for subs in units.values())
        done, out = 0, {}
        for (site, channel), subs in units.items():
            opts = []
            for k, plan in enumerate(COMBINERS[self.o.combine](subs)):
                where = Where(stage, mode, site, channel, candidate=k)
                if self.screener is not None and channel is not None:  # below site level: screened
                    opts.append(Option(plan, self.screened(where, site, plan)))
                else:
                    opts.append(Option(plan, self.evaluate(where, {site: plan}, may_cut=True)))
                done += 1
                self.progress(f"{mode}: {stage} quantizer", done, total, opts[-1].result)
            out[(site, channel)] = rank(opts, self.base, self.eps, self.o.top_m)
        self.flush()
        return out

    def site_options(self, mode: str) -> dict[int, list[Option]]:
        """Each site's ranked options for the layer quantizer; with ``site_wide``, a finer mode's lists
        also hold uniform-layer's (its space contains them, its bottom-up quantizers rarely build them)."""
        options = self._quantized_options(mode)
        if self.o.site_wide and mode != "uniform-layer":
            options = {s: rank([*o, *self.whole_site(mode, s)], self.base, self.eps, self.o.top_m)
                       for s, o in options.items()}  # fmt: skip
        return options

    def whole_site(self, mode: str, site: int) -> list[Option]:
        """Every pattern tiled over the whole site, evaluated exactly with only that site predicting
        (uniform-layer's first level: the same records when that mode ran in this search)."""
        opts = []
        for k, code in enumerate(self.codes):
            plan = (Piece(None, None, code),)
            result = self.evaluate(Where("first", "uniform-layer", site, None, None, pattern=code), {site: plan},
                                   may_cut=True)  # fmt: skip
            opts.append(Option(plan, result))
            self.progress(f"{mode}: site-wide options", k + 1, len(self.codes), result)
        return opts

    def _quantized_options(self, mode: str) -> dict[int, list[Option]]:
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
            # moves follow isolated records, and picks only steps within epsilon: a step that provably
            # falls outside the largest one may be cut short
            result = self.evaluate(Where("layer", mode, candidate=step), plans, may_cut=True)
            self.progress(f"{mode}: layer quantizer", step + 1, total, result)
            return result

        trajectory = layer_quantize(units, options, self.base, evaluate)
        if self.o.refine:

            def evaluate_refine(plans: dict[int, SitePlan], step: int, eps: float) -> EvalResult:
                plans_by_step.append(plans)
                result = self.evaluate(Where("refine", mode, candidate=step), plans, may_cut=True, cut_eps=eps)
                self.progress(f"{mode}: refine", step + 1 - len(trajectory), total, result)
                return result

            trajectory += forward_quantize(units, options, self.base, evaluate_refine, self.o.eps, len(trajectory))
            if self.seed_plans:  # a separate pass: a seed adopted early can trap the greedy (measured)
                seeded, seed = self._with_seed(mode, options)
                trajectory += forward_quantize(units, seeded, self.base, evaluate_refine,
                                               self.seed_eps or [max(self.o.eps)], len(trajectory), seed)  # fmt: skip
        return ModeResult(mode, options, units, trajectory, plans_by_step, self.screen_checks.get(mode))

    def _with_seed(self, mode: str, options: dict[int, list[Option]]) -> tuple[dict, dict[int, int]]:
        """Each site's options with the seed's plan among them (evaluated alone where it is not, and
        placed by MACs saved), and the seed as an index into each list."""
        out, seed = {}, {}
        for site, opts in options.items():
            plan = self.seed_plans[site]
            index = next((k for k, o in enumerate(opts) if o.plan == plan), None)
            if index is None:
                option = Option(plan, self.evaluate(Where("seed", mode, site=site), {site: plan}))
                key = (-option.result.macs_saved, -option.result.correct)
                index = next((k for k, o in enumerate(opts) if (-o.result.macs_saved, -o.result.correct) > key),
                             len(opts))  # fmt: skip
                opts = [*opts[:index], option, *opts[index:]]
            out[site], seed[site] = opts, index
        return out, seed


def run_search(net, engine, store, options: SearchOptions, progress=None) -> tuple[EvalResult, dict[str, ModeResult]]:
    """Run every mode of ``options``; returns the base evaluation and each mode's result."""
    search = Search(net, engine, store, options, progress)
    return search.base, {mode: search.run_mode(mode) for mode in options.modes}
