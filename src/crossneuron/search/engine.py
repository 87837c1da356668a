"""Evaluation engines: evaluate a set of per-site masks on the calibration images.

``Engine`` is the whole contract a search relies on; ``NaiveEngine`` is the reference (one full
forward pass per evaluation), ``fast.FastEngine`` the exact accelerated one.
"""

from __future__ import annotations

import time
from typing import ClassVar, Protocol, runtime_checkable

import torch

from ..net import PredictiveNet
from ..precision import full_fp32
from .records import EvalResult


@runtime_checkable
class Engine(Protocol):
    """All a search needs of an engine.

    - ``name``: stored with every record it makes.
    - ``images``: the number of calibration images; ``base``: the record of no prediction.
    - ``batches``: the calibration images as (normalised images, labels) batches on the net's device
      (the screen's gradient pass reads them).
    - ``evaluate(masks, min_correct)``: ``masks`` maps site index -> (C, Hp, Wp) bool mask (absent
      sites predict nothing); with ``min_correct`` the engine may stop once fewer images can be
      right and return an upper bound with ``cut_short`` set. The record counts ``lost`` (images
      right at base, wrong here) for the budget rules. The result must not depend on what
      was evaluated before (records are memoised and reused across runs).
    """

    name: ClassVar[str] | str
    images: int
    base: EvalResult
    batches: list[tuple[torch.Tensor, torch.Tensor]]

    def evaluate(self, masks: dict[int, torch.Tensor], min_correct: int | None = None) -> EvalResult: ...


class NaiveEngine:
    """A full forward pass of the calibration images per evaluation."""

    name = "naive"

    def __init__(self, net: PredictiveNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500):
        """``images`` are normalised float (N, C, H, W) on the net's device; ``labels`` int64 (N,)."""
        self.net = net.eval()
        self.batches = [
            (images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)
        ]
        self.images = len(labels)
        self.base_hit: torch.Tensor | None = None  # per image: right with no prediction
        self.base = NaiveEngine.evaluate(self, {})  # a full pass, whatever the subclass

    def set_masks(self, masks: dict[int, torch.Tensor]) -> PredictiveNet:
        """Every site's mask: the given ones, no prediction elsewhere."""
        for site in self.net.sites:
            self.net.set_mask(site.index, masks.get(site.index))
        return self.net

    @full_fp32()
    @torch.inference_mode()
    def evaluate(self, masks: dict[int, torch.Tensor], min_correct: int | None = None) -> EvalResult:
        """``min_correct``: an engine may stop early once fewer are certain (naive never does)."""
        t0 = time.perf_counter()
        net = self.set_masks(masks)
        net.reset_stats()
        hit = torch.cat([net(x).argmax(1) == y for x, y in self.batches])
        stats = net.stats()
        if self.base_hit is None:
            self.base_hit = hit
        return EvalResult(int(hit.sum()), self.images, stats.macs_saved, stats.mispredicted, time.perf_counter() - t0,
                          lost=lost_images(self.base_hit, hit))  # fmt: skip


def lost_images(base_hit: torch.Tensor, hit: torch.Tensor) -> int:
    """Images right at base and wrong in ``hit`` (per-image booleans, same order)."""
    return int((base_hit & ~hit).sum())
