"""The search end to end on a tiny residual model and synthetic data (naive engine)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as hst

import crossneuron as cn
from crossneuron.context import open_checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.evaluate import measure
from crossneuron.result import load_result, result_masks
from crossneuron.runfolder import calibration, check_images, optimize
from crossneuron.search.modes import MODES
from crossneuron.search.options import SearchOptions
from crossneuron.splits import normalise

from conftest import OPTIONS


def test_every_mode_writes_results_that_evaluate_reproduces(full_run):
    ctx, out, summary = full_run
    x_test, y_test = ctx.data("test")
    for mode in MODES:
        saved = []
        for eps in OPTIONS["eps"]:
            path = out / mode / f"eps-{eps:g}" / "result.json"
            keys = ("mode", "eps", "calib_accuracy", "calib_drop", "test_accuracy", "test_drop", "trajectory",
                    "macs_saved_pct_network", "macs_saved_pct_sites", "oracle_pct_network")  # fmt: skip
            assert all(key in json.loads(path.read_text()) for key in keys)
            data = load_result(path)
            assert data.calib_drop <= eps + 1e-9
            net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
            again = measure(net, ctx.spec, x_test, y_test, result_masks(net, data))
            assert again.accuracy == data.test_accuracy
            assert again.macs_saved_pct_network == data.macs_saved_pct_network
            # optimize reuses one no-prediction pass per split (evaluate.plain_pass): the same numbers
            assert again.base_accuracy == data.test_base_accuracy
            assert again.oracle_pct_network == data.oracle_pct_network
            assert list(again.per_site) == data.per_site
            assert (out / mode / f"eps-{eps:g}" / "masks.safetensors").is_file()
            saved.append(data.calib_macs_saved_pct_network)
        assert saved == sorted(saved)  # a larger budget never saves less
        assert saved[-1] > 0, mode
    assert json.loads((out / "summary.json").read_text())["evaluations"] == summary["evaluations"]


def test_records_hold_every_first_level_evaluation(full_run):
    ctx, out, _ = full_run
    db = sqlite3.connect(out / "records.sqlite")
    count = dict(db.execute("SELECT mode, COUNT(*) FROM evals WHERE stage = 'first' GROUP BY mode").fetchall())
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    sites, channels = len(net.sites), sum(s.shape[0] for s in net.sites)
    assert count["uniform-layer"] == sites * 4 and count["uniform-patch"] == channels * 4
    blocks = {16: 4, 8: 4}  # GT 4: side 8 on 16x16, side 4 on 8x8: 2x2 blocks each
    assert count["uniform-filters"] == sum(blocks[s.shape[1]] for s in net.sites) * 4
    assert count["max-granularity"] == sum(s.shape[0] * blocks[s.shape[1]] for s in net.sites) * 4
    rows = db.execute("SELECT stage, site, channel, block, pattern, correct, macs_saved, lost FROM evals "
                      "WHERE mode = 'max-granularity' AND stage = 'first' ORDER BY id LIMIT 3").fetchall()  # fmt: skip
    x, y, _ = calibration(ctx, OPTIONS["calib"], 0)
    with torch.no_grad():
        base_hit = net.eval()(normalise(x, ctx.spec)).argmax(1) == y
    for _, site, channel, block, code, correct, macs, lost in rows:  # re-evaluate by hand: same numbers
        mask = torch.ones_like(net.spatial(site).mask)
        side = 8 if net.sites[site].shape[1] == 16 else 4
        r, c = divmod(block, -(-mask.shape[2] // side))
        rows_, cols_ = slice(r * side, r * side + side), slice(c * side, c * side + side)
        tile = cn.code_to_pattern(code, 2).repeat(mask.shape[1] // 2, mask.shape[2] // 2)
        mask[channel, rows_, cols_] = tile[rows_, cols_]
        net.set_mask(site, mask)
        net.reset_stats()
        with torch.no_grad():
            hit = net.eval()(normalise(x, ctx.spec)).argmax(1) == y
        assert (int(hit.sum()), net.stats().macs_saved, int((base_hit & ~hit).sum())) == (correct, macs, lost)
        net.set_mask(site, None)


def test_permutation_patterns_are_all_a_search_evaluates_and_name_the_run(ckpt, tmp_path):
    ctx = open_checkpoint(ckpt)
    options = SearchOptions(**{**OPTIONS, "patch_size": 3, "ones": None, "eps": [1.0]}, patterns="permutations")
    summary = optimize(ctx, options, tmp_path / "perm")
    db = sqlite3.connect(tmp_path / "perm" / "records.sqlite")
    first = db.execute("SELECT site, pattern FROM evals WHERE stage = 'first'").fetchall()
    sites = len(cn.attach(ctx.model, ctx.spec.input_shape, 3).sites)
    assert sorted(first) == sorted((s, c) for s in range(sites) for c in cn.pattern_codes(3, family="permutations"))
    result = json.loads((tmp_path / "perm" / "uniform-layer" / "eps-1" / "result.json").read_text())
    assert result["options"]["patterns"] == "permutations" and summary["evaluations"] >= len(first)
    assert "patterns" not in SearchOptions(**OPTIONS).identity()  # run folders from before 0.12 keep their identity
    with pytest.raises(CrossneuronError, match="unknown pattern family 'rows'"):
        SearchOptions(**OPTIONS, patterns="rows").check()


def test_rerun_resumes_without_new_evaluations(full_run, ckpt):
    ctx, out, summary = full_run
    again = optimize(open_checkpoint(ckpt), SearchOptions(modes=list(MODES), **OPTIONS), out)
    assert again["evaluations"] == summary["evaluations"] and again["modes"].keys() == summary["modes"].keys()
    for mode in MODES:
        assert again["modes"][mode]["eps"] == summary["modes"][mode]["eps"]


def _cli(*args):
    return [sys.executable, "-c", "from crossneuron.cli import main; main()", *args]


def test_sigkill_then_resume_equals_uninterrupted(full_run, ckpt, tmp_path, cli):
    _, reference, _ = full_run
    out = tmp_path / "killed"
    modes = "uniform-layer,uniform-filters"
    args = _cli("optimize", "--checkpoint", str(ckpt), "--out", str(out), "--mode", modes, "--ones", "1-1",
                "--gt", "4", "--eps", "0,1,5", "--calib", "100", "--batch-size", "100", "--optimizer", "layer",
                "--budget", "net", "--quiet")  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "records.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if sqlite3.connect(db).execute("SELECT COUNT(*) FROM evals").fetchone()[0] > 40:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    code, _, err = cli(*args[3:])  # the same command again, in this process (no second torch import)
    assert code == 0, err
    for mode in modes.split(","):
        for eps in ("0", "1", "5"):
            a = json.loads((out / mode / f"eps-{eps}" / "result.json").read_text())
            b = json.loads((reference / mode / f"eps-{eps}" / "result.json").read_text())
            for key in ("masks", "calib_accuracy", "test_accuracy", "macs_saved_pct_network", "trajectory"):
                assert a[key] == b[key], (mode, eps, key)


def test_coupled_residual_sites_move_together(ckpt, tmp_path):
    ctx = open_checkpoint(ckpt)
    optimize(ctx, SearchOptions(modes=["uniform-layer"], couple="residual", **OPTIONS), tmp_path / "c")
    data = load_result(tmp_path / "c" / "uniform-layer" / "eps-5" / "result.json")
    moved = [t["moved"] for t in data.trajectory[1:]]
    assert ["layer1.0.relu", "layer1.0.relu@1"] in moved or ["layer2.0.relu", "layer2.0.relu@1"] in moved
    assert all(len(m) == 2 for m in moved if m[0].startswith("layer"))


def test_foreign_or_corrupt_database_and_bad_options_are_refused(full_run, ckpt, tmp_path, cli):
    ctx, out, _ = full_run
    with pytest.raises(CrossneuronError, match="belongs to another search"):
        optimize(ctx, SearchOptions(modes=list(MODES), **{**OPTIONS, "gt": 6}), out)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "records.sqlite").write_bytes(b"garbage" * 1000)
    with pytest.raises(CrossneuronError, match="not a readable search database"):
        optimize(ctx, SearchOptions(modes=["uniform-layer"], **OPTIONS), bad)
    for extra, needle in [
        (["--eps", "-1"], "epsilon must be >= 0"),
        (["--ones", "0-2"], "outside 1-3"),
        (["--gt", "-1"], "GT must be >= 0"),
        (["--mode", "uniform-everything"], "unknown mode 'uniform-everything'"),
        (["--calib", "5000"], "calibration size must be 1..300"),
        (["--eps", "nan"], "epsilon must be >= 0 and <= 100"),
        (["--eps", "0,200"], "epsilon must be >= 0 and <= 100"),
        (["--calib", "100", "--couple", "layer1.0.relu+nosuch"], "unknown site 'nosuch'"),
        (["--device", "foo"], "unknown --device 'foo'"),
        (["--calib", "100", "--refine-order", "random"], "unknown --refine-order 'random'"),
    ]:
        target = tmp_path / "refused"
        code, _, err = cli("optimize", "--checkpoint", ckpt, "--out", target, *extra)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
        assert not target.exists()  # refused before any work
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code, _, err = cli("optimize", "--checkpoint", ckpt, "--out", afile, "--calib", "100")
    lines = [line for line in err.splitlines() if line.strip()]  # (test_cli runs the real entry point)
    assert code == 2 and len(lines) == 1 and "is a file" in lines[0] and afile.read_text() == "keep me"


def _records(folder):
    db = sqlite3.connect(folder / "records.sqlite")
    query = "SELECT key, correct, images, macs_saved, mispredicted, lost, cut_short FROM evals"
    return {row[0]: row[1:] for row in db.execute(query)}


def _same(naive, fast, min_correct):
    """Equal records (correct, images, MACs, mispredictions, lost images); a record cut short is equal when
    naive's accuracy is also beyond the cut."""
    if fast[-1]:
        return naive[0] <= fast[0] and naive[0] < min_correct
    return naive[:5] == fast[:5]


