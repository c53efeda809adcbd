"""Pass instrumentation, as LLVM and MLIR have it: hooks around every pass of a pipeline run.

An instrument sees each pass before and after it runs, with the IR. The pass manager calls them in
order (``before_pass`` in the order given, ``after_pass`` in reverse, as MLIR's
``PassInstrumentor`` does), so that a timer wrapped around a printer does not time the printing.
Two are built in, behind ``sqc compress --time-passes`` and ``--print-ir-after``:

* :class:`PassTimer` — wall and CPU seconds per pass (what ``-time-passes`` reports in LLVM);
* :class:`PrintIR` — the IR's text form (:func:`sqc.ir.text.ir_text`) after the passes named, and
  optionally after capture, for diffs between passes and for golden-file tests.

Instruments observe; they never change the IR or the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqc.compiler.pass_base import Pass, PassResult
from sqc.errors import SqcError
from sqc.ir.records import CompressedModel
from sqc.ir.text import ir_text


class PassInstrument:
    """Base class: override the hooks you need (they do nothing here)."""

    def before_pipeline(self, model: CompressedModel) -> None:
        """Called once, with the IR the pipeline starts from (the captured model), before any pass."""

    def before_pass(self, index: int, pass_: Pass, model: CompressedModel) -> None:
        """Called before pass number ``index`` (from 1) runs."""

    def after_pass(
        self, index: int, pass_: Pass, model: CompressedModel, result: PassResult, seconds: float
    ) -> None:
        """Called after the pass ran and the IR was verified; ``seconds`` is its wall time."""


@dataclass
class PassTiming:
    index: int
    name: str
    wall: float
    cpu: float


@dataclass
class PassTimer(PassInstrument):
    """Wall-clock and process CPU seconds of every pass (verification after the pass included)."""

    timings: list[PassTiming] = field(default_factory=list)
    _cpu_started: float = 0.0

    def before_pass(self, index: int, pass_: Pass, model: CompressedModel) -> None:
        self._cpu_started = time.process_time()

    def after_pass(
        self, index: int, pass_: Pass, model: CompressedModel, result: PassResult, seconds: float
    ) -> None:
        """``seconds`` is the pass manager's own wall time of the pass; only CPU time is measured here."""
        cpu = time.process_time() - self._cpu_started
        self.timings.append(PassTiming(index, pass_.name, seconds, cpu))

    def rows(self) -> list[dict[str, object]]:
        """One row per pass plus a ``total`` row: seconds and the share of the total wall time."""
        total_wall = sum(t.wall for t in self.timings)
        total_cpu = sum(t.cpu for t in self.timings)
        rows: list[dict[str, object]] = [
            {
                "index": t.index,
                "pass": t.name,
                "wall_s": round(t.wall, 4),
                "cpu_s": round(t.cpu, 4),
                "share": round(t.wall / total_wall, 4) if total_wall else 0.0,
            }
            for t in self.timings
        ]
        rows.append(
            {
                "index": None,
                "pass": "total",
                "wall_s": round(total_wall, 4),
                "cpu_s": round(total_cpu, 4),
                "share": 1.0,
            }
        )
        return rows


CAPTURE = "capture"
ALL = "all"


def parse_print_selector(
    text: str, pass_names: Sequence[str], option: str = "--print-ir-after"
) -> frozenset[str]:
    """``all``, ``capture`` or pass names, comma-separated; a name the pipeline does not hold is an error
    naming the option (a typo would otherwise print nothing)."""
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not chosen:
        raise SqcError(f"{option}: give a pass name, 'capture' or 'all'")
    unknown = sorted(chosen - {ALL, CAPTURE} - set(pass_names))
    if unknown:
        known = ", ".join(dict.fromkeys([*pass_names, CAPTURE, ALL]))
        raise SqcError(f"{option}: {', '.join(unknown)} is not a pass of this pipeline (choose from {known})")
    return chosen


@dataclass
class PrintIR(PassInstrument):
    """Writes the IR's text form after the selected passes (``all``: every pass and the capture)."""

    selected: frozenset[str]
    write: Callable[[str], None]

    def wants(self, name: str) -> bool:
        return ALL in self.selected or name in self.selected

    def before_pipeline(self, model: CompressedModel) -> None:
        if self.wants(CAPTURE):
            self.write(f"; IR after capture\n{ir_text(model)}")

    def after_pass(
        self, index: int, pass_: Pass, model: CompressedModel, result: PassResult, seconds: float
    ) -> None:
        if self.wants(pass_.name):
            self.write(f"; IR after pass #{index} {pass_.spec()}\n{ir_text(model)}")
