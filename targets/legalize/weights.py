"""Weights: every weight record as integer values plus its ROM streams (codebook indices or fixed-point
codes, relative sparse index), packed, Huffman- or rANS-coded as in the container."""

from __future__ import annotations

import math

import numpy as np

from sqc.formats import rans, sparse_index
from sqc.formats.tensor_codec import choose_stream
from sqc.ir.records import FixedPoint, TensorState, best_format
from sqc.targets.integer import (
    Stream,
    Weights,
)
from sqc.targets.legalize.options import LowerOptions

# ------------------------------------------------------------------------------------------------
# weights


def _stream(symbols: np.ndarray, alphabet: int, width: int, want_huffman: bool) -> Stream:
    """Packed, or Huffman-coded when the tensor asked for it and it is smaller: the container's own choice
    (:func:`sqc.formats.tensor_codec.choose_stream`), so ROM holds the streams the file would."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int64)
    data, coded = choose_stream(symbols, alphabet, width, want_huffman)
    return Stream("huffman" if coded else "packed", width, int(symbols.size), alphabet, data)


def _best_index(mask: np.ndarray, want_huffman: bool) -> tuple[int, Stream]:
    """The relative-index width in 1..8 with the smallest stream (entries fit a byte in RAM)."""
    best: tuple[int, Stream] | None = None
    for bits in range(1, 9):
        entries = sparse_index.encode_gaps(mask, bits)
        stream = _stream(entries, 1 << bits, bits, want_huffman)
        if best is None or len(stream.data) < len(best[1].data):
            best = (bits, stream)
    assert best is not None
    return best


def _rans_stream(
    state: TensorState,
    mask: np.ndarray | None,
    sparse: bool,
    kept_symbols: np.ndarray,
    width: int,
    alphabet: int,
    keep: bool,
) -> Stream | None:
    """The tensor's context-coded stream as the container writes it (``rans.encode`` is deterministic),
    or None where the C layout cannot use it: not asked for, symbols too wide, a reader's position
    or decision limit (:func:`rans.fits`, as the container), or a layout (``sparse=never``/``always``)
    other than the stream's own."""
    if not keep or width > rans.MAX_WIDTH or sparse != (mask is not None):
        return None
    coded = rans.encode(mask, kept_symbols, state.shape, width)
    if not rans.fits(state.numel, int(kept_symbols.size), width, sparse, len(coded.data)):
        return None
    return Stream("rans", width, int(kept_symbols.size), alphabet, coded.data, coded.mode)


