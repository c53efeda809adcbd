"""The HLS target: the integer program as a Vitis HLS C++ project with the weights on chip, compressed.

``sqc lower model.sqc --target hls -o out/ --calib data.npz`` legalizes exactly as the C target does
(:mod:`sqc.targets.legalize`, ``targets/INTEGER.md``) and emits:

* ``model.cpp`` — one function per layer on ``ap_fixed``/``ap_int`` types with the program's formats,
  a top function ``sqc_top`` with ``#pragma HLS INTERFACE`` (AXI-stream or memory-mapped) and
  ``DATAFLOW`` between layers, and the ROMs;
* ``sqc_hls.h`` — the kernels (templates, copied verbatim from ``templates/``);
* ``tb.cpp`` with ``tb_input.bin``/``tb_output.bin`` — a C-simulation testbench and golden codes from the
  PyTorch integer simulator; ``build.tcl`` (``vitis_hls -f build.tcl``) and a ``Makefile`` for g++.

Weights stay compressed: a conv/linear layer is split into *lanes* (one multiplier each) that own
interleaved output channels; each lane's ROM bank holds its kept weights as narrow ``ap_uint<k>``
codebook indices (or fixed-point codes) and, when pruned, Deep Compression's relative index re-encoded
over the lane's rows at the width that minimises the layer's ROM. Huffman-coded streams are decoded at
lowering time (a datapath wants fixed-width fields): ROM holds k-bit indices. The reuse factor (hls4ml's
name: how many multiplications one multiplier performs per inference) sets the lane count. Re-laying the
program's streams into lanes is layout, as the C target's activation plan is; every number still comes
from legalization.
"""

from __future__ import annotations

import fnmatch
import heapq
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sqc.compiler.target import LowerReport, LowerRequest
from sqc.errors import SqcError
from sqc.formats import bitpack, huffman, sparse_index
from sqc.ir.names import check_names, identifier
from sqc.outputs import write_files
from sqc.targets.calib import calib_file
from sqc.targets.hls.resource_model import layer_estimate, report, summary
from sqc.targets.integer import (
    Add,
    Affine,
    Cat,
    Clamp,
    Conv,
    IntProgram,
    LayerNorm,
    Linear,
    Lut,
    LutInterp,
    MatMul,
    Mul,
    Op,
    Pad,
    Pool,
    PRelu,
    Requant,
    Softmax,
    SoftmaxPoly,
    Strided,
    Weights,
    chw,
)
from sqc.targets.legalize import LowerOptions
from sqc.targets.lowering import compared, integer_lowering, project_bytes
from sqc.targets.simulate import quantize_input, simulate

if TYPE_CHECKING:
    from sqc.ir.records import CompressedModel

STATIC_FILES = ("sqc_hls.h", "tb.cpp")
EXTRA_OPTIONS = ("reuse", "interface", "part", "clock", "tb_samples", "ap_types")


class HlsError(SqcError):
    """An option or layer the HLS writer cannot emit."""


def template(name: str) -> str:
    return resources.files("sqc.targets.hls").joinpath("templates", name).read_text(encoding="utf-8")


def find_ap_types(explicit: str | Path | None = None) -> Path | None:
    """The directory with ``ap_fixed.h``: ``explicit`` (``--option ap_types=DIR``, which must hold it),
    else ``$SQC_AP_TYPES``, else the hls4ml wheel's copy in sqc's own environment (not imported)."""
    import os

    if explicit:
        where = Path(explicit).expanduser().resolve()
        if not (where / "ap_fixed.h").is_file():
            raise HlsError(f"--option ap_types={explicit}: no ap_fixed.h in that directory")
        return where
    candidates = []
    if os.environ.get("SQC_AP_TYPES"):
        candidates.append(Path(os.environ["SQC_AP_TYPES"]))
    spec = find_spec("hls4ml")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "templates" / "vivado" / "ap_types")
    found = next((c for c in candidates if (c / "ap_fixed.h").is_file()), None)
    return found.resolve() if found is not None else None  # absolute: recorded in a Makefile elsewhere


