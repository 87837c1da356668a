"""The milp optimiser: the solver against brute force on small instances, the lost-image allowance
against each rule, and a search whose milp steps are exact records within the budget."""

import itertools
import json
import sqlite3

import numpy as np
import pytest

import crossneuron as cn
from crossneuron.audit import replay, unbits
from crossneuron.context import open_checkpoint
from crossneuron.result import load_result, result_masks
from crossneuron.runfolder import calibration, optimize
from crossneuron.search.budget import get_budget
from crossneuron.search.engine import NaiveEngine
from crossneuron.search.milp import Problem, allowed_lost, exchange, greedy, solve
from crossneuron.search.options import SearchOptions
from crossneuron.search.records import EvalResult
from crossneuron.splits import normalise

from conftest import OPTIONS


def _problem(seed, sites=3, images=40):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, sites)  # a site may have no option at all
    margin = rng.normal(1.0, 1.0, images)
    return Problem(
        macs=[rng.integers(1, 100, k) for k in counts],
        deltas=[rng.normal(-0.3, 0.5, (k, images)) * (rng.random((k, images)) < 0.5) for k in counts],
        margin=margin,
        base_hit=margin > 0,
    )


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("allowed,tau", [(0, 0.0), (2, 0.0), (5, 0.0), (1, 0.5)])
def test_solver_finds_the_brute_force_optimum(seed, allowed, tau):
    problem = _problem(seed)
    choices = itertools.product(*[[None, *range(len(m))] for m in problem.macs])
    best = max(problem.saved(c) for c in choices if problem.lost(c, tau) <= allowed)
    choice = solve(problem, allowed, tau)
    assert problem.lost(choice, tau) <= allowed
    assert problem.saved(choice) == best
    start = greedy(problem, allowed, tau)  # solve's floor: feasible, never above the optimum
    assert problem.lost(start, tau) <= allowed and problem.saved(start) <= best


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("allowed,tau", [(0, 0.0), (3, 0.0), (1, 0.5)])
def test_exchange_ends_where_no_single_or_double_move_improves(seed, allowed, tau):
    problem = _problem(seed, sites=4)
    start = greedy(problem, allowed, tau)
    choice = exchange(problem, start, allowed, tau)
    assert problem.lost(choice, tau) <= allowed and problem.saved(choice) >= problem.saved(start)
    rows = [[None, *range(len(m))] for m in problem.macs]  # brute force over every move of one or two sites
    for s1, s2 in itertools.combinations_with_replacement(range(len(rows)), 2):
        for k1, k2 in itertools.product(rows[s1], rows[s2]):
            moved = list(choice)
            moved[s1], moved[s2] = k1, k2 if s1 != s2 else k1
            if problem.lost(moved, tau) <= allowed:
                assert problem.saved(moved) <= problem.saved(choice)
    assert solve(problem, allowed, tau, time_limit=0) == choice  # without HiGHS: greedy, then exchange


def test_allowed_lost_is_the_largest_count_each_rule_accepts():
    base = EvalResult(900, 1000, 0, 0, lost=0)
    for spec, eps, expected in (("net", 1.0, 10), ("flips", 0.5, 5), ("net", 0.0, 0)):
        rule = get_budget(spec)
        assert allowed_lost(lambda r, rule=rule, eps=eps: rule.within(r, base, eps), base) == expected
    ucb = get_budget("ucb")
    n = allowed_lost(lambda r: ucb.within(r, base, 1.0), base)
    assert 0 < n < 10  # the bound charges more than the count (4: the 95% bound of 5 / 1000 is above 1%)
    assert ucb.within(EvalResult(900 - n, 1000, 0, 0, lost=n), base, 1.0)
    assert not ucb.within(EvalResult(899 - n, 1000, 0, 0, lost=n + 1), base, 1.0)


