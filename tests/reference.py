"""Slow, obviously-correct reference implementations that the vectorised code is tested against."""

from __future__ import annotations

import torch


def predict_loop(x: torch.Tensor, mask: torch.Tensor, p: int, threshold: float = 0.0):
    """SPEC 4 by explicit loops (a computed position counts as zero when its value is <= ``threshold``).
    Returns (output, predicted count, mispredicted count)."""
    n, c, h, w = x.shape
    _, hp, wp = mask.shape
    out = x.clone()
    predicted = mispredicted = 0
    for b in range(n):
        for ch in range(c):
            for i0 in range(0, hp, p):
                for j0 in range(0, wp, p):
                    cells = [(i, j) for i in range(i0, i0 + p) for j in range(j0, j0 + p)]

                    def value(i, j, b=b, ch=ch):
                        return float(x[b, ch, i, j]) if i < h and j < w else 0.0  # padding is zero

                    if any(mask[ch, i, j] and value(i, j) > threshold for i, j in cells):
                        continue
                    for i, j in cells:
                        if not mask[ch, i, j] and i < h and j < w:
                            predicted += 1
                            mispredicted += value(i, j) != 0
                            out[b, ch, i, j] = 0
    return out, predicted, mispredicted


def run_capturing(net, x):
    """Reset ``net``'s statistics, run ``x`` once without gradients and return every site's input to its
    Spatial layer (the activation before prediction), by site index."""
    captured = {}
    hooks = [
        net.spatial(s).register_forward_pre_hook(lambda m, a, i=s.index: captured.__setitem__(i, a[0].clone()))
        for s in net.sites
    ]
    net.reset_stats()
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return captured
