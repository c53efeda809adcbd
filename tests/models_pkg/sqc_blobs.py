"""A task small MLPs learn in a few steps, shared by the training and loader tests."""

from __future__ import annotations

import torch
from torch import nn

from sqc.runtime.data import Dataset


def blobs(n: int = 256, seed: int = 0, spread: float = 3.0) -> Dataset:
    """Four separable Gaussian blobs in 64 dimensions: half for validation, half for training."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 64, generator=g) * spread
    y = torch.randint(0, 4, (n,), generator=g)
    x = centres[y] + torch.randn(n, 64, generator=g)
    return Dataset(x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))