# ------------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class HlsOptions:
    """``--option`` keys of the HLS writer (legalization's own keys are in ``LowerOptions``).

    reuse: ``16``, or a per-layer table ``fc1:4;fc2:1;*:16`` (globs on a layer or its weight tensor).
    interface: ``stream`` (AXI-stream ports) or ``mm`` (AXI memory-mapped, s_axilite control).
    part / clock: the FPGA part and clock period in ns written into ``build.tcl``.
    tb_samples: how many calibration inputs become the testbench's golden data.
    ap_types: the ap_fixed/ap_int header directory the emitted Makefile records (default: found as
    :func:`find_ap_types` finds it, at lowering time).
    """

    reuse: str = "1"
    interface: str = "stream"
    part: str = "xcu250-figd2104-2L-e"
    clock: float = 5.0
    tb_samples: int = 100
    table: tuple[tuple[str, int], ...] = field(default=(), repr=False)
    ap_types: str = ""

    @staticmethod
    def parse(extra: dict[str, str]) -> HlsOptions:
        reuse = extra.get("reuse", "1")
        table: list[tuple[str, int]] = []
        for item in reuse.split(";"):
            pattern, sep, value = item.strip().rpartition(":")
            pattern = pattern.strip() if sep else "*"
            try:
                factor = int(value)
            except ValueError:
                raise HlsError(f"--option reuse={reuse}: expected N or layer:N;layer:N") from None
            if factor < 1:
                raise HlsError(f"--option reuse={reuse}: a reuse factor is a positive integer")
            table.append((pattern, factor))
        interface = extra.get("interface", "stream")
        if interface not in ("stream", "mm"):
            raise HlsError(f"--option interface={interface}: expected stream or mm")
        part = extra.get("part", HlsOptions.part)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", part):
            raise HlsError(f"--option part={part}: not a part name")
        try:
            clock = float(extra.get("clock", HlsOptions.clock))
            samples = int(extra.get("tb_samples", HlsOptions.tb_samples))
        except ValueError:
            raise HlsError("--option clock / tb_samples: expected a number") from None
        if not 0 < clock < 1000:
            raise HlsError(f"--option clock={clock}: expected a period in ns")
        if samples < 1:
            raise HlsError(f"--option tb_samples={samples}: expected a positive count")
        return HlsOptions(reuse, interface, part, clock, samples, tuple(table), extra.get("ap_types", ""))

    def reuse_for(self, layer: str, tensor: str) -> int:
        """The last matching entry wins, so ``*:16;fc1:4`` reads naturally; no match means 1."""
        factor = 1
        for pattern, value in self.table:
            if fnmatch.fnmatchcase(layer, pattern) or fnmatch.fnmatchcase(tensor, pattern):
                factor = value
        return factor


# ------------------------------------------------------------------------------------------------
# weight layout: lanes over output channels


@dataclass
class Lanes:
    """One conv/linear kernel laid out for ``lanes`` multipliers (see the module docstring)."""

    lanes: int
    out: int
    per: int
    rows: int
    rowmap: np.ndarray  # lanes x rows output channels (``out`` where a lane has fewer)
    sparse: bool
    index_bits: int
    wraps: int
    counts: np.ndarray  # entries per lane
    idx: np.ndarray  # lanes x len_e relative-index entries (sparse only), zero padded
    sym: np.ndarray  # lanes x len_s symbols: codebook indices or signed fixed-point codes
    sym_bits: int
    sym_signed: bool
    kept: int

    @property
    def len_e(self) -> int:
        return self.idx.shape[1] if self.sparse else self.sym.shape[1]

    @property
    def len_s(self) -> int:
        return int(self.sym.shape[1])

    @property
    def count_bits(self) -> int:
        return max(1, int(self.len_e).bit_length())

    def bits(self) -> dict[str, int]:
        return {
            "symbols": self.lanes * self.len_s * self.sym_bits,
            "index": self.lanes * self.len_e * self.index_bits if self.sparse else 0,
            "counts": self.lanes * self.count_bits,
            "rowmap": self.rowmap.size * max(1, self.out.bit_length()),
        }


def decode_symbols(w: Weights) -> tuple[np.ndarray, np.ndarray]:
    """Kept flat positions and their ROM symbols, decoded from the program's streams (Huffman included)."""
    numel = int(np.prod(w.shape))
    if w.sparse:
        assert w.runtime_index is not None
        positions = sparse_index.decode_positions(w.runtime_index, 8, numel)
    else:
        positions = np.arange(numel, dtype=np.int64)
    s = w.symbols
    if s.kind == "huffman":
        symbols = huffman.deserialize(s.data, s.alphabet, s.count)
    else:
        symbols = bitpack.unpack(s.data, s.count, s.width, False)
    if symbols.size != positions.size:
        raise HlsError(f"tensor {w.name}: {symbols.size} symbols for {positions.size} kept weights")
    values = w.codebook[symbols] if w.codebook is not None else symbols + w.offset
    if not np.array_equal(values, w.values.reshape(-1)[positions]):
        raise HlsError(f"tensor {w.name}: ROM symbols do not decode to the program's weights")
    return positions, symbols if w.codebook is not None else values


def balance(load: np.ndarray, lanes: int, cap: int | None = None) -> list[np.ndarray]:
    """Output channels per lane: longest first onto the least-loaded lane with fewer than ``cap`` channels
    (LPT), so that the banks, which are padded to the longest lane, waste little. Channels without a kept
    weight go to no lane (the kernels give them their bias first). Each lane's channels ascending."""
    heap = [(0, p) for p in range(lanes)]
    owned: list[list[int]] = [[] for _ in range(lanes)]
    full: list[tuple[int, int]] = []
    for row in np.argsort(-load, kind="stable"):
        if load[row] == 0:
            break
        total, p = heapq.heappop(heap)
        while cap is not None and len(owned[p]) >= cap and heap:
            full.append((total, p))
            total, p = heapq.heappop(heap)
        owned[p].append(int(row))
        heapq.heappush(heap, (total + int(load[row]), p))
    return [np.array(sorted(rows), dtype=np.int64) for rows in owned]


