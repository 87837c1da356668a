"""SnaPEA's exact mode (Akhlaghi et al., ISCA 2018) as a measurement: MACs a conv may stop early.

At a site whose *main* conv (the contributing conv with the most MACs per output) reads a
non-negative input (the output of a zero-producing activation, through pooling, concatenation,
adds and identity-like ops), fold the BatchNorm that follows the conv into its weights
(``w' = w * gamma / sqrt(var + eps)``, so a negative scale flips signs) and order each output
channel's terms positive weights first, then the others by magnitude, largest first. The partial sum
starts at everything else the activation's input holds (conv bias, BatchNorm shift, a residual input,
other contributing convs): ``start = z - w' * x``. With non-negative inputs every term after the
positive ones is at most 0, so once a check finds the partial sum below zero the output cannot end
positive: the activation gives 0 whatever the remaining terms are, and they are skipped. Checks come
right after the positive terms and then after every ``period`` further terms (1: after each MAC).
The accuracy does not change, by construction; ``measure`` counts the skipped MACs exactly (in
float64, per image, channel and position; padding terms are MACs too, as SPEC 2 counts them).

With spatial masks set on the net (``combined``), positions the Spatial layer predicts are never
computed: they count as the mask's saving and SnaPEA counts only the positions still computed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .net import PredictiveNet
from .precision import full_fp32
from .search.fast import SPATIAL_PREFIX, Capture
from .sites import _CONV_FUNCTIONS, _conv_macs, _modules, activation_kind, contributing_convs
from .spatial import predicted_positions

_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout,
                 nn.Dropout2d, nn.Flatten)  # fmt: skip
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.flatten,
                   operator.getitem}  # fmt: skip
_JOIN_FUNCTIONS = {torch.cat, operator.add, torch.add}
_PASS_METHODS = {"contiguous", "clone", "flatten", "view", "reshape"}


@dataclass
class SnapeaSite:
    index: int
    name: str
    conv: str  # the main conv (module name, or a functional conv's node name)
    eligible: bool
    why: str  # why not eligible ("" when eligible)
    macs_per_output: int  # the main conv's, per output position
    images: int = 0
    computed: int = 0  # output positions checked (not predicted by a spatial mask)
    macs_skipped: int = 0


@dataclass
class SnapeaStats:
    period: int
    images: int
    network_macs: int
    sites: list[SnapeaSite] = field(default_factory=list)

    @property
    def macs_skipped(self) -> int:
        return sum(s.macs_skipped for s in self.sites)

    @property
    def macs_skipped_pct_network(self) -> float:
        whole = self.images * self.network_macs
        return 100.0 * self.macs_skipped / whole if whole else 0.0


def non_negative(node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node``'s value is >= 0 everywhere by construction (built-in zero-producing activations,
    the Spatial layers after them, and pooling, concatenation, adds and reshapes of such values)."""
    if not isinstance(node, fx.Node):
        return isinstance(node, int | float) and node >= 0
    if activation_kind(node, modules) is not None:
        return True
    inputs = None
    if node.op == "call_module":
        target = str(node.target)
        if target.startswith(SPATIAL_PREFIX) or isinstance(modules.get(target), _POOL_MODULES):
            inputs = node.args[:1]
    elif node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        inputs = node.args[:1]
    elif node.op == "call_function" and node.target in _JOIN_FUNCTIONS:
        inputs = list(node.args[0]) if node.target is torch.cat else list(node.args[:2])
    elif node.op == "call_method" and node.target in _PASS_METHODS:
        inputs = node.args[:1]
    return bool(inputs) and all(non_negative(i, modules) for i in inputs)


@dataclass
class _Main:
    """A site's main conv as the measurement needs it."""

    node: fx.Node
    weight: torch.Tensor  # (C_out, C_in / groups, kh, kw), BatchNorm scale folded in
    bias: torch.Tensor | None  # the conv's own bias (not folded: part of the starting sum)
    scale: torch.Tensor  # (C_out,) the folded BatchNorm scale (ones without one)
    pad: tuple[int, int, int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _main_conv(net: PredictiveNet, site, modules) -> tuple[_Main | None, str, str, int]:
    gm = net.graph_module
    act = next(n for n in gm.graph.nodes if n.name == site.node)
    convs = contributing_convs(act, modules)
    node = max(convs, key=lambda c: _conv_macs(c, modules))  # the first of the largest
    macs = _conv_macs(node, modules)
    name = str(node.target) if node.op == "call_module" else node.name
    if site.macs_per_output is None:
        return None, name, "its channel slices come from different convs (a concatenation)", macs
    if node.op == "call_module":
        conv = modules[node.target]
        if conv.padding_mode != "zeros":
            return None, name, f"padding mode {conv.padding_mode}", macs
        weight, bias, groups = conv.weight, conv.bias, conv.groups
        pad = tuple(conv._reversed_padding_repeated_twice)
        stride, dilation = _pair(conv.stride), _pair(conv.dilation)
        x = node.args[0]
    else:
        if node.target not in _CONV_FUNCTIONS:
            return None, name, "not a conv", macs
        args = list(node.args) + [None] * 7
        kw = node.kwargs
        x, w = args[0], args[1]
        weight = gm.get_parameter(w.target) if isinstance(w, fx.Node) and w.op == "get_attr" else None
        b = args[2] if args[2] is not None else kw.get("bias")
        bias = gm.get_parameter(b.target) if isinstance(b, fx.Node) and b.op == "get_attr" else None
        padding = args[4] if args[4] is not None else kw.get("padding", 0)
        if weight is None or isinstance(padding, str) or (b is not None and bias is None):
            return None, name, "a functional conv whose weight, bias or padding is not a fixed attribute", macs
        ph, pw = _pair(padding)
        pad = (pw, pw, ph, ph)
        stride = _pair(args[3] if args[3] is not None else kw.get("stride", 1))
        dilation = _pair(args[5] if args[5] is not None else kw.get("dilation", 1))
        groups = args[6] if args[6] is not None else kw.get("groups", 1)
    if not non_negative(x, modules):
        return None, name, "its input can be negative", macs
    scale = torch.ones(weight.shape[0], dtype=torch.float64, device=weight.device)
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(modules.get(users[0].target), nn.BatchNorm2d):
        bn = modules[users[0].target]
        gamma = bn.weight.double() if bn.affine else 1.0
        scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps) * torch.ones_like(scale)
    folded = weight.detach().double() * scale[:, None, None, None]
    main = _Main(node, folded, None if bias is None else bias.detach().double(), scale, pad, stride, dilation, groups)
    return main, name, "", macs


