"""``--verify``: the chosen masks keep the budget on val images the search never evaluated too."""

import numpy as np
import pytest

import crossneuron as cn
from crossneuron.context import open_checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.result import load_result, result_masks
from crossneuron.runfolder import _val_order, calibration, check_images, optimize, verify_images
from crossneuron.search.budget import get_budget
from crossneuron.search.engine import NaiveEngine
from crossneuron.search.options import SearchOptions
from crossneuron.search.quantize import Step, pick
from crossneuron.search.records import EvalResult
from crossneuron.splits import normalise

from conftest import OPTIONS


def test_pick_asks_the_rule_on_the_held_records_too():
    base = EvalResult(90, 100, 0, 0, lost=0)
    steps = [Step(0, None, (), EvalResult(90, 100, 0, 0, lost=0)),
             Step(1, None, (), EvalResult(90, 100, 50, 0, lost=0)),
             Step(2, None, (), EvalResult(89, 100, 30, 0, lost=1))]  # fmt: skip
    rule = get_budget("flips")
    assert pick(steps, base, 1.0, rule).step == 1
    held_base = EvalResult(80, 100, 0, 0, lost=0)
    held = (held_base, {0: held_base, 1: EvalResult(78, 100, 50, 0, lost=2), 2: EvalResult(80, 100, 30, 0, lost=1)})
    assert pick(steps, base, 1.0, rule, held).step == 2  # step 1 loses 2 of the held images: over 1 point
    assert pick(steps, base, 0.0, rule, held).step == 0


def test_verify_images_sit_between_calibration_and_check(ckpt):
    ctx = open_checkpoint(ckpt)
    n = len(ctx.split.val)
    order = _val_order(n, 3)
    *_, h = verify_images(ctx, 20, 30, 3)
    assert h == verify_images(ctx, 20, 30, 3)[2] != verify_images(ctx, 20, 30, 4)[2]  # stable by seed
    calib = set(order[:20].tolist())
    verify = set(order[20:50].tolist())
    check = set(order[n - 40 :].tolist())
    assert len(verify) == 30 and not verify & calib and not verify & check
    xv, yv, _ = verify_images(ctx, 20, 30, 3)
    x, y = ctx.data("val")
    assert np.array_equal(yv.numpy(), y[np.sort(list(verify))].numpy())
    assert check_images(ctx, 50, 3, 40)[2] == check_images(ctx, 20, 3, 40)[2]  # the same check images
    assert calibration(ctx, 20, 3)[1].shape == (20,)


def test_a_verified_search_keeps_the_budget_on_the_verify_images(ckpt, cli, tmp_path):
    ctx = open_checkpoint(ckpt)
    verify = 60
    common = {**OPTIONS, "optimizer": "milp", "budget": "flips"}
    optimize(ctx, SearchOptions(modes=["uniform-layer"], **common), tmp_path / "plain", check=40)
    # the same options on the command line, with verification (conftest.OPTIONS spelled out)
    code, out, err = cli("optimize", "--checkpoint", ckpt, "--out", tmp_path / "verified", "--reuse",
                         tmp_path / "plain", "--verify", verify, "--check", "40", "--calib", OPTIONS["calib"],
                         "--ones", "1-1", "--gt", OPTIONS["gt"], "--eps", ",".join(f"{e:g}" for e in OPTIONS["eps"]),
                         "--batch-size", OPTIONS["batch_size"], "--budget", "flips", "--optimizer", "milp")  # fmt: skip
    assert code == 0, err
    assert f"{verify} verify" in out and "verify drop" in out
    xv, yv, h = verify_images(ctx, OPTIONS["calib"], verify, 0)
    naive = NaiveEngine(cn.attach(ctx.model, ctx.spec.input_shape, 2), normalise(xv, ctx.spec), yv, 50)
    rule = get_budget("flips")
    for eps in OPTIONS["eps"]:
        plain = load_result(tmp_path / "plain" / "uniform-layer" / f"eps-{eps:g}" / "result.json")
        data = load_result(tmp_path / "verified" / "uniform-layer" / f"eps-{eps:g}" / "result.json")
        masks = {k: m for k, m in result_masks(naive.net, data).items() if m is not None}
        exact = naive.evaluate(masks)  # the chosen masks on the verify images, by the naive engine
        assert rule.within(exact, naive.base, eps)
        assert data.verify["hash"] == h and data.verify["images"] == verify and data.verify["lost"] == exact.lost
        assert data.verify["drop"] == pytest.approx(100 * (naive.base.correct - exact.correct) / verify)
        # the same trajectory (records reused): verification only takes candidates away
        assert [t["calib_accuracy"] for t in data.trajectory] == [t["calib_accuracy"] for t in plain.trajectory]
        assert data.calib_macs_saved_pct_network <= plain.calib_macs_saved_pct_network
        assert data.check_images == plain.check_images == 40 and data.check_hash == plain.check_hash
    assert "verify" not in plain.to_json()