def lay_out(w: Weights, reuse: int) -> Lanes:
    """Split a kernel into lanes over output channels, balanced by what each channel puts in the banks at
    every index width; keep the width whose banks (weights, index, counts, channel map) hold fewest bits."""
    out = int(w.shape[0])
    numel = int(np.prod(w.shape))
    per = numel // out
    positions, symbols = decode_symbols(w)
    kept = int(positions.size)
    mask = np.zeros(numel, dtype=bool)
    mask[positions] = True
    full = np.zeros(numel, dtype=np.int64)
    full[positions] = symbols
    mask2, full2 = mask.reshape(out, per), full.reshape(out, per)
    load = mask2.sum(axis=1)
    # A channel is never split between lanes, so no lane finishes before the longest channel: a reuse
    # below that buys no speed, only banks padded to the longest lane. Cap the lanes accordingly.
    busy = max(1, int((load > 0).sum()))
    lanes = min(busy, max(1, math.ceil(kept / max(reuse, int(load.max(initial=1))))))
    if w.codebook is not None:
        sym_bits, signed = max(1, math.ceil(math.log2(max(2, int(w.codebook.size))))), False
    else:
        sym_bits, signed = w.value_bits, True
    best: tuple[int, Lanes] | None = None
    for bits in range(1, 9) if w.sparse else (0,):
        # balance by weights, and by weights plus the fillers each channel needs at this index width
        fill = (1 << bits) - 1
        loads = [load, load + _row_fillers(mask2, fill) * (load > 0)] if w.sparse else [load]
        even = math.ceil(busy / lanes)
        # a lane's channel map is padded to the lane with most channels: also try capping that
        for owned in (balance(x, lanes, cap) for x in loads for cap in (None, even, 2 * even)):
            candidate = _lanes(owned, mask2, full2, bits, fill, sym_bits, signed, kept, w.sparse)
            cost = sum(candidate.bits().values())
            if best is None or cost < best[0]:
                best = (cost, candidate)
    assert best is not None
    return best[1]


