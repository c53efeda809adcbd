"""Shared fixtures: small models with the shapes real models have, and a CLI runner.

Tests import the *installed* sqc (pytest runs with --import-mode=importlib and the repository root is
not on sys.path), so they check what users get.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import settings

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS / "models_pkg"))

# Property tests draw the same examples on every run ("repeatable", the default: a commit's result
# does not depend on luck, in CI or here); SQC_HYPOTHESIS=explore draws new ones to look for bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("SQC_HYPOTHESIS", "repeatable"))


class MLP(nn.Module):
    """Two linear layers: the smallest thing with weights worth compressing."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 48)
        self.fc2 = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class FireNet(nn.Module):
    """Conv + BatchNorm + PReLU, a residual add, a Fire-style concat, pooling of every kind."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.act = nn.PReLU(16)
        self.squeeze = nn.Conv2d(16, 8, 1)
        self.expand1 = nn.Conv2d(8, 8, 1)
        self.expand3 = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4, stride=1)
        self.seq = nn.Conv1d(16, 8, 3, stride=2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8 + 16, 10)

    def forward(self, x: torch.Tensor, temperature: float = 1.0, use_pad: bool = True) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        s = F.relu(self.squeeze(x))
        fire = torch.cat([F.relu(self.expand1(s)), F.relu(self.expand3(s))], dim=1)
        x = x + fire  # residual over the Fire module
        x = F.max_pool2d(x, 2)
        if use_pad:
            x = F.pad(x, (1, 1, 1, 1))
        x = torch.sigmoid(self.dw(x)) * torch.tanh(x)
        x = F.avg_pool2d(x, 2)
        g = F.adaptive_avg_pool2d(x, 1).flatten(1)
        seq = self.seq(x.flatten(2))
        t = F.adaptive_max_pool1d(seq, 1).view(seq.size(0), -1)
        y = self.fc(self.drop(torch.cat([t, g], 1)))
        return F.softmax(y / temperature, dim=-1)


def seeded(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = factory().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def mlp() -> nn.Module:
    return seeded(MLP)


@pytest.fixture
def firenet() -> nn.Module:
    return seeded(FireNet)


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*argv: str | Path) -> Result:
    """Run the sqc CLI in-process, as the console script would."""
    from sqc.app.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main([str(a) for a in argv])
    return Result(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


@pytest.fixture
def models_dir() -> Path:
    """A directory with an importable module of factories (for --arch)."""
    return TESTS / "models_pkg"


@pytest.fixture
def workdir(tmp_path: Path, models_dir: Path, monkeypatch) -> Path:
    """The current directory: a state_dict of sqc_test_models:Small in ``small.pt``, the factory
    importable (``--arch sqc_test_models:Small``)."""
    monkeypatch.syspath_prepend(str(models_dir))
    monkeypatch.chdir(tmp_path)
    from sqc_test_models import Small

    torch.manual_seed(0)
    torch.save(Small().state_dict(), tmp_path / "small.pt")
    return tmp_path
