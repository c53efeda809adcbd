"""The error and cross-entropy helpers of benchmarks/deep_compression_mnist.py (issue 3's report)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
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


def test_changed_predictions_counts_argmax_disagreements_over_batches() -> None:
    dc = load_script()
    torch.manual_seed(0)
    a = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    b = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.randn(2500, 3, 4)
    with torch.no_grad():
        expected = int((a(x).argmax(1) != b(x).argmax(1)).sum())
    assert 0 < expected < 2500
    assert dc.changed_predictions(a, b, x) == expected
    assert dc.changed_predictions(a, a, x) == 0


def test_validation_folds_partition_the_training_set(monkeypatch) -> None:
    """Fold K holds out images K*5000..K*5000+4999 and fine-tunes on all the others, in order."""
    dc = load_script()
    images = torch.arange(60_000, dtype=torch.float32).reshape(-1, 1, 1, 1)
    labels = torch.arange(60_000) % 10
    monkeypatch.setattr(dc, "load_mnist", lambda split: (images, labels))
    for fold in (0, 3, dc.FOLDS - 1):
        data, where = dc.datasets(True, fold)
        held = data.x_val.flatten().long()
        train = data.x_train.flatten().long()
        assert torch.equal(held, torch.arange(fold * 5000, (fold + 1) * 5000))
        assert train.numel() == 55_000 and bool((train[1:] > train[:-1]).all())
        assert not set(held.tolist()) & set(train.tolist())
        assert f"fold {fold}" in where
    last, _ = dc.datasets(True)  # the default is the split every earlier --validate run used
    assert torch.equal(last.x_train.flatten().long(), torch.arange(55_000))


def test_fold_and_seed_lists_and_the_per_recipe_means() -> None:
    dc = load_script()
    assert dc.int_list("11,3,7") == [11, 3, 7] and dc.int_list("0") == [0]
    with pytest.raises(dc.argparse.ArgumentTypeError, match="expected integers"):
        dc.int_list("11,x")  # argparse turns this into a one-line usage error

    def run(recipe: str, delta: float, changed: int, ratio: float) -> dict:
        return {
            "recipe": recipe,
            "delta_points": delta,
            "changed_predictions": changed,
            "ratio": ratio,
            "evaluated": 5000,
        }

    rows = dc.aggregate([run("a", 0.1, 30, 40.0), run("b", -0.02, 10, 50.0), run("a", 0.0, 20, 42.0)])
    assert rows == [
        {
            "recipe": "a",
            "runs": 2,
            "evaluated": 5000,
            "mean_delta_points": 0.05,
            "mean_changed_predictions": 25.0,
            "mean_ratio": 41.0,
        },
        {
            "recipe": "b",
            "runs": 1,
            "evaluated": 5000,
            "mean_delta_points": -0.02,
            "mean_changed_predictions": 10.0,
            "mean_ratio": 50.0,
        },
    ]
