"""MAC accounting (SPEC 2), cross-checked against torch.utils.flop_counter."""

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import crossneuron as cn


def conv_linear_flops_over_two(model, input_shape):
    model = model.to("meta")
    x = torch.zeros(1, *input_shape, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    counts = counter.get_flop_counts()["Global"]
    ops = {"aten.convolution", "aten.addmm", "aten.mm"}
    return sum(v for k, v in counts.items() if str(k) in ops) // 2


TORCHVISION = ["resnet18", "resnet34", "resnet50", "vgg16_bn", "alexnet"]


@pytest.mark.parametrize("name", TORCHVISION)
@pytest.mark.parametrize("size", [224, 160])
def test_torchvision_network_macs_equal_flop_counter(name, size):
    shape = (3, size, size)
    model = getattr(torchvision.models, name)(weights=None)  # one instance: attach leaves it as it was
    net = cn.attach(model, shape)
    assert net.network_macs == conv_linear_flops_over_two(model, shape)


@pytest.mark.parametrize("name", list(cn.MODELS))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_registry_network_macs_equal_flop_counter(name, shape):
    net = cn.attach(cn.build_model(name, 10, shape, width=0.5), shape)
    assert net.network_macs == conv_linear_flops_over_two(cn.build_model(name, 10, shape, width=0.5), shape)
    assert 0 < net.site_macs < net.network_macs


def test_cifar_resnet18_reference_numbers():
    net = cn.attach(cn.build_model("resnet18", 10, (3, 32, 32)), (3, 32, 32))
    assert net.network_macs == 555_422_720
    assert net.site_macs == 555_417_600
    convs = dict(net.graph_module.named_modules())
    three = sum(
        s.positions * convs[c].in_channels * 9 for s in net.sites for c in s.convs if convs[c].kernel_size == (3, 3)
    )
    one = sum(s.positions * convs[c].in_channels for s in net.sites for c in s.convs if convs[c].kernel_size == (1, 1))
    assert three == 549_126_144 and one == 6_291_456


class FunctionalHead(torch.nn.Module):
    """A functional conv in front, a conv module with BN in the middle, a matmul and F.linear head."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
        self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.proj = torch.nn.Parameter(torch.randn(16, 12))
        self.fc_w = torch.nn.Parameter(torch.randn(10, 12))

    def forward(self, x):
        x = torch.nn.functional.relu(torch.nn.functional.conv2d(x, self.w1, padding=1, stride=2))
        x = torch.nn.functional.relu(self.bn(self.conv(x)))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.nn.functional.linear(torch.matmul(x, self.proj), self.fc_w)


def test_functional_convs_matmul_and_linear_heads_count_in_network_macs():
    """By hand, input 3x8x8: F.conv2d stride 2 -> 8x4x4 outputs of 3*3*3 MACs; conv 8->16 3x3 on 4x4 -> 16x4x4
    outputs of 8*3*3 MACs; matmul 16 -> 12; F.linear 12 -> 10. Counting modules only (before 0.4) gave the
    conv module's 18,432 alone."""
    net = cn.attach(FunctionalHead(), (3, 8, 8))
    by_hand = 8 * 4 * 4 * 27 + 16 * 4 * 4 * 72 + 16 * 12 + 12 * 10
    assert net.network_macs == by_hand == 22_200
    assert net.site_macs == 8 * 4 * 4 * 27 + 16 * 4 * 4 * 72  # both sites: F.conv2d contributes since 0.6
    stats = net.stats()
    assert stats.network_macs == by_hand
