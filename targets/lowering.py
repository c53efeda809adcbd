"""The lowering flow the integer targets share: read the file, calibrate, legalize, compare.

The C and HLS projects and the integer simulation (``sim``) start the same way — parse the integer
options, read the ``.sqc``, take the calibration inputs, legalize into an :class:`IntProgram` — and end
the same way: the integer model compared with the float one on the calibration inputs, the program's
notes and options in the report. :func:`integer_lowering` is the start, :func:`integer_report` the end;
each target does only what is its own in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqc.compiler.target import LowerReport, LowerRequest
from sqc.formats.container import read
from sqc.ir.records import CompressedModel
from sqc.targets.calib import CalibData, calibration_data
from sqc.targets.integer import IntProgram
from sqc.targets.legalize import LowerOptions, legalize, require_calib
from sqc.targets.simulate import accuracy_lines, compare


@dataclass
class IntegerLowering:
    """A ``.sqc`` legalized for an integer target: the model read, the calibration data, the program, and
    the options (the integer ones parsed, the target's own as given)."""

    model: CompressedModel
    data: CalibData
    program: IntProgram
    options: LowerOptions
    extra: dict[str, str]


def integer_lowering(
    request: LowerRequest,
    target: str,
    known_extra: tuple[str, ...] = (),
    *,
    options: tuple[LowerOptions, dict[str, str]] | None = None,
    samples: int | None = None,
    keep_rans: bool = False,
    check: Callable[[CompressedModel], None] | None = None,
) -> IntegerLowering:
    """Parse ``request.options`` (the integer options plus ``known_extra``) unless the target already
    did (``options``: what :meth:`LowerOptions.parse` returned, for a target whose own options decide
    ``samples``), read the file, calibrate on at least ``samples`` inputs (default: ``calib_samples``)
    and legalize. ``check(model)`` runs on the model before calibration (a target's own refusals)."""
    opts, extra = options or LowerOptions.parse(list(request.options), known_extra)
    calib = require_calib(target, request.calib)
    model = read(Path(request.source))
    if check is not None:
        check(model)
    data = calibration_data(calib, max(opts.calib_samples, samples or 0), model)
    program = legalize(model, data, opts, keep_rans=keep_rans)
    return IntegerLowering(model, data, program, opts, extra)


def compared(lowering: IntegerLowering, **simulated: Any) -> dict[str, Any]:
    """The integer model against the float model on the calibration inputs it was legalized on."""
    seen = lowering.data.head(lowering.options.calib_samples)
    return compare(lowering.program, lowering.model.graph_module.eval(), seen.x, seen.y, **simulated)


def project_bytes(folder: Path) -> int:
    """The bytes of the files a project target wrote into ``folder``."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file())


def integer_report(
    target: str, output: Path, size: int, first: list[str], details: dict[str, Any], notes: list[str]
) -> LowerReport:
    """The report of an integer target: its own ``first`` lines, then the notes and the accuracy lines
    (``details["accuracy"]``, from :func:`compared`)."""
    summary = [*first, *(f"note: {line}" for line in notes), *accuracy_lines(details.get("accuracy"))]
    return LowerReport(target, str(output), size, summary, {**details, "notes": notes})
