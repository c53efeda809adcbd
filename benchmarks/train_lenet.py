"""Train the reference LeNet-300-100 and LeNet-5 checkpoints and write the 1k MNIST demo subset.

sqc needs small, trained, uncompressed baselines whose accuracy is close to what Deep Compression
reports (98.36% / 99.20% top-1), so that the accuracy cost of each compression pass can be measured
against a known starting point. This script produces them reproducibly on a 2-core CPU box in a few
minutes: fixed seeds, a single process, two intra-op threads, deterministic algorithms, and a fixed
shuffling generator, so a rerun on the same machine and torch build gives the same weights.

Recipe (fixed up front, no validation split): SGD with Nesterov momentum 0.9, batch 64, a linear
warm-up for the first half epoch then cosine decay to zero, and L2 weight decay. The weight decay
is there on purpose: it pulls unimportant weights towards zero, which makes magnitude pruning later
on far less damaging. No data augmentation and no input normalisation (inputs are ``x / 255``),
matching the convention the compiler and demo data use.

Usage::

    python benchmarks/train_lenet.py [--out examples] [--epochs N] [--mnist DIR]

Outputs in ``--out``: ``lenet300.pt`` and ``lenet5.pt`` (plain state_dicts of contiguous float32
tensors, loadable with ``torch.load(path, weights_only=True)``) and ``mnist_test_1k.npz`` (the
first 1,000 t10k images/labels as ``x_val`` float32 (1000, 1, 28, 28) and ``y_val`` int64 (1000,),
compressed, no pickled objects).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from a checkout: make ``examples`` and ``benchmarks`` importable without
# installing anything.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.mnist import load_mnist  # noqa: E402
from examples.lenet import LeNet5, LeNet300  # noqa: E402

SUBSET_SIZE = 1000
THREADS = 2


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters for one model; kept per model because the conv net wants fewer epochs."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int = 64
    momentum: float = 0.9
    warmup_epochs: float = 0.5


RECIPES: dict[str, Recipe] = {
    "lenet300": Recipe(epochs=20, lr=0.05, weight_decay=1e-4),
    "lenet5": Recipe(epochs=10, lr=0.05, weight_decay=5e-4),
}


def set_determinism(seed: int) -> None:
    """Pin every source of nondeterminism we control on CPU."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up then cosine decay to 0; warm-up keeps the first large-LR steps from diverging."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in [0, 1], evaluated in eval mode and in batches to bound memory."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def train(
    name: str,
    model: nn.Module,
    recipe: Recipe,
    x: Tensor,
    y: Tensor,
    seed: int,
    x_test: Tensor,
    y_test: Tensor,
) -> nn.Module:
    """Minibatch SGD over ``recipe.epochs`` epochs, printing test accuracy after each epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    warmup = max(1, int(recipe.warmup_epochs * steps_per_epoch))
    step = 0
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=gen)
        running = 0.0
        for i in range(0, len(x), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, recipe.lr)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item() * len(idx)
            step += 1
        acc = accuracy(model, x_test, y_test)
        print(
            f"  {name} epoch {epoch + 1:2d}/{recipe.epochs}: loss {running / len(x):.4f}  "
            f"test {100 * acc:.2f}%  ({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    return model


def save_state_dict(model: nn.Module, path: Path) -> None:
    """Save detached, contiguous float32 clones, so the file holds only the weights (no shared storage)."""
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    reloaded = torch.load(path, weights_only=True)
    assert reloaded.keys() == state.keys() and all(torch.equal(reloaded[k], state[k]) for k in state)


def save_subset(x_test: Tensor, y_test: Tensor, path: Path) -> tuple[Tensor, Tensor]:
    """Write the first ``SUBSET_SIZE`` test images/labels as a compressed, pickle-free npz."""
    x_val = x_test[:SUBSET_SIZE].numpy().astype(np.float32)
    y_val = y_test[:SUBSET_SIZE].numpy().astype(np.int64)
    np.savez_compressed(path, x_val=x_val, y_val=y_val)
    with np.load(path, allow_pickle=False) as data:
        assert data["x_val"].shape == (SUBSET_SIZE, 1, 28, 28) and data["x_val"].dtype == np.float32
        assert data["y_val"].shape == (SUBSET_SIZE,) and data["y_val"].dtype == np.int64
        return torch.from_numpy(data["x_val"]), torch.from_numpy(data["y_val"])


def main(argv: list[str] | None = None) -> int:
    """Train both models, write the three artefacts, print full-test and 1k-subset accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "examples", help="output directory")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-model epoch count")
    parser.add_argument("--mnist", type=Path, default=None, help="MNIST directory (default: $SQC_MNIST)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    set_determinism(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_mnist("train", args.mnist)
    x_test, y_test = load_mnist("test", args.mnist)
    x_sub, y_sub = save_subset(x_test, y_test, args.out / "mnist_test_1k.npz")

    start = time.perf_counter()
    results: list[tuple[str, float, float, float]] = []
    for name, cls in (("lenet300", LeNet300), ("lenet5", LeNet5)):
        recipe = RECIPES[name]
        if args.epochs is not None:
            recipe = replace(recipe, epochs=args.epochs)
        torch.manual_seed(args.seed)  # each model's init is independent of the other's training
        t0 = time.perf_counter()
        print(f"training {name}: {recipe}", flush=True)
        model = train(name, cls(), recipe, x_train, y_train, args.seed, x_test, y_test)
        seconds = time.perf_counter() - t0
        save_state_dict(model, args.out / f"{name}.pt")
        results.append((name, accuracy(model, x_test, y_test), accuracy(model, x_sub, y_sub), seconds))

    print(f"\nresults (seed {args.seed}, {THREADS} threads, torch {torch.__version__}):")
    for name, full, sub, seconds in results:
        print(
            f"  {name:9s} test top-1 {100 * full:.2f}% (10000)  subset top-1 {100 * sub:.2f}% "
            f"({SUBSET_SIZE})  trained in {seconds:.0f}s"
        )
    print(f"total training time {time.perf_counter() - start:.0f}s; wrote to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
