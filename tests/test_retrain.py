"""Retraining with masks on a tiny model: gradients, BN statistics, records, evaluate round trip."""

import json
import math
import shutil
from pathlib import Path

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
    assert "| uniform-layer eps 5 | 1 ep |" in made["table"]


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


def test_order_seed_changes_the_order_not_the_split(searched, tmp_path):
    """--order-seed equal to the checkpoint's split seed gives the default's weights (it is the default); another
    changes the weights but measures on the same calibration and check images; a resume with another is refused."""
    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    split_seed = json.loads((searched / "ckpt" / "meta.json").read_text())["split_seed"]
    common = dict(epochs=1, lr=0.01, batch_size=64, quiet=True)
    runs = {name: retrain(searched / "ckpt", result, out=tmp_path / name, order_seed=seed, **common)
            for name, seed in (("plain", None), ("same", split_seed), ("other", split_seed + 7))}  # fmt: skip
    weights = {k: load_file(str(tmp_path / k / "model.safetensors")) for k in runs}
    assert all(torch.equal(weights["plain"][k], weights["same"][k]) for k in weights["plain"])
    assert any(not torch.equal(weights["plain"][k], weights["other"][k]) for k in weights["plain"])
    assert runs["other"]["order_seed"] == split_seed + 7 and runs["plain"]["order_seed"] is None
    metas = [json.loads((d / "meta.json").read_text()) for d in (searched / "ckpt", tmp_path / "other")]
    assert metas[0]["val_hash"] == metas[1]["val_hash"] and metas[1]["split_seed"] == split_seed  # the same split
    with pytest.raises(CrossneuronError, match="order_seed was"):
        retrain(searched / "ckpt", result, out=tmp_path / "other", order_seed=split_seed, resume=True, **common)


def test_teacher_is_the_network_distilled_from(searched, tmp_path):
    """--teacher naming a copy of the source gives the same weights as no --teacher (the source is the
    default teacher); another network as teacher changes them; bad teachers are refused."""
    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    common = dict(epochs=1, lr=0.01, batch_size=64, quiet=True, distill=1.0)
    plain = retrain(searched / "ckpt", result, out=tmp_path / "plain", **common)
    shutil.copytree(searched / "ckpt", tmp_path / "copy", ignore=shutil.ignore_patterns("retrain*", ".lock"))
    named = retrain(searched / "ckpt", result, out=tmp_path / "named", teacher=tmp_path / "copy", **common)
    assert plain["teacher"] is None and named["teacher"] == str((tmp_path / "copy").resolve())
    weights = {k: load_file(str(tmp_path / k / "model.safetensors")) for k in ("plain", "named")}
    assert all(torch.equal(weights["plain"][k], weights["named"][k]) for k in weights["plain"])
    retrain(searched / "ckpt", result, out=tmp_path / "other", teacher=tmp_path / "plain", **common)
    theirs = load_file(str(tmp_path / "other" / "model.safetensors"))
    assert any(not torch.equal(weights["plain"][k], theirs[k]) for k in theirs)
    with pytest.raises(CrossneuronError, match="only distilled from with --distill"):
        retrain(searched / "ckpt", result, out=tmp_path / "x", epochs=1, quiet=True, teacher=tmp_path / "copy")
    meta = json.loads((tmp_path / "copy" / "meta.json").read_text())
    (tmp_path / "copy" / "meta.json").write_text(json.dumps({**meta, "dataset": "mnist"}))
    with pytest.raises(CrossneuronError, match="distil from a checkpoint of the same data"):
        retrain(searched / "ckpt", result, out=tmp_path / "y", teacher=tmp_path / "copy", **common)
    assert not (tmp_path / "y").exists()  # refused before any work


