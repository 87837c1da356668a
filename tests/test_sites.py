"""Site discovery (SPEC 1) on torchvision models and hand-made graphs."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import crossneuron as cn
from crossneuron.errors import CrossneuronError


@pytest.mark.parametrize(
    "name, count", [("resnet18", 17), ("resnet34", 33), ("resnet50", 49), ("vgg16_bn", 13), ("alexnet", 5)]
)
def test_torchvision_site_counts(name, count):
    model = getattr(torchvision.models, name)(weights=None)
    net = cn.attach(model, (3, 224, 224))
    assert len(net.sites) == count
    assert [s.index for s in net.sites] == list(range(count))
    assert len({s.name for s in net.sites}) == count


def test_registry_models_match_torchvision_counts():
    for name, spec in cn.MODELS.items():
        net = cn.attach(cn.build_model(name, 10, (3, 32, 32), width=0.25), (3, 32, 32))
        assert len(net.sites) == spec.sites, name


def test_basic_block_relu_called_twice_gives_two_sites_with_residual_macs():
    net = cn.attach(cn.build_model("resnet18", 10, (3, 32, 32)), (3, 32, 32))
    names = [s.name for s in net.sites]
    assert names[:3] == ["relu", "layer1.0.relu", "layer1.0.relu@1"]
    down = net.site("layer2.0.relu@1")  # conv2 (3x3, 128 in) plus the 1x1 downsample (64 in)
    assert down.convs == ("layer2.0.conv2", "layer2.0.downsample.0")
    assert down.macs_per_output == 128 * 9 + 64
    identity = net.site("layer2.1.relu@1")  # identity branch reaches an earlier ReLU: nothing
    assert identity.convs == ("layer2.1.conv2",) and identity.macs_per_output == 128 * 9
    assert net.site("relu").shape == (64, 32, 32)
    assert net.site("layer4.1.relu@1").shape == (512, 4, 4)


class Functional(nn.Module):
    """Functional, in-place and method ReLUs; a conv with two consumers; a ReLU after pooling."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.c = nn.Conv2d(4, 4, 1)
        self.d = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.a(x))  # site, 27
        x = torch.relu_(self.bn(self.b(x)))  # site, 4/2*9 = 18
        y = self.c(x)
        z = y.relu()  # not a site: c's output also feeds the sum below
        x = F.relu(F.max_pool2d(x, 2))  # not a site: pooling stops the walk
        w = F.relu(self.d(x) + F.interpolate(z + y, scale_factor=0.5), inplace=True)  # site via add, 36
        return w.mean((2, 3))


def test_functional_inplace_method_and_excluded_convs():
    net = cn.attach(Functional(), (3, 8, 8))
    assert [(s.name, s.macs_per_output, s.convs) for s in net.sites] == [
        ("relu", 27, ("a",)),
        ("relu@1", 18, ("b",)),
        ("relu@2", 36, ("d",)),
    ]
    assert net.sites[2].shape == (4, 4, 4)
    assert net.skipped == [  # the two ReLUs that are not sites, each with its reason
        (
            "relu (fx node relu_1)",
            "the output of c is also read elsewhere, so predicting zeros here saves none of its MACs",
        ),
        (
            "relu (fx node relu_2)",
            "the walk back to a conv stops at max_pool2d (only BatchNorm, identity-like ops, adds, channel "
                "concatenations and channel shuffles pass)",
        ),
    ]


