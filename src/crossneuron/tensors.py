"""The one-call Python search (issue 16): a user's model and tensors, no checkpoint folder.

    import crossneuron as cn
    summary = cn.optimize(model, val=(x_val, y_val), test=(x_test, y_test), eps=[0, 0.5, 1],
                          mode="uniform-layer", out="runs/mine")

Images are float tensors (N, C, H, W) already normalised the way the model takes them, labels
integer class indices; a DataLoader (or any iterable of (images, labels) batches) works too. ``val`` is
the pool SPEC 5 draws the calibration images (the search sees them) and the check images (it never
does) from; ``test`` is only measured. The run folder is the one ``crossneuron optimize`` writes
(records.sqlite, ``<mode>/eps-<e>/result.json`` and masks, baseline.json, summary.json; ``crossneuron
report`` reads it) and resumes the same way. Its identity holds a SHA-256 of the model's weights and
of the val images instead of a checkpoint's files, so a rerun with other weights or images is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import DatasetSpec
from .errors import CrossneuronError
from .search.modes import parse_modes
from .search.options import DEFAULT_CHECK, SearchOptions
from .splits import Split

Pairs = tuple[torch.Tensor, torch.Tensor] | Iterable


def _tensors(data: Pairs, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) from a pair of tensors or an iterable of batches, checked."""
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    else:
        try:
            batches = [(bx, by) for bx, by in data]
        except (TypeError, ValueError):
            raise CrossneuronError(f"{what} must be (images, labels) tensors or batches of them") from None
        if not batches:
            raise CrossneuronError(f"{what} holds no images")
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    if x.dim() != 4 or not x.is_floating_point():
        raise CrossneuronError(f"{what} images must be float (N, C, H, W), normalised as the model takes them; "
                               f"got {x.dtype} {tuple(x.shape)}")  # fmt: skip
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        raise CrossneuronError(f"{what} labels must be integer class indices, one per image; got {y.dtype} "
                               f"{tuple(y.shape)} for {len(x)} images")  # fmt: skip
    return x.detach().cpu().float().contiguous(), y.detach().cpu().long()


def _hash(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class TensorContext:
    """What ``runfolder.optimize`` needs of a checkpoint, made of a model and tensors."""

    path: Path  # stands for the checkpoint in the run's identity and results
    model: torch.nn.Module
    meta: dict
    spec: DatasetSpec
    split: Split
    device: str
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]

    def data(self, name: str):
        if name not in ("val", "test"):
            raise CrossneuronError(f"a Python run has val and test images only, not {name}")
        return self.val if name == "val" else self.test

    @property
    def weights_hash(self) -> str:
        return _hash(*(v for _, v in sorted(self.model.state_dict().items()) if isinstance(v, torch.Tensor)))


def tensor_context(model: torch.nn.Module, val: Pairs, test: Pairs, out: str | Path) -> TensorContext:
    xv, yv = _tensors(val, "val")
    xt, yt = _tensors(test, "test")
    if xv.shape[1:] != xt.shape[1:]:
        raise CrossneuronError(f"val images are {tuple(xv.shape[1:])} but test images {tuple(xt.shape[1:])}")
    param = next(model.parameters(), None)
    device = str(param.device) if param is not None else "cpu"
    shape = tuple(int(s) for s in xv.shape[1:])
    classes = int(max(yv.max(), yt.max())) + 1
    spec = DatasetSpec(f"tensors:{type(model).__name__}", shape, classes, (0.0,) * shape[0], (1.0,) * shape[0],
                       augment=False)  # fmt: skip
    meta = {"model": f"python:{type(model).__module__}.{type(model).__qualname__}", "dataset": spec.name,
            "val_hash": _hash(xv, yv), "test_hash": _hash(xt, yt)}  # fmt: skip
    split = Split(train=torch.zeros(0, dtype=torch.int64), val=torch.arange(len(yv)), seed=0)
    path = Path(out).resolve() / "python-model"
    return TensorContext(path, model.eval(), meta, spec, split, device, (xv, yv), (xt, yt))


def optimize(model: torch.nn.Module, val: Pairs, test: Pairs, out: str | Path, eps: Iterable[float] = (0, 0.5, 1, 3),
             mode: str = "uniform-layer", calib: int | None = None, check: int | None = None, engine: str = "fast",
             progress=None, backend=None, **options) -> dict:  # fmt: skip
    """Search ``model``'s masks on ``val`` and report them on ``test`` (see the module's text); returns the
    summary (summary.json). ``calib``: calibration images (default: 1,000, at most half of val);
    ``check``: check images (default: 1,000, at most the rest of val); ``options``: any other
    ``SearchOptions`` field (``patch_size``, ``budget``, ``optimizer``, ``screen``, ``refine`` ...);
    ``backend``: ``crossneuron.RayBackend(workers=...)`` evaluates on Ray workers."""
    from .runfolder import optimize as run

    ctx = tensor_context(model, val, test, out)
    n = len(ctx.val[1])
    calib = min(1000, n // 2) if calib is None else calib
    check = DEFAULT_CHECK if check is None else check  # fewer where val leaves fewer (runfolder.check_positions)
    unknown = set(options) - set(SearchOptions.__dataclass_fields__)
    if unknown:
        raise CrossneuronError(f"unknown search option(s) {', '.join(sorted(unknown))}: see SearchOptions")
    search = SearchOptions(modes=parse_modes(mode), eps=[float(e) for e in eps], calib=calib, **options)
    return run(ctx, search, out, engine, progress, check, backend=backend)