@pytest.mark.parametrize("couple", ["none", "residual"])
def test_fast_engine_records_equal_naive(full_run, ckpt, tmp_path, couple):
    ctx, reference, _ = full_run
    modes = list(MODES) if couple == "none" else ["uniform-layer", "uniform-patch"]  # coupling acts on the layer step
    # the coupled run also refines: its accept/reject decisions must not depend on the engine
    options = SearchOptions(modes=modes, couple=couple, refine=couple != "none", **OPTIONS)
    if couple == "none":
        naive = _records(reference)
    else:
        optimize(ctx, options, tmp_path / "naive")
        naive = _records(tmp_path / "naive")
    summary = optimize(ctx, options, tmp_path / "fast", engine_name="fast")
    fast = _records(tmp_path / "fast")
    if options.refine:  # refine starts from the diagonal: never below it at the diagonal's calibration drop
        diagonal = summary["baseline"]["calib"]["macs_saved_pct_network"]
        assert diagonal > 0
        for info in summary["modes"].values():
            assert info["at_baseline"]["calib_macs_saved_pct_network"] >= diagonal - 1e-9
            assert info["at_baseline"]["calib_drop"] <= summary["baseline"]["calib"]["drop"] + 1e-9
        db = sqlite3.connect(tmp_path / "fast" / "records.sqlite")
        (diagonal_config,) = db.execute("SELECT config FROM evals WHERE stage = 'baseline'").fetchone()
        seeded = db.execute("SELECT DISTINCT mode FROM evals WHERE stage = 'refine' AND config = ?", (diagonal_config,))
        assert {m for (m,) in seeded} == set(modes)  # every mode's refine began with the diagonal
    assert fast.keys() == naive.keys()
    assert (couple == "none") == (not any(k.startswith("refine|") for k in fast))
    base = naive["base|-|None|None|None|None|None"][0]
    min_correct = base - max(OPTIONS["eps"]) * OPTIONS["calib"] / 100
    differ = [k for k in naive if not _same(naive[k], fast[k], min_correct)]
    assert not differ, differ[:5]


