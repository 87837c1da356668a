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
    net = cn.attach(getattr(torchvision.models, name)(weights=None), shape)
    assert net.network_macs == conv_linear_flops_over_two(getattr(torchvision.models, name)(), shape)


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
