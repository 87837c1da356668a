"""The Python API: attach, masks, statistics, and the model left exactly as it was."""

import copy

import pytest
import torch

import crossneuron as cn
from crossneuron.errors import CrossneuronError

from conftest import sparse_relu_map
from reference import predict_loop, run_capturing


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = cn.build_model("resnet18", 10, (3, 16, 16), width=0.125)
    with torch.no_grad():  # non-trivial BN statistics, so that eval mode differs from train mode
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, 16, 16))
    return model.eval()


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_attach_shares_parameters_and_leaves_model_bit_identical(small):
    x = torch.randn(4, 3, 16, 16)
    before_state, before_out = _snapshot(small), small(x)
    net = cn.attach(small, (3, 16, 16), patch_size=2).eval()
    assert {id(p) for p in net.parameters()} >= {id(p) for p in small.parameters()}
    assert torch.equal(net(x), before_out)  # no masks: same outputs
    for s in net.sites:
        net.set_mask(s, cn.diagonal(2))
    predicted = net(x)
    assert not torch.equal(predicted, before_out)
    del net
    after = _snapshot(small)
    assert after.keys() == before_state.keys()
    assert all(torch.equal(after[k], before_state[k]) for k in after)
    assert torch.equal(small(x), before_out)
    assert not any("crossneuron" in name for name, _ in small.named_modules())


def test_stats_match_a_loop_over_sites(small):
    net = cn.attach(small, (3, 16, 16), patch_size=2).eval()
    g = torch.Generator().manual_seed(1)
    for s in net.sites:
        c, h, w = net.spatial(s).mask.shape
        net.set_mask(s, torch.rand(c, h, w, generator=g) < 0.5)
    x = torch.randn(3, 3, 16, 16)
    captured = run_capturing(net, x)
    stats = net.stats()
    saved = oracle = mis = 0
    for s in net.sites:
        _, pred, wrong = predict_loop(captured[s.index], net.spatial(s).mask, 2)
        site = stats.per_site[s.index]
        assert (site.predicted, site.mispredicted) == (pred, wrong)
        saved += pred * s.macs_per_output
        mis += wrong
        oracle += int((captured[s.index] == 0).sum()) * s.macs_per_output
    assert (stats.macs_saved, stats.oracle_macs, stats.mispredicted, stats.images) == (saved, oracle, mis, 3)
    assert stats.site_macs == net.site_macs and stats.network_macs == net.network_macs
    assert 0 < stats.macs_saved_pct_network < stats.macs_saved_pct_sites
    assert stats.macs_saved_pct_network == pytest.approx(100 * saved / (3 * net.network_macs))
    net(x)  # statistics accumulate since the last reset
    assert net.stats().images == 6
    net.reset_stats()
    assert net.stats().images == 0 and net.stats().macs_saved == 0


def test_set_mask_forms_are_equivalent(small):
    net = cn.attach(small, (3, 16, 16), patch_size=2)
    site = net.sites[3]
    c, hp, wp = net.spatial(site).mask.shape
    net.set_mask(site.name, torch.tensor([[True, False], [False, True]]))
    tiled = net.spatial(site).mask.clone()
    assert torch.equal(tiled, cn.diagonal(2).repeat(c, hp // 2, wp // 2))
    net.set_mask(site.index, None)
    assert net.spatial(site).mask.all()
    net.set_mask(site, tiled[0])  # (Hp, Wp) for every channel
    assert torch.equal(net.spatial(site).mask, tiled)
    buffer = net.spatial(site).mask
    net.set_mask(site, torch.ones(c, hp, wp, dtype=torch.bool))
    assert net.spatial(site).mask is buffer  # changed in place


@pytest.mark.parametrize("seed", range(4))
def test_odd_sizes_pad_and_never_count_padding(seed):
    """5x7 maps with p = 3 pad to 6x9: the counts equal the loop reference's, which treats padding as zero
    and counts only positions inside the real 5x7 (so they cannot exceed 2 images x 2 channels x 35)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU())
    net = cn.attach(model, (1, 5, 7), patch_size=3)
    assert net.spatial(0).mask.shape == (2, 6, 9)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 6, 9, generator=g) < 0.4
    net.set_mask(0, mask)
    x = sparse_relu_map((2, 1, 5, 7), zero_fraction=0.5, seed=seed) - 0.5
    with torch.no_grad():
        relu = model(x)
        out = net(x)
    expected, predicted, mispredicted = predict_loop(relu, mask, 3)
    stats = net.stats().per_site[0]
    assert torch.equal(out, expected)
    assert (stats.predicted, stats.mispredicted) == (predicted, mispredicted)
    assert stats.zeros == int((relu == 0).sum())  # the oracle: true zeros inside 5x7 only
    assert stats.macs_saved == predicted * 9 and predicted <= 2 * 2 * 35


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda n: n.set_mask(0, torch.ones(2, 2)), "must be bool"),
        (lambda n: n.set_mask(0, torch.ones(3, 3, dtype=torch.bool)), "patch_size=2"),
        (lambda n: n.set_mask(0, torch.ones(5, 16, 16, dtype=torch.bool)), r"must be bool \(C, Hp, Wp\)"),
        (lambda n: n.set_mask("nope", None), "unknown site 'nope'"),
        (lambda n: n.set_mask(99, None), "unknown site 99"),
        (lambda n: n(torch.zeros(1, 3, 8, 8)), r"input must be \(N, 3, 16, 16\)"),
    ],
)
def test_bad_input_names_what_was_expected(small, call, message):
    net = cn.attach(small, (3, 16, 16), patch_size=2)
    with pytest.raises(CrossneuronError, match=message):
        call(net)


def test_bad_patch_size_is_refused(small):
    with pytest.raises(CrossneuronError, match="from 2 to 5"):
        cn.attach(small, (3, 16, 16), patch_size=1)


def test_training_through_the_net_updates_the_shared_model():
    model = cn.build_model("resnet18", 10, (3, 16, 16), width=0.125)
    reference = copy.deepcopy(model)
    net = cn.attach(model, (3, 16, 16)).train()
    for s in net.sites:
        net.set_mask(s, cn.diagonal(2))
    loss = net(torch.randn(4, 3, 16, 16)).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not torch.equal(model.bn1.running_mean, reference.bn1.running_mean)
