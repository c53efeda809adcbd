"""The plain, round-by-round implementation of the context-coded layout (``FORMAT.md``).

:mod:`sqc.formats.rans` is the fast implementation sqc uses; this module is the same coder written as
directly as the specification (one loop per round, one numpy call per step), kept because it is the
easiest text to port (a sequential C decoder needs only these loops written out) and because tests
check that the fast coder writes exactly the same bytes and decodes exactly the same values.

Model (everything is integer arithmetic, so encoder, decoder and a C port agree bit for bit):

* The tensor is a matrix of ``rows = shape[0]`` rows and ``cols = numel / rows`` columns, flattened
  row-major (a conv kernel's row is one output channel). Lane ``j`` of ``N`` owns the positions
  ``[j*numel//N, (j+1)*numel//N)``; ``N = clamp(ceil(numel / 16384), 1, 4096)``.
* Mask phase (only for a pruned tensor): round ``t`` codes position ``start_j + t`` of every lane that
  has one, as a binary decision "kept" with context ``run_bucket * 10 + column_bucket``: the run of
  pruned positions since the last kept one (or the row start) in the lane, log-bucketed, and the
  density of the column so far over all lanes (see :func:`column_bucket`). Mask model 1 (format 1.5,
  bit 2 of the mode byte) predicts from the row's and the column's densities instead (:func:`density_bucket`).
* Value phase: round ``t`` codes the ``t``-th kept position of every lane that has one: the symbol's
  ``width`` bits, most significant first, each a decision at its node of a binary tree (node 1 is the
  root, a node's children are ``2n`` and ``2n+1``), in a context set chosen by the value mode: 0 = one
  set, ``m`` in 1..3 = by the top ``m`` bits of the previous kept symbol of the same row in the lane
  (or "none" at the first).
* Probabilities: each context keeps counts ``n0, n1``; ``P(1) = (2*n1 + 1) * 65536 // (2*(n0+n1) + 2)``
  clamped to ``[1, 65535]`` (the Krichevsky-Trofimov estimate, 16-bit). Counts are updated after each
  round with all its decisions, so every lane in a round reads the same counts: lockstep makes the
  lanes independent within a round (vectorisable) and the result defined whatever the lane count.
* rANS: state ``x`` in ``[2^16, 2^32)``; decision 0 owns ``[0, f0)`` and 1 owns ``[f0, 65536)`` of the
  16-bit slot, ``f0 = 65536 - P(1)``. Decoding a decision: ``s = x & 0xFFFF``; ``bit = s >= f0``;
  ``x = f * (x >> 16) + s - start``; if ``x < 2^16``: ``x = x << 16 | next_word``. Within a round, the
  lanes that need a word take them in lane order. The stream is ``N`` u32 initial states then u16
  words; a decoder must end with every state equal to ``2^16`` and every word consumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sqc.errors import SqcFormatError

__all__ = [
    "LANE_SPAN",
    "MASK_MODES",
    "MAX_DECISIONS_BASE",
    "MAX_DECISIONS_PER_BYTE",
    "MAX_LANES",
    "MAX_POSITIONS_PER_BYTE",
    "MAX_WIDTH",
    "VALUE_MODES",
    "Coded",
    "column_bucket",
    "decode",
    "encode",
    "lane_count",
    "matrix_shape",
]

LANE_SPAN = 1 << 14
"""Positions per lane (a lane costs 4 bytes of state): enough lanes for numpy to pay off on large
tensors, few enough that the state is < 0.5 % of a typical layer's stream."""
MAX_LANES = 4096
MAX_WIDTH = 16
"""Widest symbol the value tree codes (a 2^16-entry codebook); wider fixed-point codes use Huffman."""
VALUE_MODES = (0, 1, 2, 3)
MASK_MODES = (0, 1)
"""Mask models (format 1.5 adds 1): 0 = run x column density, 1 = row x column density (see
:func:`density_bucket`). The stream's mode byte is ``value_mode | mask_mode << 2``; a dense tensor's
mask mode is 0."""
MAX_POSITIONS_PER_BYTE = 512
"""A context-coded tensor of ``n`` positions needs at least ``(n - 2^14) / 512`` stream bytes: coding
costs one Python-level round per position per lane, so this caps the work a hostile file can ask for
(real layers need 4-40 positions per byte; a 99.9 %-pruned one about 500, 99.95 % falls back to Huffman)."""

