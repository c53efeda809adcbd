"""The examples' trained LeNets and MNIST images, for tests that lower real models on real inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MNIST = EXAMPLES / "mnist_test_1k.npz"


def lenet(name: str) -> nn.Module:
    """``LeNet300`` or ``LeNet5`` from ``examples/lenet.py`` with its trained weights, in eval mode."""
    spec = importlib.util.spec_from_file_location("sqc_examples_lenet", EXAMPLES / "lenet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, name)()
    model.load_state_dict(torch.load(EXAMPLES / f"{name.lower()}.pt", weights_only=True))
    return model.eval()


def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 1,000 MNIST test images (float32, (1000, 1, 28, 28)) and their labels."""
    with np.load(MNIST) as data:
        return data["x_val"], data["y_val"]
