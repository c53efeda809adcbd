"""Calibration: the decoded float model run on the user's inputs, recording every activation's range
(from which each tensor gets its power-of-two format)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from sqc.ir.ops import aten_name
from sqc.ir.records import CompressedModel
from sqc.targets.legalize.options import LowerError

# ------------------------------------------------------------------------------------------------
# calibration


@dataclass
class Calibration:
    """Per node: the largest |value| seen and the per-sample output shape."""

    max_abs: dict[str, float]
    shapes: dict[str, tuple[int, ...]]
    samples: int


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, calib: Calibration, whole: bool = False) -> None:
        super().__init__(gm)
        self.calib = calib
        self.whole = whole

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise LowerError(f"calibration failed at node {n.name}: {reason}") from None
        if isinstance(result, torch.Tensor) and result.is_floating_point():
            peak = float(result.detach().abs().max()) if result.numel() else 0.0
            self.calib.max_abs[n.name] = max(self.calib.max_abs.get(n.name, 0.0), peak)
            self.calib.shapes[n.name] = tuple(result.shape if self.whole else result.shape[1:])
            if n.op == "call_function" and aten_name(n.target) == "aten::scaled_dot_product_attention":
                q, k = (self.env[a] for a in n.args[:2])  # type: ignore[index]
                scale = n.kwargs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
                scores = float((q @ k.transpose(-2, -1)).abs().max()) * scale
                key = f"{n.name}_scores"
                self.calib.max_abs[key] = max(self.calib.max_abs.get(key, 0.0), scores)
        return result


def calibrate(model: CompressedModel, x: torch.Tensor, batch: int = 250, whole: bool = False) -> Calibration:
    """Ranges and shapes of every node on ``x``. ``whole``: shapes are whole tensors (batch 1 each)."""
    calib = Calibration({}, {}, int(x.shape[0]))
    gm = model.graph_module.eval()
    step = 1 if whole else batch
    with torch.no_grad():
        for start in range(0, x.shape[0], step):
            _Recorder(gm, calib, whole).run(x[start : start + step])
    return calib