def _penalty_loop(x, mask, p, macs, slack):
    """The predictability term of one site by explicit loops over images, channels and patches, and its
    gradient with the gate held constant: w_P * gate_P at each computed position of patch P."""
    n, c, h, w = x.shape
    total, grad = 0.0, torch.zeros_like(x)
    positive = x[x > 0]
    scale = slack * float(positive.mean()) if slack > 0 else None
    for b in range(n):
        for ch in range(c):
            for i0 in range(0, mask.shape[1], p):
                for j0 in range(0, mask.shape[2], p):
                    cells = [(i, j) for i in range(i0, i0 + p) for j in range(j0, j0 + p) if i < h and j < w]
                    kept = sum(float(x[b, ch, i, j]) for i, j in cells if mask[ch, i, j])
                    rest = sum(float(x[b, ch, i, j]) for i, j in cells if not mask[ch, i, j])
                    saved = sum(1 for i, j in cells if not mask[ch, i, j]) * macs[ch]
                    gate = (1.0 if rest == 0 else 0.0) if scale is None else math.exp(-rest / scale)
                    total += saved * gate * kept
                    for i, j in cells:
                        if mask[ch, i, j]:
                            grad[b, ch, i, j] = saved * gate
    return total, grad


def _term_mask(c, h, w, p, g, uniform):
    """Random masks, or one pattern for every channel and patch (uniform-layer: each sub-grid computed or
    predicted whole, the term's short cuts)."""
    from crossneuron.spatial import padded_size

    hp, wp = padded_size(h, p), padded_size(w, p)
    if not uniform:
        return torch.rand(c, hp, wp, generator=g) < 0.4
    pattern = torch.zeros(p, p, dtype=torch.bool)
    pattern[0, p - 1] = pattern[p - 1, 0] = True
    return pattern.repeat(hp // p, wp // p)[None].expand(c, -1, -1).clone()


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("slack", [0.0, 0.5])
@pytest.mark.parametrize("p,h,w", [(2, 6, 5), (3, 7, 7)])
def test_predictability_term_and_its_gradient_against_a_loop(slack, p, h, w, uniform):
    from crossneuron.predictability import patch_penalty

    g = torch.Generator().manual_seed(p + h)
    c = 3
    x = torch.rand(2, c, h, w, generator=g, dtype=torch.float64)
    x[torch.rand(2, c, h, w, generator=g) < 0.6] = 0  # many patches whose rest is exactly zero
    mask = _term_mask(c, h, w, p, g, uniform)
    macs = torch.tensor([5, 7, 0])
    x.requires_grad_(True)
    value = patch_penalty(x, mask, p, macs, slack)
    total, expect = _penalty_loop(x.detach(), mask, p, macs.tolist(), slack)
    assert value.item() == pytest.approx(total, rel=1e-9) and total > 0
    (grad,) = torch.autograd.grad(2.5 * value, [x])  # an upstream gradient other than 1 (the term's weight)
    torch.testing.assert_close(grad, 2.5 * expect)
    assert torch.all(grad[:, ~mask[:, :h, :w]] == 0)  # the predicted positions are never pushed
    if slack == 0:  # hard gate, linear in the computed positions: a finite difference agrees
        step = torch.zeros_like(x)
        step[expect > 0] = 1e-3
        moved, _ = _penalty_loop(x.detach() + step, mask, p, macs.tolist(), slack)
        assert moved - total == pytest.approx(float((expect * step).sum()), rel=1e-6)


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("p,h,w", [(2, 6, 5), (3, 7, 7)])
def test_predictability_term_in_bf16_channels_last_against_the_loop(p, h, w, uniform):
    # bf16 training's layout: the gradient is the loop's coefficients rounded to bf16, in channels_last; the
    # value within bf16's rounding (8 significant bits) of the float64 loop
    from crossneuron.predictability import patch_penalty

    g = torch.Generator().manual_seed(p * h)
    c = 4
    x = torch.rand(2, c, h, w, generator=g)
    x[torch.rand(2, c, h, w, generator=g) < 0.6] = 0
    x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    mask = _term_mask(c, h, w, p, g, uniform)
    macs = torch.tensor([5, 7, 0, 576])
    value = patch_penalty(x, mask, p, macs)
    total, expect = _penalty_loop(x.detach().double(), mask, p, macs.tolist(), 0.0)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(total, rel=2**-7) and total > 0
    (grad,) = torch.autograd.grad(value, [x])
    assert grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(grad, expect.to(torch.bfloat16))


def test_retrain_with_the_predictability_term_predicts_more_patches(searched, tmp_path):
    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    plain = retrain(searched / "ckpt", result, out=tmp_path / "plain", epochs=1, lr=0.01, batch_size=64, quiet=True)
    pushed = retrain(searched / "ckpt", result, out=tmp_path / "pushed", epochs=1, lr=0.01, batch_size=64,
                     quiet=True, predictability=5.0, warmup=0.5)  # fmt: skip
    config = json.loads((tmp_path / "pushed" / "config.json").read_text())
    assert (config["predictability"], config["warmup"], pushed["predictability"]) == (5.0, 0.5, 5.0)
    saved = [r["after"]["test"]["macs_saved_pct_network"] for r in (plain, pushed)]
    assert saved[1] > saved[0]  # the same masks predict more once the network learned to put zeros there
    for kwargs, says in ((dict(predictability=-1.0), "--predictability and --slack"),
                         (dict(warmup=1.0), "--warmup must be")):  # fmt: skip
        with pytest.raises(CrossneuronError, match=says):
            retrain(searched / "ckpt", result, out=tmp_path / "x", epochs=1, quiet=True, **kwargs)


def test_warmup_then_cosine_by_hand():
    from crossneuron.train import lr_factor

    f = lr_factor(10, 4)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(7) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert lr_factor(8)(4) == pytest.approx(0.5)


def test_rounds_hold_the_budget_against_the_original_and_resume_to_the_same_result(searched, tmp_path):
    from crossneuron.retrain import rounds

    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    original = json.loads(result.read_text())
    out = tmp_path / "rounds"
    summary = rounds(searched / "ckpt", result, 2, out=out, epochs=1, lr=0.01, batch_size=64, distill=0.5)
    first, second = summary["rounds"]
    assert first["masks_in"] == str(result.resolve()) and second["masks_in"] == first["masks_out"]
    assert second["checkpoint"] == str((out / "round-2").resolve())
    teachers = [json.loads((out / f"round-{k}" / "config.json").read_text())["teacher"] for k in (1, 2)]
    assert teachers == [None, str((searched / "ckpt").resolve())]  # round 2 distils from the original too
    for r in (first, second):  # epsilon_k = eps - what the round's network lost without prediction, >= 0
        lost = original["calib_base_accuracy"] - r["retrained"]["calib"]["no_prediction_accuracy"]
        assert r["eps_searched"] == pytest.approx(max(0.0, round(5.0 - lost, 2)))
        assert r["searched"]["drop_vs_original"] == pytest.approx(
            original["test_base_accuracy"] - r["searched"]["accuracy"])  # fmt: skip
        assert Path(r["masks_out"]).is_file()
        kept = {"searched": r["searched"], "retrained": r["retrained"]["test"]}[r["kept"]]  # the masks handed on
        assert r["chosen"]["accuracy"] == kept["accuracy"]
        folder = Path(r["checkpoint"])
        found = folder / "search" / "uniform-layer" / f"eps-{r['eps_searched']:g}" / "result.json"
        assert Path(r["masks_out"]) == (folder / "result.json" if r["kept"] == "retrained" else found)
    # evaluate --masks reproduces the masks the last round handed on
    cli = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(out / "round-2"), "--masks",
                                   second["masks_out"], "--split", "test", "--json"])  # fmt: skip
    assert cli.exit_code == 0 and json.loads(cli.output)["accuracy"] == pytest.approx(second["chosen"]["accuracy"])
    # killed before round 2 was written down: the rerun resumes its training and search, same numbers
    kept = (out / "round-1" / "round.json").stat().st_mtime_ns
    (out / "round-2" / "round.json").unlink()
    again = rounds(searched / "ckpt", result, 2, out=out, epochs=1, lr=0.01, batch_size=64, distill=0.5)
    assert (out / "round-1" / "round.json").stat().st_mtime_ns == kept  # a finished round is not run again
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert drop(again["rounds"][1]) == drop(second)
    with pytest.raises(CrossneuronError, match="--rounds must be"):
        rounds(searched / "ckpt", result, 0, out=tmp_path / "x")
    # the CLI on the finished folder prints every round; the report plots and tabulates them
    cli = CliRunner().invoke(app, ["retrain", "--checkpoint", str(searched / "ckpt"), "--masks", str(result),
                                   "--out", str(out), "--rounds", "2", "--epochs", "1", "--lr", "0.01",
                                   "--batch-size", "64", "--distill", "0.5"])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert f"round 2: searched at eps {second['eps_searched']:g}: {second['searched']['macs_saved_pct_network']:.2f}%" \
        in cli.output  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(searched / "run", run, ignore=shutil.ignore_patterns("retrain*"))
    shutil.copytree(out, run / "retrain-uniform-layer-eps-5-rounds")
    from crossneuron.report import figures, load_run, markdown  # the parts that show rounds (not a whole report)

    loaded = load_run(run)
    fig = figures.strategies(loaded)
    assert fig is not None and len(fig.axes[0].lines) >= 2  # the rounds' line and the oracle
    assert f"| 2 | {second['eps_searched']:g} | {second['chosen']['accuracy']:.2f} |" in markdown(loaded)


