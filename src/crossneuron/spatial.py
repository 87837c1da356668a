"""The Spatial layer (SPEC 4): zero prediction over p x p patches of one site's output.

For every image, channel and p x p patch of the zero-padded map: if every position where the
mask is True holds zero, the positions where it is False are set to zero (predicted). Vectorised:
no Python loop over images, channels or patches.

With a site threshold t > 0 (0.14, ``--zero-below``; README "Zero tolerance") a computed position
counts as zero when its value is at most t: a patch whose computed positions are all <= t has its
other positions set to zero, while its computed positions keep their (small) values.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CrossneuronError


def padded_size(n: int, p: int) -> int:
    """``n`` rounded up to a multiple of ``p``."""
    return -(-n // p) * p


def patch_reduce(t: torch.Tensor, p: int, op=operator.or_) -> torch.Tensor:
    """(..., Hp, Wp) -> (..., Hp/p, Wp/p): ``op`` (OR, +) over each p x p patch, as strided sub-grid passes
    (rows, then columns): fast in any memory format, no reshape of the map."""
    rows = functools.reduce(op, (t[..., i::p, :] for i in range(p)))
    return functools.reduce(op, (rows[..., j::p] for j in range(p)))


def patch_any(flags: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, Hp, Wp) bool -> (N, C, Hp/p, Wp/p): any True in each p x p patch (strided ORs)."""
    return patch_reduce(flags, p, operator.or_)


