"""The golden reference: an :class:`~sqc.targets.integer.IntProgram` executed with PyTorch on integers.

Every op follows ``targets/INTEGER.md`` literally, on int64 tensors with a batch dimension. Convolutions
and matrix products run in float64 on integer-valued tensors: legalization proves every accumulator
stays below 2^31 in magnitude (partial sums included), far inside float64's exact-integer range of
2^53, so the result is the exact integer sum whatever order the library adds in. The C target (and the
HLS target after it) must reproduce these outputs bit for bit; any one-LSB difference is a bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sqc.targets.integer import (
    Add,
    Affine,
    Cat,
    Clamp,
    Conv,
    IntProgram,
    LayerNorm,
    Linear,
    Lut,
    LutInterp,
    MatMul,
    Mul,
    Op,
    Pad,
    Pool,
    PRelu,
    Requant,
    Softmax,
    SoftmaxPoly,
    Strided,
    Tensor,
)


def quantize_input(program: IntProgram, x: torch.Tensor) -> torch.Tensor:
    """Float inputs -> input codes: round half to even, then saturate (``FixedPoint.quantize``'s rule)."""
    fmt = program.tensors[program.input].fmt
    scaled = x.to(torch.float64) * 2.0**fmt.frac
    return torch.round(scaled).clamp(fmt.qmin, fmt.qmax).to(torch.int64)


def dequantize_output(program: IntProgram, codes: torch.Tensor) -> torch.Tensor:
    fmt = program.tensors[program.output].fmt
    return codes.to(torch.float64) * 2.0**-fmt.frac


def rshift_round(t: torch.Tensor, shift: torch.Tensor | int) -> torch.Tensor:
    """Round half up of ``t * 2**-shift`` (``floor((t + 2**(s-1)) / 2**s)``); ``shift <= 0`` multiplies."""
    s = torch.as_tensor(shift, dtype=torch.int64)
    right = s.clamp(min=0)
    left = (-s).clamp(min=0)
    half = torch.where(s > 0, torch.bitwise_left_shift(torch.ones_like(s), (right - 1).clamp(min=0)), 0)
    shifted = torch.bitwise_right_shift(t + half, right)  # arithmetic shift of int64: floor
    return torch.where(s > 0, shifted, t * torch.bitwise_left_shift(torch.ones_like(s), left))


def _channels(values: torch.Tensor, rank: int) -> torch.Tensor:
    """A per-channel constant shaped to broadcast against (N, C, ...) of ``rank`` dims."""
    return torch.as_tensor(values, dtype=torch.int64).reshape((1, -1) + (1,) * (rank - 2))


def _epilogue(acc: torch.Tensor, rq: Requant) -> torch.Tensor:
    rank = acc.dim()
    t = (acc + _channels(rq.bias, rank)) * _channels(rq.mult, rank)
    return rshift_round(t, _channels(rq.shift, rank)).clamp(rq.lo, rq.hi)


def _view4(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) view of per-sample (C,), (C, L) or (C, H, W) data."""
    if x.dim() == 2:
        return x.reshape(x.shape[0], x.shape[1], 1, 1)
    if x.dim() == 3:
        return x.unsqueeze(2)
    return x


@dataclass
class Simulator:
    """Runs a program on batches of input codes; ``run`` returns the output codes (int64)."""

    program: IntProgram

    def run(self, codes: torch.Tensor) -> torch.Tensor:
        p = self.program
        slots: dict[str, torch.Tensor] = {p.tensors[p.input].slot: codes.to(torch.int64)}
        n = codes.shape[0]

        def read(name: str) -> torch.Tensor:
            t = p.tensors[name]
            return slots[t.slot].reshape((n, *t.shape))

        for op in p.ops:
            out = p.tensors[op.output]
            y = self.step(op, [read(i) for i in op.inputs], out, n)
            slots[out.slot] = y.reshape((n, *out.shape))
        return read(p.output)

    def step(self, op: Op, xs: list[torch.Tensor], out: Tensor, n: int) -> torch.Tensor:
        fmt = out.fmt
        x = xs[0]
        if isinstance(op, Conv):
            w = torch.from_numpy(op.weights.values).to(torch.float64)
            x4 = _view4(x).to(torch.float64)
            if w.dim() == 3:
                w = w.unsqueeze(2)
            acc = F.conv2d(x4, w, None, op.stride, op.padding, op.dilation, op.groups)
            return _epilogue(torch.round(acc).to(torch.int64), op.requant)
        if isinstance(op, Linear):
            w = torch.from_numpy(op.weights.values).to(torch.float64)
            acc = x.reshape(n * op.rows, -1).to(torch.float64) @ w.T
            return _epilogue(torch.round(acc).to(torch.int64), op.requant)
        if isinstance(op, Affine):
            v = x.reshape(n, op.channels, op.inner)
            return _epilogue(v, op.requant)
        if isinstance(op, Clamp):
            return x.clamp(op.lo, op.hi)
        if isinstance(op, PRelu):
            v = x.reshape(n, op.channels, op.inner)
            neg = rshift_round(v * _channels(op.mult, 3), op.shift).clamp(fmt.qmin, fmt.qmax)
            return torch.where(v >= 0, v, neg)
        if isinstance(op, Pool):
            return self.pool(op, x, n)
        if isinstance(op, Add):
            b = xs[1] * op.scale_b
            t = x * op.scale_a - b if op.subtract else x * op.scale_a + b
            return rshift_round(t, op.shift).clamp(fmt.qmin, fmt.qmax)
        if isinstance(op, Mul):
            return rshift_round(x * xs[1], op.shift).clamp(fmt.qmin, fmt.qmax)
        if isinstance(op, Cat):
            parts = [
                rshift_round(v.reshape(n, op.outer, inner), s).clamp(fmt.qmin, fmt.qmax)
                for v, inner, s in zip(xs, op.inner, op.shifts, strict=True)
            ]
            return torch.cat(parts, dim=2)
        if isinstance(op, Lut):
            src = self.program.tensors[op.inputs[0]].fmt
            return torch.from_numpy(op.table)[x - src.qmin]
        if isinstance(op, LutInterp):
            src = self.program.tensors[op.inputs[0]].fmt
            u = x - src.qmin
            j, r = u >> op.shift, u & ((1 << op.shift) - 1)
            table = torch.from_numpy(op.table)
            t = (table[j] << op.shift) + (table[j + 1] - table[j]) * r
            return rshift_round(t, op.shift).clamp(fmt.qmin, fmt.qmax)
        if isinstance(op, (Softmax, SoftmaxPoly)):
            v = x.reshape(n, op.rows, op.cols)
            d = v.amax(dim=-1, keepdim=True) - v
            e = torch.from_numpy(op.exp_table)[d] if isinstance(op, Softmax) else iexp(op, d)
            s = e.sum(dim=-1, keepdim=True)
            y = torch.div(e * (1 << (fmt.frac + 1)) + s, 2 * s, rounding_mode="floor")
            return y.clamp(fmt.qmin, fmt.qmax)
        if isinstance(op, LayerNorm):
            return layer_norm(op, x.reshape(n, op.rows, op.cols), fmt.qmin, fmt.qmax)
        if isinstance(op, MatMul):
            a = x.reshape(n, op.batch, op.m, op.k)
            acc = torch.matmul(a, xs[1].reshape(n, op.batch, op.k, op.n))  # int64: exact
            return rshift_round(acc * op.mult, op.shift).clamp(fmt.qmin, fmt.qmax)
        if isinstance(op, Strided):
            return x.reshape(n, -1)[:, torch.from_numpy(op.indices())]
        if isinstance(op, Pad):
            top, bottom, left, right = op.pads
            v = x.reshape(n, op.channels, *op.in_hw)
            return F.pad(v, (left, right, top, bottom), value=op.fill)
        raise TypeError(f"no simulation for {type(op).__name__}")

    @staticmethod
    def pool(op: Pool, x: torch.Tensor, n: int) -> torch.Tensor:
        v = x.reshape(n, op.channels, *op.in_hw)
        oh, ow = op.out_hw
        regular = regular_windows(op.ys, op.ye, op.in_hw[0]), regular_windows(op.xs, op.xe, op.in_hw[1])
        if regular[0] is not None and regular[1] is not None:
            # Equal windows without padding: torch pooling on float64 integers is exact (max, and
            # sums of at most a few thousand values below 2^16).
            (kh, sh), (kw, sw) = regular[0], regular[1]
            f = v.to(torch.float64)
            if op.kind == "max":
                return F.max_pool2d(f, (kh, kw), (sh, sw)).to(torch.int64)
            total = torch.round(F.avg_pool2d(f, (kh, kw), (sh, sw), divisor_override=1)).to(torch.int64)
            assert op.divisor is not None
            count = torch.from_numpy(op.divisor).reshape(1, 1, oh, ow)
            return torch.div(2 * total + count, 2 * count, rounding_mode="floor")
        out = torch.empty((n, op.channels, oh, ow), dtype=torch.int64)
        for oy in range(oh):
            for ox in range(ow):
                window = v[:, :, int(op.ys[oy]) : int(op.ye[oy]), int(op.xs[ox]) : int(op.xe[ox])]
                if op.kind == "max":
                    out[:, :, oy, ox] = window.amax(dim=(-2, -1))
                else:
                    assert op.divisor is not None
                    count = int(op.divisor[oy * ow + ox])
                    total = window.sum(dim=(-2, -1))
                    out[:, :, oy, ox] = torch.div(2 * total + count, 2 * count, rounding_mode="floor")
        return out


def iexp(op: SoftmaxPoly, d: torch.Tensor) -> torch.Tensor:
    """I-BERT's integer exp of ``-d`` codes (``INTEGER.md``), up to softmax's common factor."""
    z = torch.div(d, op.ln2, rounding_mode="floor")
    t = op.qb - (d - z * op.ln2)
    return torch.bitwise_right_shift(t * t + op.qc, (z + op.base).clamp(max=62))


def layer_norm(op: LayerNorm, v: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``INTEGER.md``'s integer LayerNorm on (N, rows, cols) codes."""
    s = v.sum(-1, keepdim=True)
    d = op.cols * v - s
    q = torch.div((d * d).sum(-1, keepdim=True), op.cols, rounding_mode="floor") + op.eps
    root = torch.tensor([math.isqrt(int(e)) for e in q.reshape(-1)], dtype=torch.int64).reshape(q.shape)
    z = torch.div(d * (1 << op.frac), root.clamp(min=1), rounding_mode="floor")
    t = z * torch.from_numpy(op.mult) + torch.from_numpy(op.bias)
    return rshift_round(t, torch.from_numpy(op.shift)).clamp(lo, hi)


def regular_windows(starts: object, ends: object, size: int) -> tuple[int, int] | None:
    """(kernel, stride) when windows ``[starts[i], ends[i])`` are ``[i*stride, i*stride + kernel)``."""

    s, e = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    kernel = int(e[0] - s[0])
    stride = int(s[1] - s[0]) if s.size > 1 else kernel
    if kernel <= 0 or stride <= 0 or int(e[-1]) > size:
        return None
    expected = np.arange(s.size) * stride
    if not (np.array_equal(s, expected) and np.array_equal(e, expected + kernel)):
        return None
    return kernel, stride


def simulate(program: IntProgram, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Output codes for float inputs ``x`` (quantized with the input format first)."""
    sim = Simulator(program)
    codes = quantize_input(program, x)
    return torch.cat([sim.run(codes[i : i + batch]) for i in range(0, codes.shape[0], batch)])


def compare(
    program: IntProgram,
    float_model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    codes: torch.Tensor | None = None,
) -> dict[str, float]:
    """The integer model against the float model on ``x``: top-1 agreement and the largest and mean
    absolute difference of the outputs (in output units, and in output LSBs); with labels ``y``, the
    top-1 accuracy of both. ``codes``: the integer outputs when already simulated."""
    codes = simulate(program, x) if codes is None else codes
    with torch.no_grad():
        ref = float_model(x).to(torch.float64)
    n = codes.shape[0]
    ints, floats = dequantize_output(program, codes).reshape(n, -1), ref.reshape(n, -1)
    error = (ints - floats).abs()
    lsb = 2.0 ** -program.tensors[program.output].fmt.frac
    int_top, float_top = ints.argmax(-1), floats.argmax(-1)
    report = {
        "samples": float(n),
        "top1_agreement": float((int_top == float_top).double().mean()),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "output_lsb": lsb,
    }
    if y is not None:
        report["float_top1"] = float((float_top == y).double().mean())
        report["int_top1"] = float((int_top == y).double().mean())
    return report


def accuracy_lines(acc: dict[str, float] | None) -> list[str]:
    """The report's lines for :func:`compare`'s result (every integer target prints these)."""
    if not acc:
        return []
    lsb = acc["output_lsb"]
    lines = [
        f"integer vs float model on {int(acc['samples'])} inputs: "
        f"top-1 agreement {acc['top1_agreement']:.2%}, "
        f"max |error| {acc['max_abs_error']:.4g} ({acc['max_abs_error'] / lsb:.3g} LSB), "
        f"mean |error| {acc['mean_abs_error']:.4g}"
    ]
    if "int_top1" in acc:
        lines.append(f"top-1 on labels: float {acc['float_top1']:.2%}, integer {acc['int_top1']:.2%}")
    return lines
