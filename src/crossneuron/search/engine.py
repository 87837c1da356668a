"""Evaluation engines: evaluate a set of per-site masks on the calibration images.

An engine is any object with ``base`` (the EvalResult of no prediction), ``images`` and
``evaluate(masks, min_correct=None) -> EvalResult`` where ``masks`` maps site index -> (C, Hp, Wp) bool mask (sites
absent predict nothing). ``NaiveEngine`` is the reference: one full forward pass per evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..net import PredictiveNet
from ..precision import full_fp32


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

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.images


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
        correct = torch.zeros((), dtype=torch.int64)
        for x, y in self.batches:
            correct += (net(x).argmax(1) == y).sum().cpu()
        stats = net.stats()
        return EvalResult(int(correct), self.images, stats.macs_saved, stats.mispredicted, time.perf_counter() - t0)