MAX_DECISIONS_BASE = 256
MAX_DECISIONS_PER_BYTE = 640
"""A stream of ``n`` bytes holds at most ``256 + 640 * n`` binary decisions (mask positions plus
``width`` per kept symbol): a reader checks the mask part before decoding and the whole after the mask."""


def _check_decisions(count: int, nbytes: int) -> None:
    budget = MAX_DECISIONS_BASE + MAX_DECISIONS_PER_BYTE * nbytes
    if count > budget:
        raise SqcFormatError(
            f"{count:,} binary decisions cannot be context-coded in {nbytes:,} bytes (at most {budget:,})"
        )


ONE = 1 << 16
RUN_THRESHOLDS = np.array([1, 3, 7, 15, 31, 63], dtype=np.int64)
RUN_BUCKETS = 7
COLUMN_BUCKETS = 10
MASK_CONTEXTS = RUN_BUCKETS * COLUMN_BUCKETS
DENSITY_PRIOR = 16
DENSITY_BUCKETS = 25
DENSITY_CONTEXTS = 2 * DENSITY_BUCKETS


@dataclass(frozen=True)
class Coded:
    """One coded tensor: the stream and how its bytes split between the mask and the values."""

    data: bytes
    index_bytes: int
    value_bytes: int
    value_mode: int
    mask_mode: int = 0

    @property
    def mode(self) -> int:
        """The stream's mode byte: ``value_mode | mask_mode << 2``."""
        return self.value_mode | self.mask_mode << 2


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(rows, cols)``: axis 0 against everything else (a scalar or vector is one row)."""
    numel = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 and shape[0] > 0 else 1
    return rows, numel // rows if rows else 0


def lane_count(numel: int) -> int:
    return min(MAX_LANES, max(1, -(-numel // LANE_SPAN)))


def column_bucket(kept: npt.NDArray[np.int64], seen: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Context from a column's history: ``seen`` positions of it coded so far, ``kept`` of them kept.

    0: nothing seen; 1: none kept in fewer than 4; 2: none kept in 4 or more (a dead column); else
    ``3 + min(6, bit_length(64 * kept // seen))``: density buckets of a factor of two from 1/64 up.
    """
    ratio = (kept * 64) // np.maximum(seen, 1)
    bucket = 3 + np.minimum(np.searchsorted(_POW2, ratio, side="right"), 6)
    return np.where(seen == 0, 0, np.where(kept == 0, np.where(seen < 4, 1, 2), bucket))


_POW2 = np.array([1, 2, 4, 8, 16, 32, 64], dtype=np.int64)  # bit_length(r) = #{k : r >= 2^k}


def _p1(n0: npt.NDArray[np.int64], n1: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.clip(((2 * n1 + 1) << 16) // (2 * (n0 + n1) + 2), 1, ONE - 1)


# ------------------------------------------------------------------------------------------ models

# ``code(active, p1, bits)`` codes one round: ``active`` are the lane numbers (ascending), ``p1`` the
# probability of a 1 for each, ``bits`` the decisions (encoder) or None (decoder); it returns the bits.
CodeFn = Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64], "npt.NDArray[np.int64] | None"], np.ndarray]


