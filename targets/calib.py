"""Calibration data of the integer targets: inputs only, labels when there are any.

Activation formats come from running the float model on representative inputs, which needs no label;
a pitch tracker or an embedding model has none. Calibration therefore takes any of:

* a data file: a ``.npz`` or ``.pt`` with ``x_val`` (or ``x``) and optionally ``y_val`` (or ``y``),
  or a ``.pt`` holding one tensor of inputs (read without executing code, as :mod:`sqc.runtime.data` reads);
* inputs in memory: a tensor or array, or an ``(x, y)`` pair;
* loaders (``--loaders pkg.module:fn``, the :mod:`sqc.runtime.loaders` contract): the validation loader's
  batches, each ``x`` or ``(x, y)``; any other iterable of such batches in the API.

Labels (1-D integers, one per input) add top-1 accuracy lines to the lowering report; the agreement of
the integer model with the float model is reported either way. A ``y`` that is not class labels (a
regression target, say) is ignored, with a note.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch

from sqc.ir.records import CompressedModel
from sqc.runtime.data import LABEL_DTYPES, DataError, float_inputs, read_arrays
from sqc.runtime.loaders import LoaderError, Loaders, raw_batches

X_KEYS, Y_KEYS = ("x_val", "x"), ("y_val", "y")


@dataclass
class CalibData:
    """Float inputs ``x`` (samples first), class labels ``y`` or None, where they came from (for
    messages and the report) and what was noticed on the way (a ``y`` that is not labels)."""

    x: torch.Tensor
    y: torch.Tensor | None
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return int(self.x.shape[0])

    def head(self, samples: int) -> CalibData:
        """The first ``samples`` inputs (and labels)."""
        y = self.y[:samples] if self.y is not None else None
        return CalibData(self.x[:samples], y, self.source, list(self.notes))


CalibSource: TypeAlias = (
    str | os.PathLike[str] | torch.Tensor | np.ndarray | tuple[Any, Any] | Loaders | CalibData | Iterable[Any]
)
"""What ``calib=`` (``--calib`` / ``--loaders``) may be: see the module docstring."""


def calib_file(source: CalibSource | None) -> Path | None:
    """The file calibration reads, if it reads one (so that no output overwrites it)."""
    return Path(source) if isinstance(source, (str, os.PathLike)) else None


def calibration_data(
    source: CalibSource, samples: int | None = None, model: CompressedModel | None = None
) -> CalibData:
    """The first ``samples`` inputs (all when None) of ``source``, shaped like ``model``'s one input
    when a model is given. Every problem is one :class:`~sqc.runtime.data.DataError` naming the source."""
    if isinstance(source, CalibData):
        data = source
    elif isinstance(source, (str, os.PathLike)):
        data = _from_file(Path(source))
    elif isinstance(source, (torch.Tensor, np.ndarray)):
        data = _pair(source, None, "inputs", "x")
    elif isinstance(source, tuple) and len(source) == 2:
        data = _pair(source[0], source[1], "inputs", "x")
    elif isinstance(source, Loaders):
        data = _from_batches(source.val, source.source, samples)
    elif isinstance(source, Iterable):
        data = _from_batches(source, f"calib={type(source).__name__}", samples)
    else:
        raise DataError(
            f"calib={type(source).__name__}: expected a data file, a tensor of inputs, an (x, y) pair or "
            "a loader of x or (x, y) batches"
        )
    if samples is not None:
        data = data.head(samples)
    if model is not None:
        if len(model.inputs) != 1:
            raise DataError(
                f"the integer targets take models with one input, this one has {len(model.inputs)}"
            )
        x = fit_inputs(data.x, tuple(model.inputs[0].shape[1:]), data.source)
        data = CalibData(x, data.y, data.source, data.notes)
    return data


def fit_inputs(x: torch.Tensor, want: tuple[int, ...], source: str) -> torch.Tensor:
    """``x`` shaped ``(samples, *want)``: a sample of another shape but the right size is reshaped."""
    if tuple(x.shape[1:]) != tuple(want):
        if math.prod(x.shape[1:]) != math.prod(want):
            raise DataError(
                f"{source}: input samples of shape {tuple(x.shape[1:])} do not fit input {tuple(want)}"
            )
        x = x.reshape((x.shape[0], *want))
    return x


def _from_file(path: Path) -> CalibData:
    arrays = read_arrays(path, bare="x")
    xk = next((k for k in X_KEYS if k in arrays), None)
    if xk is None:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise DataError(f"{path}: missing x_val (or x), the calibration inputs (found: {found})")
    yk = next((k for k in Y_KEYS if k in arrays), None)
    return _pair(arrays[xk], arrays[yk] if yk else None, str(path), xk, yk or "y")


def _pair(x: Any, y: Any, source: str, xk: str, yk: str = "y") -> CalibData:
    x, y = _tensor(x, source, xk), None if y is None else _tensor(y, source, yk)
    xf = float_inputs(source, xk, x)
    notes: list[str] = []
    return CalibData(xf, _labels(y, xf.shape[0], source, yk, notes), source, notes)


def _tensor(value: Any, source: str, key: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise DataError(f"{source}: {key} holds Python objects, expected numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{source}: {key} is a {type(value).__name__}, expected a tensor")
    return value.detach().cpu()


def _labels(
    y: torch.Tensor | None, samples: int, source: str, key: str, notes: list[str]
) -> torch.Tensor | None:
    """Class labels, or None (no ``y``, or one that is not labels: noted). A ``y`` with another number
    of rows than there are inputs is an error: the pairing itself is wrong."""
    if y is None:
        return None
    if y.dim() == 0 or y.shape[0] != samples:
        rows = "a scalar" if y.dim() == 0 else f"{y.shape[0]} rows"
        raise DataError(f"{source}: {key} has {rows} but there are {samples} inputs")
    if y.dim() != 1 or y.dtype not in LABEL_DTYPES or (y.numel() and int(y.min()) < 0):
        what = f"{str(y.dtype).removeprefix('torch.')} {tuple(y.shape)}"
        notes.append(f"{source}: {key} ({what}) is not class labels: no top-1 accuracy on labels")
        return None
    return y.to(torch.int64)


def _from_batches(loader: Iterable[Any], source: str, samples: int | None) -> CalibData:
    """Batches ``x`` or ``(x, y)`` until ``samples`` inputs are in hand; labels only if every batch
    had them."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor | None] = []
    notes: list[str] = []
    seen = 0
    for number, batch in raw_batches(loader, source, "calibration"):
        where = f"{source}: batch {number}"
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            x, y = _tensor(batch[0], where, "x"), _tensor(batch[1], where, "y")
        elif isinstance(batch, (tuple, list)) and len(batch) == 1:
            x, y = _tensor(batch[0], where, "x"), None
        else:
            x, y = _tensor(batch, where, "batch"), None
        x = float_inputs(where, "x", x)
        xs.append(x)
        ys.append(_labels(y, x.shape[0], where, "y", notes))
        seen += x.shape[0]
        if samples is not None and seen >= samples:
            break
    if not xs:
        raise LoaderError(f"{source}: the calibration loader yielded no batches")
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) > 1:
        raise LoaderError(f"{source}: batches have samples of different shapes {sorted(shapes)}")
    labels = torch.cat([y for y in ys if y is not None]) if all(y is not None for y in ys) else None
    if labels is None and any(y is not None for y in ys):
        notes.append(f"{source}: some batches have no labels: no top-1 accuracy on labels")
    return CalibData(torch.cat(xs), labels, source, notes[:1])
