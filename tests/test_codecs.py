"""Round-trip, layout-pinning and corruption tests for the leaf codecs in ``sqc.formats``.

The decoders face untrusted bytes, so besides round trips every corruption test asserts the one contract
that matters to the container reader: a bad input raises ``SqcFormatError`` (never another exception,
never a hang, never a silently wrong-sized result).
"""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sqc.errors import SqcFormatError
from sqc.formats import bitpack, huffman, sparse_index

SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------ bitpack


def _reference_pack(values: list[int], bits: int) -> bytes:
    """Bit-by-bit LSB-first packing, the definition the vectorised code must match."""
    out = bytearray((len(values) * bits + 7) // 8)
    for i, v in enumerate(values):
        field = v & ((1 << bits) - 1)
        for b in range(bits):
            if field >> b & 1:
                k = i * bits + b
                out[k // 8] |= 1 << (k % 8)
    return bytes(out)


@st.composite
def packable(draw: st.DrawFn) -> tuple[list[int], int, bool]:
    bits = draw(st.integers(1, 32))
    signed = draw(st.booleans())
    lo, hi = bitpack.value_range(bits, signed)
    values = draw(st.lists(st.integers(lo, hi), max_size=70))
    return values, bits, signed


@SETTINGS
@given(packable())
def test_bitpack_roundtrip_matches_reference(case: tuple[list[int], int, bool]) -> None:
    values, bits, signed = case
    data = bitpack.pack(np.array(values, dtype=np.int64), bits, signed)
    assert data == _reference_pack(values, bits)
    assert len(data) == bitpack.packed_size(len(values), bits)
    out = bitpack.unpack(data, len(values), bits, signed)
    assert out.dtype == np.int64
    assert out.tolist() == values


@pytest.mark.parametrize("bits", range(1, 33))
@pytest.mark.parametrize("signed", [False, True])
def test_bitpack_all_widths_large(bits: int, signed: bool) -> None:
    # Crosses the internal chunk size and leaves a ragged tail, with the extreme values present.
    lo, hi = bitpack.value_range(bits, signed)
    rng = np.random.default_rng(bits)
    values = rng.integers(lo, hi, size=150_003, endpoint=True)
    values[:2] = [lo, hi]
    data = bitpack.pack(values, bits, signed)
    assert len(data) == bitpack.packed_size(values.size, bits)
    np.testing.assert_array_equal(bitpack.unpack(memoryview(data), values.size, bits, signed), values)
    # The tail of the last byte is zero padding.
    if (values.size * bits) % 8:
        assert data[-1] >> ((values.size * bits) % 8) == 0


def test_bitpack_layout_pinned() -> None:
    assert bitpack.pack(np.array([5, 3]), 3, signed=False) == bytes([0b011_101])
    assert bitpack.pack(np.array([1, 0, 0, 0, 0, 0, 0, 0, 1]), 1, signed=False) == b"\x01\x01"
    assert bitpack.pack(np.array([-1, 0]), 4, signed=True) == b"\x0f"
    assert bitpack.pack(np.array([0x1234]), 16, signed=False) == b"\x34\x12"
    assert bitpack.pack(np.array([], dtype=np.int64), 7, signed=True) == b""
    assert bitpack.pack(np.array([True, False, True]), 1, signed=False) == b"\x05"


@pytest.mark.parametrize(
    ("values", "bits", "signed"),
    [
        ([8], 3, False),
        ([-1], 3, False),
        ([4], 3, True),
        ([-5], 3, True),
        ([2**32], 32, False),
        ([2**63], 32, False),
    ],
)
def test_bitpack_rejects_out_of_range(values: list[int], bits: int, signed: bool) -> None:
    with pytest.raises(ValueError):
        bitpack.pack(np.array(values, dtype=np.uint64 if values[0] >= 2**63 else np.int64), bits, signed)


@pytest.mark.parametrize("bits", [0, 33, -1])
def test_bitpack_rejects_bad_width(bits: int) -> None:
    with pytest.raises(ValueError):
        bitpack.pack(np.array([0]), bits, signed=False)
    with pytest.raises(SqcFormatError):
        bitpack.unpack(b"\x00" * 8, 1, bits, signed=False)


def test_bitpack_rejects_float_input() -> None:
    with pytest.raises(ValueError):
        bitpack.pack(np.array([1.0]), 8, signed=False)


@pytest.mark.parametrize("bits", [1, 3, 8, 13, 16, 31, 32])
def test_bitpack_truncated_every_length(bits: int) -> None:
    count = 37
    data = bitpack.pack(np.arange(count) % 2, bits, signed=False)
    for cut in range(len(data)):
        with pytest.raises(SqcFormatError):
            bitpack.unpack(data[:cut], count, bits, signed=False)


@pytest.mark.parametrize("count", [-1, 2**62, 10**30, True, 1.5, "3"])
def test_bitpack_absurd_count(count: object) -> None:
    with pytest.raises(SqcFormatError):
        bitpack.unpack(b"\xff" * 16, count, 5, signed=True)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ huffman


def _huffman_cost(counts: np.ndarray) -> int:
    """Total bits of an optimal (unlimited) Huffman code: the sum of all internal node weights."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def _kraft(lengths: np.ndarray) -> float:
    used = lengths[lengths > 0].astype(np.float64)
    return float(np.sum(2.0**-used))


counts_strategy = st.lists(st.integers(0, 10_000), min_size=1, max_size=300).map(np.array)


@SETTINGS
@given(counts_strategy)
def test_code_lengths_optimal_and_complete(counts: np.ndarray) -> None:
    lengths = huffman.code_lengths(counts)
    assert lengths.dtype == np.uint8
    assert ((lengths > 0) == (counts > 0)).all()
    used = int(np.count_nonzero(counts))
    if used == 1:
        assert lengths.max() == 1
    elif used > 1:
        assert _kraft(lengths) == 1.0
        assert int(np.dot(counts, lengths)) == _huffman_cost(counts)


@SETTINGS
@given(counts_strategy, st.integers(1, 10))
def test_code_lengths_respects_limit(counts: np.ndarray, max_length: int) -> None:
    used = int(np.count_nonzero(counts))
    assume(used <= 1 << max_length)
    lengths = huffman.code_lengths(counts, max_length)
    assert int(lengths.max(initial=0)) <= max_length
    if used > 1:
        assert _kraft(lengths) == 1.0
        # Never better than the unconstrained optimum.
        assert int(np.dot(counts, lengths)) >= _huffman_cost(counts)


def test_code_lengths_fibonacci_is_limited() -> None:
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)
    lengths = huffman.code_lengths(counts)
    assert int(lengths.max()) == huffman.MAX_CODE_LENGTH
    assert _kraft(lengths) == 1.0
    assert int(huffman.code_lengths(counts, 8).max()) == 8
    with pytest.raises(ValueError):
        huffman.code_lengths(counts, 5)  # 40 symbols need at least 6 bits


def test_code_lengths_edge_cases() -> None:
    assert huffman.code_lengths(np.zeros(5, dtype=np.int64)).tolist() == [0] * 5
    assert huffman.code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0]
    assert huffman.code_lengths(np.array([3, 3])).tolist() == [1, 1]
    assert huffman.code_lengths(np.full(64, 10)).tolist() == [6] * 64
    with pytest.raises(ValueError):
        huffman.code_lengths(np.array([1, -1]))
    with pytest.raises(ValueError):
        huffman.code_lengths(np.array([1, 1]), 25)


@st.composite
def symbol_streams(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    alphabet = draw(st.integers(1, 300))
    kind = draw(st.sampled_from(["uniform", "skewed", "single", "few"]))
    n = draw(st.integers(0, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "uniform":
        symbols = rng.integers(0, alphabet, size=n)
    elif kind == "skewed":
        p = rng.pareto(0.7, size=alphabet) + 1e-9
        symbols = rng.choice(alphabet, size=n, p=p / p.sum())
    elif kind == "single":
        symbols = np.full(n, rng.integers(0, alphabet))
    else:
        symbols = rng.choice(rng.integers(0, alphabet, size=2), size=n)
    return symbols.astype(np.int64), alphabet


@SETTINGS
@given(symbol_streams())
def test_huffman_roundtrip(case: tuple[np.ndarray, int]) -> None:
    symbols, alphabet = case
    stream = huffman.encode(symbols, alphabet)
    assert stream.count == symbols.size
    assert stream.lengths.shape == (alphabet,)
    assert len(stream.payload) == (stream.nbits + 7) // 8
    assert stream.nbits == int(np.dot(np.bincount(symbols, minlength=alphabet), stream.lengths))
    out = huffman.decode(stream.lengths, stream.payload, stream.nbits, stream.count)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, symbols)

    blob = huffman.serialize(stream)
    assert len(blob) == huffman.encoded_size(symbols, alphabet)
    np.testing.assert_array_equal(huffman.deserialize(blob, alphabet, symbols.size), symbols)
    np.testing.assert_array_equal(
        huffman.deserialize(memoryview(bytearray(blob)), alphabet, symbols.size), symbols
    )
    narrow = np.uint8 if alphabet <= 256 else np.uint16  # what the tensor reader asks for
    out = huffman.deserialize(blob, alphabet, symbols.size, dtype=narrow)
    assert out.dtype == narrow
    np.testing.assert_array_equal(out, symbols)
    names = np.arange(alphabet)[::-1] * 3  # codes decode to any symbols the caller names
    out = huffman.decode(stream.lengths, stream.payload, stream.nbits, stream.count, symbols=names)
    np.testing.assert_array_equal(out, names[symbols])


def test_huffman_large_skewed_roundtrip() -> None:
    rng = np.random.default_rng(0)
    p = 0.8 ** np.arange(64)
    symbols = rng.choice(64, size=400_000, p=p / p.sum())
    stream = huffman.encode(symbols, 64)
    np.testing.assert_array_equal(
        huffman.decode(stream.lengths, stream.payload, stream.nbits, symbols.size), symbols
    )
    np.testing.assert_array_equal(huffman.deserialize(huffman.serialize(stream), 64, symbols.size), symbols)


def test_huffman_long_codes_roundtrip() -> None:
    # Fibonacci counts drive codes to the 24-bit limit: exercises codewords straddling 32-bit words.
    fib = [1, 1]
    while len(fib) < 27:
        fib.append(fib[-1] + fib[-2])
    symbols = np.repeat(np.arange(27), fib)  # unconstrained depth 26
    np.random.default_rng(1).shuffle(symbols)
    stream = huffman.encode(symbols, 27)
    assert int(stream.lengths.max()) == huffman.MAX_CODE_LENGTH
    np.testing.assert_array_equal(huffman.deserialize(huffman.serialize(stream), 27, symbols.size), symbols)


def test_huffman_bit_order_and_layout_pinned() -> None:
    # counts 2,4,1,1 -> lengths 2,1,3,3 -> canonical codes: 1 -> 0, 0 -> 10, 2 -> 110, 3 -> 111.
    symbols = np.array([1, 0, 2, 3, 1, 1, 0, 1])
    stream = huffman.encode(symbols, 4)
    assert stream.lengths.tolist() == [2, 1, 3, 3]
    bits = "0" + "10" + "110" + "111" + "0" + "0" + "10" + "0"
    assert stream.nbits == len(bits) == 14
    assert stream.payload == int(bits.ljust(16, "0"), 2).to_bytes(2, "big")
    # H=4; hdr: lmin=1 -> 0, w=2 -> 1<<5; fields 2,1,3,3 packed LSB-first in 2 bits; nbits=14; payload.
    assert huffman.serialize(stream) == bytes([4, 0x20, 0b11_11_01_10, 14]) + stream.payload


def test_huffman_empty_and_single_symbol_layout() -> None:
    empty = huffman.encode(np.array([], dtype=np.int64), 16)
    assert empty.nbits == 0 and empty.count == 0 and empty.payload == b""
    assert huffman.serialize(empty) == b"\x00"
    assert huffman.deserialize(b"\x00", 16, 0).size == 0
    assert huffman.decode(empty.lengths, b"", 0, 0).size == 0

    single = huffman.encode(np.full(1000, 5), 16)
    assert single.nbits == 1000 and single.lengths[5] == 1
    blob = huffman.serialize(single)
    assert blob == bytes([6, 0x00, 0b100000])  # H=6, lmin=1/w=1, fields 0,0,0,0,0,1: no payload
    np.testing.assert_array_equal(huffman.deserialize(blob, 16, 1000), np.full(1000, 5))
    np.testing.assert_array_equal(
        huffman.decode(single.lengths, single.payload, 1000, 1000), np.full(1000, 5)
    )


def test_huffman_encode_rejects_bad_symbols() -> None:
    with pytest.raises(ValueError):
        huffman.encode(np.array([0, 4]), 4)
    with pytest.raises(ValueError):
        huffman.encode(np.array([-1]), 4)
    with pytest.raises(ValueError):
        huffman.encode(np.array([0.5]), 4)


def _sample_blob(n: int = 300, alphabet: int = 20, seed: int = 3) -> tuple[bytes, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    p = 0.7 ** np.arange(alphabet)
    symbols = rng.choice(alphabet, size=n, p=p / p.sum())
    return huffman.serialize(huffman.encode(symbols, alphabet)), symbols, alphabet


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_huffman_truncated_at_every_offset(seed: int) -> None:
    blob, symbols, alphabet = _sample_blob(seed=seed)
    for cut in range(len(blob)):
        with pytest.raises(SqcFormatError):
            huffman.deserialize(blob[:cut], alphabet, symbols.size)
    for blob2, n in ((huffman.serialize(huffman.encode(np.full(50, 3), 8)), 50), (b"\x00", 0)):
        for cut in range(len(blob2)):
            with pytest.raises(SqcFormatError):
                huffman.deserialize(blob2[:cut], 8, n)


def test_huffman_trailing_garbage_and_wrong_count() -> None:
    blob, symbols, alphabet = _sample_blob()
    for bad in (blob + b"\x00", blob + b"\xff", b"\x00\x00"):
        with pytest.raises(SqcFormatError):
            huffman.deserialize(bad, alphabet, symbols.size)
    for count in (symbols.size - 1, symbols.size + 1, 0, 10**18, -1):
        with pytest.raises(SqcFormatError):
            huffman.deserialize(blob, alphabet, count)
    with pytest.raises(SqcFormatError):
        huffman.deserialize(blob, alphabet - 5, symbols.size)  # table wider than the alphabet


def test_huffman_every_bit_flip_is_caught_or_harmless() -> None:
    """A flipped bit either raises SqcFormatError or decodes to ``count`` in-range symbols.

    (Without a checksum some flips -- e.g. swapping two equal-length codewords -- are undetectable;
    the container's checksum is responsible for those.)
    """
    blob, symbols, alphabet = _sample_blob(n=120)
    caught = 0
    for i in range(len(blob) * 8):
        bad = bytearray(blob)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            out = huffman.deserialize(bytes(bad), alphabet, symbols.size)
        except SqcFormatError:
            caught += 1
            continue
        assert out.shape == symbols.shape
        assert out.min() >= 0 and out.max() < alphabet
    assert caught > 0
    # Every flip in the header and length table changes a canonical field or the Kraft sum.
    table_end = 2 + bitpack.packed_size(blob[0], (blob[1] >> 5) + 1)
    for i in range(table_end * 8):
        bad = bytearray(blob)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(SqcFormatError):
            huffman.deserialize(bytes(bad), alphabet, symbols.size)


@SETTINGS
@given(st.binary(max_size=64), st.integers(0, 300), st.integers(1, 70))
def test_huffman_deserialize_fuzz(blob: bytes, count: int, alphabet: int) -> None:
    try:
        out = huffman.deserialize(blob, alphabet, count)
    except SqcFormatError:
        return
    assert out.shape == (count,)
    assert count == 0 or (out.min() >= 0 and out.max() < alphabet)


@pytest.mark.parametrize(
    "lengths",
    [
        [1, 1, 1],  # over-subscribed
        [1, 2],  # incomplete
        [2, 2, 2],  # incomplete
        [2],  # single symbol must have length 1
        [25, 25],  # too long
        [-1, 1, 1],  # negative
    ],
)
def test_huffman_decode_rejects_invalid_lengths(lengths: list[int]) -> None:
    with pytest.raises(SqcFormatError):
        huffman.decode(np.array(lengths), b"\x00" * 4, 8, 4)


def test_huffman_decode_rejects_inconsistent_sizes() -> None:
    symbols = np.array([0, 1, 2, 2, 2, 1, 0, 2])
    s = huffman.encode(symbols, 3)
    ok = huffman.decode(s.lengths, s.payload, s.nbits, s.count)
    np.testing.assert_array_equal(ok, symbols)
    bad_cases = [
        (s.payload, s.nbits + 8, s.count),  # more bits than the payload has
        (s.payload, s.nbits, s.count + 1),  # one symbol short
        (s.payload, s.nbits, s.count - 1),  # bits left over
        (s.payload, s.nbits - 1, s.count),  # codeword cut
        (s.payload, 3, 10),  # more symbols than bits
        (s.payload, s.nbits, 10**18),  # absurd count
        (s.payload, -1, 0),
        (s.payload, s.nbits, -1),
        (b"", 0, 1),
    ]
    for payload, nbits, count in bad_cases:
        with pytest.raises(SqcFormatError):
            huffman.decode(s.lengths, payload, nbits, count)
    with pytest.raises(SqcFormatError):
        huffman.decode(np.array([[1, 1]]), s.payload, s.nbits, s.count)
    with pytest.raises(SqcFormatError):
        huffman.decode(np.array([1.0, 1.0]), s.payload, s.nbits, s.count)
    with pytest.raises(SqcFormatError):  # an invalid codeword for a single-symbol code
        huffman.decode(np.array([0, 1]), b"\x80", 2, 2)
    with pytest.raises(SqcFormatError):  # empty code but symbols asked for
        huffman.decode(np.array([0, 0]), b"\x00", 2, 2)


def test_huffman_deserialize_rejects_non_canonical_table() -> None:
    blob, symbols, alphabet = _sample_blob()
    # Non-minimal varint for H.
    with pytest.raises(SqcFormatError):
        huffman.deserialize(bytes([blob[0] | 0x80, 0]) + blob[1:], alphabet, symbols.size)
    # Empty table with symbols asked for, and an over-long varint.
    with pytest.raises(SqcFormatError):
        huffman.deserialize(b"\x00", alphabet, 3)
    with pytest.raises(SqcFormatError):
        huffman.deserialize(b"\xff" * 11, alphabet, 3)


# ------------------------------------------------------------------------------------------- sparse index


def _reference_entries(mask: np.ndarray, index_bits: int) -> list[int]:
    m = (1 << index_bits) - 1
    out: list[int] = []
    gap = 0
    for kept in mask.ravel():
        if kept:
            out += [m] * (gap // m) + [gap % m]
            gap = 0
        else:
            gap += 1
    return out


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 2000))
    kind = draw(st.sampled_from(["random", "sparse", "all", "none", "runs"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":
        return rng.random(n) < draw(st.floats(0, 1))
    if kind == "sparse":
        return rng.random(n) < 0.01
    if kind == "all":
        return np.ones(n, dtype=bool)
    if kind == "none":
        return np.zeros(n, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    if n:
        mask[rng.integers(0, n, size=3)] = True  # a few kept weights separated by long runs
    return mask


@SETTINGS
@given(masks(), st.integers(1, 16))
def test_sparse_index_roundtrip(mask: np.ndarray, index_bits: int) -> None:
    entries = sparse_index.encode_gaps(mask, index_bits)
    assert entries.dtype == np.uint32
    assert entries.tolist() == _reference_entries(mask, index_bits)
    assert sparse_index.entry_count(mask, index_bits) == entries.size
    m = (1 << index_bits) - 1
    assert entries.size == 0 or entries[-1] != m  # no trailing filler
    positions = sparse_index.decode_positions(entries, index_bits, mask.size)
    assert positions.dtype == np.int64
    np.testing.assert_array_equal(positions, np.flatnonzero(mask))


def test_sparse_index_semantics_pinned() -> None:
    mask = np.zeros(20, dtype=bool)
    mask[[0, 1, 9, 17]] = True
    # M = 3: gaps 0, 0, 7 (= 3 + 3 + 1), 7 (= 3 + 3 + 1)
    assert sparse_index.encode_gaps(mask, 2).tolist() == [0, 0, 3, 3, 1, 3, 3, 1]
    # index_bits = 1: M = 1, a filler per skipped position and a 0 per weight.
    assert sparse_index.encode_gaps(np.array([0, 0, 1, 1, 0]), 1).tolist() == [1, 1, 0, 0]
    # A gap of exactly M is a filler then 0; trailing zeros are not written.
    assert sparse_index.encode_gaps(np.array([0, 0, 0, 1, 0, 0]), 2).tolist() == [3, 0]
    assert sparse_index.encode_gaps(np.zeros((3, 4), dtype=bool), 4).size == 0
    # 2-D masks are flattened row-major.
    mask2d = np.array([[0, 1], [1, 0]], dtype=bool)
    assert sparse_index.encode_gaps(mask2d, 4).tolist() == [1, 0]


def test_sparse_index_long_gaps_small_width() -> None:
    mask = np.zeros(1_000_000, dtype=bool)
    mask[[5, 300_000, 999_999]] = True
    for index_bits in (1, 2, 3, 8):
        entries = sparse_index.encode_gaps(mask, index_bits)
        np.testing.assert_array_equal(
            sparse_index.decode_positions(entries, index_bits, mask.size), np.flatnonzero(mask)
        )


@SETTINGS
@given(masks(), st.sets(st.integers(1, 20), min_size=1, max_size=8))
def test_best_index_bits_is_argmin(mask: np.ndarray, candidates: set[int]) -> None:
    best = sparse_index.best_index_bits(mask, candidates)
    costs = {b: len(_reference_entries(mask, b)) * b for b in sorted(candidates)}
    assert costs[best] == min(costs.values())
    assert best == min(b for b, c in costs.items() if c == costs[best])


def test_best_index_bits_custom_cost_and_default() -> None:
    mask = np.zeros(10_000, dtype=bool)
    mask[::50] = True  # gaps of 49: 6 bits hold them without fillers
    assert sparse_index.best_index_bits(mask) == 6
    # A cost that ignores width prefers the fewest entries: any width >= 6 ties, smallest wins.
    assert sparse_index.best_index_bits(mask, range(1, 17), cost=lambda n, b: n) == 6
    assert sparse_index.best_index_bits(np.zeros(10, dtype=bool), [4, 2, 9]) == 2
    with pytest.raises(ValueError):
        sparse_index.best_index_bits(mask, [])
    with pytest.raises(ValueError):
        sparse_index.best_index_bits(mask, [0, 4])


@pytest.mark.parametrize(
    ("entries", "index_bits", "numel"),
    [
        ([4], 2, 100),  # entry above M
        ([-1], 2, 100),  # negative entry
        ([0, 0, 0], 2, 2),  # position past the end
        ([3, 3, 0], 2, 6),  # position == numel
        ([0, 3], 2, 100),  # trailing filler
        ([3], 2, 100),  # only a filler
        ([0] * 5, 4, 4),  # more entries than elements
        ([2**32 - 2] * 3, 32, 2**33),  # large but valid entries, past the end
        ([0], 0, 10),  # bad width
        ([0], 33, 10),  # bad width
        ([0], 4, -1),  # bad numel
    ],
)
def test_sparse_index_decode_rejects(entries: list[int], index_bits: int, numel: int) -> None:
    with pytest.raises(SqcFormatError):
        sparse_index.decode_positions(np.array(entries, dtype=np.int64), index_bits, numel)


def test_sparse_index_decode_rejects_bad_arrays() -> None:
    with pytest.raises(SqcFormatError):
        sparse_index.decode_positions(np.array([[0, 1]]), 4, 10)
    with pytest.raises(SqcFormatError):
        sparse_index.decode_positions(np.array([0.0]), 4, 10)
    assert sparse_index.decode_positions(np.array([], dtype=np.uint32), 4, 0).size == 0
    assert sparse_index.decode_positions([], 4, 0).size == 0


@SETTINGS
@given(st.lists(st.integers(0, 20), max_size=50), st.integers(1, 4), st.integers(0, 300))
def test_sparse_index_decode_fuzz_is_bijective(entries: list[int], index_bits: int, numel: int) -> None:
    """Any accepted entry stream is exactly what the encoder writes for the decoded mask."""
    arr = np.array(entries, dtype=np.int64)
    try:
        positions = sparse_index.decode_positions(arr, index_bits, numel)
    except SqcFormatError:
        return
    assert np.all(np.diff(positions) > 0)
    assert positions.size == 0 or (positions[0] >= 0 and positions[-1] < numel)
    mask = np.zeros(numel, dtype=bool)
    mask[positions] = True
    assert sparse_index.encode_gaps(mask, index_bits).tolist() == entries


def test_bitpack_and_sparse_index_compose() -> None:
    """The intended use: entries bit-packed at the chosen width, read back through unpack()."""
    rng = np.random.default_rng(7)
    mask = rng.random(50_000) < 0.05
    bits = sparse_index.best_index_bits(mask)
    entries = sparse_index.encode_gaps(mask, bits)
    blob = bitpack.pack(entries, bits, signed=False)
    back = bitpack.unpack(blob, entries.size, bits, signed=False)
    np.testing.assert_array_equal(sparse_index.decode_positions(back, bits, mask.size), np.flatnonzero(mask))
