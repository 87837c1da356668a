"""Dataset registry and file lookup. Every dataset loads to uint8 NCHW tensors in memory.

Lookup order for a dataset: the data root (``--data-root`` or ``CROSSNEURON_DATA``), then known
system paths (Debian's ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``); in
each place torchvision's folder layouts (IDX files, the CIFAR-10 binary batches), then a numpy
archive ``<name>.npz`` with keys ``x_train, y_train, x_test, y_test`` (loaded without pickle).
``download=True`` uses torchvision's downloaders (network needed; never used by the tests).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import formats
from .errors import CrossneuronError
from .formats import LazyImages

ENV_ROOT = "CROSSNEURON_DATA"


@dataclass(frozen=True)
class Arrays:
    """A dataset: uint8 images (N, C, H, W) in memory (or LazyImages decoded per batch), int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str  # where it was read from


def content_hash(arrays: Arrays) -> str:
    """A short SHA-256 of a dataset's contents: every image and label of train and test, with their
    shapes (image folders: each file's name and size, not decoded). Checkpoints record it; opening
    one on other data is refused (``context.open_checkpoint``)."""
    h = hashlib.sha256()
    for part in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test):
        if isinstance(part, torch.Tensor):
            t = part.contiguous().cpu()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        else:  # LazyImages
            for path in part.paths:
                h.update(f"{Path(path).name}:{Path(path).stat().st_size};".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop and flip while training
    system_paths: tuple[str, ...] = ()
    layouts: tuple[tuple[str, str], ...] = ()  # (reader in formats.py, folder under a place), tried in order
    downloader: str | None = None  # torchvision.datasets class for --download
    how_to_get: str = ""
    val_size: int = 5000  # default images held out of the official training set


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
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
            layouts=(("idx_folder", "MNIST/raw"), ("idx_folder", "mnist"), ("idx_folder", ".")),
            downloader="MNIST",
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
            layouts=(("idx_folder", "FashionMNIST/raw"), ("idx_folder", "fashion-mnist"), ("idx_folder", ".")),
            downloader="FashionMNIST",
            how_to_get="apt-get install dataset-fashion-mnist (Debian), or pass --download",
        ),
        DatasetSpec(
            "cifar10",
            (3, 32, 32),
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            True,
            layouts=(("cifar_binary", "cifar-10-batches-bin"),),
            how_to_get="put cifar10.npz, or cifar-10-batches-bin/ from the CIFAR page's binary version, under the "
            "data root (torchvision's download is a pickle archive, which crossneuron does not unpickle)",
        ),
        DatasetSpec(
            "stl10",
            (3, 96, 96),
            10,
            (0.4467, 0.4398, 0.4066),
            (0.2603, 0.2566, 0.2713),
            True,
            layouts=(("stl10_binary", "stl10_binary"),),
            downloader="STL10",
            val_size=500,
            how_to_get="put stl10_binary/ (the STL-10 binary files) under the data root, or pass --download",
        ),
        DatasetSpec(
            "tiny-imagenet",
            (3, 64, 64),
            200,
            (0.4802, 0.4481, 0.3975),
            (0.2770, 0.2691, 0.2821),
            False,
            layouts=(("tiny_imagenet", "tiny-imagenet-200"), ("tiny_imagenet", ".")),
            how_to_get="unpack tiny-imagenet-200.zip under the data root",
        ),
        DatasetSpec(
            "imagenet",
            (3, 224, 224),
            1000,
            IMAGENET_MEAN,
            IMAGENET_STD,
            False,
            layouts=(("imagenet_folders", "imagenet"), ("imagenet_folders", ".")),
            val_size=10000,
            how_to_get="put ImageNet in ImageFolder layout (imagenet/train/<wnid>/*.JPEG, imagenet/val/<wnid>/*.JPEG) "
            "under the data root",
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
READERS = {
    "idx_folder": formats.idx_folder,
    "cifar_binary": formats.cifar_binary,
    "stl10_binary": formats.stl10_binary,
    "tiny_imagenet": formats.tiny_imagenet,
    "imagenet_folders": lambda root: formats.image_folders(root, 224, 256),
}


IMAGEFOLDER = "imagefolder:"


def folder_spec(name: str, size: int | None = None, mean=None, std=None) -> DatasetSpec:
    """``imagefolder:DIR``: a user's images in ImageFolder layout, ``DIR/train/<class>/*`` and
    ``DIR/val/<class>/*`` (or ``DIR/test/<class>/*``: the test split), RGB, resized (short side) and
    centre-cropped to ``size`` (default 224), normalised with ``mean``/``std`` (default ImageNet's).
    The name is stored with DIR resolved, so a checkpoint finds the folder from anywhere."""
    root = Path(name[len(IMAGEFOLDER) :]).expanduser()
    layout = "ImageFolder layout: DIR/train/<class>/*.png|jpg and DIR/val/<class>/* (or DIR/test/<class>/*)"
    if not (root / "train").is_dir() or not any((root / t).is_dir() for t in ("val", "test")):
        raise CrossneuronError(f"--dataset {name}: {root} is not in {layout}")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if len(classes) < 2:
        raise CrossneuronError(f"--dataset {name}: {root / 'train'} holds {len(classes)} class folder(s); 2 or more")
    size = 224 if size is None else size
    if not (isinstance(size, int) and 8 <= size <= 1024):
        raise CrossneuronError(f"--input-size must be an integer from 8 to 1024, got {size!r}")
    mean, std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3 or not all(v > 0 for v in std):
        raise CrossneuronError(f"--mean and --std take 3 numbers (R,G,B), std positive; got {mean} and {std}")
    train_images = sum(1 for c in classes for _ in formats._image_files(root / "train" / c))
    val_size = max(1, min(5000, train_images // 5))
    return DatasetSpec(f"{IMAGEFOLDER}{root.resolve()}", (3, size, size), len(classes), mean, std, False,
                       how_to_get=f"put the images in {layout}", val_size=val_size)  # fmt: skip


def dataset_spec(name: str, size: int | None = None, mean=None, std=None) -> DatasetSpec:
    """A registered dataset's spec, or an image folder's (``imagefolder:DIR``: ``size``, ``mean`` and
    ``std`` apply to those only)."""
    if name.startswith(IMAGEFOLDER):
        return folder_spec(name, size, mean, std)
    if (size, mean, std) != (None, None, None):
        raise CrossneuronError(f"--input-size, --mean and --std apply to --dataset imagefolder:DIR only, not {name}")
    if name not in DATASETS:
        raise CrossneuronError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)} or imagefolder:DIR")
    return DATASETS[name]


def spec_of(meta: dict) -> DatasetSpec:
    """The dataset spec a checkpoint was trained with (an image folder's size and normalisation from meta)."""
    name = meta["dataset"]
    if name.startswith(IMAGEFOLDER):
        return folder_spec(name, meta["input_shape"][1], meta.get("mean"), meta.get("std"))
    return dataset_spec(name)


def default_root() -> Path | None:
    value = os.environ.get(ENV_ROOT)
    return Path(value) if value else None


def _to_tensors(spec: DatasetSpec, arrays: tuple[np.ndarray, ...], source: str) -> Arrays:
    c, h, w = spec.input_shape
    out = []
    for i, a in enumerate(arrays):
        if isinstance(a, LazyImages):  # decoded per batch to the right shape
            out.append(a)
            continue
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
            if a.size != len(out[-1]) or a.min(initial=0) < 0 or a.max(initial=0) >= spec.num_classes:
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


def _download(spec: DatasetSpec, root: Path) -> None:
    """torchvision's downloader for users with a network (it skips files already present)."""
    if spec.downloader is None:
        raise CrossneuronError(f"dataset '{spec.name}' has no downloader here: {spec.how_to_get}")
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.downloader)
    try:
        if spec.downloader == "STL10":
            for part in ("train", "test"):
                cls(str(root), split=part, download=True)
        else:
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:
        raise CrossneuronError(
            f"downloading {spec.name} into {root} failed: {' '.join(str(exc).split())[:200]}"
        ) from None


