"""How the MNIST benchmarks judge a compressed network, shared with the tests that check it.

``benchmarks/deep_compression_mnist.py`` (and ``bench_channels.py``'s error) measure with these; the
suite (``tests/test_dc_mnist.py``) checks them on synthetic data, so a claim such as "+0.10 points over
folds 11, 3 and 7" rests on tested arithmetic: which images a fold holds out, the error and
cross-entropy over batches, how many predictions compression changed, the means over runs.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from sqc.runtime.data import Dataset

VALIDATION = 5_000
"""Training images held out in ``--validate`` mode (one fold)."""
FOLDS = 60_000 // VALIDATION


def fold_split(x_train: torch.Tensor, y_train: torch.Tensor, fold: int = FOLDS - 1) -> Dataset:
    """Fold ``fold``'s 5,000 training images (0 = the first, 11 = the last, the default every earlier
    ``--validate`` run used) as the validation split, the others, in order, to fine-tune on."""
    low, high = fold * VALIDATION, (fold + 1) * VALIDATION
    keep = torch.cat([torch.arange(0, low), torch.arange(high, x_train.shape[0])])
    return Dataset(x_train[low:high], y_train[low:high], x_train[keep], y_train[keep])


def logits_of(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's outputs for ``x`` in eval mode, 1,000 samples at a time to bound memory; the
    metrics below are all computed from them."""
    module.eval()
    with torch.no_grad():
        return torch.cat([module(x[start : start + 1000]) for start in range(0, x.shape[0], 1000)])


def error_pct(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * int((logits_of(module, x).argmax(1) != y).sum()) / x.shape[0]


def changed_predictions(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> int:
    """How many top-1 predictions differ between two models: a direct, low-noise measure of how much
    compression changed the network (an error difference mixes it with the luck of the fp32 model)."""
    return int((logits_of(a, x).argmax(1) != logits_of(b, x).argmax(1)).sum())


def nll(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy: a less noisy companion to the error count when comparing recipes."""
    return float(F.cross_entropy(logits_of(module, x).double(), y))


def int_list(text: str) -> list[int]:
    """``"11,3,7"`` -> ``[11, 3, 7]`` (argparse type for --fold and --seed)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers separated by commas") from None


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each recipe's means over its runs (folds x seeds): the error change, the predictions changed and
    the ratio. One run of a recipe says little about it; the spread between bases is the larger part."""
    rows = []
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        runs = [r for r in results if r["recipe"] == recipe]
        rows.append(
            {
                "recipe": recipe,
                "runs": len(runs),
                "evaluated": runs[0]["evaluated"],
                "mean_delta_points": round(sum(r["delta_points"] for r in runs) / len(runs), 4),
                "mean_changed_predictions": round(sum(r["changed_predictions"] for r in runs) / len(runs), 2),
                "mean_ratio": round(sum(r["ratio"] for r in runs) / len(runs), 2),
            }
        )
    return rows