@pytest.mark.parametrize("mode", ["uniform-layer", "uniform-patch"])
def test_milp_steps_are_exact_records_within_the_budget(ckpt, tmp_path, mode):
    ctx = open_checkpoint(ckpt)
    screen = mode != "uniform-layer"  # the demo's uniform-patch: screened first level, exact channel candidates
    options = SearchOptions(modes=[mode], screen=screen, **{**OPTIONS, "optimizer": "milp", "budget": "flips"})
    audited = mode == "uniform-layer"  # the audit on one mode: it is mode-blind
    optimize(ctx, options, tmp_path / "run", check=60 if audited else 0, audit=audited)
    db = sqlite3.connect(tmp_path / "run" / "records.sqlite")
    rows = db.execute("SELECT correct, macs_saved, mispredicted, lost, estimated, cut_short FROM evals "
                      "WHERE stage = 'milp'").fetchall()  # fmt: skip
    assert rows and not any(r[4] for r in rows)
    from crossneuron.estimate import dry_run

    assert dry_run(ctx, options, timed=1)["modes"][mode]["evaluations"]["milp"] >= len(rows)
    x, y, _ = calibration(ctx, OPTIONS["calib"], 0)
    naive = NaiveEngine(cn.attach(ctx.model, ctx.spec.input_shape, 2), normalise(x, ctx.spec), y, 50)
    rule = get_budget("flips")
    saved = []
    for eps in OPTIONS["eps"]:
        data = load_result(tmp_path / "run" / mode / f"eps-{eps:g}" / "result.json")
        step = data.trajectory[data.chosen_step]
        assert step["stage"] == "milp"
        masks = {k: m for k, m in result_masks(naive.net, data).items() if m is not None}
        exact = naive.evaluate(masks)
        assert exact.lost == step["calib_lost"] and exact.accuracy == pytest.approx(step["calib_accuracy"])
        assert rule.within(exact, naive.base, eps)
        saved.append(exact.macs_saved)
        if audited:  # the audit's row of the chosen step: measure's check drop, and the rule's replay picks it
            audit = json.loads((tmp_path / "run" / mode / "audit.json").read_text())
            row = next(r for r in audit["rows"] if data.chosen_step in r["steps"])
            assert row["check_drop"] == pytest.approx(data.check_drop)
            assert row["calib_lost"] == exact.lost and row["calib_correct"] == exact.correct
            right, base_right = unbits(row["check_right"], 60), unbits(audit["check_base_right"], 60)
            assert right.sum() == row["check_correct"] and (base_right & ~right).sum() == row["check_lost"]
            assert 100 * (base_right.sum() - right.sum()) / 60 == pytest.approx(data.check_drop)
            assert data.chosen_step in replay(audit, rule, eps)["steps"]
    assert saved == sorted(saved) and saved[-1] > 0
    if audited:  # every audited configuration is a distinct trajectory step, none cut short
        steps = [s for r in audit["rows"] for s in r["steps"]]
        assert len(steps) == len(set(steps)) and len({r["config"] for r in audit["rows"]}) == len(audit["rows"])
        assert all(not data.trajectory[s]["cut_short"] for s in steps)


def test_a_result_does_not_depend_on_the_larger_eps_the_run_also_asked_for(ckpt, tmp_path):
    """Two searches (layer, milp and refine), one asked for eps 0 and 1, the other for 0, 1 and 5: the
    same masks and records at eps 0 and 1; every milp and refine step says which eps found it."""
    ctx = open_checkpoint(ckpt)
    chosen = {}
    for name, eps in (("small", [0.0, 1.0]), ("large", [0.0, 1.0, 5.0])):
        options = SearchOptions(modes=["uniform-layer"], refine=True,
                                **{**OPTIONS, "eps": eps, "optimizer": "layer,milp", "budget": "flips"})  # fmt: skip
        optimize(ctx, options, tmp_path / name)
        for e in eps:
            data = load_result(tmp_path / name / "uniform-layer" / f"eps-{e:g}" / "result.json")
            step = data.trajectory[data.chosen_step]
            chosen[name, e] = (step["calib_lost"], step["macs_saved_pct_network"], step["calib_accuracy"])
            assert all(t["found_for_eps"] is None for t in data.trajectory if t["stage"] == "layer")
            assert all(t["found_for_eps"] in [*eps, None] for t in data.trajectory)
            assert step["found_for_eps"] is None or step["found_for_eps"] <= e
        tagged = {t["found_for_eps"] for t in data.trajectory if t["stage"] != "layer"}
        assert set(eps) <= tagged | {0.0}  # each eps's milp / refine rounds are tagged with it
    assert chosen["small", 0.0] == chosen["large", 0.0] and chosen["small", 1.0] == chosen["large", 1.0]
    assert chosen["large", 5.0][1] >= chosen["large", 1.0][1]


