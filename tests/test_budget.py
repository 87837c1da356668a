"""The budget rules (search/budget.py) on hand-made records, against direct computations."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossneuron.errors import CrossneuronError
from crossneuron.search.budget import NET, Flips, get_budget, lower_rate, upper_rate
from crossneuron.search.plan import Piece
from crossneuron.search.quantize import Option, Step, forward_quantize, pick, rank
from crossneuron.search.records import EvalResult

BASE = EvalResult(correct=900, images=1000, macs_saved=0, mispredicted=0, lost=0)


def rec(lost, gained, images=1000, base=900, **kw):
    return EvalResult(base - lost + gained, images, kw.pop("macs", 0), 0, lost=lost, **kw)


def binomial_cdf(k, n, q):
    return sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k + 1))


def upper_by_bisection(k, n, level):
    """The q where P(X <= k | n, q) = 1 - level, by bisection on the binomial sum (no scipy)."""
    lo, hi = k / n, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binomial_cdf(k, n, mid) > 1 - level else (lo, mid)
    return (lo + hi) / 2


def lower_by_bisection(k, n, level):
    """The q where P(X >= k | n, q) = 1 - level."""
    lo, hi = 0.0, k / n
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - binomial_cdf(k - 1, n, mid) < 1 - level else (lo, mid)
    return (lo + hi) / 2


def test_each_rule_charges_what_its_definition_says():
    r = rec(lost=5, gained=2)  # 897 right: net drop 0.3 points
    assert NET.charge(r, BASE) == pytest.approx(0.3)
    assert Flips().charge(r, BASE) == pytest.approx(0.5)
    upper, lower = upper_by_bisection(5, 1000, 0.95), lower_by_bisection(2, 1000, 0.95)
    assert get_budget("ucb").charge(r, BASE) == pytest.approx(100 * (upper - lower), abs=1e-9)
    assert get_budget("ucb").charge(rec(10, 0), BASE) > 1.0  # unlike net and flips, more than 10 of 1000
    assert get_budget("ucb:0.5").charge(r, BASE) < get_budget("ucb:0.9").charge(r, BASE)
    assert NET.within(r, BASE, 0.3) and not Flips().within(r, BASE, 0.3) and Flips().within(r, BASE, 0.5)
    # gains are credited by net (and by ucb when they outweigh the losses), never by flips
    up = rec(lost=1, gained=9)
    assert NET.charge(up, BASE) == pytest.approx(-0.8) and Flips().charge(up, BASE) == pytest.approx(0.1)
    assert get_budget("ucb").charge(up, BASE) > 0 > get_budget("ucb").charge(rec(lost=1, gained=20), BASE)
    assert get_budget("ucb").charge(rec(0, 0), BASE) == 0.0  # nothing moved: nothing charged


def test_paired_charges_the_mean_flip_plus_z_standard_errors():
    """``paired`` against a direct computation over the per-image differences d_i (1 lost, -1 gained,
    0 else): their mean plus z_0.9 (1.2816) sample standard deviations / sqrt(N)."""
    d = [1] * 30 + [-1] * 30 + [0] * 940  # 30 images each way: net 0, churn 60
    mean = sum(d) / len(d)
    sd = (sum((x - mean) ** 2 for x in d) / len(d)) ** 0.5
    want = 100 * (mean + 1.2815515655446004 * sd / len(d) ** 0.5)
    assert get_budget("paired").charge(rec(30, 30), BASE) == pytest.approx(want, abs=1e-9)
    assert want == pytest.approx(0.99, abs=0.01) and Flips().charge(rec(30, 30), BASE) == pytest.approx(3.0)
    r = rec(lost=5, gained=2)  # 3 of 1000 net, 7 discordant
    assert get_budget("paired:0.5").charge(r, BASE) == pytest.approx(NET.charge(r, BASE))  # z = 0: the net drop
    assert get_budget("paired:0.95").charge(r, BASE) == pytest.approx(
        100 * (3 + 1.6448536269514722 * (7 - 9 / 1000) ** 0.5) / 1000)  # fmt: skip
    assert get_budget("paired").charge(rec(0, 0), BASE) == 0.0


@pytest.mark.parametrize("k,n", [(0, 1), (0, 10), (3, 10), (9, 10), (10, 10), (40, 100)])
def test_rate_bounds_are_the_clopper_pearson_bounds(k, n):
    expected = 1.0 if k == n else upper_by_bisection(k, n, 0.9)
    assert upper_rate(k, n, 0.9) == pytest.approx(expected, abs=1e-9)
    if k < n:  # its defining property
        assert binomial_cdf(k, n, upper_rate(k, n, 0.9)) == pytest.approx(0.1, abs=1e-9)
    assert lower_rate(k, n, 0.9) == pytest.approx(0.0 if k == 0 else lower_by_bisection(k, n, 0.9), abs=1e-9)
    if k > 0:
        assert 1 - binomial_cdf(k - 1, n, lower_rate(k, n, 0.9)) == pytest.approx(0.1, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(lost=st.integers(0, 300), gained=st.integers(0, 300), eps=st.floats(0, 10))
def test_every_rule_charges_at_least_the_net_drop_so_the_engine_cut_is_safe(lost, gained, eps):
    r = rec(lost, gained, images=1000, base=600)
    base = EvalResult(600, 1000, 0, 0, lost=0)
    for spec in ("net", "flips", "ucb", "ucb:0.99", "ucb:0.6", "paired", "paired:0.5", "paired:0.99"):
        rule = get_budget(spec)
        assert rule.charge(r, base) >= NET.charge(r, base) - 1e-9
        if rule.within(r, base, eps):
            assert NET.within(r, base, eps)


def test_a_record_cut_short_is_never_within():
    cut = rec(0, 0, cut_short=True)
    for spec in ("net", "flips", "ucb", "paired"):
        assert not get_budget(spec).within(cut, BASE, 100)


@pytest.mark.parametrize("spec", ["nosuch", "ucb:1", "ucb:0", "ucb:x", "flips:0.9", "net:2", "paired:0.4",
                                  "paired:1", "paired:x"])
def test_bad_budget_is_one_clear_error(spec):
    with pytest.raises(CrossneuronError, match="budget"):
        get_budget(spec)


def test_rank_pick_and_refine_follow_the_rule():
    def opt(code, lost, gained, macs):
        return Option((Piece(None, None, code),), rec(lost, gained, macs=macs))

    # option 2 saves most and is within 0.5 by net (6 lost, 5 gained), not by flips
    options = [opt(1, 0, 0, 50), opt(2, 6, 5, 90), opt(3, 6, 0, 80)]
    assert [o.plan[0].code for o in rank(options, BASE, 0.5)] == [2, 1]
    assert [o.plan[0].code for o in rank(options, BASE, 0.5, budget=Flips())] == [1]
    steps = [Step(k, None, (), o.result) for k, o in enumerate(options)]
    assert pick(steps, BASE, 0.5).step == 1 and pick(steps, BASE, 0.5, Flips()).step == 0

    # refine over one site with those options: each kept step is within eps by the rule
    def evaluate(plans, step, eps):
        (plan,) = plans.values() if plans else [()]
        return next((o.result for o in options if o.plan == plan), BASE)

    trajectory = forward_quantize([[0]], {0: sorted(options, key=lambda o: -o.result.macs_saved)}, BASE, evaluate,
                                  [0.5], budget=Flips())  # fmt: skip
    best = pick(trajectory, BASE, 0.5, Flips())
    assert best.result.macs_saved == 50
