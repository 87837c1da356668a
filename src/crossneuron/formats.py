"""Readers for the on-disk layouts of the datasets. Each returns None when its files are absent,
raises CrossneuronError when they are present but malformed, and never unpickles anything."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import CrossneuronError

Parts = tuple  # (x_train, y_train, x_test, y_test): images as arrays or LazyImages, labels as arrays


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
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


def idx_folder(folder: Path) -> Parts | None:
    """MNIST-style IDX files (torchvision's ``MNIST/raw``, Debian's fashion-mnist folder)."""
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [_find(folder, s) for s in stems]
    return tuple(read_idx(p) for p in paths) if all(paths) else None


def _records(paths: list[Path], size: int, what: str) -> np.ndarray:
    rec = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths])
    if rec.size % size:
        raise CrossneuronError(f"{what} in {paths[0].parent} are truncated")
    return rec.reshape(-1, size)


def cifar_binary(folder: Path) -> Parts | None:
    """CIFAR-10's binary version (``cifar-10-batches-bin``): a label byte, then 3x32x32 bytes."""
    train = [folder / f"data_batch_{i}.bin" for i in range(1, 6)]
    test = [folder / "test_batch.bin"]
    if not all(p.is_file() for p in train + test):
        return None
    out = []
    for paths in (train, test):
        rec = _records(paths, 3073, "CIFAR-10 binary batches")
        out += [rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)]
    return tuple(out)


def stl10_binary(folder: Path) -> Parts | None:
    """STL-10's binary version (``stl10_binary``): column-major 3x96x96 images, labels 1..10."""
    names = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
    if not all((folder / n).is_file() for n in names):
        return None
    out = []
    for x_name, y_name in (names[:2], names[2:]):
        x = _records([folder / x_name], 3 * 96 * 96, "STL-10 images").reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
        y = np.fromfile(folder / y_name, dtype=np.uint8).astype(np.int64) - 1
        out += [x, y]
    return tuple(out)


def npz(path: Path) -> Parts | None:
    """A numpy archive with keys x_train, y_train, x_test, y_test (loaded without pickle)."""
    if not path.is_file():
        return None
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise CrossneuronError(f"{path} lacks {', '.join(missing)}: a dataset archive needs the arrays "
                                       f"{', '.join(keys)}")  # fmt: skip
            return tuple(z[k] for k in keys)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise CrossneuronError(f"{path} is not a readable numpy archive (truncated or corrupt? {reason}): "
                               "copy it again") from None  # fmt: skip


class LazyImages:
    """Image files decoded on demand to uint8 (C, size, size): resize the short side, centre crop."""

    def __init__(self, paths: list[Path], size: int, resize: int | None = None):
        self.paths, self.size, self.resize = list(paths), size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx) -> LazyImages:
        return LazyImages([self.paths[int(i)] for i in idx], self.size, self.resize)

    def load(self) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

        out = torch.empty(len(self.paths), 3, self.size, self.size, dtype=torch.uint8)
        for k, path in enumerate(self.paths):
            try:
                with Image.open(path) as im:
                    img = pil_to_tensor(im.convert("RGB"))
            except OSError as exc:
                raise CrossneuronError(f"{path} is not a readable image: {exc}") from None
            if self.resize is not None:
                img = resize(img, self.resize, antialias=True)
            out[k] = center_crop(img, [self.size, self.size])
        return out


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))


def image_folders(root: Path, size: int, resize: int | None, train: str = "train", test: str = "val") -> Parts | None:
    """ImageFolder layout: ``root/train/<class>/*`` and ``root/val/<class>/*`` (classes sorted)."""
    if not ((root / train).is_dir() and (root / test).is_dir()):
        return None
    classes = sorted(d.name for d in (root / train).iterdir() if d.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for part in (train, test):
        paths, labels = [], []
        for c in sorted(d.name for d in (root / part).iterdir() if d.is_dir()):
            if c not in index:
                raise CrossneuronError(f"{root / part / c} is a class missing from {root / train}")
            files = _image_files(root / part / c)
            paths += files
            labels += [index[c]] * len(files)
        out += [LazyImages(paths, size, resize), np.array(labels, dtype=np.int64)]
    return tuple(out)


def tiny_imagenet(root: Path) -> Parts | None:
    """Tiny ImageNet's own layout: train/<wnid>/images/*, val/images/* with val_annotations.txt
    (its val set serves as our test split; it has no labelled test set)."""
    wnids_file, notes = root / "wnids.txt", root / "val" / "val_annotations.txt"
    if not (wnids_file.is_file() and notes.is_file()):
        return None
    wnids = wnids_file.read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    for w in wnids:
        files = _image_files(root / "train" / w)
        paths += files
        labels += [index[w]] * len(files)
    test_paths, test_labels = [], []
    for line in notes.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise CrossneuronError(f"{notes}: malformed line '{line[:60]}'")
        test_paths.append(root / "val" / "images" / fields[0])
        test_labels.append(index[fields[1]])
    return (LazyImages(paths, 64), np.array(labels), LazyImages(test_paths, 64), np.array(test_labels))
