"""Sites (SPEC 1) found in a traced graph, and their MACs (SPEC 2; the whole network's are in ``macs.py``).

A site is one call of a zero-producing activation (ReLU, ReLU6, Hardtanh or clamp with a lower bound
of exactly 0, or one the user declares; module, function or method) whose input comes from conv
outputs (``Conv2d`` modules or ``F.conv2d`` calls) through only BatchNorm, identity-like ops,
element-wise residual adds, channel concatenations and channel shuffles. Walking back from the
activation through those ops (both operands of an add, every part of a concatenation), every conv
reached whose output feeds nothing but that path, each of its channels reaching exactly one channel of
the activation, is a *contributing conv*; an activation with no contributing conv is not a site.
Channel by channel, MACs per output are the sum of the contributing convs that reach that channel:
after a concatenation they differ per slice (``Site.channel_macs``).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU_METHODS = {"relu", "relu_"}
# functions and methods that zero what lies below a lower bound: (name, position and keyword of the
# lower bound, of the upper bound, the lower bound's default); a site where the lower bound is 0
_BOUNDED_FUNCTIONS = {
    F.relu6: ("relu6", None, None, 0.0),
    F.hardtanh: ("hardtanh", (1, "min_val"), (2, "max_val"), -1.0),
    F.hardtanh_: ("hardtanh", (1, "min_val"), (2, "max_val"), -1.0),
    torch.clamp: ("clamp", (1, "min"), (2, "max"), None),
    torch.clip: ("clamp", (1, "min"), (2, "max"), None),
    torch.clamp_min: ("clamp", (1, "min"), None, None),
}
_BOUNDED_METHODS = {name: ("clamp", (1, "min"), (2, "max"), None) for name in ("clamp", "clamp_", "clip", "clip_")} | {
    name: ("clamp", (1, "min"), None, None) for name in ("clamp_min", "clamp_min_")
}
# activations that never output exact zeros: named when a model has no site
_SMOOTH_MODULES = (nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Hardswish,
                   nn.Sigmoid, nn.Tanh, nn.Softplus, nn.PReLU, nn.Hardsigmoid)  # fmt: skip
_SMOOTH_FUNCTIONS = {F.silu, F.gelu, F.leaky_relu, F.elu, F.selu, F.celu, F.mish, F.hardswish, torch.sigmoid,
                     torch.tanh, F.softplus, F.hardsigmoid}  # fmt: skip
_CONV_FUNCTIONS = {F.conv2d, torch.conv2d}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_PASS_MODULES = (nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d)
_PASS_METHODS = {"contiguous", "clone"}
_PASS_FUNCTIONS = {F.batch_norm}  # timm's BatchNormAct2d calls it
# reads of a tensor's metadata, not its values (shape asserts): they do not make a conv's output shared
_META_ATTRIBUTES = {"ndim", "shape", "dtype", "device", "is_cuda", "requires_grad"}
_META_METHODS = {"size", "dim"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_SHUFFLE_FUNCTIONS = {torch.channel_shuffle, torch.native_channel_shuffle}
Activation = type | Callable | str  # a module class, a function, or a tensor method's name


@dataclass(frozen=True)
class Site:
    """One zero-producing activation call whose zero outputs can be predicted.

    ``name`` is stable: the activation module's qualified name (``layer1.0.relu``), or for a function
    or method the enclosing module's name plus its kind (``.relu``, ``.relu6``, ``.hardtanh``,
    ``.clamp``, a declared function's or method's name); a second call of the same module or name
    gets ``@1``, a third ``@2`` (torch.fx's own convention).
    """

    index: int
    name: str
    shape: tuple[int, int, int]  # (C, H, W) of the ReLU output for one image
    macs_per_output: int | None  # per output position; None where channel slices differ (``channel_macs``)
    convs: tuple[str, ...]  # contributing Conv2d modules, in graph order
    node: str  # the fx node name of the ReLU call (internal)
    channel_macs: tuple[int, ...] = ()  # MACs per output of each channel, only where slices differ

    @property
    def positions(self) -> int:
        """Output positions per image, C * H * W (real size, no padding)."""
        c, h, w = self.shape
        return c * h * w

    @property
    def per_channel(self) -> tuple[int, ...]:
        """MACs per output position of every channel (C values; all equal unless slices differ)."""
        return self.channel_macs or (self.macs_per_output,) * self.shape[0]

    @property
    def macs(self) -> int:
        """MACs per image that feed this site: the sum over its C * H * W positions of their MACs per output."""
        return sum(self.per_channel) * self.shape[1] * self.shape[2]

    @property
    def slices(self) -> list[tuple[int, int, int]]:
        """Runs of channels with equal MACs per output: (first, end, MACs per output)."""
        runs: list[tuple[int, int, int]] = []
        for c, m in enumerate(self.per_channel):
            if runs and runs[-1][2] == m:
                runs[-1] = (runs[-1][0], c + 1, m)
            else:
                runs.append((c, c + 1, m))
        return runs


def _modules(gm: fx.GraphModule) -> dict[str, nn.Module]:
    return dict(gm.named_modules())


def _arg(node: fx.Node, where: tuple[int, str] | None, default):
    if where is None:
        return default
    position, keyword = where
    return node.args[position] if len(node.args) > position else node.kwargs.get(keyword, default)


def _zero_bounded(node: fx.Node, spec) -> bool:
    """A clamp-like call whose lower bound is exactly 0 (and upper bound, if any, above 0)."""
    _, low, high, default = spec
    lower, upper = _arg(node, low, default), _arg(node, high, None)
    numbers = all(v is None or isinstance(v, int | float) for v in (lower, upper))
    return numbers and lower is not None and lower == 0 and (upper is None or upper > 0)


def activation_kind(node: fx.Node, modules: dict[str, nn.Module], declared: Iterable[Activation] = ()) -> str | None:
    """The short name of a zero-producing activation call (``relu``, ``relu6``, ``hardtanh``, ``clamp``,
    or a declared one's name), or None where ``node`` is not one."""
    declared = list(declared)
    if node.op == "call_module":
        m = modules.get(node.target)
        types = tuple(d for d in declared if isinstance(d, type))
        if isinstance(m, nn.ReLU) or (types and isinstance(m, types)):
            return "relu"
        if isinstance(m, nn.Hardtanh) and m.min_val == 0 and m.max_val > 0:
            return "relu6" if isinstance(m, nn.ReLU6) else "hardtanh"
        return None
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            return "relu"
        if node.target in _BOUNDED_FUNCTIONS:
            spec = _BOUNDED_FUNCTIONS[node.target]
            return spec[0] if _zero_bounded(node, spec) else None
        if any(node.target is d for d in declared if callable(d) and not isinstance(d, type)):
            return getattr(node.target, "__name__", "activation")
        return None
    if node.op == "call_method":
        if node.target in _RELU_METHODS:
            return "relu"
        if node.target in _BOUNDED_METHODS:
            spec = _BOUNDED_METHODS[node.target]
            return spec[0] if _zero_bounded(node, spec) else None
        return str(node.target) if node.target in {d for d in declared if isinstance(d, str)} else None
    return None


def smooth_activations(gm: fx.GraphModule) -> list[str]:
    """Names of the activations in ``gm`` that never output exact zeros (for the no-site error)."""
    modules = _modules(gm)
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), _SMOOTH_MODULES):
            found.append(type(modules[node.target]).__name__)
        elif node.op == "call_function" and node.target in _SMOOTH_FUNCTIONS:
            found.append(node.target.__name__)
    return sorted(set(found))


