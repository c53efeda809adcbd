"""``share``: per-layer k-means weight sharing (Deep Compression, step 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from sqc.compiler.pass_base import QUIET, LayerMap, OptionError, Pass, PassContext, PassResult, check_range
from sqc.errors import PipelineError
from sqc.ir.records import CompressedModel, TensorState, index_dtype
from sqc.passes._common import (
    change_stats,
    encoded_bytes,
    is_overridden,
    layer_stats,
    override,
    selected,
    totals,
    unused_overrides,
)
from sqc.passes._rate import entropy_costs


@dataclass(frozen=True)
class Share(Pass):
    """Cluster each layer's kept weights into 2^bits shared values (one float codebook per layer).

    Exact 1-D Lloyd iterations: the kept weights are sorted once; with sorted centroids every cluster
    is a contiguous run between two midpoints, found by binary search, and its mean comes from a
    prefix sum — O(K log n) per iteration, no per-weight Python loop and no sklearn. ``init=linear``
    (centroids evenly spaced between min and max) is Deep Compression's best: it keeps the rare large
    weights that matter. ``init=density`` spaces them by quantiles instead. Pruned weights stay zero
    and are not clustered.

    ``bits=auto`` chooses each layer's bits from the ``sensitivity`` analysis of the model as it is
    now (run if absent): the fewest coded bytes whose predicted metric drop fits the budget, then
    measured and backed off like ``prune{target=auto}`` (same ``budget`` rule). ``per_layer`` layers
    keep their given bits.

    ``rdo=r`` makes the clustering entropy-constrained (:func:`kmeans_1d`): ``2^bits`` is then an upper
    bound on the codebook, and the rate (bits of the coded indices) is traded against the squared error
    with ``lambda = r * ((max - min) / 2^bits)**2``.
    """

    name = "share"
    summary = "per-layer k-means weight sharing (exact 1-D Lloyd), bits=auto from sensitivity"
    conflicts = {
        "fixed-point": "share clusters float weights: run it before quant (quant then rounds the codebook)",
        "entropy-coded": "huffman or rans must come after every pass that changes weights",
    }
    establishes = frozenset({"codes", "shared"})

    bits: int | Literal["auto"] = 5
    per_layer: LayerMap = ()
    init: Literal["linear", "density"] = "linear"
    iterations: int = 50
    layers: str = "*"
    budget: float | None = None
    rdo: float = field(default=0.0, metadata=QUIET)

    def __post_init__(self) -> None:
        if self.bits != "auto":
            check_range("bits", self.bits, 1, 16)
        check_range("iterations", self.iterations, 0, 10_000)
        check_range("rdo", self.rdo, 0, 100)
        for layer, value in self.per_layer:
            check_range(f"per_layer[{layer}]", value, 1, 16)
            if value != int(value):
                raise OptionError(f"per_layer[{layer}]", f"{value} is not a whole number of bits")
        if self.budget is not None:
            check_range("budget", self.budget, 0.0, float("inf"))
            if self.bits != "auto":
                raise OptionError("budget", "only applies with bits=auto")

    def context_needs(self) -> frozenset[str]:
        return frozenset({"evaluate"}) if self.bits == "auto" else frozenset()

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        if self.bits == "auto":
            return self._auto(model, ctx)
        states = selected(model, self.layers, self.name)
        layers = {}
        for state in states:
            size = encoded_bytes(state)
            bits = int(override(state, self.per_layer, self.bits))
            ctx.note(f"share: {state.name} ({state.numel:,} weights, {bits} bits)")
            model.release(state.name)
            error = share_record(state, bits, self.init, self.iterations, self.rdo)
            model.sync([state.name])
            layers[state.name] = {**layer_stats(state, size, error), "centroids": _centroids(state)}
        return PassResult(
            True, {"bits": self.bits, **totals(layers)}, layers, unused_overrides(model, self.per_layer)
        )

    def _auto(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        from sqc.compiler.sensitivity import auto_allocate

        states = selected(model, self.layers, self.name)
        fixed = {s.name: override(s, self.per_layer, 0) for s in states if is_overridden(s, self.per_layer)}
        if len(fixed) == len(states):
            raise PipelineError("bits=auto: per_layer fixes every selected layer, nothing is left to choose")

        def apply(state: TensorState, bits: float) -> None:
            model.release(state.name)
            share_record(state, int(bits), self.init, self.iterations, self.rdo)
            model.sync([state.name])

        outcome = auto_allocate(model, ctx, "share", states, fixed, self.budget, apply)
        chosen = {**fixed, **outcome.values}
        layers = {}
        for state in states:
            if state.codes is None:  # a layer left as it was must still be shared: share establishes codes
                apply(state, chosen[state.name])
            before, size = outcome.before[state.name]
            layers[state.name] = {
                **change_stats(state, before, size),
                "centroids": _centroids(state),
                "target": int(chosen[state.name]),
            }
            if state.name in outcome.predicted:
                layers[state.name]["predicted_drop"] = outcome.predicted[state.name]
        stats = {"bits": "auto", **totals(layers), **outcome.stats}
        return PassResult(True, stats, layers, unused_overrides(model, self.per_layer) + outcome.diagnostics)


def _centroids(state: TensorState) -> int:
    return int(state.codebook.numel()) if state.codebook is not None else 0


def share_record(
    state: TensorState, bits: int, init: str = "linear", iterations: int = 50, rdo: float = 0.0
) -> float:
    """Cluster one record's kept weights into ``2**bits`` centroids in place (the caller syncs the
    module). Returns the largest change of a kept weight."""
    kept = _kept(state)
    values = state.decode().flatten()[kept]
    state.dense = None  # from here on the record is rebuilt from ``values``
    codebook, codes = kmeans_1d(values, 1 << bits, init, iterations, rdo)
    # pruned positions are zero before and after: the error lives on the kept weights
    error = float((codebook[codes] - values).abs_().max()) if values.numel() else 0.0
    full = torch.zeros(state.numel, dtype=index_dtype(codebook.numel()))  # pruned positions keep code 0
    full[kept] = codes.to(full.dtype)
    del values, codes, kept
    state.codebook, state.codes, state.fmt = codebook, full.reshape(state.shape), None
    return error


def _kept(state: TensorState) -> torch.Tensor:
    """Flat indices of the weights that carry a code (all of them when there is no mask)."""
    if state.mask is None:
        return torch.arange(state.numel)
    return state.mask.flatten().nonzero().flatten()


def kmeans_1d(
    values: torch.Tensor, k: int, init: str = "linear", iterations: int = 50, rdo: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Lloyd's algorithm in one dimension. Returns (float32 centroids sorted ascending, int32
    codes).

    Assignment rule (stated because decoders never re-derive it, but tests do): a value exactly on
    the midpoint between two centroids goes to the lower one. Empty clusters keep their centroid.

    The values are sorted as float32 with numpy's SIMD sort (0.7 s for 100M values here, where
    ``torch.sort`` of their float64 copies took 18 s); centroids, midpoints and the prefix sums the
    cluster means come from are float64. A float64 midpoint ``m`` is compared with float32 values
    through the largest float32 ``t <= m`` (:func:`_floor_f32`): for every float32 ``x``, ``x <= m``
    exactly when ``x <= t``, so the clusters are those of the float64 comparison.

    ``rdo > 0`` makes it entropy-constrained (ECSQ; Choi, El-Khamy, Lee, ICLR 2017): a value joins the
    centroid minimising ``(x - c)**2 + lambda * bits(c)``, ``bits(c) = -log2 p(c)`` the ideal adaptive
    cost of its index (:func:`~sqc.passes._rate.entropy_costs`), ``lambda = rdo * ((max - min) / k)**2``.
    In one dimension the regions stay intervals: the boundary between neighbours ``a < b`` moves from
    their midpoint by ``lambda * (bits(b) - bits(a)) / (2 (b - a))`` towards the costlier one, and a
    centroid whose interval closes is dropped (the codebook shrinks: fewer, cheaper symbols).
    """
    if values.numel() == 0:
        return torch.zeros(1, dtype=torch.float32), torch.zeros(0, dtype=torch.int32)
    flat = values.detach().to(torch.float32).reshape(-1).numpy()
    ordered = np.sort(flat)
    n = ordered.size
    low, high = float(ordered[0]), float(ordered[-1])
    exact = int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1 <= k  # the codebook can be exact
    if exact:  # fewer distinct values than centroids: they are the codebook
        starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        centroids = ordered[np.concatenate(([0], starts))].astype(np.float64)
    elif init == "density":
        sample = torch.from_numpy(ordered[:: max(1, n // 100_000)].astype(np.float64))
        centroids = torch.quantile(sample, torch.linspace(0, 1, k, dtype=torch.float64)).numpy()
    else:
        centroids = np.linspace(low, high, k, dtype=np.float64)
    prefix = _PrefixSums(ordered)
    bounds = None
    lam = 0.0 if exact else rdo * ((high - low) / k) ** 2
    bits = np.zeros(centroids.size)  # every centroid equally likely until the first assignment
    for _ in range(0 if exact else iterations):
        centroids, bits, cuts = _boundaries(centroids, bits, lam)
        new_bounds = np.searchsorted(ordered, _floor_f32(cuts), "right")
        if bounds is not None and np.array_equal(new_bounds, bounds):
            break
        bounds = new_bounds
        edges = np.concatenate(([0], bounds, [n]))
        counts = (edges[1:] - edges[:-1]).astype(np.float64)
        at_edges = prefix.at(edges)
        sums = at_edges[1:] - at_edges[:-1]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if lam:
            keep = counts > 0
            centroids, bits = centroids[keep], entropy_costs(counts[keep])
        order = np.argsort(centroids, kind="stable")
        centroids, bits = centroids[order], bits[order]
    del prefix, ordered
    codebook = centroids.astype(np.float32)
    if lam:
        codebook, bits, cuts = _boundaries(codebook.astype(np.float64), bits, lam)
        codebook = codebook.astype(np.float32)
        unique = np.concatenate(([True], codebook[1:] != codebook[:-1]))
        codebook, cuts = codebook[unique], cuts[unique[1:]]
    else:
        codebook = np.unique(codebook)  # sorted
        cuts = (codebook[1:].astype(np.float64) + codebook[:-1].astype(np.float64)) / 2
    # the number of boundaries below each value (torch's searchsorted runs on every core)
    thresholds = torch.from_numpy(_floor_f32(cuts))
    codes = torch.searchsorted(thresholds, values.detach().reshape(-1).float(), out_int32=True)
    return torch.from_numpy(codebook), codes


def _boundaries(
    centroids: np.ndarray, bits: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centroids, bits, cuts)``: the interval boundaries of sorted ``centroids`` under the
    entropy-constrained rule (plain midpoints when ``lam`` is 0), after dropping every centroid whose
    interval is empty (its boundaries would cross)."""
    while True:
        gap = np.maximum(centroids[1:] - centroids[:-1], 1e-300)
        cuts = (centroids[1:] + centroids[:-1]) / 2 + lam * (bits[1:] - bits[:-1]) / (2 * gap)
        if not lam or cuts.size < 2 or bool((cuts[1:] > cuts[:-1]).all()):
            return centroids, bits, cuts
        closed = int(np.flatnonzero(cuts[1:] <= cuts[:-1])[0]) + 1  # the centroid between two crossed cuts
        centroids, bits = np.delete(centroids, closed), np.delete(bits, closed)


class _PrefixSums:
    """Sums of the first ``i`` sorted values, in float64, from one float64 sum per block of ``block``
    values plus the partial block at ``i``: memory n / block instead of a float64 prefix array of the
    values' length (800 MB at 100M values, which this machine takes seconds to hand out)."""

    def __init__(self, ordered: np.ndarray, block: int = 4096) -> None:
        self.ordered, self.block = ordered, block
        full = ordered.size // block * block
        sums = ordered[:full].reshape(-1, block).sum(axis=1, dtype=np.float64)
        self.starts = np.concatenate(([0.0], np.cumsum(sums)))

    def at(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty(indices.size, dtype=np.float64)
        for j, i in enumerate(indices.tolist()):
            b = i // self.block
            out[j] = self.starts[b] + float(self.ordered[b * self.block : i].sum(dtype=np.float64))
        return out


def _floor_f32(values: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64 (finite, within the float32 range)."""
    nearest = values.astype(np.float32)
    above = nearest.astype(np.float64) > values
    nearest[above] = np.nextafter(nearest[above], np.float32(-np.inf))
    return nearest
