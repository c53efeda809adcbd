"""Activations and elementwise ops: clamps, PReLU, lookup tables, softmax, add and mul."""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from sqc.targets.integer import (
    ActFormat,
    Add,
    Clamp,
    Lut,
    LutInterp,
    Mul,
    PRelu,
    multiplier,
    round_half_even,
)
from sqc.targets.legalize.walk import (
    LUT_BITS,
    WalkBase,
    _bind,
    _lut_function,
)


class ElementwiseOps(WalkBase):
    """Activations and elementwise ops: clamps, PReLU, lookup tables, softmax, add and mul."""

    def op_relu(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        lo, hi = self.clamp_bounds(node, op, x.fmt)
        y = self.new(node, x.fmt)
        self.ops.append(Clamp(node.name, [x.name], y.name, lo, hi))

    op_relu6 = op_relu

    op_hardtanh = op_relu

    def op_leaky_relu(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        mult, frac = multiplier(float(a["negative_slope"]), f"node {node.name}")
        y = self.new(node, x.fmt)
        self.ops.append(PRelu(node.name, [x.name], y.name, 1, x.numel, np.array([mult]), frac))

    def op_prelu(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        slope = self.param(node, a["weight"])
        assert slope is not None
        channels = slope.numel()
        if channels not in (1, x.shape[0]):
            raise self.fail(node, f"{channels} slopes for {x.shape[0]} channels")
        pairs = [multiplier(float(s), f"node {node.name}") for s in slope.reshape(-1)]
        frac = min(p[1] for p in pairs)
        mult = np.array([round_half_even(float(s) * 2.0**frac) for s in slope.reshape(-1)], dtype=np.int64)
        y = self.new(node, x.fmt)
        self.ops.append(PRelu(node.name, [x.name], y.name, channels, x.numel // channels, mult, frac))

    def op_sigmoid(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        fmt = self.fmt(node)
        if x.fmt.bits > LUT_BITS:
            # knots every 2^shift codes, the last one at qmax + 1; linear interpolation in between
            shift = x.fmt.bits - LUT_BITS
            knots = torch.arange(0, (1 << LUT_BITS) + 1, dtype=torch.float64) * 2.0**shift + x.fmt.qmin
            values = _lut_function(op, node)(knots * 2.0**-x.fmt.frac) * 2.0**fmt.frac
            table = torch.round(values).clamp(-(1 << 30), 1 << 30).to(torch.int64).numpy()
            y = self.new(node, fmt)
            self.ops.append(LutInterp(node.name, [x.name], y.name, op, table, shift))
            return
        codes = torch.arange(x.fmt.qmin, x.fmt.qmax + 1, dtype=torch.float64) * 2.0**-x.fmt.frac
        values = _lut_function(op, node)(codes)
        table = torch.round(values * 2.0**fmt.frac).clamp(fmt.qmin, fmt.qmax).to(torch.int64).numpy()
        y = self.new(node, fmt)
        self.ops.append(Lut(node.name, [x.name], y.name, op, table))

    op_tanh = op_sigmoid

    op_gelu = op_sigmoid

    op_silu = op_sigmoid

    op_hardswish = op_sigmoid

    op_hardsigmoid = op_sigmoid

    def op_softmax(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        dim = a["dim"]
        if dim is None or int(dim) not in (-1, len(x.shape) + self.lead - 1):
            raise self.fail(node, "softmax is supported over the last axis only")
        y = self.new(node, ActFormat(self.bits, self.bits - 1))
        self.softmax(x, y)

    def _binary(self, node: fx.Node, op: str) -> None:
        lhs, rhs = node.args[0], node.args[1]
        if any(isinstance(v, fx.Node) and v in self.value and self.value[v] is None for v in (lhs, rhs)):
            self.value[node] = None  # arithmetic on sizes: only ever feeds reshape arguments
            return
        if isinstance(lhs, fx.Node) and isinstance(rhs, fx.Node):
            a, b = self.tensor(node, lhs), self.tensor(node, rhs)
            if a.shape != b.shape:
                shape = self.calib.shapes.get(node.name)
                if shape is None:
                    raise self.fail(node, "no tensor value seen during calibration")
                a, b = self.broadcast(node, a, shape, 0), self.broadcast(node, b, shape, 1)
            fmt = self.fmt(node)
            if op in ("add", "sub"):
                common = max(a.fmt.frac, b.fmt.frac)
                shift = common - fmt.frac
                self._check_shifts(node, np.array([shift]))
                y = self.new(node, fmt)
                self.ops.append(
                    Add(
                        node.name,
                        [a.name, b.name],
                        y.name,
                        1 << (common - a.fmt.frac),
                        1 << (common - b.fmt.frac),
                        shift,
                        op == "sub",
                    )
                )
            elif op == "mul":
                shift = a.fmt.frac + b.fmt.frac - fmt.frac
                self._check_shifts(node, np.array([shift]))
                y = self.new(node, fmt)
                self.ops.append(Mul(node.name, [a.name, b.name], y.name, shift))
            else:
                raise self.fail(node, "division of two tensors is not supported")
            return
        tensor_first = isinstance(lhs, fx.Node)
        x = self.tensor(node, lhs if tensor_first else rhs)
        const = rhs if tensor_first else lhs
        if not isinstance(const, (int, float)) or isinstance(const, bool):
            raise self.fail(node, f"constant operand {const!r} is not a number")
        c = float(const)
        if op == "add":
            self._affine(node, x, [1.0], [c], 1)
        elif op == "sub" and tensor_first:
            self._affine(node, x, [1.0], [-c], 1)
        elif op == "mul":
            self._affine(node, x, [c], [0.0], 1)
        elif op == "truediv" and tensor_first and c != 0:
            self._affine(node, x, [1.0 / c], [0.0], 1)
        else:
            raise self.fail(node, "this form of constant arithmetic is not supported")

    op_add = _binary

    op_sub = _binary

    op_mul = _binary

    op_truediv = _binary
