"""Sites (SPEC 1) found in a traced graph, and their MACs (SPEC 2; the whole network's are in ``macs.py``).

A site is one call of a ReLU whose input comes from Conv2d outputs through only BatchNorm,
identity-like ops and element-wise residual adds. Walking back from the ReLU through those ops
(both operands of an add), every Conv2d reached whose output feeds nothing but that path is a
*contributing conv*; a ReLU with no contributing conv is not a site.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU_METHODS = {"relu", "relu_"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_PASS_MODULES = (nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d)
_PASS_METHODS = {"contiguous", "clone"}


@dataclass(frozen=True)
class Site:
    """One ReLU call whose zero outputs can be predicted.

    ``name`` is stable: the ReLU module's qualified name (``layer1.0.relu``), or for a functional
    ReLU the enclosing module's name plus ``.relu``; a second call of the same module or name
    gets ``@1``, a third ``@2`` (torch.fx's own convention).
    """

    index: int
    name: str
    shape: tuple[int, int, int]  # (C, H, W) of the ReLU output for one image
    macs_per_output: int
    convs: tuple[str, ...]  # contributing Conv2d modules, in graph order
    node: str  # the fx node name of the ReLU call (internal)

    @property
    def positions(self) -> int:
        """Output positions per image, C * H * W (real size, no padding)."""
        c, h, w = self.shape
        return c * h * w

    @property
    def macs(self) -> int:
        """MACs per image that feed this site: ``macs_per_output * C * H * W``."""
        return self.macs_per_output * self.positions


def _modules(gm: fx.GraphModule) -> dict[str, nn.Module]:
    return dict(gm.named_modules())


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in _RELU_METHODS
    return False


def _conv(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Conv2d | None:
    if node.op == "call_module" and isinstance(modules.get(node.target), nn.Conv2d):
        return modules[node.target]
    return None


def _passes_through(node: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node] | None:
    """The inputs the walk continues to from ``node``, or None where the walk stops."""
    if node.op == "call_module" and isinstance(modules.get(node.target), _PASS_MODULES):
        return [node.args[0]]
    if node.op == "call_method" and node.target in _PASS_METHODS:
        return [node.args[0]]
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )
    if is_add and len(node.args) >= 2 and all(isinstance(a, fx.Node) for a in node.args[:2]):
        return list(node.args[:2])
    return None


def contributing_convs(relu: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """Conv nodes reached walking back from ``relu`` whose output feeds only that path."""
    path: set[fx.Node] = set()
    reached: list[fx.Node] = []
    stack = [relu.args[0]] if relu.args and isinstance(relu.args[0], fx.Node) else []
    while stack:
        node = stack.pop()
        if node in path:
            continue
        if _conv(node, modules) is not None:
            path.add(node)
            reached.append(node)
            continue
        inputs = _passes_through(node, modules)
        if inputs is None:
            continue  # an earlier ReLU, pooling, the input...: contributes nothing
        path.add(node)
        stack.extend(i for i in inputs if isinstance(i, fx.Node))

    def feeds_only_path(conv: fx.Node) -> bool:
        todo = [conv]
        while todo:
            for user in todo.pop().users:
                if user is relu:
                    continue
                if user not in path:
                    return False
                todo.append(user)
        return True

    order = {n: i for i, n in enumerate(relu.graph.nodes)}
    return sorted((c for c in reached if feeds_only_path(c)), key=order.__getitem__)


def _base_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    scope = next(reversed(stack.values()))[0] if stack else ""
    return f"{scope}.relu" if scope else "relu"


def _macs_per_output(conv: nn.Conv2d) -> int:
    kh, kw = conv.kernel_size
    return conv.in_channels // conv.groups * kh * kw


def find_sites(gm: fx.GraphModule) -> list[Site]:
    """Sites of a traced graph whose nodes carry ``tensor_meta`` (run ShapeProp first)."""
    modules = _modules(gm)
    found = []
    for node in gm.graph.nodes:
        if is_relu(node, modules) and len(node.meta["tensor_meta"].shape) == 4:
            convs = contributing_convs(node, modules)
            if convs:
                found.append((node, convs))
    seen: Counter[str] = Counter()
    sites = []
    for node, convs in found:
        base = _base_name(node)
        name = base if seen[base] == 0 else f"{base}@{seen[base]}"
        seen[base] += 1
        sites.append(
            Site(
                index=len(sites),
                name=name,
                shape=tuple(int(s) for s in node.meta["tensor_meta"].shape[1:]),
                macs_per_output=sum(_macs_per_output(modules[c.target]) for c in convs),
                convs=tuple(str(c.target) for c in convs),
                node=node.name,
            )
        )
    return sites