def _conv_macs(node: fx.Node, modules: dict[str, nn.Module]) -> int | None:
    """MACs per output of a conv call (``in_channels / groups * kh * kw``), None if ``node`` is none."""
    if node.op == "call_module" and isinstance(modules.get(node.target), nn.Conv2d):
        conv = modules[node.target]
        kh, kw = conv.kernel_size
        return conv.in_channels // conv.groups * kh * kw
    if node.op == "call_function" and node.target in _CONV_FUNCTIONS:
        weight = _arg(node, (1, "weight"), None)
        meta = weight.meta.get("tensor_meta") if isinstance(weight, fx.Node) else None
        if meta is not None and len(meta.shape) == 4:  # (out, in / groups, kh, kw)
            return int(meta.shape[1] * meta.shape[2] * meta.shape[3])
    return None


def _conv_name(node: fx.Node) -> str:
    """A module conv's qualified name; a functional one's weight attribute (``block.weight``) or node."""
    if node.op == "call_module":
        return str(node.target)
    weight = _arg(node, (1, "weight"), None)
    return str(weight.target) if isinstance(weight, fx.Node) and weight.op == "get_attr" else node.name


def _channels(node) -> int | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return int(meta.shape[1]) if meta is not None and len(getattr(meta, "shape", ())) == 4 else None


