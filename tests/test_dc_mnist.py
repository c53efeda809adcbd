"""The error and cross-entropy helpers of benchmarks/deep_compression_mnist.py (issue 3's report)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "deep_compression_mnist.py"


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("deep_compression_mnist", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nll_is_the_mean_cross_entropy_over_batches_and_error_counts_wrong_argmax() -> None:
    dc = load_script()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.randn(2500, 3, 4)  # more than one 1000-sample batch, the last one partial
    y = torch.randint(0, 5, (2500,))
    with torch.no_grad():
        logits = model(x)
    assert abs(dc.nll(model, x, y) - float(F.cross_entropy(logits, y))) < 1e-5
    assert dc.error_pct(model, x, y) == 100.0 * float((logits.argmax(1) != y).sum()) / 2500
    assert not model.training  # both evaluate in eval mode