def stop_counts(cols: torch.Tensor, weight: torch.Tensor, start: torch.Tensor, period: int) -> torch.Tensor:
    """Terms skipped per (image, position) for one output channel: ``cols`` (N, K, L) the unfolded
    non-negative input, ``weight`` (K,) the folded weights, ``start`` (N, L) the starting partial sum.
    Positive terms first; then the rest by magnitude (largest first, index order among ties), a check
    right after the positive terms and after every ``period`` further terms; skipped = terms left
    after the first check that finds the sum below zero (0 when none does)."""
    positive = weight > 0
    rest = torch.nonzero(~positive)[:, 0]
    rest = rest[torch.sort(weight[rest].abs(), descending=True, stable=True).indices]
    s = start + torch.einsum("nkl,k->nl", cols[:, positive], weight[positive])
    k = len(rest)
    if k == 0:
        return torch.zeros_like(start, dtype=torch.int64)
    cum = torch.cumsum(cols[:, rest] * weight[rest][None, :, None], 1)  # (N, k, L)
    checks = torch.cat([s[:, None], s[:, None] + cum[:, period - 1 :: period]], 1)  # after 0, period, 2 period ...
    ok = (checks >= 0).to(torch.int64).sum(1)  # the sums only fall: checks at or above 0 are a prefix
    after = torch.minimum(ok * period, torch.tensor(k))  # terms done when the first failing check comes
    return torch.where(ok < checks.shape[1], k - after, torch.zeros_like(after))


def plan(net: PredictiveNet) -> list[tuple[SnapeaSite, _Main | None]]:
    """Every site with its main conv and whether SnaPEA's exact mode applies there."""
    modules = _modules(net.graph_module)
    out = []
    for site in net.sites:
        main, name, why, macs = _main_conv(net, site, modules)
        out.append((SnapeaSite(site.index, site.name, name, main is not None, why, macs), main))
    return out


@full_fp32()
@torch.no_grad()
def measure(net: PredictiveNet, x: torch.Tensor, period: int = 1, batch_size: int = 50) -> SnapeaStats:
    """SnaPEA's exact mode on images ``x`` (normalised, as the net takes them): MACs skipped per site.
    Masks set on the net predict as usual; their predicted positions are not counted here."""
    if not (isinstance(period, int) and period >= 1):
        raise ValueError(f"period must be an integer >= 1, got {period!r}")
    gm = net.graph_module
    planned = plan(net)
    acts = {s.index: next(n for n in gm.graph.nodes if n.name == s.node) for s in net.sites}
    wanted = set()
    for site, main in planned:
        if main is not None:
            act = acts[site.index]
            wanted |= {main.node.args[0].name, main.node.name, act.args[0].name, act.name}
    stats = SnapeaStats(period, 0, net.network_macs, [s for s, _ in planned])
    p = net.patch_size
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        cap = Capture(gm, wanted)
        cap.run(xb)
        stats.images += len(xb)
        for site, main in planned:
            site.images += len(xb)
            if main is None:
                continue
            act = acts[site.index]
            z = cap.values[act.args[0].name].double()  # the activation's input
            conv_out = cap.values[main.node.name].double()
            if main.bias is not None:
                conv_out = conv_out - main.bias[None, :, None, None]
            start = z - main.scale[None, :, None, None] * conv_out  # everything but w' * x
            layer = net.spatial(site.index)
            computed = torch.ones_like(z, dtype=torch.bool)
            if layer.predicting:
                computed = ~predicted_positions(cap.values[act.name], layer.mask, p, layer.threshold)
            xin = F.pad(cap.values[main.node.args[0].name].double(), main.pad)
            c_out, cin_g = main.weight.shape[:2]
            per_group = c_out // main.groups
            n, _, h, w = z.shape
            for g in range(main.groups):
                cols = F.unfold(xin[:, g * cin_g : (g + 1) * cin_g], main.weight.shape[2:], dilation=main.dilation,
                                stride=main.stride)  # fmt: skip
                for o in range(g * per_group, (g + 1) * per_group):
                    skipped = stop_counts(cols, main.weight[o].flatten(), start[:, o].flatten(1), period)
                    keep = computed[:, o].flatten(1)
                    site.macs_skipped += int(skipped[keep].sum())
                    site.computed += int(keep.sum())
    return stats