def _step(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, list[fx.Node], int] | None:
    """How the walk crosses ``node``: (``same`` | ``add`` | ``cat`` | ``shuffle``, its inputs, the
    shuffle's groups), or None where the walk stops."""
    if node.op == "call_module" and isinstance(modules.get(node.target), _PASS_MODULES):
        return "same", [node.args[0]], 0
    if node.op == "call_method" and node.target in _PASS_METHODS:
        return "same", [node.args[0]], 0
    if node.op == "call_function" and node.target in _PASS_FUNCTIONS and isinstance(node.args[0], fx.Node):
        return "same", [node.args[0]], 0
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )
    if is_add and len(node.args) >= 2 and all(isinstance(a, fx.Node) for a in node.args[:2]):
        return "add", list(node.args[:2]), 0
    if node.op == "call_function" and node.target in _CAT_FUNCTIONS and _channels(node) is not None:
        parts = _arg(node, (0, "tensors"), ())
        dim = _arg(node, (1, "dim"), 0)
        if isinstance(dim, int) and dim % 4 == 1 and all(_channels(t) is not None for t in parts):
            return "cat", list(parts), 0
        return None
    if node.op == "call_module" and isinstance(modules.get(node.target), nn.ChannelShuffle):
        return "shuffle", [node.args[0]], int(modules[node.target].groups)
    if node.op == "call_function" and node.target in _SHUFFLE_FUNCTIONS:
        groups = _arg(node, (1, "groups"), None)
        return ("shuffle", [node.args[0]], groups) if isinstance(groups, int) else None
    return None


def _routes(act: fx.Node, modules: dict[str, nn.Module]) -> tuple[set[fx.Node], list[tuple[fx.Node, np.ndarray]]]:
    """Walk back from an activation. Returns the nodes on the way (convs included) and every route
    from a conv to it as (conv, map): ``map[c]`` is the conv's output channel that reaches the
    activation's input channel ``c`` along that route, -1 where none does."""
    path: set[fx.Node] = set()
    memo: dict[fx.Node, list[tuple[fx.Node, np.ndarray]]] = {}

    def visit(node: fx.Node) -> list[tuple[fx.Node, np.ndarray]]:
        if node in memo:
            return memo[node]
        c = _channels(node)
        routes: list[tuple[fx.Node, np.ndarray]] = []
        is_conv = _conv_macs(node, modules) is not None
        step = None if c is None or is_conv else _step(node, modules)
        if c is not None and is_conv:
            path.add(node)
            routes = [(node, np.arange(c))]
        elif step is not None:
            path.add(node)
            kind, inputs, groups = step
            offset = 0
            for i in inputs:
                for conv, m in visit(i) if isinstance(i, fx.Node) else []:
                    if kind == "cat":
                        full = np.full(c, -1)
                        full[offset : offset + len(m)] = m
                        routes.append((conv, full))
                    elif kind == "shuffle" and groups > 0 and c % groups == 0:
                        k = c // groups  # output j * groups + g reads input g * k + j
                        perm = (np.arange(groups)[None, :] * k + np.arange(k)[:, None]).reshape(-1)
                        routes.append((conv, m[perm]))
                    elif kind in ("same", "add"):
                        routes.append((conv, m if len(m) == c else np.full(c, m[0])))  # broadcast: one channel
                offset += _channels(i) or 0
        memo[node] = routes
        return routes

    start = act.args[0] if act.args and isinstance(act.args[0], fx.Node) else None
    return path, (visit(start) if start is not None else [])


def _reads_metadata(node: fx.Node) -> bool:
    """``x.shape``, ``x.ndim``, ``x.size()``...: a use that reads no value of ``x``."""
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _META_ATTRIBUTES
    return node.op == "call_method" and node.target in _META_METHODS


def _feeds_only(conv: fx.Node, act: fx.Node, path: set[fx.Node]) -> bool:
    todo = [conv]
    while todo:
        for user in todo.pop().users:
            if user is act or _reads_metadata(user):
                continue
            if user not in path:
                return False
            todo.append(user)
    return True


def _one_to_one(maps: list[np.ndarray]) -> np.ndarray | None:
    """The activation channels a conv reaches, if each of its channels reaches exactly one; else None."""
    pairs = np.unique(np.concatenate([np.stack([np.nonzero(m >= 0)[0], m[m >= 0]], 1) for m in maps]), axis=0)
    return pairs[:, 0] if len(np.unique(pairs[:, 1])) == len(pairs) else None


