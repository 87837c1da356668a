"""The Spatial layer (SPEC 4): zero prediction over p x p patches of one site's output.

For every image, channel and p x p patch of the zero-padded map: if every position where the
mask is True holds zero, the positions where it is False are set to zero (predicted). Vectorised:
no Python loop over images, channels or patches.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import CrossneuronError


def padded_size(n: int, p: int) -> int:
    """``n`` rounded up to a multiple of ``p``."""
    return -(-n // p) * p


def predicted_positions(x: torch.Tensor, mask: torch.Tensor, p: int) -> torch.Tensor:
    """Bool (N, C, H, W): the positions of ``x`` that ``mask`` (C, Hp, Wp) predicts to be zero.

    ``x`` is (N, C, H, W); padding up to (Hp, Wp) counts as zero.
    """
    n, c, h, w = x.shape
    hp, wp = mask.shape[1:]
    nz = x != 0
    if (hp, wp) != (h, w):
        nz = torch.nn.functional.pad(nz, (0, wp - w, 0, hp - h))
    hb, wb = hp // p, wp // p
    computed_nonzero = (nz & mask).view(n, c, hb, p, wb, p).any(dim=5).any(dim=3)
    predict = (~computed_nonzero)[:, :, :, None, :, None]
    fill = (predict & ~mask.view(1, c, hb, p, wb, p)).view(n, c, hp, wp)
    return fill[:, :, :h, :w] if (hp, wp) != (h, w) else fill


class Spatial(nn.Module):
    """Prediction at one site, with statistics accumulated since the last ``reset_stats``.

    ``mask`` is a (C, Hp, Wp) bool buffer, changed in place (all True = no prediction).
    Statistics are device tensors, summed without a host sync per call.
    """

    def __init__(self, shape: tuple[int, int, int], patch_size: int, macs_per_output: int):
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        self.patch_size = patch_size
        self.macs_per_output = macs_per_output
        self.enabled = True
        hp, wp = padded_size(h, patch_size), padded_size(w, patch_size)
        self.register_buffer("mask", torch.ones(c, hp, wp, dtype=torch.bool))
        # predicted positions, mispredicted positions, zero positions (oracle), images
        self.register_buffer("counts", torch.zeros(4, dtype=torch.int64), persistent=False)
        self._checked_version: tuple[int, bool] | None = None

    @property
    def predicting(self) -> bool:
        """True when enabled and the mask has at least one False (cached per in-place version)."""
        if not self.enabled:
            return False
        version = self.mask._version
        if self._checked_version is None or self._checked_version[0] != version:
            self._checked_version = (version, not bool(self.mask.all()))
        return self._checked_version[1]

    def reset_stats(self) -> None:
        self.counts.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise CrossneuronError(
                f"Spatial layer expects input (N, {', '.join(map(str, self.shape))}), got "
                f"{tuple(x.shape)}: attach with the input_shape the model is run on"
            )
        with torch.no_grad():
            nonzero = torch.count_nonzero(x)
            self.counts[2] += x.numel() - nonzero
            self.counts[3] += x.shape[0]
        if not self.predicting:
            return x
        fill = predicted_positions(x.detach(), self.mask, self.patch_size)
        with torch.no_grad():
            self.counts[0] += fill.sum()
            self.counts[1] += (fill & (x != 0)).sum()
        return x.masked_fill(fill, 0)