def test_a_round_keeps_the_better_masks_judged_on_calibration_images(searched, tmp_path):
    """keep_better by hand: of the new search's masks and the retrained ones, those within epsilon of the
    original's calibration accuracy that save more calibration MACs; the search's on a tie or when neither is."""
    import dataclasses

    from crossneuron.result import load_result, write_result
    from crossneuron.retrain import keep_better

    original = load_result(searched / "run" / "uniform-layer" / "eps-5" / "result.json")
    base = original.calib_base_accuracy

    def pair(searched_drop, searched_saved, retrained_drop, retrained_saved):
        paths = []
        for name, drop, saved in (("s", searched_drop, searched_saved), ("r", retrained_drop, retrained_saved)):
            paths.append(tmp_path / f"{name}.json")
            write_result(paths[-1], dataclasses.replace(original, calib_accuracy=base - drop,
                                                        calib_macs_saved_pct_network=saved))  # fmt: skip
        return keep_better(original, *paths)

    assert pair(1.0, 10.0, 2.0, 12.0)[0] == "retrained"  # both within 5: more saved
    assert pair(1.0, 12.0, 2.0, 10.0)[0] == "searched"
    assert pair(1.0, 10.0, 2.0, 10.0)[0] == "searched"  # a tie
    assert pair(1.0, 10.0, 5.5, 30.0)[0] == "searched"  # the retrained ones lose too much
    assert pair(6.0, 10.0, 4.0, 3.0) == ("retrained", tmp_path / "r.json")
    assert pair(6.0, 10.0, 7.0, 30.0)[0] == "searched"  # neither: the search's


