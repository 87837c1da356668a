"""The predictability term of retraining (issue 17): teach a network to put its zeros where a mask can
predict them.

A patch is predicted only when all its computed positions (mask True) are zero. Where the positions the
mask would predict already hold only zeros, the computed ones are all that stands between the patch and
its saving, and pushing them to zero costs no misprediction. The term is

    sum over images, sites and patches P of  w_P * gate_P * (sum of the activation over P's computed positions)

divided by (images x network MACs), where ``w_P`` is the MACs predicting ``P`` would save (its real
mask-False positions times their MACs per output) and ``gate_P`` says how zero the rest of ``P`` is:
1 where its predicted positions are all 0, else ``exp(-rest_P / (slack x the site's mean non-zero
activation))`` with ``slack > 0``, or 0 with ``slack = 0`` (the default: only patches whose rest is
exactly zero). The gate is a constant for the gradient (it never pushes the rest up). Post-ReLU
activations are non-negative, so the sum is an L1 penalty: its gradient drives pre-activations below
zero, where the ReLU outputs exact zeros.
"""

from __future__ import annotations

import operator

import torch

from .net import PredictiveNet
from .spatial import Spatial, pad_to, patch_hits, patch_reduce, sub_grids


def patch_penalty(x: torch.Tensor, mask: torch.Tensor, p: int, channel_macs: torch.Tensor,
                  slack: float = 0.0, offsets=None) -> torch.Tensor:  # fmt: skip
    """Sum over images and patches of ``w_P * gate_P * computed_P`` for one site (see the module).

    ``x``: (N, C, H, W) activations; ``mask``: (C, Hp, Wp) bool; ``channel_macs``: (C,) MACs per output.
    The gate and the weight are constants for the gradient, so the term is ``sum(x * coef)`` with ``coef``
    = w_P x gate_P at P's computed positions (0 elsewhere): one product with the map, whose gradient is
    ``coef`` itself (0.21; before, per-patch sums of the map in the autograd graph cost a quarter of a bf16
    training step). The gate and ``coef`` are built one strided sub-grid (one position of every patch) at a
    time, ``coef`` in ``x``'s dtype and memory format (0.22: no full-size fp32 map in another layout, which
    made the product convert; in bf16 training a weight, and the term's value, are rounded to 8 significant
    bits, at most 0.4%; the sum accumulates in fp32); per-patch weights are at least fp32. ``offsets``: the
    mask's sub-grids as the Spatial layer caches them (``Spatial.sub_grids``; computed here when not given): a
    sub-grid the mask computes or predicts whole needs no AND with the mask (0.23: uniform-layer masks are
    all such)."""
    n, c, h, w = x.shape
    hp, wp = mask.shape[1:]
    real = torch.zeros(hp, wp, dtype=torch.bool, device=x.device)
    real[:h, :w] = True
    dtype = torch.promote_types(x.dtype, torch.float32)
    if offsets is None:
        offsets = sub_grids(mask, p)

    with torch.no_grad():
        a = pad_to(x, hp, wp)
        predicted = ~mask & real
        if slack > 0:
            rest = patch_reduce(a.to(dtype) * predicted, p, operator.add)
            positive = x[x > 0]
            scale = slack * (positive.to(dtype).mean() if positive.numel() else x.new_tensor(1.0, dtype=dtype))
            gate = torch.exp(-rest / scale)
        else:  # the rest is zero: no non-zero at a predicted position (bool passes, a byte per position;
            # the padding is zero in ``a``)
            gate = (~patch_hits(a, offsets, p, predicted=True)).to(dtype)
        # MACs saved if predicted: the patch's real predicted positions times the channel's MACs per output
        weight = patch_reduce(predicted.to(dtype), p, operator.add) * channel_macs.to(dtype)[:, None, None]
        scaled = (gate * weight).to(x.dtype)
        coef = torch.empty_like(x)
        for o in offsets:  # the real positions of each sub-grid: w_P x gate_P where the mask computes, else 0
            sub = coef[:, :, o.i :: p, o.j :: p]
            hb, wb = sub.shape[-2:]
            if o.computed is None:
                sub.zero_()
            elif o.computed is True:
                sub.copy_(scaled.expand(n, c, -1, -1)[..., :hb, :wb])
            else:
                torch.mul(scaled[..., :hb, :wb], o.computed[:, :hb, :wb], out=sub)
    return (x * coef).sum().to(dtype)  # accumulated in fp32 even for bf16 (sum(dtype=) would convert the map)


class Predictability:
    """Collects every predicting site's input during a forward pass of ``net`` and gives the term.

    Use as a context manager around training; ``term()`` after each forward pass (then cleared)."""

    def __init__(self, net: PredictiveNet, slack: float = 0.0):
        self.net, self.slack = net, slack
        self.inputs: list[tuple[Spatial, torch.Tensor]] = []
        self.handles = []
        self.macs: dict[int, torch.Tensor] = {}  # per Spatial layer (by id): MACs per output of each channel

    def __enter__(self) -> Predictability:
        for site in self.net.sites:
            layer = self.net.spatial(site)
            self.macs[id(layer)] = torch.tensor(site.per_channel, device=layer.mask.device)
            self.handles.append(layer.register_forward_pre_hook(self._keep))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.inputs = [], []

    def _keep(self, layer: Spatial, args) -> None:
        if layer.predicting and torch.is_grad_enabled():
            self.inputs.append((layer, args[0]))

    def term(self) -> torch.Tensor:
        """The term for the images of the last forward pass (0 where no site predicts)."""
        total = None
        images = 1
        for layer, x in self.inputs:
            part = patch_penalty(x, layer.mask, layer.patch_size, self.macs[id(layer)], self.slack, layer.sub_grids())
            total = part if total is None else total + part
            images = x.shape[0]
        self.inputs = []
        if total is None:
            return torch.zeros(())
        return total / (images * self.net.network_macs)
