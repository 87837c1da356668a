"""`crossneuron grow`: masks made to predict more from where they are, within a budget against the original."""

import dataclasses
import json
import shutil

import pytest

from crossneuron.context import open_checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.evaluate import correct_count, measure
from crossneuron.grow import grow, grow_to, moves, site_codes
from crossneuron.net import attach
from crossneuron.patterns import code_to_pattern
from crossneuron.result import load_result
from crossneuron.runfolder import calibration, optimize, verify_images
from crossneuron.search.options import SearchOptions


@pytest.fixture(scope="module")
def two_of_four(ckpt, tmp_path_factory):
    """A uniform-layer search restricted to 2-of-4 patterns on the shared tiny checkpoint (copied)."""
    root = tmp_path_factory.mktemp("grow")
    shutil.copytree(ckpt, root / "ckpt")
    options = SearchOptions(modes=["uniform-layer"], patch_size=2, ones=(2, 2), gt=4, eps=[3.0], calib=100,
                            batch_size=100, verify=200)  # fmt: skip
    optimize(open_checkpoint(root / "ckpt"), options, root / "run", engine_name="fast")
    return root, root / "run" / "uniform-layer" / "eps-3" / "result.json"


def test_moves_clear_one_computed_position_by_hand():
    assert moves({"a": 0b1011, "b": 0b0100, "c": 0b0110}) == [("a", 0b1010), ("a", 0b1001), ("a", 0b0011),
                                                               ("c", 0b0100), ("c", 0b0010)]  # fmt: skip
    assert moves({}) == []


def _all_at(result, code):
    masks = {name: {**entry, "pieces": [[None, None, code]]} for name, entry in result.masks.items()}
    return dataclasses.replace(result, masks=masks)


def test_grown_masks_keep_the_budget_and_no_move_is_left(two_of_four):
    """Checked independently on a fresh net: the grown masks lie inside the start's, keep the budget on the
    calibration and verify images against the original, and (brute force over every further move) none
    could still be taken; the numbers it writes are the test split's against the original."""
    root, path = two_of_four
    ctx = open_checkpoint(root / "ckpt")
    start = _all_at(load_result(path), 0b1001)  # every site on the diagonal: every site can grow
    eps = 2.0
    grown = grow(ctx, start, ctx, eps)
    before, after = site_codes(start), site_codes(grown)
    assert after.keys() == before.keys()
    assert all(after[n] and after[n] & ~before[n] == 0 for n in after)  # computed positions only removed
    assert any(after[n] != before[n] for n in after)  # and some were (the budget is loose on this model)
    assert grown.chosen_step == len(grown.trajectory) and grown.eps == eps

    x_cal, y_cal, _ = calibration(ctx, 100, 0)
    x_ver, y_ver, _ = verify_images(ctx, 100, 200, 0)
    spec = ctx.spec
    floor = [100.0 * correct_count(ctx.model, x, y, spec) / len(y) for x, y in ((x_cal, y_cal), (x_ver, y_ver))]

    def numbers(codes):  # a fresh net, masks made from the codes directly
        net = attach(ctx.model, spec.input_shape, 2)
        masks = {s.index: code_to_pattern(codes[s.name], 2) for s in net.sites if s.name in codes}
        return [measure(net, spec, x, y, masks) for x, y in ((x_cal, y_cal), (x_ver, y_ver))]

    cal, ver = numbers(after)
    assert floor[0] - cal.accuracy <= eps + 1e-9 and floor[1] - ver.accuracy <= eps + 1e-9
    assert grown.calib_accuracy == pytest.approx(cal.accuracy)
    assert grown.calib_base_accuracy == pytest.approx(floor[0]) and grown.verify["drop"] == pytest.approx(
        floor[1] - ver.accuracy)  # fmt: skip
    for name, code in moves(after):
        c, v = numbers({**after, name: code})
        takeable = (c.macs_saved_pct_network > cal.macs_saved_pct_network and floor[0] - c.accuracy <= eps + 1e-9
                    and floor[1] - v.accuracy <= eps + 1e-9)  # fmt: skip
        assert not takeable, (name, code)
    x_test, y_test = ctx.data("test")
    original_test = 100.0 * correct_count(ctx.model, x_test, y_test, spec) / len(y_test)
    assert grown.test_base_accuracy == pytest.approx(original_test)
    assert grown.test_drop == pytest.approx(grown.test_base_accuracy - grown.test_accuracy)


