"""Model registry: one table drives the CLI, configs and parametrised tests.

Every model takes ``num_classes``, ``input_shape`` (C, H, W) and a width multiplier. Inputs of
64 px or less get a CIFAR stem (3x3 conv, stride 1, no max-pool after it for the ResNets); larger
inputs get torchvision's ImageNet layout, whose state_dict keys and shapes match torchvision's so
its pretrained weights load (width 1, 3 input channels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torchvision.models import vgg as tv_vgg
from torchvision.models.resnet import BasicBlock, Bottleneck

from .errors import CrossneuronError

SMALL_INPUT = 64  # inputs of at most this many pixels a side get the CIFAR stem


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ResNet(nn.Module):
    """torchvision's ResNet (same blocks, same attribute names) with a width multiplier and a
    CIFAR stem option."""

    def __init__(self, block, layers, num_classes=1000, in_channels=3, width=1.0, small_input=False):
        super().__init__()
        self.inplanes = _scaled(64, width)
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, _scaled(64, width), layers[0], 1)
        self.layer2 = self._make_layer(block, _scaled(128, width), layers[1], 2)
        self.layer3 = self._make_layer(block, _scaled(256, width), layers[2], 2)
        self.layer4 = self._make_layer(block, _scaled(512, width), layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(_scaled(512, width) * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        out = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        out += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class TinyResNet(nn.Module):
    """A test-sized residual CNN from torchvision's BasicBlock: stem, one block at full resolution
    (identity shortcut), one at half resolution (1x1 downsample shortcut). Five sites."""

    def __init__(self, num_classes=10, in_channels=3, width=1.0, small_input=True):
        super().__init__()
        c1, c2 = _scaled(16, width), _scaled(32, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(c1, c1))
        down = nn.Sequential(nn.Conv2d(c1, c2, 1, 2, bias=False), nn.BatchNorm2d(c2))
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, 2, down))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c2, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(self.avgpool(x).flatten(1))


class AlexNet(nn.Module):
    """torchvision's AlexNet layout; for small inputs a CIFAR variant (layer table in
    docs/models.md) whose first feature map keeps the input size (32x32 on CIFAR)."""

    def __init__(self, num_classes=1000, in_channels=3, width=1.0, small_input=False):
        super().__init__()
        c = [_scaled(n, width) for n in (64, 192, 384, 256, 256)]
        if small_input:
            first, pool, hidden, grid = nn.Conv2d(in_channels, c[0], 3, 1, 1), 3, 1024, 3
        else:
            first, pool, hidden, grid = nn.Conv2d(in_channels, c[0], 11, 4, 2), 3, 4096, 6
        self.features = nn.Sequential(
            first, nn.ReLU(inplace=True), nn.MaxPool2d(pool, 2),
            nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(pool, 2),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(pool, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        hidden = _scaled(hidden, width)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(c[4] * grid * grid, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class VGG(nn.Module):
    """torchvision's VGG-16 with BatchNorm (its ``make_layers``); for small inputs the classifier
    is one Linear on globally pooled features, as usual on CIFAR."""

    def __init__(self, num_classes=1000, in_channels=3, width=1.0, small_input=False):
        super().__init__()
        cfg = [v if v == "M" else _scaled(v, width) for v in tv_vgg.cfgs["D"]]
        self.features = tv_vgg.make_layers(cfg, batch_norm=True)
        if in_channels != 3:
            self.features[0] = nn.Conv2d(in_channels, cfg[0], 3, padding=1)
        if small_input:  # ceil-mode pools keep a 1x1 map after five halvings of 28 px (MNIST)
            for i, m in enumerate(self.features):
                if isinstance(m, nn.MaxPool2d):
                    self.features[i] = nn.MaxPool2d(2, 2, ceil_mode=True)
        last = cfg[-2]
        if small_input:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Linear(last, num_classes)
        else:
            hidden = _scaled(4096, width)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(last * 49, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _resnet(block, layers):
    def build(num_classes, in_channels, width, small_input):
        return ResNet(block, layers, num_classes, in_channels, width, small_input)

    return build


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    summary: str
    sites: int  # site count (the torchvision model's, where there is one); parametrised tests use it


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("alexnet", AlexNet, "AlexNet (5 convs); CIFAR variant for small inputs", 5),
        ModelSpec("vgg16", VGG, "VGG-16 with BatchNorm (13 convs)", 13),
        ModelSpec("resnet18", _resnet(BasicBlock, [2, 2, 2, 2]), "ResNet-18, torchvision blocks", 17),
        ModelSpec("resnet34", _resnet(BasicBlock, [3, 4, 6, 3]), "ResNet-34, torchvision blocks", 33),
        ModelSpec("resnet50", _resnet(Bottleneck, [3, 4, 6, 3]), "ResNet-50, bottleneck blocks", 49),
        ModelSpec("resnet-tiny", TinyResNet, "two BasicBlocks (tests and quick trials)", 5),
    )
}
ALIASES = {"vgg16_bn": "vgg16"}


def model_names() -> list[str]:
    return list(MODELS)


def build_model(name: str, num_classes: int = 10, input_shape=(3, 32, 32), width: float = 1.0) -> nn.Module:
    """A fresh model from the registry (CIFAR stem when the input is at most 64 px a side), or from a
    user's factory or timm (``file.py:factory``, ``package.module:factory``, ``timm:name``: width 1)."""
    from .usermodels import build_user_model, is_user_model

    if is_user_model(name):
        if width != 1.0:
            raise CrossneuronError(f"--width applies to registry models only; {name} is built as its factory builds it")
        return build_user_model(name, num_classes)
    spec = MODELS.get(ALIASES.get(name, name))
    if spec is None:
        raise CrossneuronError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise CrossneuronError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    if not 0 < width <= 4:
        raise CrossneuronError(f"width multiplier must be in (0, 4], got {width}")
    c, h, w = input_shape
    small = max(h, w) <= SMALL_INPUT
    return spec.build(num_classes=num_classes, in_channels=c, width=width, small_input=small)


TORCHVISION_NAMES = {"alexnet": "alexnet", "vgg16": "vgg16_bn", "resnet18": "resnet18", "resnet34": "resnet34",
                     "resnet50": "resnet50"}  # fmt: skip


def load_pretrained(model: nn.Module, name: str, weights: str) -> None:
    """Load torchvision's pretrained ``weights`` (e.g. IMAGENET1K_V1) into a registry model built for
    ImageNet-size input, width 1, 3 channels, 1000 classes. Needs a network unless torch hub's
    cache (``$TORCH_HOME/hub/checkpoints``) already holds the file; never unpickles (weights_only)."""
    import torchvision

    tv_name = TORCHVISION_NAMES.get(ALIASES.get(name, name))
    if tv_name is None:
        raise CrossneuronError(f"{name} has no torchvision weights: choose one of {', '.join(TORCHVISION_NAMES)}")
    enum = torchvision.models.get_model_weights(tv_name)
    try:
        chosen = enum[weights]
    except KeyError:
        raise CrossneuronError(
            f"unknown weights '{weights}' for {name}: choose {', '.join(enum.__members__)}"
        ) from None
    try:
        state = chosen.get_state_dict(progress=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - network or file errors become one line
        raise CrossneuronError(f"could not get {name} weights {weights}: {' '.join(str(exc).split())[:200]}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise CrossneuronError(
            f"{name} {weights} fits only the ImageNet layout (input over {SMALL_INPUT} px, 3 channels, width 1, "
            f"1000 classes)"
        ) from None
