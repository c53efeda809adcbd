"""Reference models for compression experiments, with no torchvision dependency.

The zoo holds the networks the compression literature reports on — LeNet-300-100 and LeNet-5 (Deep
Compression's Caffe forms), AlexNet, VGG-16, ResNet-18, SqueezeNet v1.0 and v1.1 — plus a generator
over SqueezeNet's design space, so that sqc's figures can be set against published ones. Parameter
counts equal the published ones (the test suite checks every one), and parameter names follow the
layouts the published checkpoints use (torchvision's for the ImageNet networks, the paper's
``fc1``/``conv1`` for the LeNets, matching ``examples/lenet*.pt``), so real weights load with
``--arch sqc.models:resnet18`` or ``get_model("resnet18")``.

Every model traces with ``torch.fx`` into a plain graph (activations and pooling are written
functionally or as stateless modules, no data-dependent control flow) and carries an
``example_input_shape``, so sqc needs no ``--input-shape`` for it.

Build a big model without allocating its weights with ``with torch.device("meta"): get_model(...)``;
:func:`param_count` does that.

``python -m sqc.models`` lists the zoo with parameters and fp32 size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sqc.errors import SqcError

__all__ = [
    "VGG",
    "ZOO",
    "AlexNet",
    "Fire",
    "LeNet5",
    "LeNet300",
    "ResNet",
    "SqueezeNet",
    "alexnet",
    "get_model",
    "lenet5",
    "lenet300",
    "param_count",
    "resnet18",
    "squeezenet",
    "squeezenet1_0",
    "squeezenet1_1",
    "vgg16",
    "zoo_table",
]

IMAGENET_INPUT = (1, 3, 224, 224)
MNIST_INPUT = (1, 1, 28, 28)


# ------------------------------------------------------------------------------------------ LeNets


class LeNet300(nn.Module):
    """LeNet-300-100: a 784-300-100-10 perceptron with ReLU (266,610 parameters).

    The same architecture and parameter names as ``examples.lenet.LeNet300`` (the checkpoint
    ``examples/lenet300.pt`` loads into either). Accepts ``(N, 1, 28, 28)`` images or ``(N, 784)`` rows.
    """

    example_input_shape = MNIST_INPUT

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 in its Caffe form (431,080 parameters): conv 20@5x5, max-pool, conv 50@5x5, max-pool,
    fc 500, ReLU, fc 10 — no non-linearity after the convolutions, as in Caffe's prototxt.

    The same architecture and parameter names as ``examples.lenet.LeNet5`` (``examples/lenet5.pt``).
    """

    example_input_shape = MNIST_INPUT

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


# --------------------------------------------------------------------------------- AlexNet, VGG


class AlexNet(nn.Module):
    """AlexNet in its single-tower form (61,100,840 parameters for 1000 classes).

    Krizhevsky's original split the convolutions into two groups for two GPUs (60,965,224 parameters);
    the one-tower variant is what current checkpoints and the compression papers' tables count.
    Parameter names follow torchvision (``features.0``, ``classifier.1``...).
    """

    example_input_shape = IMAGENET_INPUT

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


VGG16_LAYERS: tuple[int | Literal["M"], ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman) from a layer list: integers are 3x3 convolutions, ``"M"`` max-pools.

    VGG-16 (configuration D, no BatchNorm) has 138,357,544 parameters for 1000 classes. Parameter
    names follow torchvision.
    """

    example_input_shape = IMAGENET_INPUT

    def __init__(
        self,
        layers: Sequence[int | Literal["M"]] = VGG16_LAYERS,
        num_classes: int = 1000,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        channels = 3
        for item in layers:
            if item == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            modules.append(nn.Conv2d(channels, int(item), kernel_size=3, padding=1))
            if batch_norm:
                modules.append(nn.BatchNorm2d(int(item)))
            modules.append(nn.ReLU(inplace=True))
            channels = int(item)
        self.features = nn.Sequential(*modules)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ------------------------------------------------------------------------------------------ ResNet


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers and a residual add; a 1x1 conv + BN ``downsample`` projects the
    shortcut when the stride or the width changes (He et al. 2016, option B)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet with basic blocks; ``blocks=(2, 2, 2, 2)`` is ResNet-18 (11,689,512 parameters for 1000
    classes, BatchNorm affine parameters included, running statistics not). Names follow torchvision."""

    example_input_shape = IMAGENET_INPUT

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 1000,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise SqcError(f"resnet: {len(blocks)} stage depths for {len(widths)} widths")
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = widths[0]
        for stage, (depth, width) in enumerate(zip(blocks, widths, strict=True), 1):
            layers = []
            for index in range(depth):
                stride = 2 if stage > 1 and index == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# -------------------------------------------------------------------------------------- SqueezeNet