def test_bf16_retraining_with_every_term_records_it_and_reproduces(searched, tmp_path):
    """`retrain --precision bf16` with distillation and the predictability term (its sums kept in fp32):
    quiet, it logs one line per epoch; the record and the report's strategy say bf16, the retrained
    weights differ from fp32's, and `evaluate --masks` (fp32) reproduces the measured accuracy."""
    from crossneuron.report.load import strategy

    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    args = ["retrain", "--checkpoint", str(searched / "ckpt"), "--masks", str(result), "--epochs", "1", "--lr",
            "0.01", "--batch-size", "64", "--distill", "0.5", "--predictability", "5", "--quiet", "--json"]
    for precision in ("bf16", "fp32"):
        cli = CliRunner().invoke(app, [*args, "--out", str(tmp_path / precision), "--precision", precision])
        assert cli.exit_code == 0, cli.output
        assert "epoch 1/1: loss" in cli.stderr  # quiet: one line per epoch on stderr, the JSON alone on stdout
        assert json.loads(cli.stdout)["precision"] == precision
    record = json.loads((tmp_path / "bf16" / "retrain.json").read_text())
    assert record["precision"] == "bf16" and "bf16" in strategy(record)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    ours, theirs = (load_file(str(tmp_path / p / "model.safetensors")) for p in ("bf16", "fp32"))
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(torch.isfinite(v.float()).all() for v in ours.values())
    cli = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "bf16"), "--masks",
                                   str(tmp_path / "bf16" / "result.json"), "--split", "test", "--json"])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["accuracy"] == pytest.approx(record["after"]["test"]["accuracy"])


