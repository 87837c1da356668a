"""Accuracy of a model or net on a split, and the 2018 diagonal baseline (SPEC 2 and 5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import DatasetSpec
from .macs import pct
from .net import attach
from .patterns import diagonal
from .precision import full_fp32
from .splits import batches


@full_fp32()
@torch.inference_mode()
def right_images(model: nn.Module, x, y, spec: DatasetSpec, batch_size: int = 500, device="cpu") -> np.ndarray:
    """Per image of (x, y): whether the top-1 prediction is right (bool array; one copy off the device)."""
    model.eval()
    right = [model(xb).argmax(1) == yb for xb, yb in batches(x, y, spec, batch_size, device)]
    return torch.cat(right).cpu().numpy() if right else np.zeros(0, dtype=bool)


def correct_count(model: nn.Module, x, y, spec: DatasetSpec, batch_size: int = 500, device="cpu") -> int:
    """Number of images of (x, y) whose top-1 prediction is right."""
    return int(right_images(model, x, y, spec, batch_size, device).sum())


@dataclass(frozen=True)
class PatternResult:
    accuracy: float
    base_accuracy: float
    macs_saved_pct_network: float
    macs_saved_pct_sites: float
    oracle_pct_network: float
    oracle_pct_sites: float
    mispredicted_rate: float
    images: int
    per_site: tuple = ()  # per site: name, share of network MACs, MACs saved and oracle (% of network)

    @property
    def drop(self) -> float:
        return self.base_accuracy - self.accuracy

    def as_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "base_accuracy": self.base_accuracy,
            "drop": self.drop,
            "macs_saved_pct_network": self.macs_saved_pct_network,
            "macs_saved_pct_sites": self.macs_saved_pct_sites,
            "oracle_pct_network": self.oracle_pct_network,
            "oracle_pct_sites": self.oracle_pct_sites,
            "mispredicted_rate": self.mispredicted_rate,
            "images": self.images,
            "per_site": list(self.per_site),
        }


@dataclass(frozen=True)
class Plain:
    """The pass of a net with no prediction on (x, y): correct images and its stats (the oracle)."""

    hits: int
    stats: object


def plain_pass(net, spec: DatasetSpec, x, y, batch_size: int = 500, device="cpu") -> Plain:
    """``net`` with every site off on (x, y), for ``measure(plain=...)`` to reuse across masks."""
    net = net.to(device).eval()
    for site in net.sites:
        net.enable(site, False)
    net.reset_stats()
    hits = correct_count(net, x, y, spec, batch_size, device)
    return Plain(hits, net.stats())


def measure(net, spec: DatasetSpec, x, y, masks: dict | None, batch_size: int = 500, device="cpu",
            plain: Plain | None = None) -> PatternResult:  # fmt: skip
    """Accuracy and MACs of ``net`` with ``masks`` (site index or name -> mask, pattern or None; None:
    the masks the net has, e.g. from ``result.apply_result``) against no prediction, on (x, y). The
    oracle is that of the network without prediction. ``plain``: that pass, made once by ``plain_pass``
    on the same net and images (it does not depend on the masks)."""
    net = net.to(device).eval()
    for site in net.sites if masks is not None else ():
        net.set_mask(site, masks.get(site.index, masks.get(site.name)))
    if plain is None:
        plain = plain_pass(net, spec, x, y, batch_size, device)
    base, plain = plain.hits, plain.stats
    for site in net.sites:
        net.enable(site, True)
    net.reset_stats()
    hits = correct_count(net, x, y, spec, batch_size, device)
    s = net.stats()
    n = len(y)
    return PatternResult(
        accuracy=100.0 * hits / n,
        base_accuracy=100.0 * base / n,
        macs_saved_pct_network=s.macs_saved_pct_network,
        macs_saved_pct_sites=s.macs_saved_pct_sites,
        oracle_pct_network=plain.oracle_pct_network,
        oracle_pct_sites=plain.oracle_pct_sites,
        mispredicted_rate=s.mispredicted_rate,
        images=n,
        per_site=tuple(
            {
                "name": site.name,
                "share_of_network_pct": pct(site.site_macs, 1, net.network_macs),
                "macs_saved_pct_network": pct(site.macs_saved, n, net.network_macs),
                "macs_saved_pct_site": pct(site.macs_saved, n, site.site_macs),
                "oracle_pct_network": pct(zero.oracle_macs, n, net.network_macs),
            }
            for site, zero in zip(s.per_site, plain.per_site, strict=True)
        ),
    )


def evaluate_pattern(model, spec: DatasetSpec, x, y, patch_size: int, pattern=None, batch_size=500, device="cpu"):
    """The same ``pattern`` (default: the diagonal) tiled at every site, against no prediction."""
    net = attach(model.to(device), spec.input_shape, patch_size)
    mask = diagonal(patch_size) if pattern is None else pattern
    return measure(net, spec, x, y, {s.index: mask for s in net.sites}, batch_size, device)
