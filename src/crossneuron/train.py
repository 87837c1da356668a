"""Training: SGD with momentum, cosine LR, a checkpoint each epoch, resumable and deterministic."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from . import checkpoint
from .data import content_hash, dataset_spec, load_arrays
from .errors import CrossneuronError
from .evaluate import correct_count
from .fsutil import atomic_write, folder_lock, write_json
from .models import build_model, load_pretrained
from .predictability import Predictability
from .splits import batches, make_split, split_arrays
from .usermodels import canonical, is_user_model, load_weights_file

STATE = "train_state.pt"
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    model: str
    dataset: str
    width: float = 1.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    val_size: int | None = None  # None: the dataset's default (5,000 for the real ones)
    device: str = "cpu"
    half: bool = True  # store weights in fp16 (loaded back as fp32)
    weights: str | None = None  # a weights file (safetensors / state_dict), or torchvision's (IMAGENET1K_V1)
    init: str | None = None  # a checkpoint folder to start from (retraining)
    masks: str | None = None  # a search's result.json: train with those masks predicting (retraining)
    distill: float = 0.0  # weight of distillation from the teacher's logits (retraining), 0: labels only
    teacher: str | None = None  # the checkpoint folder distilled from (default: init), e.g. the original network
    temperature: float = 4.0  # distillation temperature
    predictability: float = 0.0  # weight of the predictability term (retraining with masks; predictability.py)
    slack: float = 0.0  # the term's gate: 0 counts only patches whose predicted positions are all zero
    warmup: float = 0.0  # epochs of linear learning-rate warm-up before the cosine decay
    precision: str = "fp32"  # "bf16": training passes in bfloat16 autocast, channels_last (see autocast())
    order_seed: int | None = None  # the image order, augmentation and dropout (None: seed); the split keeps seed
    input_size: int | None = None  # imagefolder:DIR only: image side (default 224)
    mean: list[float] | None = None  # imagefolder:DIR only: normalisation (default ImageNet's)
    std: list[float] | None = None

    def check(self) -> None:
        if self.epochs < (0 if self.weights else 1):
            raise CrossneuronError(f"--epochs must be at least 1 (0 only with --weights), got {self.epochs}")
        if self.weights and (Path(self.weights).suffix in (".safetensors", ".pt", ".pth", ".bin")) \
                and not Path(self.weights).is_file():  # fmt: skip
            raise CrossneuronError(f"--weights {self.weights} is not a file")
        if not 0.0 <= self.distill <= 1.0 or not self.temperature > 0:
            raise CrossneuronError(f"--distill must be in [0, 1] and --temperature positive, got {self.distill} and "
                                   f"{self.temperature}")  # fmt: skip
        if self.distill > 0 and not self.init:
            raise CrossneuronError("--distill learns from the original network: it needs --init (as retrain sets)")
        if self.teacher and not self.distill > 0:
            raise CrossneuronError(f"--teacher {self.teacher} is only distilled from with --distill above 0")
        if not self.predictability >= 0 or not self.slack >= 0:
            raise CrossneuronError(f"--predictability and --slack must be at least 0, got {self.predictability} and "
                                   f"{self.slack}")  # fmt: skip
        if self.predictability > 0 and not self.masks:
            raise CrossneuronError("--predictability works on a search's masks: it needs --masks (as retrain sets)")
        if not 0 <= self.warmup < max(self.epochs, 1):
            raise CrossneuronError(f"--warmup must be at least 0 and below --epochs ({self.epochs}), got {self.warmup}")
        if self.precision not in PRECISIONS:
            raise CrossneuronError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 1:
            raise CrossneuronError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise CrossneuronError(f"--lr must be positive, got {self.lr}")
        from .context import check_device

        check_device(self.device)


def check_teacher(teacher: str | Path | None, dataset: str, num_classes: int) -> None:
    """Refuse a ``--teacher`` checkpoint of other data (before any folder is made)."""
    if teacher:
        meta = checkpoint.read_meta(Path(teacher))
        if (meta["dataset"], meta["num_classes"]) != (dataset, num_classes):
            raise CrossneuronError(f"--teacher {teacher} was trained on {meta['dataset']} ({meta['num_classes']} "
                                   f"classes), not {dataset}: distil from a checkpoint of the same data")  # fmt: skip


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, weight: float,
                 temperature: float) -> torch.Tensor:  # fmt: skip
    """(1 - weight) x cross-entropy on the labels + weight x T^2 x KL(teacher || student) at temperature T
    (Hinton et al. 2015: T^2 keeps the soft term's gradients on the hard term's scale)."""
    hard = F.cross_entropy(logits, labels)
    soft = F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    reduction="batchmean", log_target=True) * temperature**2  # fmt: skip
    return (1 - weight) * hard + weight * soft


def lr_factor(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The learning rate's factor after ``s`` steps: linear warm-up from 1 / warmup_steps to 1 over
    ``warmup_steps``, then a cosine from 1 to 0 over the steps left."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (s - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor


def autocast(precision: str, device: str):
    """The training passes' context: ``bf16`` runs them in bfloat16 autocast (weights, gradients and the
    optimiser stay fp32, so no loss scaling is needed), ``fp32`` changes nothing. Only training uses it:
    validation, test and every measurement stay in fp32 (precision.py)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def memory_format(precision: str) -> torch.memory_format:
    """bf16 training also keeps activations channels_last (NHWC), the layout oneDNN's and cuDNN's bf16
    convolutions are fastest in; fp32 training keeps PyTorch's default layout, as before 0.18."""
    return torch.channels_last if precision == "bf16" else torch.contiguous_format


