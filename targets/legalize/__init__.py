"""Legalization: a ``.sqc`` model -> the :class:`~sqc.targets.integer.IntProgram` every backend emits.

Steps, each stated in ``targets/INTEGER.md``: calibrate activation ranges on the user's data with the
decoded float model; give every tensor a power-of-two format; turn each weight record into integer
values plus its ROM streams (codebook indices or fixed-point codes, relative sparse index, packed or
Huffman-coded as in the container); fold batch norm and ReLU-like clamps into the preceding conv/linear
epilogue; compute every bias, multiplier, shift and table. Anything outside the supported op set is an
:class:`LowerError` naming the node — never a program that computes something else.
"""

from __future__ import annotations

from pathlib import Path

from sqc.ir.records import CompressedModel
from sqc.targets.calib import CalibSource, calibration_data
from sqc.targets.integer import IntProgram
from sqc.targets.legalize.calibrate import calibrate
from sqc.targets.legalize.ops import GraphWalk, refuse_open_ops
from sqc.targets.legalize.options import CALIB_HELP, BatchAxisError, LowerError, LowerOptions, require_calib

__all__ = ["BatchAxisError", "LowerError", "LowerOptions", "legalize", "require_calib"]


def legalize(
    source: Path | CompressedModel,
    calib_path: CalibSource | None,
    opts: LowerOptions | None = None,
    *,
    keep_rans: bool = False,
) -> IntProgram:
    """Read a ``.sqc`` file (or take a model), calibrate on ``calib_path`` (a data file, inputs or
    loaders: :mod:`sqc.targets.calib`) and build the integer program.

    ``keep_rans``: keep rANS-coded tensors' context-coded streams (a ``rans`` :class:`Stream`) for a
    target whose runtime decodes them (the C target); off, they are stored packed or Huffman-coded."""
    from sqc.formats.container import read

    opts = opts or LowerOptions()
    model = read(Path(source)) if not isinstance(source, CompressedModel) else source
    if calib_path is None:
        raise LowerError(f"integer targets need {CALIB_HELP}: activation formats come from calibration")
    refuse_open_ops(model)
    data = calibration_data(calib_path, opts.calib_samples, model)
    calib = calibrate(model, data.x)
    try:
        program = GraphWalk(model, calib, opts, keep_rans).run()
    except BatchAxisError:
        # the graph moves or reshapes the batch axis (nn.MultiheadAttention works on (T, N, D)): lower
        # the model for one sample at a time, whole tensors (batch 1) as the program's shapes
        calib = calibrate(model, data.x, whole=True)
        program = GraphWalk(model, calib, opts, keep_rans, whole=True).run()
        program.notes.append(
            "the graph moves the batch axis: lowered per sample (tensor shapes with batch 1)"
        )
    program.notes[:0] = [f"calibrated on {calib.samples} inputs of {data.source}", *data.notes]
    return program
