"""ZAP (issue 19, item 2): the predictor's shapes and MACs, prediction against a direct computation,
label-free training, the threshold rule, the predictors' file."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import crossneuron as cn
from crossneuron.errors import CrossneuronError
from crossneuron.search.budget import get_budget
from crossneuron.zap import Predictor, Zap, choose_threshold, evaluate, loss, tiled


class Two(nn.Module):
    """conv 3->4 (3x3) -> ReLU -> conv 4->5 (3x3, stride 2) -> ReLU -> linear: two sites, 7x7 then 4x4."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.b(F.relu(self.a(x)))).flatten(1))


def _zap(p=3, seed=1):
    model = Two().eval()
    net = cn.attach(model, (3, 7, 7), p)
    zap = Zap(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pr in zap.predictors:
            for m in (pr.bn1, pr.bn2):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3 + 0.4)
    return model, net, zap.eval()


def test_tiled_pattern_and_predictor_macs():
    pat = cn.diagonal(3)
    t = tiled(pat, 7, 8)
    assert t.shape == (7, 8)
    assert all(bool(t[i, j]) == bool(pat[i % 3, j % 3]) for i in range(7) for j in range(8))
    pr = Predictor(4, t)
    x = torch.rand(2, 4, 7, 8)
    assert pr(x).shape == x.shape
    with FlopCounterMode(display=False) as fc:  # the first depthwise conv, dense: torch's own count
        pr.conv1(x[:1])
    dense = fc.get_total_flops() // 2
    assert dense == 9 * 4 * 7 * 8
    assert pr.macs() == dense + 9 * 4 * int((~t).sum())  # the second only where the mask does not compute
    assert int((~t).sum()) == 56 - sum(bool(pat[i % 3, j % 3]) for i in range(7) for j in range(8))


def test_predictor_reads_only_computed_positions():
    t = tiled(cn.diagonal(2), 6, 6)
    pr = Predictor(3, t).eval()
    x = torch.rand(1, 3, 6, 6)
    y = x.clone()
    y[:, :, ~t] = 5.0  # change only the positions the mask does not compute
    assert torch.equal(pr(x), pr(y))


def test_prediction_against_a_direct_computation():
    model, net, zap = _zap()
    x = torch.randn(6, 3, 7, 7)
    t = 0.4
    with torch.no_grad(), zap.predicting(t) as read:
        out = net(x)
        counts = read()
    # by hand: run the model layer by layer, dropping what each predictor scores at or below t
    with torch.no_grad():
        a = F.relu(model.a(x))
        d1 = ~zap.predictors[0].computed & (zap.predictors[0](a) <= t)
        a2 = a.masked_fill(d1, 0)
        b = F.relu(model.b(a2))
        d2 = ~zap.predictors[1].computed & (zap.predictors[1](b) <= t)
        ref = model.fc(b.masked_fill(d2, 0).flatten(1))
    assert torch.allclose(out, ref, atol=1e-6)
    macs_a, macs_b = 3 * 9, 4 * 9  # MACs per output: C_in x k x k
    assert counts.macs_saved == int(d1.sum()) * macs_a + int(d2.sum()) * macs_b
    assert counts.predicted == int(d1.sum() + d2.sum())
    assert counts.mispredicted == int((d1 & (a != 0)).sum() + (d2 & (b != 0)).sum())
    assert 0 < counts.predicted < d1.numel() + d2.numel()
    assert counts.images == 6
    assert counts.overhead_macs == sum(
        9 * c * h * w + 9 * c * int((~pr.computed).sum())
        for pr, (c, h, w) in zip(zap.predictors, [(4, 7, 7), (5, 4, 4)], strict=True)
    )
    net_pct = 100 * (counts.macs_saved / 6 - counts.overhead_macs) / net.network_macs
    assert counts.net_saved_pct_network == pytest.approx(net_pct)


def test_loss_by_hand():
    computed = torch.tensor([[True, False], [False, True]])
    x = torch.tensor([[[[0.0, 2.0], [0.0, 1.0]]]])
    s = torch.tensor([[[[9.0, 0.25], [-1.0, 0.5]]]])
    # free positions: (0, 1) target 1, score 0.25 -> 0.5625; (1, 0) target 0, clamp(-1) = 0 -> 0
    assert float(loss(s, x, computed)) == pytest.approx(0.5625 / 2)