def test_the_default_milp_leaves_highs_out_and_milp_seconds_brings_it_back(ckpt, tmp_path, monkeypatch):
    """0.17: ``--milp-seconds`` defaults to 0 (greedy and exchanges, the same on any machine); a positive
    limit calls HiGHS once in every round."""
    import crossneuron.search.milp as milp

    calls = []
    real = milp._highs
    monkeypatch.setattr(milp, "_highs", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    ctx = open_checkpoint(ckpt)
    base = {**OPTIONS, "optimizer": "milp", "budget": "flips", "eps": [1.0]}
    optimize(ctx, SearchOptions(modes=["uniform-layer"], **base), tmp_path / "default")
    assert calls == []
    optimize(ctx, SearchOptions(modes=["uniform-layer"], **base, milp_seconds=5), tmp_path / "highs")
    db = sqlite3.connect(tmp_path / "highs" / "records.sqlite")
    rounds = db.execute("SELECT COUNT(*) FROM evals WHERE stage = 'milp'").fetchone()[0]
    assert calls and set(calls) == {5} and len(calls) >= rounds - 1  # one solve per round (no-prediction: none)


def test_replay_picks_what_each_rule_accepts_by_brute_force():
    # calibration: 100 images, 90 right; check: 100 images, 80 right (hand-made rows)
    rows = [{"config": "none", "steps": [0], "calib_correct": 90, "calib_lost": 0, "calib_macs_saved_pct_network": 0.0,
             "check_correct": 80, "check_drop": 0.0, "check_macs_saved_pct_network": 0.0},
            {"config": "a", "steps": [1], "calib_correct": 92, "calib_lost": 3, "calib_macs_saved_pct_network": 10.0,
             "check_correct": 78, "check_drop": 2.0, "check_macs_saved_pct_network": 9.0},
            {"config": "b", "steps": [2], "calib_correct": 90, "calib_lost": 1, "calib_macs_saved_pct_network": 5.0,
             "check_correct": 80, "check_drop": 0.0, "check_macs_saved_pct_network": 5.5}]  # fmt: skip
    audit = {"calib_images": 100, "calib_base_correct": 90, "check_images": 100, "check_base_correct": 80, "rows": rows}
    assert replay(audit, get_budget("net"), 0.0)["config"] == "a"  # net: -2 points, within 0
    assert replay(audit, get_budget("flips"), 0.0)["config"] == "none"  # flips: 3 and 1 lost
    assert replay(audit, get_budget("flips"), 1.0)["config"] == "b"
    assert replay(audit, get_budget("flips"), 3.0)["config"] == "a"
    # paired at 0.9 on "a": -2 + 1.2816 sqrt(3 + 5 - 4 / 100) = 1.62 points; on "b" 0 + 1.2816 sqrt(2) = 1.81
    paired = get_budget("paired:0.9")
    assert replay(audit, paired, 1.7)["config"] == "a" and replay(audit, paired, 1.6)["config"] == "none"


@pytest.mark.parametrize("args,says", [(["--optimizer", "nosuch"], "unknown --optimizer"),
                                       (["--optimizer", "milp,milp"], "unknown --optimizer"),
                                       (["--milp-rounds", "0"], "--milp-rounds"),
                                       (["--milp-seconds", "-1"], "--milp-seconds >= 0, got 6 and -1.0"),
                                       (["--budget", "ucb:7"], "confidence level")])  # fmt: skip
def test_bad_optimizer_options_are_one_clear_line(ckpt, cli, tmp_path, args, says):
    code, out, err = cli("optimize", "--checkpoint", ckpt, "--out", tmp_path / "run", "--calib", "100", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0] and not (tmp_path / "run").exists()


def test_tighten_shrinks_the_allowance_by_the_models_undercount_then_raises_the_margin():
    from crossneuron.search.milp import tighten

    def lost(n):
        return EvalResult(900 - n, 1000, 0, 0, lost=n)

    assert tighten(30, 0.0, lost(62), 2.0) == (14, 0.0)  # the model lost 30 where the network lost 62
    assert tighten(30, 0.0, lost(31), 2.0) == (29, 0.0)  # always at least one fewer
    assert tighten(1, 0.0, lost(5), 2.0) == (0, 0.0)
    assert tighten(0, 0.0, lost(3), 2.0) == (0, 0.25) and tighten(0, 0.25, lost(3), 2.0) == (0, 0.5)
    assert tighten(0, 40.0, lost(3), 2.0) is None


def test_loosen_grows_the_allowance_by_the_models_overcount():
    from crossneuron.search.milp import loosen

    assert loosen(10, 1.0, 10, 900) == 100  # the model let 10 go, the network lost 1 of the 10 allowed
    assert loosen(10, 4.0, 10, 900) == 25
    assert loosen(5, 20.0, 10, 900) == 6  # charged beyond the cap yet within (rounding): one more at least
    assert loosen(10, 0.0, 10, 900) == 110  # nothing charged (net gain): a big step, bisection follows
    assert loosen(0, 0.0, 0, 900) == 1  # eps 0 under flips: try one image in the model
    assert loosen(850, 1.0, 10, 900) == 900 and loosen(900, 1.0, 10, 900) is None


def test_pool_audits_keeps_each_configuration_once_and_refuses_other_images(tmp_path):
    from crossneuron.audit import pool_audits
    from crossneuron.errors import CrossneuronError

    head = {"mode": "uniform-layer", "calib_images": 100, "calib_base_correct": 90, "check_images": 100,
            "check_base_correct": 80}  # fmt: skip
    a = {**head, "rows": [{"config": "x", "n": 1}, {"config": "y", "n": 2}]}
    b = {**head, "rows": [{"config": "y", "n": 3}, {"config": "z", "n": 4}]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    pool = pool_audits([tmp_path / "a.json", tmp_path / "b.json"])[(100, "uniform-layer")]
    assert [(r["config"], r["n"]) for r in pool["rows"]] == [("x", 1), ("y", 2), ("z", 4)]
    (tmp_path / "c.json").write_text(json.dumps({**b, "check_base_correct": 79}))
    with pytest.raises(CrossneuronError, match="not the same"):
        pool_audits([tmp_path / "a.json", tmp_path / "c.json"])
