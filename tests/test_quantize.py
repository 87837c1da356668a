"""The quantizers of SPEC 6 on hand-made records with known answers."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossneuron.search.budget import NET
from crossneuron.search.plan import Piece, block_grid, block_side, plan_mask
from crossneuron.search.quantize import Option, combine, layer_quantize, pick, rank
from crossneuron.search.records import EvalResult

BASE = EvalResult(correct=900, images=1000, macs_saved=0, mispredicted=0)


def opt(code, correct, macs, channel=None, block=None):
    return Option((Piece(channel, block, code),), EvalResult(correct, 1000, macs, 0))


def test_rank_filters_by_eps_and_sorts_by_macs_then_accuracy():
    options = [opt(1, 900, 50), opt(2, 890, 80), opt(3, 896, 80), opt(4, 880, 500), opt(5, 895, 50)]
    ranked = rank(options, BASE, eps=1.0)
    assert [o.plan[0].code for o in ranked] == [3, 2, 1, 5]  # 4 loses 2 points: out
    assert [o.plan[0].code for o in rank(options, BASE, eps=0.5)] == [3, 1, 5]
    assert [o.plan[0].code for o in rank(options, BASE, eps=1.0, top_m=2)] == [3, 2]
    assert NET.within(EvalResult(895, 1000, 0, 0), BASE, 0.5) and not NET.within(EvalResult(894, 1000, 0, 0), BASE, 0.5)


def test_combine_gives_none_where_a_target_has_fewer_options():
    a = [opt(1, 900, 9, block=0), opt(2, 900, 5, block=0), opt(3, 900, 1, block=0)]
    b = [opt(4, 900, 7, block=1)]
    c = []
    cands = combine([a, b, c])
    assert cands == [
        (Piece(None, 0, 1), Piece(None, 1, 4)),
        (Piece(None, 0, 2),),
        (Piece(None, 0, 3),),
    ]
    assert combine([[], []]) == []


def _evaluator(table):
    """A whole-network 'evaluation' that adds isolated effects: accuracy loss and MACs sum."""
    calls = []

    def evaluate(plans, step):
        calls.append(dict(plans))
        lost = sum(table[(s, plan)][0] for s, plan in plans.items())
        macs = sum(table[(s, plan)][1] for s, plan in plans.items())
        return EvalResult(900 - lost, 1000, macs, 0)

    return evaluate, calls


def test_layer_quantizer_moves_the_best_ratio_first_and_answers_every_eps():
    # site 0: options saving 100 (loses 6) then 60 (loses 1); site 1: saving 50 (loses 1)
    s0 = [opt(1, 894, 100), opt(2, 899, 60)]
    s1 = [opt(3, 899, 50)]
    options = {0: s0, 1: s1}
    table = {(0, o.plan): (900 - o.result.correct, o.result.macs_saved) for o in s0}
    table.update({(1, o.plan): (900 - o.result.correct, o.result.macs_saved) for o in s1})
    evaluate, calls = _evaluator(table)
    trajectory = layer_quantize([[0], [1]], options, BASE, evaluate)
    # start: both first (loses 7, saves 150). Ratios: site0 0->1 regains 5/1000 per 40 MACs = 1.25e-4;
    # site1 0->none regains 1/1000 per 50 = 2e-5: site 0 moves first.
    # then site 0 (1 -> none) regains 1/1000 per 60 MACs, site 1 still 1/1000 per 50: site 1 moves
    assert [t.moved for t in trajectory] == [None, 0, 1, 0]
    assert [t.positions for t in trajectory] == [(0, 0), (1, 0), (1, 1), (2, 1)]
    assert [t.result.correct for t in trajectory] == [893, 898, 899, 900]
    assert trajectory[-1].positions == (2, 1) and trajectory[-1].result.macs_saved == 0
    assert [c for c in calls][0] == {0: s0[0].plan, 1: s1[0].plan}
    assert pick(trajectory, BASE, 10).result.macs_saved == 150
    best_02 = pick(trajectory, BASE, 0.2)  # at most 2 images lost
    assert best_02.result.correct >= 898 and best_02.result.macs_saved == 110
    assert pick(trajectory, BASE, 0.0).result.macs_saved == 0


def test_coupled_sites_move_together():
    options = {0: [opt(1, 899, 10), opt(2, 900, 5)], 1: [opt(3, 899, 10)], 2: [opt(4, 890, 100)]}
    table = {(s, o.plan): (900 - o.result.correct, o.result.macs_saved) for s, opts in options.items() for o in opts}
    evaluate, _ = _evaluator(table)
    trajectory = layer_quantize([[0, 1], [2]], options, BASE, evaluate)
    moves = [t.positions for t in trajectory]
    assert moves[0] == (0, 0, 0)
    # the group (0, 1) regains 2/1000 for 15 MACs (0 -> 1 and 1 -> none together); site 2 10/1000 per 100
    assert moves[1] == (1, 1, 0)
    assert moves[-1] == (2, 1, 1)


def test_blocks_and_full_masks():
    assert block_side(32, 32, 2, 10) == 12  # 1024/100 > 10, 1024/144 < 10
    assert block_side(32, 32, 2, 0) == 2
    assert block_side(4, 4, 2, 10) == 2
    grid = block_grid((1, 32, 32), 12)
    assert len(grid) == 9 and grid[-1] == (slice(24, 32), slice(24, 32))
    mask = plan_mask((Piece(1, 4, 9),), (2, 32, 32), 2, 12)
    assert mask[0].all() and mask[1, :12].all() and not mask[1, 12:24, 12:24].all()
    assert mask[1, 12, 12] and not mask[1, 12, 13] and mask[1, 13, 13]  # diagonal tiled in the block
    assert plan_mask((), (2, 4, 4), 2, 2) is None


@pytest.mark.parametrize("p, h, w", [(3, 7, 7), (2, 5, 3)])
def test_full_mask_tiles_align_with_patches(p, h, w):
    hp, wp = -(-h // p) * p, -(-w // p) * p
    side = block_side(h, w, p, 1)
    mask = plan_mask((Piece(None, None, 1),), (1, hp, wp), p, side)
    assert mask.sum() == (hp // p) * (wp // p)  # one computed position (bit 0) per patch


def test_forward_quantize_keeps_only_moves_within_each_eps_and_warm_starts():
    from crossneuron.search.quantize import forward_quantize

    # two sites, options from most to least saving; isolated (lost, macs)
    options = {
        0: [opt(1, 880, 100), opt(2, 898, 60)],  # lose 20 for 100 MACs, lose 2 for 60
        1: [opt(3, 890, 90), opt(4, 899, 40)],  # lose 10 for 90, lose 1 for 40
    }
    table = {(s, o.plan): (900 - o.result.correct, o.result.macs_saved) for s, opts in options.items() for o in opts}

    def evaluate(plans, step, eps):
        lost = sum(table[(s, plan)][0] for s, plan in plans.items()) * 1.5  # joint effects are worse
        return EvalResult(900 - int(lost), 1000, sum(table[(s, plan)][1] for s, plan in plans.items()), 0)

    steps = forward_quantize([[0], [1]], options, BASE, evaluate, [0.5, 2.0], start=7)
    assert [t.step for t in steps] == list(range(7, 7 + len(steps)))
    assert all(t.stage == "refine" for t in steps)
    # eps 0.5 (5 images): site 1 -> option 4 (40 MACs per 1 lost) loses 1 jointly: kept; site 0 -> option 2
    # loses (2 + 1) * 1.5 = 4: kept; site 1 -> option 3 loses 18: rejected, frozen; site 0 -> option 1
    # loses 31: rejected. eps 2 (20 images) starts there: site 1 -> option 3 (18) kept; site 0 -> 1 (45) rejected.
    assert [t.positions for t in steps] == [(2, 1), (1, 1), (1, 0), (0, 1), (1, 0), (0, 0)]
    assert pick(steps, BASE, 0.5).result.macs_saved == 100  # options 2 and 4: 60 + 40
    best_2 = pick(steps, BASE, 2.0)
    assert best_2.result.macs_saved == 150 and best_2.positions == (1, 0)


def test_forward_quantize_continues_from_a_seed_only_where_it_is_within_and_better():
    from crossneuron.search.quantize import forward_quantize

    options = {0: [opt(1, 880, 100), opt(2, 898, 60)], 1: [opt(3, 890, 90), opt(4, 899, 40)]}
    table = {(s, o.plan): (900 - o.result.correct, o.result.macs_saved) for s, opts in options.items() for o in opts}
    calls = []

    def evaluate(plans, step, eps):
        calls.append(dict(plans))
        lost = sum(table[(s, plan)][0] for s, plan in plans.items()) * 1.5
        return EvalResult(900 - int(lost), 1000, sum(table[(s, plan)][1] for s, plan in plans.items()), 0)

    # seed: options 2 and 3 (150 MACs, 18 images = 1.8 points lost): outside eps 0.5, within eps 2
    steps = forward_quantize([[0], [1]], options, BASE, evaluate, [0.5, 2.0], start=3, seed={0: 1, 1: 0})
    assert steps[0].step == 3 and steps[0].moved is None and steps[0].positions == (1, 0)
    # eps 0.5 runs as without a seed; eps 2 continues from the seed (150 > 100): site 0 -> option 1 rejected
    assert [t.positions for t in steps[1:]] == [(2, 1), (1, 1), (1, 0), (0, 1), (0, 0)]
    assert pick(steps, BASE, 2.0).result.macs_saved == 150
    assert pick(steps, BASE, 0.5).result.macs_saved == 100
    # a seed outside every eps is evaluated once and never continued from
    calls.clear()
    steps = forward_quantize([[0], [1]], options, BASE, evaluate, [0.5, 2.0], seed={0: 0, 1: 0})
    assert steps[0].positions == (0, 0) and not any(t.positions == (0, 0) for t in steps[1:-1])
    assert [t.positions for t in steps[1:]] == [(2, 1), (1, 1), (1, 0), (0, 1), (1, 0), (0, 0)]


def test_pick_never_takes_a_step_cut_short():
    from crossneuron.search.quantize import Step

    cut = Step(1, 0, (0,), EvalResult(900, 1000, 500, 0, cut_short=True))
    fine = Step(2, 0, (1,), EvalResult(899, 1000, 100, 0))
    assert pick([cut, fine], BASE, 50.0) is fine


def test_pick_passes_by_steps_found_for_a_larger_eps():
    from crossneuron.search.quantize import Step

    layer = Step(0, None, (0,), EvalResult(900, 1000, 100, 0))  # the layer quantizer's: a candidate at every eps
    small = Step(1, None, (1,), EvalResult(897, 1000, 200, 0), "milp", 0.5)
    large = Step(2, None, (2,), EvalResult(896, 1000, 300, 0), "milp", 3.0)  # within 0.5 too, but found for 3
    steps = [layer, small, large]
    assert pick(steps, BASE, 0.0) is layer  # small was found for 0.5 (and is not within 0 either)
    assert pick(steps, BASE, 0.5) is small  # large saves more within 0.5: a candidate only from eps 3
    assert pick(steps, BASE, 3.0) is large
    assert pick([layer, large], BASE, 0.5) is layer
    assert pick(steps[:2], BASE, 0.5) is pick(steps, BASE, 0.5)  # eps 0.5 alike with or without eps 3's round


def test_forward_quantize_orders_moves_that_lose_no_accuracy_by_macs_per_misprediction():
    from crossneuron.search.quantize import forward_quantize, move_key

    def free(code, macs, mispredicted):  # isolated: the base accuracy
        return Option((Piece(None, None, code),), EvalResult(900, 1000, macs, mispredicted))

    # site 0: 50 MACs for 50 mispredictions (1 each); site 1: 40 MACs for 4 (10 each); site 2 loses 1 image
    options = {0: [free(1, 50, 50)], 1: [free(2, 40, 4)], 2: [opt(3, 899, 1000)]}
    order = []

    def evaluate(plans, step, eps):
        order.append(sorted(plans))
        return EvalResult(900 - (1 if 2 in plans else 0), 1000, 0, 0)

    forward_quantize([[0], [1], [2]], options, BASE, evaluate, [1.0])
    # free moves first, the most MACs per misprediction first; then the one losing accuracy
    assert order == [[1], [0, 1], [0, 1, 2]]
    # keys: no gain last; a loss ranks by MACs per accuracy lost; a free move with no added misprediction first
    none = BASE
    assert move_key([none], [free(1, 0, 5).result]) == (0, 0.0)
    assert move_key([none], [opt(3, 899, 1000).result]) == (1, pytest.approx(1000 / 0.001))
    assert move_key([none], [free(1, 10, 0).result]) == (2, float("inf"))
    assert move_key([free(1, 10, 7).result], [free(2, 30, 9).result]) == (2, 10.0)


def _mo(code, macs, mispredicted, block):
    return Option((Piece(None, block, code),), EvalResult(900, 1000, macs, mispredicted))


def test_combine_slope_spends_mispredictions_where_they_buy_the_most_macs():
    from crossneuron.search.quantize import combine_slope

    # block 0: pattern 1 saves 100 for 90 mispredictions, pattern 2 saves 90 for 10; block 1: pattern 3
    # saves 50 for 5, pattern 4 saves 40 for 40 (dominated)
    subs = [[_mo(1, 100, 90, 0), _mo(2, 90, 10, 0)], [_mo(3, 50, 5, 1), _mo(4, 40, 40, 1)]]
    assert combine(subs)[1] == (Piece(None, 0, 2), Piece(None, 1, 4))  # rank: second everywhere
    # slope, 2 candidates: everything at its most saving option (as rank's first), then 75 of 150 MACs
    # reached along the hulls (block 1: 10 per misprediction, block 0: 9 then 10/80)
    assert combine_slope(subs) == [(Piece(None, 0, 1), Piece(None, 1, 3)), (Piece(None, 0, 2), Piece(None, 1, 3))]
    assert combine_slope(subs, 3)[-1] == (Piece(None, 1, 3),)  # 50 of 150 MACs: the cheapest third
    assert combine_slope([[], []]) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=3), min_size=1, max_size=3),
       st.integers(1, 5))  # fmt: skip
def test_combine_slope_candidates_are_pareto_optimal_and_decrease_in_macs(raw, count):
    import itertools

    from crossneuron.search.quantize import combine_slope

    subs = [[_mo(k + 1, g, m, i) for k, (g, m) in enumerate(opts)] for i, opts in enumerate(raw)]
    cost = {o.plan[0]: (o.result.macs_saved, o.result.mispredicted) for opts in subs for o in opts}

    def totals(plan):
        return sum(cost[p][0] for p in plan), sum(cost[p][1] for p in plan)

    every = [totals(tuple(o.plan[0] for o in pick_ if o is not None))
             for pick_ in itertools.product(*[[None, *opts] for opts in subs])]  # fmt: skip
    got = [totals(plan) for plan in combine_slope(subs, count)]
    assert len(got) <= count
    assert all(a[0] > b[0] for a, b in zip(got, got[1:], strict=False))  # the most saving first, strictly
    for g, m in got:  # no assignment saves at least as much with fewer mispredictions, or more with as few
        assert not any((g2 >= g and m2 < m) or (g2 > g and m2 <= m) for g2, m2 in every)
    if any(g > 0 for opts in raw for g, _ in opts):
        assert got[0][0] == sum(max((g for g, _ in opts), default=0) for opts in raw)
