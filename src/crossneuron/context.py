"""A checkpoint together with its dataset and the exact split it was trained with (verified)."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint
from .data import Arrays, DatasetSpec, content_hash, load_arrays, spec_of
from .errors import CrossneuronError
from .splits import Split, make_split, split_arrays


@dataclass
class Context:
    path: Path
    model: torch.nn.Module
    meta: dict
    spec: DatasetSpec
    arrays: Arrays
    split: Split
    device: str

    def data(self, name: str):
        """(uint8 images, labels) of split ``name``: train, val or test."""
        return split_arrays(self.arrays, self.split, name)

    @property
    def weights_hash(self) -> str:
        h = hashlib.sha256((self.path / checkpoint.WEIGHTS).read_bytes())
        return h.hexdigest()[:16]


def check_device(device: str) -> str:
    """A torch device this machine has, or one clear error (before any work)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CrossneuronError(f"unknown --device '{device}': use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CrossneuronError(f"--device {device}: this machine has no CUDA GPU; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CrossneuronError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise CrossneuronError(f"--device {device}: only cpu and cuda are supported")
    return device


def open_checkpoint(path: str | Path, data_root=None, device: str = "cpu", download: bool = False,
                    other_data: bool = False) -> Context:  # fmt: skip
    """A checkpoint with its dataset. Data whose content hash differs from the one the checkpoint
    recorded (``data_hash``; checkpoints before 0.5 have none) is refused, or with ``other_data`` used
    with a warning on stderr."""
    check_device(device)
    path = Path(path)
    model, meta = checkpoint.load(path, device)
    spec = spec_of(meta)
    arrays = load_arrays(meta["dataset"], data_root, download, spec)
    recorded = meta.get("data_hash")
    if recorded is not None and recorded != (found := content_hash(arrays)):
        message = (f"the {meta['dataset']} data found here ({arrays.source}, content hash {found}) differs from the "
                   f"data {path} was trained on ({meta.get('data_source')}, {recorded})")  # fmt: skip
        if not other_data:
            raise CrossneuronError(message + ": point --data-root at those files, or pass --other-data to go on")
        print(f"warning: {message}; going on (--other-data)", file=sys.stderr)
    split = make_split(len(arrays.y_train), meta["val_size"], meta["split_seed"])
    if split.val_hash != meta["val_hash"]:
        raise CrossneuronError(
            f"the val split of {meta['dataset']} found here ({arrays.source}) differs from the one {path} was trained "
            f"with ({meta['val_hash']}): other data files?"
        )
    return Context(path, model, meta, spec, arrays, split, device)
