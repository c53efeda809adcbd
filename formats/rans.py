"""Context-adaptive binary rANS: the pruning pattern and the weight codes coded with context models.

Why: zero-order Huffman spends up to a bit per symbol on skewed streams and cannot see structure
between symbols. Pruned layers have plenty: whole input columns die together (border pixels of MNIST,
unimportant input channels), kept weights come in runs, and neighbouring codes are correlated. Like
MPEG NNR's DeepCABAC, every decision is binarised and coded with an adaptive probability chosen by a
context; unlike it, the arithmetic coder is a binary rANS (no carry propagation, a 32-bit state and
16-bit words), and the decisions run in ``N`` interleaved *lanes* so that numpy can decode all lanes of
a round at once. ``FORMAT.md`` ("Context-coded layout") specifies the bitstream; this module is the
reference implementation, and a sequential C decoder needs only the loops written out below.

Two implementations write and read exactly the same bytes (:data:`IMPLEMENTATION` says which runs):
the C core ``_rans_native`` (``formats/_rans_native.c``, built by ``pip install``; 7-23 ns per binary
decision decoding, 16-26 ns encoding, ``benchmarks/results/rans_speed.json``) and the numpy/Python
paths below (0.1-24 us per decision), used when the extension is missing or ``SQC_RANS=python``.
Python keeps the argument and stream checks, the final checks and the value-mode choice's float sums
in both, so errors and choices cannot differ. Every stream obeys a cap on binary decisions per byte
(:data:`MAX_DECISIONS_PER_BYTE`), which bounds the work any file can ask of a reader.

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
import os
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sqc.errors import SqcFormatError

try:  # the C core (formats/_rans_native.c), built by `pip install`; SQC_RANS=python forces numpy
    if os.environ.get("SQC_RANS", "").lower() == "python":
        raise ImportError("SQC_RANS=python")
    from sqc.formats import _rans_native as _native
except ImportError:
    _native = None

IMPLEMENTATION = "native" if _native is not None else "python"
"""Which coder runs: ``native`` (the C extension) or ``python`` (numpy and plain Python, when the
extension is missing or ``SQC_RANS=python``). Both write and read exactly the same bytes."""

__all__ = [
    "IMPLEMENTATION",
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
    "decision_budget",
    "decisions",
    "decode",
    "encode",
    "estimated_seconds",
    "fits",
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
"""Mask models: 0 = run x column density; 1 (format 1.5) = the row's and the column's density so far
combined (:func:`density_bucket`). The stream's mode byte is ``value_mode | mask_mode << 2`` (a dense
tensor's mask mode is 0); the encoder keeps whichever mask model gives the shorter stream. Model 1
measured on LeNet-5's 90 %-pruned fc1 mask: 6 % fewer mask bytes (its rows' densities differ); on
LeNet-300-100's fc1, whose pixel columns the run context describes, model 0 stays."""
MAX_POSITIONS_PER_BYTE = 512
"""A context-coded tensor of ``n`` positions needs at least ``(n - 2^14) / 512`` stream bytes: coding
costs one Python-level round per position per lane, so this caps the work a hostile file can ask for
(real layers need 4-40 positions per byte; a 99.9 %-pruned one about 500, 99.95 % falls back to Huffman)."""

MAX_DECISIONS_BASE = 256
MAX_DECISIONS_PER_BYTE = 640
"""A context-coded stream of ``n`` bytes may hold at most ``MAX_DECISIONS_BASE +
MAX_DECISIONS_PER_BYTE * n`` binary decisions (:func:`decisions`): the work of decoding is one decision
each, and a small stream can otherwise stand for many (16,384 16-bit codes fit in 20 bytes). The writer
falls back to Huffman/packed beyond it and the reader refuses it, the mask part before decoding and the
whole once the mask is decoded (before the values). See FORMAT.md for the measurements behind it."""


def decisions(numel: int, kept: int, width: int, sparse: bool) -> int:
    """Binary decisions of a context-coded tensor: one per position for the mask, ``width`` per symbol."""
    return (numel if sparse else 0) + kept * width


def decision_budget(nbytes: int) -> int:
    """The most binary decisions a stream of ``nbytes`` bytes may hold (:data:`MAX_DECISIONS_PER_BYTE`)."""
    return MAX_DECISIONS_BASE + MAX_DECISIONS_PER_BYTE * nbytes


def fits(numel: int, kept: int, width: int, sparse: bool, nbytes: int) -> bool:
    """Whether a reader accepts a stream of ``nbytes`` for this tensor: the writers' fallback test
    (the container's and the C target's), the same rules :func:`decode` enforces."""
    return numel <= LANE_SPAN + MAX_POSITIONS_PER_BYTE * nbytes and decisions(
        numel, kept, width, sparse
    ) <= decision_budget(nbytes)


