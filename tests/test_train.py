"""Training, checkpoints, resume and evaluation on synthetic data and a tiny model."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import crossneuron as cn
from crossneuron import checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.train import TrainConfig, train

CFG = dict(model="resnet18", dataset="synthetic", width=0.125, epochs=3, batch_size=64, lr=0.05, seed=1)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ckpt"
    metrics = train(TrainConfig(**CFG), out, quiet=True)
    return out, metrics


def test_training_writes_a_complete_checkpoint(trained):
    out, metrics = trained
    meta = json.loads((out / "meta.json").read_text())
    for key in ("model", "width", "dataset", "input_shape", "num_classes", "mean", "std", "split_seed", "val_hash",
                "val_accuracy", "test_accuracy", "command", "versions"):  # fmt: skip
        assert key in meta
    assert meta["test_accuracy"] == metrics["test_accuracy"] > 30  # learns far beyond 10% chance
    assert json.loads((out / "metrics.json").read_text())["val_accuracy"] == metrics["val_accuracy"]
    model, loaded_meta = checkpoint.load(out)
    assert loaded_meta == meta and not model.training
    assert all(
        v.dtype == torch.float16 for k, v in weights(out).items() if "running" not in k and v.is_floating_point()
    )


def test_same_seed_same_weights_and_resume_equals_uninterrupted(trained, tmp_path):
    out, _ = trained
    assert train(TrainConfig(**CFG), tmp_path / "a", quiet=True, stop_after=1) is None
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["epoch"] == 1
    with pytest.raises(CrossneuronError, match="--resume"):
        train(TrainConfig(**CFG), tmp_path / "a", quiet=True)
    was = TrainConfig(**CFG).lr
    with pytest.raises(CrossneuronError, match=f"other options .*lr was {was!r}, now 0.1\\)"):  # names what differs
        train(TrainConfig(**{**CFG, "lr": 0.1}), tmp_path / "a", quiet=True, resume=True)
    kept = (tmp_path / "a" / "config.json").read_text()
    (tmp_path / "a" / "config.json").write_text(kept[:20])  # cut short
    with pytest.raises(CrossneuronError, match="config.json is corrupt"):
        train(TrainConfig(**CFG), tmp_path / "a", quiet=True, resume=True)
    (tmp_path / "a" / "config.json").write_text(kept)
    train(TrainConfig(**CFG), tmp_path / "a", quiet=True, resume=True)
    a, b = weights(tmp_path / "a"), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_at_any_moment_then_resume_equals_uninterrupted(trained, tmp_path, cli):
    out, _ = trained
    target = tmp_path / "killed"
    args = [sys.executable, "-c", "from crossneuron.cli import main; main()", "train", "--out", str(target),
            "--quiet", "--model", CFG["model"], "--dataset", CFG["dataset"], "--width", str(CFG["width"]),
            "--epochs", "3", "--batch-size", "64", "--lr", "0.05", "--seed", "1"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (target / "train_state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.2)  # somewhere inside the second epoch, or its checkpoint writes
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    code, _, err = cli(*args[3:], "--resume")  # the same command, resumed in this process (no second torch import)
    assert code == 0, err
    a, b = weights(target), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_or_mismatched_checkpoints_are_clear(trained, tmp_path):
    out, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(CrossneuronError, match="no meta.json"):
        checkpoint.load(bad)
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(CrossneuronError, match="corrupt"):
        checkpoint.load(bad)
    meta = json.loads((out / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "width": 0.25}))
    (bad / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    with pytest.raises(CrossneuronError, match="does not match resnet18 width 0.25"):
        checkpoint.load(bad)
    for key, value, says in [("width", "0.25", "'width' must be a positive number"),
                             ("input_shape", [3, 32], "'input_shape' must be \\[C, H, W\\]"),
                             ("num_classes", 2.5, "'num_classes' must be an integer"),
                             ("split_seed", None, "'split_seed' must be an integer"),
                             ("std", [0.5, 0], "'std' must be a list of positive numbers")]:  # fmt: skip
        (bad / "meta.json").write_text(json.dumps({**meta, key: value}))
        with pytest.raises(CrossneuronError, match=says):
            checkpoint.load(bad)
    (bad / "meta.json").write_text("[1, 2]")
    with pytest.raises(CrossneuronError, match="a JSON object"):
        checkpoint.load(bad)
    (bad / "meta.json").write_text(json.dumps(meta))
    (bad / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CrossneuronError, match="missing or corrupt"):
        checkpoint.load(bad)


def test_imagenet_layout_loads_a_torchvision_state_dict(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(num_classes=7)
    ours = cn.build_model("resnet18", 7, (3, 224, 224))
    ours.load_state_dict(reference.state_dict())  # same keys and shapes: pretrained weights load
    x = torch.randn(2, 3, 224, 224)
    assert torch.allclose(ours.eval()(x), reference.eval()(x))


def test_pretrained_weights_path_with_a_state_dict_the_test_saves(tmp_path, monkeypatch):
    from test_data import _png

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(3)
    source = cn.build_model("resnet18", 1000, (3, 224, 224))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / "resnet18-f37072fd.pth")  # torch hub's cached file: no download
    model = cn.build_model("resnet18", 1000, (3, 224, 224))
    cn.models.load_pretrained(model, "resnet18", "IMAGENET1K_V1")
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values(), strict=True)
    )
    with pytest.raises(CrossneuronError, match="unknown weights 'IMAGENET9'"):
        cn.models.load_pretrained(model, "resnet18", "IMAGENET9")
    with pytest.raises(CrossneuronError, match="fits only the ImageNet layout"):
        cn.models.load_pretrained(cn.build_model("resnet18", 10, (3, 32, 32)), "resnet18", "IMAGENET1K_V1")
    root = tmp_path / "data"
    for k in range(3):  # a tiny ImageNet folder
        _png(root / "imagenet" / "train" / f"n{k}" / "a.png", (40 * k, 0, 0), (256, 256))
    _png(root / "imagenet" / "val" / "n1" / "b.png", (40, 0, 0), (256, 256))
    cfg = TrainConfig(model="resnet18", dataset="imagenet", epochs=0, val_size=1, weights="IMAGENET1K_V1", half=False)
    metrics = train(cfg, tmp_path / "ckpt", data_root=root, quiet=True)
    stored, meta = checkpoint.load(tmp_path / "ckpt")
    assert meta["weights"] == "IMAGENET1K_V1" and metrics["test_accuracy"] in (0.0, 100.0)
    assert all(
        torch.equal(a, b) for a, b in zip(stored.state_dict().values(), source.state_dict().values(), strict=True)
    )


def test_evaluate_and_baseline_cli_json(trained):
    from typer.testing import CliRunner

    from crossneuron.cli import app

    out, metrics = trained
    runner = CliRunner()
    res = runner.invoke(app, ["baseline", "--checkpoint", str(out), "--patch-size", "2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    keys = ("accuracy", "base_accuracy", "drop", "macs_saved_pct_network", "macs_saved_pct_sites",
            "oracle_pct_network", "mispredicted_rate")  # fmt: skip
    assert all(k in data for k in keys)
    assert data["base_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert data["drop"] == pytest.approx(data["base_accuracy"] - data["accuracy"])
    assert 0 < data["macs_saved_pct_network"] < data["macs_saved_pct_sites"] and data["oracle_pct_network"] > 0
    res = runner.invoke(app, ["evaluate", "--checkpoint", str(out), "--split", "val", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["base_accuracy"] == pytest.approx(metrics["val_accuracy"])
    res = runner.invoke(app, ["evaluate", "--checkpoint", str(out), "--split", "train"])
    assert res.exit_code != 0


def test_a_diverging_training_stops_with_one_line_and_saves_nothing_bad(tmp_path):
    """--lr 1e6 makes the loss non-finite within the first epoch: a clear error, no NaN checkpoint written."""
    cfg = TrainConfig(**{**CFG, "lr": 1e6, "epochs": 1})
    with pytest.raises(CrossneuronError, match="training diverged in epoch 1 .*nothing was saved"):
        train(cfg, tmp_path / "nan", quiet=True)
    assert not (tmp_path / "nan" / "model.safetensors").exists()


def test_weights_with_nan_are_refused_at_load_naming_the_tensor(trained, tmp_path):
    import shutil

    from safetensors.torch import save_file

    folder, _ = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    state = weights(copy)
    name = next(k for k in state if k.endswith("conv1.weight"))
    state[name][0].view(-1)[0] = float("nan")
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(CrossneuronError, match=f"tensor '{name}' holds NaN or Inf"):
        checkpoint.load(copy)


def test_a_finished_checkpoint_is_never_overwritten_nor_retrained_into_itself(trained, tmp_path):
    """A copy of a finished checkpoint without train_state.pt (as shipped): train refuses it, and so does
    retrain writing into its own source; every file stays byte for byte."""
    import shutil

    from crossneuron.retrain import retrain

    folder, _ = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    (copy / "train_state.pt").unlink()
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    with pytest.raises(CrossneuronError, match="already holds a checkpoint"):
        train(TrainConfig(**CFG), copy, quiet=True)
    with pytest.raises(CrossneuronError, match="source checkpoint itself"):
        retrain(copy, tmp_path / "no-result.json", out=copy, quiet=True)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


class _Payload:
    """Unpickling this calls open(path, "w"): a file appearing means code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_placed_where_state_or_weights_are_read_never_runs(trained, tmp_path):
    import pickle
    import shutil

    out, _ = trained
    marker = tmp_path / "pwned"
    copy = tmp_path / "ckpt"
    shutil.copytree(out, copy)
    (copy / "train_state.pt").write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
    with pytest.raises(CrossneuronError, match="train_state.pt is corrupt"):
        train(TrainConfig(**CFG), copy, quiet=True, resume=True)
    (copy / "model.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CrossneuronError, match="missing or corrupt"):
        checkpoint.load(copy)
    assert not marker.exists()


def test_bf16_training_passes_follow_fp32_and_resume_like_fp32(trained, tmp_path, cli):
    """--precision bf16: one step's gradients point where fp32's do (the independent reference: the same
    step in fp32), the model learns, a resumed run equals an uninterrupted one, the stored weights are
    ordinary contiguous fp16, a pre-0.18 config (no precision) resumes as fp32, and a bad value is one line."""
    import torch.nn.functional as F

    from crossneuron.models import build_model
    from crossneuron.train import autocast, memory_format

    torch.manual_seed(0)
    model = build_model("resnet18", 10, (3, 32, 32), 0.25)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))

    def grads(precision):
        model.zero_grad()
        m = model.to(memory_format=memory_format(precision))
        with autocast(precision, "cpu"):
            logits = m(x.contiguous(memory_format=memory_format(precision))).float()
        F.cross_entropy(logits, y).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g32, g16 = grads("fp32"), grads("bf16")
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert F.cosine_similarity(g32, g16, 0) > 0.95 and not torch.equal(g32, g16)  # bf16 ran, and stayed close
    bf16 = {**CFG, "epochs": 2, "precision": "bf16"}
    assert train(TrainConfig(**bf16), tmp_path / "a", quiet=True, stop_after=1) is None
    metrics = train(TrainConfig(**bf16), tmp_path / "a", quiet=True, resume=True)
    train(TrainConfig(**bf16), tmp_path / "b", quiet=True)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a) and metrics["test_accuracy"] > 30
    assert json.loads((tmp_path / "a" / "config.json").read_text())["precision"] == "bf16"
    out, _ = trained  # an older run folder's config has no precision: resuming it is fp32, as it was trained
    old = tmp_path / "old"
    assert train(TrainConfig(**CFG), old, quiet=True, stop_after=2) is None
    config = json.loads((old / "config.json").read_text())
    del config["precision"]
    (old / "config.json").write_text(json.dumps(config))
    train(TrainConfig(**CFG), old, quiet=True, resume=True)
    a, b = weights(old), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, _, err = cli("train", "--model", "resnet18", "--dataset", "synthetic", "--out", tmp_path / "x",
                       "--precision", "fp16")  # fmt: skip
    assert code != 0 and "--precision must be one of fp32, bf16, got 'fp16'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_moved_teacher_resumes_and_one_changed_in_place_does_not(trained, tmp_path):
    """Resume compares path-valued inputs by what they hold (sha256 recorded in config.json), not by
    the path: the same init and teacher at another path resume to the uninterrupted weights; another
    network put at the recorded path is refused, naming the option; a pre-0.24 config (no digests) still
    needs the same paths."""
    import shutil

    out, _ = trained
    first = tmp_path / "first"
    shutil.copytree(out, first)
    opts = {**CFG, "epochs": 2, "lr": 0.01, "distill": 0.5}
    uninterrupted = tmp_path / "u"
    train(TrainConfig(**opts, init=str(first), teacher=str(first)), uninterrupted, quiet=True)
    assert train(TrainConfig(**opts, init=str(first), teacher=str(first)), tmp_path / "a", quiet=True,
                 stop_after=1) is None  # fmt: skip
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())["input_digests"]
    assert set(recorded) == {"init", "teacher"} and recorded["init"] == recorded["teacher"]
    moved = tmp_path / "moved"
    first.rename(moved)
    train(TrainConfig(**opts, init=str(moved), teacher=str(moved)), tmp_path / "a", quiet=True, resume=True)
    a, u = weights(tmp_path / "a"), weights(uninterrupted)
    assert all(torch.equal(a[k], u[k]) for k in a)
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["init"] == str(moved)  # the chain follows it

    assert train(TrainConfig(**opts, init=str(moved), teacher=str(moved)), tmp_path / "b", quiet=True,
                 stop_after=1) is None  # fmt: skip
    shutil.copy(uninterrupted / "model.safetensors", moved / "model.safetensors")  # another network, same path
    with pytest.raises(CrossneuronError, match=f"teacher {moved} holds other contents"):
        train(TrainConfig(**opts, init=str(moved), teacher=str(moved)), tmp_path / "b", quiet=True, resume=True)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    del config["input_digests"]  # as 0.23 wrote it: only the paths are known
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CrossneuronError, match=f"init was {str(moved)!r}, now {str(first)!r}"):
        train(TrainConfig(**opts, init=str(first), teacher=str(moved)), tmp_path / "b", quiet=True, resume=True)
