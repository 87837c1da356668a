"""Sites through the structures real networks use (SPEC 1): channel concatenation with per-slice MACs
per output, pre-activation BN-ReLU after a concatenation and after an add, grouped and depthwise
convs, channel shuffle; MACs per output by hand, saved and oracle MACs against a loop reference."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crossneuron as cn
from crossneuron.cli import site_table

from reference import predict_loop, run_capturing


class Structures(nn.Module):
    """Every site's MACs per output, channel by channel, is written next to it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)  # 3 * 9 = 27 per output
        self.grow = nn.Conv2d(4, 2, 3, padding=1, groups=2)  # grouped: 4 / 2 * 9 = 18
        self.side = nn.Conv2d(4, 3, 1)  # 4
        self.bn = nn.BatchNorm2d(9)
        self.dw = nn.Conv2d(9, 9, 3, padding=1, groups=9)  # depthwise: 9
        self.pw = nn.Conv2d(9, 6, 1)  # 9
        self.wide = nn.Conv2d(9, 6, 3, padding=1)  # 81
        self.proj = nn.Conv2d(9, 12, 1)  # 9
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        s = F.relu(self.stem(x))  # "relu": 27 everywhere
        # pre-activation after a concatenation: the first 4 channels are the stem's ReLU output (no
        # conv behind them here: 0), then grow's 2 (18) and side's 3 (4)
        y = F.relu(self.bn(torch.cat([s, self.grow(s), self.side(s)], 1)))  # "relu@1"
        z = F.relu(self.dw(y))  # "relu@2": 9 everywhere
        # a channel shuffle of pw's 6 (9) and wide's 6 (81) in 3 groups: output j * 3 + g reads input
        # g * 4 + j (inputs 0, 4, 8, 1, 5, 9, ...); the add puts proj's 9 on every channel
        u = F.channel_shuffle(torch.cat([self.pw(z), self.wide(z)], 1), 3)
        v = F.relu(u + self.proj(y))  # "relu@3"
        return self.head(v.mean((2, 3)))


EXPECTED = {
    "relu": [27] * 4,
    "relu@1": [0] * 4 + [18] * 2 + [4] * 3,
    "relu@2": [9] * 9,
    "relu@3": [(9 if i < 6 else 81) + 9 for i in (0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11)],
}


def test_the_shuffle_order_above_is_torchs():
    shuffled = F.channel_shuffle(torch.arange(12.0).view(1, 12, 1, 1), 3).flatten().tolist()
    assert shuffled == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Structures()
    with torch.no_grad():  # BN statistics that leave some of every map at zero
        m.train()
        for _ in range(3):
            m(torch.randn(8, 3, 8, 8))
    return m.eval()


def test_macs_per_output_channel_by_channel_are_the_hand_counts(model):
    net = cn.attach(model, (3, 8, 8), 2)
    assert {s.name: list(s.per_channel) for s in net.sites} == EXPECTED
    by = {s.name: s for s in net.sites}
    assert by["relu"].macs_per_output == 27 and by["relu@2"].macs_per_output == 9
    assert by["relu@1"].macs_per_output is None and by["relu@3"].macs_per_output is None  # slices differ
    assert by["relu@1"].convs == ("grow", "side") and by["relu@3"].convs == ("pw", "wide", "proj")
    assert by["relu@1"].slices == [(0, 4, 0), (4, 6, 18), (6, 9, 4)]
    assert all(s.macs == sum(EXPECTED[s.name]) * 64 for s in net.sites)
    row = next(r for r in site_table(net)["sites"] if r["name"] == "relu@1")
    assert row["macs_per_output"] is None and row["macs_per_output_by_slice"] == [[0, 4, 0], [4, 6, 18], [6, 9, 4]]
    # the whole network's MACs: every conv and the linear layer, by hand
    by_hand = 64 * (4 * 27 + 2 * 18 + 3 * 4 + 9 * 9 + 6 * 9 + 6 * 81 + 12 * 9) + 12 * 5
    assert net.network_macs == by_hand


@pytest.mark.parametrize("p", [2, 3])
def test_saved_and_oracle_macs_match_a_loop_reference_channel_by_channel(model, p):
    net = cn.attach(model, (3, 8, 8), p).eval()
    g = torch.Generator().manual_seed(p)
    for s in net.sites:
        net.set_mask(s, torch.rand(tuple(net.spatial(s).mask.shape), generator=g) < 0.4)
    x = torch.randn(6, 3, 8, 8, generator=g)
    captured = run_capturing(net, x)
    stats = net.stats()
    total_saved = 0
    for s in net.sites:
        a, mask = captured[s.index], net.spatial(s).mask
        saved = oracle = 0
        for c, macs in enumerate(EXPECTED[s.name]):
            _, predicted, _ = predict_loop(a[:, c : c + 1], mask[c : c + 1], p)
            saved += predicted * macs
            oracle += int((a[:, c] == 0).sum()) * macs
        site = stats.per_site[s.index]
        assert (site.macs_saved, site.oracle_macs, site.site_macs) == (saved, oracle, s.macs)
        total_saved += saved
    assert stats.macs_saved == total_saved > 0
    assert stats.macs_saved_pct_network == pytest.approx(100 * total_saved / (6 * net.network_macs))


