"""Screened search (``--screen``): first-order estimates of a candidate's accuracy from one pass.

One pass over the calibration images (no prediction) records, at every site, the activations ``a``
and ``g = d margin / d a``, where an image's margin is its true-class logit minus the largest other
logit (that class fixed at its base arg-max): the image is right while the margin is positive.
Predicting a patch zeroes its mask-0 positions, so the margin moves by about ``-sum(g * a)`` over the
non-zero ones (a first-order Taylor estimate). For every site, pattern, channel and block the pass
keeps that move per image, and the exact MACs saved and mispredictions (sums over images, as the
Spatial layer counts them). A plan's estimate adds its pieces' moves (pieces cover disjoint
positions) and counts the images whose margin stays positive (and, for the budget rules, the
base-right images whose margin it turns negative: ``lost``); images it does not move keep their base
result. MACs saved and mispredictions of a single-site plan are exact; ``correct`` and ``lost`` are
estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..net import PredictiveNet
from ..patterns import code_to_pattern
from ..precision import full_fp32
from .plan import SitePlan
from .records import EvalResult


@dataclass
class SiteTable:
    """Per pattern (in ``Screen.codes`` order), channel and block of one site."""

    delta: torch.Tensor  # (codes, N, C, B) float32: estimated margin change per image
    macs: torch.Tensor  # (codes, C, B) int64: MACs saved, summed over images
    mispredicted: torch.Tensor  # (codes, C, B) int64


def _margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    other = logits.detach().clone()
    other.scatter_(1, labels[:, None], float("-inf"))
    runner_up = other.argmax(1)
    return logits.gather(1, labels[:, None])[:, 0] - logits.gather(1, runner_up[:, None])[:, 0]


def _block_sum(t: torch.Tensor, per_block: int) -> torch.Tensor:
    """(..., Hb, Wb) patch values -> (..., B) sums over blocks of per_block x per_block patches, row-major."""
    hb, wb = t.shape[-2:]
    nh, nw = -(-hb // per_block), -(-wb // per_block)
    t = F.pad(t, (0, nw * per_block - wb, 0, nh * per_block - hb))
    t = t.reshape(*t.shape[:-2], nh, per_block, nw, per_block).sum((-3, -1))
    return t.flatten(-2)


class Screen:
    """``channels`` / ``blocks`` False: the tables keep that dimension summed (size 1), enough for plans
    whose pieces cover every channel / block (a uniform-layer search needs neither; memory and time
    then scale with the patterns, not with channels x blocks)."""

    def __init__(self, net: PredictiveNet, batches, codes: list[int], sides: dict[int, int],
                 channels: bool = True, blocks: bool = True):  # fmt: skip
        self.net, self.codes = net, list(codes)
        self.channels, self.blocks = channels, blocks
        self.index = {code: i for i, code in enumerate(self.codes)}
        p = net.patch_size
        parts: dict[int, list] = {s.index: [] for s in net.sites}
        margins = []
        for x, y in batches:
            acts, grads, margin = self._pass(x, y)
            margins.append(margin)
            for s in net.sites:
                parts[s.index].append(self._tables(s, acts[s.index], grads[s.index], p, sides[s.index]))
        self.margin = torch.cat(margins)
        self.base_hit = self.margin > 0
        self.tables = {
            k: SiteTable(torch.cat([t[0] for t in v], 1), sum(t[1] for t in v), sum(t[2] for t in v))
            for k, v in parts.items()
        }

    @full_fp32()
    def _pass(self, x: torch.Tensor, y: torch.Tensor):
        net = self.net
        for s in net.sites:
            net.set_mask(s.index, None)
        outs: dict[int, torch.Tensor] = {}
        hooks = []
        for s in net.sites:

            def keep(module, args, out, k=s.index):
                outs[k] = out.clone()  # a node of its own, so that its gradient can be asked for
                return outs[k]

            hooks.append(net.spatial(s).register_forward_hook(keep))
        try:
            with torch.inference_mode(False), torch.enable_grad():
                xg = x.clone().requires_grad_(True)
                margin = _margins(net(xg), y)
                keys = [s.index for s in net.sites]
                grads = torch.autograd.grad(margin.sum(), [outs[k] for k in keys])
        finally:
            for h in hooks:
                h.remove()
        acts = {k: outs[k].detach() for k in keys}
        return acts, dict(zip(keys, (g.detach() for g in grads), strict=True)), margin.detach()

    def _tables(self, site, a: torch.Tensor, g: torch.Tensor, p: int, side: int):
        """Per pattern: margin change per image, MACs saved and mispredictions, by channel and block.

        A patch is predicted where none of the pattern's computed positions is non-zero: with each
        patch's non-zero positions as bits (bit ``i * p + j``, the pattern codes' own order), where
        ``nonzero & code == 0``. Its computed positions are then zero, so their ``g * a`` is 0 and the
        margin moves by the whole patch's ``-sum(g * a)``; its mispredictions are all its non-zeros.

        With a site threshold t (``--zero-below``) the bits mark the positions above t, and the computed
        positions keep their values: their ``g * a`` and non-zeros are taken out of the patch's."""
        _, hp, wp = self.net.spatial(site).mask.shape
        threshold = self.net.spatial(site).threshold
        h, w = a.shape[-2:]
        pad = (0, wp - w, 0, hp - h)
        nz = F.pad(a != 0, pad)
        above = F.pad(a > threshold, pad) if threshold > 0 else nz
        ga = F.pad(g * a, pad)
        real = F.pad(torch.ones(h, w, dtype=torch.int64, device=a.device), pad)
        bits = count = ga_patch = 0
        nz_at, ga_at = {}, {}  # per position (i, j) of the patch: its sub-grid of non-zeros and of g * a
        for i in range(p):
            for j in range(p):
                nz_at[i, j], ga_at[i, j] = nz[..., i::p, j::p].to(torch.int32), ga[..., i::p, j::p]
                ab = above[..., i::p, j::p].to(torch.int32) if threshold > 0 else nz_at[i, j]
                bits, count, ga_patch = bits + (ab << (i * p + j)), count + nz_at[i, j], ga_patch + ga_at[i, j]
        per_block = side // p
        channel_macs = torch.tensor(site.per_channel, device=a.device)[:, None]  # (C, 1): MACs per output
        deltas, macs, wrong = [], [], []
        for code in self.codes:
            pattern = code_to_pattern(code, p)
            real_sum = sum(real[i::p, j::p] for i in range(p) for j in range(p) if not pattern[i, j])
            pred = (bits & code) == 0
            moved, lost = ga_patch, count
            if threshold > 0:  # the computed positions keep their values
                on = [(i, j) for i in range(p) for j in range(p) if pattern[i, j]]
                moved = ga_patch - sum(ga_at[ij] for ij in on)
                lost = count - sum(nz_at[ij] for ij in on)
            deltas.append(self._kept(_block_sum(-(pred * moved), per_block)))
            macs.append(self._kept(_block_sum(pred.sum(0) * real_sum, per_block) * channel_macs))
            wrong.append(self._kept(_block_sum((pred * lost).sum(0), per_block)))
        return torch.stack(deltas).float(), torch.stack(macs), torch.stack(wrong)

    def _kept(self, t: torch.Tensor) -> torch.Tensor:
        """(..., C, B) -> the dimensions this screen keeps (the others summed to size 1)."""
        if not self.channels:
            t = t.sum(-2, keepdim=True)
        if not self.blocks:
            t = t.sum(-1, keepdim=True)
        return t

    # -- estimates -------------------------------------------------------------------------------
    def _piece(self, table: SiteTable, piece):
        i = self.index[piece.code]
        if (piece.channel is not None and not self.channels) or (piece.block is not None and not self.blocks):
            raise ValueError("this screen summed over channels or blocks: build it with channels/blocks=True")
        chans = slice(None) if piece.channel is None else slice(piece.channel, piece.channel + 1)
        blocks = slice(None) if piece.block is None else slice(piece.block, piece.block + 1)
        return (table.delta[i][:, chans, blocks].sum((1, 2)), int(table.macs[i][chans, blocks].sum()),
                int(table.mispredicted[i][chans, blocks].sum()))  # fmt: skip

    def delta(self, site: int, plan: SitePlan) -> torch.Tensor:
        """A single-site plan's first-order margin change per image (its pieces' changes add up)."""
        delta = torch.zeros_like(self.margin)
        for piece in plan:
            delta = delta + self._piece(self.tables[site], piece)[0]
        return delta

    def estimate(self, site: int, plan: SitePlan) -> EvalResult:
        """A single-site plan: exact MACs saved and mispredictions, estimated correct count."""
        table = self.tables[site]
        delta = torch.zeros_like(self.margin)
        macs = wrong = 0
        for piece in plan:
            d, m, w = self._piece(table, piece)
            delta, macs, wrong = delta + d, macs + m, wrong + w
        hit = self.hits(delta)
        return EvalResult(int(hit.sum()), len(self.margin), macs, wrong, estimated=True,
                          lost=int((self.base_hit & ~hit).sum()))  # fmt: skip

    def hits(self, delta: torch.Tensor) -> torch.Tensor:
        """Per image (first dimension; more may follow): images the candidate does not move keep their
        base hit, the others are right when their estimated margin stays positive."""
        shape = (-1,) + (1,) * (delta.dim() - 1)
        return torch.where(delta == 0, self.base_hit.view(shape), self.margin.view(shape) + delta > 0)

    def correct(self, delta: torch.Tensor) -> int:
        return int(self.hits(delta).sum())

    def first_level(self, site: int, by_channel: bool, by_block: bool) -> dict[tuple, EvalResult]:
        """Every first-level target of one site at once: (channel|None, block|None, code) -> estimate."""
        table = self.tables[site]
        n = len(self.margin)
        out = {}
        if (by_channel and not self.channels) or (by_block and not self.blocks):
            raise ValueError("this screen summed over channels or blocks: build it with channels/blocks=True")
        for i, code in enumerate(self.codes):
            delta, macs, wrong = table.delta[i], table.macs[i], table.mispredicted[i]  # (N, C, B), (C, B)
            if not by_channel:
                delta, macs, wrong = delta.sum(1, keepdim=True), macs.sum(0, keepdim=True), wrong.sum(0, keepdim=True)
            if not by_block:
                delta, macs, wrong = delta.sum(2, keepdim=True), macs.sum(1, keepdim=True), wrong.sum(1, keepdim=True)
            hit = self.hits(delta)
            correct = hit.sum(0)
            lost = (self.base_hit.view(-1, 1, 1) & ~hit).sum(0)
            for c in range(correct.shape[0]):
                for b in range(correct.shape[1]):
                    key = (c if by_channel else None, b if by_block else None, code)
                    out[key] = EvalResult(int(correct[c, b]), n, int(macs[c, b]), int(wrong[c, b]), estimated=True,
                                          lost=int(lost[c, b]))  # fmt: skip
        return out


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # average ranks of ties
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