def _check_sizes(numel: int, nbytes: int, sparse: bool, width: int) -> None:
    """What a reader checks before decoding: the positions, and the decisions known from the header (the
    mask's when sparse, all of them when dense)."""
    if numel > LANE_SPAN + MAX_POSITIONS_PER_BYTE * nbytes:
        raise SqcFormatError(f"{numel:,} positions cannot be context-coded in {nbytes:,} bytes")
    _check_decisions(decisions(numel, 0 if sparse else numel, width, sparse), nbytes)


def _check_decisions(count: int, nbytes: int) -> None:
    if count > decision_budget(nbytes):
        raise SqcFormatError(
            f"{count:,} binary decisions cannot be context-coded in {nbytes:,} bytes "
            f"(at most {decision_budget(nbytes):,})"
        )


SCALAR_LANES = 16
"""Without the C core: streams of at most this many lanes (tensors of up to 2^18 positions) are decoded
decision by decision in plain Python (:func:`_decode_scalar`) rather than a round at a time in numpy:
~1.2 us per binary decision against ~20 us of numpy calls per round, so it wins while a round has few
lanes (and the numpy path's calls are then shared by at least 17 lanes). The two paths give the same
result and the same error."""

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


_COSTS = {"native": (0.0, 20e-9), "python": (40e-6, 0.27e-6)}
"""Encoding cost on the 2-core reference machine, per round and per binary decision. Python: ~40 us of
numpy overhead per round and ~0.27 us per decision (fitted on LeNet-5 fc1 and a 102.8M-weight VGG-16
fc6 layer: 0.9 s and 35 s). Native: ~16-26 ns per decision, the value-mode choice included, and no
per-round cost worth modelling (``benchmarks/results/rans_speed.json``). Decoding takes about half."""
ROUND_SECONDS, DECISION_SECONDS = _COSTS[IMPLEMENTATION]


