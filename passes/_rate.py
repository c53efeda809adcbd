"""Rate models for rate-distortion optimised quantization: what a code costs in the entropy coder.

Why: the quantizers trade distortion for bytes (``D + lambda * R``), so ``R`` must be the rate of the coder
that will write the codes, not a proxy. The context-coded layout (:mod:`sqc.formats.rans`) codes a
symbol's bits most significant first, each bit a binary decision at its node of a full binary tree
with its own adaptive (Krichevsky-Trofimov) probability. With one context set (value mode 0) that is an
adaptive order-0 model of the symbols, and the bits a symbol costs are the sum, over the tree levels,
of ``-log2 P(bit | node)`` with the node's counts. :func:`tree_costs` gives that for every symbol of the
alphabet at once from a histogram: the stationary cost of the coder's own model (the adaptive coder pays
a little more while it learns; modes 1-3 a little less where neighbours correlate).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from sqc.formats.rans import IMPLEMENTATION
from sqc.ir.records import slices

if IMPLEMENTATION == "native":  # the same choice as the coder's (SQC_RANS=python: numpy for both)
    from sqc.formats import _rans_native as _native
else:
    _native = None

__all__ = ["RDO_ITERATIONS", "entropy_costs", "rd_cost", "rdo_levels", "tree_costs"]

RDO_ITERATIONS = 4
"""Alternations of "fit the rate model to the codes" and "re-pick every code under it": the total
``D + lambda * R`` stops moving after two or three on the reference layers."""


def tree_costs(histogram: npt.ArrayLike, width: int) -> npt.NDArray[np.float64]:
    """Bits each symbol ``0 .. 2**width - 1`` costs under the binary-tree model fitted to ``histogram``
    (counts per symbol; symbols never seen get the cost of the KT estimate at their nodes)."""
    hist = np.zeros(1 << width, dtype=np.float64)
    given = np.asarray(histogram, dtype=np.float64).ravel()
    hist[: min(given.size, hist.size)] = given[: hist.size]
    symbols = np.arange(1 << width, dtype=np.int64)
    cost = np.zeros(1 << width, dtype=np.float64)
    for level in range(width):
        node = (symbols >> (width - level)) | (1 << level)
        bit = (symbols >> (width - 1 - level)) & 1
        ones = np.bincount(node, weights=hist * bit, minlength=2 << level)
        total = np.bincount(node, weights=hist, minlength=2 << level)
        p_one = (ones + 0.5) / (total + 1.0)
        p = np.where(bit == 1, p_one[node], 1.0 - p_one[node])
        cost -= np.log2(p)
    return cost


def entropy_costs(histogram: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``-log2 p`` of every entry of a histogram, with the KT half-count for entries never seen: the
    ideal adaptive cost of a cluster index (entropy-constrained k-means)."""
    hist = np.asarray(histogram, dtype=np.float64).ravel()
    return -np.log2((hist + 0.5) / (hist.sum() + 0.5 * hist.size))


def rdo_levels(
    scaled: torch.Tensor,
    qmin: int,
    qmax: int,
    rdo: float,
    iterations: int = RDO_ITERATIONS,
    pruned: int = 0,
) -> tuple[torch.Tensor, npt.NDArray[np.float64]]:
    """Integer levels for ``scaled = weights / step`` minimising ``(scaled - q)**2 + rdo * R(q)`` (the
    distortion in squared steps, so ``lambda = rdo * step**2``), and the rate table used last.

    ``R`` is :func:`tree_costs` of the levels themselves, refitted each iteration: each weight picks
    among rounding down, rounding up and zero under the current table. ``rdo = 0`` is plain rounding
    (half to even, then saturation); for every weight the choice never costs more than rounding under
    the table it was made with. ``pruned`` counts positions outside ``scaled`` that are zero anyway
    (a pruned tensor's mask): they are zeros in the histogram the table is fitted to, since a zero level
    becomes a pruned position (:func:`sqc.passes.quant.zeros_pruned`) and costs what one costs, which on
    a 90 %-pruned layer is a fraction of a bit, not the price of a rare symbol among the kept levels.
    Computed by the C core when it is built (``rdo_pick``, about 3 ns a weight), else in numpy, slice by
    slice, with the three candidates' errors kept between iterations; both make the same choices.
    """
    flat = scaled.reshape(-1).to(torch.float64).numpy()
    levels = np.clip(np.rint(flat), qmin, qmax)  # rint: half to even, as torch.round
    width = max(1, (qmax - qmin).bit_length())
    zero = np.zeros(1 << width, dtype=np.int64)
    zero[-qmin] = pruned
    table = tree_costs(np.bincount((levels - qmin).astype(np.int64), minlength=1 << width) + zero, width)
    if rdo <= 0 or flat.size == 0:
        return torch.from_numpy(levels.astype(np.int32)), table
    if _native is not None:  # the C core: one pass per iteration, no candidate arrays
        out = np.empty_like(flat)
        last = None
        for _ in range(iterations):
            hist = zero.copy()
            _native.rdo_pick(flat, np.ascontiguousarray(rdo * table), qmin, qmax, out, hist)
            if last is not None and np.array_equal(hist, last):
                break  # the same histogram gives the same table, so the same choices from here on
            table, last = tree_costs(hist, width), hist
        return torch.from_numpy(out.astype(np.int32)), table
    parts = [_Candidates(flat[part], qmin, qmax) for part in slices(flat.size)]
    for _ in range(iterations):
        weighted = rdo * table
        hist = zero.copy()
        for part, candidates in zip(slices(flat.size), parts, strict=True):
            levels[part] = candidates.pick(weighted, qmin)
            hist += np.bincount((levels[part] - qmin).astype(np.int64), minlength=1 << width)
        table = tree_costs(hist, width)
    return torch.from_numpy(levels.astype(np.int32)), table


class _Candidates:
    """One slice's candidate levels (rounding down, rounding up, zero) and their squared errors."""

    def __init__(self, scaled: npt.NDArray[np.float64], qmin: int, qmax: int) -> None:
        self.low = np.clip(np.floor(scaled), qmin, qmax)
        self.high = np.minimum(self.low + 1, qmax)
        self.low_error = (scaled - self.low) ** 2
        self.high_error = (scaled - self.high) ** 2
        self.zero_error = scaled**2
        self.low_index = (self.low - qmin).astype(np.int64)
        self.high_index = (self.high - qmin).astype(np.int64)

    def pick(self, weighted: npt.NDArray[np.float64], qmin: int) -> npt.NDArray[np.float64]:
        """The cheapest candidate of every weight under ``weighted = rdo * cost``."""
        j_low = self.low_error + weighted[self.low_index]
        j_high = self.high_error + weighted[self.high_index]
        up = j_high < j_low
        best = np.where(up, self.high, self.low)
        best_j = np.where(up, j_high, j_low)
        return np.where(self.zero_error + weighted[-qmin] < best_j, 0.0, best)


def rd_cost(
    scaled: torch.Tensor, levels: torch.Tensor, cost: torch.Tensor, qmin: int, rdo: float
) -> torch.Tensor:
    """Per weight ``(scaled - level)**2 + rdo * cost[level]`` (float64)."""
    error = (scaled.to(torch.float64) - levels.to(torch.float64)) ** 2
    return error + rdo * cost[(levels - qmin).to(torch.int64)]
