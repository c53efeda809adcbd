"""Relative sparse index (Deep Compression, Han et al. 2016), with a filler that carries no weight.

A pruned tensor is flattened row-major; only the kept positions carry a weight code, and their positions are
stored as a stream of small *entries*, each ``index_bits`` wide, ``M = 2**index_bits - 1``:

* ``e < M``: skip ``e`` positions, the next weight sits at the position reached, then step past it;
* ``e == M``: a *filler*: skip ``M`` positions, no weight.

So a gap of ``g`` pruned positions before a kept weight is written as ``g // M`` fillers then ``g % M``, and
the zeros after the last kept weight are not written at all (the decoder knows ``numel``).

Why not the paper's rule: there a gap overflow is bridged by storing an explicit *zero weight*, which costs
a weight code and puts fake zeros into the weight stream; here the reserved value ``M`` carries no weight,
so the weight stream holds exactly the kept weights and one fewer gap value is representable per entry,
which is what lets entries and weights be coded independently. The mapping mask <-> entries is a
bijection (fillers are only written when needed and never trail), which the decoder checks.

All functions are vectorised (``np.flatnonzero`` / ``np.repeat`` / ``np.cumsum``); the number of Python-level
steps is independent of the tensor size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from sqc.errors import SqcFormatError

__all__ = [
    "MAX_INDEX_BITS",
    "best_index_bits",
    "decode_positions",
    "encode_gaps",
    "entries_for_gaps",
    "entries_for_positions",
    "entry_count",
    "gaps_of",
]

MAX_INDEX_BITS = 32
"""Entries are returned as uint32, so ``M`` is at most ``2**32 - 1``."""


def encode_gaps(mask_flat: npt.ArrayLike, index_bits: int) -> npt.NDArray[np.uint32]:
    """The entry stream for a keep-mask (flattened row-major; non-zero means kept)."""
    return entries_for_positions(np.flatnonzero(np.asarray(mask_flat)), index_bits)


def entries_for_positions(positions: npt.NDArray[np.integer], index_bits: int) -> npt.NDArray[np.uint32]:
    """:func:`encode_gaps` from the kept positions (strictly increasing), for a caller that has them."""
    return entries_for_gaps(gaps_of(positions), index_bits)


def gaps_of(positions: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
    """Zeros before each kept position (``pos[i] - pos[i-1] - 1``, ``pos[-1] = -1``); uint32 when they
    fit, which halves every temporary after this one on a large layer."""
    narrow = positions.size == 0 or int(positions[-1]) < 1 << 32
    gaps = np.empty(positions.size, dtype=np.uint32 if narrow else np.int64)
    if positions.size:  # straight into the output: np.diff would make two temporaries of int64
        gaps[0] = positions[0]
        np.subtract(positions[1:], positions[:-1], out=gaps[1:], casting="unsafe")
        gaps[1:] -= 1
    return gaps


def entries_for_gaps(gaps: npt.NDArray[np.integer], index_bits: int) -> npt.NDArray[np.uint32]:
    """The entry stream for the gaps before each kept weight (:func:`gaps_of`). Temporaries are the size
    of the gaps, and a stream that needs no fillers (the usual case) is the gaps themselves."""
    m = _filler(index_bits, ValueError)
    if gaps.size == 0:
        return np.zeros(0, dtype=np.uint32)
    fillers = gaps // m
    extra = int(fillers.sum(dtype=np.int64))
    if extra == 0:
        return gaps.astype(np.uint32)
    # Every kept weight owns a run of ``fillers[i]`` filler entries followed by its remainder entry.
    out = np.full(extra + gaps.size, m, dtype=np.uint32)
    ends = fillers.astype(np.int64) if out.size >= 1 << 32 else fillers.astype(np.uint32, copy=False)
    ends += 1
    np.cumsum(ends, out=ends)
    ends -= 1
    out[ends] = gaps % m
    return out


def decode_positions(entries: npt.ArrayLike, index_bits: int, numel: int) -> npt.NDArray[np.int64]:
    """Strictly increasing flat positions of the kept weights described by ``entries``.

    ``entries`` is untrusted: an entry above ``M``, a position at or past ``numel``, or filler entries after
    the last weight (which no encoder writes) raise :class:`SqcFormatError`. Work and memory are linear in
    ``len(entries)``, whatever the values.
    """
    m = _filler(index_bits, SqcFormatError)
    if isinstance(numel, bool) or not isinstance(numel, int | np.integer) or numel < 0:
        raise SqcFormatError(f"numel must be a non-negative integer, got {numel!r}")
    e = np.asarray(entries)
    if e.ndim != 1 or not (np.issubdtype(e.dtype, np.integer) or (e.size == 0 and e.dtype == np.float64)):
        raise SqcFormatError("sparse-index entries must be a 1-D integer array")
    if e.size == 0:
        return np.zeros(0, dtype=np.int64)
    high = int(e.max())
    if int(e.min()) < 0 or high > m:
        raise SqcFormatError(f"sparse-index entry outside [0, {m}] for {index_bits}-bit entries")
    # Every entry advances by at least one position and the last kept weight lies below numel.
    if e.size > numel:
        raise SqcFormatError(f"{e.size} sparse-index entries cannot describe a tensor of {numel} elements")
    if int(e[-1]) == m:
        raise SqcFormatError("sparse-index stream ends with filler entries")
    # Entry e advances by e + 1 (a weight) or by M (a filler); a weight sits one before its advance ends.
    # Each advance is at most 2^32, so the int64 running sum can only overflow when e.size * (M + 1) is
    # near 2^63; in that absurd case an overflow shows up as a decrease, which is checked for. The
    # advances are computed in place in our int64 copy.
    if high < m:  # no fillers (the usual case): every entry is a weight
        positions = e.astype(np.int64)
        positions += 1
        np.cumsum(positions, out=positions)
    else:
        ends = e.astype(np.int64)
        is_weight = e != m
        ends += is_weight
        np.cumsum(ends, out=ends)
        if e.size * (m + 1) >= 1 << 62 and bool(np.any(ends[1:] <= ends[:-1])):
            raise SqcFormatError("sparse-index positions overflow")
        positions = ends.take(np.flatnonzero(is_weight))  # (boolean indexing is ~4x slower here)
    positions -= 1
    if positions[-1] >= numel:
        raise SqcFormatError(f"sparse-index position {int(positions[-1])} is past the tensor end ({numel})")
    return positions


def entry_count(mask_flat: npt.ArrayLike, index_bits: int) -> int:
    """Number of entries :func:`encode_gaps` would produce, without producing them."""
    m = _filler(index_bits, ValueError)
    gaps = _gaps(mask_flat)
    return int(gaps.size + (gaps // m).sum())


def best_index_bits(
    mask_flat: npt.ArrayLike,
    candidates: Iterable[int] = range(1, 17),
    cost: Callable[[int, int], float] | None = None,
) -> int:
    """The index width among ``candidates`` that minimises the index cost of this mask.

    ``cost(entry_count, index_bits)`` defaults to the fixed-width cost ``entry_count * index_bits`` (bits);
    pass another callable to price entries differently. Ties go to the smallest width. The gaps are
    computed once; each candidate then costs one vectorised integer division.
    """
    widths = sorted({int(b) for b in candidates})
    if not widths:
        raise ValueError("best_index_bits needs at least one candidate width")
    for b in widths:
        _filler(b, ValueError)
    price = cost if cost is not None else _fixed_width_cost
    gaps = _gaps(mask_flat)
    best_bits, best_cost = widths[0], float("inf")
    for b in widths:
        n = int(gaps.size + (gaps // ((1 << b) - 1)).sum())
        c = price(n, b)
        if c < best_cost:
            best_bits, best_cost = b, c
    return best_bits


# --------------------------------------------------------------------------------------------- helpers


def _fixed_width_cost(count: int, index_bits: int) -> float:
    return float(count * index_bits)


def _filler(index_bits: int, exc: type[Exception]) -> int:
    """``M`` for a width, validating the width (``exc`` is ValueError on the encode side)."""
    if (
        isinstance(index_bits, bool)
        or not isinstance(index_bits, int | np.integer)
        or not 1 <= index_bits <= MAX_INDEX_BITS
    ):
        raise exc(f"index_bits must be an integer in [1, {MAX_INDEX_BITS}], got {index_bits!r}")
    return (1 << int(index_bits)) - 1


def _gaps(mask_flat: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Zeros before each kept position: ``pos[i] - pos[i-1] - 1`` with ``pos[-1] = -1``."""
    kept = np.flatnonzero(np.asarray(mask_flat))  # flatnonzero flattens row-major
    gaps = np.diff(kept, prepend=-1)
    gaps -= 1
    return gaps
