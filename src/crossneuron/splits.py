"""Splits (SPEC 5) and batches: val held out of the official training set with a fixed seed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .data import Arrays, DatasetSpec, materialise, take
from .errors import CrossneuronError

DEFAULT_VAL_SIZE = 5000


@dataclass(frozen=True)
class Split:
    train: torch.Tensor  # indices into the official training set
    val: torch.Tensor
    seed: int

    @property
    def val_hash(self) -> str:
        return indices_hash(self.val)


def indices_hash(indices: torch.Tensor) -> str:
    """A short SHA-256 of sorted int64 indices: the identity of a split."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:16]


def make_split(n_train: int, val_size: int = DEFAULT_VAL_SIZE, seed: int = 0) -> Split:
    """Hold ``val_size`` images out of ``n_train`` (a fixed-seed permutation); both sorted."""
    if not 0 < val_size < n_train:
        raise CrossneuronError(
            f"val size must be between 1 and {n_train - 1} (the training set size - 1), got {val_size}"
        )
    perm = np.random.default_rng(seed).permutation(n_train)
    val = np.sort(perm[:val_size])
    train = np.sort(perm[val_size:])
    return Split(torch.from_numpy(train), torch.from_numpy(val), seed)


def split_arrays(arrays: Arrays, split: Split, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of one split: 'train', 'val' or 'test'."""
    if name == "test":
        return arrays.x_test, arrays.y_test
    if name not in ("train", "val"):
        raise CrossneuronError(f"unknown split '{name}': choose train, val or test")
    idx = split.train if name == "train" else split.val
    return take(arrays.x_train, idx), arrays.y_train[idx]


def normalise(x: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, scaled to [0, 1] and standardised per channel. Float images are
    taken as already normalised (the Python ``optimize`` call's tensors) and returned as they are."""
    if x.is_floating_point():
        return x
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, per image, vectorised."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
    flip = torch.rand(n, generator=g) < 0.5
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    chans = torch.arange(c)[None, :, None, None].expand(n, c, h, w)
    imgs = torch.arange(n)[:, None, None, None].expand(n, c, h, w)
    return padded[imgs, chans, rows, cols]


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    spec: DatasetSpec,
    batch_size: int,
    device: str | torch.device = "cpu",
    shuffle: torch.Generator | None = None,
    train_augment: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches; shuffled with ``shuffle``; augmented when asked and the dataset allows."""
    order = torch.randperm(len(x), generator=shuffle) if shuffle is not None else torch.arange(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        xb = materialise(take(x, idx))
        if train_augment and spec.augment and shuffle is not None:
            xb = augment(xb, shuffle)
        yield normalise(xb.to(device), spec), y[idx].to(device)