def test_a_larger_budget_grows_at_least_as_far_and_eps_0_keeps_the_original(two_of_four):
    root, path = two_of_four
    ctx = open_checkpoint(root / "ckpt")
    start = _all_at(load_result(path), 0b1001)
    tight, loose = grow(ctx, start, ctx, 0.0), grow(ctx, start, ctx, 100.0)
    assert loose.calib_macs_saved_pct_network >= tight.calib_macs_saved_pct_network
    assert tight.calib_drop <= 1e-9  # eps 0: not one point lost against the original on calibration
    assert loose.chosen_step >= tight.chosen_step


def test_cli_grow_writes_a_result_evaluate_reproduces_and_refuses_bad_input(two_of_four, cli, tmp_path):
    root, path = two_of_four
    start = tmp_path / "start.json"
    start.write_text(json.dumps(_all_at(load_result(path), 0b0110).to_json()))
    out = tmp_path / "g" / "result.json"
    args = ["grow", "--checkpoint", root / "ckpt", "--masks", start, "--original", root / "ckpt", "--eps", "3"]
    code, stdout, stderr = cli(*args, "--out", out)
    assert code == 0, stderr
    assert "of network MACs saved at a test drop of" in stdout and out.is_file()
    grown = load_result(out)
    code, stdout, _ = cli("evaluate", "--checkpoint", root / "ckpt", "--masks", out, "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == pytest.approx(grown.test_accuracy)
    # an existing --out is never replaced
    code, _, stderr = cli(*args, "--out", out)
    assert code != 0 and "already exists" in stderr and load_result(out) == grown
    # finer masks (one channel's own pattern) cannot grow
    finer = load_result(path)
    name = next(iter(finer.masks))
    finer.masks[name] = {**finer.masks[name], "pieces": [[0, None, 9]]}
    bad = tmp_path / "finer.json"
    bad.write_text(json.dumps(finer.to_json()))
    code, _, stderr = cli(*args[:4], bad, *args[5:], "--out", tmp_path / "h.json")
    assert code != 0 and "uniform-layer" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = cli(*args[:-1], "-1", "--out", tmp_path / "i.json")
    assert code != 0 and "--eps" in stderr and not (tmp_path / "i.json").exists()
    with pytest.raises(CrossneuronError, match="already exists"):
        grow_to(out, open_checkpoint(root / "ckpt"), grown, open_checkpoint(root / "ckpt"), 1.0)


def test_rounds_that_grow_hold_eps_against_the_original_and_resume(two_of_four, cli, tmp_path):
    """`retrain --rounds 1 --grow`: the round grows the masks it retrained with, epsilon itself against
    the original model; a rerun after round.json is lost reuses the grown result; --grow alone is refused."""
    from crossneuron.retrain import rounds

    root, path = two_of_four
    start = tmp_path / "start.json"
    start.write_text(json.dumps(_all_at(load_result(path), 0b1001).to_json()))
    out = tmp_path / "rounds"
    options = dict(epochs=1, lr=0.01, batch_size=64, grow=True)
    (r,) = rounds(root / "ckpt", start, 1, out=out, **options)["rounds"]
    grown_path = out / "round-1" / "grow" / "result.json"
    grown = load_result(grown_path)
    assert r["search"] == "grow" and r["eps_searched"] == 3.0 and grown.eps == 3.0
    assert grown.calib_base_accuracy == pytest.approx(load_result(path).calib_base_accuracy)  # the original's
    assert grown.calib_drop <= 3.0 + 1e-9
    assert all(c & ~0b1001 == 0 for c in site_codes(grown).values())
    assert r["searched"]["accuracy"] == pytest.approx(grown.test_accuracy)
    assert r["searched"]["drop_vs_original"] == pytest.approx(grown.test_drop)
    mtime = grown_path.stat().st_mtime_ns
    (out / "round-1" / "round.json").unlink()
    (again,) = rounds(root / "ckpt", start, 1, out=out, **options)["rounds"]
    assert grown_path.stat().st_mtime_ns == mtime and again["searched"] == r["searched"]
    code, _, stderr = cli("retrain", "--checkpoint", root / "ckpt", "--masks", start, "--grow", "--out", tmp_path / "x")
    assert code != 0 and "--grow works with --rounds" in stderr and not (tmp_path / "x").exists()


def test_repairs_compute_one_predicted_position_by_hand():
    from crossneuron.grow import repairs

    assert repairs({"a": 0b1011, "b": 0b1111, "c": 0b0001}, 2) == [("a", 0b1111), ("c", 0b0011), ("c", 0b0101),
                                                                   ("c", 0b1001)]  # fmt: skip
    assert repairs({"a": 0b1}, 1) == []


def test_masks_outside_the_budget_are_repaired_first_and_refused_when_no_repair_helps(two_of_four):
    """0.20: a start that loses more than eps is repaired (predicted positions computed again) until it
    keeps the budget on the calibration and verify images, checked on a fresh net; each repair raises the
    calibration accuracy; the repair stops at the first set within the budget; a network no repair can
    bring within the budget is refused in one line."""
    import torch

    root, path = two_of_four
    ctx = open_checkpoint(root / "ckpt")
    spec = ctx.spec
    x_cal, y_cal, _ = calibration(ctx, 100, 0)
    x_ver, y_ver, _ = verify_images(ctx, 100, 200, 0)
    floor = [100.0 * correct_count(ctx.model, x, y, spec) / len(y) for x, y in ((x_cal, y_cal), (x_ver, y_ver))]

    def numbers(codes):  # a fresh net; a site coded 0b1111 computes everything (no prediction)
        net = attach(ctx.model, spec.input_shape, 2)
        masks = {s.index: code_to_pattern(codes[s.name], 2) for s in net.sites if codes.get(s.name, 15) != 15}
        return [measure(net, spec, x, y, masks) for x, y in ((x_cal, y_cal), (x_ver, y_ver))]

    start = _all_at(load_result(path), 0b0001)  # one computed position of four everywhere: too much
    codes0 = site_codes(start)
    c0, v0 = numbers(codes0)
    eps = 0.0
    assert floor[0] - c0.accuracy > eps or floor[1] - v0.accuracy > eps  # the start breaks the budget
    grown = grow(ctx, start, ctx, eps)
    rows = grown.trajectory
    repaired = [r for r in rows if r["stage"] == "repair"]
    assert repaired and rows[: len(repaired)] == repaired  # repairs first, then growth
    codes, accuracy = dict(codes0), c0.accuracy
    for r in repaired:
        (name,) = r["moved"]
        assert r["pattern"] & codes[name] == codes[name] and r["pattern"] != codes[name]  # one position more
        codes[name] = r["pattern"]
        cal, ver = numbers(codes)
        assert cal.accuracy == pytest.approx(r["calib_accuracy"]) and cal.accuracy > accuracy
        accuracy = cal.accuracy
        within = floor[0] - cal.accuracy <= eps + 1e-9 and floor[1] - ver.accuracy <= eps + 1e-9
        assert within == (r is repaired[-1])  # the repair stops at the first set within the budget
    cal, ver = numbers({**{n: 15 for n in codes0}, **site_codes(grown)})  # sites left out: no prediction
    assert floor[0] - cal.accuracy <= eps + 1e-9 and floor[1] - ver.accuracy <= eps + 1e-9
    assert grown.calib_accuracy == pytest.approx(cal.accuracy)

    broken = open_checkpoint(root / "ckpt")  # the same network with its classifier turned against itself
    with torch.no_grad():
        for name, w in broken.model.named_parameters():
            if name.endswith("weight") and w.ndim == 2:
                w.neg_()
    with pytest.raises(CrossneuronError, match="no repair brings these masks within eps 0"):
        grow(broken, start, ctx, eps)