def test_the_screen_counts_per_channel_macs_as_the_layer_does(model):
    from crossneuron.search.engine import NaiveEngine
    from crossneuron.search.plan import Piece, block_side, plan_mask
    from crossneuron.search.screen import Screen

    net = cn.attach(model, (3, 8, 8), 2)
    x = torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    naive = NaiveEngine(net, x, y, 10)
    sides = {s.index: block_side(s.shape[1], s.shape[2], 2, 0) for s in net.sites}
    screen = Screen(net, naive.batches, [1, 6], sides)
    for site in net.sites:
        shape = tuple(net.spatial(site).mask.shape)
        for piece in (Piece(None, None, 1), Piece(site.shape[0] - 1, None, 6), Piece(2, 0, 1)):
            exact = naive.evaluate({site.index: plan_mask((piece,), shape, 2, sides[site.index])})
            est = screen.estimate(site.index, (piece,))
            assert (est.macs_saved, est.mispredicted) == (exact.macs_saved, exact.mispredicted)


class Twice(nn.Module):
    """A conv read twice through one concatenation, and a shuffle written as view/transpose."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        t = self.a(x)
        y = F.relu(torch.cat([t, t], 1))  # predicting one copy's zero still needs the other computed
        s = self.b(x).view(-1, 2, 2, 8, 8).transpose(1, 2).reshape(-1, 4, 8, 8)
        return y.mean((2, 3)) + F.relu(s).mean((2, 3))[:, :4] + F.relu(self.b(x) * 1).mean((2, 3))


def test_what_cannot_be_counted_per_channel_is_skipped_with_its_reason():
    net = cn.attach(nn.Sequential(Twice(), nn.Unflatten(1, (4, 1, 1)), nn.Conv2d(4, 4, 1), nn.ReLU()), (3, 8, 8))
    assert [s.name for s in net.sites] == ["3"]
    assert net.skipped == [
        ("0.relu (fx node relu)", "a channel of 0.a reaches it through more than one channel, so no prediction "
                                  "saves its MACs"),
        ("0.relu (fx node relu_1)", "the walk back to a conv stops at reshape (only BatchNorm, identity-like ops, "
                                    "adds, channel concatenations and channel shuffles pass)"),
        ("0.relu (fx node relu_2)", "the walk back to a conv stops at mul (only BatchNorm, identity-like ops, "
                                    "adds, channel concatenations and channel shuffles pass)"),
    ]  # fmt: skip


def test_torchvision_densenet_counts_only_the_slice_its_last_layer_wrote():
    torchvision = pytest.importorskip("torchvision")
    net = cn.attach(torchvision.models.densenet121(num_classes=10).eval(), (3, 32, 32))
    site = net.site("features.transition1.relu")
    # 256 channels: the block input and layers 1-5 are read by later layers too (no saving), layer 6's
    # 32 channels come from its 3 x 3 conv over 128 channels alone
    assert site.slices == [(0, 224, 0), (224, 256, 128 * 9)]
    assert site.convs == ("features.denseblock1.denselayer6.conv2",)
    assert any("denselayer2.relu1" in name and "also read elsewhere" in why for name, why in net.skipped)


def test_snapea_names_a_concatenated_site_not_eligible(model):
    from crossneuron import snapea

    net = cn.attach(model, (3, 8, 8), 2)
    why = {s.name: s.why for s, _ in snapea.plan(net)}
    assert why["relu@1"] == why["relu@3"] == "its channel slices come from different convs (a concatenation)"
    assert "concatenation" not in why["relu@2"]


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d in short: a shape assert, functional batch norm, then the activation."""

    def __init__(self, c):
        super().__init__(c)
        self.act = nn.ReLU6()

    def forward(self, x):
        torch._assert(x.ndim == 4, "expected 4D input")
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return self.act(x)


def test_functional_batch_norm_and_shape_asserts_do_not_hide_a_site():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), BatchNormAct(4), nn.Conv2d(4, 4, 1, groups=2),
                          BatchNormAct(4)).eval()  # fmt: skip
    net = cn.attach(model, (3, 8, 8))
    assert [(s.name, s.macs_per_output, s.convs) for s in net.sites] == [("1.act", 27, ("0",)), ("3.act", 2, ("2",))]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)