def _bands(numel: int, lanes: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    j = np.arange(lanes + 1, dtype=np.int64)
    edges = j * numel // lanes
    return edges[:-1], edges[1:] - edges[:-1]


def density_bucket(
    row_kept: npt.NDArray[np.int64],
    row_seen: npt.NDArray[np.int64],
    col_kept: npt.NDArray[np.int64],
    col_seen: npt.NDArray[np.int64],
    all_kept: int,
    all_seen: int,
) -> npt.NDArray[np.int64]:
    """Mask model 1's bucket: the kept probability predicted from the row's and the column's density so
    far, each shrunk toward the tensor's (``DENSITY_PRIOR`` pseudo-positions), as ``row * column /
    overall``, in half-octave buckets of ``-log2`` (0: at least 1, ..., 24: below 2^-12).

    In 16-bit fixed point: ``g = max(1, ((all_kept + 1) << 16) // (all_seen + 2))``; ``r = ((row_kept <<
    16) + 16 g) // (row_seen + 16)``, ``c`` likewise for the column; ``p = r * c // g``. ``p >= 2^16``:
    bucket 0; ``p = 0``: 24; else with ``L = bit_length(p)``: ``min(24, 2 (16 - L) + 1 + [p^2 < 2^(2L-1)])``.
    """
    g = max(1, ((all_kept + 1) << 16) // (all_seen + 2))
    r = ((row_kept << 16) + DENSITY_PRIOR * g) // (row_seen + DENSITY_PRIOR)
    c = ((col_kept << 16) + DENSITY_PRIOR * g) // (col_seen + DENSITY_PRIOR)
    p = r * c // g
    out = np.zeros(p.size, dtype=np.int64)
    for i, v in enumerate(p.tolist()):
        if v >= ONE:
            out[i] = 0
        elif v == 0:
            out[i] = DENSITY_BUCKETS - 1
        else:
            length = v.bit_length()
            half = 1 if v * v < 1 << (2 * length - 1) else 0
            out[i] = min(DENSITY_BUCKETS - 1, 2 * (16 - length) + 1 + half)
    return out


def _mask_phase(
    mask: npt.NDArray[np.bool_] | None, numel: int, cols: int, lanes: int, code: CodeFn, mask_mode: int = 0
) -> np.ndarray:
    """Code (or decode, when ``mask`` is None) the kept/pruned decision of every position."""
    start, length = _bands(numel, lanes)
    contexts = DENSITY_CONTEXTS if mask_mode else MASK_CONTEXTS
    counts = np.zeros((contexts, 2), dtype=np.int64)
    col_kept = np.zeros(cols, dtype=np.int64)
    col_seen = np.zeros(cols, dtype=np.int64)
    run = np.zeros(lanes, dtype=np.int64)
    row_kept = np.zeros(lanes, dtype=np.int64)
    row_seen = np.zeros(lanes, dtype=np.int64)
    all_kept = all_seen = 0
    out = np.zeros(numel, dtype=bool)
    every = np.arange(lanes, dtype=np.int64)
    shortest = int(length.min()) if lanes else 0
    for t in range(int(length.max()) if lanes else 0):
        active = every if t < shortest else np.flatnonzero(length > t)
        lane_pos = start[active] + t
        col = lane_pos % cols
        r = np.where(col == 0, 0, run[active])
        if mask_mode:
            rk = np.where(col == 0, 0, row_kept[active])
            rs = np.where(col == 0, 0, row_seen[active])
            bucket = density_bucket(rk, rs, col_kept[col], col_seen[col], all_kept, all_seen)
            ctx = 2 * bucket + (r > 0)
        else:
            ctx = np.searchsorted(RUN_THRESHOLDS, r, side="right") * COLUMN_BUCKETS + column_bucket(
                col_kept[col], col_seen[col]
            )
        c = counts[ctx]
        known = None if mask is None else mask[lane_pos].astype(np.int64)
        bits = code(active, _p1(c[:, 0], c[:, 1]), known).astype(np.int64)
        np.add.at(counts, (ctx, bits), 1)
        np.add.at(col_kept, col, bits)
        np.add.at(col_seen, col, 1)
        run[active] = np.where(bits == 1, 0, r + 1)
        if mask_mode:
            row_kept[active] = rk + bits
            row_seen[active] = rs + 1
        all_kept += int(bits.sum())
        all_seen += int(bits.size)
        out[lane_pos] = bits.astype(bool)
    return out


def _value_phase(
    positions: npt.NDArray[np.int64],
    symbols: npt.NDArray[np.int64] | None,
    numel: int,
    cols: int,
    lanes: int,
    width: int,
    alphabet: int,
    mode: int,
    code: CodeFn,
) -> np.ndarray:
    """Code (or decode, when ``symbols`` is None) the symbol of every kept position, in order."""
    start, _ = _bands(numel, lanes)
    lane_of = np.searchsorted(start, positions, side="right") - 1
    per_lane = np.bincount(lane_of, minlength=lanes).astype(np.int64)
    first = np.concatenate(([0], np.cumsum(per_lane)[:-1]))
    ctx_bits = min(mode, width)
    none = (1 << ctx_bits) if mode else 0
    counts = np.zeros(((none + 1) << width, 2), dtype=np.int64)
    prev_sym = np.zeros(lanes, dtype=np.int64)
    prev_row = np.full(lanes, -1, dtype=np.int64)
    out = np.zeros(positions.size, dtype=np.int64)
    rows_of = positions // max(cols, 1)
    for t in range(int(per_lane.max()) if positions.size else 0):
        active = np.flatnonzero(per_lane > t)
        k = first[active] + t
        row = rows_of[k]
        if mode:
            ctx = np.where(prev_row[active] == row, prev_sym[active] >> (width - ctx_bits), none)
        else:
            ctx = np.zeros(active.size, dtype=np.int64)
        known = None if symbols is None else symbols[k]
        node = np.ones(active.size, dtype=np.int64)
        touched = []
        for level in range(width):
            slot = (ctx << width) + node
            c = counts[slot]
            want = None if known is None else (known >> (width - 1 - level)) & 1
            bit = code(active, _p1(c[:, 0], c[:, 1]), want).astype(np.int64)
            touched.append((slot, bit))
            node = 2 * node + bit
        for slot, bit in touched:
            np.add.at(counts, (slot, bit), 1)
        sym = node - (1 << width)
        if known is None and bool((sym >= alphabet).any()):
            raise SqcFormatError(f"context-coded symbol outside the alphabet of {alphabet}")
        out[k] = sym
        prev_sym[active] = sym
        prev_row[active] = row
    return out


def _value_cost(
    positions: np.ndarray, symbols: np.ndarray, numel: int, cols: int, lanes: int, width: int, mode: int
) -> float:
    """Bits the value phase would take in ``mode``, from the final counts of every tree node (the
    adaptive estimator's cost depends only on them, up to the lockstep delay): how the encoder picks a
    mode without running the coder once per mode."""
    if symbols.size == 0:
        return 0.0
    start, _ = _bands(numel, lanes)
    lane_of = np.searchsorted(start, positions, side="right") - 1
    rows = positions // max(cols, 1)
    ctx = np.zeros(symbols.size, dtype=np.int64)
    if mode:
        bits = min(mode, width)
        same = np.zeros(symbols.size, dtype=bool)
        same[1:] = (lane_of[1:] == lane_of[:-1]) & (rows[1:] == rows[:-1])
        prev = np.concatenate(([0], symbols[:-1] >> (width - bits)))
        ctx = np.where(same, prev, 1 << bits)
    total = 0.0
    half = math.lgamma(0.5)
    for level in range(width):
        node = (symbols >> (width - level)) | (1 << level)
        bit = (symbols >> (width - 1 - level)) & 1
        cell = ((ctx << width) + node) * 2 + bit
        uniq, counts = np.unique(cell, return_counts=True)
        pair = np.zeros((int(uniq.size), 2), dtype=np.int64)
        slot, where = np.unique(uniq >> 1, return_inverse=True)
        np.add.at(pair, (where, uniq & 1), counts)
        n0, n1 = pair[: slot.size, 0], pair[: slot.size, 1]
        for a, b in zip(n0.tolist(), n1.tolist(), strict=True):
            total += math.lgamma(a + b + 1) + 2 * half - math.lgamma(a + 0.5) - math.lgamma(b + 0.5)
    return total / math.log(2)


# ------------------------------------------------------------------------------------- rANS engine


class _Recorder:
    """Encoder side: records each round (lanes, probability, bit) for the reverse rANS pass."""

    def __init__(self) -> None:
        self.rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, active: np.ndarray, p1: np.ndarray, bits: np.ndarray | None) -> np.ndarray:
        assert bits is not None
        self.rounds.append((active, p1, bits))
        return bits


def _rans_encode(
    lanes: int, rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[bytes, list[int]]:
    """The stream for ``rounds`` (in decoding order), and the number of words each round reads."""
    x = np.full(lanes, ONE, dtype=np.uint64)
    chunks: list[np.ndarray] = []
    reads = [0] * len(rounds)
    for i in range(len(rounds) - 1, -1, -1):
        active, p1, bits = rounds[i]
        p = p1.astype(np.uint64)
        one = bits.astype(bool)
        f = np.where(one, p, np.uint64(ONE) - p)
        base = np.where(one, np.uint64(ONE) - p, np.uint64(0))
        xa = x[active]
        emit = xa >= (f << np.uint64(16))
        if emit.any():
            chunks.append((xa[emit] & np.uint64(0xFFFF))[::-1].astype(np.uint16))
            reads[i] = int(np.count_nonzero(emit))
            xa = np.where(emit, xa >> np.uint64(16), xa)
        x[active] = ((xa // f) << np.uint64(16)) + (xa % f) + base
    words = np.concatenate(chunks)[::-1] if chunks else np.zeros(0, dtype=np.uint16)
    return x.astype("<u4").tobytes() + words.astype("<u2").tobytes(), reads


class _Decoder:
    """Decoder side: one rANS state per lane over a shared stream of 16-bit words."""

    def __init__(self, data: bytes | memoryview, lanes: int) -> None:
        raw = memoryview(data).cast("B")
        if len(raw) < 4 * lanes or (len(raw) - 4 * lanes) % 2:
            raise SqcFormatError(f"rANS stream of {len(raw)} bytes for {lanes} lanes")
        self.x = np.frombuffer(raw[: 4 * lanes], dtype="<u4").astype(np.uint64)
        if bool((self.x < ONE).any()):
            raise SqcFormatError("rANS initial state below 2^16")
        self.words = np.frombuffer(raw[4 * lanes :], dtype="<u2").astype(np.uint64)
        self.pos = 0
        self.reads = 0

    def __call__(self, active: np.ndarray, p1: np.ndarray, bits: np.ndarray | None) -> np.ndarray:
        xa = self.x[active]
        p = p1.astype(np.uint64)
        f0 = np.uint64(ONE) - p
        s = xa & np.uint64(0xFFFF)
        one = s >= f0
        f = np.where(one, p, f0)
        xa = f * (xa >> np.uint64(16)) + s - np.where(one, f0, np.uint64(0))
        need = xa < np.uint64(ONE)
        if need.any():
            k = int(np.count_nonzero(need))
            if self.pos + k > self.words.size:
                raise SqcFormatError("rANS stream ends early (truncated or corrupt)")
            xa[need] = (xa[need] << np.uint64(16)) | self.words[self.pos : self.pos + k]
            self.pos += k
        self.x[active] = xa
        return one

    def finish(self) -> None:
        if self.pos != self.words.size:
            raise SqcFormatError(f"{self.words.size - self.pos} unused words after the rANS stream")
        if bool((self.x != ONE).any()):
            raise SqcFormatError("rANS final state check failed (corrupt stream)")


# ---------------------------------------------------------------------------------------- public


def encode(
    mask: npt.NDArray[np.bool_] | None,
    symbols: npt.ArrayLike,
    shape: tuple[int, ...],
    width: int,
    mode: int | None = None,
) -> Coded:
    """Code a tensor's mask (row-major, or None for a dense tensor) and its kept symbols.

    ``symbols`` are the kept positions' symbols in row-major order, each below ``2**width``. With
    ``mode`` None every value mode is tried (by its estimated cost) and, for a sparse tensor, both mask
    modes (by the stream's length), the smallest kept (ties: the lower mode); else ``mode`` is the
    stream's mode byte.
    """
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"symbol width must be 1..{MAX_WIDTH}, got {width}")
    numel = math.prod(shape)
    _, cols = matrix_shape(shape)
    lanes = lane_count(numel)
    sym = np.asarray(symbols, dtype=np.int64).ravel()
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) >> width):
        raise ValueError(f"symbols must lie in [0, 2^{width})")
    if mode is not None and (mode & 3 not in VALUE_MODES or mode >> 2 not in MASK_MODES):
        raise ValueError(f"unknown mode {mode}")
    if mode is not None and mode >> 2 and mask is None:
        raise ValueError("a mask model needs a mask")
    flat = None
    if mask is not None:
        flat = np.asarray(mask, dtype=bool).ravel()
        if flat.size != numel or int(np.count_nonzero(flat)) != sym.size:
            raise ValueError("mask and symbols disagree")
        positions = np.flatnonzero(flat)
    else:
        if sym.size != numel:
            raise ValueError("a dense tensor needs one symbol per position")
        positions = np.arange(numel, dtype=np.int64)
    modes = [m for m in VALUE_MODES if m <= width] if mode is None else [mode & 3]
    chosen = min(modes, key=lambda m: (_value_cost(positions, sym, numel, cols, lanes, width, m), m))
    mask_modes = [mode >> 2] if mode is not None else (list(MASK_MODES) if flat is not None else [0])
    best: Coded | None = None
    for mask_mode in mask_modes:
        mask_rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if flat is not None:
            rec = _Recorder()
            _mask_phase(flat, numel, cols, lanes, rec, mask_mode)
            mask_rounds = rec.rounds
        rec = _Recorder()
        _value_phase(positions, sym, numel, cols, lanes, width, 1 << width, chosen, rec)
        data, reads = _rans_encode(lanes, mask_rounds + rec.rounds)
        mask_words = sum(reads[: len(mask_rounds)])
        index = 4 * lanes + 2 * mask_words if flat is not None else 0
        coded = Coded(data, index, len(data) - index, chosen, mask_mode)
        if best is None or len(coded.data) < len(best.data):
            best = coded
    assert best is not None
    return best


def decode(
    data: bytes | memoryview,
    shape: tuple[int, ...],
    sparse: bool,
    width: int,
    alphabet: int,
    mode: int,
) -> tuple[npt.NDArray[np.bool_] | None, npt.NDArray[np.int64], int]:
    """``(mask or None, kept symbols, index bytes)`` from a stream; anything inconsistent raises
    :class:`SqcFormatError` (offsets are added by the caller)."""
    if not 1 <= width <= MAX_WIDTH:
        raise SqcFormatError(f"context-coded symbols of {width} bits (1..{MAX_WIDTH})")
    if mode & 3 not in VALUE_MODES or mode >> 2 not in MASK_MODES:
        raise SqcFormatError(f"unknown mode {mode}")
    if mode >> 2 and not sparse:
        raise SqcFormatError(f"mode {mode}: a mask model for a dense tensor")
    numel = math.prod(shape)
    if numel > LANE_SPAN + MAX_POSITIONS_PER_BYTE * len(data):
        raise SqcFormatError(f"{numel:,} positions cannot be context-coded in {len(data):,} bytes")
    _check_decisions(numel if sparse else numel * width, len(data))
    _, cols = matrix_shape(shape)
    lanes = lane_count(numel)
    dec = _Decoder(data, lanes)
    if sparse:
        mask = _mask_phase(None, numel, cols, lanes, dec, mode >> 2)
        positions = np.flatnonzero(mask)
        _check_decisions(numel + positions.size * width, len(data))
    else:
        mask = None
        positions = np.arange(numel, dtype=np.int64)
    index = 4 * lanes + 2 * dec.pos if sparse else 0
    symbols = _value_phase(positions, None, numel, cols, lanes, width, alphabet, mode & 3, dec)
    dec.finish()
    return mask, symbols, index