def _row_fillers(mask2: np.ndarray, fill: int) -> np.ndarray:
    """Filler entries each channel needs at filler value ``fill`` (gaps counted from the channel start)."""
    out = np.zeros(mask2.shape[0], dtype=np.int64)
    rows, cols = np.nonzero(mask2)
    if rows.size == 0:
        return out
    first = np.r_[True, rows[1:] != rows[:-1]]
    prev = np.r_[-1, cols[:-1]]
    gaps = np.where(first, cols, cols - prev - 1)
    np.add.at(out, rows, gaps // fill)
    return out


def _lanes(
    owned: list[np.ndarray],
    mask2: np.ndarray,
    full2: np.ndarray,
    bits: int,
    fill: int,
    sym_bits: int,
    signed: bool,
    kept: int,
    sparse: bool,
) -> Lanes:
    out, per = mask2.shape
    lanes = len(owned)
    rows = max(1, max(r.size for r in owned))
    rowmap = np.full((lanes, rows), out, dtype=np.int64)
    for p, r in enumerate(owned):
        rowmap[p, : r.size] = r
    lane_masks = [mask2[r].reshape(-1) for r in owned]
    sym = _pad([full2[r].reshape(-1)[m] for r, m in zip(owned, lane_masks, strict=True)])
    if not sparse:
        counts = np.array([m.size for m in lane_masks], dtype=np.int64)
        gaps = [np.zeros(m.size, dtype=np.int64) for m in lane_masks]
        return Lanes(
            lanes, out, per, rows, rowmap, False, 0, _wraps(gaps, per, None), counts,
            np.zeros((lanes, 0)), sym, sym_bits, signed, kept,
        )  # fmt: skip
    entries = [sparse_index.encode_gaps(m, bits).astype(np.int64) for m in lane_masks]
    counts = np.array([e.size for e in entries], dtype=np.int64)
    return Lanes(
        lanes, out, per, rows, rowmap, True, bits, _wraps(entries, per, fill), counts, _pad(entries), sym,
        sym_bits, signed, kept,
    )  # fmt: skip


def _pad(rows: list[np.ndarray]) -> np.ndarray:
    width = max(1, max(r.size for r in rows))
    table = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        table[i, : r.size] = r
    return table


def _wraps(entries: list[np.ndarray], per: int, fill: int | None) -> int:
    """The most channel boundaries one entry crosses: the kernels unroll their boundary check that often.

    After entry ``i`` a lane stands at ``a_i = a_{i-1} + mac_{i-1} + g_i`` (a weight advances one past
    itself), in channel ``a_i // per``."""
    most = 1
    for g in entries:
        if g.size == 0:
            continue
        mac = np.ones(g.size, dtype=np.int64) if fill is None else (g != fill).astype(np.int64)
        step = g + np.concatenate([[0], mac[:-1]])
        rows = np.cumsum(step) // per
        most = max(most, int(np.diff(np.concatenate([[0], rows])).max()))
    return most


# ------------------------------------------------------------------------------------------------
# emission


_CARRIERS_SIGNED = ((8, "signed char"), (16, "short"), (32, "int"), (64, "long long"))
_CARRIERS_UNSIGNED = ((8, "unsigned char"), (16, "unsigned short"), (32, "unsigned int"))


def _ident(name: str) -> str:
    """The HLS identifier stem of a node name or file name (the mapping :mod:`sqc.ir.names` checks)."""
    return identifier(name)


def _ap(values: np.ndarray, bits: int | None = None, signed: bool | None = None) -> tuple[str, str, int]:
    """(ap type, C-simulation carrier, width) of the narrowest type holding ``values``."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
    if signed is None:
        signed = lo < 0
    if bits is None:
        bits = max(1, hi.bit_length(), (~lo).bit_length() if lo < 0 else 0) + (1 if signed else 0)
    if signed and not (-(1 << (bits - 1)) <= lo and hi < 1 << (bits - 1)):
        raise HlsError(f"values {lo}..{hi} do not fit ap_int<{bits}>")
    if not signed and not (lo >= 0 and hi < 1 << bits):
        raise HlsError(f"values {lo}..{hi} do not fit ap_uint<{bits}>")
    carrier = next(c for w, c in (_CARRIERS_SIGNED if signed else _CARRIERS_UNSIGNED) if bits <= w)
    return (f"ap_int<{bits}>" if signed else f"ap_uint<{bits}>"), carrier, bits


@dataclass
class _Writer:
    program: IntProgram
    opts: HlsOptions
    roms: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    other_bits: int = 0
    readers: dict[str, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)

    # -- ROMs ---------------------------------------------------------------------------------
    def rom(
        self, name: str, values: np.ndarray, bits: int | None = None, signed: bool | None = None
    ) -> tuple[str, int]:
        """A ``static const`` ROM of the narrowest ap type; returns its name and its width in bits."""
        flat = np.asarray(values, dtype=np.int64).reshape(-1)
        if flat.size == 0:
            flat = np.zeros(1, dtype=np.int64)
        ap, carrier, width = _ap(flat, bits, signed)
        lines = [", ".join(str(int(v)) for v in flat[i : i + 24]) for i in range(0, flat.size, 24)]
        body = ",\n    ".join(lines)
        self.roms.append(f"SQC_ROM({ap}, {carrier}, {name}, {flat.size}) = {{\n    {body}\n}};")
        return name, width

    def counted_rom(self, name: str, values: np.ndarray, bits: int | None = None, signed: bool = True) -> str:
        """A ROM of a non-weight table whose bits count in the report's other ROM."""
        rom, width = self.rom(name, values, bits=bits, signed=signed)
        self.other_bits += width * max(1, int(np.asarray(values).size))
        return rom

    def requant(self, base: str, rq: Requant) -> tuple[str, str, str, int]:
        bias, wb = self.rom(f"{base}_bias", rq.bias, signed=True)
        mult, wm = self.rom(f"{base}_mult", rq.mult, signed=True)
        shift, ws = self.rom(f"{base}_shift", rq.shift, signed=True)
        return bias, mult, shift, (wb + wm + ws) * int(rq.bias.size)

    # -- buffers --------------------------------------------------------------------------------
    def ctype(self, tensor: str) -> str:
        return f"t_{_ident(self.program.tensors[tensor].slot)}"

    def source(self, tensor: str) -> str:
        """The buffer a reader of ``tensor`` uses: its own copy when the slot has several readers."""
        slot = self.program.tensors[tensor].slot
        base = f"b_{_ident(slot)}"
        if self.readers.get(slot, 0) <= 1:
            return base
        k = self.served.get(slot, 0)
        self.served[slot] = k + 1
        return f"c{k}_{_ident(slot)}"

    def declare(self, slot: str) -> None:
        """A producer's buffer, and a split function that copies it for each reader (one per channel)."""
        t = next(t for t in self.program.tensors.values() if t.slot == slot)
        ctype, base, n = f"t_{_ident(slot)}", f"b_{_ident(slot)}", t.numel
        self.buffers.append(f"    {ctype} {base}[{n}];")
        count = self.readers.get(slot, 0)
        if count > 1:
            copies = [f"c{k}_{_ident(slot)}" for k in range(count)]
            self.buffers.extend(f"    {ctype} {c}[{n}];" for c in copies)
            params = ", ".join(f"{ctype} o{k}[{n}]" for k in range(count))
            body = " ".join(f"o{k}[i] = v;" for k in range(count))
            self.functions.append(
                f"/* {slot}: {count} readers, one copy each (DATAFLOW channels have one consumer) */\n"
                f"static void s_{_ident(slot)}(const {ctype} x[{n}], {params})\n{{\n"
                f"    for (int i = 0; i < {n}; i++) {{\n#pragma HLS PIPELINE II = 1\n"
                f"        {ctype} v = x[i];\n        {body}\n    }}\n}}\n"
            )
            self.calls.append(f"    s_{_ident(slot)}({base}, {', '.join(copies)});")

    # -- layers ---------------------------------------------------------------------------------
    def layer(self, op: Op) -> None:
        p = self.program
        name = _ident(op.name)
        ins = [p.tensors[i] for i in op.inputs]
        out = p.tensors[op.output]
        params = [f"const {self.ctype(t.name)} in{k}[{t.numel}]" for k, t in enumerate(ins)]
        params.append(f"{self.ctype(out.name)} out[{out.numel}]")
        body: list[str] = []
        pragmas: list[str] = []
        for k, t in enumerate(ins):
            body.append(f"    sqc::code_t x{k}[{t.numel}];")
        body.append(f"    sqc::code_t y[{out.numel}];")
        for k, t in enumerate(ins):
            body.append(f"    sqc::to_codes<{t.numel}>(in{k}, x{k});")
        comment = f"{op.name}: {type(op).__name__}"
        base = f"r_{name}"
        if isinstance(op, (Conv, Linear)):
            comment, kernel = self.weighted(op, base, pragmas)
            body.append(kernel)
        elif isinstance(op, Affine):
            b, m, s, bits = self.requant(base, op.requant)
            self.other_bits += bits
            rq = op.requant
            body.append(
                f"    sqc::affine<{op.channels}, {op.inner}>(x0, y, {b}, {m}, {s}, {rq.lo}, {rq.hi});"
            )
        elif isinstance(op, Clamp):
            body.append(f"    sqc::clamp<{out.numel}>(x0, y, {op.lo}, {op.hi});")
        elif isinstance(op, PRelu):
            mult = self.counted_rom(f"{base}_mult", op.mult)
            body.append(f"    sqc::prelu<{op.channels}, {op.inner}>(x0, y, {mult}, {op.shift});")
        elif isinstance(op, Pool):
            # one type for the four window tables (the kernel takes them as one template type)
            top = max(int(np.max(getattr(op, key))) for key in ("ys", "ye", "xs", "xe"))
            names = [
                self.counted_rom(
                    f"{base}_{key}", getattr(op, key), bits=max(1, top.bit_length()), signed=False
                )
                for key in ("ys", "ye", "xs", "xe")
            ]
            if op.divisor is None:
                div, avg = self.rom(f"{base}_div", np.zeros(1), signed=False)[0], "false"
            else:
                div, avg = self.counted_rom(f"{base}_div", op.divisor, signed=False), "true"
            dims = ", ".join(str(v) for v in (op.channels, *op.in_hw, *op.out_hw))
            body.append(f"    sqc::pool<{dims}, {avg}>(x0, y, {', '.join(names)}, {div});")
        elif isinstance(op, Add):
            sub = "true" if op.subtract else "false"
            body.append(
                f"    sqc::add<{out.numel}>(x0, x1, y, {op.scale_a}, {op.scale_b}, {op.shift}, {sub});"
            )
        elif isinstance(op, Mul):
            body.append(f"    sqc::mul<{out.numel}>(x0, x1, y, {op.shift});")
        elif isinstance(op, Cat):
            total, start = sum(op.inner), 0
            for k, (inner, shift) in enumerate(zip(op.inner, op.shifts, strict=True)):
                body.append(f"    sqc::cat_part<{op.outer}, {inner}, {total}, {start}>(x{k}, y, {shift});")
                start += inner
        elif isinstance(op, Lut):
            table = self.counted_rom(f"{base}_lut", op.table, bits=p.act_bits)
            body.append(f"    sqc::lut<{out.numel}>(x0, y, {table});")
        elif isinstance(op, Softmax):
            table = self.counted_rom(f"{base}_exp", op.exp_table, signed=False)
            body.append(f"    sqc::softmax<{op.rows}, {op.cols}>(x0, y, {table}, {out.fmt.frac});")
        elif isinstance(op, Pad):
            dims = ", ".join(str(v) for v in (op.channels, *op.in_hw, *op.pads))
            body.append(f"    sqc::pad<{dims}>(x0, y, {op.fill});")
        elif isinstance(op, SoftmaxPoly):
            dims = f"{op.rows}, {op.cols}"
            args = f"{op.ln2}, {op.qb}, {op.qc}LL, {op.base}, {out.fmt.frac}"
            body.append(f"    sqc::softmax_iexp<{dims}>(x0, y, {args});")
        elif isinstance(op, LayerNorm):
            mult, bias, shift = (
                self.counted_rom(f"{base}_{k}", getattr(op, k)) for k in ("mult", "bias", "shift")
            )
            dims = f"{op.rows}, {op.cols}, {op.frac}"
            body.append(f"    sqc::layer_norm<{dims}>(x0, y, {op.eps}LL, {mult}, {bias}, {shift});")
        elif isinstance(op, MatMul):
            dims = f"{op.batch}, {op.m}, {op.k}, {op.n}"
            body.append(f"    sqc::matmul<{dims}>(x0, x1, y, {op.mult}, {op.shift});")
        elif isinstance(op, LutInterp):
            table = self.counted_rom(f"{base}_knots", op.table)
            body.append(f"    sqc::lut_interp<{out.numel}, {op.shift}>(x0, y, {table});")
        elif isinstance(op, Strided):
            dims = self.counted_rom(f"{base}_dims", np.array(op.dims))
            steps = self.counted_rom(f"{base}_strides", np.array(op.strides))
            rank, n_in = len(op.dims), ins[0].numel
            body.append(
                f"    sqc::strided<{out.numel}, {n_in}, {rank}>(x0, y, {dims}, {steps}, {op.offset});"
            )
        else:  # legalization only produces the ops above
            raise HlsError(f"node {op.name}: the HLS writer has no kernel for {type(op).__name__}")
        body.append(f"    sqc::to_values<{out.numel}>(y, out);")
        self.functions.append(
            f"/* {comment} */\nstatic void l_{name}({', '.join(params)})\n{{\n#pragma HLS INLINE off\n"
            + "".join(f"{line}\n" for line in pragmas)
            + "\n".join(body)
            + "\n}\n"
        )
        args = [self.source(i) for i in op.inputs]
        self.calls.append(f"    l_{name}({', '.join(args)}, b_{_ident(out.slot)});")
        self.declare(out.slot)

    def weighted(self, op: Conv | Linear, base: str, pragmas: list[str]) -> tuple[str, str]:
        w = op.weights
        reuse = self.opts.reuse_for(op.name, w.name)
        lanes = lay_out(w, reuse)
        sym, _ = self.rom(f"{base}_sym", lanes.sym, bits=lanes.sym_bits, signed=lanes.sym_signed)
        if lanes.sparse:
            idx, _ = self.rom(f"{base}_idx", lanes.idx, bits=lanes.index_bits, signed=False)
        else:
            idx, _ = self.rom(f"{base}_idx", np.zeros(1), bits=1, signed=False)
        cnt, _ = self.rom(f"{base}_cnt", lanes.counts, bits=lanes.count_bits, signed=False)
        rmap, _ = self.rom(f"{base}_rows", lanes.rowmap, bits=max(1, lanes.out.bit_length()), signed=False)
        book_bits = 0
        if w.codebook is not None:
            book, width = self.rom(f"{base}_book", w.codebook, bits=w.value_bits, signed=True)
            book_bits = width * int(w.codebook.size)
            weight = f"return w_t({book}[s.to_uint()]);"
        else:
            weight = "return w_t(s);"
        b, m, s, epi_bits = self.requant(base, op.requant)
        sym_t = f"ap_int<{lanes.sym_bits}>" if lanes.sym_signed else f"ap_uint<{lanes.sym_bits}>"
        fill = (1 << lanes.index_bits) - 1 if lanes.sparse else 0
        traits = (
            f"struct {base}_l {{\n"
            f"    static const int LANES = {lanes.lanes}, LEN = {lanes.len_e}, SLEN = {lanes.len_s}, "
            f"ROWS = {lanes.rows};\n"
            f"    static const int PER = {lanes.per}, OUT = {lanes.out}, FILL = {fill}, "
            f"WRAPS = {lanes.wraps};\n"
            f"    static const int LO = {op.requant.lo}, HI = {op.requant.hi};\n"
            f"    static const bool SPARSE = {'true' if lanes.sparse else 'false'};\n"
            f"    typedef {sym_t} sym_t;\n"
            f"    typedef ap_uint<{max(1, lanes.index_bits)}> idx_t;\n"
            f"    typedef ap_int<{w.value_bits}> w_t;\n"
            f"    static w_t weight(sym_t s)\n    {{\n#pragma HLS INLINE\n        {weight}\n    }}\n}};"
        )
        self.roms.append(traits)
        factor = lanes.lanes
        pragmas.append(f"#pragma HLS ARRAY_PARTITION variable = {sym} block factor = {factor}")
        if lanes.sparse:
            pragmas.append(f"#pragma HLS ARRAY_PARTITION variable = {idx} block factor = {factor}")
        pragmas.append(f"#pragma HLS ARRAY_PARTITION variable = {cnt} complete")
        pragmas.append(f"#pragma HLS ARRAY_PARTITION variable = {rmap} block factor = {factor}")
        pragmas.append("#pragma HLS ARRAY_PARTITION variable = x0 complete")
        src = self.program.tensors[op.inputs[0]]
        if isinstance(op, Linear):
            n_in, n_out = src.numel // op.rows, self.program.tensors[op.output].numel // op.rows
            kernel = f"    sqc::linear<{base}_l, {n_in}>(x0, y, {sym}, {idx}, {cnt}, {rmap}, {b}, {m}, {s});"
            if op.rows > 1:  # the same product on every row of a (..., features) tensor
                kernel = (
                    f"    for (int r = 0; r < {op.rows}; r++) {{\n"
                    + kernel.replace("(x0, y,", f"(x0 + r * {n_in}, y + r * {n_out},")
                    + "\n    }"
                )
            macs_dense = int(np.prod(w.shape))
            kind = "linear"
        else:
            cin, h, wd = chw(src.shape)
            cout, oh, ow = chw(self.program.tensors[op.output].shape)
            kh, kw = (1, w.shape[2]) if len(w.shape) == 3 else w.shape[2:4]
            fields = {
                "CIN": cin, "H": h, "W": wd, "COUT": cout, "OH": oh, "OW": ow, "KH": kh, "KW": kw,
                "SH": op.stride[0], "SW": op.stride[1], "PH": op.padding[0], "PW": op.padding[1],
                "DH": op.dilation[0], "DW": op.dilation[1], "GROUPS": op.groups,
            }  # fmt: skip
            consts = ", ".join(f"{k} = {v}" for k, v in fields.items())
            self.roms.append(f"struct {base}_c {{\n    static const int {consts};\n}};")
            kernel = f"    sqc::conv<{base}_l, {base}_c>(x0, y, {sym}, {idx}, {cnt}, {rmap}, {b}, {m}, {s});"
            macs_dense = int(np.prod(w.shape))
            kind = "conv"
        bits = lanes.bits()
        bits["codebook"] = book_bits
        self.layers.append(
            {
                "layer": op.name,
                "tensor": w.name,
                "kind": kind,
                "storage": w.origin,
                "weights": int(np.prod(w.shape)),
                "kept": lanes.kept,
                "reuse": reuse,
                "multipliers": lanes.lanes,
                "cycles_per_lane": int(lanes.len_e),
                "symbol_bits": lanes.sym_bits,
                "index_bits": lanes.index_bits,
                **layer_estimate(lanes, bits, epi_bits, macs_dense, reuse),
            }
        )
        rom_bits = sum(bits.values())
        comment = (
            f"{op.name}: {type(op).__name__} {w.shape}, {w.origin}; {lanes.lanes} lanes (reuse {reuse}), "
            f"{lanes.len_e} entries each; ROM {rom_bits} bits"
        )
        return comment, kernel

    # -- the top function -----------------------------------------------------------------------
    def top(self) -> tuple[str, str, str, str]:
        p = self.program
        inp, outp = p.tensors[p.input], p.tensors[p.output]
        n_in, n_out = inp.numel, outp.numel
        in_buf = f"b_{_ident(inp.slot)}"
        if self.opts.interface == "stream":
            proto = "void sqc_top(hls::stream<sqc_input_t> &in, hls::stream<sqc_output_t> &out)"
            ports = [
                "#pragma HLS INTERFACE mode = axis port = in",
                "#pragma HLS INTERFACE mode = axis port = out",
                "#pragma HLS INTERFACE mode = ap_ctrl_hs port = return",
            ]
            read = f"    sqc::read_stream<{n_in}>(in, {in_buf});"
            write = f"    sqc::write_stream<{n_out}>(%s, out);"
        else:
            proto = f"void sqc_top(const sqc_input_t in[{n_in}], sqc_output_t out[{n_out}])"
            ports = [
                f"#pragma HLS INTERFACE mode = m_axi port = in offset = slave bundle = gmem0 depth = {n_in}",
                f"#pragma HLS INTERFACE mode = m_axi port = out offset = slave bundle = gmem1 "
                f"depth = {n_out}",
                "#pragma HLS INTERFACE mode = s_axilite port = in bundle = control",
                "#pragma HLS INTERFACE mode = s_axilite port = out bundle = control",
                "#pragma HLS INTERFACE mode = s_axilite port = return bundle = control",
            ]
            read = f"    sqc::copy<{n_in}>(in, {in_buf});"
            write = f"    sqc::copy<{n_out}>(%s, out);"
        return proto, "\n".join(ports), read, write


def write_project(
    program: IntProgram,
    out_dir: Path,
    *,
    options: HlsOptions | None = None,
    golden: tuple[np.ndarray, np.ndarray] | None = None,
    model_name: str = "model",
    force: bool = False,
    inputs: Iterable[Path | None] = (),
) -> dict:
    """Write the Vitis HLS project for ``program``; ``golden`` = (input codes, output codes) for ``tb``.
    ``inputs`` are the command's input files: none of them is overwritten."""
    check_names((w.name for w in program.weights), "target hls: ")
    opts = options or HlsOptions()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HlsError(f"{out_dir}: exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise HlsError(f"{out_dir}: already exists and is not empty (use --force to replace its files)")
    p = program
    wr = _Writer(p, opts)
    for op in p.ops:
        for name in op.inputs:
            slot = p.tensors[name].slot
            wr.readers[slot] = wr.readers.get(slot, 0) + 1
    out_slot = p.tensors[p.output].slot
    wr.readers[out_slot] = wr.readers.get(out_slot, 0) + 1
    inp, outp = p.tensors[p.input], p.tensors[p.output]
    proto, ports, read, write = wr.top()
    wr.declare(inp.slot)
    wr.calls.insert(0, read)
    for op in p.ops:
        wr.layer(op)
    wr.calls.append(write % wr.source(p.output))
    types = []
    seen: set[str] = set()
    for t in p.tensors.values():
        if t.slot not in seen:
            seen.add(t.slot)
            types.append(f"typedef ap_fixed<{t.fmt.bits}, {t.fmt.bits - t.fmt.frac}> t_{_ident(t.slot)};")
    bits = p.act_bits
    header = "\n".join(
        [
            f"/* {model_name}: generated by sqc (target hls). Integer semantics: targets/INTEGER.md in the",
            " * sqc sources; inputs and outputs are ap_fixed in the calibrated formats (value = code *",
            " * 2^-frac). */",
            "#ifndef SQC_MODEL_H",
            "#define SQC_MODEL_H",
            "",
            "#include <ap_fixed.h>",
            "#include <ap_int.h>",
            "#include <hls_stream.h>",
            "",
            f"#define SQC_ACT_BITS {bits}",
            f"#define SQC_INPUT_SIZE {inp.numel}  /* {'x'.join(map(str, inp.shape))} */",
            f"#define SQC_OUTPUT_SIZE {outp.numel}  /* {'x'.join(map(str, outp.shape))} */",
            f"#define SQC_INPUT_FRAC {inp.fmt.frac}",
            f"#define SQC_OUTPUT_FRAC {outp.fmt.frac}",
            f"#define SQC_INTERFACE_STREAM {1 if opts.interface == 'stream' else 0}",
            "",
            f"typedef ap_fixed<{bits}, {bits - inp.fmt.frac}> sqc_input_t;",
            f"typedef ap_fixed<{bits}, {bits - outp.fmt.frac}> sqc_output_t;",
            "",
            f"{proto};",
            "",
            "#endif",
            "",
        ]
    )
    notes = "\n".join(f" * {line}" for line in [*p.notes, f"options: {p.options}"]).replace("*/", "* /")
    source = "\n".join(
        [
            f"/* {model_name}: generated by sqc (target hls); kernels in sqc_hls.h.",
            notes,
            " */",
            '#include "model.h"',
            '#include "sqc_hls.h"',
            "",
            "/* ---- per-tensor formats: ap_fixed<W, W - frac> ---- */",
            *types,
            "",
            "/* ---- ROM: weights as lanes of narrow codebook indices / codes and relative indices ---- */",
            *wr.roms,
            "",
            "/* ---- layers ---- */",
            *wr.functions,
            proto,
            "{",
            ports,
            "#pragma HLS DATAFLOW",
            *wr.buffers,
            *wr.calls,
            "}",
            "",
        ]
    )
    files = {"model.h": header.encode("utf-8"), "model.cpp": source.encode("utf-8")}
    tcl = template("build.tcl.tmpl")
    for key, value in {"MODEL": _ident(model_name), "PART": opts.part, "CLOCK": f"{opts.clock:g}"}.items():
        tcl = tcl.replace("{{" + key + "}}", value)
    files["build.tcl"] = tcl.encode("utf-8")
    for name in STATIC_FILES:
        files[name] = resources.files("sqc.targets.hls").joinpath("templates", name).read_bytes()
    headers = find_ap_types(opts.ap_types or None)
    files.update(build_files(model_name, headers))
    dtype = np.int8 if bits == 8 else np.int16
    samples = 0
    if golden is not None:
        codes_in, codes_out = golden
        samples = int(codes_in.shape[0])
        files["tb_input.bin"] = np.asarray(codes_in, dtype=dtype).tobytes()
        files["tb_output.bin"] = np.asarray(codes_out, dtype=dtype).tobytes()
    write_files(out_dir, files, force=force, inputs=inputs)
    result = report(wr.layers, wr.other_bits, opts, samples)
    result["ap_types"] = str(headers) if headers is not None else None
    return result


def build_files(model_name: str, headers: Path | None) -> dict[str, bytes]:
    """``Makefile`` and ``README.md`` with the ap_types directory found at lowering time recorded, so
    that ``make csim`` builds wherever the project lands, whatever ``python3`` is on PATH there
    (``make csim AP_TYPES=...`` overrides it)."""
    where = "" if headers is None else str(headers)
    if any(c in where for c in '"\n\r'):
        raise HlsError(f"{where}: an ap_types path with quotes or line breaks cannot go in a Makefile")
    makefile = template("Makefile").replace("{{AP_TYPES}}", where.replace("$", "$$").replace("#", "\\#"))
    status = f"AP_TYPES ?= {where}" if headers is not None else "(none was found: pass AP_TYPES=... to make)"
    readme = (
        template("README.md.tmpl").replace("{{MODEL}}", model_name).replace("{{AP_TYPES_STATUS}}", status)
    )
    return {"Makefile": makefile.encode("utf-8"), "README.md": readme.encode("utf-8")}


class HlsTarget:
    """Registered as target ``hls``: ``sqc lower model.sqc --target hls -o out/ --calib data.npz``."""

    name = "hls"
    takes_calib = True
    takes_options = True

    def lower(self, request: LowerRequest) -> LowerReport:
        opts, extra = LowerOptions.parse(list(request.options), EXTRA_OPTIONS)
        hls = HlsOptions.parse(extra)
        lowering = integer_lowering(
            request, "hls", options=(opts, extra), samples=hls.tb_samples, check=_laid_out
        )
        program, output = lowering.program, Path(request.output)
        golden_x = lowering.data.x[: hls.tb_samples]
        codes = quantize_input(program, golden_x).reshape(golden_x.shape[0], -1).numpy()
        want = simulate(program, golden_x).reshape(golden_x.shape[0], -1).numpy()
        result = write_project(
            program,
            output,
            options=hls,
            golden=(codes, want),
            model_name=Path(request.source).stem,
            force=request.force,
            inputs=(request.source, calib_file(request.calib)),
        )
        result["accuracy"] = compared(lowering)
        coded = sorted({w.name for w in program.weights if w.symbols.kind == "huffman"})
        notes = list(program.notes)
        if coded:
            notes.append(
                f"Huffman-coded streams decoded at lowering time ({', '.join(coded)}): ROM holds k-bit "
                "indices, a datapath reads fixed-width fields"
            )
        result["notes"] = notes
        result["options"] = {**program.options, **lowering.extra}
        result["output_dir"] = str(output)
        return LowerReport("hls", str(output), project_bytes(output), summary(result), result)


def _laid_out(model: CompressedModel) -> None:
    """The HLS datapath reads fixed-width fields: a float tensor the coder left without codes cannot be
    laid out (Huffman-coded ones are decoded at lowering time)."""
    for state in model.tensors.values():
        if state.coder not in ("raw", "huffman") and state.codes is None:
            raise HlsError(f"tensor {state.name}: coder {state.coder} gives no integer codes to lay out")