def _engines(ckpt, images, batch, **fast_options):
    """A naive and a fast engine over the same calibration images of the tiny checkpoint."""
    from crossneuron.search.engine import NaiveEngine
    from crossneuron.search.fast import FastEngine

    ctx = open_checkpoint(ckpt)
    x, y, _ = calibration(ctx, images, 0)
    x = normalise(x, ctx.spec)
    naive = NaiveEngine(cn.attach(ctx.model, ctx.spec.input_shape, 2), x, y, batch)
    return naive, FastEngine(cn.attach(ctx.model, ctx.spec.input_shape, 2), x, y, batch, **fast_options)


def test_fast_engine_falls_back_when_the_cache_is_too_small(ckpt):
    naive, small = _engines(ckpt, 100, 50, max_cache_bytes=1_000_000)
    assert 0 < len(small.tails) < len(small.net.sites)  # only the later cuts fit
    g = torch.Generator().manual_seed(0)
    for site in small.net.sites:
        mask = torch.rand(small.net.spatial(site).mask.shape, generator=g) < 0.3
        a, b = naive.evaluate({site.index: mask}), small.evaluate({site.index: mask})
        assert (a.correct, a.macs_saved, a.mispredicted, a.lost) == (b.correct, b.macs_saved, b.mispredicted, b.lost)


def test_fast_engine_cuts_short_a_candidate_that_cannot_reach_the_bound(ckpt):
    naive, fast = _engines(ckpt, 200, 20)
    everything = {0: torch.zeros_like(fast.net.spatial(0).mask)}  # computes nothing: every patch predicted
    exact = naive.evaluate(everything)
    assert exact.correct < naive.base.correct - 20
    cut = fast.evaluate(everything, min_correct=naive.base.correct)
    assert cut.cut_short and exact.correct <= cut.correct < naive.base.correct
    assert cut.macs_saved < exact.macs_saved  # only the images seen before the cut
    full = fast.evaluate(everything, min_correct=0)  # a bound it can reach: no cut
    assert not full.cut_short and (full.correct, full.macs_saved) == (exact.correct, exact.macs_saved)


