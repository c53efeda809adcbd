"""``prune``: unstructured magnitude pruning (Deep Compression, step 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from sqc.ir import CompressedModel, TensorState
from sqc.pass_base import LayerMap, Pass, PassContext, PassResult, check_range
from sqc.passes._common import (
    change_stats,
    encoded_bytes,
    is_overridden,
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
    """

    name = "prune"
    summary = "unstructured magnitude pruning, per layer or global, with per-layer overrides"
    conflicts = {"entropy-coded": "huffman must come after every pass that changes weights"}
    establishes = frozenset({"pruned"})

    sparsity: float = 0.9
    scope: Literal["layer", "global"] = "layer"
    per_layer: LayerMap = ()
    layers: str = "*"

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 0.9999)
        for layer, value in self.per_layer:
            check_range(f"per_layer[{layer}]", value, 0.0, 0.9999)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        states = selected(model, self.layers, self.name)
        before = {s.name: s.decode() for s in states}
        sizes = {s.name: encoded_bytes(s) for s in states}
        overridden = [s for s in states if is_overridden(s, self.per_layer)]
        if self.scope == "global":
            pool = [s for s in states if s not in overridden]
            self._prune_together(pool, before, self.sparsity)
        else:
            for state in states:
                if state not in overridden:
                    self._prune_together([state], before, self.sparsity)
        for state in overridden:
            self._prune_together([state], before, override(state, self.per_layer, self.sparsity))
        model.sync([s.name for s in states])
        layers = {s.name: change_stats(s, before[s.name], sizes[s.name]) for s in states}
        kept = sum(s.kept for s in states)
        total = sum(s.numel for s in states)
        stats = {"sparsity": round(1 - kept / total, 6) if total else 0.0, "kept": kept, **totals(layers)}
        changed = any(not torch.equal(before[s.name], s.decode()) for s in states)
        return PassResult(changed, stats, layers, unused_overrides(model, self.per_layer))

    @staticmethod
    def _prune_together(states: list[TensorState], values: dict[str, torch.Tensor], sparsity: float) -> None:
        """Prune ``states`` jointly to ``sparsity`` by one magnitude threshold."""
        if not states:
            return
        magnitudes = [values[s.name].abs().flatten() for s in states]
        everything = torch.cat(magnitudes) if len(magnitudes) > 1 else magnitudes[0]
        drop = round(sparsity * everything.numel())
        if drop == 0:
            return
        threshold = torch.kthvalue(everything, drop).values
        for state, magnitude in zip(states, magnitudes, strict=True):
            keep = (magnitude > threshold).reshape(state.shape)
            if state.mask is not None:
                keep &= state.mask
            state.set_mask(keep)
