"""Checkpoints: a folder with ``model.safetensors`` (weights) and ``meta.json`` (identity).

``meta.json`` keys: model, width, dataset, input_shape, num_classes, mean, std, split_seed,
val_size, val_hash, val_accuracy, test_accuracy, command, versions. Weights may be stored in fp16
(``dtype`` in meta); they load back as fp32. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CrossneuronError
from .fsutil import atomic_write, write_json
from .models import build_model

WEIGHTS, META = "model.safetensors", "meta.json"
REQUIRED = ("model", "width", "dataset", "input_shape", "num_classes", "split_seed", "val_hash")


def save(folder: str | Path, model: nn.Module, meta: dict, half: bool = False) -> None:
    """Write weights then meta (meta last: a folder with meta.json is complete)."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, tmp))
    write_json(folder / META, {**meta, "dtype": "float16" if half else "float32"})


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / META
    if not path.is_file():
        raise CrossneuronError(f"{folder} is not a checkpoint: no {META} (train one with `crossneuron train`)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CrossneuronError(f"{path} is corrupt: {exc}") from None
    if not isinstance(meta, dict):
        raise CrossneuronError(f"{path} is not a checkpoint's meta.json (a JSON object), got {type(meta).__name__}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CrossneuronError(f"{path} lacks {', '.join(missing)}: not a crossneuron checkpoint")
    for key, (ok, expected) in FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise CrossneuronError(f"{path}: '{key}' must be {expected}, got {meta[key]!r}")
    return meta


def _int(v, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


FIELDS = {  # meta.json's fields that code reads: (check, what is expected)
    "model": (lambda v: isinstance(v, str) and bool(v), "a model name"),
    "dataset": (lambda v: isinstance(v, str) and bool(v), "a dataset name"),
    "width": (lambda v: _number(v) and v > 0, "a positive number"),
    "input_shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(_int(x, 1) for x in v), "[C, H, W]"),
    "num_classes": (lambda v: _int(v, 1), "an integer >= 1"),
    "split_seed": (lambda v: _int(v), "an integer >= 0"),
    "val_size": (lambda v: _int(v, 1), "an integer >= 1"),
    "val_hash": (lambda v: isinstance(v, str), "a string"),
    "data_hash": (lambda v: isinstance(v, str), "a string"),
    "mean": (lambda v: isinstance(v, list) and all(_number(x) for x in v), "a list of numbers"),
    "std": (lambda v: isinstance(v, list) and all(_number(x) and x > 0 for x in v), "a list of positive numbers"),
}


def load(folder: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model (eval mode, fp32) and meta of a checkpoint folder."""
    folder = Path(folder)
    meta = read_meta(folder)
    model = build_model(meta["model"], meta["num_classes"], tuple(meta["input_shape"]), meta["width"])
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CrossneuronError(f"{folder / WEIGHTS} is missing or corrupt: {' '.join(str(exc).split())}") from None
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise CrossneuronError(
            f"{folder / WEIGHTS} does not match {meta['model']} width {meta['width']} for "
            f"{meta['input_shape']} with {meta['num_classes']} classes (meta.json and weights disagree)"
        )
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CrossneuronError(f"{folder / WEIGHTS}: tensor '{bad}' holds NaN or Inf values (a diverged training?); "
                               "retrain it or use another checkpoint")  # fmt: skip
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), meta