def test_fast_engine_is_exact_and_cuts_short_with_every_site_predicting(ckpt):
    naive, fast = _engines(ckpt, 200, 50, chunk=30)
    g = torch.Generator().manual_seed(1)
    for density in (0.9, 0.5, 0.1):  # mild to severe: the later ones change most images
        masks = {s.index: torch.rand(fast.net.spatial(s).mask.shape, generator=g) < density for s in fast.net.sites}
        a, b = naive.evaluate(masks), fast.evaluate(masks)
        assert (a.correct, a.macs_saved, a.mispredicted, a.lost) == (b.correct, b.macs_saved, b.mispredicted, b.lost)
        assert a.lost >= naive.base.correct - a.correct  # lost - gained = the net loss
        if a.correct < naive.base.correct - 30:
            cut = fast.evaluate(masks, min_correct=naive.base.correct - 10)
            assert cut.cut_short and a.correct <= cut.correct < naive.base.correct - 10
            assert cut.macs_saved < a.macs_saved
    assert a.correct < naive.base.correct - 30  # the last one was severe enough to test the cut


def _config_rows(folder):
    db = sqlite3.connect(folder / "records.sqlite")
    query = "SELECT config, correct, images, macs_saved, mispredicted, lost, cut_short, estimated, stage FROM evals"
    return [(r[0], r[1:]) for r in db.execute(query).fetchall()]


def test_screened_search_runs_every_mode_and_its_exact_records_equal_naive(full_run, screened_run):
    ctx, reference, _ = full_run
    options, out, summary = screened_run
    naive = dict(_config_rows(reference))
    screened = _config_rows(out)
    estimated = [r for _, r in screened if r[6]]
    assert estimated and all(r[7] in ("first", "patch") for r in estimated)  # never at site level
    min_correct = (summary["base_calib_accuracy"] - 5.0) * OPTIONS["calib"] / 100
    compared = 0
    for config, row in screened:
        if row[6] or config not in naive:
            continue
        compared += 1
        assert _same(naive[config][:6], row[:6], min_correct), (config, naive[config], row)
    assert compared > 50
    assert "screen" not in summary["modes"]["uniform-layer"]  # whole-site targets are always exact


def test_screen_check_is_the_rank_correlation_of_its_sample(screened_run):
    """summary's proxy check equals scipy's Spearman and the mean error recomputed from the records:
    each sampled estimate (a first-level record, estimated) against its exact 'check' record."""
    from scipy.stats import spearmanr

    options, out, summary = screened_run
    db = sqlite3.connect(out / "records.sqlite")
    for mode in ("uniform-patch", "uniform-filters", "max-granularity"):
        check = summary["modes"][mode]["screen"]
        pairs = db.execute(
            "SELECT f.correct, c.correct, c.images FROM evals c JOIN evals f ON f.config = c.config "
            "AND f.mode = c.mode AND f.stage = 'first' WHERE c.stage = 'check' AND c.mode = ? ORDER BY c.id",
            (mode,),
        ).fetchall()
        estimated = db.execute("SELECT COUNT(*) FROM evals WHERE mode = ? AND stage = 'first' AND estimated = 1",
                               (mode,)).fetchone()[0]  # fmt: skip
        assert check["sample"] == len(pairs) == min(options.screen_check, estimated) > 0
        assert check["estimated_records"] == estimated
        est, exact = [p[0] for p in pairs], [p[1] for p in pairs]
        rho = spearmanr(est, exact).statistic
        assert (check["spearman"] == pytest.approx(rho)) or (rho != rho and check["spearman"] != check["spearman"])
        error = sum(abs(a - b) for a, b in zip(est, exact, strict=True)) / len(pairs) * 100.0 / pairs[0][2]
        assert check["mean_abs_error_points"] == pytest.approx(error)