def test_a_retraining_of_a_retrained_network_measures_drops_against_the_original(searched, tmp_path):
    """Chains (0.20): retraining a retrained network with its result.json keeps the *original* model's
    no-prediction accuracies as the base, checked against a plain count on the original; a chain whose
    first link is gone ends at the first retrained network, and the record says so."""
    from crossneuron.evaluate import correct_count
    from crossneuron.result import load_result
    from crossneuron.retrain import chain_original

    result = searched / "run" / "uniform-layer" / "eps-5" / "result.json"
    shutil.copytree(searched / "ckpt", tmp_path / "orig")
    first = retrain(tmp_path / "orig", result, out=tmp_path / "r1", epochs=1, lr=0.01, batch_size=64, quiet=True)
    second = retrain(tmp_path / "r1", tmp_path / "r1" / "result.json", out=tmp_path / "r2", epochs=1, lr=0.01,
                     batch_size=64, quiet=True)  # fmt: skip
    orig = open_checkpoint(tmp_path / "orig")
    x, y = orig.data("test")
    by_hand = 100.0 * correct_count(orig.model, x, y, orig.spec) / len(y)
    assert chain_original(tmp_path / "r2") == (tmp_path / "orig").resolve() == Path(second["original"])
    for record, folder in ((first, "r1"), (second, "r2")):
        assert record["base_accuracy"] == pytest.approx(by_hand)
        r = load_result(tmp_path / folder / "result.json")
        assert r.test_base_accuracy == pytest.approx(by_hand)
        assert r.test_drop == pytest.approx(by_hand - record["after"]["test"]["accuracy"])
        assert r.calib_drop == pytest.approx(r.calib_base_accuracy - r.calib_accuracy)
    # the second's calibration base is the original's too (not r1's own accuracy without prediction)
    assert load_result(tmp_path / "r2" / "result.json").calib_base_accuracy == pytest.approx(
        load_result(result).calib_base_accuracy)  # fmt: skip
    # `evaluate --masks` on r2 reports its drop against the original too (a plain `evaluate` of the original
    # itself has no original to name)
    cli = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "r2"), "--masks",
                                   str(tmp_path / "r2" / "result.json"), "--split", "test", "--json"])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    shown = json.loads(cli.stdout)
    assert shown["accuracy"] == pytest.approx(second["after"]["test"]["accuracy"])
    assert shown["original_accuracy"] == pytest.approx(by_hand)
    assert shown["drop_vs_original"] == pytest.approx(by_hand - shown["accuracy"])
    assert Path(shown["original"]) == (tmp_path / "orig").resolve()
    cli = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "orig"), "--json"])
    assert cli.exit_code == 0 and "original" not in json.loads(cli.stdout)
    shutil.rmtree(tmp_path / "orig")  # the chain's first link gone: it ends at r1
    assert chain_original(tmp_path / "r2") == (tmp_path / "r1").resolve()
    cli = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "r2"), "--masks",
                                   str(tmp_path / "r2" / "result.json")])  # fmt: skip
    assert cli.exit_code == 0 and "itself retrained" in cli.stdout and str((tmp_path / "r1").resolve()) in cli.stdout
    assert chain_original(searched / "ckpt") == (searched / "ckpt").resolve()
