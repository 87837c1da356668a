"""SnaPEA's exact mode (issue 19) against a term-by-term loop over every output position."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crossneuron as cn
from crossneuron.snapea import measure, plan


class Tiny(nn.Module):
    """conv on the image (input may be negative: not eligible) -> ReLU -> 3x3 conv, BN with some negative
    scales, a 1x1 shortcut added -> ReLU -> max-pool -> grouped functional conv with bias -> ReLU."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 5, 3, padding=1, stride=1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.short = nn.Conv2d(4, 5, 1)
        self.w = nn.Parameter(torch.randn(6, 5, 2, 2))
        self.wb = nn.Parameter(torch.randn(6) * 0.1)
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([1.0, -0.5, 2.0, -1.5, 0.7]))
            self.bn.bias.copy_(torch.randn(5) * 0.2)
            self.bn.running_mean.copy_(torch.randn(5) * 0.1)
            self.bn.running_var.copy_(torch.rand(5) + 0.5)

    def forward(self, x):
        x = F.relu(self.a(x))
        x = F.relu(self.bn(self.b(x)) + self.short(x))
        x = F.max_pool2d(x, 2)
        x = F.conv2d(torch.cat([x, x], 1)[:, :5], self.w, self.wb, padding=1)
        return F.relu(x).mean((2, 3))


def loop_skipped(xin, w, z, pad, period):
    """Skipped MACs by the definition, one output position at a time (float64, stride 1): terms
    ``w[o] * x`` with positive weights first, then the rest by magnitude; start = z - all terms."""
    kh, kw = w.shape[2:]
    xp = F.pad(xin.double(), (pad, pad, pad, pad))
    skipped = 0
    for n in range(z.shape[0]):
        for o in range(w.shape[0]):
            flat = w[o].flatten()
            order = [k for k in range(len(flat)) if flat[k] > 0]
            rest = sorted((k for k in range(len(flat)) if flat[k] <= 0), key=lambda k: -abs(float(flat[k])))
            for i in range(z.shape[2]):
                for j in range(z.shape[3]):
                    terms = flat * xp[n, :, i : i + kh, j : j + kw].flatten()
                    s = float(z[n, o, i, j]) - float(terms.sum()) + sum(float(terms[k]) for k in order)
                    for t in range(len(rest) + 1):
                        if t % period == 0 and s < 0:
                            skipped += len(rest) - t
                            assert float(z[n, o, i, j]) <= 1e-9  # a position cut short really ends at or below 0
                            break
                        if t < len(rest):
                            s += float(terms[rest[t]])
    return skipped


@torch.no_grad()
def reference(model, x, period):
    """Both eligible sites of Tiny, recomputed by hand from the model's own modules."""
    x1 = F.relu(model.a(x))
    bn = model.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double()
    z1 = bn(model.b(x1)).double() + model.short(x1).double()
    w1 = model.b.weight.double() * scale[:, None, None, None]
    x2 = F.max_pool2d(F.relu(z1.float()), 2)
    z2 = F.conv2d(x2, model.w, model.wb, padding=1).double()
    return {"relu@1": loop_skipped(x1, w1, z1, 1, period), "relu@2": loop_skipped(x2, model.w.double(), z2, 1, period)}


@pytest.mark.parametrize("period", [1, 3])
def test_snapea_counts_match_the_loop_and_cut_only_positions_that_end_at_or_below_zero(period):
    torch.manual_seed(0)
    model = Tiny().eval()
    net = cn.attach(model, (3, 6, 6))
    x = torch.randn(3, 3, 6, 6)
    stats = measure(net, x, period=period)
    by_name = {s.name: s for s in stats.sites}
    assert [s.name for s in stats.sites] == ["relu", "relu@1", "relu@2"]
    assert not by_name["relu"].eligible and by_name["relu"].why == "its input can be negative"
    assert by_name["relu@1"].eligible and by_name["relu@1"].conv == "b" and by_name["relu@1"].macs_per_output == 36
    assert by_name["relu@2"].eligible  # a functional conv after pooling of a ReLU output (through a cat)
    ref = reference(model, x, period)
    assert by_name["relu@1"].macs_skipped == ref["relu@1"] > 0
    assert by_name["relu@2"].macs_skipped == ref["relu@2"] > 0
    assert by_name["relu@1"].computed == 3 * 5 * 36


def test_snapea_combined_with_masks_counts_only_computed_positions_and_never_more_than_both():
    torch.manual_seed(1)
    net = cn.attach(Tiny().eval(), (3, 6, 6))
    x = torch.randn(4, 3, 6, 6)
    alone = measure(net, x)
    net.set_mask("relu@1", cn.diagonal(2))
    net.reset_stats()
    both = measure(net, x)
    spatial = net.stats()
    assert both.sites[1].computed < alone.sites[1].computed
    combined = both.macs_skipped + spatial.macs_saved  # spatial statistics of the same pass
    assert combined <= alone.macs_skipped + spatial.macs_saved
    assert both.sites[1].macs_skipped <= alone.sites[1].macs_skipped
    with pytest.raises(ValueError, match="period"):
        measure(net, x, period=0)
    assert [s.eligible for s, _ in plan(net)] == [False, True, True]
    # with a site threshold (--zero-below) SnaPEA still counts exactly the positions the layer computes
    positions = x.shape[0] * 5 * 36
    net.set_threshold("relu@1", 0.3)
    net.reset_stats()
    tolerant = measure(net, x)
    site = net.stats().per_site[1]
    assert tolerant.sites[1].computed == positions - site.predicted
    assert tolerant.sites[1].computed < both.sites[1].computed  # it predicts more than the exact rule