@pytest.mark.parametrize("zero_below", [0.0, 0.5])
def test_screen_estimates_follow_their_definition(ckpt, zero_below):
    """Each target's MACs and mispredictions equal the Spatial layer's; its margin change equals
    -sum(g * a) over the positions the mask predicts, g taken by autograd through an added zero. With
    site thresholds (``--zero-below``) the same, the computed positions keeping their values."""
    from crossneuron.search.engine import NaiveEngine
    from crossneuron.search.plan import Piece, block_side, plan_mask
    from crossneuron.search.screen import Screen, _margins
    from crossneuron.spatial import predicted_positions
    from crossneuron.thresholds import apply_thresholds, site_thresholds

    ctx = open_checkpoint(ckpt)
    x, y, _ = calibration(ctx, 60, 0)
    x = normalise(x, ctx.spec)
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    if zero_below:
        apply_thresholds(net, site_thresholds(net, x, zero_below))
    naive = NaiveEngine(net, x, y, 30)
    sides = {s.index: block_side(s.shape[1], s.shape[2], 2, 4) for s in net.sites}
    screen = Screen(net, naive.batches, [1, 6, 9], sides)
    # a screen that sums what its modes never split answers their plans the same, and refuses the others
    summed = {(False, False): Screen(net, naive.batches, [1, 6, 9], sides, channels=False, blocks=False),
              (True, False): Screen(net, naive.batches, [1, 6, 9], sides, blocks=False)}  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for site in net.sites:
        shape = tuple(net.spatial(site).mask.shape)
        naive.set_masks({})
        acts = {}
        bump = torch.zeros((len(y), *site.shape), requires_grad=True)
        handle = net.spatial(site).register_forward_hook(
            lambda m, a, out, acts=acts, bump=bump: acts.setdefault("a", out.detach()) + bump
        )
        margin = _margins(net(x), y)
        handle.remove()
        (grad,) = torch.autograd.grad(margin.sum(), [bump])
        for code in (1, 6, 9):
            channel = int(torch.randint(shape[0], (1,), generator=g))
            for piece in (Piece(None, None, code), Piece(channel, None, code), Piece(channel, 0, code)):
                mask = plan_mask((piece,), shape, 2, sides[site.index])
                exact = naive.evaluate({site.index: mask})
                est = screen.estimate(site.index, (piece,))
                assert (est.macs_saved, est.mispredicted) == (exact.macs_saved, exact.mispredicted)
                zeroed = predicted_positions(acts["a"], mask, 2, net.spatial(site).threshold)
                assert zero_below == 0 or net.spatial(site).threshold > 0
                delta = -(grad * acts["a"] * zeroed).flatten(1).sum(1)
                hit = torch.where(delta == 0, margin.detach() > 0, margin.detach() + delta > 0)
                assert est.correct == int(hit.sum())
                assert est.lost == int(((margin.detach() > 0) & ~hit).sum())
                for (channels, blocks), other in summed.items():
                    if (piece.channel is None or channels) and (piece.block is None or blocks):
                        assert (
                            other.estimate(site.index, (piece,)).macs_saved,
                            other.estimate(site.index, (piece,)).mispredicted,
                        ) == (est.macs_saved, est.mispredicted)
                        assert torch.allclose(
                            other.delta(site.index, (piece,)), screen.delta(site.index, (piece,)), atol=1e-4
                        )
                    else:
                        with pytest.raises(ValueError, match="summed over channels or blocks"):
                            other.estimate(site.index, (piece,))


def test_spearman_against_hand_values():
    from crossneuron.search.screen import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)  # ties: average ranks
    assert spearman([1, 1, 1], [1, 2, 3]) != spearman([1, 1, 1], [1, 2, 3])  # nan: constant side


def test_every_count_is_measured_in_full_fp32_and_the_setting_is_restored(ckpt):
    """cuDNN may run fp32 convolutions in TF32 by default; engines, the screen and evaluation turn it
    off while they run (a TF32 evaluation differs with batching) and restore the user's setting."""
    from crossneuron.precision import full_fp32, tf32_convolutions
    from crossneuron.search.plan import block_side
    from crossneuron.search.screen import Screen

    assert tf32_convolutions()  # PyTorch's default, which measurements must not inherit
    naive, fast = _engines(ckpt, 60, 30)
    seen = []
    conv = next(m for m in naive.net.modules() if isinstance(m, torch.nn.Conv2d))  # shared by both nets
    hook = conv.register_forward_hook(lambda *_: seen.append(tf32_convolutions()))
    try:
        mask = {0: torch.zeros_like(naive.net.spatial(0).mask)}
        naive.evaluate(mask), fast.evaluate(mask)
        ctx = open_checkpoint(ckpt)
        x, y, _ = calibration(ctx, 60, 0)
        measure(naive.net, ctx.spec, x, y, {})
        Screen(
            naive.net, naive.batches, [1], {s.index: block_side(s.shape[1], s.shape[2], 2, 4) for s in naive.net.sites}
        )
    finally:
        hook.remove()
    assert seen and not any(seen) and tf32_convolutions()
    with pytest.raises(ValueError), full_fp32():  # restored on the way out of an error too
        raise ValueError
    assert tf32_convolutions()