def load_arrays(name: str, root: str | Path | None = None, download: bool = False,
                spec: DatasetSpec | None = None) -> Arrays:  # fmt: skip
    """Load a registered dataset, looking in the order described in the module docstring; an image
    folder (``spec`` from ``folder_spec``) from its own folder."""
    spec = spec or dataset_spec(name)
    if spec.name == "synthetic":
        return synthetic(spec)
    if spec.name.startswith(IMAGEFOLDER):
        folder = Path(spec.name[len(IMAGEFOLDER) :])
        size = spec.input_shape[1]
        test = "val" if (folder / "val").is_dir() else "test"
        parts = formats.image_folders(folder, size, max(size, round(size * 256 / 224)), test=test)
        return _to_tensors(spec, parts, str(folder))
    root = Path(root) if root is not None else default_root()
    if download:
        if root is None:
            raise CrossneuronError(f"--download needs a --data-root (or {ENV_ROOT}) to download into")
        _download(spec, root)
    places = ([root] if root is not None else []) + [Path(p) for p in spec.system_paths]
    looked: list[str] = []
    for place in places:
        candidates = [(READERS[reader], place / folder) for reader, folder in spec.layouts]
        candidates += [
            (formats.npz, place / f"{stem}.npz") for stem in dict.fromkeys((spec.name.replace("-", "_"), spec.name))
        ]
        for reader, target in candidates:
            looked.append(str(target))
            parts = reader(target)
            if parts is not None:
                return _to_tensors(spec, parts, str(target))
    tried = ", ".join(dict.fromkeys(looked)) or "nowhere (no --data-root given)"
    raise CrossneuronError(f"dataset '{name}' not found; looked in: {tried}; to get it: {spec.how_to_get}")


def take(images, idx):
    """Images at ``idx`` (a tensor stays a tensor, LazyImages stay lazy)."""
    return images.take(idx) if isinstance(images, LazyImages) else images[idx]


def materialise(images) -> torch.Tensor:
    return images.load() if isinstance(images, LazyImages) else images
