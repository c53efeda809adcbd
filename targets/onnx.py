"""The ONNX target: the compressed model as an ONNX graph that ONNX Runtime loads.

Built from the IR, node by node (not by ``torch.onnx.export`` of the reloaded module): the records say
how each weight is stored, and the converter keeps that form instead of re-discovering float
initializers in an exporter's output, where constant folding may already have transposed, fused or
duplicated them. Each weight is written in the narrowest exact integer form ONNX has:

* fixed point (``quant``): the codes as INT4/INT8/INT16/INT32 initializers with ``DequantizeLinear``
  (per-tensor scale, or per output channel on axis 0); the step ``mult * 2**-frac`` is a float32, and
  ``code * step`` is exact in float32 (:meth:`sqc.ir.records.FixedPoint.dequantize`), so the weights ONNX
  Runtime computes with are bit for bit the ones ``sqc.load`` holds;
* shared (``share``): the float32 codebook and UINT4/UINT8/UINT16 indices, read by ``Cast`` +
  ``Gather``;
* pruned (either of the above): every code, pruned positions reading code 0 or the codebook's +0.0
  entry (appended when it has none), or only the kept codes and the gaps between their positions
  (Deep Compression's relative index at 4, 8 or 16 bits), expanded by ``CumSum`` + ``ScatterElements``
  (constants: ONNX Runtime folds them once, at load), whichever takes fewer bytes;
* dense: float32 (or the buffer's own dtype).

ONNX's sparse initializers are not used: their int64 coordinates cost more than the codes they skip.
Nor is entropy coding: the ``.onnx`` is the runtime form, the ``.sqc`` the transmission form.
``--option weights=float`` writes every weight as decoded float32 instead (what a runtime without
``DequantizeLinear`` needs, and the dense fp32 baseline). The operators are in
:mod:`sqc.targets.onnx_ops`; ``docs/onnx.md`` has the sizes and the ONNX Runtime options.

The graph covers sqc's vocabulary (:mod:`sqc.ir.ops`) and the ATen operators that today's models bring
through ``torch.export`` (layer norm, attention, LSTM/GRU, embedding, slicing); anything else is
refused with the node and the op. The batch dimension of every input is symbolic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqc.compiler.target import LowerReport, LowerRequest
from sqc.errors import SqcError
from sqc.ir.records import CompressedModel
from sqc.outputs import check_output, write_atomic
from sqc.targets.onnx_graph import OPSET, WEIGHT_FORMS, Converter, onnx_module
from sqc.targets.onnx_ops import lookup

# ---- the target ---------------------------------------------------------------------------------


def to_onnx(model: CompressedModel, name: str = "sqc", weights: str = "int") -> Any:
    """The ONNX ``ModelProto`` of an IR (``weights``: ``int`` keeps integer forms, ``float`` decodes)."""
    if weights not in WEIGHT_FORMS:
        raise SqcError(f"--option weights={weights}: expected one of {', '.join(WEIGHT_FORMS)}")
    proto = Converter(model, weights, lookup).run(name)
    onnx = onnx_module()
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SqcError(f"target onnx: the graph does not validate ({first})") from None
    return proto


def write_onnx(source: Path, output: Path, *, force: bool = False, weights: str = "int") -> dict[str, Any]:
    """Lower ``source`` (a ``.sqc``) to ``output`` (a ``.onnx``), atomically; the sizes of both."""
    from sqc.formats.container import read

    check_output(output, force=force, inputs=[source])
    onnx_module()
    model = read(Path(source))
    data = to_onnx(model, Path(source).stem, weights).SerializeToString()
    write_atomic(output, data, force=force, inputs=[source])
    sqc_bytes = Path(source).stat().st_size
    params = sum(s.numel for s in model.tensors.values())
    return {
        "output": str(output),
        "bytes": len(data),
        "sqc_bytes": sqc_bytes,
        "fp32_bytes": 4 * params,
        "weights": weights,
        "opset": OPSET,
        "summary": [
            f"wrote {output}: {len(data):,} bytes (target onnx, {weights} weights, opset {OPSET})",
            f"{Path(source).name}: {sqc_bytes:,} bytes (the .onnx is {len(data) / sqc_bytes:.1f}x that); "
            f"fp32 weights: {4 * params:,} bytes ({4 * params / len(data):.1f}x the .onnx)",
        ],
    }


class OnnxTarget:
    """Registered as target ``onnx``: ``sqc lower model.sqc --target onnx -o model.onnx``."""

    name = "onnx"
    takes_calib = False
    takes_options = True

    def lower(self, request: LowerRequest) -> LowerReport:
        weights = "int"
        for text in request.options:
            key, sep, value = text.partition("=")
            if not sep or key.strip() != "weights":
                raise SqcError(f"--option {text}: target onnx takes only weights=int|float")
            weights = value.strip()
        report = write_onnx(Path(request.source), Path(request.output), force=request.force, weights=weights)
        return LowerReport("onnx", report["output"], report["bytes"], report.pop("summary"), report)