def test_slope_candidates_are_pareto_optimal_by_brute_force(ckpt, tmp_path):
    """--combine slope on max-granularity: each channel's patch-quantizer candidate saves exactly the sum of its
    blocks' first-level MACs and mispredictions (they add up within a site), and no choice of one option (or
    none) per block, enumerated by brute force, saves at least as much with fewer mispredictions."""
    import itertools

    from crossneuron.runfolder import make_engine
    from crossneuron.search.run import Search
    from crossneuron.search.stages import first_level, quantize
    from crossneuron.search.store import Store

    ctx = open_checkpoint(ckpt)
    opts = SearchOptions(modes=["max-granularity"], combine="slope", **{**OPTIONS, "ones": (1, 2)})
    net, engine, _ = make_engine("naive", ctx, opts)
    search = Search(net, engine, Store(tmp_path / "records.sqlite", {"test": 1}), opts)
    site, mode = 1, MODES["max-granularity"]

    class TwoChannels:  # the mode's targets in channels 0 and 1 of the site: all this test reads
        name, below_site = mode.name, mode.below_site

        def targets(self, channels, blocks):
            return [t for t in mode.targets(channels, blocks) if t[0] == site and t[1] < 2]

    first = first_level(search.stages, TwoChannels())
    units = {(site, c, None): [first[(site, c, b)] for b in range(search.space.blocks()[site])] for c in range(2)}
    made = quantize(search.stages, "max-granularity", "patch", units)
    checked = 0
    for unit, subs in units.items():
        record = {o.plan: o.result for opts_ in subs for o in opts_}
        choices = [[None, *[o.plan for o in opts_]] for opts_ in subs]
        points = set()
        for combo in itertools.product(*choices):
            chosen = [record[p] for p in combo if p is not None]
            points.add((sum(r.mispredicted for r in chosen), sum(r.macs_saved for r in chosen)))
        for option in made[unit]:
            pieces = [record[(piece,)] for piece in option.plan]
            assert (option.result.macs_saved, option.result.mispredicted) == (
                sum(r.macs_saved for r in pieces),
                sum(r.mispredicted for r in pieces),
            )
            m, g = option.result.mispredicted, option.result.macs_saved
            assert not any((pm <= m and pg >= g) and (pm, pg) != (m, g) for pm, pg in points), (unit, option.plan)
            checked += 1
    assert checked >= 2
    with pytest.raises(CrossneuronError, match="--combine"):
        SearchOptions(combine="best").check()


def test_both_engines_satisfy_the_engine_protocol_and_a_partial_one_does_not(ckpt):
    from crossneuron.search.engine import Engine

    naive, fast = _engines(ckpt, 40, 20)
    assert isinstance(naive, Engine) and isinstance(fast, Engine)
    assert (naive.name, fast.name) == ("naive", "fast") and naive.images == fast.images == 40
    assert sum(len(y) for _, y in fast.batches) == 40

    class NoBatches:
        name, images, base = "x", 1, None

        def evaluate(self, masks, min_correct=None):
            return None

    assert not isinstance(NoBatches(), Engine)


def test_refine_with_two_orders_keeps_both_passes_and_the_better_step(ckpt, tmp_path):
    """``--refine-order mispredictions,index``: the first order's steps are exactly the single-order run's
    (same keys, same masks, same numbers), the second's follow, and at every budget the result saves at least
    the calibration MACs of each order alone."""
    ctx = open_checkpoint(ckpt)
    runs = {}
    for order in ("mispredictions", "index", "mispredictions,index"):
        options = SearchOptions(modes=["uniform-layer"], refine=True, refine_order=order, **OPTIONS)
        runs[order] = optimize(ctx, options, tmp_path / order.replace(",", "+"), engine_name="fast")
    single, both = _records(tmp_path / "mispredictions"), _records(tmp_path / "mispredictions+index")
    assert single.items() <= both.items() and len(both) > len(single)
    for eps in ("0", "1", "5"):
        saved = {o: r["modes"]["uniform-layer"]["eps"][eps]["calib_macs_saved_pct_network"] for o, r in runs.items()}
        assert saved["mispredictions,index"] >= max(saved["mispredictions"], saved["index"]) - 1e-9, (eps, saved)
    with pytest.raises(CrossneuronError, match="each once"):
        SearchOptions(refine_order="index,index").check()