Bypass = Literal["none", "simple", "complex"]


class Fire(nn.Module):
    """SqueezeNet's Fire module: a 1x1 squeeze layer feeding 1x1 and 3x3 expand layers whose outputs
    are concatenated along the channels, each followed by ReLU.

    ``bypass`` adds the module's input to its output (Iandola et al. 2016, section 6): ``"simple"`` is
    an identity shortcut (input and output widths must match), ``"complex"`` a 1x1 convolution
    (``bypass`` parameter) that projects the input to the output width.
    """

    def __init__(
        self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int, bypass: Bypass = "none"
    ) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.out_channels = expand1x1 + expand3x3
        self.shortcut = bypass
        if bypass == "simple" and in_channels != self.out_channels:
            raise SqcError(
                f"fire: a simple bypass needs equal widths, got {in_channels} in, {self.out_channels} out"
            )
        self.bypass = (
            nn.Conv2d(in_channels, self.out_channels, kernel_size=1) if bypass == "complex" else None
        )

    def forward(self, x: Tensor) -> Tensor:
        s = F.relu(self.squeeze(x))
        out = torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)
        if self.bypass is not None:
            return out + self.bypass(x)
        if self.shortcut == "simple":
            return out + x
        return out


class SqueezeNet(nn.Module):
    """SqueezeNet from the paper's design-space metaparameters (Iandola et al. 2016, section 5).

    Fire module ``i`` (0-based; the paper's fire2 is ``i = 0``) has ``e_i = base_e + incr_e *
    floor(i / freq)`` expand filters, a fraction ``pct_3x3`` of them 3x3 (rounded), and
    ``squeeze_ratio * e_i`` squeeze filters (rounded, at least 1). ``pools`` lists the Fire modules a
    3x3/2 max-pool precedes (0 = right after conv1). ``conv1`` is ``(filters, kernel)`` with stride 2.
    ``bypass``: ``"none"``; ``"simple"`` puts an identity shortcut around every Fire module whose input
    and output widths are equal (fire3, 5, 7, 9 in v1.0); ``"complex"`` adds a 1x1-conv shortcut around
    the others too. The classifier is dropout, a 1x1 conv to ``num_classes``, ReLU, global average pool.

    Parameter names follow torchvision (``features.3.squeeze``, ``classifier.1``), so v1.0/v1.1
    checkpoints load into :func:`squeezenet1_0`/:func:`squeezenet1_1`.
    """

    example_input_shape = IMAGENET_INPUT

    def __init__(
        self,
        base_e: int = 128,
        incr_e: int = 128,
        freq: int = 2,
        pct_3x3: float = 0.5,
        squeeze_ratio: float = 0.125,
        num_fire: int = 8,
        pools: Sequence[int] = (0, 3, 7),
        conv1: tuple[int, int] = (96, 7),
        bypass: Bypass = "none",
        num_classes: int = 1000,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if base_e < 1 or incr_e < 0 or freq < 1 or num_fire < 1:
            raise SqcError("squeezenet: base_e, freq and num_fire must be >= 1 and incr_e >= 0")
        if not 0.0 < pct_3x3 < 1.0 or not 0.0 < squeeze_ratio <= 1.0:
            raise SqcError("squeezenet: pct_3x3 must be in (0, 1) and squeeze_ratio in (0, 1]")
        if bypass not in ("none", "simple", "complex"):
            raise SqcError(f"squeezenet: bypass {bypass!r} is not one of none, simple, complex")
        if any(not 0 <= p <= num_fire for p in pools):
            raise SqcError(f"squeezenet: pool positions {tuple(pools)} must lie within 0..{num_fire}")
        self.config = {
            "base_e": base_e,
            "incr_e": incr_e,
            "freq": freq,
            "pct_3x3": pct_3x3,
            "squeeze_ratio": squeeze_ratio,
            "pools": tuple(pools),
            "bypass": bypass,
        }
        filters, kernel = conv1
        modules: list[nn.Module] = [
            nn.Conv2d(3, filters, kernel_size=kernel, stride=2),
            nn.ReLU(inplace=True),
        ]
        channels = filters
        for i in range(num_fire):
            if i in pools:
                modules.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            e = base_e + incr_e * (i // freq)
            e3 = round(e * pct_3x3)
            e1 = e - e3
            s = max(1, round(squeeze_ratio * e))
            if e1 < 1 or e3 < 1:
                raise SqcError(f"squeezenet: fire module {i} would have {e1} 1x1 and {e3} 3x3 expand filters")
            kind: Bypass = "none"
            if bypass != "none":
                kind = "simple" if channels == e else ("complex" if bypass == "complex" else "none")
            modules.append(Fire(channels, s, e1, e3, kind))
            channels = e
        if num_fire in pools:
            modules.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*modules)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv2d(channels, num_classes, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is self.classifier[1]:
                    nn.init.normal_(module.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# ----------------------------------------------------------------------------------- factories


def lenet300(num_classes: int = 10) -> LeNet300:
    return LeNet300(num_classes)


def lenet5(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes)


def alexnet(num_classes: int = 1000) -> AlexNet:
    return AlexNet(num_classes)


def vgg16(num_classes: int = 1000, batch_norm: bool = False) -> VGG:
    return VGG(VGG16_LAYERS, num_classes, batch_norm)


def resnet18(num_classes: int = 1000) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes)


def squeezenet(**options: Any) -> SqueezeNet:
    """The SqueezeNet design-space generator (see :class:`SqueezeNet` for the metaparameters)."""
    return SqueezeNet(**options)


def squeezenet1_0(num_classes: int = 1000, bypass: Bypass = "none") -> SqueezeNet:
    """SqueezeNet v1.0 (1,248,424 parameters): conv1 96@7x7/2, pools before fire2, fire5 and fire9."""
    return SqueezeNet(num_classes=num_classes, bypass=bypass)


def squeezenet1_1(num_classes: int = 1000, bypass: Bypass = "none") -> SqueezeNet:
    """SqueezeNet v1.1 (1,235,496 parameters, 2.4x less compute than v1.0): conv1 64@3x3/2 and the
    pools moved earlier (before fire2, fire4 and fire6)."""
    return SqueezeNet(pools=(0, 2, 4), conv1=(64, 3), num_classes=num_classes, bypass=bypass)


ZOO: dict[str, Callable[..., nn.Module]] = {
    "lenet300": lenet300,
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "squeezenet1_0": squeezenet1_0,
    "squeezenet1_1": squeezenet1_1,
    "squeezenet": squeezenet,
}
"""Zoo name -> factory. Any name works with ``--arch sqc.models:NAME``."""


def get_model(name: str, **options: Any) -> nn.Module:
    """Build zoo model ``name`` with ``options`` passed to its factory; unknown names list the valid ones."""
    factory = ZOO.get(name.replace("-", "_").lower())
    if factory is None:
        raise SqcError(f"unknown model {name!r} (zoo: {', '.join(ZOO)})")
    try:
        return factory(**options)
    except TypeError as exc:
        raise SqcError(f"model {name}: {exc}") from None


def param_count(name_or_factory: str | Callable[[], nn.Module], **options: Any) -> int:
    """Parameters of a zoo model, counted on the meta device: no memory for the weights, no init work."""
    with torch.device("meta"):
        model = (
            get_model(name_or_factory, **options)
            if isinstance(name_or_factory, str)
            else name_or_factory(**options)
        )
    return sum(p.numel() for p in model.parameters())


def zoo_table() -> list[dict[str, Any]]:
    """One row per zoo model: name, parameters, fp32 megabytes, example input shape."""
    rows = []
    for name in ZOO:
        with torch.device("meta"):
            model = get_model(name)
        params = sum(p.numel() for p in model.parameters())
        rows.append(
            {
                "name": name,
                "params": params,
                "fp32_mb": round(4 * params / 1e6, 2),
                "input": list(getattr(model, "example_input_shape", ())),
            }
        )
    return rows


def _main() -> None:
    print(f"{'model':<16}{'params':>14}{'fp32 MB':>10}  input")
    for row in zoo_table():
        shape = "x".join(map(str, row["input"]))
        print(f"{row['name']:<16}{row['params']:>14,}{row['fp32_mb']:>10.2f}  {shape}")
    print("\nuse any of them with --arch sqc.models:NAME")


if __name__ == "__main__":
    _main()
