"""Bad inputs and faults, one row each: what a user does, the command, and the start of what they
must be told. ``tests/test_reliability.py`` runs every case through the CLI and checks its exit
status, that stderr is one line with no traceback, and that the line is the one recorded in
docs/reliability.md; ``scripts/reliability_doc.sh`` rewrites that file from the same runs.

Placeholders in arguments: {ckpt} (a tiny trained checkpoint), {run} (a copy of a finished search
of it), {tmp} (an empty folder). ``setup(env)`` prepares the files a case needs (and may name a path
that the recorded line shows as a placeholder: {headline}, the report's headline result folder).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    args: tuple[str, ...]
    expect: str  # a part of the one line on stderr
    setup: object = None  # callable(env) -> None
    untouched: str | None = None  # a path (with placeholders) that must not exist afterwards


def _result(env, **changes):
    data = json.loads(next(Path(env["run"]).glob("uniform-patch/eps-5/result.json")).read_text())
    data.update(changes)
    return data


def _write(name: str, make):
    def setup(env):
        path = Path(env["tmp"]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = make(env)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(json.dumps(content))

    return setup


def _channel_999(env):
    data = _result(env)
    site, entry = next(iter(data["masks"].items()))
    data["masks"][site] = {**entry, "pieces": [[999, None, 1]]}
    return data


def _copy_ckpt(edit):
    def setup(env):
        copy = Path(env["tmp"]) / "ckpt"
        shutil.copytree(env["ckpt"], copy)
        edit(copy)

    return setup


def _meta(**changes):
    def edit(folder: Path):
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, **changes}))

    return edit


def _nan_weights(folder: Path):
    state = load_file(str(folder / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = state[name].clone().fill_(float("nan"))
    save_file(state, str(folder / "model.safetensors"))


def _truncated_npz(env):
    import numpy as np

    folder = Path(env["tmp"]) / "data"
    folder.mkdir()
    np.savez(folder / "cifar10.npz", x_train=np.zeros((10, 32, 32, 3), np.uint8), y_train=np.zeros(10, np.int64),
             x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.zeros(2, np.int64))  # fmt: skip
    whole = (folder / "cifar10.npz").read_bytes()
    (folder / "cifar10.npz").write_bytes(whole[: len(whole) // 2])


def _corrupt_masks(env):
    from crossneuron.report.load import load_run

    for path in Path(env["run"]).glob("*/eps-*/masks.safetensors"):
        path.write_bytes(b"garbage")
    # the report reads the headline's masks first; which mode that is depends on the CPU's rounding
    mode, eps, _ = load_run(env["run"]).headline()
    env["headline"] = str(Path(env["run"]) / mode / f"eps-{eps:g}")


def _corrupt_zap(env):
    folder = Path(env["run"]) / "compare"
    folder.mkdir(exist_ok=True)
    (folder / "zap.safetensors").write_bytes(b"garbage")
    options = {"zap_epochs": 3, "zap_images": 10000, "zap_lr": 0.03, "patch_size": 2, "seed": 0}  # compare's
    (folder / "zap-train.json").write_text(json.dumps({"options": options, "train_loss": [], "train_seconds": 0}))


OPT = ("optimize", "--checkpoint", "{ckpt}", "--out", "{tmp}/out", "--calib", "100")
CASES = [
    Case("unknown-model", "an unknown model", ("sites", "--model", "resnet19"), "unknown model 'resnet19'"),
    Case("input-shape", "an input shape that is not C,H,W", ("sites", "--input-shape", "3,32"),
         "--input-shape must be C,H,W"),
    Case("too-small", "an input the model cannot run on", ("sites", "--model", "alexnet", "--input-shape", "3,4,4"),
         "does not run on input_shape"),
    Case("patch-size", "a patch size that makes no sense", ("sites", "--patch-size", "7"),
         "patch size must be from 2 to 5"),
    Case("eps-nan", "epsilon NaN", (*OPT, "--eps", "nan"), "epsilon must be >= 0 and <= 100", untouched="{tmp}/out"),
    Case("eps-200", "epsilon beyond 100 points", (*OPT, "--eps", "0,200"), "epsilon must be >= 0 and <= 100",
         untouched="{tmp}/out"),
    Case("budget", "an unknown budget rule", (*OPT, "--budget", "lenient"), "unknown --budget 'lenient'",
         untouched="{tmp}/out"),
    Case("ucb-level", "a confidence level outside (0, 1)", (*OPT, "--budget", "ucb:2"), "confidence level",
         untouched="{tmp}/out"),
    Case("patterns", "a pattern family whose patterns fall outside the ones range",
         (*OPT, "--patch-size", "3", "--ones", "1-2", "--patterns", "permutations"), "pattern family 'permutations'",
         untouched="{tmp}/out"),
    Case("optimizer", "an unknown optimiser", (*OPT, "--optimizer", "anneal"), "unknown --optimizer 'anneal'",
         untouched="{tmp}/out"),
    Case("calib", "more calibration images than val holds", (*OPT[:-1], "5000"), "calibration size must be 1..300",
         untouched="{tmp}/out"),
    Case("check", "a negative number of check images", (*OPT, "--check", "-1"), "--check must be",
         untouched="{tmp}/out"),
    Case("verify", "more verify images than val leaves after the calibration images", (*OPT, "--verify", "250"),
         "--verify must be", untouched="{tmp}/out"),
    Case("device", "an unknown device", (*OPT, "--device", "foo"), "unknown --device 'foo'", untouched="{tmp}/out"),
    Case("couple", "a coupled site that does not exist (refused before the base pass)",
         (*OPT, "--couple", "layer1.0.relu+nosuch"), "unknown site 'nosuch'", untouched="{tmp}/out"),
    Case("out-file", "--out naming a file", ("optimize", "--checkpoint", "{ckpt}", "--out", "{tmp}/afile", "--calib",
                                             "100"),
         "is a file", setup=_write("afile", lambda env: b"keep me")),
    Case("records", "a records database that is garbage",
         ("optimize", "--checkpoint", "{ckpt}", "--out", "{tmp}/bad", "--calib", "100"),
         "not a readable search database", setup=_write("bad/records.sqlite", lambda env: b"garbage" * 1000)),
    Case("reuse", "--reuse of a search on other calibration images",
         (*OPT[:-1], "90", "--reuse", "{run}"), "cannot be reused here", untouched="{tmp}/out"),
    Case("zero-below", "a negative --zero-below", (*OPT, "--zero-below", "-1"), "--zero-below must be",
         untouched="{tmp}/out"),
    Case("reuse-zero-below", "--reuse of a search with another --zero-below (its records predict otherwise)",
         (*OPT, "--gt", "4", "--batch-size", "100", "--zero-below", "0.5", "--reuse", "{run}"),
         "(differs in: options.zero_below)", untouched="{tmp}/out"),
    Case("masks-number", "a result.json that is a bare number",
         ("evaluate", "--checkpoint", "{ckpt}", "--masks", "{tmp}/r.json"), "not a crossneuron result",
         setup=_write("r.json", lambda env: 7)),
    Case("masks-channel", "a result.json naming channel 999",
         ("evaluate", "--checkpoint", "{ckpt}", "--masks", "{tmp}/r.json"), "channel 999",
         setup=_write("r.json", _channel_999)),
    Case("masks-patch", "a result.json whose patch_size was edited",
         ("evaluate", "--checkpoint", "{ckpt}", "--masks", "{tmp}/r.json"), "block side",
         setup=_write("r.json", lambda env: _result(env, patch_size=3))),
    Case("masks-folder", "--masks naming a folder", ("evaluate", "--checkpoint", "{ckpt}", "--masks", "{tmp}"),
         "is a folder"),
    Case("no-checkpoint", "a checkpoint folder that is not one", ("evaluate", "--checkpoint", "{tmp}"),
         "is not a checkpoint"),
    Case("meta-corrupt", "a corrupt meta.json", ("evaluate", "--checkpoint", "{tmp}/ckpt"), "is corrupt",
         setup=_copy_ckpt(lambda f: (f / "meta.json").write_text("{not json"))),
    Case("meta-type", "a meta.json field of the wrong type", ("evaluate", "--checkpoint", "{tmp}/ckpt"),
         "'width' must be a positive number", setup=_copy_ckpt(_meta(width="wide"))),
    Case("nan-weights", "weights holding NaN", ("evaluate", "--checkpoint", "{tmp}/ckpt"), "holds NaN or Inf",
         setup=_copy_ckpt(_nan_weights)),
    Case("npz", "a dataset archive cut short",
         ("train", "--model", "alexnet", "--dataset", "cifar10", "--data-root", "{tmp}/data", "--out", "{tmp}/t"),
         "not a readable numpy archive (truncated or corrupt", setup=_truncated_npz, untouched="{tmp}/t"),
    Case("train-over", "train --out onto a finished checkpoint (as shipped: no training state)",
         ("train", "--model", "resnet-tiny", "--dataset", "synthetic", "--width", "0.25", "--epochs", "1",
          "--out", "{tmp}/ckpt"), "already holds a checkpoint",
         setup=_copy_ckpt(lambda f: (f / "train_state.pt").unlink(missing_ok=True))),
    Case("train-again", "train --out onto an unfinished training run without --resume",
         ("train", "--model", "resnet-tiny", "--dataset", "synthetic", "--width", "0.25", "--epochs", "1",
          "--out", "{ckpt}"), "already holds a training run"),
    Case("retrain-self", "retrain --out onto its own source checkpoint",
         ("retrain", "--checkpoint", "{ckpt}", "--masks", "{run}/uniform-layer/eps-5/result.json", "--out", "{ckpt}"),
         "is the source checkpoint itself"),
    Case("retrain-precision", "retrain --precision that is not fp32 or bf16",
         ("retrain", "--checkpoint", "{ckpt}", "--masks", "{run}/uniform-layer/eps-5/result.json", "--precision",
          "fp16", "--out", "{tmp}/r"), "--precision must be one of fp32, bf16", untouched="{tmp}/r"),
    Case("grow-mode", "grow of masks finer than one pattern per site (a uniform-patch result)",
         ("grow", "--checkpoint", "{ckpt}", "--masks", "{run}/uniform-patch/eps-5/result.json", "--original", "{ckpt}",
          "--eps", "1", "--out", "{tmp}/g/result.json"), "grow needs one pattern per site", untouched="{tmp}/g"),
    Case("grow-eps", "grow with a negative epsilon",
         ("grow", "--checkpoint", "{ckpt}", "--masks", "{run}/uniform-layer/eps-5/result.json", "--original", "{ckpt}",
          "--eps", "-1", "--out", "{tmp}/g/result.json"), "--eps must be a number of accuracy points",
         untouched="{tmp}/g"),
    Case("report-none", "report on a folder that is not a run", ("report", "{tmp}"), "summary.json not found"),
    Case("report-masks", "report on a run whose masks.safetensors is corrupt",
         ("report", "{run}", "--out", "{tmp}/rep"), "masks.safetensors is corrupt", setup=_corrupt_masks),
    Case("compare-none", "compare on a folder that is not a run", ("compare", "{tmp}"), "summary.json not found"),
    Case("compare-zap", "compare on a run whose trained ZAP predictors are corrupt", ("compare", "{run}"),
         "cannot read ZAP predictors", setup=_corrupt_zap),
]  # fmt: skip
