"""Zero tolerance (``--zero-below``): site thresholds, engines, results and identities."""

import json

import pytest
import torch

import crossneuron as cn
from crossneuron.context import open_checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.evaluate import measure
from crossneuron.result import attach_result, load_result, result_thresholds
from crossneuron.runfolder import calibration, optimize
from crossneuron.search.options import SearchOptions
from crossneuron.splits import normalise
from crossneuron.thresholds import apply_thresholds, check_zero_below, site_thresholds

from conftest import OPTIONS
from reference import run_capturing


def _calib(ckpt, images=100):
    ctx = open_checkpoint(ckpt)
    x, y, _ = calibration(ctx, images, 0)
    return ctx, normalise(x, ctx.spec), y


def test_site_thresholds_are_the_fraction_of_each_sites_mean_positive_value(ckpt):
    ctx, x, _ = _calib(ckpt)
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    got = site_thresholds(net, x, 0.3, batch_size=37)  # batching does not matter
    acts = run_capturing(net, x)  # no prediction anywhere: the masks are all true
    for s in net.sites:
        a = acts[s.index].double()
        want = 0.3 * float(a[a > 0].mean())
        assert got[s.index] == pytest.approx(want, rel=1e-5) and got[s.index] > 0
    assert all(net.spatial(s).threshold == 0 for s in net.sites)  # computing them sets nothing
    apply_thresholds(net, got)
    assert net.thresholds() == {s.name: got[s.index] for s in net.sites}


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 11.0, True])
def test_a_bad_fraction_is_one_clear_error(bad):
    with pytest.raises(CrossneuronError, match="--zero-below must be"):
        check_zero_below(bad)


def test_the_fast_and_batched_engines_equal_naive_with_thresholds(ckpt):
    from crossneuron.search.batched import BatchedEngine
    from crossneuron.search.engine import NaiveEngine
    from crossneuron.search.fast import FastEngine

    ctx, x, y = _calib(ckpt, 200)
    engines = []
    for kind in (NaiveEngine, FastEngine, BatchedEngine):
        net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
        apply_thresholds(net, site_thresholds(net, x, 0.5))
        engines.append(kind(net, x, y, 50))
    naive, fast, batched = engines
    exact = cn.attach(ctx.model, ctx.spec.input_shape, 2)  # the same masks with no threshold
    plain = NaiveEngine(exact, x, y, 50)
    g = torch.Generator().manual_seed(3)
    more = 0
    singles = []
    for density in (0.9, 0.6, 0.3):
        masks = {s.index: torch.rand(naive.net.spatial(s).mask.shape, generator=g) < density for s in naive.net.sites}
        a, b = naive.evaluate(masks), fast.evaluate(masks)
        assert (a.correct, a.macs_saved, a.mispredicted, a.lost) == (b.correct, b.macs_saved, b.mispredicted, b.lost)
        more += a.macs_saved > plain.evaluate(masks).macs_saved
        singles += [{k: m} for k, m in list(masks.items())[:3]]
    assert more == 3  # the threshold predicts more patches than exact zeros do
    for masks, r in zip(singles, batched.evaluate_many(singles), strict=True):
        a = naive.evaluate(masks)
        assert (a.correct, a.macs_saved, a.mispredicted, a.lost) == (r.correct, r.macs_saved, r.mispredicted, r.lost)


@pytest.fixture(scope="module")
def tolerant_run(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("tolerant") / "run"
    options = SearchOptions(modes=["uniform-layer"], **{**OPTIONS, "eps": [1.0, 5.0]}, zero_below=0.3)
    ctx = open_checkpoint(ckpt)
    return ctx, options, out, optimize(ctx, options, out, engine_name="fast")


def test_results_carry_the_thresholds_and_reproduce_on_the_test_split(tolerant_run):
    ctx, options, out, _ = tolerant_run
    _, x, _ = _calib(ctx.path, options.calib)
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    want = {s.name: t for s, t in zip(net.sites, site_thresholds(net, x, 0.3).values(), strict=True)}
    x_test, y_test = ctx.data("test")
    saved = 0.0
    for eps in (1.0, 5.0):
        path = out / "uniform-layer" / f"eps-{eps:g}" / "result.json"
        result = load_result(path)
        assert result.options["zero_below"] == 0.3
        assert result_thresholds(result) == want  # every site's, exactly as on the calibration images
        again = measure(attach_result(ctx.model, ctx.spec.input_shape, result), ctx.spec, x_test, y_test, None)
        assert (again.accuracy, again.macs_saved_pct_network) == (result.test_accuracy, result.macs_saved_pct_network)
        saved = max(saved, result.macs_saved_pct_network)
        masks = path.parent / "masks.safetensors"
        from safetensors import safe_open

        with safe_open(str(masks), "pt") as f:
            assert json.loads(f.metadata()["thresholds"]) == want
    assert saved > 0


def test_zero_below_is_part_of_the_identity_only_when_set():
    assert "zero_below" not in SearchOptions().identity()  # run folders before 0.14 keep theirs (and resume)
    assert SearchOptions(zero_below=0.25).identity()["zero_below"] == 0.25


def test_the_report_table_says_the_rule_changed(tolerant_run):
    from crossneuron.report.load import load_run
    from crossneuron.report.tables import markdown

    _, _, out, _ = tolerant_run
    assert "Zero tolerance (--zero-below 0.3)" in markdown(load_run(out))