def test_fit_learns_the_zero_map_and_resumes_to_the_same_weights(ckpt, tmp_path):
    """Training lowers the loss and is reproducible by seed; a training killed after its second epoch
    goes on from its snapshot to the weights an uninterrupted one reaches, then removes the snapshot."""
    from crossneuron.context import open_checkpoint

    ctx = open_checkpoint(ckpt)
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    zap = Zap(net)
    x, _ = ctx.data("train")
    torch.rand(7)  # the global generator moved on: the predictors' weights depend on their seed alone
    history = zap.fit(x[:256], ctx.spec, epochs=3, lr=0.01, batch_size=64)
    assert len(history) == 3 and history[-1] < history[0]
    again, state = Zap(cn.attach(ctx.model, ctx.spec.input_shape, 2)), tmp_path / "zap.state"

    def killed(line):
        if line.startswith("ZAP epoch 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        again.fit(x[:256], ctx.spec, epochs=3, lr=0.01, batch_size=64, log=killed, state=state)
    assert state.exists()
    lines = []
    again = Zap(cn.attach(ctx.model, ctx.spec.input_shape, 2))  # a new process: fresh predictors and optimiser
    resumed = again.fit(x[:256], ctx.spec, epochs=3, lr=0.01, batch_size=64, log=lines.append, state=state)
    assert resumed == history  # same seed, same training, through the kill
    assert lines[0] == "ZAP: resumed after epoch 2/3" and len(lines) == 2
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), zap.state_dict().values(), strict=True))
    assert not state.exists()
    # trained, the scores separate the true zeros from the non-zeros on unseen images
    xv, yv = ctx.data("val")
    r_lo, c_lo, _ = evaluate(zap, xv[:100], yv[:100], ctx.spec, 0.2)
    r_hi, c_hi, _ = evaluate(zap, xv[:100], yv[:100], ctx.spec, 0.8)
    assert c_lo.predicted < c_hi.predicted  # a higher threshold predicts more
    assert c_hi.mispredicted_rate < 50


def test_masks_and_zap_do_not_mix():
    _, net, zap = _zap()
    net.set_mask(0, cn.diagonal(3))
    with pytest.raises(CrossneuronError, match="without spatial masks"):
        with zap.predicting(0.5):
            pass


def test_choose_threshold_follows_the_budget(ckpt):
    from crossneuron.context import open_checkpoint

    ctx = open_checkpoint(ckpt)
    zap = Zap(cn.attach(ctx.model, ctx.spec.input_shape, 2))
    x, _ = ctx.data("train")
    zap.fit(x[:128], ctx.spec, epochs=1, lr=0.01, batch_size=64)
    xv, yv = ctx.data("val")
    xv, yv = xv[:100], yv[:100]
    grid = (0.1, 0.5, 0.9, 1.5)
    for eps in (0.0, 2.0, 100.0):
        t, rows = choose_threshold(zap, xv, yv, ctx.spec, eps, get_budget("net"), grid)
        assert [r["threshold"] for r in rows] == list(grid)
        for r in rows:  # the net rule by hand: calibration drop within eps
            assert r["within"] == (r["drop"] <= eps + 1e-9)
        ok = [r for r in rows if r["within"]]
        if ok:
            assert t == max(ok, key=lambda r: r["macs_saved_pct_network"])["threshold"]
        else:
            assert t is None
    assert all(r["within"] for r in rows)  # eps 100: everything within; the largest saving, smallest on a tie
    assert t == max(rows, key=lambda r: (r["macs_saved_pct_network"], -r["threshold"]))["threshold"]
    assert rows[-1]["macs_saved_pct_network"] > rows[0]["macs_saved_pct_network"]  # a higher threshold predicts more


def test_save_and_load(tmp_path):
    _, net, zap = _zap()
    zap.save(tmp_path / "zap.safetensors")
    again = Zap.load(net, tmp_path / "zap.safetensors")
    x = torch.rand(2, 4, 7, 7)
    assert torch.equal(again.predictors[0](x), zap.predictors[0](x))
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(CrossneuronError, match="cannot read ZAP predictors"):
        Zap.load(net, tmp_path / "bad.safetensors")
    with pytest.raises(CrossneuronError, match="another patch size"):
        Zap.load(cn.attach(Two(), (3, 7, 7), 2), tmp_path / "zap.safetensors")


def test_per_site_thresholds_at_equal_miss_rates_against_a_direct_count():
    from crossneuron.zap import _BINS, miss_rate_thresholds

    model, net, zap = _zap()
    x = torch.randn(40, 3, 7, 7)
    rates = (0.01, 0.1, 0.3)
    got = miss_rate_thresholds(zap, x, None, rates, batch_size=16)
    with torch.no_grad():  # the scores at the true non-zeros each site would predict, by hand
        a = F.relu(model.a(x))
        b = F.relu(model.b(a))
        scores = [pr(m)[(m > 0) & ~pr.computed.expand_as(m)] for pr, m in zip(zap.predictors, (a, b), strict=True)]
    for r in rates:
        for site, (t, sc) in enumerate(zip(got[r], scores, strict=True)):
            share = float((sc <= t).double().mean())
            assert share <= r + 1e-12, (site, r)  # at most r of the non-zeros predicted
            finer = _BINS[_BINS > t]
            if len(finer):  # and the next grid point would predict more than r
                assert float((sc <= finer[0]).double().mean()) > r, (site, r)
    assert got[0.01][0] <= got[0.1][0] <= got[0.3][0]
    with pytest.raises(CrossneuronError, match="1 ZAP thresholds for 2 sites"):
        with zap.predicting([0.1]):
            pass
