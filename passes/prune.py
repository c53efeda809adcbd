"""``prune``: unstructured magnitude pruning (Deep Compression, step 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
import torch

from sqc.compiler.pass_base import LayerMap, OptionError, Pass, PassContext, PassResult, check_range
from sqc.errors import PipelineError
from sqc.ir.records import CompressedModel, TensorState, slices
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

DEFAULT_SCOPE: Final = "global"
"""What ``prune`` ranks by without options: measured best at equal size (``benchmarks/bench_defaults.py``)."""


@dataclass(frozen=True)
class Prune(Pass):
    """Remove the weights of smallest magnitude.

    ``scope=global`` (the default) ranks all selected weights together, so layers with many small
    weights lose more; ``scope=layer`` prunes each layer to ``sparsity``; ``scope=lamp`` ranks by LAMP
    scores (:func:`lamp_thresholds`), a layer-adaptive global ranking that never empties a layer.
    ``per_layer`` overrides give a layer its own sparsity, e.g. ``per_layer=fc1:0.92;fc3:0.74``
    (the others are pooled as ``scope`` says). Pruning is cumulative: weights already pruned count
    towards the target and stay pruned. Ties at the threshold are pruned together.

    Why global: measured at equal file size after ``share{bits=5},huffman`` on both reference LeNets
    without retraining (``benchmarks/bench_defaults.py``), it wins against ``layer`` everywhere
    (LeNet-300-100 at 90 %: 97.3 % top-1 against 92.3 %; at 95 %: 92.0 % against 55.5 %) and beats
    ``lamp`` by 0.3-1.8 points at 90-95 % on LeNet-300-100, ties it elsewhere. A uniform sparsity
    over-prunes the small, sensitive layers (LeNet's output layers); ``lamp`` keeps more of them, which
    costs more than it saves on these models, but it is the safe choice where one layer's weights are
    all small.

    ``target=auto`` chooses each layer's sparsity instead (``sparsity`` is then unused, and ``scope`` is
    ``layer``: a pooled ranking does not apply, and naming one is an error): from the
    ``sensitivity`` analysis (run now if no earlier pass left it), the allocator picks the
    sparsities that minimise the coded bytes while the predicted metric drop stays within the
    budget, applies them, measures, and steps the least rewarding layers back until the measured
    drop is within it too. The budget is what is left of ``--tolerance`` (counted from the metric
    the first accuracy-aware pass found), or ``budget`` when given: the drop this pass alone may
    spend, e.g. before fine-tuning wins it back. ``per_layer`` layers keep their given sparsity.

    ``schedule=agp`` prunes in ``steps`` stages along the automated gradual pruning curve
    ``s_t = s (1 - (1 - t/steps)^3)`` (Zhu & Gupta 2017), fine-tuning ``epochs`` at ``lr`` after each
    stage with masks held (needs ``--data`` with training data, or ``--finetune``); a stage whose
    fine-tuning diverges is retried at lr/10 and named in the ``lr_used`` stat (``stage:lr;…``). With
    ``target=auto`` the stages lead to the chosen sparsities.
    """

    name = "prune"
    summary = (
        "magnitude pruning, global, per layer or LAMP, per-layer overrides, target=auto from sensitivity"
    )
    conflicts = {"entropy-coded": "huffman or rans must come after every pass that changes weights"}
    establishes = frozenset({"pruned"})

    sparsity: float = 0.9
    scope: Literal["layer", "global", "lamp"] = DEFAULT_SCOPE
    per_layer: LayerMap = ()
    layers: str = "*"
    schedule: Literal["oneshot", "agp"] = "oneshot"
    steps: int = 4
    epochs: int = 1
    lr: float = 0.01
    target: Literal["fixed", "auto"] = "fixed"
    budget: float | None = None

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 0.9999)
        for layer, value in self.per_layer:
            check_range(f"per_layer[{layer}]", value, 0.0, 0.9999)
        check_range("steps", self.steps, 1, 1000)
        check_range("epochs", self.epochs, 0, 10_000)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        if self.budget is not None:
            check_range("budget", self.budget, 0.0, float("inf"))
            if self.target != "auto":
                raise OptionError("budget", "only applies with target=auto")
        if self.target == "auto" and self.scope == DEFAULT_SCOPE:
            object.__setattr__(self, "scope", "layer")  # allocated per layer: no pooled default
        if self.target == "auto" and self.scope != "layer":
            raise OptionError(
                "scope", f"target=auto chooses a sparsity per layer; scope={self.scope} does not apply"
            )

    @classmethod
    def from_options(cls, raw: dict[str, Any]) -> Pass:
        """As :meth:`Pass.from_options`, but a ``scope`` other than ``layer`` named beside ``target=auto``
        is an error even when it is the default (which ``target=auto`` replaces with ``layer``)."""
        if str(raw.get("target")) == "auto" and str(raw.get("scope", "layer")) != "layer":
            raise OptionError(
                "scope", f"target=auto chooses a sparsity per layer; scope={raw['scope']} does not apply"
            )
        return super().from_options(raw)

    def context_needs(self) -> frozenset[str]:
        needs = {"evaluate"} if self.target == "auto" else set()
        if self.schedule == "agp" and self.epochs:
            needs.add("finetune")
        return frozenset(needs)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        if self.target == "auto":
            return self._auto(model, ctx)
        if self.schedule == "oneshot":
            return self._prune(model)
        return self._agp(model, ctx)

    def _agp(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        first = {s.name: s.density for s in selected(model, self.layers, self.name)}
        result = PassResult(False)
        lowered: list[str] = []  # stages whose fine-tuning diverged and ran at a lower rate
        for step in range(1, self.steps + 1):
            scale = 1 - (1 - step / self.steps) ** 3
            stage = replace(
                self,
                schedule="oneshot",
                target="fixed",
                budget=None,
                sparsity=self.sparsity * scale,
                per_layer=tuple((glob, value * scale) for glob, value in self.per_layer),
            )
            ctx.note(f"prune: agp stage {step}/{self.steps}, sparsity {stage.sparsity:.3f}")
            staged = stage._prune(model)
            if self.epochs:
                used = ctx.finetune(model, self.epochs, self.lr)
                if used != self.lr:
                    lowered.append(f"{step}:{used:g}")
            result = PassResult(
                result.changed or staged.changed, staged.stats, staged.layers, staged.diagnostics
            )
        result.stats["stages"] = self.steps
        if lowered:  # "stage:lr" of each stage retried after its fine-tuning diverged
            result.stats["lr_used"] = ";".join(lowered)
            result.diagnostics.append(
                f"agp fine-tuning diverged at lr {self.lr:g}; stage:lr redone lower: {', '.join(lowered)}"
            )
        result.stats["density_before"] = round(sum(first.values()) / max(1, len(first)), 6)
        return result

    def _auto(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        from sqc.compiler.sensitivity import auto_allocate
        from sqc.ir.records import restore

        states = selected(model, self.layers, self.name)
        fixed = {s.name: override(s, self.per_layer, 0.0) for s in states if is_overridden(s, self.per_layer)}
        auto = [s for s in states if s.name not in fixed]
        if not auto:
            raise PipelineError(
                "target=auto: per_layer fixes every selected layer, nothing is left to choose"
            )

        def apply(state: TensorState, sparsity: float) -> None:
            prune_layer(state, sparsity)
            model.sync([state.name])

        outcome = auto_allocate(model, ctx, "prune", states, fixed, self.budget, apply)
        chosen = {**fixed, **outcome.values}
        if self.schedule == "agp":  # the stages lead to the sparsities chosen (and verified) in one shot
            restore(model, outcome.snapshot)
            staged = replace(self, target="fixed", budget=None, per_layer=tuple(chosen.items()))._agp(
                model, ctx
            )
            after = outcome.stats["metric_after"] = ctx.evaluate(model)
            outcome.stats["stages"] = self.steps
            spent = float(outcome.stats["metric_before"]) - after
            if spent > float(outcome.stats["budget"]) + 1e-12:
                outcome.diagnostics.append(
                    f"after the agp stages the metric dropped {spent:.6g}, more than the budget "
                    f"{float(outcome.stats['budget']):.6g} the one-shot allocation was verified against"
                )
            changed = staged.changed
        else:
            changed = outcome.changed
        layers = {}
        for state in states:
            before, size = outcome.before[state.name]
            layers[state.name] = {**change_stats(state, before, size), "target": round(chosen[state.name], 6)}
            if state.name in outcome.predicted:
                layers[state.name]["predicted_drop"] = outcome.predicted[state.name]
        kept = sum(s.kept for s in states)
        total = sum(s.numel for s in states)
        stats = {
            "sparsity": round(1 - kept / total, 6) if total else 0.0,
            "kept": kept,
            **totals(layers),
            **outcome.stats,
        }
        return PassResult(
            changed, stats, layers, unused_overrides(model, self.per_layer) + outcome.diagnostics
        )

    def _prune(self, model: CompressedModel) -> PassResult:
        states = selected(model, self.layers, self.name)
        thresholds = self._thresholds(states)
        layers = {}
        changed = False
        for state in states:  # one layer at a time: at most one layer's temporaries are alive
            size = encoded_bytes(state)
            removes, error = apply_threshold(state, thresholds[state.name])
            if removes:
                model.sync([state.name])
                changed = True
            layers[state.name] = layer_stats(state, size, error)
        kept = sum(s.kept for s in states)
        total = sum(s.numel for s in states)
        stats = {"sparsity": round(1 - kept / total, 6) if total else 0.0, "kept": kept, **totals(layers)}
        return PassResult(changed, stats, layers, unused_overrides(model, self.per_layer))

    def _thresholds(self, states: list[TensorState]) -> dict[str, float]:
        """The magnitude at or below which each tensor's weights go: per layer, one for a global pool,
        or (``lamp``) one per layer of the pool, from a single LAMP score threshold."""
        groups: list[tuple[list[TensorState], float]] = []
        pool = []
        for state in states:
            if is_overridden(state, self.per_layer):
                groups.append(([state], override(state, self.per_layer, self.sparsity)))
            elif self.scope in ("global", "lamp"):
                pool.append(state)
            else:
                groups.append(([state], self.sparsity))
        thresholds = {}
        if pool and self.scope == "lamp":
            thresholds.update(lamp_thresholds(pool, self.sparsity))
        elif pool:
            groups.append((pool, self.sparsity))
        for group, sparsity in groups:
            threshold = magnitude_threshold(group, sparsity)
            thresholds.update({s.name: threshold for s in group})
        return thresholds


def magnitude_threshold(group: list[TensorState], sparsity: float) -> float:
    """The magnitude at or below which weights go so that ``sparsity`` of the group is pruned.

    Weights already pruned count as magnitude 0, so pruning is cumulative. Ties at the threshold
    are pruned together. The group's magnitudes are written layer by layer into one float32 array
    (no per-layer copies to concatenate: a global pool of VGG-16's 138M weights costs 553 MB, not
    twice that).
    """
    magnitudes = np.empty(sum(s.numel for s in group), dtype=np.float32)
    pool, start = torch.from_numpy(magnitudes), 0
    for state in group:
        pool[start : start + state.numel].copy_(state.decode().reshape(-1)).abs_()
        start += state.numel
    return _kth_smallest(magnitudes, round(sparsity * magnitudes.size))


SELECT_CHUNK = 1 << 20
"""Magnitudes moved per step when the zeros are taken out before the selection (bounded extra memory)."""


def _kth_smallest(magnitudes: np.ndarray, drop: int) -> float:
    """The ``drop``-th smallest of ``magnitudes`` (which it reorders), or -1 when nothing is dropped.

    The zeros (weights pruned before) are counted and moved out of the way first: selection among many
    equal values is numpy's slow case (a 90 %-pruned LeNet-5 pool: ~40 ms instead of ~2 ms), and the
    answer is 0 when the zeros alone reach ``drop``, else the right order statistic of the rest."""
    if not drop:
        return -1.0
    nonzero = _nonzero_to_front(magnitudes)
    zeros = magnitudes.size - nonzero
    if drop <= zeros:
        return 0.0
    # selection in place on our own copy: O(n), no index tensor (kthvalue needs one) and no second
    # copy (np.partition returns one: +392 MiB and ~1 s on a 100M-weight layer)
    rest = magnitudes[:nonzero]
    rest.partition(drop - zeros - 1)
    return float(rest[drop - zeros - 1])


def _nonzero_to_front(magnitudes: np.ndarray) -> int:
    """Move the non-zero entries to the front, in order, chunk by chunk (the write position never passes
    the read position, so in place); return how many there are."""
    written = 0
    for start in range(0, magnitudes.size, SELECT_CHUNK):
        part = magnitudes[start : start + SELECT_CHUNK]
        kept = part[part != 0]
        magnitudes[written : written + kept.size] = kept
        written += kept.size
    return written


def apply_threshold(state: TensorState, threshold: float) -> tuple[bool, float]:
    """Prune the record's weights of magnitude <= ``threshold`` (the caller syncs the module).

    Returns whether the mask changed and the largest magnitude removed. Works slice by slice: the new
    mask (and, for a dense record, the new values) are the only whole-tensor allocations.
    """
    values = state.decode().reshape(-1)
    old_mask = None if state.mask is None else state.mask.reshape(-1)
    keep = torch.empty(values.numel(), dtype=torch.bool)
    pruned_values = torch.empty_like(values) if state.codes is None else None
    error, kept_before, kept_after = 0.0, 0, 0
    for part in slices(values.numel()):
        magnitude = values[part].abs()
        part_keep = torch.gt(magnitude, threshold, out=keep[part])
        if old_mask is not None:
            part_keep &= old_mask[part]
            kept_before += int(torch.count_nonzero(old_mask[part]))
        else:
            kept_before += part_keep.numel()
        kept_after += int(torch.count_nonzero(part_keep))
        dropped = magnitude.masked_fill_(part_keep, 0.0)  # the magnitudes this pass removes
        if dropped.numel():
            error = max(error, float(dropped.max()))
        if pruned_values is not None:
            pruned_values[part].copy_(values[part]).masked_fill_(~part_keep, 0.0)
    removes = kept_after != kept_before  # the new mask is a subset of the old one
    if removes:
        if pruned_values is not None:  # what set_mask does for a dense record, without its temporaries
            state.mask, state.dense = keep.reshape(state.shape), pruned_values.reshape(state.shape)
        else:
            state.set_mask(keep)
    return removes, error


def prune_layer(state: TensorState, sparsity: float) -> bool:
    """Prune one record to ``sparsity`` on its own (the caller syncs the module); True if it changed."""
    return apply_threshold(state, magnitude_threshold([state], sparsity))[0]


LAMP_CHUNK = 1 << 20
"""Weights per step of the LAMP score sweep: the float64 temporaries stay at a few MB per step."""


def lamp_thresholds(group: list[TensorState], sparsity: float) -> dict[str, float]:
    """Per-layer magnitude thresholds that prune the ``sparsity`` of ``group`` with the lowest LAMP scores.

    LAMP (Lee, Park, Mo, Ahn, Shin, ICLR 2021) scores a weight ``u`` of a layer by ``w_u**2`` over the
    sum of ``w_v**2`` of every weight ``v`` of that layer at least as large: its share of what the layer
    keeps if everything smaller goes. Scores are comparable across layers, so one global threshold on
    them gives each layer its own sparsity, and each layer's largest weight scores 1: unlike a global
    magnitude threshold, it never empties a layer of small weights (a layer cut off cuts the network).
    Within a layer the score grows with the magnitude, so the score threshold is a magnitude threshold
    per layer, applied like any other. Weights already pruned are magnitude 0 (score 0): they count
    towards the target and stay pruned. Ties in magnitude share a score and go together.
    """
    scores = [lamp_scores(state.decode().abs().flatten().numpy()) for state in group]
    total = sum(s.size for s in scores)
    drop = round(sparsity * total)
    if not drop:
        return {state.name: -1.0 for state in group}
    cut = _kth_of_sorted(scores, drop)
    counts = [int(np.searchsorted(s, cut, "right")) for s in scores]
    del scores
    out = {}
    for state, count in zip(
        group, counts, strict=True
    ):  # the ``count`` smallest magnitudes are the pruned ones
        out[state.name] = _kth_smallest(state.decode().abs().flatten().numpy(), count)
    return out


def lamp_scores(magnitudes: np.ndarray) -> np.ndarray:
    """LAMP scores of one layer's weight ``magnitudes``, sorted ascending (float32; the array is reused).

    ``score(u) = w_u**2 / sum(w_v**2 for |w_v| >= |w_u|)``: weights of equal magnitude share the score
    of the first of them (their sum includes all of them), so a tie is never split. The suffix sums run
    from the largest weight down in chunks of about :data:`LAMP_CHUNK` (float64 within a chunk, one
    float64 carry between chunks). Chunks end on tie-group boundaries; a group larger than a chunk
    (the pruned zeros, say) has one score and is filled without temporaries.
    """
    ordered = np.sort(magnitudes.astype(np.float32, copy=False))
    high, above = ordered.size, 0.0  # ``above``: the sum of squares of every weight from ``high`` up
    while high > 0:
        low = max(0, high - LAMP_CHUNK)
        value = ordered[low]
        rest = ordered[:high]  # still magnitudes (scores replace them from ``high`` up)
        start = int(np.searchsorted(rest, value, "left"))
        if start < low:  # a tie group crosses the chunk's lower edge
            end = int(np.searchsorted(rest, value, "right"))
            if end < high:  # score the weights above it first; the group starts the next step
                low = end
            else:  # the group reaches the top of what is left: one score for all of it
                square = float(value) ** 2
                above += (high - start) * square
                ordered[start:high] = square / above if above > 0 else 0.0
                high = start
                continue
        above = _lamp_chunk(ordered[low:high], above)
        high = low
    return ordered


def _lamp_chunk(chunk: np.ndarray, above: float) -> float:
    """Overwrite an ascending ``chunk`` (no tie group crossing its edges) with its LAMP scores, given
    the sum of squares ``above`` it; returns the sum of squares from the chunk's first weight up."""
    values = chunk.astype(np.float64)
    squares = values * values
    sums = np.cumsum(squares[::-1])[::-1] + above  # sums[i]: the squares from weight i to the top
    denominators = sums[np.searchsorted(values, values, "left")]  # from the first of each tie group
    chunk[:] = np.divide(squares, denominators, out=np.zeros_like(squares), where=denominators > 0)
    return float(sums[0])


def _kth_of_sorted(arrays: list[np.ndarray], k: int) -> np.float32:
    """The ``k``-th smallest value (1-based) of several ascending float32 arrays of values >= 0, exactly.

    Non-negative float32 values order as their bit patterns do, so a binary search over the 2^31
    patterns (counting with ``searchsorted`` on each array) finds it in 31 steps without merging.
    """
    low, high = 0, 0x7F800000  # bit patterns of 0.0 and +inf
    while low < high:
        mid = (low + high) // 2
        value = np.array(mid, dtype=np.uint32).view(np.float32)
        if sum(int(np.searchsorted(a, value, "right")) for a in arrays) >= k:
            high = mid
        else:
            low = mid + 1
    return np.array(low, dtype=np.uint32).view(np.float32)
