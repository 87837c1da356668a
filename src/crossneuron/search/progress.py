"""Progress of a search for a progress bar: the stage, how far it is, and the most MACs saved
(% of network) within the largest epsilon seen in that stage."""

from __future__ import annotations

from collections.abc import Callable

from ..macs import pct
from .budget import NET, Budget
from .records import EvalResult

Report = Callable[[str, int, int, float], None]  # stage, done, total, best % of network MACs


class Progress:
    def __init__(self, report: Report | None, base: EvalResult, eps: float, network_macs: int,
                 budget: Budget = NET):  # fmt: skip
        self._report = report or (lambda stage, done, total, best: None)
        self.base, self.eps, self.network_macs, self.budget = base, eps, network_macs, budget
        self._stage: str | None = None
        self._best = 0

    def seen(self, result: EvalResult) -> None:
        """Count a result towards the stage's best without reporting."""
        if self.budget.within(result, self.base, self.eps):
            self._best = max(self._best, result.macs_saved)

    def __call__(self, stage: str, done: int, total: int, result: EvalResult | None = None) -> None:
        if stage != self._stage:
            self._stage, self._best = stage, 0
        if result is not None:
            self.seen(result)
        self._report(stage, done, total, pct(self._best, self.base.images, self.network_macs))
