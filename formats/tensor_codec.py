"""Encoding one :class:`~sqc.ir.TensorState` as a tensor section, and decoding it back exactly.

The layout is specified in ``FORMAT.md`` (section "Tensor sections"); in short: a codec byte in the
section table (raw fp32, fixed-point codes, codebook + codes), a small codec header (format, fraction
lengths, codebook), then the *layout*: dense, or Deep Compression's relative sparse index, each stream
either bit-packed or canonical-Huffman coded, whichever is smaller when the tensor asks for Huffman.
Decoding validates every field before use and gives back a record whose ``decode()`` is bit-identical
to the encoded one's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from sqc.errors import SqcFormatError
from sqc.formats import bitpack, huffman, sparse_index
from sqc.formats.binio import Reader, Writer
from sqc.ir import FixedPoint, Role, TensorState

RAW_F32, FIXED, CODEBOOK = 0, 1, 2
CODEC_NAMES = {RAW_F32: "raw-f32", FIXED: "fixed", CODEBOOK: "codebook"}

SPARSE, VALUES_HUFFMAN, INDEX_HUFFMAN, WANTS_HUFFMAN = 1, 2, 4, 8
MAX_CODEBOOK = 1 << 16
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

    @property
    def total(self) -> int:
        return self.header + self.codebook + self.index + self.values


def _symbols(state: TensorState) -> tuple[np.ndarray, int, int]:
    """Codes as unsigned symbols, the alphabet size, and the packed width."""
    assert state.codes is not None
    codes = state.codes.flatten().numpy()
    if state.codebook is not None:
        k = state.codebook.numel()
        return codes, k, max(1, math.ceil(math.log2(k)))
    assert state.fmt is not None
    return codes - state.fmt.qmin, 1 << state.fmt.bits, state.fmt.bits


def _choose_stream(symbols: np.ndarray, alphabet: int, width: int, allow_huffman: bool) -> tuple[bytes, bool]:
    """Packed or Huffman-coded bytes of a symbol stream, whichever is smaller (ties: packed)."""
    packed = bitpack.pack(symbols, width, False)
    if not allow_huffman or symbols.size == 0:
        return packed, False
    coded = huffman.serialize(huffman.encode(symbols, alphabet))
    return (coded, True) if len(coded) < len(packed) else (packed, False)


def _index_bits_for(positions: np.ndarray, allow_huffman: bool) -> int:
    """Width of relative-index entries: least packed size, or least Huffman-coded size.

    Works on the histogram of gap lengths, computed once: a gap ``g`` becomes ``g // M`` fillers and
    one entry ``g % M``, so every candidate width costs O(longest gap), not O(weights).
    """
    gaps = np.diff(positions, prepend=-1) - 1
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


def encode_tensor(state: TensorState) -> tuple[int, bytes, Breakdown]:
    """``(codec, payload, breakdown)`` of the tensor section for ``state``."""
    out = Writer()
    info = Breakdown()
    want_huffman = state.coder == "huffman"
    if state.codebook is not None:
        codec = CODEBOOK
        out.varint(state.codebook.numel() - 1)
        head = len(out.getvalue())
        if state.fmt is not None:
            out.u8(state.fmt.bits)
            out.i8(state.fmt.frac[0])
            out.raw(bitpack.pack(state.fmt.quantize(state.codebook).numpy(), state.fmt.bits, True))
        else:
            out.u8(0)
            out.raw(state.codebook.numpy().astype("<f4").tobytes())
        info.codebook = len(out.getvalue()) - head
        info.header = head
    elif state.codes is not None:
        assert state.fmt is not None
        codec = FIXED
        out.u8(state.fmt.bits)
        out.u8(1 if state.fmt.per_channel else 0)
        for frac in state.fmt.frac:
            out.i8(frac)
        info.header = len(out.getvalue())
    else:
        codec = RAW_F32
    prefix = out.getvalue()
    info.kept = state.kept
    dense_body = _layout_dense(state, codec, want_huffman, info) if _dense_allowed(state, codec) else None
    sparse_info = Breakdown()
    sparse_body = _layout_sparse(state, codec, want_huffman, sparse_info) if state.mask is not None else None
    if sparse_body is not None and (dense_body is None or len(sparse_body) < len(dense_body)):
        body = sparse_body
        info.index, info.values, info.layout = sparse_info.index, sparse_info.values, "sparse"
        info.index_bits, info.streams = sparse_info.index_bits, sparse_info.streams
    else:
        assert dense_body is not None
        body = dense_body
    info.header += len(body) - info.index - info.values
    return codec, prefix + body, info


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
    symbols, alphabet, width = _symbols(state)
    return _choose_stream(symbols if positions is None else symbols[positions], alphabet, width, want)


def _layout_dense(state: TensorState, codec: int, want: bool, info: Breakdown) -> bytes:
    values, coded = _values_stream(state, codec, None, want)
    out = Writer()
    out.u8((VALUES_HUFFMAN if coded else 0) | (WANTS_HUFFMAN if want else 0))
    out.sized(values)
    info.values = len(values)
    info.streams = {"values": "huffman" if coded else "packed"}
    return out.getvalue()


def _layout_sparse(state: TensorState, codec: int, want: bool, info: Breakdown) -> bytes:
    assert state.mask is not None
    mask_flat = state.mask.flatten().numpy()
    positions = np.flatnonzero(mask_flat)
    bits = _index_bits_for(positions, want and codec != RAW_F32)
    entries = sparse_index.encode_gaps(mask_flat, bits)
    index, index_coded = _choose_stream(entries, 1 << bits, bits, want)
    values, values_coded = _values_stream(state, codec, positions, want)
    flags = SPARSE | (VALUES_HUFFMAN if values_coded else 0) | (INDEX_HUFFMAN if index_coded else 0)
    out = Writer()
    out.u8(flags | (WANTS_HUFFMAN if want else 0))
    out.u8(bits)
    out.varint(int(entries.size))
    out.varint(int(positions.size))
    out.sized(index)
    out.sized(values)
    info.index, info.values, info.index_bits = len(index), len(values), bits
    info.streams = {
        "index": "huffman" if index_coded else "packed",
        "values": "huffman" if values_coded else "packed",
    }
    return out.getvalue()


def _read_symbols(stream: Reader, count: int, alphabet: int, width: int, coded: bool) -> np.ndarray:
    data = stream.take(stream.remaining)
    try:
        if coded:
            symbols = huffman.deserialize(data, alphabet, count)
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
    r = Reader(payload, base, f"tensor {name}")
    numel = math.prod(shape)
    info = Breakdown(kept=numel)
    state = TensorState(name=name, shape=shape, role=role)
    alphabet = width = 0
    if codec == CODEBOOK:
        k = r.varint(MAX_CODEBOOK - 1) + 1
        info.header = r.pos
        start = r.pos
        mode = r.u8()
        if mode == 0:
            book = np.frombuffer(r.take(4 * k), dtype="<f4").astype(np.float32)
            state.codebook = torch.from_numpy(book.copy())
        elif 2 <= mode <= 24:
            frac = r.i8()
            fmt = _format(r, mode, (frac,))
            data = r.take(bitpack.packed_size(k, mode))
            state.fmt = fmt
            state.codebook = fmt.dequantize(torch.from_numpy(bitpack.unpack(data, k, mode, True)))
        else:
            raise r.fail(f"unknown codebook mode {mode}")
        if not bool(torch.isfinite(state.codebook).all()):
            raise r.fail("NaN or Inf in the codebook")
        info.codebook = r.pos - start
        alphabet, width = k, max(1, math.ceil(math.log2(k)))
    elif codec == FIXED:
        bits = r.u8()
        per_channel = r.u8()
        if per_channel not in (0, 1) or (per_channel and not shape):
            raise r.fail(f"bad fixed-point flags {per_channel}")
        channels = shape[0] if per_channel else 1
        fracs = tuple(r.i8() for _ in range(channels))
        state.fmt = _format(r, bits, fracs)
        alphabet, width = 1 << bits, bits
        info.header = r.pos
    elif codec != RAW_F32:
        raise r.fail(f"unknown tensor codec {codec}")
    head = r.pos
    flags = r.u8()
    if flags & ~(SPARSE | VALUES_HUFFMAN | INDEX_HUFFMAN | WANTS_HUFFMAN):
        raise r.fail(f"unknown layout flags {flags:#x}")
    if codec == RAW_F32 and flags & (VALUES_HUFFMAN | INDEX_HUFFMAN | WANTS_HUFFMAN):
        raise r.fail("raw float tensors cannot be Huffman coded")
    state.coder = "huffman" if flags & WANTS_HUFFMAN else "raw"
    positions: np.ndarray | None = None
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
        if not np.isfinite(flat).all():
            raise values.fail("NaN or Inf in a raw tensor")
        dense = np.zeros(numel, dtype=np.float32)
        dense[positions if positions is not None else slice(None)] = flat
        state.dense = torch.from_numpy(dense).reshape(shape)
    else:
        symbols = _read_symbols(values, count, alphabet, width, bool(flags & VALUES_HUFFMAN))
        codes = symbols if codec == CODEBOOK else symbols + state.fmt.qmin  # type: ignore[union-attr]
        full = np.zeros(numel, dtype=np.int32)
        full[positions if positions is not None else slice(None)] = codes
        state.codes = torch.from_numpy(full).reshape(shape)
    if positions is not None:
        mask = np.zeros(numel, dtype=bool)
        mask[positions] = True
        state.set_mask(torch.from_numpy(mask))
    r.expect_end()
    info.header += (r.pos - head) - info.index - info.values
    info.streams = {
        "values": "huffman" if flags & VALUES_HUFFMAN else ("raw" if codec == RAW_F32 else "packed")
    }
    if positions is not None:
        info.streams["index"] = "huffman" if flags & INDEX_HUFFMAN else "packed"
    return state, info


def _format(r: Reader, bits: int, fracs: tuple[int, ...]) -> FixedPoint:
    try:
        return FixedPoint(bits, fracs)
    except ValueError as exc:
        raise r.fail(str(exc)) from None
