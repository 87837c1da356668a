"""The record of one evaluation: what engines return, the store keeps and the quantizers read.

Kept apart from the engines so that the quantizers, the store and the result files import it
without importing torch or an engine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalResult:
    correct: int
    images: int
    macs_saved: int  # total over the images
    mispredicted: int
    seconds: float = 0.0
    cut_short: bool = False  # stopped once it could not reach min_correct: correct is an upper bound,
    # macs_saved and mispredicted cover only the images seen
    estimated: bool = False  # screened: correct is a first-order estimate (macs_saved, mispredicted exact)
    lost: int | None = None  # images right at base and wrong here (the budget rules' paired flips; the
    # images turned right are correct - base correct + lost); None in records of 0.4 and before

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.images
