"""The one-call Python search (``crossneuron.optimize``) on a model and tensors, against the CLI."""

import json
import sqlite3

import pytest
import torch

import crossneuron as cn
from crossneuron.context import open_checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.splits import normalise

ARGS = dict(eps=[0.0, 1.0], mode="uniform-layer", calib=100, patch_size=2, ones=(1, 1), gt=4.0)


def records(run):
    with sqlite3.connect(run / "records.sqlite") as db:
        return sorted(db.execute("select key, correct, images, macs_saved, mispredicted, lost from evals"))


def tensors(ctx):
    (xv, yv), (xt, yt) = ctx.data("val"), ctx.data("test")
    return (normalise(xv, ctx.spec), yv), (normalise(xt, ctx.spec), yt)


def test_python_call_gives_the_cli_records_and_results_resumes_and_refuses_other_weights(ckpt, tmp_path, cli):
    code, _, err = cli("optimize", "--checkpoint", str(ckpt), "--out", str(tmp_path / "cli"), "--mode", "uniform-layer",
                       "--patch-size", "2", "--ones", "1-1", "--gt", "4", "--eps", "0,1", "--calib", "100",
                       "--engine", "fast", "--quiet")  # fmt: skip
    assert code == 0, err
    ctx = open_checkpoint(ckpt)
    val, test = tensors(ctx)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*test), batch_size=64)  # batches work too
    summary = cn.optimize(ctx.model, val=val, test=loader, out=tmp_path / "py", **ARGS)
    assert records(tmp_path / "py") == records(tmp_path / "cli")
    assert len(records(tmp_path / "py")) > 10
    for e in ("0", "1"):
        ours, theirs = (json.loads((tmp_path / r / "uniform-layer" / f"eps-{e}" / "result.json").read_text())
                        for r in ("py", "cli"))  # fmt: skip
        for key in ("calib_drop", "check_drop", "test_drop", "macs_saved_pct_network", "oracle_pct_network", "masks"):
            assert ours[key] == theirs[key], key
    again = cn.optimize(ctx.model, val=val, test=test, out=tmp_path / "py", **ARGS)  # resumed: nothing new
    assert again["evaluations"] == summary["evaluations"] and again["modes"]["uniform-layer"]["eps"] == \
        summary["modes"]["uniform-layer"]["eps"]  # fmt: skip
    other = open_checkpoint(ckpt).model
    with torch.no_grad():
        next(other.parameters()).mul_(1.5)
    with pytest.raises(CrossneuronError, match="weights_hash"):
        cn.optimize(other, val=val, test=test, out=tmp_path / "py", **ARGS)
    assert cli("report", str(tmp_path / "py"))[0] == 0  # the report reads a Python run like any other


def test_python_call_bad_inputs_are_one_clear_error(ckpt, tmp_path):
    ctx = open_checkpoint(ckpt)
    xv, yv = ctx.data("val")
    val, test = tensors(ctx)
    with pytest.raises(CrossneuronError, match="images must be float"):
        cn.optimize(ctx.model, val=(xv, yv), test=test, out=tmp_path / "a")  # uint8: not normalised
    with pytest.raises(CrossneuronError, match="labels must be integer class indices, one per image"):
        cn.optimize(ctx.model, val=(val[0], val[1][:-1]), test=test, out=tmp_path / "b")
    with pytest.raises(CrossneuronError, match="unknown search option"):
        cn.optimize(ctx.model, val=val, test=test, out=tmp_path / "c", patchsize=3)
    with pytest.raises(CrossneuronError, match="must be \\(images, labels\\) tensors or batches"):
        cn.optimize(ctx.model, val=42, test=test, out=tmp_path / "d")
    assert not any((tmp_path / n).exists() for n in "abcd")  # nothing written


def test_a_large_enough_val_gets_1000_verify_images_by_default(ckpt, tmp_path):
    ctx = open_checkpoint(ckpt)
    (xv, yv), (xt, yt) = tensors(ctx)
    val = (xv.repeat(7, 1, 1, 1), yv.repeat(7))  # 2,100 images: 50 calibration + 1,000 verify + 1,000 check fit
    test = (xt[:200], yt[:200])
    args = {**ARGS, "calib": 50, "eps": [1.0]}
    default = cn.optimize(ctx.model, val=val, test=test, out=tmp_path / "default", **args)
    none = cn.optimize(ctx.model, val=val, test=test, out=tmp_path / "none", verify=0, **args)
    assert default["verify_images"] == 1000 and none["verify_images"] == 0
    assert default["check_images"] == none["check_images"] == 1000
    ours, plain = (json.loads((tmp_path / r / "uniform-layer" / "eps-1" / "result.json").read_text())
                   for r in ("default", "none"))  # fmt: skip
    assert ours["verify"]["images"] == 1000 and ours["options"]["verify"] == 1000
    assert "verify" not in plain and "verify" not in plain["options"]
    assert ours["check_hash"] == plain["check_hash"]  # the same check images with or without verification
    assert ours["calib_macs_saved_pct_network"] <= plain["calib_macs_saved_pct_network"]