def test_a_second_writer_on_a_folder_is_refused_naming_the_first(ckpt, tmp_path):
    """The lock held through another open file description (as another process holds it): optimize and train
    refuse with the holder's pid and write nothing. (kill -9 then resume, above, shows the OS releases it.)"""
    import fcntl

    from crossneuron.train import TrainConfig, train

    from conftest import TINY

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        with pytest.raises(CrossneuronError, match=r"another crossneuron process \(pid 4242\)"):
            optimize(open_checkpoint(ckpt), SearchOptions(modes=["uniform-layer"], **OPTIONS), out)
        with pytest.raises(CrossneuronError, match=r"pid 4242"):
            train(TrainConfig(**TINY), out, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_check_images_are_held_out_fixed_by_seed_and_the_same_for_any_calibration_size():
    from crossneuron.runfolder import _calibration_positions, check_positions

    for calib in (10, 200, 4000):
        check = check_positions(5000, calib, seed=3)
        assert len(check) == 1000 and not set(check) & set(_calibration_positions(5000, calib, 3))
        assert (check == check_positions(5000, 10, seed=3)).all()  # fixed whatever the calibration size
    assert (check_positions(5000, 10, 4) != check_positions(5000, 10, 3)).any()
    assert len(check_positions(5000, 4500, 0)) == 500 and len(check_positions(5000, 5000, 0)) == 0
    assert len(check_positions(300, 100, 0, size=50)) == 50


@pytest.mark.parametrize("budget", ["flips", "ucb:0.8"])
def test_a_search_under_a_budget_rule_picks_only_what_the_rule_accepts(ckpt, tmp_path, budget):
    from crossneuron.search.budget import get_budget
    from crossneuron.search.records import EvalResult

    ctx = open_checkpoint(ckpt)
    options = SearchOptions(modes=["uniform-layer"], refine=True, **{**OPTIONS, "budget": budget})
    summary = optimize(ctx, options, tmp_path / "run", engine_name="fast", check=150)
    rule, calib = get_budget(budget), OPTIONS["calib"]
    base_correct = round(summary["base_calib_accuracy"] * calib / 100)
    base = EvalResult(base_correct, calib, 0, 0, lost=0)
    for eps in OPTIONS["eps"]:
        data = load_result(tmp_path / "run" / "uniform-layer" / f"eps-{eps:g}" / "result.json")
        step = data.trajectory[data.chosen_step]
        correct = round(step["calib_accuracy"] * calib / 100)
        assert rule.within(EvalResult(correct, calib, 0, 0, lost=step["calib_lost"]), base, eps)
        assert step["calib_lost"] >= base_correct - correct
        assert data.options["budget"] == rule.name and data.check_images == 150  # synthetic val: 300 images
        x, y, check_hash = check_images(ctx, calib, 0, 150)
        net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
        held = measure(net, ctx.spec, x, y, result_masks(net, data))
        assert (held.accuracy, held.drop, check_hash) == (data.check_accuracy, data.check_drop, data.check_hash)


def test_records_reused_from_another_run_equal_a_fresh_search(full_run, ckpt, tmp_path):
    """A flips search that imports the net search's records writes the same records as one that does not,
    evaluating fewer; a database of other calibration images is refused in one line."""
    ctx, reference, _ = full_run
    options = dict(OPTIONS, modes=["uniform-layer"], budget="flips")
    fresh = optimize(ctx, SearchOptions(**options), tmp_path / "fresh")
    again = optimize(ctx, SearchOptions(**options), tmp_path / "again", reuse=[reference])
    a, b = _records(tmp_path / "fresh"), _records(tmp_path / "again")
    assert {k: v for k, v in b.items() if not k.startswith("reused|")} == a
    assert again["evaluations"] == fresh["evaluations"] == len(a)
    db = sqlite3.connect(tmp_path / "again" / "records.sqlite")
    (taken,) = db.execute("SELECT COUNT(*) FROM evals WHERE engine = 'reused' AND key NOT LIKE 'reused|%'").fetchone()
    assert taken > 0  # found by their masks, not evaluated
    for name in ("eps-0", "eps-1"):
        assert (
            json.loads((tmp_path / "again" / "uniform-layer" / name / "result.json").read_text())["masks"]
            == json.loads((tmp_path / "fresh" / "uniform-layer" / name / "result.json").read_text())["masks"]
        )
    with pytest.raises(CrossneuronError, match="calib_hash"):
        optimize(ctx, SearchOptions(**dict(options, calib=90)), tmp_path / "other", reuse=[reference])


def test_a_database_that_cannot_be_written_and_a_system_error_are_one_line(tmp_path, cli, monkeypatch):
    """A records database opened read-only (as for a user without write permission) refuses new records
    with a line naming it; an OSError anywhere in a command is one line, exit 2, no traceback."""
    from crossneuron.search.records import EvalResult
    from crossneuron.search.store import Store, Where

    store = Store(tmp_path / "records.sqlite", {"a": 1})
    store.db.close()
    store.db = sqlite3.connect(f"file:{tmp_path / 'records.sqlite'}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(CrossneuronError, match="cannot write the search database .*permissions"):
        store.add(Where("first", "m"), "abc", EvalResult(1, 2, 3, 4, lost=0), "naive")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "run" / "summary.json"))

    monkeypatch.setattr("crossneuron.report.build_report", denied)
    code, _, err = cli("report", tmp_path)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "summary.json: Permission denied" in lines[0], err


