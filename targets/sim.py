"""The integer simulator as a target: the outputs the C and HLS targets will compute, before building them.

``sqc lower model.sqc --target sim -o out.npz --calib data.npz`` legalizes exactly as ``--target c`` and
``--target hls`` do (same options, same program, ``targets/INTEGER.md``) and runs the program with the
PyTorch simulator (:mod:`sqc.targets.simulate`, which the C and HLS outputs are tested bit-identical
to). It simulates the calibration inputs the other targets report on, or every input of
``--option inputs=FILE`` (a data file: a test set, say, with or without labels), and writes:

* ``.npz``: ``codes`` (the output codes, int8/int16 as the C target's ``sqc_run`` writes them, samples
  first, the model's output shape), ``values`` (``codes * 2**-frac``), ``frac``, and ``input_codes``/
  ``input_frac`` (the quantized inputs, the bytes a C or HLS test harness feeds);
* ``.npy``: ``codes`` only.

The report is the other integer targets' accuracy block (agreement with the float model, top-1 on
labels when there are any). :func:`sqc.simulate` is the same thing in Python.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sqc.compiler.target import LowerReport, LowerRequest
from sqc.errors import SqcError
from sqc.ir.records import CompressedModel
from sqc.outputs import check_output, write_atomic
from sqc.targets.calib import CalibData, CalibSource, calib_file, calibration_data, fit_inputs
from sqc.targets.integer import IntProgram
from sqc.targets.legalize import LowerOptions, legalize, require_calib
from sqc.targets.lowering import integer_lowering
from sqc.targets.simulate import accuracy_lines, compare, dequantize_output, quantize_input, simulate

SUFFIXES = (".npz", ".npy")


@dataclass
class Simulation:
    """Integer outputs of a lowered model, exactly as the C and HLS targets compute them.

    ``codes``: int64 output codes, ``(samples, *output shape)``; ``frac``: the output format (a value
    is ``code * 2**-frac``); ``input_codes``: the quantized inputs, ``(samples, *input shape)``;
    ``program``: the integer program (pass it back to :func:`sqc.simulate` to run other inputs without
    calibrating again); ``labels``: the inputs' class labels when they came with some (a data file
    with ``y_val``, ``(x, y)`` batches), else None."""

    codes: torch.Tensor
    frac: int
    input_codes: torch.Tensor
    program: IntProgram
    labels: torch.Tensor | None = None

    @property
    def values(self) -> torch.Tensor:
        """The outputs as real numbers (float64, exact): ``codes * 2**-frac``."""
        return dequantize_output(self.program, self.codes)

    @property
    def bits(self) -> int:
        return self.program.act_bits


def run(program: IntProgram, x: torch.Tensor, labels: torch.Tensor | None = None) -> Simulation:
    """Simulate ``program`` on float inputs ``x`` (quantized with its input format first)."""
    out = program.tensors[program.output]
    codes = simulate(program, x).reshape((x.shape[0], *out.shape))
    return Simulation(codes, out.fmt.frac, quantize_input(program, x), program, labels)


def inputs_for(program: IntProgram, data: CalibData) -> torch.Tensor:
    """``data``'s inputs shaped like the program's input."""
    return fit_inputs(data.x, program.tensors[program.input].shape, data.source)


def npz_bytes(sim: Simulation) -> bytes:
    dtype = np.int8 if sim.bits == 8 else np.int16
    buffer = io.BytesIO()
    np.savez(
        buffer,
        codes=sim.codes.numpy().astype(dtype),
        values=sim.values.numpy(),
        frac=np.int64(sim.frac),
        input_codes=sim.input_codes.numpy().astype(dtype),
        input_frac=np.int64(sim.program.tensors[sim.program.input].fmt.frac),
    )
    return buffer.getvalue()


def npy_bytes(sim: Simulation) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, sim.codes.numpy().astype(np.int8 if sim.bits == 8 else np.int16))
    return buffer.getvalue()


class SimTarget:
    """Registered as target ``sim``: ``sqc lower model.sqc --target sim -o out.npz --calib data.npz``."""

    name = "sim"
    takes_calib = True
    takes_options = True

    def lower(self, request: LowerRequest) -> LowerReport:
        source, output = Path(request.source), Path(request.output)
        if output.suffix not in SUFFIXES:
            raise SqcError(f"{output}: target sim writes .npz (codes, values, input codes) or .npy (codes)")
        opts, extra = LowerOptions.parse(list(request.options), known_extra=("inputs",))
        more = Path(extra["inputs"]) if extra.get("inputs") else None
        calib = require_calib("sim", request.calib)
        check_output(output, force=request.force, inputs=[source, calib_file(calib), more])
        lowering = integer_lowering(request, "sim", options=(opts, extra))
        program, data = lowering.program, lowering.data
        if more is not None:
            data = calibration_data(more)
        x = inputs_for(program, data)
        sim = run(program, x)
        blob = npz_bytes(sim) if output.suffix == ".npz" else npy_bytes(sim)
        write_atomic(output, blob, force=request.force, inputs=[source, calib_file(calib), more])
        accuracy = compare(program, lowering.model.graph_module.eval(), x, data.y, codes=sim.codes)
        report = {
            "target": "sim",
            "output": str(output),
            "bytes": len(blob),
            "inputs": data.source,
            "samples": data.samples,
            "input": {"shape": list(x.shape[1:]), "frac": int(program.tensors[program.input].fmt.frac)},
            "output_format": {"shape": list(sim.codes.shape[1:]), "frac": sim.frac, "bits": sim.bits},
            "accuracy": accuracy,
            "notes": [*program.notes, *(data.notes if more is not None else [])],
            "options": program.options,
        }
        return LowerReport("sim", str(output), len(blob), summary(report), report)


def summary(report: dict) -> list[str]:
    """The report as text lines for ``sqc lower`` (``--json`` prints the dict itself)."""
    out = report["output_format"]
    lines = [
        f"wrote {report['output']}: {report['bytes']:,} bytes (target sim): integer outputs of "
        f"{report['samples']:,} inputs of {report['inputs']}, shape {tuple(out['shape'])}, "
        f"{out['bits']}-bit codes, value = code * 2^-{out['frac']}"
    ]
    lines.extend(f"note: {line}" for line in report["notes"])
    lines.extend(accuracy_lines(report["accuracy"]))
    return lines


def simulate_model(
    model: CompressedModel | IntProgram,
    x: CalibSource,
    calib: CalibSource | None = None,
    options: list[str] | None = None,
) -> Simulation:
    """What :func:`sqc.simulate` does once the model is read: legalize (unless given a program) and run."""
    if isinstance(model, IntProgram):
        if calib is not None or options:
            raise SqcError(
                "sqc.simulate: a program is already calibrated (calib= and options= are for models)"
            )
        program = model
    else:
        if calib is None:
            raise SqcError(
                "sqc.simulate: calib= is required for a model (the inputs given to lower --calib): "
                "activation formats come from calibration"
            )
        opts, _ = LowerOptions.parse(options)
        program = legalize(model, calibration_data(calib, opts.calib_samples, model), opts)
    data = calibration_data(x)
    return run(program, inputs_for(program, data), data.y)
