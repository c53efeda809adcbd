"""Fixed-width bit packing of integer arrays.

Quantised weights, codebook indices and sparse-index entries are small integers whose width is rarely a
multiple of eight; storing them in ``bits``-wide fields is the baseline every smarter entropy coder in the
format is measured against, and it is what gets used when the smarter coder does not pay for its table.

Layout (chosen to be trivially reproducible by a C or JS decoder): field ``i`` occupies stream bits
``[i*bits, (i+1)*bits)``; stream bit ``k`` is bit ``k % 8`` (counted from the least significant bit) of byte
``k // 8``; a value's bit 0 is written first. That is plain little-endian bit order, so for ``bits`` of 8,
16 or 32 the packed bytes are exactly the little-endian array bytes. Signed values are stored in
two's complement of width ``bits``. The unused high bits of the last byte are zero.

Everything is vectorised with numpy. Eight fields always fill exactly ``bits`` bytes, so the stream is
handled as a ``(n/8, bits)`` byte matrix whose rows are assembled from (or split into) eight columns with
uint64 shifts: a fixed eight passes whatever ``n``, and temporaries of a few bytes per value (no
``(n, bits)`` bit matrix).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sqc.errors import SqcFormatError

__all__ = ["MAX_BITS", "as_byte_view", "pack", "packed_size", "unpack", "value_range"]

MAX_BITS = 32
"""Widest field supported; wider values should not be bit-packed (they are not "compressed" any more)."""

# Values per chunk: a multiple of 8 so every chunk starts on a byte boundary whatever the width, and small
# enough (64Ki values, ~3 MiB of temporaries) that the working set stays in cache and freshly mapped
# memory is not page-faulted in on every pass.
_CHUNK = 1 << 16

_NATIVE = {8: "<u1", 16: "<u2", 32: "<u4"}


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` fields of ``bits`` bits (the last byte zero-padded)."""
    _check_width(bits, ValueError)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    return (int(count) * bits + 7) // 8


def value_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive ``(lo, hi)`` of the integers representable in a ``bits``-wide field."""
    _check_width(bits, ValueError)
    bits = int(bits)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def pack(values: npt.ArrayLike, bits: int, signed: bool) -> bytes:
    """Pack the integers of ``values`` (flattened row-major) into ``bits``-wide fields.

    Raises ``ValueError`` if a value does not fit: silently wrapping would corrupt a model, and the encoder
    is the only place where the intended range is known.
    """
    lo, hi = value_range(bits, signed)
    bits = int(bits)
    v = np.asarray(values)
    if v.dtype == np.bool_:
        v = v.astype(np.uint8)
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"pack() needs an integer array, got dtype {v.dtype}")
    v = v.ravel()
    if v.size == 0:
        return b""
    vmin, vmax = int(v.min()), int(v.max())
    if vmin < lo or vmax > hi:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"values in [{vmin}, {vmax}] do not fit {bits}-bit {kind} fields [{lo}, {hi}]")
    out = np.empty(packed_size(v.size, bits), dtype=np.uint8)
    for start in range(0, v.size, _CHUNK):
        chunk = v[start : start + _CHUNK]
        first = start * bits // 8
        out[first : first + packed_size(chunk.size, bits)] = _pack_chunk(chunk, bits)
    return out.tobytes()


def _pack_chunk(v: npt.NDArray[np.integer], bits: int) -> npt.NDArray[np.uint8]:
    # After the range check every value fits in int64; masking gives the two's-complement field.
    fields = v.astype(np.int64) & ((1 << bits) - 1)
    if bits in _NATIVE:
        return fields.astype(_NATIVE[bits]).view(np.uint8)
    # Eight fields always fill exactly ``bits`` bytes, so the stream is a (groups, bits) byte matrix whose
    # row r is the 8*bits-bit little-endian integer sum(field[8r+j] << j*bits). Build each row in four
    # uint64 words with eight column-wise shift/or passes, then keep the first ``bits`` bytes of each row.
    n = fields.size
    groups = -(-n // 8)
    cols = np.zeros((groups, 8), dtype=np.uint64)
    cols.reshape(-1)[:n] = fields
    words = np.zeros((groups, 4), dtype="<u8")
    for j in range(8):
        word, shift = divmod(j * bits, 64)
        words[:, word] |= cols[:, j] << np.uint64(shift)
        if shift + bits > 64:
            words[:, word + 1] |= cols[:, j] >> np.uint64(64 - shift)
    return words.view(np.uint8)[:, :bits].reshape(-1)[: packed_size(n, bits)]


def unpack(
    data: bytes | bytearray | memoryview, count: int, bits: int, signed: bool
) -> npt.NDArray[np.int64]:
    """Read ``count`` ``bits``-wide fields from the start of ``data`` (extra trailing bytes are ignored).

    ``data`` is untrusted: the length is checked against ``count`` before anything is allocated, so a hostile
    ``count`` costs at most an error, and the result is never larger than ``64 / bits`` times ``data``.
    """
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= MAX_BITS:
        raise SqcFormatError(f"bit width must be an integer in [1, {MAX_BITS}], got {bits!r}")
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise SqcFormatError(f"field count must be a non-negative integer, got {count!r}")
    bits, count = int(bits), int(count)
    raw = as_byte_view(data)
    need = (count * bits + 7) // 8
    if len(raw) < need:
        raise SqcFormatError(
            f"bit-packed data truncated: {count} x {bits}-bit fields need {need} bytes, got {len(raw)}"
        )
    if count == 0:
        return np.zeros(0, dtype=np.int64)

    buf = np.frombuffer(raw, dtype=np.uint8, count=need)
    out = np.empty(count, dtype=np.int64)
    for start in range(0, count, _CHUNK):
        m = min(_CHUNK, count - start)
        first = start * bits // 8
        out[start : start + m] = _unpack_chunk(buf[first : first + (m * bits + 7) // 8], m, bits)
    if signed:
        sign = np.int64(1 << (bits - 1))
        out = (out ^ sign) - sign
    return out


def _unpack_chunk(buf: npt.NDArray[np.uint8], m: int, bits: int) -> npt.NDArray[np.uint64]:
    if bits in _NATIVE:
        return buf.view(_NATIVE[bits])
    # Inverse of _pack_chunk(): view the bytes as (groups, bits) rows, widen each row to four uint64 words,
    # and pull the eight fields out of every row with column-wise shifts.
    groups = -(-m // 8)
    padded = np.zeros(groups * bits, dtype=np.uint8)
    padded[: buf.size] = buf
    rows = np.zeros((groups, 32), dtype=np.uint8)
    rows[:, :bits] = padded.reshape(groups, bits)
    words = rows.view("<u8")
    mask = np.uint64((1 << bits) - 1)
    cols = np.empty((groups, 8), dtype=np.uint64)
    for j in range(8):
        word, shift = divmod(j * bits, 64)
        col = words[:, word] >> np.uint64(shift)
        if shift + bits > 64:
            col |= words[:, word + 1] << np.uint64(64 - shift)
        cols[:, j] = col & mask
    return cols.reshape(-1)[:m]


def as_byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """A flat unsigned-byte view of ``data`` without copying (``len`` is then the byte length)."""
    mv = memoryview(data)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def _check_width(bits: int, exc: type[Exception]) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= MAX_BITS:
        raise exc(f"bit width must be an integer in [1, {MAX_BITS}], got {bits!r}")