def test_batched_engine_equals_naive_candidate_for_candidate(ckpt):
    """Many single-site candidates in one call, tails stacked across candidates in launches of 70 rows
    (several members per launch, members split over launches), with multi-site and no-prediction
    candidates mixed in: every record equals naive's (nothing is cut short in a batch)."""
    from crossneuron.search.batched import BatchedEngine

    naive, _ = _engines(ckpt, 120, 50)
    ctx = open_checkpoint(ckpt)
    x, y, _ = calibration(ctx, 120, 0)
    batched = BatchedEngine(cn.attach(ctx.model, ctx.spec.input_shape, 2), normalise(x, ctx.spec), y, 50,
                            rows_per_launch=70)  # fmt: skip
    g = torch.Generator().manual_seed(3)
    shape = lambda s: batched.net.spatial(s).mask.shape  # noqa: E731
    candidates = [{s.index: torch.rand(shape(s), generator=g) < d} for s in batched.net.sites for d in (0.2, 0.6)]
    candidates.append({s.index: torch.rand(shape(s), generator=g) < 0.5 for s in batched.net.sites[:3]})
    candidates.append({})
    got = batched.evaluate_many(candidates, min_correct=naive.base.correct)
    assert len(got) == len(candidates)
    for masks, b in zip(candidates, got, strict=True):
        a = naive.evaluate(masks)
        assert not b.cut_short
        assert (a.correct, a.macs_saved, a.mispredicted, a.lost) == (b.correct, b.macs_saved, b.mispredicted, b.lost)
    assert any(r.correct != naive.base.correct for r in got)  # some candidates changed outcomes


def test_ray_shard_without_batching_evaluates_a_list_one_by_one(ckpt):
    """A Ray actor's shard (here in this process) on the fast engine takes a list of candidates and
    evaluates them one by one: every record equals naive's."""
    from crossneuron.search.ray_engine import _Shard

    naive, _ = _engines(ckpt, 120, 50)
    ctx = open_checkpoint(ckpt)
    x, y, _ = calibration(ctx, 120, 0)
    shard = _Shard(cn.attach(ctx.model, ctx.spec.input_shape, 2), normalise(x, ctx.spec), y, 50, "fast",
                   torch.get_num_threads())  # fmt: skip
    g = torch.Generator().manual_seed(5)
    candidates = [{s.index: torch.rand(shard.engine.net.spatial(s).mask.shape, generator=g) < 0.5}
                  for s in shard.engine.net.sites[:4]] + [{}]  # fmt: skip
    got = shard.evaluate_many(candidates)
    want = [naive.evaluate(c) for c in candidates]
    assert [(r.correct, r.macs_saved, r.mispredicted, r.lost) for r in got] == [
        (r.correct, r.macs_saved, r.mispredicted, r.lost) for r in want]  # fmt: skip
    assert len({r.correct for r in want}) > 1


@given(hst.integers(0, 200), hst.integers(1, 40))
def test_spread_parts_are_contiguous_balanced_and_cover(n, groups):
    from crossneuron.search.ray_engine import spread

    parts = spread(n, groups)
    assert len(parts) == groups and [i for p in parts for i in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_batched_engine_search_records_equal_naive(full_run, tmp_path, monkeypatch):
    """A whole search on the batched engine, told it can use 25 candidates at once (as Ray groups do), so
    the stages hand over chunks of several targets or units per call: the records equal naive's."""
    from crossneuron.search.batched import BatchedEngine

    monkeypatch.setattr(BatchedEngine, "parallel", 25, raising=False)
    ctx, reference, _ = full_run
    modes = ["uniform-layer", "max-granularity"]  # between them, every stage that hands over candidates at once
    optimize(ctx, SearchOptions(modes=modes, **OPTIONS), tmp_path / "batched", engine_name="batched")
    naive, batched = _records(reference), _records(tmp_path / "batched")
    naive = {k: v for k, v in naive.items() if k.split("|")[1] in (*modes, "-")}
    assert batched.keys() == naive.keys()
    base = naive["base|-|None|None|None|None|None"][0]
    min_correct = base - max(OPTIONS["eps"]) * OPTIONS["calib"] / 100
    differ = [k for k in naive if not _same(naive[k], batched[k], min_correct)]
    assert not differ, differ[:5]
    with sqlite3.connect(tmp_path / "batched" / "records.sqlite") as db:
        assert {e for (e,) in db.execute("SELECT DISTINCT engine FROM evals")} >= {"batched"}