def step_loss(cfg: TrainConfig, runner, teacher, term, xb: torch.Tensor, yb: torch.Tensor):
    """One training batch's forward passes and loss: (logits, loss). Labels' cross-entropy, or distillation
    from ``teacher``'s logits where it is given, plus ``cfg.predictability`` x the term; the passes in
    ``cfg.precision``, the losses in fp32."""
    xb = xb.contiguous(memory_format=memory_format(cfg.precision))
    with autocast(cfg.precision, cfg.device):
        logits = runner(xb).float()
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(xb).float()
    loss = F.cross_entropy(logits, yb)
    if teacher is not None:
        loss = distill_loss(logits, soft, yb, cfg.distill, cfg.temperature)
    if cfg.predictability > 0:
        loss = loss + cfg.predictability * term.term()
    return logits, loss


def with_masks(model: torch.nn.Module, spec, masks_path: str | None) -> torch.nn.Module:
    """``model`` itself, or a PredictiveNet on it with a result.json's masks predicting."""
    if not masks_path:
        return model
    from .result import attach_result, load_result

    return attach_result(model, spec.input_shape, load_result(masks_path))


def _save_state(out: Path, model, optimizer, epoch: int, history: list) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history}
    atomic_write(out / STATE, lambda tmp: torch.save(state, tmp))


