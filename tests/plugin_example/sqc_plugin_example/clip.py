"""``clip``: clamp weights to ``±limit`` — a small, real pass written against the public pass API."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from sqc.compiler.pass_base import OptionError, Pass, PassContext, PassResult, Stat, check_range
from sqc.errors import PipelineError
from sqc.ir.records import CompressedModel


@dataclass(frozen=True)
class Clip(Pass):
    """Clamp the selected weight tensors to ``[-limit, limit]``.

    Runs on dense float weights only, so it must come before ``share``/``quant`` (which replace the
    weights by integer codes) and before ``huffman``. A pruning mask is kept as it is: clamping leaves
    pruned zeros at zero.
    """

    name = "clip"
    summary = "clamp weights to ±limit (example plugin pass)"
    conflicts: ClassVar[dict[str, str]] = {
        "codes": "clip works on float weights: run it before share or quant",
        "entropy-coded": "huffman must come after every pass that changes weights",
    }

    limit: float = field(default=0.1, metadata={"help": "largest magnitude a weight may keep (> 0)"})
    layers: str = field(default="*", metadata={"help": "glob over tensor or layer names"})

    def __post_init__(self) -> None:
        if not math.isfinite(self.limit):  # pipeline text cannot spell inf or nan, so the spec must not
            raise OptionError("limit", f"{self.limit} is not a finite number")
        check_range("limit", self.limit, 0.0, math.inf, low_open=True)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        states = list(model.weights(self.layers))
        if not states:
            names = ", ".join(s.layer for s in model.weights()) or "none"
            raise PipelineError(f"clip: layers={self.layers!r} matches no weight tensor (layers: {names})")
        coded = [s.name for s in states if s.kind != "dense"]
        if coded:
            held = ", ".join(coded)
            raise PipelineError(f"clip: {held} already hold integer codes; clip needs float weights")
        layers: dict[str, dict[str, Stat]] = {}
        for state in states:
            before = state.decode()
            after = before.clamp(-self.limit, self.limit)
            error = (after - before).abs()
            clipped = int((error > 0).sum())
            if clipped:
                state.set_dense(after)  # the mask stays; pruned zeros are inside the range
            layers[state.name] = {
                "clipped": clipped,
                "max_abs_error": float(error.max()) if error.numel() else 0.0,
            }
        model.sync([s.name for s in states])
        clipped_total = sum(int(v["clipped"]) for v in layers.values())
        stats: dict[str, Stat] = {
            "limit": self.limit,
            "clipped": clipped_total,
            "max_abs_error": max(float(v["max_abs_error"]) for v in layers.values()),
        }
        return PassResult(clipped_total > 0, stats, layers)
