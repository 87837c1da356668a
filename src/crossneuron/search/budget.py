"""Budget rules (``--budget``): what "within epsilon" means for one evaluation record (SPEC 7).

A record compares a configuration with the base (no prediction) on the same calibration images.
Per image the two are *paired*: ``lost`` images were right at base and are wrong with the masks,
``gained`` images the other way round. A rule charges a record some points of accuracy; the record
is within epsilon when the charge is at most epsilon. Every stage that asks "within epsilon"
(first-level filtering, the quantizers, refine, ``pick``, progress, the screen's exact band) asks
the search's rule.

- ``net``: the calibration drop, 100 (lost - gained) / N (0.4.0 and before).
- ``flips``: 100 lost / N. Images turned right are not credited, so a configuration cannot pay for
  a lost image with one that a lucky perturbation happened to fix.
- ``ucb[:LEVEL]`` (level in (0, 1), default 0.9): a one-sided upper confidence bound on the drop a
  new image would see, p_lost - p_gained, from the paired flips: the exact (Clopper-Pearson) upper
  bound of p_lost from ``lost`` of N minus the exact lower bound of p_gained from ``gained`` of N,
  each at 1 - (1 - LEVEL) / 2 (Bonferroni: both hold together with probability at least LEVEL).
  A configuration that changes no image's outcome (lost = gained = 0) is charged 0. (A bound on
  p_lost / (p_lost + p_gained) given the discordant count, with D / N plugged in, charges nothing
  more than ``net`` when nothing is gained: it ignores how uncertain p_lost itself is.)
- ``paired[:LEVEL]`` (level in [0.5, 1), default 0.9; 0.9.0; measured in the budget study since 0.10): the normal
  upper bound of the paired drop, the mean of d_i (1 for a lost image, -1 for a gained one, 0
  otherwise) plus z_LEVEL standard errors: 100 ((lost - gained) + z sqrt(lost + gained - (lost -
  gained)^2 / N)) / N. It credits gains like ``net`` and charges for churn: a mask that turns 30
  images each way is charged z sqrt(60) / N (0.99 points at N = 1,000, z = 1.28) where ``flips``
  charges 3 and ``net`` 0.

Each rule charges at least the net drop (lost >= lost - gained; the bounds lie on either side of
lost / N and gained / N), so the engines'
cut-off, which stops a candidate once its *net* drop must exceed epsilon (``evaluator.min_correct``),
never stops one a rule would accept. A record cut short is never within (its counts are bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CrossneuronError
from .records import EvalResult

TOLERANCE = 1e-9  # points: float rounding of epsilon


@dataclass(frozen=True)
class Budget:
    """A rule: ``charge(result, base)`` in points; ``within(result, base, eps)``."""

    name: str  # as given to --budget (canonical form)

    def charge(self, result: EvalResult, base: EvalResult) -> float:
        raise NotImplementedError

    def within(self, result: EvalResult, base: EvalResult, eps: float) -> bool:
        if result.cut_short:
            return False
        return self.charge(result, base) <= eps + TOLERANCE


def _lost(result: EvalResult) -> int:
    if result.lost is None:
        raise CrossneuronError("a record without its lost-image count cannot be judged by this budget rule")
    return result.lost


def _flips(result: EvalResult, base: EvalResult) -> tuple[int, int]:
    """The record's paired flips against the base: images (lost, gained)."""
    lost = _lost(result)
    gained = result.correct - base.correct + lost
    if gained < 0:
        raise CrossneuronError(f"inconsistent record: {lost} images lost but only {result.correct} right")
    return lost, gained


@dataclass(frozen=True)
class Net(Budget):
    name: str = "net"

    def charge(self, result: EvalResult, base: EvalResult) -> float:
        return 100.0 * (base.correct * result.images - result.correct * base.images) / (result.images * base.images)

    def within(self, result: EvalResult, base: EvalResult, eps: float) -> bool:
        if result.cut_short:
            return False
        return (  # exact in integers up to float rounding of eps (0.4.0's quantize.within)
            100.0 * (base.correct * result.images - result.correct * base.images)
            <= eps * result.images * base.images + 1e-9
        )


@dataclass(frozen=True)
class Flips(Budget):
    name: str = "flips"

    def charge(self, result: EvalResult, base: EvalResult) -> float:
        return 100.0 * _lost(result) / result.images


def upper_rate(k: int, n: int, level: float) -> float:
    """The exact one-sided (Clopper-Pearson) upper confidence bound at ``level`` of a binomial rate
    from ``k`` successes in ``n`` trials: the q with P(X <= k | q) = 1 - level."""
    from scipy.stats import beta  # imported here: the CLI starts without scipy.stats

    if k >= n:
        return 1.0
    return float(beta.ppf(level, k + 1, n - k))


def lower_rate(k: int, n: int, level: float) -> float:
    """The exact one-sided lower confidence bound: the q with P(X >= k | q) = 1 - level (0 when k = 0)."""
    from scipy.stats import beta

    if k <= 0:
        return 0.0
    return float(beta.ppf(1 - level, k, n - k + 1))


@dataclass(frozen=True)
class UpperBound(Budget):
    level: float = 0.9
    name: str = "ucb"

    def charge(self, result: EvalResult, base: EvalResult) -> float:
        lost, gained = _flips(result, base)
        if lost == gained == 0:
            return 0.0
        each = 1 - (1 - self.level) / 2
        n = result.images
        return 100.0 * (upper_rate(lost, n, each) - lower_rate(gained, n, each))


@dataclass(frozen=True)
class Paired(Budget):
    level: float = 0.9
    name: str = "paired"

    def charge(self, result: EvalResult, base: EvalResult) -> float:
        from statistics import NormalDist

        lost, gained = _flips(result, base)
        n, diff = result.images, lost - gained
        spread = max(0.0, lost + gained - diff * diff / n) ** 0.5
        return 100.0 * (diff + NormalDist().inv_cdf(self.level) * spread) / n


NET = Net()
RULES = {"net": "calibration drop, lost minus gained images", "flips": "images lost, none credited for gains",
         "ucb": "upper confidence bound on the drop from the paired flips (ucb:LEVEL, default 0.9)",
         "paired": "net drop plus z standard errors of the paired difference (paired:LEVEL, default 0.9)"}  # fmt: skip


def get_budget(spec: str) -> Budget:
    """``net``, ``flips``, ``ucb`` or ``ucb:LEVEL`` (0 < LEVEL < 1), ``paired`` or ``paired:LEVEL``
    (0.5 <= LEVEL < 1)."""
    name, _, arg = str(spec).strip().partition(":")
    if name == "net" and not arg:
        return NET
    if name == "flips" and not arg:
        return Flips()
    if name in ("ucb", "paired"):
        try:
            level = float(arg) if arg else 0.9
        except ValueError:
            level = float("nan")
        if name == "ucb" and not 0 < level < 1:
            raise CrossneuronError(f"--budget ucb:LEVEL needs a confidence level between 0 and 1, got '{arg}'")
        if name == "paired" and not 0.5 <= level < 1:
            raise CrossneuronError(f"--budget paired:LEVEL needs a confidence level in [0.5, 1), got '{arg}'")
        return (UpperBound if name == "ucb" else Paired)(name=f"{name}:{level:g}", level=level)
    raise CrossneuronError(f"unknown --budget '{spec}': choose net, flips, ucb[:LEVEL] or paired[:LEVEL] "
                           "(e.g. ucb:0.9)")  # fmt: skip


def budgets_help() -> str:
    return "; ".join(f"{k}: {v}" for k, v in RULES.items())