def estimated_seconds(numel: int, kept: int, width: int, sparse: bool) -> float:
    """Rough encoding time of a tensor (:data:`ROUND_SECONDS`, :data:`DECISION_SECONDS`), so that the
    ``rans`` pass can say when a tensor will take long rather than appear to hang."""
    lanes = lane_count(numel)
    per_lane = -(-kept // lanes)
    rounds = (-(-numel // lanes) if sparse else 0) + per_lane * width
    decisions = (numel if sparse else 0) + kept * width
    return rounds * ROUND_SECONDS + decisions * DECISION_SECONDS


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


def _p1_of(tot: npt.NDArray[np.int64], n1: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """:func:`_p1` from the total count and the count of ones (two ufunc clamps: ``np.clip`` costs
    more in Python overhead than the arithmetic, and this runs once per round)."""
    return np.minimum(np.maximum(((2 * n1 + 1) << 16) // (2 * tot + 2), 1), ONE - 1)


# Speed. Decoding is inherently one round after another (a round's probabilities depend on every
# earlier decision), so the cost is (rounds x numpy calls per round), whatever the tensor's size:
# ~16K mask rounds for any tensor above 16K positions, plus (kept per lane x width) value rounds. The
# loops below therefore keep the calls per round few: buckets come from lookup tables instead of
# searchsorted, probabilities of the 70 mask contexts are a table refreshed once per round, counts are
# updated with one bincount, a round with every lane active indexes nothing, and the column statistics
# take a plain scatter when no two lanes can meet in one column. Everything computes exactly what
# ``rans_reference`` computes (tests compare the bytes).

_RUN_LUT = np.searchsorted(RUN_THRESHOLDS, np.arange(64), side="right").astype(np.int64) * COLUMN_BUCKETS
"""``run_bucket(min(run, 63)) * 10`` (runs of 63 or more are all in the last bucket)."""
_COL_LUT = np.concatenate(
    (
        column_bucket(np.maximum(np.arange(65, dtype=np.int64), 1), np.full(65, 64, dtype=np.int64)),
        [0, 1, 1, 1, 2],
    )
).astype(np.int64)
_COL_LUT[0] = 3  # kept > 0 but 64 * kept < seen: the lowest density bucket
"""Column bucket by index: ``64 * kept // seen`` (0..64) when kept > 0, else ``65 + min(seen, 4)``."""


def _column_index(kept: npt.NDArray[np.int64], seen: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.where(kept > 0, (kept << 6) // np.maximum(seen, 1), np.minimum(seen, 4) + 65)


def _density_of(p: int) -> int:
    """Mask model 1's bucket of a predicted probability ``p`` (16-bit fixed point; see
    :func:`density_bucket`)."""
    if p >= ONE:
        return 0
    if p == 0:
        return DENSITY_BUCKETS - 1
    length = p.bit_length()
    return min(DENSITY_BUCKETS - 1, 2 * (16 - length) + 1 + (1 if p * p < 1 << (2 * length - 1) else 0))


_DENSITY_LUT = np.array([_density_of(p) for p in range(ONE + 1)], dtype=np.int64)
_DENSITY_LIST = _DENSITY_LUT.tolist()


def density_bucket(
    row_kept: npt.NDArray[np.int64],
    row_seen: npt.NDArray[np.int64],
    col_kept: npt.NDArray[np.int64],
    col_seen: npt.NDArray[np.int64],
    all_kept: int,
    all_seen: int,
) -> npt.NDArray[np.int64]:
    """Mask model 1's bucket of each position: the kept probability predicted from its row's density so
    far (in the lane, since the row's start), its column's (over all lanes) and the tensor's, each of the
    first two shrunk toward the last by ``DENSITY_PRIOR`` pseudo-positions, combined as ``row * column /
    overall`` (independent row and column effects), in half-octave buckets of ``-log2 p`` (0 for
    ``p >= 1`` ... 24 below 2^-12). Integer arithmetic, as FORMAT.md specifies it."""
    g = max(1, ((all_kept + 1) << 16) // (all_seen + 2))
    r = ((row_kept << 16) + DENSITY_PRIOR * g) // (row_seen + DENSITY_PRIOR)
    c = ((col_kept << 16) + DENSITY_PRIOR * g) // (col_seen + DENSITY_PRIOR)
    return _DENSITY_LUT[np.minimum(r * c // g, ONE)]


# ------------------------------------------------------------------------------------------ models

# ``code(active, p1, bits)`` codes one round: ``active`` are the lane numbers (ascending; None = every
# lane), ``p1`` the probability of a 1 for each, ``bits`` the decisions (encoder) or None (decoder);
# it returns the bits (bool).
CodeFn = Callable[
    ["npt.NDArray[np.int64] | None", npt.NDArray[np.int64], "npt.NDArray[np.bool_] | None"], np.ndarray
]


def _bands(numel: int, lanes: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    j = np.arange(lanes + 1, dtype=np.int64)
    edges = j * numel // lanes
    return edges[:-1], edges[1:] - edges[:-1]


def _mask_phase(
    mask: npt.NDArray[np.bool_] | None, numel: int, cols: int, lanes: int, code: CodeFn, mask_mode: int = 0
) -> np.ndarray:
    """Code (or decode, when ``mask`` is None) the kept/pruned decision of every position."""
    start, length = _bands(numel, lanes)
    contexts = DENSITY_CONTEXTS if mask_mode else MASK_CONTEXTS
    counts = np.zeros((contexts, 2), dtype=np.int64)
    ptab = _p1_of(counts.sum(1), counts[:, 1])
    col_kept = np.zeros(cols, dtype=np.int64)
    col_seen = np.zeros(cols, dtype=np.int64)
    run = np.zeros(lanes, dtype=np.int64)
    row_kept = np.zeros(lanes, dtype=np.int64)
    row_seen = np.zeros(lanes, dtype=np.int64)
    all_kept = all_seen = 0
    out = np.zeros(numel, dtype=bool)
    if not lanes or not numel:
        return out
    # lane lengths differ by at most one: every lane is active up to the shortest, then the longer ones
    shortest, longest = int(length.min()), int(length.max())
    tail = np.flatnonzero(length > shortest)
    # lanes whose starts differ by a multiple of cols meet in the same column in every round
    distinct = np.unique(start % cols).size == lanes
    for t in range(longest):
        if t < shortest:
            active, pos, r, rk, rs = None, start + t, run, row_kept, row_seen
        else:
            active = tail
            pos, r, rk, rs = start[tail] + t, run[tail], row_kept[tail], row_seen[tail]
        col = pos % cols
        inside = col != 0
        r = r * inside
        if mask_mode:
            rk, rs = rk * inside, rs * inside
            bucket = density_bucket(rk, rs, col_kept[col], col_seen[col], all_kept, all_seen)
            ctx = 2 * bucket + (r > 0)
        else:
            ctx = _RUN_LUT[np.minimum(r, 63)] + _COL_LUT[_column_index(col_kept[col], col_seen[col])]
        bits = code(active, ptab[ctx], None if mask is None else mask[pos])
        b = bits.astype(np.int64)
        counts += np.bincount(2 * ctx + b, minlength=2 * contexts).reshape(contexts, 2)
        ptab = _p1_of(counts[:, 0] + counts[:, 1], counts[:, 1])
        if distinct:
            col_kept[col] += b
            col_seen[col] += 1
        else:
            np.add.at(col_kept, col, b)
            np.add.at(col_seen, col, 1)
        if active is None:
            run = (r + 1) * (1 - b)
        else:
            run[active] = (r + 1) * (1 - b)
        if mask_mode:
            if active is None:
                row_kept, row_seen = rk + b, rs + 1
            else:
                row_kept[active], row_seen[active] = rk + b, rs + 1
            all_kept += int(b.sum())
            all_seen += int(b.size)
        out[pos] = bits
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
    first = np.concatenate(([0], np.cumsum(per_lane)[:-1])).astype(np.int64)
    ctx_bits = min(mode, width)
    none = (1 << ctx_bits) if mode else 0
    slots = (none + 1) << width
    tot = np.zeros(slots, dtype=np.int64)
    ones = np.zeros(slots, dtype=np.int64)
    ptab = np.full(slots, int(_p1_of(np.zeros(1, np.int64), np.zeros(1, np.int64))[0]), dtype=np.int64)
    prev_sym = np.zeros(lanes, dtype=np.int64)
    prev_row = np.full(lanes, -1, dtype=np.int64)
    out = np.zeros(positions.size, dtype=np.int64)
    rows_of = positions // max(cols, 1)
    ends = np.unique(per_lane)  # the rounds at which lanes drop out
    check_alphabet = symbols is None and alphabet < (1 << width)
    active: npt.NDArray[np.int64] | None = None
    lane_first = first
    next_end = 0
    for t in range(int(per_lane.max()) if positions.size else 0):
        if t >= next_end:  # recompute the active lanes only when one has run out
            live = np.flatnonzero(per_lane > t)
            active = None if live.size == lanes else live
            lane_first = first if active is None else first[active]
            next_end = int(ends[np.searchsorted(ends, t, side="right")])
        k = lane_first + t
        row = rows_of[k]
        if mode:
            p_row = prev_row if active is None else prev_row[active]
            p_sym = prev_sym if active is None else prev_sym[active]
            base = np.where(p_row == row, p_sym >> (width - ctx_bits), none) << width
        else:
            base = np.zeros(k.size, dtype=np.int64)
        known = None if symbols is None else symbols[k]
        node = np.ones(k.size, dtype=np.int64)
        touched = []
        bits = []
        for level in range(width):
            slot = base + node
            want = None if known is None else ((known >> (width - 1 - level)) & 1).astype(bool)
            bit = code(active, ptab[slot], want)
            touched.append(slot)
            bits.append(bit)
            node = 2 * node + bit
        every = np.concatenate(touched)
        np.add.at(tot, every, 1)
        np.add.at(ones, every, np.concatenate(bits).astype(np.int64))
        ptab[every] = _p1_of(tot[every], ones[every])
        sym = node - (1 << width)
        if check_alphabet and int(sym.max()) >= alphabet:  # refuse at once, as the reference does
            raise SqcFormatError(f"context-coded symbol outside the alphabet of {alphabet}")
        out[k] = sym
        if active is None:
            prev_sym, prev_row = sym, row
        else:
            prev_sym[active] = sym
            prev_row[active] = row
    return out


def _value_slots(width: int, mode: int) -> int:
    """Contexts of the value phase: ``2^width`` tree nodes per context set (one set, or ``2^m + 1``)."""
    return ((1 << min(mode, width)) + 1 if mode else 1) << width


def _value_pairs(
    mask: npt.NDArray[np.bool_] | None,
    symbols: np.ndarray,
    numel: int,
    cols: int,
    lanes: int,
    width: int,
    modes: list[int],
) -> list[npt.NDArray[np.int64]]:
    """The value phase's final ``(n0, n1)`` of every slot in each of ``modes`` (shape ``(slots, 2)``),
    without coding: by the C core (one pass for all the modes), or one ``bincount`` per level in numpy."""
    tables = [np.zeros((_value_slots(width, mode), 2), dtype=np.int64) for mode in modes]
    if _native is not None:
        given: list[np.ndarray | None] = [None] * len(VALUE_MODES)
        for mode, table in zip(modes, tables, strict=True):
            given[mode] = table
        _native.value_counts(lanes, numel, cols, width, mask, symbols, *given)
        return tables
    positions = np.arange(numel, dtype=np.int64) if mask is None else np.flatnonzero(mask)
    start, _ = _bands(numel, lanes)
    lane_of = np.searchsorted(start, positions, side="right") - 1
    rows = positions // max(cols, 1)
    for mode, table in zip(modes, tables, strict=True):
        ctx = np.zeros(symbols.size, dtype=np.int64)
        if mode:
            bits = min(mode, width)
            same = np.zeros(symbols.size, dtype=bool)
            same[1:] = (lane_of[1:] == lane_of[:-1]) & (rows[1:] == rows[:-1])
            prev = np.concatenate(([0], symbols[:-1] >> (width - bits)))
            ctx = np.where(same, prev, 1 << bits)
        pairs = table.reshape(-1)
        for level in range(width):  # the levels' nodes are disjoint: each slot is counted at one level
            node = (symbols >> (width - level)) | (1 << level)
            bit = (symbols >> (width - 1 - level)) & 1
            pairs += np.bincount(((ctx << width) + node) * 2 + bit, minlength=pairs.size)
    return tables


def _value_costs(
    mask: npt.NDArray[np.bool_] | None,
    symbols: np.ndarray,
    numel: int,
    cols: int,
    lanes: int,
    width: int,
    modes: list[int],
) -> list[float]:
    """Bits the value phase would take in each of ``modes``, from the final counts of every tree node
    (the adaptive estimator's cost depends only on them, up to the lockstep delay): how the encoder picks
    a mode without running the coder once per mode. Summed level by level in slot order, as the
    reference does, so that the floats (and so the chosen mode, even on a near tie) are the same."""
    if symbols.size == 0:
        return [0.0] * len(modes)
    costs = []
    half = math.lgamma(0.5)
    for pairs in _value_pairs(mask, symbols, numel, cols, lanes, width, modes):
        table = pairs.reshape(-1, 1 << width, 2)
        total = 0.0
        for level in range(width):
            part = table[:, 1 << level : 2 << level].reshape(-1, 2)
            used = part[(part[:, 0] + part[:, 1]) > 0]
            for a, b in zip(used[:, 0].tolist(), used[:, 1].tolist(), strict=True):
                total += math.lgamma(a + b + 1) + 2 * half - math.lgamma(a + 0.5) - math.lgamma(b + 0.5)
        costs.append(total / math.log(2))
    return costs


# ------------------------------------------------------------------------------------- rANS engine


class _Recorder:
    """Encoder side: records each round (lanes, probability, bit) for the reverse rANS pass."""

    def __init__(self) -> None:
        self.rounds: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []

    def __call__(self, active: np.ndarray | None, p1: np.ndarray, bits: np.ndarray | None) -> np.ndarray:
        assert bits is not None
        self.rounds.append((active, p1, bits))
        return bits


def _rans_encode(
    lanes: int, rounds: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]]
) -> tuple[bytes, list[int]]:
    """The stream for ``rounds`` (in decoding order), and the number of words each round reads.

    States stay below 2^32 and frequencies at most 2^16, so int64 holds every product exactly."""
    x = np.full(lanes, ONE, dtype=np.int64)
    chunks: list[np.ndarray] = []
    reads = [0] * len(rounds)
    for i in range(len(rounds) - 1, -1, -1):
        active, p, one = rounds[i]
        xa = x if active is None else x[active]
        f0 = ONE - p
        f = np.where(one, p, f0)
        emit = xa >= (f << 16)
        n = int(np.count_nonzero(emit))
        if n:
            chunks.append((xa[emit] & 0xFFFF)[::-1])
            reads[i] = n
            xa = np.where(emit, xa >> 16, xa)
        q, r = np.divmod(xa, f)
        xa = (q << 16) + r + f0 * one
        if active is None:
            x = xa
        else:
            x[active] = xa
    words = np.concatenate(chunks)[::-1] if chunks else np.zeros(0, dtype=np.int64)
    return x.astype("<u4").tobytes() + words.astype("<u2").tobytes(), reads


class _Decoder:
    """Decoder side: one rANS state per lane over a shared stream of 16-bit words (int64 arithmetic:
    states below 2^32 times frequencies up to 2^16 fit)."""

    def __init__(self, data: bytes | memoryview, lanes: int) -> None:
        raw = memoryview(data).cast("B")
        if len(raw) < 4 * lanes or (len(raw) - 4 * lanes) % 2:
            raise SqcFormatError(f"rANS stream of {len(raw)} bytes for {lanes} lanes")
        self.x = np.frombuffer(raw[: 4 * lanes], dtype="<u4").astype(np.int64)
        if bool((self.x < ONE).any()):
            raise SqcFormatError("rANS initial state below 2^16")
        self.words = np.frombuffer(raw[4 * lanes :], dtype="<u2").astype(np.int64)
        self.pos = 0

    def __call__(self, active: np.ndarray | None, p: np.ndarray, bits: np.ndarray | None) -> np.ndarray:
        xa = self.x if active is None else self.x[active]
        f0 = ONE - p
        s = xa & 0xFFFF
        one = s >= f0
        xa = np.where(one, p, f0) * (xa >> 16) + s - f0 * one
        need = xa < ONE
        k = int(np.count_nonzero(need))
        if k:
            if self.pos + k > self.words.size:
                raise SqcFormatError("rANS stream ends early (truncated or corrupt)")
            xa[need] = (xa[need] << 16) | self.words[self.pos : self.pos + k]
            self.pos += k
        if active is None:
            self.x = xa
        else:
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
    stream's mode byte (``value_mode | mask_mode << 2``).
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
        flat = np.ascontiguousarray(mask, dtype=bool).ravel()
        if flat.size != numel or int(np.count_nonzero(flat)) != sym.size:
            raise ValueError("mask and symbols disagree")
    elif sym.size != numel:
        raise ValueError("a dense tensor needs one symbol per position")
    if mode is None:
        modes = [m for m in VALUE_MODES if m <= width]
        costs = dict(zip(modes, _value_costs(flat, sym, numel, cols, lanes, width, modes), strict=True))
        chosen = min(modes, key=lambda m: (costs[m], m))
        mask_modes = list(MASK_MODES) if flat is not None else [0]
    else:
        chosen, mask_modes = mode & 3, [mode >> 2]
    if _native is not None and len(mask_modes) == 2:  # both mask models in one call: the values coded once
        data, mask_words, mask_mode = _native.encode_masked(lanes, numel, cols, width, chosen, flat, sym)
        index = 4 * lanes + 2 * mask_words
        return Coded(data, index, len(data) - index, chosen, mask_mode)
    best: Coded | None = None
    for mask_mode in mask_modes:  # the shorter stream (ties: the lower mode)
        if _native is not None:
            data, mask_words = _native.encode(lanes, numel, cols, width, chosen | mask_mode << 2, flat, sym)
        else:
            data, mask_words = _encode_python(flat, sym, numel, cols, lanes, width, chosen, mask_mode)
        index = 4 * lanes + 2 * mask_words if mask is not None else 0
        if best is None or len(data) < len(best.data):
            best = Coded(data, index, len(data) - index, chosen, mask_mode)
    assert best is not None
    return best


def _encode_python(
    mask: npt.NDArray[np.bool_] | None,
    sym: npt.NDArray[np.int64],
    numel: int,
    cols: int,
    lanes: int,
    width: int,
    mode: int,
    mask_mode: int,
) -> tuple[bytes, int]:
    """The stream and the words its mask phase reads, a round at a time in numpy (no extension)."""
    mask_rounds: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []
    positions = np.arange(numel, dtype=np.int64) if mask is None else np.flatnonzero(mask)
    if mask is not None:
        rec = _Recorder()
        _mask_phase(mask, numel, cols, lanes, rec, mask_mode)
        mask_rounds = rec.rounds
    rec = _Recorder()
    _value_phase(positions, sym, numel, cols, lanes, width, 1 << width, mode, rec)
    data, reads = _rans_encode(lanes, mask_rounds + rec.rounds)
    return data, sum(reads[: len(mask_rounds)])


def scatter(
    mask: npt.NDArray[np.bool_], symbols: npt.NDArray[np.int64], table: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """A sparse tensor's float32 values from :func:`decode`'s mask and symbols: ``table[symbol]`` at the
    kept positions in order, ``+0.0`` elsewhere (the C core's ``scatter_table`` where built; the
    symbols were checked against the alphabet, which the table covers)."""
    out = np.zeros(mask.size, dtype=np.float32)
    table = np.ascontiguousarray(table, dtype=np.float32)
    if _native is not None:
        _native.scatter_table(mask, np.ascontiguousarray(symbols, dtype=np.int64), table, out)
    else:
        out[mask] = table[symbols]
    return out


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
    _check_sizes(numel, len(data), sparse, width)
    _, cols = matrix_shape(shape)
    lanes = lane_count(numel)
    if _native is not None:
        return _decode_native(data, numel, cols, lanes, sparse, width, alphabet, mode)
    if lanes <= SCALAR_LANES:
        return _decode_scalar(data, numel, cols, lanes, sparse, width, alphabet, mode)
    return _decode_rounds(data, numel, cols, lanes, sparse, width, alphabet, mode)


def _decode_rounds(
    data: bytes | memoryview,
    numel: int,
    cols: int,
    lanes: int,
    sparse: bool,
    width: int,
    alphabet: int,
    mode: int,
) -> tuple[npt.NDArray[np.bool_] | None, npt.NDArray[np.int64], int]:
    """:func:`decode` a round at a time, every lane of a round in one numpy call (many lanes)."""
    dec = _Decoder(data, lanes)
    if sparse:
        mask = _mask_phase(None, numel, cols, lanes, dec, mode >> 2)
        positions = np.flatnonzero(mask)
        _check_decisions(decisions(numel, positions.size, width, True), len(data))
    else:
        mask = None
        positions = np.arange(numel, dtype=np.int64)
    index = 4 * lanes + 2 * dec.pos if sparse else 0
    symbols = _value_phase(positions, None, numel, cols, lanes, width, alphabet, mode & 3, dec)
    dec.finish()
    return mask, symbols, index


def _stream_states(raw: memoryview, lanes: int) -> npt.NDArray[np.uint32]:
    """The lanes' initial states (a writable copy), after the stream's length and state checks."""
    if len(raw) < 4 * lanes or (len(raw) - 4 * lanes) % 2:
        raise SqcFormatError(f"rANS stream of {len(raw)} bytes for {lanes} lanes")
    x = np.frombuffer(raw[: 4 * lanes], dtype="<u4").astype(np.uint32)
    if bool((x < ONE).any()):
        raise SqcFormatError("rANS initial state below 2^16")
    return x


def _decode_native(
    data: bytes | memoryview,
    numel: int,
    cols: int,
    lanes: int,
    sparse: bool,
    width: int,
    alphabet: int,
    mode: int,
) -> tuple[npt.NDArray[np.bool_] | None, npt.NDArray[np.int64], int]:
    """:func:`decode` by the C core: the same checks in the same order as the Python paths; memory is
    the mask (``numel`` bytes) and the symbols (8 bytes each), both within the checked caps."""
    assert _native is not None
    raw = memoryview(data).cast("B")
    x = _stream_states(raw, lanes)
    words = (len(raw) - 4 * lanes) // 2
    mask: npt.NDArray[np.bool_] | None = None
    try:
        used = 0
        if sparse:
            mask = np.zeros(numel, dtype=np.bool_)
            used = _native.mask_decode(raw, lanes, numel, cols, mode >> 2, x, mask)
            kept = int(np.count_nonzero(mask))
            _check_decisions(decisions(numel, kept, width, True), len(raw))
        else:
            kept = numel
        index = 4 * lanes + 2 * used if sparse else 0
        symbols = np.empty(kept, dtype=np.int64)
        used = _native.values_decode(
            raw, lanes, numel, cols, width, alphabet, mode & 3, x, used, mask, symbols
        )
    except _native.StreamError as exc:
        raise SqcFormatError(str(exc)) from None
    if used != words:
        raise SqcFormatError(f"{words - used} unused words after the rANS stream")
    if bool((x != ONE).any()):
        raise SqcFormatError("rANS final state check failed (corrupt stream)")
    return mask, symbols, index


# ------------------------------------------------------------------------------ few lanes: scalar


_RUN_LIST = _RUN_LUT.tolist()
_COL_LIST = _COL_LUT.tolist()


def _decode_scalar(
    data: bytes | memoryview,
    numel: int,
    cols: int,
    lanes: int,
    sparse: bool,
    width: int,
    alphabet: int,
    mode: int,
) -> tuple[npt.NDArray[np.bool_] | None, npt.NDArray[np.int64], int]:
    """:func:`decode` for a stream of few lanes, one decision at a time on Python integers.

    The same rounds as :func:`_mask_phase` and :func:`_value_phase` with :class:`_Decoder`, written out
    per lane: within a round every lane reads the counts as they were at its start (the updates are
    applied after the round) and the lanes needing a word take them in lane order, level by level in
    the value phase. Memory stays that of the numpy path (typed arrays, not lists of ints)."""
    raw = memoryview(data).cast("B")
    if len(raw) < 4 * lanes or (len(raw) - 4 * lanes) % 2:
        raise SqcFormatError(f"rANS stream of {len(raw)} bytes for {lanes} lanes")
    x = np.frombuffer(raw[: 4 * lanes], dtype="<u4").tolist()
    if min(x) < ONE:
        raise SqcFormatError("rANS initial state below 2^16")
    words = array("H", raw[4 * lanes :].tobytes())
    if sys.byteorder == "big":
        words.byteswap()
    nwords = len(words)
    w = 0
    start_arr, length_arr = _bands(numel, lanes)
    start, length = start_arr.tolist(), length_arr.tolist()
    lane_ids = range(lanes)

    mask: npt.NDArray[np.bool_] | None = None
    mask_mode, mode = mode >> 2, mode & 3
    if sparse:
        contexts = DENSITY_CONTEXTS if mask_mode else MASK_CONTEXTS
        n0 = [0] * contexts
        n1 = [0] * contexts
        col_kept = array("q", bytes(8 * cols))
        col_seen = array("q", bytes(8 * cols))
        run = [0] * lanes
        row_kept = [0] * lanes
        row_seen = [0] * lanes
        all_kept = all_seen = 0
        kept_at = bytearray(numel)
        run_ctx, col_ctx, density = _RUN_LIST, _COL_LIST, _DENSITY_LIST
        for t in range(max(length)):
            todo = []
            g = max(1, ((all_kept + 1) << 16) // (all_seen + 2))
            for j in lane_ids:  # contexts from the statistics at the start of the round
                if t < length[j]:
                    pos = start[j] + t
                    col = pos % cols
                    r = run[j] if col else 0
                    kept = col_kept[col]
                    if mask_mode:
                        if not col:
                            row_kept[j] = row_seen[j] = 0
                        rp = ((row_kept[j] << 16) + DENSITY_PRIOR * g) // (row_seen[j] + DENSITY_PRIOR)
                        cp = ((kept << 16) + DENSITY_PRIOR * g) // (col_seen[col] + DENSITY_PRIOR)
                        p = rp * cp // g
                        ctx = 2 * density[p if p < ONE else ONE] + (1 if r else 0)
                    else:
                        if kept:
                            index = (kept << 6) // col_seen[col]
                        else:
                            seen = col_seen[col]
                            index = 65 + (seen if seen < 4 else 4)
                        ctx = run_ctx[r if r < 63 else 63] + col_ctx[index]
                    todo.append((j, pos, col, r, ctx))
            done = []
            for j, pos, col, r, ctx in todo:
                ones = n1[ctx]
                p = ((2 * ones + 1) << 16) // (2 * (n0[ctx] + ones) + 2)
                p = 1 if p < 1 else (65535 if p > 65535 else p)
                f0 = ONE - p
                state = x[j]
                s = state & 0xFFFF
                if s >= f0:
                    state = p * (state >> 16) + s - f0
                    bit = 1
                else:
                    state = f0 * (state >> 16) + s
                    bit = 0
                if state < ONE:
                    if w >= nwords:
                        raise SqcFormatError("rANS stream ends early (truncated or corrupt)")
                    state = (state << 16) | words[w]
                    w += 1
                x[j] = state
                done.append((j, pos, col, r, ctx, bit))
            for j, pos, col, r, ctx, bit in done:
                col_seen[col] += 1
                row_seen[j] += 1
                all_seen += 1
                if bit:
                    n1[ctx] += 1
                    col_kept[col] += 1
                    kept_at[pos] = 1
                    run[j] = 0
                    row_kept[j] += 1
                    all_kept += 1
                else:
                    n0[ctx] += 1
                    run[j] = r + 1
        mask = np.frombuffer(kept_at, dtype=np.bool_)
        positions = np.flatnonzero(mask)
        _check_decisions(decisions(numel, positions.size, width, True), len(raw))
    else:
        positions = np.arange(numel, dtype=np.int64)
    index_bytes = 4 * lanes + 2 * w if sparse else 0

    lane_of = np.searchsorted(start_arr, positions, side="right") - 1
    per_lane = np.bincount(lane_of, minlength=lanes).tolist()
    first = [0] * lanes
    for j in range(1, lanes):
        first[j] = first[j - 1] + per_lane[j - 1]
    where = array("q", positions.astype(np.int64).tobytes())
    out = array("q", bytes(8 * len(where)))
    ctx_bits = min(mode, width)
    none = (1 << ctx_bits) if mode else 0
    slots = (none + 1) << width
    tot = array("q", bytes(8 * slots))
    n1v = array("q", bytes(8 * slots))
    prev_sym = [0] * lanes
    prev_row = [-1] * lanes
    row_len = max(cols, 1)
    top, shift, levels = 1 << width, width - ctx_bits, range(width)
    for t in range(max(per_lane) if len(where) else 0):
        active = [j for j in lane_ids if t < per_lane[j]]
        base, rows = [], []
        for j in active:
            row = where[first[j] + t] // row_len
            rows.append(row)
            base.append((((prev_sym[j] >> shift) if prev_row[j] == row else none) << width) if mode else 0)
        node = [1] * len(active)
        done = []
        for _ in levels:
            for i, j in enumerate(active):
                slot = base[i] + node[i]
                p = ((2 * n1v[slot] + 1) << 16) // (2 * tot[slot] + 2)
                p = 1 if p < 1 else (65535 if p > 65535 else p)
                f0 = ONE - p
                state = x[j]
                s = state & 0xFFFF
                if s >= f0:
                    state = p * (state >> 16) + s - f0
                    bit = 1
                else:
                    state = f0 * (state >> 16) + s
                    bit = 0
                if state < ONE:
                    if w >= nwords:
                        raise SqcFormatError("rANS stream ends early (truncated or corrupt)")
                    state = (state << 16) | words[w]
                    w += 1
                x[j] = state
                done.append((slot, bit))
                node[i] = 2 * node[i] + bit
        for slot, bit in done:
            tot[slot] += 1
            n1v[slot] += bit
        for i, j in enumerate(active):
            sym = node[i] - top
            if sym >= alphabet:  # refuse at once, as the reference does
                raise SqcFormatError(f"context-coded symbol outside the alphabet of {alphabet}")
            out[first[j] + t] = sym
            prev_sym[j] = sym
            prev_row[j] = rows[i]
    if w != nwords:
        raise SqcFormatError(f"{nwords - w} unused words after the rANS stream")
    if any(state != ONE for state in x):
        raise SqcFormatError("rANS final state check failed (corrupt stream)")
    return mask, np.frombuffer(out, dtype=np.int64), index_bytes