def test_verify_that_does_not_fit_is_one_clear_error(ckpt):
    ctx = open_checkpoint(ckpt)
    n = len(ctx.split.val)
    for bad in (-1, n, True):
        with pytest.raises(CrossneuronError, match="--verify"):
            SearchOptions(calib=OPTIONS["calib"], verify=bad).check(n)


@pytest.mark.parametrize(("val", "calib", "expected"),
                         [(5000, 1000, 1000), (5000, 2500, 1000), (5000, 3000, 1000), (5000, 3001, 0),
                          (5000, 4000, 0), (300, 100, 0), (2000, 1, 0), (2001, 1, 1000)])  # fmt: skip
def test_the_default_verify_images_fit_beside_calibration_and_check(val, calib, expected):
    # 1,000 verify images where val leaves 1,000 of them and 1,000 check images after calibration
    options = SearchOptions(calib=calib)
    assert options.verify is None
    options.check(val)
    assert options.verify == expected
    assert ("verify" in options.identity()) == bool(expected)
    explicit = SearchOptions(calib=calib, verify=0)  # asked for none: none, and the 0.10 identity
    explicit.check(val)
    assert explicit.verify == 0 and "verify" not in explicit.identity()


def test_a_result_without_verify_images_reads_back_without_them():
    from crossneuron.retrain import search_options

    identity = SearchOptions(verify=0).identity()
    assert "verify" not in identity
    again = search_options(identity)
    again.check(5000)
    assert again.verify == 0  # not the default: the result was searched without verify images
    assert search_options(SearchOptions(verify=1000).identity()).verify == 1000


class _RejectAll:
    """A held judge (``audit.Held``'s interface) that fails every configuration predicting anything and
    remembers what it was asked."""

    def __init__(self):
        self.base = EvalResult(60, 60, 0, 0, lost=0)
        self.asked = []

    def record(self, plans, space, macs_saved=0):
        from crossneuron.search.evaluator import config_hash

        self.asked.append(config_hash(plans))
        return EvalResult(60 - 30 * bool(plans), 60, macs_saved, 0, lost=30 * bool(plans))


def test_milp_verify_judges_each_round_that_keeps_the_calibration_budget(ckpt):
    from crossneuron.runfolder import make_engine
    from crossneuron.search.evaluator import config_hash
    from crossneuron.search.run import Search
    from crossneuron.search.store import Store

    ctx = open_checkpoint(ckpt)
    options = SearchOptions(modes=["uniform-layer"], **{**OPTIONS, "optimizer": "milp", "budget": "flips"},
                            verify=60, milp_verify=True)  # fmt: skip
    options.check(len(ctx.split.val))
    net, engine, _ = make_engine("naive", ctx, options)
    judge = _RejectAll()
    search = Search(net, engine, Store(":memory:", {"test": 1}), options, held=judge)
    result = search.run_mode("uniform-layer")
    rule, base = get_budget("flips"), search.base
    milp = [t for t in result.trajectory if t.stage == "milp"]
    kept = [t for t in milp if not t.result.cut_short and any(rule.within(t.result, base, e) for e in options.eps)
            and result.plans_by_step[t.step]]  # fmt: skip
    assert kept, "no round kept the calibration budget: nothing was judged"
    asked = set(judge.asked)
    assert {config_hash(result.plans_by_step[t.step]) for t in kept} <= asked  # each was judged on held images
    broke = {config_hash(result.plans_by_step[t.step]) for t in milp if not any(rule.within(t.result, base, e)
                                                                                 for e in options.eps)}  # fmt: skip
    assert not broke & asked  # a round that broke the calibration budget needs no held images
    held = (judge.base, {t.step: judge.record(result.plans_by_step[t.step], None) for t in result.trajectory})
    assert all(not result.plans_by_step[result.best(base, e, held)[0].step] for e in options.eps)


def test_milp_verify_needs_verify_images_and_the_milp(ckpt):
    n = len(open_checkpoint(ckpt).split.val)
    with pytest.raises(CrossneuronError, match="--milp-verify needs the milp optimiser and verify images"):
        SearchOptions(**OPTIONS, verify=0, milp_verify=True).check(n)  # conftest's OPTIONS: the layer quantizer
    with pytest.raises(CrossneuronError, match="--milp-verify needs"):
        SearchOptions(**{**OPTIONS, "optimizer": "milp"}, verify=0, milp_verify=True).check(n)
    fine = SearchOptions(**{**OPTIONS, "optimizer": "milp"}, verify=60, milp_verify=True)
    fine.check(n)
    assert fine.identity()["milp_verify"] is True and "milp_verify" not in SearchOptions(**OPTIONS).identity()
