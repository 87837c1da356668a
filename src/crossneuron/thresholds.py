"""Zero tolerance (0.14, ``--zero-below F``): per-site thresholds below which a computed value counts as zero.

SPEC 4 predicts a patch when its computed positions are exactly zero. With ``--zero-below F`` a computed
position counts as zero when its value is at most ``F`` times the site's mean positive activation on the
calibration images (no prediction anywhere, every image and channel: one exact number per site, recorded
in result.json). The computed positions keep their values; the patch's other positions are set to zero,
and those that were non-zero count as mispredicted. ``F = 0`` is SPEC 4 exactly.
"""

from __future__ import annotations

import math

import torch

from .errors import CrossneuronError
from .net import PredictiveNet
from .precision import full_fp32

MAX_ZERO_BELOW = 10.0  # a fraction above this predicts nearly every patch: a typo, not a setting


def check_zero_below(fraction: float) -> float:
    """``--zero-below``: a finite fraction in [0, MAX_ZERO_BELOW], or one clear error."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction) \
            or not 0 <= fraction <= MAX_ZERO_BELOW:  # fmt: skip
        raise CrossneuronError(f"--zero-below must be a fraction of a site's mean positive activation from 0 to "
                               f"{MAX_ZERO_BELOW:g} (0: exactly zero, SPEC 4), got {fraction!r}")  # fmt: skip
    return float(fraction)


@full_fp32()
@torch.inference_mode()
def site_thresholds(net: PredictiveNet, images: torch.Tensor, fraction: float,
                    batch_size: int = 500) -> dict[int, float]:  # fmt: skip
    """Per site index: ``fraction`` x the mean of the site's positive values over ``images`` (normalised, on the
    net's device), with no prediction at any site. A site with no positive value gets 0."""
    fraction = check_zero_below(fraction)
    sums = {s.index: torch.zeros((), dtype=torch.float64) for s in net.sites}
    counts = {s.index: 0 for s in net.sites}

    def hook(index, x):
        positive = x[x > 0]
        sums[index] += positive.sum(dtype=torch.float64).cpu()
        counts[index] += positive.numel()

    was = {s.index: net.spatial(s).enabled for s in net.sites}
    hooks = [net.spatial(s).register_forward_pre_hook(lambda m, a, i=s.index: hook(i, a[0])) for s in net.sites]
    try:
        for s in net.sites:
            net.enable(s, False)
        net.eval()
        for batch in images.split(batch_size):
            net(batch)
    finally:
        for h in hooks:
            h.remove()
        for s in net.sites:
            net.enable(s, was[s.index])
    # six significant digits: the same thresholds whatever the summation order of this machine's threads
    return {k: float(f"{fraction * float(sums[k]) / counts[k]:.6g}") if counts[k] else 0.0 for k in sums}


def apply_thresholds(net: PredictiveNet, thresholds: dict[int, float] | dict[str, float]) -> None:
    """Set the thresholds (by site index or name; sites not named get 0)."""
    for s in net.sites:
        net.set_threshold(s, thresholds.get(s.index, thresholds.get(s.name, 0.0)))


__all__ = ["apply_thresholds", "check_zero_below", "site_thresholds"]
