"""``prune``: unstructured magnitude pruning (Deep Compression, step 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from sqc.ir import CompressedModel, TensorState
from sqc.pass_base import LayerMap, Pass, PassContext, PassResult, check_range
from sqc.passes._common import (
    encoded_bytes,
    is_overridden,
    layer_stats,
    override,
    selected,
    totals,
    unused_overrides,
)


@dataclass(frozen=True)
class Prune(Pass):
    """Remove the weights of smallest magnitude.

    ``scope=layer`` prunes each layer to ``sparsity`` (or its ``per_layer`` override, e.g.
    ``per_layer=fc1:0.92;fc3:0.74``); ``scope=global`` ranks all selected weights together, so layers
    with many small weights lose more. Pruning is cumulative: weights already pruned count towards
    the target and stay pruned. Ties at the threshold are pruned together.

    ``schedule=agp`` prunes in ``steps`` stages along the automated gradual pruning curve
    ``s_t = s (1 - (1 - t/steps)^3)`` (Zhu & Gupta 2017), fine-tuning ``epochs`` at ``lr`` after each
    stage with masks held (needs ``--data`` with training data, or ``--finetune``).
    """

    name = "prune"
    summary = "unstructured magnitude pruning, per layer or global, with per-layer overrides"
    conflicts = {"entropy-coded": "huffman must come after every pass that changes weights"}
    establishes = frozenset({"pruned"})

    sparsity: float = 0.9
    scope: Literal["layer", "global"] = "layer"
    per_layer: LayerMap = ()
    layers: str = "*"
    schedule: Literal["oneshot", "agp"] = "oneshot"
    steps: int = 4
    epochs: int = 1
    lr: float = 0.01

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 0.9999)
        for layer, value in self.per_layer:
            check_range(f"per_layer[{layer}]", value, 0.0, 0.9999)
        check_range("steps", self.steps, 1, 1000)
        check_range("epochs", self.epochs, 0, 10_000)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)

    def context_needs(self) -> frozenset[str]:
        return frozenset({"finetune"}) if self.schedule == "agp" and self.epochs else frozenset()

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        if self.schedule == "oneshot":
            return self._prune(model)
        first = {s.name: s.density for s in selected(model, self.layers, self.name)}
        result = PassResult(False)
        for step in range(1, self.steps + 1):
            scale = 1 - (1 - step / self.steps) ** 3
            stage = replace(
                self,
                schedule="oneshot",
                sparsity=self.sparsity * scale,
                per_layer=tuple((glob, value * scale) for glob, value in self.per_layer),
            )
            ctx.note(f"prune: agp stage {step}/{self.steps}, sparsity {stage.sparsity:.3f}")
            staged = stage._prune(model)
            if self.epochs:
                ctx.finetune(model, self.epochs, self.lr)
            result = PassResult(
                result.changed or staged.changed, staged.stats, staged.layers, staged.diagnostics
            )
        result.stats["stages"] = self.steps
        result.stats["density_before"] = round(sum(first.values()) / max(1, len(first)), 6)
        return result

    def _prune(self, model: CompressedModel) -> PassResult:
        states = selected(model, self.layers, self.name)
        thresholds = self._thresholds(states)
        layers = {}
        changed = False
        for state in states:  # one layer at a time: at most one layer's temporaries are alive
            size = encoded_bytes(state)
            magnitude = state.decode().abs()
            keep = magnitude > thresholds[state.name]
            if state.mask is not None:
                keep &= state.mask
            dropped = magnitude.masked_fill_(keep, 0.0)  # the magnitudes this pass removes
            error = float(dropped.max()) if dropped.numel() else 0.0
            del magnitude, dropped
            removes = not bool(keep.all()) if state.mask is None else not torch.equal(keep, state.mask)
            if removes:
                state.set_mask(keep)
                model.sync([state.name])
                changed = True
            layers[state.name] = layer_stats(state, size, error)
        kept = sum(s.kept for s in states)
        total = sum(s.numel for s in states)
        stats = {"sparsity": round(1 - kept / total, 6) if total else 0.0, "kept": kept, **totals(layers)}
        return PassResult(changed, stats, layers, unused_overrides(model, self.per_layer))

    def _thresholds(self, states: list[TensorState]) -> dict[str, float]:
        """The magnitude at or below which each tensor's weights go: per layer, or one for a global pool.

        Weights already pruned count as magnitude 0, so pruning is cumulative. Ties at the threshold
        are pruned together.
        """
        groups: list[tuple[list[TensorState], float]] = []
        pool = []
        for state in states:
            if is_overridden(state, self.per_layer):
                groups.append(([state], override(state, self.per_layer, self.sparsity)))
            elif self.scope == "global":
                pool.append(state)
            else:
                groups.append(([state], self.sparsity))
        if pool:
            groups.append((pool, self.sparsity))
        thresholds = {}
        for group, sparsity in groups:
            parts = [s.decode().abs().flatten() for s in group]
            magnitudes = (torch.cat(parts) if len(parts) > 1 else parts[0]).numpy()
            del parts
            drop = round(sparsity * magnitudes.size)
            # selection in place on our own copy: O(n) and no index tensor (kthvalue needs both)
            threshold = float(np.partition(magnitudes, drop - 1)[drop - 1]) if drop else -1.0
            del magnitudes
            thresholds.update({s.name: threshold for s in group})
        return thresholds
