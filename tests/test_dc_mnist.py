"""The measures of benchmarks/deep_compression_mnist.py (issue 3's report), in
``tests/models_pkg/sqc_mnist_eval.py``."""

from __future__ import annotations

import argparse

import pytest
import sqc_mnist_eval as dc  # tests/models_pkg, on the path (conftest.py)
import torch
import torch.nn as nn
import torch.nn.functional as F


def test_nll_is_the_mean_cross_entropy_over_batches_and_error_counts_wrong_argmax() -> None:
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
    torch.manual_seed(0)
    a = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    b = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.randn(2500, 3, 4)
    with torch.no_grad():
        expected = int((a(x).argmax(1) != b(x).argmax(1)).sum())
    assert 0 < expected < 2500
    assert dc.changed_predictions(a, b, x) == expected
    assert dc.changed_predictions(a, a, x) == 0


def test_validation_folds_partition_the_training_set() -> None:
    """Fold K holds out images K*5000..K*5000+4999 and fine-tunes on all the others, in order."""
    images = torch.arange(60_000, dtype=torch.float32).reshape(-1, 1, 1, 1)
    labels = torch.arange(60_000) % 10
    for fold in (0, 3, dc.FOLDS - 1):
        data = dc.fold_split(images, labels, fold)
        held = data.x_val.flatten().long()
        assert data.x_train is not None and data.y_train is not None
        train = data.x_train.flatten().long()
        assert torch.equal(held, torch.arange(fold * 5000, (fold + 1) * 5000))
        assert torch.equal(data.y_val, held % 10) and torch.equal(data.y_train, train % 10)
        assert train.numel() == 55_000 and bool((train[1:] > train[:-1]).all())
        assert not set(held.tolist()) & set(train.tolist())
    last = dc.fold_split(images, labels)  # the default is the split every earlier --validate run used
    assert last.x_train is not None and torch.equal(last.x_train.flatten().long(), torch.arange(55_000))


def test_fold_and_seed_lists_and_the_per_recipe_means() -> None:
    assert dc.int_list("11,3,7") == [11, 3, 7] and dc.int_list("0") == [0]
    with pytest.raises(argparse.ArgumentTypeError, match="expected integers"):
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