def _load_state(out: Path):
    try:
        return torch.load(out / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state is one clear line
        raise CrossneuronError(f"{out / STATE} is corrupt ({type(exc).__name__}); delete it to start over") from None


def train(
    cfg: TrainConfig,
    out: str | Path,
    data_root=None,
    download: bool = False,
    resume: bool = False,
    quiet: bool = False,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict | None:
    """Train ``cfg.model`` on ``cfg.dataset`` into the checkpoint folder ``out``; returns the metrics.

    ``stop_after``: train at most that many epochs in this call and return None (resume later);
    ``log`` receives one line per epoch (for logs where no progress bar shows).
    """
    cfg.check()
    cfg.model = canonical(cfg.model)  # a model file by its absolute path: the checkpoint finds it anywhere
    out = Path(out)
    spec = dataset_spec(cfg.dataset, cfg.input_size, cfg.mean, cfg.std)
    cfg.dataset = spec.name  # an image folder by its absolute path
    check_teacher(cfg.teacher, spec.name, spec.num_classes)
    if cfg.val_size is None:
        cfg.val_size = spec.val_size
    arrays = load_arrays(cfg.dataset, data_root, download, spec)
    split = make_split(len(arrays.y_train), cfg.val_size, cfg.seed)
    with folder_lock(out):  # one writer per checkpoint folder
        return _train(cfg, out, spec, arrays, split, resume, quiet, stop_after, log)


PATH_INPUTS = ("init", "teacher", "masks", "weights")  # options that name a file or a checkpoint folder


def input_digests(cfg: TrainConfig) -> dict[str, str]:
    """Per path-valued option that names something on disk, the sha256 of what it names (a checkpoint
    folder's weights file, any other file's bytes): what a resume compares, so a moved input still resumes
    and an input changed in place does not."""
    out = {}
    for key in PATH_INPUTS:
        value = getattr(cfg, key)
        if not value:
            continue
        path = Path(value) / checkpoint.WEIGHTS if Path(value).is_dir() else Path(value)
        if path.is_file():  # (``weights`` may also name torchvision's, e.g. IMAGENET1K_V1: nothing to hash)
            h = hashlib.sha256()  # hashlib.file_digest needs Python 3.11
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[key] = h.hexdigest()
    return out


def check_resume(cfg: TrainConfig, config_path: Path, digests: dict[str, str]) -> None:
    """Refuse to resume a run with options other than those in ``config_path`` (one line naming each).
    An input named by another path counts as the same where its digest matches the recorded one (a
    checkpoint moved since); one whose digest changed under the same path does not (runs before 0.24
    recorded no digests: their paths must match)."""
    try:
        stored = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CrossneuronError(f"{config_path} is corrupt ({exc}): it records the run's options; restore it or "
                               "train into another --out") from None  # fmt: skip
    new_fields = {"input_size": None, "mean": None, "std": None, "distill": 0.0, "temperature": 4.0,  # pre-0.6
                  "predictability": 0.0, "slack": 0.0, "warmup": 0.0,  # pre-0.7
                  "teacher": None,  # pre-0.15
                  "precision": "fp32",  # pre-0.18
                  "order_seed": None}  # pre-0.23
    recorded = stored.pop("input_digests", {})
    was, now = {**new_fields, **stored}, asdict(cfg)
    differ = [f"{k} was {was.get(k)!r}, now {now.get(k)!r}" for k in sorted(was.keys() | now.keys())
              if was.get(k) != now.get(k) and not (k in recorded and recorded[k] == digests.get(k))]  # fmt: skip
    differ += [f"{k} {now[k]} holds other contents than when the run began" for k in PATH_INPUTS
               if was.get(k) == now.get(k) and k in recorded and recorded[k] != digests.get(k)]  # fmt: skip
    if differ:
        raise CrossneuronError(f"{config_path.parent} was trained with other options ({config_path}: "
                               f"{'; '.join(differ)}): resume with the same ones")  # fmt: skip


def _train(cfg: TrainConfig, out: Path, spec, arrays, split, resume: bool, quiet: bool, stop_after, log) -> dict | None:
    x_train, y_train = split_arrays(arrays, split, "train")
    x_val, y_val = split_arrays(arrays, split, "val")
    config_path = out / "config.json"
    if (out / STATE).exists() and not resume:
        raise CrossneuronError(f"{out} already holds a training run: pass --resume to continue it, or another --out")
    if (out / checkpoint.META).exists() and not resume:  # a finished or shipped checkpoint: never overwritten
        raise CrossneuronError(f"{out} already holds a checkpoint: choose another --out (or pass --resume to "
                               "continue an interrupted run with the same options)")  # fmt: skip
    digests = input_digests(cfg)
    if resume and config_path.exists():
        check_resume(cfg, config_path, digests)
    write_json(config_path, {**asdict(cfg), "input_digests": digests})

    torch.manual_seed(cfg.seed)
    if str(cfg.device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    model = build_model(cfg.model, spec.num_classes, spec.input_shape, cfg.width)
    if cfg.weights and (Path(cfg.weights).is_file() or is_user_model(cfg.model)):
        load_weights_file(model, cfg.weights)  # the user's own file (safetensors or a state_dict)
    elif cfg.weights:
        load_pretrained(model, cfg.model, cfg.weights)
    teacher = None
    if cfg.init:
        original = checkpoint.load(cfg.init)[0]
        model.load_state_dict(original.state_dict())
        if cfg.distill > 0:  # the original network (or --teacher's), frozen, without masks
            source = checkpoint.load(cfg.teacher)[0] if cfg.teacher else original
            teacher = source.to(cfg.device, memory_format=memory_format(cfg.precision)).eval().requires_grad_(False)
    model = model.to(cfg.device, memory_format=memory_format(cfg.precision))
    runner = with_masks(model, spec, cfg.masks)  # what trains and is measured; shares model's parameters
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )
    steps_per_epoch = math.ceil(len(y_train) / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(total_steps, round(cfg.warmup * steps_per_epoch)))
    start, history = 0, []
    if resume and (out / STATE).exists():
        state = _load_state(out)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["epoch"], state["history"]
        schedule.last_epoch = start * steps_per_epoch
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * schedule.lr_lambdas[0](schedule.last_epoch)
    meta = {
        "model": cfg.model,
        "width": cfg.width,
        "dataset": cfg.dataset,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "split_seed": cfg.seed,
        "val_size": cfg.val_size,
        "val_hash": split.val_hash,
        "data_source": arrays.source,
        "data_hash": content_hash(arrays),  # the data trained and split on; open_checkpoint refuses other data
        "weights": cfg.weights,
        "init": cfg.init,
        "masks": cfg.masks,  # accuracies in this meta are measured with these masks predicting
        "command": " ".join(sys.argv),
        "config": asdict(cfg),
        "versions": {
            "crossneuron": __import__("crossneuron").__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
    ]  # fmt: skip
    term = Predictability(runner, cfg.slack) if cfg.predictability > 0 else contextlib.nullcontext()
    with Progress(*columns, disable=quiet, transient=False) as progress, term:
        order = cfg.seed if cfg.order_seed is None else cfg.order_seed
        for epoch in range(start, cfg.epochs):
            torch.manual_seed(order * 1_000_003 + epoch)  # augmentation, dropout: same stream after a resume
            shuffle = torch.Generator().manual_seed(order * 1_000_003 + epoch)
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info="")
            runner.train()
            t0, seen, loss_sum, hits = time.perf_counter(), 0, 0.0, 0
            for xb, yb in batches(x_train, y_train, spec, cfg.batch_size, cfg.device, shuffle, train_augment=True):
                logits, loss = step_loss(cfg, runner, teacher, term, xb, yb)
                if not torch.isfinite(loss):  # nothing of this epoch is saved: the last checkpoint stays good
                    kept = f"{out} keeps epoch {epoch}'s checkpoint" if epoch else "nothing was saved"
                    raise CrossneuronError(f"training diverged in epoch {epoch + 1} (loss {loss.item()}): {kept}; "
                                           f"train into a new --out with a lower --lr (now {cfg.lr:g})")  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                seen += len(yb)
                loss_sum += loss.item() * len(yb)
                hits += int((logits.argmax(1) == yb).sum())
                rate = seen / (time.perf_counter() - t0)
                info = f"loss {loss_sum / seen:.4f}  acc {100 * hits / seen:.2f}%  {rate:.0f} img/s"
                progress.update(task, advance=1, info=info)
            val_acc = 100.0 * correct_count(runner, x_val, y_val, spec, 500, cfg.device) / len(y_val)
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / seen,
                    "train_accuracy": 100.0 * hits / seen,
                    "val_accuracy": val_acc,
                    "seconds": time.perf_counter() - t0,
                }
            )
            progress.update(task, info=f"{info}  val {val_acc:.2f}%")
            checkpoint.save(
                out, model, {**meta, "epoch": epoch + 1, "val_accuracy": val_acc, "test_accuracy": None}, cfg.half
            )
            _save_state(out, model, optimizer, epoch + 1, history)
            if log is not None:
                log(f"epoch {epoch + 1}/{cfg.epochs}: {info}  val {val_acc:.2f}%  {history[-1]['seconds']:.0f} s")
            if stop_after is not None and epoch + 1 - start >= stop_after and epoch + 1 < cfg.epochs:
                return None
    if cfg.epochs == 0:  # pretrained weights only: store them as they are
        checkpoint.save(out, model, {**meta, "epoch": 0, "val_accuracy": None, "test_accuracy": None}, cfg.half)
    final, _ = checkpoint.load(out, cfg.device)  # measure exactly what is stored (fp16 weights, if asked)
    final_runner = with_masks(final, spec, cfg.masks)
    val_acc = 100.0 * correct_count(final_runner, x_val, y_val, spec, 500, cfg.device) / len(y_val)
    test_acc = (100.0 * correct_count(final_runner, arrays.x_test, arrays.y_test, spec, 500, cfg.device)
                / len(arrays.y_test))  # fmt: skip
    checkpoint.save(
        out, final, {**meta, "epoch": cfg.epochs, "val_accuracy": val_acc, "test_accuracy": test_acc}, cfg.half
    )
    metrics = {
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "epochs": cfg.epochs,
        "train_seconds": sum(h["seconds"] for h in history),
        "history": history,
    }
    write_json(out / "metrics.json", metrics)
    return metrics
