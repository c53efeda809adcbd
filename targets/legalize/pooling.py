"""Pooling and mean handlers."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from torch import fx

from sqc.targets.integer import (
    Pool,
    Strided,
    Tensor,
    chw,
)
from sqc.targets.legalize.walk import (
    WalkBase,
    _bind,
    _pair,
)


class PoolOps(WalkBase):
    """Pooling and mean handlers."""

    def _pool(
        self,
        node: fx.Node,
        x: Tensor,
        kind: Literal["max", "avg"],
        rows: list[tuple[int, int]],
        cols: list[tuple[int, int]],
        divisor: np.ndarray | None,
    ) -> None:
        c, h, w = chw(x.shape)
        y = self.new(node, x.fmt)
        if y.numel != c * len(rows) * len(cols):
            raise self.fail(node, f"pooling output {y.shape} does not match its windows")
        self.ops.append(
            Pool(
                node.name,
                [x.name],
                y.name,
                kind,
                c,
                (h, w),
                (len(rows), len(cols)),
                np.array([r[0] for r in rows]),
                np.array([r[1] for r in rows]),
                np.array([q[0] for q in cols]),
                np.array([q[1] for q in cols]),
                divisor,
            )
        )

    def op_max_pool2d(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        one_d = op.endswith("1d")
        x = self.tensor(node, a["input"])
        kind: Literal["max", "avg"] = "max" if op.startswith("max") else "avg"
        k = _pair(a["kernel_size"], one_d)
        s = _pair(a["stride"] if a["stride"] not in (None, (), []) else a["kernel_size"], one_d)
        p = _pair(a["padding"], one_d, 0)
        if a["ceil_mode"]:
            raise self.fail(node, "ceil_mode=True is not supported")
        if kind == "max" and _pair(a["dilation"], one_d) != (1, 1):
            raise self.fail(node, "dilated pooling is not supported")
        _, h, w = chw(x.shape)
        oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
        rows = [(max(0, o * s[0] - p[0]), min(h, o * s[0] - p[0] + k[0])) for o in range(oh)]
        cols = [(max(0, o * s[1] - p[1]), min(w, o * s[1] - p[1] + k[1])) for o in range(ow)]
        divisor = None
        if kind == "avg":
            override = a.get("divisor_override")
            if override:
                counts = [int(override)] * (oh * ow)
            elif a["count_include_pad"]:
                counts = [k[0] * k[1]] * (oh * ow)
            else:
                counts = _window_areas(rows, cols)
            divisor = np.array(counts, dtype=np.int64)
        self._pool(node, x, kind, rows, cols, divisor)

    op_max_pool1d = op_max_pool2d

    op_avg_pool1d = op_max_pool2d

    op_avg_pool2d = op_max_pool2d

    def op_adaptive_avg_pool2d(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        if op.startswith("adaptive_max") and a["return_indices"]:
            raise self.fail(node, "return_indices is not supported")
        one_d = op.endswith("1d")
        x = self.tensor(node, a["input"])
        _, h, w = chw(x.shape)
        size = a["output_size"]
        oh, ow = _pair(size, one_d)
        oh = h if oh is None else oh
        ow = w if ow is None else ow

        def windows(n: int, out: int) -> list[tuple[int, int]]:
            return [((i * n) // out, -((-(i + 1) * n) // out)) for i in range(out)]

        rows, cols = windows(h, oh), windows(w, ow)
        kind: Literal["max", "avg"] = "max" if "max" in op else "avg"
        divisor = None
        if kind == "avg":
            divisor = np.array(_window_areas(rows, cols), dtype=np.int64)
        self._pool(node, x, kind, rows, cols, divisor)

    op_adaptive_avg_pool1d = op_adaptive_avg_pool2d

    op_adaptive_max_pool1d = op_adaptive_avg_pool2d

    op_adaptive_max_pool2d = op_adaptive_avg_pool2d

    def op_mean(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        dims = a["dim"] if isinstance(a["dim"], (tuple, list)) else [a["dim"]]
        rank = len(x.shape) + 1
        if len(dims) == 1 and dims[0] is not None and (not self.lead or len(x.shape) not in (2, 3)):
            self._mean_axis(node, x, self._axis(node, x, dims[0]))
            return
        axes = sorted(int(d) % rank for d in dims if d is not None)
        if not self.lead or len(x.shape) not in (2, 3) or axes != list(range(2, rank)):
            raise self.fail(node, "mean is supported over all spatial axes only (global average pooling)")
        _, h, w = chw(x.shape)
        self._pool(node, x, "avg", [(0, h)], [(0, w)], np.array([h * w], dtype=np.int64))

    def _mean_axis(self, node: fx.Node, x: Tensor, axis: int) -> None:
        """Mean over one axis: the axis is moved last (a strided copy) unless it is, then average pooling
        over rows of it."""
        outer, size = math.prod(x.shape[:axis]), x.shape[axis]
        inner = math.prod(x.shape[axis + 1 :])
        if inner > 1:
            moved = self.internal(f"{node.name}_last", (outer * inner, 1, size), x.fmt)
            self.ops.append(
                Strided(moved.name, [x.name], moved.name, (outer, inner, size), (size * inner, 1, inner), 0)
            )
            x = moved
        else:
            x = Tensor(x.name, (outer, 1, size), x.fmt, x.slot)  # the same codes seen as (rows, 1, size)
        self._pool(node, x, "avg", [(0, 1)], [(0, size)], np.array([size], dtype=np.int64))


def _window_areas(rows: list[tuple[int, int]], cols: list[tuple[int, int]]) -> list[int]:
    """How many input positions each output's window covers (row-major over the outputs): the divisor
    of an average that leaves padding out."""
    return [(r[1] - r[0]) * (q[1] - q[0]) for r in rows for q in cols]