class Concat(nn.Module):
    """A BN-ReLU after a concatenation of two convs (a site per slice), a ReLU on the input."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        return y.mean((2, 3)) + F.relu(x).mean((2, 3))[:, :1]


def test_activations_that_are_not_sites_say_why_never_a_wrong_count():
    net = cn.attach(Concat(), (3, 8, 8))
    assert [(s.name, s.per_channel) for s in net.sites] == [("relu", (27, 27, 3, 3))]
    assert net.skipped == [("relu (fx node relu_1)", "no conv lies between the model input and it")]


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.block = Branchy()

    def forward(self, x):
        return self.block(F.relu(self.conv(x)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace this
            return F.relu(self.conv(x))
        return x


def test_untraceable_module_is_named_with_the_leaf_fix():
    with pytest.raises(CrossneuronError) as info:
        cn.attach(Untraceable(), (3, 8, 8))
    message = str(info.value)
    assert "module 'block' (Branchy)" in message and "leaf_modules=['block']" in message
    assert "\n" not in message
    net = cn.attach(Untraceable(), (3, 8, 8), leaf_modules=["block"])  # the suggested fix works
    assert [s.name for s in net.sites] == ["relu"]
    net = cn.attach(Untraceable(), (3, 8, 8), leaf_modules=[Branchy])
    assert len(net.sites) == 1


def test_model_without_sites_and_bad_shapes_are_clear_errors():
    with pytest.raises(CrossneuronError, match="has no site"):
        cn.attach(nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.ReLU()), (3, 2, 2))
    with pytest.raises(CrossneuronError, match="does not run on input_shape"):
        cn.attach(cn.build_model("resnet18", 10, (3, 32, 32), 0.25), (1, 32, 32))
    with pytest.raises(CrossneuronError, match=r"input_shape must be \(C, H, W\)"):
        cn.attach(cn.build_model("resnet18", 10, (3, 32, 32), 0.25), (32, 32))
    with pytest.raises(CrossneuronError, match="unknown model 'resnet19'"):
        cn.build_model("resnet19")


class Shrink(nn.Module):
    """A user's zero-producing activation (declared with attach(..., activations=[Shrink]))."""

    def forward(self, x):
        return x * (x > 0.5)


def gate(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


class Activations(nn.Module):
    """Every zero-producing activation form, with look-alikes that are not (lower bound not 0)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4 if i else 3, 4, 3, padding=1) for i in range(14))
        self.w = nn.Parameter(torch.randn(4, 2, 3, 3))  # a functional grouped conv's weight
        self.six, self.tanh0, self.tanh = nn.ReLU6(), nn.Hardtanh(0.0, 2.0), nn.Hardtanh()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)  # depthwise
        self.shrink = Shrink()

    def forward(self, x):
        c = iter(self.convs)
        x = self.six(next(c)(x))  # site six, 27
        x = F.relu6(next(c)(x))  # site .relu6, 36
        x = self.tanh0(next(c)(x))  # site tanh0
        x = self.tanh(next(c)(x))  # not: lower bound -1
        x = F.hardtanh(next(c)(x), 0.0, 6.0)  # site .hardtanh
        x = F.hardtanh(next(c)(x))  # not: lower bound -1
        x = next(c)(x).clamp(min=0)  # site .clamp
        x = torch.clamp(next(c)(x), 0, 6)  # site .clamp@1
        x = next(c)(x).clamp_min(0.0)  # site .clamp@2
        x = next(c)(x).clamp(min=-1.0)  # not
        x = self.shrink(next(c)(x))  # site shrink (declared module)
        x = gate(next(c)(x))  # site .gate (declared function)
        x = next(c)(x).hardshrink()  # site .hardshrink (declared method)
        x = F.relu(F.conv2d(x, self.w, padding=1, groups=2))  # site .relu@1? no: first plain relu, 2*9
        x = F.relu6(self.dw(x))  # depthwise: 1*9
        return x.mean((2, 3))


def test_zero_producing_activations_beyond_relu_as_modules_functions_and_methods():
    model = Activations().eval()
    x = torch.randn(2, 3, 8, 8)
    net = cn.attach(model, (3, 8, 8), activations=[Shrink, gate, "hardshrink"])
    assert [(s.name, s.macs_per_output) for s in net.sites] == [
        ("six", 27), ("relu6", 36), ("tanh0", 36), ("hardtanh", 36), ("clamp", 36), ("clamp@1", 36),
        ("clamp@2", 36), ("shrink", 36), ("gate", 36), ("hardshrink", 36), ("relu", 18), ("relu6@1", 9),
    ]  # fmt: skip
    assert net.site("relu").convs == ("w",) and net.site("relu6@1").convs == ("dw",)
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)  # attaching changes nothing
    undeclared = [s.name for s in cn.attach(model, (3, 8, 8)).sites]
    assert undeclared == ["six", "relu6", "tanh0", "hardtanh", "clamp", "clamp@1", "clamp@2", "relu", "relu6@1"]


def test_smooth_activations_give_no_site_and_the_error_names_them():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 3), nn.GELU(), nn.Flatten())
    with pytest.raises(CrossneuronError, match="no zero-producing activation after a conv") as info:
        cn.attach(model, (3, 8, 8))
    assert str(info.value).endswith("; GELU, SiLU never output exact zeros")
