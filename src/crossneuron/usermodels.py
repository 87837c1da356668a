"""Models the registry never named (issue 16): ``--model path/to/file.py:factory``,
``--model package.module:factory`` or ``--model timm:name``, and weights from a file.

A factory is called with ``num_classes`` where its signature accepts it (else with nothing); it must
return an ``nn.Module``. A file path is stored resolved in a checkpoint's meta.json, so the checkpoint
finds it from any working directory (moving the file breaks the checkpoint, with a clear error).
Running a factory runs the user's own code, as importing it would; weight files are never unpickled
(safetensors, or a state_dict read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import CrossneuronError


def is_user_model(name: str) -> bool:
    return ":" in name


def canonical(name: str) -> str:
    """``file.py:factory`` with the file's absolute path; other names as given."""
    where, _, factory = name.rpartition(":")
    if where.endswith(".py"):
        return f"{Path(where).resolve()}:{factory}"
    return name


def _factory(name: str):
    where, _, attr = name.rpartition(":")
    if not where or not attr:
        raise CrossneuronError(f"--model '{name}': give path/to/file.py:factory, package.module:factory or timm:name")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise CrossneuronError(f"--model '{name}': {path} is not a file")
        module_name = f"crossneuron_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling-free helpers look modules up
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file failing to import is one line
            raise CrossneuronError(f"--model '{name}': {path} failed to import: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise CrossneuronError(f"--model '{name}': cannot import {where} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CrossneuronError(f"--model '{name}': {where} has no callable '{attr}'")
    return factory


def build_user_model(name: str, num_classes: int) -> nn.Module:
    """A model from the user's factory or timm, in eval mode."""
    if name.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise CrossneuronError(f"--model {name} needs timm: pip install 'crossneuron[timm]'") from None
        try:
            model = timm.create_model(name[5:], pretrained=False, num_classes=num_classes)
        except Exception as exc:  # noqa: BLE001 - an unknown timm name is one line
            raise CrossneuronError(f"--model {name}: {' '.join(str(exc).split())[:200]}") from None
        return model.eval()
    factory = _factory(name)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    try:
        model = factory(num_classes=num_classes) if "num_classes" in params else factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory failing is one line
        raise CrossneuronError(f"--model '{name}': the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise CrossneuronError(f"--model '{name}': the factory returned {type(model).__name__}, not an nn.Module")
    return model.eval()


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict from ``path`` (safetensors, or torch.save'd tensors read with weights_only=True)
    into ``model``, strictly; one clear line when the file is unreadable or does not fit."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable, corrupt, or refused (a pickle of anything but tensors)
        raise CrossneuronError(f"--weights {path}: cannot read a state_dict ({' '.join(str(exc).split())[:160]}); "
                               "give a .safetensors file or a torch.save'd state_dict") from None  # fmt: skip
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a common wrapping
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CrossneuronError(f"--weights {path}: not a state_dict (a mapping of names to tensors)")
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        parts = [f"missing {', '.join(missing[:3])}" if missing else "",
                 f"unexpected {', '.join(extra[:3])}" if extra else ""]  # fmt: skip
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k}: {tuple(state[k].shape)} here, {tuple(expected[k].shape)} in the model")
        what = "; ".join(p for p in parts if p)
        raise CrossneuronError(f"--weights {path} does not fit the model ({what})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
