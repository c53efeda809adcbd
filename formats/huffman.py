"""Canonical Huffman coding of small-alphabet symbol streams (codebook indices, sparse-index entries).

Why canonical: a canonical code is fully determined by the code *lengths*, so a layer only pays for a
table of lengths, not for codewords or a tree, and the encoder and decoder derive the identical code.

Code construction
    :func:`code_lengths` runs the package-merge algorithm (optimal length-limited prefix code), which gives
    exactly the Huffman cost whenever the Huffman tree fits in ``max_length``, and the best possible code
    otherwise. Codewords are then assigned in the standard (DEFLATE) canonical way: symbols sorted by
    ``(length, symbol)``, consecutive integers, left-shifted whenever the length grows. A code must be
    complete (Kraft sum exactly 1), except that a stream using a single symbol gives it length 1 (code
    ``0``) so that every symbol still costs one bit and a count can be checked against the bit length.

Bit order of the payload
    Codewords are concatenated first-bit-first, filling each byte from its most significant bit
    (``bitarray`` big-endian order, as in JPEG); the last byte is zero-padded.

Serialized layout (:func:`serialize` / :func:`deserialize`); ``varint`` is unsigned LEB128 in its minimal
form; the symbol count is *not* stored (the container knows it from the tensor shape):

    =========================  ==============================================================================
    varint ``H``               1 + highest used symbol; ``0`` means no symbols (then the stream is just
                               this one byte and the count must be 0)
    1 byte ``hdr``             bits 0-4: ``lmin - 1`` (shortest used code length, 1..24);
                               bits 5-7: ``w - 1`` where ``w`` (1..5) is the width of a table field
    ``ceil(H*w/8)`` bytes      ``H`` fields of ``w`` bits, :mod:`~sqc.formats.bitpack` order (LSB first);
                               field ``s`` is 0 if symbol ``s`` is unused, else ``length(s) - lmin + 1``;
                               the padding bits are zero
    varint ``nbits``           payload length in bits  -- omitted when exactly one symbol is used
    ``ceil(nbits/8)`` bytes    payload                  -- omitted when exactly one symbol is used
    =========================  ==============================================================================

    Everything is canonical and checked on read: ``hdr`` must be the minimal ``lmin``/``w`` for the table,
    field ``H-1`` is non-zero, lengths are at most 24, the code is complete (or a single symbol of length
    1, whose payload would be ``count`` zero bits and is therefore implied), every listed symbol occurs
    (at most ``count`` symbols, their lengths summing to at most ``nbits``), varints are minimal,
    padding bits are zero, exactly ``count`` symbols fill exactly ``nbits`` bits, and nothing follows the
    payload. A 64-symbol codebook with lengths spanning 8 values therefore costs 2 + 32 bytes of table.

Speed
    Encoding is vectorised with numpy (codewords are shifted into 64-bit windows and summed per 32-bit
    output word); decoding uses ``bitarray``'s C prefix-code decoder. See ``benchmarks/bench_huffman.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from bitarray import bitarray, decodetree
from bitarray.util import int2ba

from sqc.errors import SqcFormatError
from sqc.formats import bitpack
from sqc.formats.binio import Reader
from sqc.formats.binio import varint as _varint

__all__ = [
    "MAX_CODE_LENGTH",
    "HuffmanStream",
    "code_lengths",
    "decode",
    "deserialize",
    "encode",
    "encoded_size",
    "encoded_size_from_counts",
    "serialize",
]

MAX_CODE_LENGTH = 24
"""Longest codeword the format allows: fits a 5-bit table field and keeps any codeword plus its bit offset
inside one 64-bit window in the encoder (31 + 24 < 64)."""

# Symbols per chunk in the encoder: small enough that the ~10 temporaries stay in cache and are recycled
# by the allocator instead of being page-faulted in afresh, large enough to amortise the numpy call cost.
_CHUNK = 1 << 16


@dataclass(frozen=True, eq=False)
class HuffmanStream:
    """One Huffman-coded symbol stream: everything :func:`decode` needs besides nothing else.

    ``lengths[s]`` is the code length of symbol ``s`` (0 if unused), ``payload`` holds ``nbits`` bits of
    concatenated codewords (zero-padded to whole bytes) and ``count`` is the number of symbols.
    """

    lengths: npt.NDArray[np.uint8]
    payload: bytes
    nbits: int
    count: int


def code_lengths(counts: npt.ArrayLike, max_length: int = MAX_CODE_LENGTH) -> npt.NDArray[np.uint8]:
    """Optimal code length per symbol for the given symbol ``counts``, limited to ``max_length`` bits.

    Symbols with count 0 get length 0; a single used symbol gets length 1. Uses package-merge, vectorised
    per tree level (at most ``max_length`` numpy sorts over twice the number of used symbols), so it is
    both optimal and cheap even for alphabets of 64Ki symbols.
    """
    c = np.asarray(counts)
    if c.ndim != 1 or not (np.issubdtype(c.dtype, np.integer) or c.dtype == np.bool_):
        raise ValueError("counts must be a 1-D integer array")
    if isinstance(max_length, bool) or not 1 <= max_length <= MAX_CODE_LENGTH:
        raise ValueError(f"max_length must be in [1, {MAX_CODE_LENGTH}], got {max_length!r}")
    if c.size and int(c.min()) < 0:
        raise ValueError("counts must be non-negative")
    lengths = np.zeros(c.size, dtype=np.uint8)
    used = np.flatnonzero(c)
    n = used.size
    if n == 0:
        return lengths
    if n == 1:
        lengths[used] = 1
        return lengths
    if n > (1 << max_length):
        raise ValueError(f"{n} used symbols cannot be coded with codewords of at most {max_length} bits")

    # Leaves sorted by weight (ties by symbol, for determinism).
    order = np.argsort(c[used], kind="stable")
    leaves = c[used][order].astype(np.int64)
    depth = min(int(max_length), n - 1)  # no optimal code is deeper than n - 1

    # Level ``depth`` holds only the leaves; each shallower level merges the leaves with the pairs
    # ("packages") of the level below. Only "is this merged item a leaf" needs remembering: leaves
    # appear in weight order and packages are formed from consecutive pairs, so a selected prefix of a
    # level always means "the q lightest leaves plus the first p packages (= first 2p items below)".
    is_leaf_per_level: list[npt.NDArray[np.bool_]] = []
    items = leaves
    is_leaf_per_level.append(np.ones(n, dtype=np.bool_))
    for _ in range(depth - 1):
        k = items.size // 2
        packages = items[0 : 2 * k : 2] + items[1 : 2 * k : 2]
        merged = np.concatenate((leaves, packages))
        perm = np.argsort(merged, kind="stable")  # stable: a leaf wins a tie against a package
        items = merged[perm]
        is_leaf_per_level.append(perm < n)

    # Select the 2n - 2 lightest items of the shallowest level; a leaf's code length is the number of
    # levels in which it is selected.
    depth_of_rank = np.zeros(n, dtype=np.int64)
    take = 2 * n - 2
    for is_leaf in reversed(is_leaf_per_level):
        q = int(np.count_nonzero(is_leaf[:take]))
        depth_of_rank[:q] += 1
        take = 2 * (take - q)
    lengths[used[order]] = depth_of_rank
    return lengths


def encode(symbols: npt.ArrayLike, alphabet_size: int) -> HuffmanStream:
    """Huffman-code ``symbols`` (integers in ``[0, alphabet_size)``, flattened row-major).

    The code is the optimal canonical code for this very stream, limited to :data:`MAX_CODE_LENGTH` bits.
    """
    sym = _check_symbols(symbols, alphabet_size)
    counts = _histogram(sym, alphabet_size)
    lengths = code_lengths(counts)
    nbits = int(np.dot(counts, lengths.astype(np.int64)))
    payload = _write_codes(sym, lengths, _canonical_codes(lengths), nbits)
    lengths.setflags(write=False)
    return HuffmanStream(lengths=lengths, payload=payload, nbits=nbits, count=int(sym.size))


def decode(
    lengths: npt.ArrayLike,
    payload: bytes | bytearray | memoryview,
    nbits: int,
    count: int,
    *,
    symbols: npt.NDArray[np.integer] | None = None,
    dtype: npt.DTypeLike = np.int64,
) -> npt.NDArray[np.integer]:
    """Decode exactly ``count`` symbols from the first ``nbits`` bits of ``payload``.

    ``symbols[i]`` is what code ``i`` of ``lengths`` decodes to (default ``i``), and the result has
    ``dtype``, which must hold every symbol: a caller decoding a large stream over a small alphabet
    asks for a narrow one (on VGG-16's fc6, 13M index entries take 26 MB as uint16, not 104 MB).

    All inputs are untrusted: the code must be valid (lengths in range; complete, or a single symbol of
    length 1), ``count`` must be at most ``nbits`` (every symbol costs a bit) which must fit in
    ``payload``, and the ``nbits`` bits must hold exactly ``count`` whole codewords. Anything else raises
    :class:`SqcFormatError`. Memory is O(len(payload) + count) and time is linear: nothing here can hang.
    Bits of ``payload`` past ``nbits`` are ignored.
    """
    lens = _check_lengths(lengths)
    raw = bitpack.as_byte_view(payload)
    for name, value in (("nbits", nbits), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise SqcFormatError(f"Huffman {name} must be a non-negative integer, got {value!r}")
    nbits, count = int(nbits), int(count)
    if nbits > 8 * len(raw):
        raise SqcFormatError(f"Huffman payload truncated: {nbits} bits do not fit in {len(raw)} bytes")
    if count > nbits:
        raise SqcFormatError(f"{count} Huffman symbols cannot fit in {nbits} bits")
    used = np.flatnonzero(lens)
    if count == 0:
        if nbits:
            raise SqcFormatError(f"{nbits} Huffman payload bits hold no symbols")
        return np.zeros(0, dtype=dtype)
    if used.size == 0:
        raise SqcFormatError(f"{count} symbols to decode but the Huffman code has no symbols")
    names = used if symbols is None else np.asarray(symbols)[used]

    bits = bitarray(endian="big")
    bits.frombytes(raw[: (nbits + 7) // 8])
    del bits[nbits:]
    if used.size == 1:
        # The single codeword is "0": the payload is count zero bits (nbits == count checked here).
        if nbits != count or bits.any():
            raise SqcFormatError("single-symbol Huffman payload must be exactly one 0 bit per symbol")
        return np.full(count, names[0], dtype=dtype)

    codes = _canonical_codes(lens)
    pairs = zip(used, names, strict=True)
    tree = decodetree({int(name): int2ba(int(codes[s]), int(lens[s]), endian="big") for s, name in pairs})
    it = bits.decode(tree)
    try:
        out = np.fromiter(it, dtype=dtype, count=count)
        extra = next(it, None)
    except ValueError as exc:  # incomplete codeword at the end, or fewer than count symbols
        raise SqcFormatError(
            f"Huffman payload does not hold {count} whole codewords in {nbits} bits"
        ) from exc
    if extra is not None:
        raise SqcFormatError(f"Huffman payload holds more than {count} symbols in {nbits} bits")
    return out


def serialize(stream: HuffmanStream) -> bytes:
    """The compact byte form of ``stream`` (layout in the module docstring)."""
    lens = np.asarray(stream.lengths)
    used = np.flatnonzero(lens)
    if used.size == 0:
        if stream.count or stream.nbits:
            raise ValueError("a Huffman stream with symbols needs a non-empty code")
        return _varint(0)
    high = int(used[-1]) + 1
    table = lens[:high].astype(np.int64)
    lmin, lmax = int(table[used].min()), int(table[used].max())
    width = (lmax - lmin + 1).bit_length()
    fields = np.where(table > 0, table - lmin + 1, 0)
    parts = [_varint(high), bytes([(lmin - 1) | (width - 1) << 5]), bitpack.pack(fields, width, signed=False)]
    if used.size > 1:
        parts += [_varint(stream.nbits), bytes(stream.payload[: (stream.nbits + 7) // 8])]
    return b"".join(parts)


def deserialize(
    buf: bytes | bytearray | memoryview, alphabet_size: int, count: int, *, dtype: npt.DTypeLike = np.int64
) -> npt.NDArray[np.integer]:
    """Decode ``count`` symbols of an alphabet of ``alphabet_size`` from the whole of ``buf``, as
    ``dtype`` (which must hold ``alphabet_size - 1``).

    ``buf`` must be exactly one :func:`serialize` output; any inconsistency (including trailing bytes or
    non-canonical encodings, which only corruption produces) raises :class:`SqcFormatError`.
    """
    raw = bitpack.as_byte_view(buf)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise SqcFormatError(f"Huffman symbol count must be a non-negative integer, got {count!r}")
    count = int(count)
    high, pos = _read_varint(raw, 0)
    if high == 0:
        if pos != len(raw):
            raise SqcFormatError("trailing bytes after an empty Huffman stream", offset=pos)
        if count:
            raise SqcFormatError(f"empty Huffman stream cannot hold {count} symbols")
        return np.zeros(0, dtype=dtype)
    if high > alphabet_size:
        raise SqcFormatError(f"Huffman table covers {high} symbols, alphabet has {alphabet_size}", offset=0)
    if pos >= len(raw):
        raise SqcFormatError("Huffman stream truncated in the table header", offset=pos)
    hdr = raw[pos]
    lmin, width = (hdr & 31) + 1, (hdr >> 5) + 1
    if lmin > MAX_CODE_LENGTH or width > 5:
        raise SqcFormatError(f"invalid Huffman table header byte {hdr:#04x}", offset=pos)
    pos += 1
    table_bytes = bitpack.packed_size(high, width)
    if len(raw) - pos < table_bytes:
        raise SqcFormatError("Huffman stream truncated in the length table", offset=pos)
    fields = _table_fields(raw[pos : pos + table_bytes], high, width)
    if (high * width) % 8 and raw[pos + table_bytes - 1] >> ((high * width) % 8):
        raise SqcFormatError("non-zero padding bits after the Huffman length table", offset=pos)
    if fields[-1] == 0 or int(fields.max()).bit_length() != width or not (fields == 1).any():
        raise SqcFormatError("Huffman length table is not in canonical form", offset=pos)
    # The encoder gives a length only to symbols that occur, so a table listing more symbols than the
    # stream holds is corrupt. Checked before anything is built per symbol, so that work and memory
    # follow the symbol count, not a table that claims a huge alphabet.
    n_used = int(np.count_nonzero(fields))
    if n_used > max(1, count):
        raise SqcFormatError(
            f"Huffman table lists {n_used} symbols, more than the {count} symbols of the stream", offset=pos
        )
    used = np.flatnonzero(fields)
    lengths = fields[used].astype(np.int64) + (lmin - 1)  # the lengths of the used symbols, in order
    pos += table_bytes
    if int(lengths.max()) > MAX_CODE_LENGTH:
        raise SqcFormatError(f"Huffman code length above {MAX_CODE_LENGTH}", offset=pos - table_bytes)
    if used.size == 1:
        if lengths[0] != 1:
            raise SqcFormatError("a single-symbol Huffman code must have length 1", offset=pos - table_bytes)
        if pos != len(raw):
            raise SqcFormatError("trailing bytes after a single-symbol Huffman stream", offset=pos)
        return np.full(count, used[0], dtype=dtype)

    nbits, pos = _read_varint(raw, pos)
    if int(lengths.sum()) > nbits:  # every used symbol's codeword appears at least once
        raise SqcFormatError(
            f"Huffman table lists {used.size} symbols whose codewords do not all fit in {nbits} bits",
            offset=pos,
        )
    payload_bytes = (nbits + 7) // 8
    if len(raw) - pos != payload_bytes:
        raise SqcFormatError(
            f"Huffman payload of {nbits} bits needs {payload_bytes} bytes, {len(raw) - pos} remain",
            offset=pos,
        )
    if nbits % 8 and raw[-1] & (0xFF >> (nbits % 8)):
        raise SqcFormatError("non-zero padding bits after the Huffman payload", offset=len(raw) - 1)
    try:
        # Canonical codes depend only on the order of (length, symbol), which the compacted table keeps.
        return decode(lengths, raw[pos:], nbits, count, symbols=used, dtype=dtype)
    except SqcFormatError as exc:
        if exc.offset is not None:
            raise
        raise SqcFormatError(str(exc), offset=pos) from exc


def encoded_size_from_counts(counts: npt.ArrayLike) -> int:
    """Bytes :func:`serialize` produces for a stream with these per-symbol ``counts``, without encoding it.

    This is what a pass compares against plain bit packing to decide whether Huffman coding pays.
    """
    c = np.asarray(counts)
    lengths = code_lengths(c)
    used = np.flatnonzero(lengths)
    if used.size == 0:
        return 1
    high = int(used[-1]) + 1
    lmin, lmax = int(lengths[used].min()), int(lengths[used].max())
    size = len(_varint(high)) + 1 + bitpack.packed_size(high, (lmax - lmin + 1).bit_length())
    if used.size > 1:
        nbits = int(np.dot(c.astype(np.int64), lengths.astype(np.int64)))
        size += len(_varint(nbits)) + (nbits + 7) // 8
    return size


def encoded_size(symbols: npt.ArrayLike, alphabet_size: int) -> int:
    """``len(serialize(encode(symbols, alphabet_size)))``, computed from the histogram alone."""
    sym = _check_symbols(symbols, alphabet_size)
    return encoded_size_from_counts(_histogram(sym, alphabet_size))


def _histogram(sym: npt.NDArray[np.integer], alphabet_size: int) -> npt.NDArray[np.int64]:
    """``np.bincount`` in slices: it widens its input to intp, which on a 10M-entry uint32 stream is
    an 80 MB copy."""
    counts = np.zeros(alphabet_size, dtype=np.int64)
    for start in range(0, sym.size, _CHUNK):
        counts += np.bincount(sym[start : start + _CHUNK], minlength=alphabet_size)
    return counts


# --------------------------------------------------------------------------------------------- helpers


def _check_symbols(symbols: npt.ArrayLike, alphabet_size: int) -> npt.NDArray[np.integer]:
    if (
        isinstance(alphabet_size, bool)
        or not isinstance(alphabet_size, int | np.integer)
        or alphabet_size < 0
    ):
        raise ValueError(f"alphabet_size must be a non-negative integer, got {alphabet_size!r}")
    sym = np.asarray(symbols)
    if not np.issubdtype(sym.dtype, np.integer):
        if sym.size or sym.dtype != np.float64:  # np.asarray([]) is float64: accept the empty list
            raise ValueError(f"symbols must be integers, got dtype {sym.dtype}")
    sym = sym.ravel()
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) >= alphabet_size):
        raise ValueError(
            f"symbols must lie in [0, {alphabet_size}), got [{int(sym.min())}, {int(sym.max())}]"
        )
    # any integer dtype indexes the tables as it is: a uint32 stream of 10M entries is not widened
    return sym


def _check_lengths(lengths: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Validate a code-length table: 1-D integers in [0, 24] forming a complete or single-symbol code."""
    lens = np.asarray(lengths)
    if lens.ndim != 1 or not np.issubdtype(lens.dtype, np.integer):
        raise SqcFormatError("Huffman code lengths must be a 1-D integer array")
    if lens.size and (int(lens.min()) < 0 or int(lens.max()) > MAX_CODE_LENGTH):
        raise SqcFormatError(f"Huffman code lengths must lie in [0, {MAX_CODE_LENGTH}]")
    lens = lens.astype(np.int64)
    used = lens[lens > 0]
    if used.size == 1:
        if used[0] != 1:
            raise SqcFormatError("a single-symbol Huffman code must have length 1")
    elif used.size > 1:
        # Kraft sum in exact integer arithmetic: sum 2^(24 - l) must equal 2^24 (a complete code).
        kraft = int(np.sum(np.left_shift(np.int64(1), MAX_CODE_LENGTH - used)))
        if kraft != 1 << MAX_CODE_LENGTH:
            kind = "over-subscribed" if kraft > 1 << MAX_CODE_LENGTH else "incomplete"
            raise SqcFormatError(f"Huffman code lengths form an {kind} prefix code")
    return lens


def _canonical_codes(lengths: npt.NDArray[np.integer]) -> npt.NDArray[np.uint64]:
    """Canonical codeword (as an integer, first bit most significant) of every symbol; 0 where unused."""
    lens = lengths.astype(np.int64)
    codes = np.zeros(lens.size, dtype=np.uint64)
    used = np.flatnonzero(lens)
    if used.size == 0:
        return codes
    by_len = used[np.argsort(lens[used], kind="stable")]  # sorted by (length, symbol)
    sorted_lens = lens[by_len]
    per_len = np.bincount(sorted_lens, minlength=MAX_CODE_LENGTH + 1)
    first_code = np.zeros(MAX_CODE_LENGTH + 1, dtype=np.int64)
    for length in range(2, MAX_CODE_LENGTH + 1):  # the DEFLATE recurrence, one step per length
        first_code[length] = (first_code[length - 1] + per_len[length - 1]) << 1
    first_index = np.concatenate(([0], np.cumsum(per_len)[:-1]))
    rank = np.arange(used.size) - first_index[sorted_lens]
    codes[by_len] = (first_code[sorted_lens] + rank).astype(np.uint64)
    return codes


def _write_codes(
    sym: npt.NDArray[np.integer], lengths: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint64], nbits: int
) -> bytes:
    """Concatenate the codewords of ``sym`` MSB-first, without a Python loop per symbol.

    Each codeword (<= 24 bits) starting at stream bit ``s`` lies inside the 64-bit window made of 32-bit
    output words ``s >> 5`` and ``(s >> 5) + 1`` (offset + length <= 31 + 24). Shift it into place in that
    window; codewords never overlap, so summing the windows that share an output word equals OR-ing them,
    and ``np.add.reduceat`` over the runs of equal word index does that in C.
    """
    nwords = (nbits + 31) // 32
    words = np.zeros(nwords + 2, dtype=np.uint64)  # +2: the last window may reach one word past the end
    len_table = lengths.astype(np.uint32)
    base = 0  # stream bit offset of the current chunk
    for start in range(0, sym.size, _CHUNK):
        chunk = sym[start : start + _CHUNK]
        lens = np.take(len_table, chunk)
        vals = np.take(codes, chunk)
        word0, offset0 = divmod(base, 32)
        ends = np.cumsum(lens, dtype=np.uint32)  # a chunk spans < 2^21 bits: uint32 is ample
        base += int(ends[-1])
        ends += np.uint32(offset0)
        starts = ends - lens
        word = starts >> np.uint32(5)
        windows = vals << (np.uint32(64) - (starts & np.uint32(31)) - lens).astype(np.uint64)
        run_starts = np.flatnonzero(np.concatenate(([True], word[1:] != word[:-1])))
        sums = np.add.reduceat(windows, run_starts)
        first_word = word[run_starts].astype(np.int64) + word0
        words[first_word] += sums >> np.uint64(32)
        words[first_word + 1] += sums & np.uint64(0xFFFFFFFF)
    return words[:nwords].astype(">u4").tobytes()[: (nbits + 7) // 8]


def _table_fields(raw: memoryview, high: int, width: int) -> npt.NDArray[np.uint8]:
    """The ``high`` ``width``-bit fields of a length table as uint8 (about 10 bytes of memory per table
    byte, where :func:`bitpack.unpack`'s int64 result would take 64)."""
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    fields = np.zeros(high, dtype=np.uint8)
    for j in range(width):
        fields |= bits[j : high * width : width] << np.uint8(j)
    return fields


def _read_varint(raw: memoryview, pos: int) -> tuple[int, int]:
    """Read a minimal unsigned LEB128 below 2^63 at ``pos``; return ``(value, next position)``."""
    reader = Reader(raw[pos:], pos, "Huffman stream")
    value = reader.varint((1 << 63) - 1)
    return value, pos + reader.pos
