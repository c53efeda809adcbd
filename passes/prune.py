"""``prune``: unstructured magnitude pruning (Deep Compression, step 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from sqc.errors import PipelineError
from sqc.ir import CompressedModel, TensorState, slices
from sqc.pass_base import LayerMap, OptionError, Pass, PassContext, PassResult, check_range
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


@dataclass(frozen=True)
class Prune(Pass):
    """Remove the weights of smallest magnitude.

    ``scope=layer`` prunes each layer to ``sparsity`` (or its ``per_layer`` override, e.g.
    ``per_layer=fc1:0.92;fc3:0.74``); ``scope=global`` ranks all selected weights together, so layers
    with many small weights lose more. Pruning is cumulative: weights already pruned count towards
    the target and stay pruned. Ties at the threshold are pruned together.

    ``target=auto`` chooses each layer's sparsity instead (``sparsity`` is then unused): from the
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
    summary = "magnitude pruning, per layer or global, per-layer overrides, target=auto from sensitivity"
    conflicts = {"entropy-coded": "huffman or rans must come after every pass that changes weights"}
    establishes = frozenset({"pruned"})

    sparsity: float = 0.9
    scope: Literal["layer", "global"] = "layer"
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
        if self.target == "auto" and self.scope == "global":
            raise OptionError(
                "scope", "target=auto chooses a sparsity per layer; scope=global does not apply"
            )

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
        from sqc.passes.sensitivity import auto_allocate, restore

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
        """The magnitude at or below which each tensor's weights go: per layer, or one for a global pool."""
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
            threshold = magnitude_threshold(group, sparsity)
            thresholds.update({s.name: threshold for s in group})
        return thresholds


def magnitude_threshold(group: list[TensorState], sparsity: float) -> float:
    """The magnitude at or below which weights go so that ``sparsity`` of the group is pruned.

    Weights already pruned count as magnitude 0, so pruning is cumulative. Ties at the threshold
    are pruned together.
    """
    parts = [s.decode().abs().flatten() for s in group]
    magnitudes = (torch.cat(parts) if len(parts) > 1 else parts[0]).numpy()
    del parts
    drop = round(sparsity * magnitudes.size)
    if not drop:
        return -1.0
    # selection in place on our own copy: O(n), no index tensor (kthvalue needs one) and no second
    # copy (np.partition returns one: +392 MiB and ~1 s on a 100M-weight layer)
    magnitudes.partition(drop - 1)
    return float(magnitudes[drop - 1])


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
