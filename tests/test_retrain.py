"""Retraining with masks on a tiny model: gradients, BN statistics, records, evaluate round trip."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from crossneuron.cli import app
from crossneuron.context import open_checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.retrain import retrain
from crossneuron.runfolder import optimize
from crossneuron.search.options import SearchOptions


@pytest.fixture(scope="module")
def searched(ckpt, tmp_path_factory):
    """The shared tiny checkpoint (copied: retraining writes beside it) and a uniform-layer search on it."""
    root = tmp_path_factory.mktemp("retrain")
    shutil.copytree(ckpt, root / "ckpt")
    options = SearchOptions(modes=["uniform-layer"], patch_size=2, ones=(1, 1), gt=4, eps=[0.0, 5.0], calib=100,
                            batch_size=100)  # fmt: skip
    optimize(open_checkpoint(root / "ckpt"), options, root / "run", engine_name="fast")
    return root


def test_retrain_writes_a_checkpoint_and_before_after_numbers(searched):
    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    data = json.loads(result.read_text())
    assert data["macs_saved_pct_network"] > 0  # the masks predict something
    record = retrain(searched / "ckpt", result, epochs=1, lr=0.01, batch_size=64, quiet=True, research=True)
    out = searched / "run" / "retrain-uniform-layer-eps-5"  # where the report looks
    assert record["retrained"] == str(out.resolve()) and (out / "retrain.json").is_file()
    assert record["before"]["test"]["accuracy"] == pytest.approx(data["test_accuracy"])
    assert record["before"]["test"]["macs_saved_pct_network"] == pytest.approx(data["macs_saved_pct_network"])
    old, new = load_file(str(searched / "ckpt" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(old[k], new[k]) for k in old if "running_mean" in k)  # BN statistics trained too
    assert any(not torch.equal(old[k], new[k]) for k in old if k.endswith("conv1.weight"))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["val_hash"] == json.loads((searched / "ckpt" / "meta.json").read_text())["val_hash"]
    assert meta["masks"] == str(result.resolve()) and meta["test_accuracy"] == pytest.approx(
        record["after"]["test"]["accuracy"])  # fmt: skip
    # the new result.json reproduces with evaluate --masks on the new checkpoint
    cli = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(out), "--masks", str(out / "result.json"),
                                   "--split", "test", "--json"])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["accuracy"] == pytest.approx(record["after"]["test"]["accuracy"])
    assert (out / "search" / "summary.json").is_file() and "research" in record
    # the original masks on the retrained weights: measured, with a note that the weights differ
    cli = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(out), "--masks", str(result), "--json"])
    assert cli.exit_code == 0 and "searched on other weights" in cli.stderr


def test_retrain_refuses_masks_of_another_model(searched, tmp_path):
    result = json.loads((searched / "run" / "uniform-layer" / "eps-5" / "result.json").read_text())
    result["masks"] = {"no.such.site": {"side": 2, "pieces": []}}
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps(result))
    with pytest.raises(CrossneuronError, match="sites this model does not have"):
        retrain(searched / "ckpt", bad, tmp_path / "out", epochs=1, quiet=True)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_report_shows_the_retraining(searched, tmp_path):
    from crossneuron.report import build_report

    if not (searched / "run" / "retrain-uniform-layer-eps-5" / "retrain.json").exists():
        retrain(searched / "ckpt", searched / "run" / "uniform-layer" / "eps-5" / "result.json", epochs=1, quiet=True)
    made = build_report(searched / "run", tmp_path / "rep")
    assert "retraining" in made["figures"] and (tmp_path / "rep" / "retraining.png").stat().st_size > 1000
    assert "| uniform-layer eps 5 | 1 |" in made["table"]


def test_distill_loss_against_its_definition():
    from crossneuron.train import distill_loss

    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.tensor([0, 1, 2, 3, 0])
    T, w = 3.0, 0.7
    p_t, p_s = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()  # KL(teacher || student), per image, averaged
    ce = -torch.log_softmax(s, 1)[torch.arange(5), y].mean()
    assert distill_loss(s, t, y, w, T).item() == pytest.approx(((1 - w) * ce + w * T * T * kl).item(), rel=1e-6)
    assert distill_loss(s, t, y, 0.0, T).item() == pytest.approx(ce.item(), rel=1e-6)
    assert distill_loss(s, s, y, 1.0, T).item() == pytest.approx(0.0, abs=1e-6)


def test_retrain_with_distillation_records_it_and_bad_values_are_refused(searched, tmp_path):
    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    record = retrain(searched / "ckpt", result, out=tmp_path / "d", epochs=1, lr=0.01, batch_size=64, quiet=True,
                     distill=0.5, temperature=2.0)  # fmt: skip
    assert record["distill"] == 0.5 and json.loads((tmp_path / "d" / "config.json").read_text())["distill"] == 0.5
    retrain(searched / "ckpt", result, out=tmp_path / "p", epochs=1, lr=0.01, batch_size=64, quiet=True)
    ours, theirs = (
        load_file(str(tmp_path / "d" / "model.safetensors")),
        load_file(str(tmp_path / "p" / "model.safetensors")),
    )
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours)  # the soft targets changed the training
    for kwargs, says in ((dict(distill=1.5), "--distill must be in"), (dict(temperature=0.0), "--temperature")):
        with pytest.raises(CrossneuronError, match=says):
            retrain(searched / "ckpt", result, out=tmp_path / "x", epochs=1, quiet=True, **kwargs)
    from crossneuron.train import TrainConfig

    with pytest.raises(CrossneuronError, match="needs --init"):
        TrainConfig(model="resnet18", dataset="synthetic", distill=0.5).check()
