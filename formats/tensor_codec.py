"""Encoding one :class:`~sqc.ir.records.TensorState` as a tensor section, and decoding it back exactly.

The layout is specified in ``FORMAT.md`` (section "Tensor sections"); in short: a codec byte in the
section table (raw fp32, fixed-point codes, codebook + codes), a small codec header (format, fraction
lengths, codebook), then the *layout*: dense, or Deep Compression's relative sparse index, each stream
either bit-packed or canonical-Huffman coded, whichever is smaller when the tensor asks for Huffman;
or, when the tensor asks for ``rans``, the context-coded layout (:mod:`~sqc.formats.rans`: mask and
codes in one context-adaptive binary rANS stream) if that is the smallest. Decoding validates every
field before use and gives back a record whose ``decode()`` is bit-identical to the encoded one's.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sqc.errors import SqcFormatError
from sqc.formats import bitpack, huffman, rans, sparse_index
from sqc.formats.binio import Reader, Writer, varint
from sqc.ir.records import CODE_DTYPE, FixedPoint, RecordVersion, Role, TensorState, all_finite, index_dtype

RAW_F32, FIXED, CODEBOOK, RAW_TYPED = 0, 1, 2, 3
CODEC_NAMES = {RAW_F32: "raw-f32", FIXED: "fixed", CODEBOOK: "codebook", RAW_TYPED: "raw-typed"}
TYPED_DTYPES: dict[int, torch.dtype] = {
    1: torch.float64,
    2: torch.float16,
    3: torch.bfloat16,
    4: torch.int64,
    5: torch.int32,
    6: torch.int16,
    7: torch.int8,
    8: torch.uint8,
    9: torch.bool,
}
"""Codec 3 (format 1.3): a buffer kept exactly in a dtype other than float32 — position ids (int64),
attention masks (bool), lookup tables. The codec header is one byte, the dtype's number here; the
values follow, little-endian, dense and uncoded: such buffers are small and never compressed."""
TYPED_IDS = {dtype: number for number, dtype in TYPED_DTYPES.items()}

SPARSE, VALUES_HUFFMAN, INDEX_HUFFMAN, WANTS_HUFFMAN = 1, 2, 4, 8
CONTEXT_CODED, WANTS_RANS = 16, 32
"""Format 1.2: the context-coded layout, and "the tensor asked for rans" (a 1.1 reader rejects both
as unknown layout flags)."""
FIXED_PER_CHANNEL, FIXED_SCALED = 1, 2
"""Fixed-point header flags: one fraction length per output channel; and (format 1.4) a step
multiplier byte after the fraction lengths, one per entry (``value = code * mult * 2**-frac``)."""
KNOWN_FLAGS = SPARSE | VALUES_HUFFMAN | INDEX_HUFFMAN | WANTS_HUFFMAN | CONTEXT_CODED | WANTS_RANS
MAX_CODEBOOK = 1 << 16
BOOK_DELTA = 1
"""Codebook mode 1 (format 1.2): float32 centroids as deltas of order-preserving integer keys (see
:func:`encode_float_deltas`). k-means centroids come out sorted, so neighbours are close: ~21 instead of
32 bits each, which matters where a 256-entry codebook outweighs the codes of a small layer."""
INDEX_BITS = range(1, 17)


@dataclass
class Breakdown:
    """Bytes of one tensor section by component, for ``inspect``."""

    header: int = 0
    codebook: int = 0
    index: int = 0
    values: int = 0
    layout: str = "dense"
    index_bits: int = 0
    kept: int = 0
    streams: dict[str, str] = field(default_factory=dict)
    mask_model: int = 0
    """The context-coded mask model (format 1.5 adds 1): the writer's cue for the file's version."""

    @property
    def total(self) -> int:
        return self.header + self.codebook + self.index + self.values


def _symbols(state: TensorState, positions: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """Codes as unsigned symbols (only those at ``positions`` when given), the alphabet size, and the
    packed width."""
    assert state.codes is not None
    codes = state.codes.flatten().numpy()
    if positions is not None:  # gather first: the offset below then copies the kept codes only
        codes = codes.take(positions)
    if state.codebook is not None:
        k = state.codebook.numel()
        return codes, k, max(1, math.ceil(math.log2(k)))
    assert state.fmt is not None
    return codes - state.fmt.qmin, 1 << state.fmt.bits, state.fmt.bits


def choose_stream(symbols: np.ndarray, alphabet: int, width: int, allow_huffman: bool) -> tuple[bytes, bool]:
    """Packed or Huffman-coded bytes of a symbol stream, whichever is smaller (ties: packed). Both sizes
    are known without building either stream (the Huffman one from the symbol counts), so only the
    chosen one is built."""
    if not allow_huffman or symbols.size == 0:
        return bitpack.pack(symbols, width, False), False
    counts = np.bincount(symbols, minlength=alphabet)
    if huffman.encoded_size_from_counts(counts) < bitpack.packed_size(symbols.size, width):
        return huffman.serialize(huffman.encode(symbols, alphabet)), True
    return bitpack.pack(symbols, width, False), False


def _index_bits_for(gaps: np.ndarray, allow_huffman: bool) -> int:
    """Width of relative-index entries: least packed size, or least Huffman-coded size.

    Works on the histogram of gap lengths (:func:`~sqc.formats.sparse_index.gaps_of`), computed once: a
    gap ``g`` becomes ``g // M`` fillers and one entry ``g % M``, so every candidate width costs
    O(longest gap), not O(weights).
    """
    if gaps.size == 0:
        return 1
    histogram = np.bincount(gaps).astype(np.int64)
    lengths = np.arange(histogram.size)
    best_bits, best_cost = 1, math.inf
    for bits in INDEX_BITS:
        top = (1 << bits) - 1
        fillers = int((histogram * (lengths // top)).sum())
        if allow_huffman:
            padded = np.zeros(-(-histogram.size // top) * top, dtype=np.int64)
            padded[: histogram.size] = histogram
            counts = np.zeros(top + 1, dtype=np.int64)
            counts[:top] = padded.reshape(-1, top).sum(axis=0)
            counts[top] = fillers
            cost = float(huffman.encoded_size_from_counts(counts))
        else:
            cost = (gaps.size + fillers) * bits / 8
        if cost < best_cost:
            best_bits, best_cost = bits, cost
    return best_bits


def encoded_size(state: TensorState) -> int:
    """Bytes of the tensor section :func:`encode_tensor` writes for ``state`` (the real encoder, not an
    estimate), cached like :func:`encode_tensor_cached`; an uncompressed float tensor without a mask
    is priced without building its section."""
    cached = _cached(state)
    if cached is not None:
        return cached[0]
    if state.codes is None and state.mask is None and state.dense is not None:
        size = _raw_dense_size(state.numel)
        state.__dict__["_encoded"] = (RecordVersion(state), state.coder, size, None)
        return size
    if state.coder == "raw" and state.codes is not None:
        size = _packed_section_size(state)
        state.__dict__["_encoded"] = (RecordVersion(state), state.coder, size, None)
        return size
    return len(encode_tensor_cached(state)[1])


def _packed_section_size(state: TensorState) -> int:
    """``len(encode_tensor(state)[1])`` for codes that are only packed (coder ``raw``), from the counts:
    the passes price every layer before and after them, and packing the streams only to measure them
    was most of a LeNet's compress time. The same layout choice as :func:`encode_tensor` (tested)."""
    codec, prefix, _ = _section_header(state)
    if state.codebook is not None:
        width = max(1, math.ceil(math.log2(state.codebook.numel())))
    else:
        assert state.fmt is not None
        width = state.fmt.bits
    dense = None
    if _dense_allowed(state, codec):
        values = bitpack.packed_size(state.numel, width)
        dense = 1 + len(varint(values)) + values
    if state.mask is None:
        assert dense is not None
        return len(prefix) + dense
    positions = np.flatnonzero(state.mask.flatten().numpy())
    kept = int(positions.size)
    gaps = sparse_index.gaps_of(positions)
    bits = _index_bits_for(gaps, False)
    entries = kept + (int((gaps // ((1 << bits) - 1)).sum()) if kept else 0)
    index, values = bitpack.packed_size(entries, bits), bitpack.packed_size(kept, width)
    sparse = 2 + len(varint(entries)) + len(varint(kept)) + len(varint(index)) + index
    sparse += len(varint(values)) + values
    return len(prefix) + (sparse if dense is None or sparse < dense else dense)


def encode_tensor_cached(state: TensorState) -> tuple[int, bytes, Breakdown]:
    """:func:`encode_tensor`, remembered on the record until its value or coder changes.

    Passes report each layer's bytes before and after them and ``save`` writes the same sections
    again, so without this the same unchanged tensor would be encoded over and over (on VGG-16, 96
    encodes instead of 32). The key is the record's :class:`~sqc.ir.records.RecordVersion` and its coder. The
    payload is kept only for entropy-coded records (the last encoding before ``save``, no larger than
    the file); for the others the size is.
    """
    cached = _cached(state)
    if cached is not None and cached[1] is not None:
        codec, payload, info = cached[1]
        return codec, payload, replace(info, streams=dict(info.streams))
    codec, payload, info = encode_tensor(state)
    kept = (codec, payload, replace(info, streams=dict(info.streams))) if state.coder != "raw" else None
    state.__dict__["_encoded"] = (RecordVersion(state), state.coder, len(payload), kept)
    return codec, payload, info


def _cached(state: TensorState) -> tuple[int, tuple[int, bytes, Breakdown] | None] | None:
    """``(size, encoding or None)`` remembered for the record as it is now, or None."""
    entry = state.__dict__.get("_encoded")
    if entry is None or entry[1] != state.coder or not entry[0].holds_for(state):
        return None
    return entry[2], entry[3]


def _raw_dense_size(numel: int) -> int:
    """Size of an unmasked float32 tensor's section: flags byte + varint length + the values."""
    writer = Writer()
    writer.u8(0)
    writer.varint(4 * numel)
    return len(writer.getvalue()) + 4 * numel


def _section_header(state: TensorState) -> tuple[int, bytes, Breakdown]:
    """``(codec, codec header bytes, breakdown so far)``: everything of the section before its layout."""
    out = Writer()
    info = Breakdown()
    if state.codebook is not None:
        codec = CODEBOOK
        out.varint(state.codebook.numel() - 1)
        head = len(out.getvalue())
        if state.fmt is not None:
            out.u8(state.fmt.bits)
            out.i8(state.fmt.frac[0])
            out.raw(bitpack.pack(state.fmt.quantize(state.codebook).numpy(), state.fmt.bits, True))
        else:
            book = state.codebook.numpy().astype("<f4")
            packed = encode_float_deltas(book) if state.coder == "rans" else None
            if packed is not None and len(packed) < 4 * book.size:
                out.u8(BOOK_DELTA)
                out.raw(packed)
            else:
                out.u8(0)
                out.raw(book.tobytes())
        info.codebook = len(out.getvalue()) - head
        info.header = head
    elif state.codes is not None:
        assert state.fmt is not None
        codec = FIXED
        out.u8(state.fmt.bits)
        out.u8((FIXED_PER_CHANNEL if state.fmt.per_channel else 0) | (FIXED_SCALED if state.fmt.mult else 0))
        for frac in state.fmt.frac:
            out.i8(frac)
        for mult in state.fmt.mult:
            out.u8(mult)
        info.header = len(out.getvalue())
    else:
        codec = RAW_F32
    info.kept = state.kept
    return codec, out.getvalue(), info


def encode_tensor(state: TensorState) -> tuple[int, bytes, Breakdown]:
    """``(codec, payload, breakdown)`` of the tensor section for ``state``."""
    if state.dense is not None and state.dense.dtype != torch.float32:
        return _encode_typed(state)
    want_huffman = state.coder in ("huffman", "rans")  # rans falls back to Huffman where that is smaller
    wants = {"huffman": WANTS_HUFFMAN, "rans": WANTS_RANS}.get(state.coder, 0)
    codec, prefix, info = _section_header(state)
    context_info = Breakdown()
    context_body = _layout_context(state, codec, context_info) if state.coder == "rans" else None
    if context_body is not None and len(context_body) < _zero_order_bound(state, codec):
        # no packed or Huffman layout can be smaller: skip building them (the same choice, sooner)
        info.index, info.values, info.layout = context_info.index, context_info.values, context_info.layout
        info.streams, info.mask_model = context_info.streams, context_info.mask_model
        info.header += len(context_body) - info.index - info.values
        return codec, prefix + context_body, info
    sparse_info = Breakdown()
    sparse_body = (
        _layout_sparse(state, codec, want_huffman, wants, sparse_info) if state.mask is not None else None
    )
    # float values: the dense section's size is known without building it (4 bytes a weight), and on
    # a pruned layer it is the larger one
    dense_loses = (
        codec == RAW_F32 and sparse_body is not None and len(sparse_body) < _raw_dense_size(state.numel)
    )
    dense_body = (
        _layout_dense(state, codec, want_huffman, wants, info)
        if _dense_allowed(state, codec) and not dense_loses
        else None
    )
    if sparse_body is not None and (dense_body is None or len(sparse_body) < len(dense_body)):
        body = sparse_body
        info.index, info.values, info.layout = sparse_info.index, sparse_info.values, "sparse"
        info.index_bits, info.streams = sparse_info.index_bits, sparse_info.streams
    else:
        assert dense_body is not None
        body = dense_body
    if context_body is not None and len(context_body) < len(body):
        body = context_body
        info.index, info.values, info.layout = context_info.index, context_info.values, context_info.layout
        info.index_bits, info.streams = 0, context_info.streams
        info.mask_model = context_info.mask_model
    info.header += len(body) - info.index - info.values
    return codec, prefix + body, info


def _zero_order_bound(state: TensorState, codec: int) -> float:
    """Bytes below which no packed or Huffman layout of ``state`` can go: a packed or Huffman stream is
    a uniquely decodable code of its symbols one by one, so (McMillan, Gibbs) it takes at least the
    symbols' empirical zero-order entropy. Dense: that of every position's symbol. Sparse: that of the
    kept values plus that of the gaps before them (an index entry stream, with or without fillers, codes
    the gaps uniquely). Headers are left out and a byte of float slack taken off, so the bound is below
    the truth: skipping the layouts it rules out never changes the choice."""
    symbols, _, _ = _symbols(state)
    dense = _entropy_bits(symbols) if _dense_allowed(state, codec) else math.inf
    if state.mask is not None:
        positions = np.flatnonzero(state.mask.flatten().numpy())
        sparse = _entropy_bits(symbols[positions]) + _entropy_bits(sparse_index.gaps_of(positions))
        dense = min(dense, sparse)
    return dense / 8 * (1 - 1e-9) - 1


def _entropy_bits(symbols: np.ndarray) -> float:
    """``n * H`` of a symbol stream's empirical distribution, in bits."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.astype(np.int64))
    counts = counts[counts > 0].astype(np.float64)
    return float(-(counts * np.log2(counts / symbols.size)).sum())


def _encode_typed(state: TensorState) -> tuple[int, bytes, Breakdown]:
    """A :data:`RAW_TYPED` section: dtype byte, then the sized little-endian values."""
    assert state.dense is not None
    if state.dense.dtype not in TYPED_IDS or state.mask is not None or state.coder != "raw":
        raise ValueError(f"tensor {state.name}: a {state.dense.dtype} tensor is stored raw, unpruned")
    values = state.dense.detach().contiguous().reshape(-1)
    if values.dtype == torch.bfloat16:  # numpy has no bfloat16: its bytes are an int16's
        values = values.view(torch.int16)
    data = values.numpy().astype(values.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
    out = Writer()
    out.u8(TYPED_IDS[state.dense.dtype])
    out.sized(data)
    info = Breakdown(header=len(out.getvalue()) - len(data), values=len(data), kept=state.numel)
    info.streams = {"values": "raw"}
    return RAW_TYPED, out.getvalue(), info


def _decode_typed(r: Reader, state: TensorState, info: Breakdown) -> None:
    number = r.u8()
    dtype = TYPED_DTYPES.get(number)
    if dtype is None:
        raise r.fail(f"unknown dtype number {number} in a raw-typed tensor")
    width = torch.empty(0, dtype=dtype).element_size()
    values = r.sized("values")
    if len(values.data) != width * state.numel:
        raise values.fail(
            f"{len(values.data)} bytes for {state.numel} {str(dtype).removeprefix('torch.')} values"
        )
    raw = np.frombuffer(values.take(width * state.numel), dtype=np.uint8).copy()
    flat = torch.from_numpy(raw)
    if sys.byteorder != "little" and width > 1:  # the file is little-endian
        flat = torch.from_numpy(raw.reshape(-1, width)[:, ::-1].copy().reshape(-1))
    if dtype == torch.bool:
        if raw.size and int(raw.max()) > 1:
            raise values.fail("a bool tensor holds a byte other than 0 or 1")
    tensor = flat.view(dtype)
    if not all_finite(tensor):
        raise values.fail("NaN or Inf in a raw tensor")
    r.expect_end()
    state.dense = tensor.reshape(state.shape)
    info.header, info.values, info.kept = r.pos - len(values.data), len(values.data), state.numel
    info.streams = {"values": "raw"}


def _dense_allowed(state: TensorState, codec: int) -> bool:
    # A dense codebook layout has no way to say "pruned": every position decodes to a centroid.
    return not (codec == CODEBOOK and state.mask is not None)


def _values_stream(
    state: TensorState, codec: int, positions: np.ndarray | None, want: bool
) -> tuple[bytes, bool]:
    if codec == RAW_F32:
        assert state.dense is not None
        values = state.dense.flatten().numpy()
        chosen = values if positions is None else values[positions]
        return chosen.astype("<f4").tobytes(), False
    symbols, alphabet, width = _symbols(state, positions)
    return choose_stream(symbols, alphabet, width, want)


def _layout_dense(state: TensorState, codec: int, want: bool, wants: int, info: Breakdown) -> bytes:
    values, coded = _values_stream(state, codec, None, want)
    out = Writer()
    out.u8((VALUES_HUFFMAN if coded else 0) | wants)
    out.sized(values)
    info.values = len(values)
    info.streams = {"values": "huffman" if coded else "packed"}
    return out.getvalue()


def _layout_sparse(state: TensorState, codec: int, want: bool, wants: int, info: Breakdown) -> bytes:
    assert state.mask is not None
    mask_flat = state.mask.flatten().numpy()
    positions = np.flatnonzero(mask_flat)
    kept = positions.size
    values, values_coded = _values_stream(state, codec, positions, want)
    gaps = sparse_index.gaps_of(positions)
    del positions  # (on a 100M-weight layer each of these arrays is 40-80 MB: one at a time)
    bits = _index_bits_for(gaps, want and codec != RAW_F32)
    entries = sparse_index.entries_for_gaps(gaps, bits)
    del gaps
    index, index_coded = choose_stream(entries, 1 << bits, bits, want)
    flags = SPARSE | (VALUES_HUFFMAN if values_coded else 0) | (INDEX_HUFFMAN if index_coded else 0)
    out = Writer()
    out.u8(flags | wants)
    out.u8(bits)
    out.varint(int(entries.size))
    out.varint(kept)
    out.sized(index)
    out.sized(values)
    info.index, info.values, info.index_bits = len(index), len(values), bits
    info.streams = {
        "index": "huffman" if index_coded else "packed",
        "values": "huffman" if values_coded else "packed",
    }
    return out.getvalue()


def _layout_context(state: TensorState, codec: int, info: Breakdown) -> bytes | None:
    """The context-coded layout, or None where it does not apply (float values, symbols wider than
    :data:`rans.MAX_WIDTH`, or more positions or binary decisions per stream byte than a reader accepts:
    :func:`rans.fits`)."""
    if codec == RAW_F32:
        return None
    symbols, _, width = _symbols(state)
    if width > rans.MAX_WIDTH:
        return None
    mask = None if state.mask is None else state.mask.flatten().numpy()
    kept = symbols if mask is None else symbols[mask]
    coded = rans.encode(mask, kept, state.shape, width)
    if not rans.fits(state.numel, int(kept.size), width, mask is not None, len(coded.data)):
        return None
    out = Writer()
    out.u8(CONTEXT_CODED | WANTS_RANS | (SPARSE if mask is not None else 0))
    out.u8(coded.mode)
    out.sized(coded.data)
    info.index, info.values = coded.index_bytes, coded.value_bytes
    info.mask_model = coded.mask_mode
    info.layout = "sparse" if mask is not None else "dense"
    info.streams = {"values": "rans"} | ({"index": "rans"} if mask is not None else {})
    return out.getvalue()


def _narrowest_unsigned(alphabet: int) -> type[np.unsignedinteger]:
    return np.uint8 if alphabet <= 1 << 8 else (np.uint16 if alphabet <= 1 << 16 else np.uint32)


def _read_symbols(stream: Reader, count: int, alphabet: int, width: int, coded: bool) -> np.ndarray:
    data = stream.take(stream.remaining)
    try:
        if coded:  # a narrow dtype: the stream can hold tens of millions of symbols
            symbols = huffman.deserialize(data, alphabet, count, dtype=_narrowest_unsigned(alphabet))
        else:
            if len(data) != bitpack.packed_size(count, width):
                raise stream.fail(f"packed stream of {len(data)} bytes for {count} x {width} bits")
            symbols = bitpack.unpack(data, count, width, False)
    except SqcFormatError as exc:
        raise SqcFormatError(f"{stream.what}: {exc}", stream.base) from None
    if symbols.size and int(symbols.max()) >= alphabet:
        raise SqcFormatError(f"{stream.what}: symbol outside the alphabet of {alphabet}", stream.base)
    return symbols


def decode_tensor(
    codec: int, payload: bytes | memoryview, name: str, shape: tuple[int, ...], role: Role, base: int = 0
) -> tuple[TensorState, Breakdown]:
    """Rebuild the record from a tensor section; any inconsistency is a :class:`SqcFormatError`."""
    state, info, _ = _decode(codec, payload, name, shape, role, base, values_only=False)
    return state, info


def decode_values(
    codec: int, payload: bytes | memoryview, name: str, shape: tuple[int, ...], role: Role, base: int = 0
) -> torch.Tensor:
    """The float32 tensor a section stands for — bit for bit ``decode_tensor(...)[0].decode()`` —
    without building the record where that can be skipped: a codebook section with a sparse or dense
    layout scatters the centroids of its kept codes straight into the output, instead of a full int32
    code tensor, a mask and a gather over every position (on VGG-16's fc6: 10M values, not 103M).
    The section is validated exactly as :func:`decode_tensor` validates it."""
    state, _, values = _decode(codec, payload, name, shape, role, base, values_only=True)
    return values if values is not None else state.decode()


def _decode(
    codec: int,
    payload: bytes | memoryview,
    name: str,
    shape: tuple[int, ...],
    role: Role,
    base: int,
    values_only: bool,
) -> tuple[TensorState, Breakdown, torch.Tensor | None]:
    r = Reader(payload, base, f"tensor {name}")
    numel = math.prod(shape)
    info = Breakdown(kept=numel)
    state = TensorState(name=name, shape=shape, role=role)
    alphabet = width = 0
    if codec == RAW_TYPED:
        if role != "buffer":
            raise r.fail("only buffers are stored in a dtype other than float32")
        _decode_typed(r, state, info)
        return state, info, None
    if codec == CODEBOOK:
        k = r.varint(MAX_CODEBOOK - 1) + 1
        info.header = r.pos
        start = r.pos
        mode = r.u8()
        if mode == 0:
            book = np.frombuffer(r.take(4 * k), dtype="<f4").astype(np.float32)
            state.codebook = torch.from_numpy(book.copy())
        elif mode == BOOK_DELTA:
            try:
                book, used = decode_float_deltas(r.data[r.pos :], k)
            except SqcFormatError as exc:
                raise SqcFormatError(f"tensor {name} codebook: {exc}", r.offset) from None
            r.take(used)
            state.codebook = torch.from_numpy(book)
        elif 2 <= mode <= 24:
            frac = r.i8()
            fmt = _format(r, mode, (frac,))
            data = r.take(bitpack.packed_size(k, mode))
            state.fmt = fmt
            state.codebook = fmt.dequantize(torch.from_numpy(bitpack.unpack(data, k, mode, True)))
        else:
            raise r.fail(f"unknown codebook mode {mode}")
        if not all_finite(state.codebook):
            raise r.fail("NaN or Inf in the codebook")
        info.codebook = r.pos - start
        alphabet, width = k, max(1, math.ceil(math.log2(k)))
    elif codec == FIXED:
        bits = r.u8()
        fixed_flags = r.u8()
        per_channel = fixed_flags & FIXED_PER_CHANNEL
        if fixed_flags & ~(FIXED_PER_CHANNEL | FIXED_SCALED) or (per_channel and not shape):
            raise r.fail(f"bad fixed-point flags {fixed_flags}")
        channels = shape[0] if per_channel else 1
        fracs = tuple(r.i8() for _ in range(channels))
        mults = tuple(r.u8() for _ in range(channels)) if fixed_flags & FIXED_SCALED else ()
        state.fmt = _format(r, bits, fracs, mults)
        alphabet, width = 1 << bits, bits
        info.header = r.pos
    elif codec != RAW_F32:
        raise r.fail(f"unknown tensor codec {codec}")
    head = r.pos
    flags = r.u8()
    if flags & ~KNOWN_FLAGS:
        raise r.fail(f"unknown layout flags {flags:#x}")
    if codec == RAW_F32 and flags & (
        VALUES_HUFFMAN | INDEX_HUFFMAN | WANTS_HUFFMAN | CONTEXT_CODED | WANTS_RANS
    ):
        raise r.fail("raw float tensors cannot be entropy coded")
    if flags & WANTS_HUFFMAN and flags & WANTS_RANS:
        raise r.fail("a tensor cannot ask for both Huffman and rans")
    state.coder = "huffman" if flags & WANTS_HUFFMAN else ("rans" if flags & WANTS_RANS else "raw")
    positions: np.ndarray | None = None
    values_out: torch.Tensor | None = None
    if flags & CONTEXT_CODED:
        if flags & (VALUES_HUFFMAN | INDEX_HUFFMAN) or not flags & WANTS_RANS:
            raise r.fail(f"inconsistent context-coded layout flags {flags:#x}")
        values_out = _decode_context(r, state, flags, alphabet, width, info, values_only)
        info.header += (r.pos - head) - info.index - info.values
        return state, info, values_out
    if flags & SPARSE:
        bits = r.u8()
        if bits not in INDEX_BITS:
            raise r.fail(f"index width {bits} outside 1..16")
        entries_n = r.varint(numel + numel // max(1, (1 << bits) - 1) + 1)
        kept = r.varint(numel)
        index = r.sized("sparse index")
        entries = _read_symbols(index, entries_n, 1 << bits, bits, bool(flags & INDEX_HUFFMAN))
        try:
            positions = sparse_index.decode_positions(entries, bits, numel)
        except SqcFormatError as exc:
            raise SqcFormatError(f"tensor {name} index: {exc}", index.base) from None
        if positions.size != kept:
            raise r.fail(f"sparse index gives {positions.size} positions, header says {kept}")
        info.layout, info.index_bits, info.index, info.kept = "sparse", bits, len(index.data), kept
        count = kept
    else:
        count = numel
    values = r.sized("values")
    info.values = len(values.data)
    if codec == RAW_F32:
        if flags & VALUES_HUFFMAN or len(values.data) != 4 * count:
            raise values.fail(f"{len(values.data)} bytes for {count} float32 values")
        flat = np.frombuffer(values.take(4 * count), dtype="<f4").astype(np.float32)
        if not all_finite(torch.from_numpy(flat)):
            raise values.fail("NaN or Inf in a raw tensor")
        dense = np.zeros(numel, dtype=np.float32)
        dense[positions if positions is not None else slice(None)] = flat
        state.dense = torch.from_numpy(dense).reshape(shape)
    else:
        symbols = _read_symbols(values, count, alphabet, width, bool(flags & VALUES_HUFFMAN))
        if values_only and state.codebook is not None:
            out = np.zeros(numel, dtype=np.float32)  # pruned positions: +0.0, as decode() gives
            out[positions if positions is not None else slice(None)] = state.codebook.numpy()[symbols]
            values_out = torch.from_numpy(out).reshape(shape)
        else:
            offset = 0 if codec == CODEBOOK else state.fmt.qmin  # type: ignore[union-attr]
            codes = symbols if not offset else symbols.astype(np.int32) + offset
            full = np.zeros(numel, dtype=_code_dtype(state))
            full[positions if positions is not None else slice(None)] = codes
            state.codes = torch.from_numpy(full).reshape(shape)
    if positions is not None and values_out is None:
        mask = np.zeros(numel, dtype=bool)
        mask[positions] = True
        # not set_mask: the values and codes at pruned positions are already the zeros it would write
        state.mask = torch.from_numpy(mask).reshape(shape)
    r.expect_end()
    info.header += (r.pos - head) - info.index - info.values
    info.streams = {
        "values": "huffman" if flags & VALUES_HUFFMAN else ("raw" if codec == RAW_F32 else "packed")
    }
    if positions is not None:
        info.streams["index"] = "huffman" if flags & INDEX_HUFFMAN else "packed"
    return state, info, values_out


def _code_dtype(state: TensorState) -> np.dtype:
    """The numpy dtype of the record's codes: the codebook's index dtype, or int32 fixed-point codes."""
    wanted = index_dtype(state.codebook.numel()) if state.codebook is not None else CODE_DTYPE
    return torch.empty(0, dtype=wanted).numpy().dtype


def _decode_context(
    r: Reader, state: TensorState, flags: int, alphabet: int, width: int, info: Breakdown, values_only: bool
) -> torch.Tensor | None:
    """Decode a context-coded section into ``state`` (codes and mask), or with ``values_only`` straight
    to the float32 values ``state.decode()`` would give (then returned; ``state`` gets neither): no code
    tensor of the whole size, no mask kept, nothing zeroed twice (a pruned position is 0 already)."""
    mode = r.u8()
    stream = r.sized("rans stream")
    r.expect_end()
    try:
        mask, symbols, index = rans.decode(
            stream.data, state.shape, bool(flags & SPARSE), width, alphabet, mode
        )
    except SqcFormatError as exc:
        raise SqcFormatError(f"{stream.what} of tensor {state.name}: {exc}", stream.base) from None
    info.index, info.values = index, len(stream.data) - index
    info.kept = int(symbols.size)
    info.layout = "sparse" if mask is not None else "dense"
    info.streams = {"values": "rans"} | ({"index": "rans"} if mask is not None else {})
    numel = state.numel
    where = slice(None) if mask is None else mask
    if values_only:
        fmt = state.fmt
        step = None if state.codebook is not None or fmt is None else fmt.scale(state.shape).to(torch.float32)
        table = _value_table(state, step, alphabet, symbols.size)
        if table is not None:  # each symbol's value, computed once: the same float32 operations
            out = table[symbols] if mask is None else rans.scatter(mask, symbols, table)
            return torch.from_numpy(out).reshape(state.shape)
        assert fmt is not None and step is not None
        symbols += fmt.qmin  # in place; |code| < 2^24: exact in float32, as fmt.dequantize converts it
        kept = symbols.astype(np.float32)
        if mask is None:
            out = kept
        else:
            out = np.zeros(numel, dtype=np.float32)  # pruned positions: +0.0, as decode() gives
            out[mask] = kept
        values = torch.from_numpy(out).reshape(state.shape)
        # per channel, or fewer values than symbols: the product over the whole tensor (0 * step is +0.0)
        return values.mul_(step)
    codes = symbols
    if state.codebook is None:  # in place: the symbols can be tens of millions of int64
        codes += state.fmt.qmin  # type: ignore[union-attr]
    full = np.zeros(numel, dtype=_code_dtype(state))
    full[where] = codes
    state.codes = torch.from_numpy(full).reshape(state.shape)
    if mask is not None:
        # not set_mask: the codes at pruned positions are already the zeros it would write
        state.mask = torch.from_numpy(mask).reshape(state.shape)
    return None


def _value_table(
    state: TensorState, step: torch.Tensor | None, alphabet: int, kept: int
) -> np.ndarray | None:
    """The float32 value of every symbol below ``alphabet``, as ``state.decode()`` computes it: the
    codebook, or for per-tensor fixed point (float32 ``step``) ``float32(symbol + qmin) * step``; None for
    per-channel fixed point, and where the alphabet outnumbers the ``kept`` symbols (a table would cost
    more)."""
    if state.codebook is not None:
        return state.codebook.numpy()
    fmt = state.fmt
    assert fmt is not None and step is not None
    if step.numel() != 1 or alphabet > kept:
        return None
    return (np.arange(alphabet, dtype=np.int64) + fmt.qmin).astype(np.float32) * step.numpy().reshape(())


def encode_float_deltas(values: np.ndarray) -> bytes | None:
    """Float32 values as deltas of order-preserving keys, Elias-gamma style (None if there are none).

    ``key = bits ^ 0xFFFFFFFF`` for a negative float, ``bits | 0x80000000`` otherwise, so keys sort like
    the values. Layout: u32 first key; the remaining ``n-1`` deltas zigzag-mapped (``2d`` or ``-2d-1``),
    their bit lengths (0..33) as a sized canonical-Huffman stream, then the bits below each delta's
    leading one, LSB first, concatenated (field order, :mod:`bitpack` bit order), zero-padded to a byte.
    """
    if values.size == 0:
        return None
    bits = values.astype("<f4").view("<u4").astype(np.int64)
    keys = np.where(bits >> 31, bits ^ 0xFFFFFFFF, bits | 0x80000000)
    delta = np.diff(keys)
    zig = np.where(delta >= 0, 2 * delta, -2 * delta - 1)
    lengths = np.zeros(zig.size, dtype=np.int64)
    for b in range(34):  # bit_length, vectorised
        lengths += zig >> b > 0
    out = Writer()
    out.u32(int(keys[0]))
    out.sized(huffman.serialize(huffman.encode(lengths, 34)) if zig.size else b"")
    out.raw(_pack_tails(zig, lengths))
    return out.getvalue()


def _pack_tails(zig: np.ndarray, lengths: np.ndarray) -> bytes:
    tail = np.maximum(lengths - 1, 0)
    shifts = np.arange(33, dtype=np.int64)
    keep = shifts[None, :] < tail[:, None]
    field = ((zig[:, None] >> shifts[None, :]) & 1)[keep]
    return np.packbits(field.astype(np.uint8), bitorder="little").tobytes()


def decode_float_deltas(data: memoryview, count: int) -> tuple[np.ndarray, int]:
    """``(float32 values, bytes used)`` from the start of ``data``; the inverse of
    :func:`encode_float_deltas`, validating every field."""
    r = Reader(data, 0, "delta-coded codebook")
    first = r.u32()
    table = r.sized("bit lengths")
    lengths = huffman.deserialize(table.data, 34, count - 1) if count > 1 else np.zeros(0, dtype=np.int64)
    if count <= 1 and len(table.data):
        raise r.fail("bit lengths for a single value")
    tail = np.maximum(lengths - 1, 0)
    nbits = int(tail.sum())
    raw = np.frombuffer(r.take((nbits + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little").astype(np.int64)
    if bits[nbits:].any():
        raise r.fail("non-zero padding bits")
    ends = np.cumsum(tail)
    owner = np.repeat(np.arange(tail.size), tail)
    place = np.arange(nbits) - np.repeat(ends - tail, tail)
    zig = np.zeros(tail.size, dtype=np.int64)
    np.add.at(zig, owner, bits[:nbits] << place)
    zig = np.where(lengths > 0, zig | (1 << np.maximum(lengths - 1, 0)), 0)
    delta = np.where(zig & 1, -(zig + 1) // 2, zig // 2)
    keys = first + np.concatenate(([0], np.cumsum(delta)))
    if keys.size and (int(keys.min()) < 0 or int(keys.max()) > 0xFFFFFFFF):
        raise r.fail("a delta leaves the 32-bit key range")
    bits32 = np.where(keys >> 31, keys & 0x7FFFFFFF, keys ^ 0xFFFFFFFF)
    return bits32.astype("<u4").view("<f4").astype(np.float32), r.pos


def _format(r: Reader, bits: int, fracs: tuple[int, ...], mults: tuple[int, ...] = ()) -> FixedPoint:
    try:
        return FixedPoint(bits, fracs, mults)
    except ValueError as exc:
        raise r.fail(str(exc)) from None
