"""``SearchOptions``: everything that decides what a search evaluates (its records' identity)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..errors import CrossneuronError
from ..patterns import check_ones, pattern_codes
from ..thresholds import check_zero_below
from .budget import get_budget
from .modes import parse_modes
from .quantize import COMBINERS, MOVE_ORDERS

OPTIMIZERS = ("layer", "milp")  # --optimizer: what chooses one option per site after the quantizers
BASELINES = ("diagonal",)  # reference masks a search can evaluate (and refine can start from)


DEFAULT_VERIFY = 1000  # --verify's default where it fits (RESULTS.md, session 13)
DEFAULT_CHECK = 1000  # check images (SPEC 5): the search never sees them; defaults are chosen on them


def default_verify(val_size: int, calib: int) -> int:
    """``--verify``'s default: 1,000 verify images where the val split holds them next to the calibration
    images and 1,000 check images, none otherwise (a val split of 5,000 with up to 3,000 calibration
    images gets them; the tests' 300 does not). Chosen on check images across four checkpoints
    (RESULTS.md, "Session 12" and "Session 13")."""
    return DEFAULT_VERIFY if val_size - calib >= DEFAULT_VERIFY + DEFAULT_CHECK else 0


@dataclass
class SearchOptions:
    modes: list[str] = field(default_factory=lambda: ["uniform-layer"])
    patch_size: int = 2
    ones: tuple[int, int] | None = None  # None: 1 .. p*p-1
    patterns: str = "all"  # pattern family (patterns.FAMILIES): all in the ones range, permutations (0.12), both (0.13)
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
    refine_order: str = "mispredictions,index"  # refine's move orders (quantize.MOVE_ORDERS), comma separated: one
    # pass (and seeded pass) per order, in turn; every step joins the trajectory
    combine: str = "slope"  # patch/channel quantizer: slope (MACs per misprediction) or rank (SPEC 6)
    # the reference every search evaluates on its calibration images (the 2018 diagonal at every
    # site; None: none); with refine, a second pass starts from it at its own calibration drop
    baseline: str | None = "diagonal"
    budget: str = "flips"  # "within epsilon" (budget.get_budget): net, flips, ucb[:LEVEL], paired[:LEVEL]; 0.6: flips
    optimizer: str = "milp"  # after the quantizers: layer (SPEC 6's layer quantizer), milp, or both; 0.6: milp
    milp_rounds: int = 6  # milp: exact verifications (and re-solves) per epsilon at most
    # milp: HiGHS's time limit per solve; 0 (the default since 0.17, RESULTS.md "Session 20"): greedy and exchanges
    # only, the same on any machine (0.6-0.16: 20, the budget study's setting)
    milp_seconds: float = 0.0
    # val images after the calibration images on which pick also asks the budget (0: none; None: the
    # default, ``default_verify``: 1,000 where val holds them beside the calibration and check images; 0.11)
    verify: int | None = None
    # milp: each round's choice must keep the budget on the verify images too (0.12; off: the verify
    # images only judge pick's final choice)
    milp_verify: bool = False
    # a computed position counts as zero when at most this fraction of its site's mean positive activation on the
    # calibration images (0.14, ``thresholds.py``; 0: exactly zero, SPEC 4)
    zero_below: float = 0.0

    def check(self, val_size: int | None = None) -> None:
        self.modes = parse_modes(self.modes)
        self.ones = check_ones(self.patch_size, self.ones)
        pattern_codes(self.patch_size, self.ones, self.patterns)  # one clear error for an unknown or empty family
        if not self.eps or not all(isinstance(e, (int, float)) and math.isfinite(e) and 0 <= e <= 100
                                   for e in self.eps):  # fmt: skip
            raise CrossneuronError(f"epsilon must be >= 0 and <= 100 percentage points, got {self.eps}")
        if not (math.isfinite(self.gt) and self.gt >= 0):
            raise CrossneuronError(f"GT must be >= 0 (0 means single p x p patches), got {self.gt}")
        if self.top_m is not None and self.top_m < 1:
            raise CrossneuronError(f"top-M must be at least 1, got {self.top_m}")
        if self.calib < 1 or (val_size is not None and self.calib > val_size):
            raise CrossneuronError(f"calibration size must be 1..{val_size} (the val split's size), got {self.calib}")
        if not (math.isfinite(self.screen_band) and self.screen_band >= 0) or self.screen_check < 0:
            raise CrossneuronError(
                f"--screen-band and --screen-check must be >= 0, got {self.screen_band} and {self.screen_check}"
            )
        if self.combine not in COMBINERS:
            raise CrossneuronError(f"unknown --combine '{self.combine}': choose {' or '.join(COMBINERS)}")
        orders = self.refine_orders
        if not orders or any(o not in MOVE_ORDERS for o in orders) or len(set(orders)) < len(orders):
            raise CrossneuronError(f"unknown --refine-order '{self.refine_order}': choose {', '.join(MOVE_ORDERS)} "
                                   "or a comma list of them, each once")  # fmt: skip
        if self.batch_size < 1:
            raise CrossneuronError(f"batch size must be at least 1, got {self.batch_size}")
        self.budget = get_budget(self.budget).name  # canonical: ucb -> ucb:0.9
        chosen = self.optimizers
        if not chosen or any(o not in OPTIMIZERS for o in chosen) or len(set(chosen)) < len(chosen):
            raise CrossneuronError(f"unknown --optimizer '{self.optimizer}': choose {', '.join(OPTIMIZERS)} or both "
                                   "comma separated")  # fmt: skip
        if self.milp_rounds < 1 or not (math.isfinite(self.milp_seconds) and self.milp_seconds >= 0):
            raise CrossneuronError(f"--milp-rounds must be >= 1 and --milp-seconds >= 0, got {self.milp_rounds} and "
                                   f"{self.milp_seconds}")  # fmt: skip
        if self.verify is None and val_size is not None:  # the default, once the val split's size is known
            self.verify = default_verify(val_size, self.calib)
        v = self.verify
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0
                              or (val_size is not None and self.calib + v > val_size)):  # fmt: skip
            fits = f" (with the {self.calib} calibration images, at most {val_size} in all)" if val_size else ""
            raise CrossneuronError(f"--verify must be a number of val images >= 0{fits}, got {self.verify!r}")
        if self.milp_verify and (val_size is not None and not self.verify or "milp" not in self.optimizers):
            raise CrossneuronError("--milp-verify needs the milp optimiser and verify images (--verify N > 0, "
                                   f"got {self.verify!r}; optimiser {self.optimizer})")  # fmt: skip
        self.zero_below = check_zero_below(self.zero_below)
        if self.baseline is not None and self.baseline not in BASELINES:
            raise CrossneuronError(f"unknown baseline '{self.baseline}': choose {', '.join(BASELINES)} or None")

    @property
    def optimizers(self) -> list[str]:
        return [o.strip() for o in self.optimizer.split(",")]

    @property
    def refine_orders(self) -> list[str]:
        return [o.strip() for o in self.refine_order.split(",")]

    def identity(self) -> dict:
        d = asdict(self)
        d["ones"] = list(self.ones) if self.ones else None
        if not self.verify:  # added in 0.10: run folders without verify images keep their identity (and resume)
            del d["verify"]
        for key, default in (("patterns", "all"), ("milp_verify", False), ("zero_below", 0.0)):  # 0.12, 0.14
            if d[key] == default:
                del d[key]
        return d
