"""Helpers shared by the built-in passes: layer selection and per-layer before/after statistics."""

from __future__ import annotations

import torch

from sqc.compiler.pass_base import LayerMap, Stat
from sqc.errors import PipelineError
from sqc.ir.records import Coder, CompressedModel, TensorState, matches, slices


def selected(model: CompressedModel, pattern: str, pass_name: str) -> list[TensorState]:
    """The weight tensors a pass acts on; a pattern that selects nothing is an error, not a no-op."""
    states = list(model.weights(pattern))
    if not states:
        names = ", ".join(s.layer for s in model.weights()) or "none"
        raise PipelineError(f"{pass_name}: layers={pattern!r} matches no weight tensor (layers: {names})")
    return states


def override(state: TensorState, table: LayerMap, default: float) -> float:
    """The per-layer value for ``state``: the last matching glob in ``table`` wins, else ``default``."""
    value = default
    for pattern, number in table:
        if matches(state, pattern):
            value = number
    return value


def is_overridden(state: TensorState, table: LayerMap) -> bool:
    return any(matches(state, pattern) for pattern, _ in table)


def unused_overrides(model: CompressedModel, table: LayerMap) -> list[str]:
    """Diagnostics for override globs that match no tensor: almost always a typo."""
    states = list(model.weights())
    return [
        f"per_layer entry {pattern!r} matches no weight tensor"
        for pattern, _ in table
        if not any(matches(s, pattern) for s in states)
    ]


def encoded_bytes(state: TensorState) -> int:
    """Bytes the container writes for this tensor right now (the real encoder, not an estimate;
    cached on the record until its value or coder changes)."""
    from sqc.formats.tensor_codec import encoded_size

    return encoded_size(state)


def layer_stats(state: TensorState, bytes_before: int, max_abs_error: float) -> dict[str, Stat]:
    """Per-layer statistics every weight-changing pass reports."""
    return {
        "density": round(state.density, 6),
        "bits_per_weight": state.bits_per_weight(),
        "bytes_before": bytes_before,
        "bytes_after": encoded_bytes(state),
        "max_abs_error": max_abs_error,
    }


def change_stats(state: TensorState, before: torch.Tensor, bytes_before: int) -> dict[str, Stat]:
    """:func:`layer_stats` with the error measured against the values ``before`` the pass."""
    after = state.decode().reshape(-1)
    before = before.reshape(-1)
    moves = (float(torch.sub(after[p], before[p]).abs_().max()) for p in slices(after.numel()))
    error = max(moves, default=0.0)  # slice by slice: no temporary of the tensor's size
    return layer_stats(state, bytes_before, error)


def set_coder(state: TensorState, coder: Coder) -> dict[str, Stat]:
    """Switch a record's entropy coder (its values stay as they are); the layer's bytes before and after."""
    before = encoded_bytes(state)
    state.coder = coder
    after = encoded_bytes(state)
    return {
        "bytes_before": before,
        "bytes_after": after,
        "bits_per_weight_coded": round(8 * after / max(1, state.kept), 4),
    }


def byte_totals(layers: dict[str, dict[str, Stat]]) -> dict[str, Stat]:
    """Whole-model sums of the per-layer byte counts."""
    return {key: int(sum(int(v[key]) for v in layers.values())) for key in ("bytes_before", "bytes_after")}


def totals(layers: dict[str, dict[str, Stat]]) -> dict[str, Stat]:
    """Whole-model sums of the per-layer byte counts and the worst error."""
    out = byte_totals(layers)
    out["max_abs_error"] = max((float(v["max_abs_error"]) for v in layers.values()), default=0.0)
    return out