def legalize_weights(
    state: TensorState, opts: LowerOptions, notes: list[str], keep_rans: bool = False
) -> Weights:
    """Integer values and ROM streams of one kernel; float parts get the stated default format.

    A tensor that asked for ``rans`` keeps its context-coded stream (the same bytes the container
    writes) when ``keep_rans`` and it is the smallest layout, as in the container; otherwise it is
    stored packed or Huffman-coded like a ``huffman`` tensor (the container's own fallback)."""

    shape = state.shape
    channels = shape[0]
    flat_mask = state.mask.reshape(-1).numpy() if state.mask is not None else None
    want = state.coder in ("huffman", "rans")
    codebook: np.ndarray | None = None
    offset = 0
    mults: tuple[int, ...] = ()
    if state.codebook is not None and state.codes is not None:
        fmt = state.fmt
        if fmt is None:
            fmt = best_format(state.codebook, opts.weight_bits, per_channel=False)
            error = float((fmt.dequantize(fmt.quantize(state.codebook)) - state.codebook).abs().max())
            notes.append(
                f"{state.name}: float codebook of {state.codebook.numel()} entries quantized to "
                f"{fmt.bits}-bit fixed point (frac {fmt.frac[0]}, max error {error:.3g})"
            )
            origin = f"codebook {state.codebook.numel()}, quantized here to {fmt.bits} bits"
        else:
            origin = f"codebook {state.codebook.numel()} x {fmt.bits}-bit"
        codebook = fmt.quantize(state.codebook).numpy().astype(np.int64)
        symbols = state.codes.reshape(-1).numpy().astype(np.int64)
        alphabet = codebook.size
        values = codebook[symbols]
        if flat_mask is not None:
            values = np.where(flat_mask, values, 0)
        value_bits = fmt.bits
        frac = (fmt.frac[0],) * channels
    else:
        if state.codes is not None and state.fmt is not None:
            fmt = state.fmt
            codes = state.codes
            origin = f"fixed {fmt.bits}-bit" + (" per channel" if fmt.per_channel else "")
        else:
            assert state.dense is not None
            fmt = best_format(state.dense, opts.weight_bits, per_channel=False)
            codes = fmt.quantize(state.dense)
            error = float((fmt.dequantize(codes) - state.dense).abs().max())
            notes.append(
                f"{state.name}: float weights quantized to {fmt.bits}-bit fixed point "
                f"(frac {fmt.frac[0]}, max error {error:.3g})"
            )
            origin = f"float, quantized here to {fmt.bits} bits"
            want = False
        values = codes.reshape(-1).numpy().astype(np.int64)
        offset = FixedPoint(fmt.bits, (0,)).qmin
        symbols = values - offset
        alphabet = 1 << fmt.bits
        value_bits = fmt.bits
        frac = tuple(fmt.frac) if fmt.per_channel else (fmt.frac[0],) * channels
        if fmt.mult:
            mults = tuple(fmt.mult) if fmt.per_channel else (fmt.mult[0],) * channels
            origin += f", step x{mults[0]}" if len(set(mults)) == 1 else ", scaled steps"
    width = max(1, math.ceil(math.log2(alphabet))) if alphabet > 1 else 1
    sparse = opts.sparse == "always" or (opts.sparse == "auto" and flat_mask is not None)
    index: Stream | None = None
    runtime_index: np.ndarray | None = None
    index_bits = 0
    if sparse:
        keep = flat_mask if flat_mask is not None else np.ones(values.size, dtype=bool)
        index_bits, index = _best_index(keep, want)
        runtime_index = sparse_index.encode_gaps(keep, 8).astype(np.uint8)
        kept_symbols = symbols[keep]
        origin += f", sparse {keep.mean():.1%}"
    else:
        kept_symbols = symbols
        if codebook is not None and flat_mask is not None:  # dense codebook layout: pruned -> a zero entry
            zero = np.flatnonzero(codebook == 0)
            if zero.size == 0:
                codebook = np.append(codebook, 0)
                alphabet = codebook.size
                width = max(1, math.ceil(math.log2(alphabet)))
                zero = np.array([alphabet - 1])
            kept_symbols = np.where(flat_mask, symbols, int(zero[0]))
        origin += ", dense"
    stream = _stream(kept_symbols, alphabet, width, want)
    if state.coder == "rans":
        coded = _rans_stream(state, flat_mask, sparse, kept_symbols, width, alphabet, keep_rans)
        rom = len(stream.data) + (len(index.data) if index is not None else 0)
        if coded is not None and len(coded.data) < rom:
            stream, index, index_bits = coded, None, 0
        else:
            notes.append(
                f"{state.name}: rANS-coded in the .sqc; stored "
                + ("packed or Huffman-coded (smaller)" if keep_rans else "packed or Huffman-coded")
            )
    return Weights(
        name=state.name,
        shape=shape,
        values=values.reshape(shape),
        frac=tuple(int(f) for f in frac),
        mult=tuple(int(m) for m in mults),
        value_bits=value_bits,
        codebook=codebook,
        offset=offset,
        sparse=sparse,
        index_bits=index_bits,
        symbols=stream,
        index=index,
        origin=origin
        + (", rans" if stream.kind == "rans" else "")
        + (", huffman" if "huffman" in (stream.kind, index.kind if index else "") else ""),
        runtime_index=runtime_index,
    )
