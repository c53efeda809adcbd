"""What legalization is told and how it fails: the integer targets' options, and the errors that name
the node at fault."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from sqc.errors import SqcError
from sqc.targets.calib import CalibSource


class LowerError(SqcError):
    """A model, option or op the integer lowering cannot represent exactly."""


class BatchAxisError(LowerError):
    """A node that moves, indexes or slices the batch axis: :func:`legalize` then lowers the model one
    sample at a time (whole tensors, batch 1) instead of refusing it."""


CALIB_HELP = "--calib FILE (a .npz/.pt with x_val, or a .pt tensor of inputs) or --loaders pkg.module:fn"


def require_calib(target: str, calib: CalibSource | None) -> CalibSource:
    """The calibration inputs an integer target cannot lower without (activation formats come from
    them); labels are optional (:mod:`sqc.targets.calib`)."""
    if calib is None:
        raise LowerError(f"target {target} needs {CALIB_HELP}: activation formats come from calibration")
    return calib


@dataclass(frozen=True)
class LowerOptions:
    """Options of the integer targets (``--option key=value``).

    act_bits: activation width (8 or 16). weight_bits: width given to float weights and float codebooks
    that no pass quantized. sparse: ``auto`` stores a pruned layer sparse (relative index), ``never``
    dense (pruned weights multiplied as zeros), ``always`` sparse even without a mask. calib_samples:
    how many calibration inputs are run.
    """

    act_bits: int = 8
    weight_bits: int = 8
    sparse: Literal["auto", "always", "never"] = "auto"
    calib_samples: int = 1000

    def __post_init__(self) -> None:
        if self.act_bits not in (8, 16):
            raise LowerError(f"--option act_bits={self.act_bits}: expected 8 or 16")
        if not 2 <= self.weight_bits <= 16:
            raise LowerError(f"--option weight_bits={self.weight_bits}: expected 2..16")
        if self.sparse not in ("auto", "always", "never"):
            raise LowerError(f"--option sparse={self.sparse}: expected auto, always or never")
        if self.calib_samples < 1:
            raise LowerError(f"--option calib_samples={self.calib_samples}: expected a positive count")

    @staticmethod
    def parse(
        pairs: list[str] | None, known_extra: tuple[str, ...] = ()
    ) -> tuple[LowerOptions, dict[str, str]]:
        """``key=value`` strings -> options; keys in ``known_extra`` are returned for the writer."""
        values: dict[str, Any] = {}
        extra: dict[str, str] = {}
        names = {f.name: f for f in fields(LowerOptions)}
        for pair in pairs or []:
            key, sep, value = pair.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise LowerError(f"--option {pair!r}: expected key=value")
            if key in known_extra:
                extra[key] = value
            elif key in names:
                if names[key].type in ("int", int):
                    try:
                        values[key] = int(value)
                    except ValueError:
                        raise LowerError(f"--option {key}={value}: expected an integer") from None
                else:
                    values[key] = value
            else:
                known = ", ".join([*names, *known_extra])
                raise LowerError(f"--option {key}: unknown option (known: {known})")
        return LowerOptions(**values), extra

    def as_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}
