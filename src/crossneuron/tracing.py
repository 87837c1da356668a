"""torch.fx tracing that names the module that could not be traced, and how to make it a leaf."""

from __future__ import annotations

from collections.abc import Iterable

import torch.fx as fx
from torch import nn

from .errors import CrossneuronError


class _Tracer(fx.Tracer):
    """A tracer that treats chosen modules as leaves and remembers where tracing failed."""

    def __init__(self, leaf_modules: Iterable[str | type] = (), functions: Iterable = ()):
        super().__init__(autowrap_functions=tuple(functions))
        self.leaf_names = {m for m in leaf_modules if isinstance(m, str)}
        self.leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
        self.failed_at: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:  # the innermost module records first as the error unwinds
                self.failed_at = (self.path_of_module(m), type(m).__name__)
            raise


def trace(model: nn.Module, leaf_modules: Iterable[str | type] = (), functions: Iterable = ()) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule that shares its submodules and parameters.

    A model FX cannot trace raises one CrossneuronError naming the innermost module whose forward
    failed and how to mark it as a leaf (a leaf is called as a black box: ReLUs inside it are not
    sites). ``functions`` are called as black boxes too (one node each; torch.fx's ``autowrap_functions``:
    module-level functions only).
    """
    tracer = _Tracer(leaf_modules, functions)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure becomes one clear line
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if tracer.failed_at is None or tracer.failed_at[0] == "":
            where = f"the forward of {type(model).__name__} itself"
            fix = "make its control flow independent of tensor values, or attach to a traceable submodule"
        else:
            name, kind = tracer.failed_at
            where = f"module '{name}' ({kind})"
            fix = f"mark it as a leaf: attach(..., leaf_modules=['{name}']) or leaf_modules=[{kind}]"
        raise CrossneuronError(f"torch.fx cannot trace {where}: {reason}; {fix}") from None
    return fx.GraphModule(model, graph, class_name=type(model).__name__ + "Traced")
