"""The integer program: what a lowered model computes, in integers only (``targets/INTEGER.md``).

Legalization (:mod:`sqc.targets.legalize`) turns a ``.sqc`` file into an :class:`IntProgram`; the PyTorch
simulator (:mod:`sqc.targets.simulate`), the C writer (:mod:`sqc.targets.c`) and the HLS writer all read
this one structure and never change it ("targets are legalize + emit"). Everything here is a constant
that was decided once — weight codes, fixed-point formats, multipliers, shifts, tables — so two
backends that follow ``INTEGER.md`` on the same program produce the same bits.

Activations are tensors of signed ``bits``-wide codes with one power-of-two format per tensor
(``value = code * 2**-frac``); shapes are per sample (no batch dimension); 1-D ops are 2-D ops with a
height of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np


def chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A per-sample activation shape as (channels, height, width): 1-D data has height 1 and a vector is
    channels only. Every backend lays activations out this way (``INTEGER.md``)."""
    if len(shape) == 1:
        return shape[0], 1, 1
    if len(shape) == 2:
        return shape[0], 1, shape[1]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    raise ValueError(f"shape {shape}: activations have at most 3 per-sample dimensions")


@dataclass(frozen=True)
class ActFormat:
    """Signed fixed point of an activation tensor: ``value = code * 2**-frac``."""

    bits: int
    frac: int

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1


@dataclass(frozen=True)
class Tensor:
    """One activation tensor. ``slot`` names its storage: a reshape is a new tensor on the same slot."""

    name: str
    shape: tuple[int, ...]
    fmt: ActFormat
    slot: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Stream:
    """One ROM stream of unsigned symbols: ``packed`` (``width``-bit fields, LSB first) or ``huffman``
    (sqc's canonical Huffman layout, ``formats/huffman.py``), exactly as the ``.sqc`` format defines them.

    ``rans`` (only when legalization is asked to keep rANS streams, ``keep_rans=True``; other consumers
    never see it): the context-coded layout of ``formats/FORMAT.md`` with mode byte ``mode``; it codes
    the mask too (the tensor's ``index`` is then None) and ``count`` kept symbols of ``width`` bits."""

    kind: Literal["packed", "huffman", "rans"]
    width: int
    count: int
    alphabet: int
    data: bytes
    mode: int = 0


@dataclass
class Weights:
    """A conv/linear kernel as integers, plus how it is stored in ROM.

    ``values`` (int64, the tensor's shape) are the integer weights the arithmetic uses, 0 where pruned;
    output channel ``c`` has fraction length ``frac[c]``. In ROM a weight is a *symbol*: an index into
    ``codebook`` (integers), or, without a codebook, ``symbol + offset`` (a fixed-point code). ``sparse``
    layers store only kept positions, walked by Deep Compression's relative index (``index``, entries
    ``index_bits`` wide, ``2**index_bits - 1`` a filler that skips that many positions; the same walk
    as 8-bit entries in ``runtime_index``).
    """

    name: str
    shape: tuple[int, ...]
    values: np.ndarray
    frac: tuple[int, ...]
    value_bits: int
    codebook: np.ndarray | None
    offset: int
    sparse: bool
    index_bits: int
    symbols: Stream
    index: Stream | None
    origin: str
    runtime_index: np.ndarray | None = None
    """The sparse positions as 8-bit relative entries (filler 255): what a start-up decoder re-gaps the
    ROM index into, so that kernels meet as few fillers as possible whatever width ROM uses."""
    mult: tuple[int, ...] = ()
    """Step multiplier of each output channel (a scaled format, :class:`sqc.ir.records.FixedPoint`): the real
    weight is ``values * mult * 2**-frac``; the multiplier folds into the layer's requantization, so the
    accumulator still sums the stored codes. Empty: all 1."""

    @property
    def multipliers(self) -> tuple[int, ...]:
        return self.mult or (1,) * len(self.frac)

    @property
    def kept(self) -> int:
        return self.symbols.count

    @property
    def rom_bytes(self) -> int:
        book = 0 if self.codebook is None else self.codebook.size * (1 if self.value_bits <= 8 else 2)
        return len(self.symbols.data) + (len(self.index.data) if self.index else 0) + book