def contributions(act: fx.Node, modules: dict[str, nn.Module]) -> tuple[list[fx.Node], np.ndarray]:
    """The contributing convs of an activation (graph order) and the MACs per output of each of its
    channels: the sum of the MACs per output of the contributing convs that reach that channel. A conv
    contributes where its output feeds only the walk's path and each of its channels reaches exactly
    one channel of the activation (a conv read twice through a concatenation saves nothing)."""
    path, routes = _routes(act, modules)
    c = _channels(act.args[0]) if act.args and isinstance(act.args[0], fx.Node) else None
    per_channel = np.zeros(c or 0, dtype=np.int64)
    maps: dict[fx.Node, list[np.ndarray]] = {}
    for conv, m in routes:
        maps.setdefault(conv, []).append(m)
    convs = []
    for conv, ms in maps.items():
        reached = _one_to_one(ms)
        if reached is not None and _feeds_only(conv, act, path):
            per_channel[reached] += _conv_macs(conv, modules)
            convs.append(conv)
    order = {n: i for i, n in enumerate(act.graph.nodes)}
    return sorted(convs, key=order.__getitem__), per_channel


def contributing_convs(act: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """Conv nodes reached walking back from ``act`` whose output feeds only that path (see
    ``contributions``)."""
    return contributions(act, modules)[0]


def why_not_site(act: fx.Node, modules: dict[str, nn.Module]) -> str:
    """Why a zero-producing activation is not a site (it has no contributing conv), in words."""
    path, routes = _routes(act, modules)
    convs = list(dict.fromkeys(conv for conv, _ in routes))
    shared = [c for c in convs if not _feeds_only(c, act, path)]
    if shared:
        names = ", ".join(_conv_name(c) for c in shared[:3]) + (", ..." if len(shared) > 3 else "")
        return f"the output of {names} is also read elsewhere, so predicting zeros here saves none of its MACs"
    if convs:
        names = ", ".join(_conv_name(c) for c in convs[:3])
        return f"a channel of {names} reaches it through more than one channel, so no prediction saves its MACs"
    stops, seen = [], set()
    stack = [act.args[0]] if act.args and isinstance(act.args[0], fx.Node) else []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        step = _step(node, modules) if _channels(node) is not None else None
        if step is None:
            stops.append(node)
        else:
            stack.extend(i for i in step[1] if isinstance(i, fx.Node))
    if any(n.op == "placeholder" for n in stops):
        return "no conv lies between the model input and it"
    kinds = sorted({str(n.target) if n.op == "call_module" else getattr(n.target, "__name__", str(n.target))
                    for n in stops})  # fmt: skip
    return (f"the walk back to a conv stops at {', '.join(kinds)} (only BatchNorm, identity-like ops, adds, "
            f"channel concatenations and channel shuffles pass)")  # fmt: skip


def skipped_activations(gm: fx.GraphModule, activations: Iterable[Activation] = ()) -> list[tuple[str, str]]:
    """Zero-producing activations on 4-D maps that are not sites: (name, why), in graph order; a module's
    name, or a function's or method's scope and kind with its fx node (sites number theirs, these do not)."""
    modules = _modules(gm)
    declared = list(activations)
    out = []
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if activation_kind(node, modules, declared) is None or meta is None or len(meta.shape) != 4:
            continue
        if not contributing_convs(node, modules):
            kind = activation_kind(node, modules, declared)
            name = str(node.target) if node.op == "call_module" else f"{_base_name(node, kind)} (fx node {node.name})"
            out.append((name, why_not_site(node, modules)))
    return out


def _base_name(node: fx.Node, kind: str) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    scope = next(reversed(stack.values()))[0] if stack else ""
    return f"{scope}.{kind}" if scope else kind


def find_sites(gm: fx.GraphModule, activations: Iterable[Activation] = ()) -> list[Site]:
    """Sites of a traced graph whose nodes carry ``tensor_meta`` (run ShapeProp first); ``activations``
    declares more zero-producing activations (module classes, functions, method names)."""
    modules = _modules(gm)
    declared = list(activations)
    found = []
    for node in gm.graph.nodes:
        kind = activation_kind(node, modules, declared)
        meta = node.meta.get("tensor_meta")
        if kind is not None and meta is not None and len(meta.shape) == 4:
            convs, per_channel = contributions(node, modules)
            if convs and len(per_channel) == meta.shape[1]:
                found.append((node, kind, convs, per_channel))
    seen: Counter[str] = Counter()
    sites = []
    for node, kind, convs, per_channel in found:
        base = _base_name(node, kind)
        name = base if seen[base] == 0 else f"{base}@{seen[base]}"
        seen[base] += 1
        uniform = bool((per_channel == per_channel[0]).all())
        sites.append(
            Site(
                index=len(sites),
                name=name,
                shape=tuple(int(s) for s in node.meta["tensor_meta"].shape[1:]),
                macs_per_output=int(per_channel[0]) if uniform else None,
                convs=tuple(_conv_name(c) for c in convs),
                node=node.name,
                channel_macs=() if uniform else tuple(int(m) for m in per_channel),
            )
        )
    return sites
