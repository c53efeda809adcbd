"""Random tensors for the rANS coder's property tests (shared by the decoder-path and native tests)."""

from __future__ import annotations

import math

import numpy as np


def random_case(
    rng: np.random.Generator, shape: tuple[int, ...], width: int, sparse: bool, density: float
) -> tuple[int, np.ndarray | None, np.ndarray]:
    """``(alphabet, mask or None, kept symbols)``: an alphabet between half and all of ``2**width``, a
    random mask of ``density`` when ``sparse``, and symbols uniform or geometric (skewed, as real codes)."""
    numel = math.prod(shape)
    alphabet = int(rng.integers(max(1, (1 << width) // 2), (1 << width) + 1))
    mask = rng.random(numel) < density if sparse else None
    kept = numel if mask is None else int(mask.sum())
    if rng.random() < 0.5:
        symbols = rng.integers(0, alphabet, kept)
    else:
        symbols = np.minimum(rng.geometric(0.4, kept) - 1, alphabet - 1)
    return alphabet, mask, symbols
