"""Dataset registry and file lookup. Every dataset loads to uint8 NCHW tensors in memory.

Lookup order for a dataset: the data root (``--data-root`` or ``CROSSNEURON_DATA``), then known
system paths (Debian's ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``); in
each place torchvision's folder layouts (IDX files, the CIFAR-10 binary batches), then a numpy
archive ``<name>.npz`` with keys ``x_train, y_train, x_test, y_test`` (loaded without pickle).
``download=True`` uses torchvision's downloaders (network needed; never used by the tests).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CrossneuronError

ENV_ROOT = "CROSSNEURON_DATA"


@dataclass(frozen=True)
class Arrays:
    """A dataset in memory: uint8 images (N, C, H, W), int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str  # where it was read from


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop and flip while training
    system_paths: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()  # torchvision's folder names under a root
    how_to_get: str = ""
    val_size: int = 5000  # default images held out of the official training set


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "mnist",
            (1, 28, 28),
            10,
            (0.1307,),
            (0.3081,),
            False,
            folders=("MNIST/raw", "mnist"),
            how_to_get="put mnist.npz (or the IDX files) under the data root, or pass --download",
        ),
        DatasetSpec(
            "fashion-mnist",
            (1, 28, 28),
            10,
            (0.2860,),
            (0.3530,),
            False,
            system_paths=("/usr/share/datasets/fashion-mnist",),
            folders=("FashionMNIST/raw", "fashion-mnist"),
            how_to_get="apt-get install dataset-fashion-mnist (Debian), or pass --download",
        ),
        DatasetSpec(
            "cifar10",
            (3, 32, 32),
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            True,
            folders=("cifar-10-batches-bin",),
            how_to_get="put cifar10.npz (or cifar-10-batches-bin/) under the data root, or pass --download",
        ),
        DatasetSpec(
            "synthetic",
            (3, 16, 16),
            10,
            (0.5, 0.5, 0.5),
            (0.25, 0.25, 0.25),
            False,
            how_to_get="generated in memory; nothing to get",
            val_size=300,
        ),
    )  # fmt: skip
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise CrossneuronError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def default_root() -> Path | None:
    value = os.environ.get(ENV_ROOT)
    return Path(value) if value else None


# -- formats -------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array; malformed files raise CrossneuronError."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CrossneuronError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise CrossneuronError(f"{path} is truncated: header says {dims}, found {body.size} bytes of data")
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in ("", ".gz"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return None


def _load_idx_folder(folder: Path) -> tuple[np.ndarray, ...] | None:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [_find(folder, s) for s in stems]
    if not all(paths):
        return None
    return tuple(read_idx(p) for p in paths)


def _load_cifar_bin(folder: Path) -> tuple[np.ndarray, ...] | None:
    train = [folder / f"data_batch_{i}.bin" for i in range(1, 6)]
    test = folder / "test_batch.bin"
    if not all(p.is_file() for p in [*train, test]):
        return None

    def read(paths):
        rec = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
        if rec.size % 3073:
            raise CrossneuronError(f"CIFAR-10 binary batches in {folder} are truncated")
        rec = rec.reshape(-1, 3073)
        return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)

    return (*read(train), *read([test]))


def _load_npz(path: Path) -> tuple[np.ndarray, ...] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except KeyError as exc:
        raise CrossneuronError(f"{path} lacks key {exc}: need x_train, y_train, x_test, y_test") from None
    except (ValueError, OSError) as exc:
        raise CrossneuronError(f"{path} is not a readable numpy archive: {exc}") from None


def _to_tensors(spec: DatasetSpec, arrays: tuple[np.ndarray, ...], source: str) -> Arrays:
    c, h, w = spec.input_shape
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if i % 2 == 0:  # images: NHW, NHWC or NCHW
            if a.ndim == 3:
                a = a[:, None]
            elif a.ndim == 4 and a.shape[-1] == c and a.shape[1] != c:
                a = a.transpose(0, 3, 1, 2)
            if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (c, h, w):
                raise CrossneuronError(
                    f"{source}: images must be uint8 of shape (N, {c}, {h}, {w}) or NHWC, got {a.dtype} {a.shape}"
                )
            out.append(torch.from_numpy(np.require(a, requirements=["C", "W"])))
        else:
            a = a.astype(np.int64).reshape(-1)
            if a.size != out[-1].shape[0] or a.min(initial=0) < 0 or a.max(initial=0) >= spec.num_classes:
                raise CrossneuronError(
                    f"{source}: labels must be {out[-1].shape[0]} integers in 0..{spec.num_classes - 1}"
                )
            out.append(torch.from_numpy(a))
    return Arrays(*out, source=source)


def synthetic(spec: DatasetSpec, n_train: int = 1500, n_test: int = 500, seed: int = 0) -> Arrays:
    """Small learnable images: each class is a grating of its own orientation and frequency, plus noise."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = spec.input_shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")

    def make(n):
        y = torch.randint(0, spec.num_classes, (n,), generator=g)
        angle = y.float() * torch.pi / spec.num_classes
        freq = 0.5 + 0.15 * (y % 3).float()
        phase = torch.rand(n, generator=g) * 2 * torch.pi
        arg = freq[:, None, None] * (xx * angle.cos()[:, None, None] + yy * angle.sin()[:, None, None])
        img = torch.sin(arg + phase[:, None, None])[:, None].expand(n, c, h, w)
        img = img + 0.4 * torch.randn(n, c, h, w, generator=g)
        return ((img.clamp(-2, 2) + 2) * 63.75).to(torch.uint8), y

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return Arrays(x_train, y_train, x_test, y_test, source="synthetic (generated)")


def _download(spec: DatasetSpec, root: Path) -> None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}.get(spec.name)
    if spec.name == "cifar10":
        raise CrossneuronError(
            "torchvision's CIFAR-10 download is a pickle archive, which crossneuron does not unpickle: fetch "
            "cifar-10-binary.tar.gz from the CIFAR page and unpack it under the data root"
        )
    if cls is None:
        raise CrossneuronError(f"dataset '{spec.name}' has no downloader")
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_arrays(name: str, root: str | Path | None = None, download: bool = False) -> Arrays:
    """Load a registered dataset, looking in the order described in the module docstring."""
    spec = dataset_spec(name)
    if spec.name == "synthetic":
        return synthetic(spec)
    root = Path(root) if root is not None else default_root()
    if download:
        if root is None:
            raise CrossneuronError(f"--download needs a --data-root (or {ENV_ROOT}) to download into")
        _download(spec, root)
    places = ([root] if root is not None else []) + [Path(p) for p in spec.system_paths]
    looked: list[str] = []
    loaders: list[tuple[Callable, Callable[[Path], Path]]] = [
        *((_load_idx_folder, lambda p, f=f: p / f) for f in spec.folders),
        (_load_idx_folder, lambda p: p),
        *((_load_cifar_bin, lambda p, f=f: p / f) for f in spec.folders),
        (_load_npz, lambda p: p / f"{spec.name.replace('-', '_')}.npz"),
        (_load_npz, lambda p: p / f"{spec.name}.npz"),
    ]
    for place in places:
        for loader, where in loaders:
            target = where(place)
            looked.append(str(target))
            arrays = loader(target)
            if arrays is not None:
                return _to_tensors(spec, arrays, str(target))
    tried = ", ".join(dict.fromkeys(looked)) or "nowhere (no --data-root given)"
    raise CrossneuronError(f"dataset '{name}' not found; looked in: {tried}; to get it: {spec.how_to_get}")