@dataclass
class Requant:
    """Per-channel epilogue: ``y = clamp(rshift_round((acc + bias[c]) * mult[c], shift[c]), lo, hi)``."""

    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    lo: int
    hi: int


@dataclass
class Op:
    name: str
    inputs: list[str]
    output: str


@dataclass
class Conv(Op):
    """2-D convolution (1-D: height 1); input (C, H, W), weights (OC, C/groups, KH, KW)."""

    weights: Weights
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    requant: Requant


@dataclass
class Linear(Op):
    weights: Weights
    requant: Requant
    rows: int = 1
    """Rows of input features (a linear over the last axis of a (..., features) tensor): each row is one
    independent product with the same weights."""


@dataclass
class Affine(Op):
    """Per-channel ``requant(x)``: batch norm not folded into a conv, multiplication by a constant."""

    channels: int
    inner: int
    requant: Requant


@dataclass
class Clamp(Op):
    lo: int
    hi: int


@dataclass
class PRelu(Op):
    """``x if x >= 0 else rshift_round(x * mult[c], shift)``, saturated; same format in and out."""

    channels: int
    inner: int
    mult: np.ndarray
    shift: int


@dataclass
class Pool(Op):
    """Max or average over windows ``[ys[oy], ye[oy]) x [xs[ox], xe[ox])`` of each channel.

    Average: ``floor((2 * sum + n) / (2 * n))`` with ``n = divisor[oy * OW + ox]`` (round half up)."""

    kind: Literal["max", "avg"]
    channels: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    ys: np.ndarray
    ye: np.ndarray
    xs: np.ndarray
    xe: np.ndarray
    divisor: np.ndarray | None


@dataclass
class Add(Op):
    """``requant(a * 2**(F - fa) +- b * 2**(F - fb), F - fy)``, F = max(fa, fb)."""

    scale_a: int
    scale_b: int
    shift: int
    subtract: bool


@dataclass
class Mul(Op):
    shift: int


@dataclass
class Cat(Op):
    """Concatenation: ``outer`` blocks of each input's ``inner[i]`` elements, requantized by ``shift[i]``."""

    outer: int
    inner: list[int]
    shifts: list[int]


@dataclass
class Lut(Op):
    """Element-wise function by table: ``y = table[x - qmin]``."""

    function: str
    table: np.ndarray


@dataclass
class LutInterp(Op):
    """Element-wise function by an interpolated table (activations wider than 8 bits): with
    ``u = x - qmin``, ``j = u >> shift``, ``r = u & (2^shift - 1)``:
    ``y = sat(rshift_round(table[j] * 2^shift + (table[j+1] - table[j]) * r, shift))``."""

    function: str
    table: np.ndarray
    shift: int


@dataclass
class Softmax(Op):
    """Over the last axis: ``e = exp_table[max - x]``, ``y = floor((e * 2**(fy+1) + s) / (2 s))``."""

    rows: int
    cols: int
    exp_table: np.ndarray


@dataclass
class SoftmaxPoly(Op):
    """Softmax over the last axis with I-BERT's integer exp (activations over 8 bits): with ``d = max - x``,
    ``z = floor(d / ln2)``, ``p = d - z * ln2``, ``e = ((qb - p)^2 + qc) >> min(62, z + base)``;
    then ``y = min(qmax, floor((e * 2^(fy+1) + s) / (2 s)))`` as :class:`Softmax`."""

    rows: int
    cols: int
    ln2: int
    qb: int
    qc: int
    base: int


@dataclass
class Pad(Op):
    """Constant padding of the last two axes (C, H, W) by (top, bottom, left, right) with ``fill``."""

    channels: int
    in_hw: tuple[int, int]
    pads: tuple[int, int, int, int]
    fill: int