def pad_to(t: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
    """``t`` zero-padded at the bottom and right to (Hp, Wp); ``t`` itself where it has that size."""
    h, w = t.shape[-2:]
    return t if (h, w) == (hp, wp) else F.pad(t, (0, wp - w, 0, hp - h))


def _count(flags: torch.Tensor) -> torch.Tensor:
    """Number of True values; int32 accumulation where it cannot overflow (several times faster)."""
    return flags.sum(dtype=torch.int32 if flags.numel() < 2**31 else torch.int64)


def predict_patches(nonzero: torch.Tensor, mask: torch.Tensor, p: int) -> torch.Tensor:
    """Bool (N, C, Hp/p, Wp/p): the patches whose computed positions (mask True) are all zero.

    ``nonzero`` is (N, C, H, W) bool; padding up to the mask's (Hp, Wp) counts as zero.
    """
    hp, wp = mask.shape[1:]
    return ~patch_any(pad_to(nonzero, hp, wp) & mask, p)


def expand_patches(patches: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """(N, C, Hb, Wb) -> (N, C, h, w): each patch value repeated over its p x p positions."""
    n, c, hb, wb = patches.shape
    full = patches[:, :, :, None, :, None].expand(n, c, hb, p, wb, p).reshape(n, c, hb * p, wb * p)
    return full[:, :, :h, :w]


def predicted_positions(x: torch.Tensor, mask: torch.Tensor, p: int, threshold: float = 0.0) -> torch.Tensor:
    """Bool (N, C, H, W): the positions of ``x`` that ``mask`` (C, Hp, Wp) predicts to be zero (a computed
    position counts as zero when at most ``threshold``)."""
    patches = predict_patches(x > threshold if threshold > 0 else x != 0, mask, p)
    return fill_positions(patches, mask, p, x)


def fill_positions(patches: torch.Tensor, mask: torch.Tensor, p: int, like: torch.Tensor) -> torch.Tensor:
    """Bool (N, C, H, W) of ``like``'s size: the positions predicted patches (``patches``, (N, C, Hb, Wb)) set to
    zero, i.e. not computed by ``mask``; in ``like``'s memory format, so that a channels_last map stays
    channels_last through ``torch.where`` (the threshold's inference path; ``masked_fill`` returns NCHW whatever
    its input). Training multiplies by ``keep_factor`` instead (0.22), built per sub-grid without this map."""
    h, w = like.shape[-2:]
    fill = expand_patches(patches, p, h, w) & ~mask[:, :h, :w]
    if not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        fill = fill.contiguous(memory_format=torch.channels_last)
    return fill


def keep_factor(patches: torch.Tensor, offsets, p: int, like: torch.Tensor) -> torch.Tensor:
    """``like``'s size, dtype and memory format: 0 at the positions predicted patches (``patches``, (N, C,
    Hb, Wb) bool) set to zero, i.e. not computed by the mask (``offsets``, from ``sub_grids``), 1 elsewhere.
    Written one strided sub-grid at a time, so no full-size bool map is built and converted (0.22: ``x *
    keep`` and its backward ``grad * keep`` are bf16 multiplies, several times faster on CPU than
    ``torch.where(fill, 0.0, x)`` with a bool map expanded from the patches; a non-finite value at a predicted
    position would become NaN, not 0, but training stops on a non-finite loss anyway)."""
    keep = torch.empty_like(like)
    for off in offsets:
        sub = keep[:, :, off.i :: p, off.j :: p]
        hb, wb = sub.shape[-2:]
        if off.computed is True:
            sub.fill_(1)
            continue
        drop = patches[..., :hb, :wb]
        if off.computed is not None:
            drop = drop & ~off.computed[:, :hb, :wb]
        sub.copy_(~drop)
    return keep


class Spatial(nn.Module):
    """Prediction at one site, with statistics accumulated since the last ``reset_stats``.

    ``mask`` is a (C, Hp, Wp) bool buffer, changed in place (all True = no prediction).
    Statistics are device tensors, summed without a host sync per call.
    """

    def __init__(self, shape: tuple[int, int, int], patch_size: int, macs_per_output: int | Sequence[int],
                 inplace: bool = False):  # fmt: skip
        super().__init__()
        self.inplace = inplace  # may overwrite its input when no gradient is needed (attach: the ReLU's output)
        c, h, w = shape
        self.shape = (c, h, w)
        self.patch_size = patch_size
        # MACs per output: one number, or one per channel where they differ (the MACs are then counted
        # channel by channel in ``mac_counts``: saved MACs, oracle MACs)
        per_channel = None if isinstance(macs_per_output, int) else [int(m) for m in macs_per_output]
        if per_channel is not None and len(per_channel) != c:
            raise CrossneuronError(f"Spatial layer of {c} channels given {len(per_channel)} MACs per output")
        self.macs_per_output = macs_per_output if per_channel is None else None
        self.register_buffer("channel_macs", None if per_channel is None else torch.tensor(per_channel),
                             persistent=False)  # fmt: skip
        self.register_buffer("mac_counts", torch.zeros(2, dtype=torch.int64), persistent=False)
        self.enabled = True
        self.count_zeros = True  # the oracle statistic; engines that never read it turn it off
        hp, wp = padded_size(h, patch_size), padded_size(w, patch_size)
        self.register_buffer("mask", torch.ones(c, hp, wp, dtype=torch.bool))
        # predicted positions, mispredicted positions, zero positions (oracle), images
        self.register_buffer("counts", torch.zeros(4, dtype=torch.int64), persistent=False)
        # a computed position counts as zero when its value is at most this (0: exactly zero, SPEC 4; 0.14:
        # ``--zero-below``, ``thresholds.py``); a plain float, set by ``PredictiveNet.set_threshold``
        self.threshold = 0.0
        self._checked_version: tuple[int, bool] | None = None
        self._derived_for = None

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
        self.mac_counts.zero_()

    def _zero_macs(self, nonzero_per_channel: torch.Tensor, images: int) -> None:
        """Per-channel MACs: add the oracle's, given each channel's non-zero count over ``images``."""
        h, w = self.shape[1:]
        self.mac_counts[1] += ((images * h * w - nonzero_per_channel) * self.channel_macs).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise CrossneuronError(
                f"Spatial layer expects input (N, {', '.join(map(str, self.shape))}), got "
                f"{tuple(x.shape)}: attach with the input_shape the model is run on"
            )
        p = self.patch_size
        with_grad = torch.is_grad_enabled() and x.requires_grad  # predicted positions then pass no gradient
        if with_grad and self.training:
            # training: no statistics (0.23: nothing read them, and they cost 4-8% of a masked bf16 step;
            # measurements run in eval mode)
            if not self.predicting:
                return x
            offsets, _ = self._derived()
            with torch.no_grad():
                predict = ~patch_hits(pad_to(x, *self.mask.shape[1:]), offsets, p, self.threshold)
            return x * keep_factor(predict, offsets, p, x)
        with torch.no_grad():
            self.counts[3] += x.shape[0]
            if not self.predicting:
                if self.count_zeros:
                    self.counts[2] += x.numel() - _count(x.bool())
                    if self.channel_macs is not None:
                        self._zero_macs(x.bool().sum((0, 2, 3)), x.shape[0])
                return x
            offsets, weight = self._derived()
            # Work on the p*p strided sub-grids x[..., i::p, j::p]: each holds one position of
            # every patch, so patch-wide ORs and counts are element-wise ops on small tensors.
            tolerant = self.threshold > 0
            computed = None
            nonzero = None  # per patch, the number of non-zero positions (uint8, <= p*p)
            kept = None  # tolerant: per patch, the non-zero computed positions (they keep their values)
            nonzero_map = pad_to(x.bool(), *self.mask.shape[1:])  # x != 0, a faster kernel
            above_map = pad_to(x > self.threshold, *self.mask.shape[1:]) if tolerant else nonzero_map
            for off in offsets:  # one pass per sub-grid for the statistics and the prediction together
                nz = nonzero_map[:, :, off.i :: p, off.j :: p]
                nonzero = nz.view(torch.uint8) if nonzero is None else nonzero + nz.view(torch.uint8)
                if off.computed is not None:
                    above = above_map[:, :, off.i :: p, off.j :: p]
                    hit = above if off.computed is True else above & off.computed
                    computed = hit if computed is None else computed | hit
                    if tolerant:
                        on = (nz if off.computed is True else nz & off.computed).view(torch.uint8)
                        kept = on if kept is None else kept + on
            predict = torch.ones_like(nonzero, dtype=torch.bool) if computed is None else ~computed
            as_int = predict.view(torch.uint8)
            self.counts[0] += _count(as_int * weight)
            if self.channel_macs is not None:
                self.mac_counts[0] += ((as_int * weight).sum((0, 2, 3), dtype=torch.int64) * self.channel_macs).sum()
            # in a predicted patch the non-zeros of its positions that are not computed are mispredicted: with
            # no threshold every computed position there is zero, so that is all of its non-zeros
            wrong = as_int * (nonzero if kept is None else nonzero - kept)
            self.counts[1] += _count(wrong)
            if self.count_zeros:
                self.counts[2] += x.numel() - _count(nonzero)
                if self.channel_macs is not None:
                    self._zero_macs(nonzero.sum((0, 2, 3), dtype=torch.int64), x.shape[0])
        if with_grad:
            return x * keep_factor(predict, offsets, p, x)
        if tolerant:  # with a threshold the computed positions of a predicted patch keep their small values
            return torch.where(fill_positions(predict, self.mask, p, x), 0.0, x)
        # Zeroing a whole predicted patch is the prediction (its computed positions are zero
        # already), and only patches holding a non-zero need a write: few, so write by index.
        flat = self._patch_positions(wrong.nonzero())
        if self.inplace and x.is_contiguous():
            return x.view(-1).index_fill_(0, flat, 0).view_as(x)
        return x.contiguous().view(-1).index_fill(0, flat, 0).view_as(x)

    def _patch_positions(self, patches: torch.Tensor) -> torch.Tensor:
        """Flat NCHW indices of the real positions of patches given as (K, 4) rows (n, c, hb, wb)."""
        c, h, w = self.shape
        p = self.patch_size
        n_, c_, hb, wb = patches.unbind(1)
        rows, cols = hb * p, wb * p
        di = torch.arange(p, device=patches.device).repeat_interleave(p)
        dj = torch.arange(p, device=patches.device).repeat(p)
        r = rows[:, None] + di
        q = cols[:, None] + dj
        flat = ((n_ * c + c_)[:, None] * h + r) * w + q
        if h % p or w % p:  # partial edge patches: keep the positions inside the real map
            flat = flat[(r < h) & (q < w)]
        return flat.reshape(-1)

    def sub_grids(self) -> list[_Offset]:
        """The mask per strided sub-grid (``sub_grids``), cached until the mask changes in place."""
        return self._derived()[0]

    def _derived(self):
        """Per-offset masks and per-patch weights, recomputed only when the mask changes in place."""
        version = (self.mask._version, self.mask.device)
        if self._derived_for != version:
            self._derived_cache = _offsets(self.mask, self.shape, self.patch_size)
            self._derived_for = version
        return self._derived_cache


@dataclass(frozen=True)
class _Offset:
    """Position (i, j) of every patch. ``computed``: the mask there, (C, Hb, Wb) bool, or True where
    the whole sub-grid is computed, or None where none of it is."""

    i: int
    j: int
    computed: torch.Tensor | bool | None


def patch_hits(x: torch.Tensor, offsets, p: int, threshold: float = 0.0, predicted: bool = False) -> torch.Tensor:
    """Bool (N, C, Hb, Wb): the patches of the padded map ``x`` with a value above ``threshold`` (non-zero at 0)
    at a position the mask computes (``predicted``: at one it predicts), ORed over the strided sub-grids
    (``offsets``, from ``sub_grids``); a sub-grid with no such position is never read (a uniform-layer mask
    computing one position of four reads a quarter of the map for the computed ones). All False where there is
    no such position. With computed positions its complement is the predicted patches (the training path); with
    predicted ones, the patches whose rest is not zero (the predictability term's gate)."""
    hits = []
    for off in offsets:
        part = off.computed
        if part is (True if predicted else None):
            continue
        sub = x[:, :, off.i :: p, off.j :: p]
        above = sub > threshold if threshold > 0 else sub.bool()  # x != 0, a faster kernel
        if part is not None and part is not True:
            above = above & (~part if predicted else part)
        hits.append(above)
    if not hits:
        return torch.zeros(x[:, :, ::p, ::p].shape, dtype=torch.bool, device=x.device)
    return functools.reduce(operator.or_, hits)


def _summarise(t: torch.Tensor) -> torch.Tensor | bool | None:
    if bool(t.all()):
        return True
    return t.contiguous() if bool(t.any()) else None


def sub_grids(mask: torch.Tensor, p: int) -> list[_Offset]:
    """The mask (C, Hp, Wp) per strided sub-grid ``[:, i::p, j::p]`` (one position of every patch), summarised."""
    return [_Offset(i, j, _summarise(mask[:, i::p, j::p])) for i in range(p) for j in range(p)]


def _offsets(mask: torch.Tensor, shape: tuple[int, int, int], p: int):
    c, h, w = shape
    subgrids = sub_grids(mask, p)
    real = torch.zeros_like(mask)
    real[:, :h, :w] = True
    weight = (~mask & real).view(c, mask.shape[1] // p, p, -1, p).sum((2, 4)).to(torch.uint8)
    return subgrids, weight
