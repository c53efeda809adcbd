"""What a target is: the interface ``sqc lower`` (and any plugin target) speaks.

A target turns a ``.sqc`` file into something that runs — a PyTorch module, ONNX, an integer simulation,
a C or an HLS project. It is registered by name (:data:`sqc.compiler.registry.BUILTIN_TARGETS`, or a
plugin's ``sqc.targets`` entry point), receives one :class:`LowerRequest` and returns one
:class:`LowerReport`: the lines ``sqc lower`` prints and the fields ``--json`` adds to them. The
command line never looks inside a target's result beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True)
class LowerRequest:
    """One ``sqc lower`` call: the file, where to write, and what the user gave.

    ``calib`` is the calibration source of the integer targets (a data file, a tensor, or loaders; see
    :mod:`sqc.targets.calib`), ``options`` the ``--option key=value`` texts in order.
    """

    source: Path
    output: Path
    force: bool = False
    calib: Any = None
    options: tuple[str, ...] = ()


@dataclass
class LowerReport:
    """What a target did: ``summary`` is printed line by line; ``to_json`` is ``--json``'s object."""

    target: str
    output: str
    bytes: int
    summary: list[str]
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "output": self.output,
            "bytes": self.bytes,
            **self.details,
            "summary": self.summary,
        }


@runtime_checkable
class Target(Protocol):
    """A lowering: ``name`` as registered; ``takes_calib`` and ``takes_options`` say whether ``--calib``
    / ``--loaders`` and ``--option`` mean anything to it (the command line refuses them otherwise)."""

    name: ClassVar[str]
    takes_calib: ClassVar[bool]
    takes_options: ClassVar[bool]

    def lower(self, request: LowerRequest) -> LowerReport: ...