@dataclass
class Strided(Op):
    """Data movement without arithmetic: ``y[i_0, .., i_r-1] = x[offset + sum_k i_k * strides[k]]`` over
    the output's index space ``dims`` (row-major). One op for permute/transpose, slicing with any step,
    integer indexing (a dimension dropped) and broadcasting (stride 0); the format is the input's."""

    dims: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int

    def indices(self) -> np.ndarray:
        """The flat input position of every output element, in output order."""
        index = np.full((), self.offset, dtype=np.int64)
        for n, stride in zip(self.dims, self.strides, strict=True):
            index = index[..., None] + np.arange(n, dtype=np.int64) * stride
        return index.reshape(-1)


@dataclass
class LayerNorm(Op):
    """Over the last axis (``rows`` of ``cols``), integer-only (I-BERT style, ``INTEGER.md``):
    ``s = sum x``, ``d = cols * x - s``, ``r = max(1, isqrt(floor(sum d^2 / cols) + eps))``,
    ``z = floor(d * 2^frac / r)``, ``y = sat(rshift_round(z * mult[i] + bias[i], shift[i]))``."""

    rows: int
    cols: int
    eps: int
    frac: int
    mult: np.ndarray
    bias: np.ndarray
    shift: np.ndarray


@dataclass
class MatMul(Op):
    """Product of two activations: ``a`` (batch, m, k) times ``b`` (batch, k, n), int64 sums,
    ``y = sat(rshift_round(acc * mult, shift))``."""

    batch: int
    m: int
    k: int
    n: int
    mult: int
    shift: int


@dataclass
class IntProgram:
    """A lowered model: tensors, ops in execution order, and what legalization decided and why."""

    tensors: dict[str, Tensor]
    ops: list[Op]
    input: str
    output: str
    act_bits: int
    notes: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def weights(self) -> list[Weights]:
        return [op.weights for op in self.ops if isinstance(op, (Conv, Linear))]


# ------------------------------------------------------------------------------------------------
# the arithmetic rules, on Python integers (legalization uses them on constants)


def round_half_even(value: float) -> int:
    """Constants (biases, multipliers, table entries) are rounded half to even, like ``FixedPoint``."""
    return int(np.rint(value))


def rshift_round(value: int, shift: int) -> int:
    """Round half up (toward +inf) of ``value * 2**-shift``; a non-positive shift multiplies exactly."""
    if shift > 0:
        return (value + (1 << (shift - 1))) >> shift
    return value * (1 << -shift)


def isqrt(value: int) -> int:
    """``floor(sqrt(value))`` by Newton's iteration from ``value`` itself (the C and HLS kernels run this
    very loop): exact for every non-negative int64."""
    if value < 2:
        return value
    x, y = value, (value + 1) >> 1
    while y < x:
        x, y = y, (y + value // y) >> 1
    return x


def choose_frac(max_abs: float, bits: int) -> int:
    """The finest format whose range covers ``max_abs`` (calibration: nothing seen is clipped)."""
    qmax = (1 << (bits - 1)) - 1
    if not max_abs > 0 or not math.isfinite(max_abs):
        return bits - 1
    return int(max(-16, min(30, math.floor(math.log2(qmax / max_abs)))))


def multiplier(value: float, what: str) -> tuple[int, int]:
    """``(mult, frac)`` with ``mult = round(value * 2**frac)`` and ``|mult| <= 32767``: 15 significant
    bits for a constant scale (folded batch norm, PReLU slope, a scalar factor)."""
    if value == 0 or not math.isfinite(value):
        if not math.isfinite(value):
            raise ValueError(f"{what}: scale {value} is not finite")
        return 0, 0
    frac = max(-16, min(40, math.floor(math.log2(32767 / abs(value)))))
    mult = round_half_even(value * 2.0**frac)
    while abs(mult) > 32767:  # log2 of a value just below a power of two can round up
        frac -= 1
        mult = round_half_even(value * 2.0**frac)
    return mult, frac
