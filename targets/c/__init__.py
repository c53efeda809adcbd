"""The C target: legalize a ``.sqc`` file into an integer program, then emit a self-contained C99 project.

The writer only emits: every number it prints was decided by legalization (:mod:`sqc.targets.legalize`),
and the kernels are the fixed text in ``templates/`` (copied verbatim). What it adds is layout: where
each activation lives in one static buffer (first fit over the tensors' live ranges), where decoded
weights go in the start-up arena, and how many bytes of ROM and RAM that makes.

ROM holds the weights as the ``.sqc`` format stores them — codebook plus packed, Huffman-coded or
context-coded rANS indices (or fixed-point codes), the relative sparse index — and ``sqc_init`` decodes
them once into an arena (static, or the application's via ``sqc_init_arena``) of one slot per runtime
entry (a byte per weight up to 8 bits, two above, plus a byte of sparse entry), which the kernels walk
directly, skipping pruned weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sqc.compiler.target import LowerReport, LowerRequest
from sqc.errors import SqcError
from sqc.formats import rans
from sqc.ir.names import check_names, identifier
from sqc.outputs import write_files
from sqc.targets.calib import calib_file
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
    Pad,
    Pool,
    PRelu,
    Requant,
    Softmax,
    SoftmaxPoly,
    Stream,
    Strided,
    Weights,
    chw,
)
from sqc.targets.lowering import compared, integer_lowering, integer_report, project_bytes
from sqc.targets.simulate import regular_windows

if TYPE_CHECKING:
    pass

LINEAR_LAYOUTS = ("auto", "column", "row", "entries")
"""How sparse linear layers are laid out in RAM (writer option ``linear``): ``auto`` = ``column`` (by input
column, zero inputs skipped), ``row`` (by output row) or ``entries`` (the decoded relative index walked as
it is, no re-layout). By column was the fastest on both LeNets, even where few inputs are zero
(``benchmarks/bench_c_target.py`` measures all three)."""
STATIC_FILES = ("sqc_kernels.c", "sqc_kernels.h", "sqc_weights.inc", "main.c", "Makefile")
_CTYPES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "int64_t": 8, "sqc_act_t": 0}


def template(name: str) -> str:
    return resources.files("sqc.targets.c").joinpath("templates", name).read_text(encoding="utf-8")


def _ident(name: str) -> str:
    """The C identifier stem of a tensor or node name (the mapping :mod:`sqc.ir.names` checks names
    against)."""
    return "t_" + identifier(name)


def _unique_declarations(rom: list[str]) -> None:
    """Refuse to emit a project in which two ROM objects got one identifier (it would not compile,
    while ``lower`` reported success): the name rule prevents it for tensor names, and this checks the
    whole namespace, node-derived names included."""
    seen: set[str] = set()
    for declaration in rom:
        found = _DECLARED.match(declaration)
        if found is None:
            continue
        if found.group(1) in seen:
            raise SqcError(f"target c: two objects would both be named {found.group(1)} in model.c")
        seen.add(found.group(1))


_DECLARED = re.compile(r"static const \w+ (\w+)")


def plan_activations(program: IntProgram) -> tuple[dict[str, int], int]:
    """Offsets of every activation slot in one buffer: first fit, a slot is free after its last reader."""
    ops = program.ops
    size: dict[str, int] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for t in program.tensors.values():
        size[t.slot] = max(size.get(t.slot, 0), t.numel)
    first[program.tensors[program.input].slot] = -1
    for i, op in enumerate(ops):
        first.setdefault(program.tensors[op.output].slot, i)
        for name in op.inputs:
            slot = program.tensors[name].slot
            last[slot] = max(last.get(slot, -1), i)
    last[program.tensors[program.output].slot] = len(ops)
    offsets: dict[str, int] = {}
    total = 0
    for slot in sorted(first, key=lambda s: first[s]):
        start = first[slot]
        busy = sorted(
            (offsets[s], offsets[s] + size[s])
            for s in offsets
            if last.get(s, first[s]) >= start  # still read at or after this slot is written
        )
        offset = 0
        for lo, hi in busy:
            if offset + size[slot] <= lo:
                break
            offset = max(offset, hi)
        offsets[slot] = offset
        total = max(total, offset + size[slot])
    return offsets, total


def rans_scratch_words(numel: int, cols: int, sparse: bool, width: int, mode: int) -> int:
    """32-bit words of start-up scratch ``sqc_rans_decode`` needs (``sqc_rans_scratch`` in C): per lane
    states and cursors, the mask contexts and column statistics, the value contexts and a round's
    decisions. Only used inside ``sqc_init``."""
    lanes = rans.lane_count(numel)
    value_mode = mode & 3  # the stream's mode byte: value mode | mask model << 2
    m = min(value_mode, width)
    none = (1 << m) if value_mode else 0
    mask = 6 * lanes + 140 + 2 * cols if sparse else 0
    values = 4 * lanes + 2 * lanes * width + ((none + 1) << width) * 2
    return 10 * lanes + max(mask, values)


@dataclass(frozen=True)
class ConvGeometry:
    """What the C convolution kernel reads instead of dividing per weight: per tap ``(ky, kx)`` the
    input offset of its first valid output, that output's accumulator offset, and the valid rows and
    columns (``taps``, four int32 each); the accumulator row stride and how many accumulators are used.

    ``wide`` > 0 when the stride is 1 and no tap is clipped by padding: the accumulator plane then takes
    the input's row stride, so every tap covers one contiguous run of ``wide`` accumulators (rounded up
    to a multiple of 16 so that the vector loop needs no scalar tail); the columns past the output width
    receive products that are never read. Each accumulator still receives at most one product per
    weight, so legalization's overflow bound holds for them too. The rounding reads up to ``overread``
    activations past the end of a plane, which the activation buffer provides as slack.
    """

    taps: np.ndarray
    row_stride: int
    span: int
    wide: int
    overread: int


def conv_taps(
    hw: tuple[int, int],
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> ConvGeometry:
    (h, w), (oh, ow), (kh, kw) = hw, out_hw, kernel
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation

    def valid(n: int, outs: int, off: int, s: int) -> tuple[int, int]:
        first = 0 if off >= 0 else -(off // s)  # ceil(-off / s)
        end = min(outs, (n - 1 - off) // s + 1) if n - 1 - off >= 0 else 0
        return first, max(first, end)

    ranges = []
    for ky in range(kh):
        for kx in range(kw):
            offy, offx = ky * dh - ph, kx * dw - pw
            ranges.append((offy, offx, *valid(h, oh, offy, sh), *valid(w, ow, offx, sw)))
    full = all(y0 == 0 and y1 == oh and x0 == 0 and x1 == ow for _, _, y0, y1, x0, x1 in ranges)
    if sh == 1 and sw == 1 and full and oh > 0 and ow > 0:
        run = (oh - 1) * w + ow
        wide = -(-run // 16) * 16
        taps = [(offy * w + offx, 0, 1, wide) for offy, offx, *_ in ranges]
        return ConvGeometry(np.array(taps, dtype=np.int64), w, max(oh * w, wide), wide, wide - run)
    taps = []
    for offy, offx, y0, y1, x0, x1 in ranges:
        if y1 <= y0 or x1 <= x0:
            taps.append((0, 0, 0, 0))
        else:
            taps.append(((y0 * sh + offy) * w + x0 * sw + offx, y0 * ow + x0, y1 - y0, x1 - x0))
    return ConvGeometry(np.array(taps, dtype=np.int64), ow, max(1, oh * ow), 0, 0)


@dataclass(frozen=True)
class VectorGeometry:
    """Where the SSE2/AVX2 convolution reads: an int16 copy of the input, made once per call, padded and
    split by stride phase so that every convolution becomes an unpadded stride-1 one. Per input channel
    the copy holds ``sh * sw`` phase planes of ``qh`` x ``qw`` codes; phase ``(py, px)`` at ``(i, j)``
    is the padded input at ``(i * sh + py, j * sw + px)`` (zero outside the input: the padding).
    Output ``(oy, ox)`` of tap ``(ky, kx)`` then reads phase ``(ky dh mod sh, kx dw mod sw)`` at
    ``(oy + ky dh div sh, ox + kx dw div sw)``: one contiguous run of ``wide`` accumulators (row stride
    ``qw``, rounded up to a multiple of 16) from the tap's offset ``taps[t]`` in the channel's block.
    Columns past the output width get products that are never read, at most one per weight, so
    legalization's overflow bound holds for them too. ``size`` is the copy's length, including the
    codes the last channel's rounded runs read past its block."""

    qh: int
    qw: int
    taps: np.ndarray
    span: int
    wide: int
    size: int


Pair = tuple[int, int]


def conv_vector(
    cin: int, hw: Pair, out_hw: Pair, kernel: Pair, stride: Pair, pad: Pair, dil: Pair
) -> VectorGeometry:
    (h, w), (oh, ow), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = hw, out_hw, kernel, stride, pad, dil
    qh, qw = -(-(h + 2 * ph) // sh), -(-(w + 2 * pw) // sw)
    taps = [
        ((ky * dh % sh) * sw + kx * dw % sw) * qh * qw + (ky * dh // sh) * qw + kx * dw // sw
        for ky in range(kh)
        for kx in range(kw)
    ]
    wide = -(-((oh - 1) * qw + ow) // 16) * 16
    block = sh * sw * qh * qw
    size = cin * block + max(0, max(taps) + wide - block)
    return VectorGeometry(qh, qw, np.array(taps, dtype=np.int64), max(oh * qw, wide), wide, size)


@dataclass
class _Emitter:
    program: IntProgram
    rom: list[str] = field(default_factory=list)
    init: list[str] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    rom_bytes: int = 0
    rom_weights: int = 0
    arena: dict[str, int] = field(default_factory=lambda: {"w8": 0, "w16": 0, "u16": 0, "idx": 0})
    tmp: dict[str, int] = field(default_factory=lambda: {"w8": 0, "w16": 0, "idx": 0, "cols": 0})
    acc: int = 1
    huff: int = 1
    slack: int = 0
    rans_scratch: int = 0
    x16: int = 0
    linear: str = "auto"

    def array(
        self, ctype: str, name: str, values: np.ndarray | bytes | list[int], weights: bool = False
    ) -> str:
        data = np.frombuffer(values, dtype=np.uint8) if isinstance(values, bytes) else np.asarray(values)
        items = [int(v) for v in data.reshape(-1)] or [0]  # C has no empty arrays
        width = _CTYPES[ctype] or (1 if self.program.act_bits == 8 else 2)
        nbytes = width * int(data.size)
        self.rom_bytes += nbytes
        if weights:
            self.rom_weights += nbytes
        lines = [", ".join(str(v) for v in items[i : i + 20]) for i in range(0, len(items), 20)]
        body = ",\n    ".join(lines)
        self.rom.append(f"static const {ctype} {name}[{len(items)}] = {{\n    {body}\n}};")
        return name

    def stream(self, name: str, s: Stream) -> str:
        self.array("uint8_t", f"{name}_data", s.data, weights=True)
        kind = 1 if s.kind == "huffman" else 0
        if kind:
            self.huff = max(self.huff, s.alphabet)
        self.rom.append(
            f"static const sqc_stream_t {name} = "
            f"{{{name}_data, {len(s.data)}u, {s.count}u, {kind}, {s.width}}};"
        )
        return name

    def requant(self, name: str, rq: Requant) -> str:
        if rq.bias.size and int(np.abs(rq.bias).max()) >= 1 << 31:
            raise SqcError(f"node {name}: a bias does not fit 32 bits")
        self.array("int32_t", f"{name}_bias", rq.bias)
        self.array("int16_t", f"{name}_mult", rq.mult)
        self.array("int8_t", f"{name}_shift", rq.shift)
        self.rom.append(
            f"static const sqc_requant_t {name}_rq = "
            f"{{{name}_bias, {name}_mult, {name}_shift, {rq.lo}, {rq.hi}}};"
        )
        return f"&{name}_rq"

    def place(self, part: str, count: int, tmp: bool) -> tuple[str, int]:
        """``count`` slots of one arena part (``sqc_w8``, ...), or of the start-up scratch (``sqc_tmp_w8``,
        ..., shared by every layer that is re-laid out after decoding): the array and the offset."""
        if tmp:
            self.tmp[part] = max(self.tmp[part], count)
            return f"sqc_tmp_{part}", 0
        offset = self.arena[part]
        self.arena[part] += count
        return f"sqc_{part}", offset

    def weights(self, w: Weights, tmp: bool = False) -> tuple[str, str, str, int]:
        """ROM streams, arena space and start-up decoding of one kernel; returns the kernel's arguments.
        ``tmp``: decode into the start-up scratch (the caller re-lays the entries out into the arena)."""
        base = _ident(w.name)
        wide = w.value_bits > 8
        kind = "w16" if wide else "w8"
        book8 = book16 = "0"
        book_size = 0
        if w.codebook is not None:
            book = self.array("int16_t" if wide else "int8_t", f"{base}_book", w.codebook, weights=True)
            book16, book8 = (book, "0") if wide else ("0", book)
            book_size = int(w.codebook.size)
        if w.symbols.kind == "rans":
            return self.rans_weights(w, kind, base, book8 if not wide else book16, book_size, tmp)
        values = self.stream(f"{base}_sym", w.symbols)
        # a sparse layer's runtime entries each carry a weight: the zero weights that replace fillers
        # take arena slots too, and the index sink moves the decoded weights up to their entries
        sparse = w.sparse and w.index is not None and w.runtime_index is not None
        count = int(w.runtime_index.size) if sparse and w.runtime_index is not None else w.symbols.count
        zeros = count - w.symbols.count
        array, offset = self.place(kind, count, tmp)
        region = f"{array} + {offset}"
        sink = f"{array} + {offset + zeros}"
        self.init.append(
            _decode_block(
                values,
                {
                    kind: sink,
                    "cap": f"{w.symbols.count}u",
                    "book8" if not wide else "book16": book8 if not wide else book16,
                    "book_size": f"{book_size}u",
                    "offset": str(w.offset),
                },
            )
        )
        idx, nidx = "0", 0
        if sparse:
            assert w.index is not None
            index = self.stream(f"{base}_idx", w.index)
            array, at = self.place("idx", count, tmp)
            idx, nidx = f"{array} + {at}", count
            fields = {
                "u8": idx,
                "filler_in": f"{(1 << w.index_bits) - 1}u",
                "cap": f"{count}u",
                f"m{kind}": region,
                "src": f"{zeros}u",
            }
            self.init.append(_decode_block(index, fields, f"sink.written != {count}u"))
        return kind, region, idx, nidx

    def rans_weights(
        self, w: Weights, kind: str, base: str, book: str, book_size: int, tmp: bool = False
    ) -> tuple[str, str, str, int]:
        """A context-coded tensor: the ROM keeps the .sqc's rANS stream; ``sqc_init`` decodes mask and
        symbols together into the same runtime layout as the other streams (``sqc_rans_decode``)."""
        s = w.symbols
        numel = math.prod(w.shape)
        _, cols = rans.matrix_shape(w.shape)
        sparse = w.sparse and w.runtime_index is not None
        count = int(w.runtime_index.size) if sparse and w.runtime_index is not None else numel
        self.array("uint8_t", f"{base}_rans_data", s.data, weights=True)
        fields = [f"{base}_rans_data", f"{len(s.data)}u", f"{numel}u", f"{cols}u", f"{s.alphabet}u"]
        fields += [str(int(sparse)), str(s.width), str(s.mode)]
        self.rom.append(f"static const sqc_rans_t {base}_rans = {{{', '.join(fields)}}};")
        self.rans_scratch = max(self.rans_scratch, rans_scratch_words(numel, cols, sparse, s.width, s.mode))
        array, offset = self.place(kind, count, tmp)
        region = f"{array} + {offset}"
        idx, nidx = "0", 0
        if sparse:
            array, at = self.place("idx", count, tmp)
            idx, nidx = f"{array} + {at}", count
        sink = {kind: region, "cap": f"{count}u", "book8" if kind == "w8" else "book16": book}
        sink |= {"book_size": f"{book_size}u", "offset": str(w.offset)}
        init = ", ".join(f".{k} = {v}" for k, v in sink.items() if v != "0")
        self.init.append(
            f"    {{\n        sqc_sink_t sink = {{{init}}};\n"
            f"        if (sqc_rans_decode(&{base}_rans, &sink, {idx}, {count}u, sqc_rans_buf, "
            "SQC_RANS_SCRATCH) != 0) {\n            return -1;\n        }\n    }\n"
        )
        return kind, region, idx, nidx

    def csc_linear(
        self, kind: str, weights: tuple[str, str, int], entries: int, by_row: bool, args: tuple[object, ...]
    ) -> str:
        """Re-lay a sparse linear layer out at start-up (``sqc_csc``: by input column, or by output row,
        from the runtime entries just decoded into the scratch) and return its kernel call
        (``sqc_linear_csc``, skipping zero inputs, or ``sqc_linear_csr``)."""
        w, idx, nidx = weights
        x, y, cols, rows, rq = args
        assert isinstance(cols, int) and isinstance(rows, int)
        lines = rows if by_row else cols
        cw, at_w = self.place(kind, entries, False)
        d, at_d = self.place("idx", entries, False)
        # by row: a 16-bit count per row; by column: in + 1 32-bit start offsets (two 16-bit halves each)
        cnt, at_c = self.place("u16", lines if by_row else 2 * (cols + 1), False)
        self.tmp["cols"] = max(self.tmp["cols"], lines)
        layout = f"{cnt} + {at_c}, {d} + {at_d}, {cw} + {at_w}"
        self.init.append(
            f"    if (sqc_csc_{kind}({idx}, {w}, {nidx}u, {cols}, {rows}, {int(by_row)}, {layout}, "
            f"{entries}u, sqc_tmp_cur, sqc_tmp_prev) != 0) {{\n        return -1;\n    }}\n"
        )
        call = [x, y, f"{cw} + {at_w}", f"{d} + {at_d}", f"{cnt} + {at_c}", cols, rows, rq]
        if by_row:
            return _call(f"sqc_linear_csr_{kind}", *call)
        self.acc = max(self.acc, rows)
        return _call(f"sqc_linear_csc_{kind}", *call, "sqc_acc")

    def emit(self, offsets: dict[str, int]) -> None:
        p = self.program

        def at(name: str) -> str:
            return f"sqc_act + {offsets[p.tensors[name].slot]}"

        for op in p.ops:
            name = _ident(op.name)
            x, y = at(op.inputs[0]), at(op.output)
            src, dst = p.tensors[op.inputs[0]], p.tensors[op.output]
            self.run.append(f"    /* {op.name}: {type(op).__name__} */")
            if isinstance(op, Conv):
                kind, w, idx, nidx = self.weights(op.weights)
                rq = self.requant(name, op.requant)
                cin, h, wd = chw(src.shape)
                cout, oh, ow = chw(dst.shape)
                kh, kw = (1, op.weights.shape[2]) if len(op.weights.shape) == 3 else op.weights.shape[2:4]
                geo = conv_taps((h, wd), (oh, ow), (kh, kw), op.stride, op.padding, op.dilation)
                taps = self.array("int32_t", f"{name}_taps", geo.taps)
                fields = [cin, h, wd, cout, oh, ow, kh, kw, *op.stride, *op.padding, *op.dilation, op.groups]
                fields += [geo.row_stride, geo.span, geo.wide, taps]
                self.acc = max(self.acc, geo.span)
                self.slack = max(self.slack, geo.overread)
                if kind == "w8" and p.act_bits == 8 and oh > 0 and ow > 0:  # the SSE2 kernel's int16 copy
                    vec = conv_vector(cin, (h, wd), (oh, ow), (kh, kw), op.stride, op.padding, op.dilation)
                    vtaps = self.array("int32_t", f"{name}_vtaps", vec.taps)
                    fields += [vec.qh, vec.qw, vec.span, vec.wide, vtaps]
                    self.acc = max(self.acc, vec.span)
                    self.x16 = max(self.x16, vec.size)
                else:
                    fields += [0, 0, 0, 0, 0]
                self.rom.append(f"static const sqc_conv_t {name}_conv = {{{', '.join(map(str, fields))}}};")
                self.run.append(
                    _call(
                        f"sqc_conv_{kind}",
                        x,
                        y,
                        w,
                        idx,
                        f"{nidx}u",
                        f"&{name}_conv",
                        rq,
                        "sqc_acc",
                    )
                )
            elif isinstance(op, Linear):
                n_in, n_out = src.numel // op.rows, dst.numel // op.rows
                by_row = self.linear == "row"
                entries = (
                    None
                    if self.linear == "entries" or op.rows > 1  # rows > 1: the walk per row, below
                    else csc_entries(op.weights, n_in, n_out, by_row)
                )
                kind, w, idx, nidx = self.weights(op.weights, tmp=entries is not None)
                rq = self.requant(name, op.requant)
                if entries is not None:
                    args = (x, y, n_in, n_out, rq)
                    self.run.append(self.csc_linear(kind, (w, idx, nidx), entries, by_row, args))
                    continue
                if op.rows > 1:  # the same product on every row of a (..., features) tensor
                    self.run.append(f"    for (int32_t r = 0; r < {op.rows}; r++) {{")
                    x, y = f"{x} + r * {n_in}", f"{y} + r * {n_out}"
                self.run.append(_call(f"sqc_linear_{kind}", x, y, w, idx, f"{nidx}u", n_in, n_out, rq))
                if op.rows > 1:
                    self.run.append("    }")
            elif isinstance(op, Affine):
                rq = self.requant(name, op.requant)
                self.run.append(f"    sqc_affine({x}, {y}, {op.channels}, {op.inner}, {rq});")
            elif isinstance(op, Clamp):
                self.run.append(f"    sqc_clamp({x}, {y}, {src.numel}, {op.lo}, {op.hi});")
            elif isinstance(op, PRelu):
                mult = self.array("int16_t", f"{name}_mult", op.mult)
                self.run.append(f"    sqc_prelu({x}, {y}, {op.channels}, {op.inner}, {mult}, {op.shift});")
            elif isinstance(op, Pool):
                args = [op.channels, *op.in_hw, *op.out_hw]
                rows = regular_windows(op.ys, op.ye, op.in_hw[0])
                cols = regular_windows(op.xs, op.xe, op.in_hw[1])
                if op.kind == "max" and rows is not None and cols is not None:
                    args += [rows[0], cols[0], rows[1], cols[1]]
                    self.run.append(_call("sqc_max_pool", x, y, *args))
                    continue
                tables = [
                    self.array("int16_t", f"{name}_{k}", getattr(op, k)) for k in ("ys", "ye", "xs", "xe")
                ]
                div = "0" if op.divisor is None else self.array("int32_t", f"{name}_div", op.divisor)
                self.run.append(
                    f"    sqc_pool({x}, {y}, {', '.join(map(str, args))}, {', '.join(tables)}, {div});"
                )
            elif isinstance(op, Add):
                b = at(op.inputs[1])
                self.run.append(
                    _call("sqc_add", x, b, y, dst.numel, op.scale_a, op.scale_b, op.shift, int(op.subtract))
                )
            elif isinstance(op, Mul):
                self.run.append(f"    sqc_mul({x}, {at(op.inputs[1])}, {y}, {dst.numel}, {op.shift});")
            elif isinstance(op, Cat):
                total, start = sum(op.inner), 0
                for src_name, inner, shift in zip(op.inputs, op.inner, op.shifts, strict=True):
                    self.run.append(
                        _call("sqc_cat_part", at(src_name), y, op.outer, inner, total, start, shift)
                    )
                    start += inner
            elif isinstance(op, Lut):
                table = self.array("sqc_act_t", f"{name}_lut", op.table)
                self.run.append(f"    sqc_lut({x}, {y}, {dst.numel}, {table});")
            elif isinstance(op, Softmax):
                table = self.array("int32_t", f"{name}_exp", op.exp_table)
                self.run.append(f"    sqc_softmax({x}, {y}, {op.rows}, {op.cols}, {table}, {dst.fmt.frac});")
            elif isinstance(op, Pad):
                args = [op.channels, *op.in_hw, *op.pads, op.fill]
                self.run.append(f"    sqc_pad({x}, {y}, {', '.join(map(str, args))});")
            elif isinstance(op, SoftmaxPoly):
                args = [op.rows, op.cols, op.ln2, op.qb, f"{op.qc}LL", op.base, dst.fmt.frac]
                self.run.append(_call("sqc_softmax_iexp", x, y, *args))
            elif isinstance(op, LayerNorm):
                mult = self.array("int16_t", f"{name}_mult", op.mult)
                bias = self.array("int64_t", f"{name}_bias", op.bias)
                shift = self.array("int8_t", f"{name}_shift", op.shift)
                args = [op.rows, op.cols, f"{op.eps}LL", op.frac, mult, bias, shift]
                self.run.append(_call("sqc_layer_norm", x, y, *args))
            elif isinstance(op, MatMul):
                b = at(op.inputs[1])
                self.run.append(_call("sqc_matmul", x, b, y, op.batch, op.m, op.k, op.n, op.mult, op.shift))
            elif isinstance(op, LutInterp):
                table = self.array("int32_t", f"{name}_knots", op.table)
                self.run.append(_call("sqc_lut_interp", x, y, dst.numel, table, op.shift))
            elif isinstance(op, Strided):
                dims = self.array("int32_t", f"{name}_dims", list(op.dims))
                steps = self.array("int32_t", f"{name}_strides", list(op.strides))
                self.run.append(_call("sqc_strided", x, y, len(op.dims), dims, steps, op.offset))
            else:  # legalization only produces the ops above
                raise SqcError(f"node {op.name}: the C writer has no kernel for {type(op).__name__}")


def csc_entries(w: Weights, cols: int, rows: int, by_row: bool = False) -> int | None:
    """How many entries the by-column (or by-row) layout of a sparse linear layer holds (``sqc_csc`` in
    C: one per runtime entry, plus a zero-weight step of 255 per 255 positions skipped along a line), or
    None when the layer is dense or a line would hold more than 65535 entries (the kernel walking the
    runtime entries is used)."""
    if not w.sparse or w.runtime_index is None:
        return None
    if w.runtime_index.size == 0:
        return 0
    # a filler (255) spans 255 positions and carries a zero weight: the entry 254 of the C layout
    pos = np.cumsum(np.minimum(w.runtime_index.astype(np.int64), 254) + 1) - 1
    row, col = np.divmod(pos, cols)
    if int(row.max()) >= rows:
        return None
    line, minor = (row, col) if by_row else (col, row)
    order = np.lexsort((minor, line))
    line, minor = line[order], minor[order]
    first = np.ones(line.size, dtype=bool)
    first[1:] = line[1:] != line[:-1]
    gap = np.where(first, minor, minor - np.roll(minor, 1))
    per = 1 + np.where(gap > 0, (gap - 1) // 255, 0)
    if int(np.bincount(line, weights=per, minlength=rows if by_row else cols).max()) > 65535:
        return None
    return int(per.sum())


def _decode_block(stream: str, fields: dict[str, str], also_fail: str | None = None) -> str:
    """Start-up code decoding one ROM stream into the sink described by ``fields`` (designated
    initializers: every other field is zero)."""
    init = ", ".join(f".{k} = {v}" for k, v in fields.items() if v != "0")
    fail = f"sqc_decode(&{stream}, &sink, sqc_huff, SQC_HUFF_SCRATCH) != 0"
    if also_fail:
        fail += f" || {also_fail}"
    return (
        f"    {{\n        sqc_sink_t sink = {{{init}}};\n"
        f"        if ({fail}) {{\n            return -1;\n        }}\n    }}\n"
    )


def _call(function: str, *args: object) -> str:
    return f"    {function}({', '.join(str(a) for a in args)});"


def write_project(
    program: IntProgram,
    out_dir: Path,
    *,
    model_name: str = "model",
    force: bool = False,
    arena: str = "static",
    inputs: Iterable[Path | None] = (),
    linear: str = "auto",
) -> dict:
    """Write the C project for ``program`` into ``out_dir``; returns ROM/RAM figures.

    ``arena``: where ``sqc_init`` decodes the weights. ``static`` (default): a static array, and
    ``sqc_init()`` uses it. ``caller``: no static array; the application passes ``SQC_ARENA_BYTES`` of
    its own memory to ``sqc_init_arena`` (both modes offer that function), and the arena is reported
    apart from the static RAM. ``inputs`` are the command's input files: none of them is overwritten."""
    check_names((w.name for w in program.weights), "target c: ")
    if arena not in ("static", "caller"):
        raise SqcError(f"--option arena={arena}: expected static or caller")
    if linear not in LINEAR_LAYOUTS:
        raise SqcError(f"--option linear={linear}: expected {', '.join(LINEAR_LAYOUTS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SqcError(f"{out_dir}: exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise SqcError(f"{out_dir}: already exists and is not empty (use --force to replace its files)")
    offsets, act_total = plan_activations(program)
    em = _Emitter(program, linear=linear)
    em.emit(offsets)
    _unique_declarations(em.rom)
    inp, outp = program.tensors[program.input], program.tensors[program.output]
    act_bytes = 1 if program.act_bits == 8 else 2
    act_total += em.slack  # the wide convolution's vector loop reads up to 15 codes past a plane
    w16_bytes = 2 * em.arena["w16"]
    u16_at = w16_bytes
    w8_at = u16_at + 2 * em.arena["u16"]
    idx_at = w8_at + em.arena["w8"]
    arena_bytes = idx_at + em.arena["idx"]
    tmp = em.tmp
    init_scratch = tmp["w8"] + 2 * tmp["w16"] + tmp["idx"] + 8 * tmp["cols"]
    ram_parts = {
        "activations": act_total * act_bytes,
        "weight_arena": arena_bytes,
        "accumulator": 4 * em.acc,
        "huffman_scratch": 2 * em.huff,
        "rans_scratch": 4 * em.rans_scratch,
        "relayout_scratch": init_scratch,
        "conv_int16_input": 2 * em.x16,
    }
    ram = sum(ram_parts.values())
    static_arena = arena == "static"
    if not static_arena:
        ram -= arena_bytes  # the caller's memory, reported as arena_bytes
    ram_decls = [
        f"static sqc_act_t sqc_act[{act_total}];",
        "/* decoded weights (int16 first, so that an even arena address aligns them), then 8-bit weights,",
        " * then sparse entries: set by sqc_init_arena */",
        "static int16_t *sqc_w16;",
        "static int8_t *sqc_w8;",
        "static uint8_t *sqc_idx;",
        f"#define SQC_ARENA_W8 {w8_at}u",
        f"#define SQC_ARENA_IDX {idx_at}u",
        f"static int32_t sqc_acc[{em.acc}];",
        f"#define SQC_HUFF_SCRATCH {em.huff}u",
        "static uint16_t sqc_huff[SQC_HUFF_SCRATCH];",
    ]
    if static_arena:
        ram_decls.append(f"static int16_t sqc_arena[{max(1, (arena_bytes + 1) // 2)}];")
    if em.arena["u16"]:
        ram_decls.insert(4, "static uint16_t *sqc_u16;")
        ram_decls.insert(5, f"#define SQC_ARENA_U16 {u16_at}u")
    if tmp["cols"]:
        ram_decls.append("/* start-up only: runtime entries of a layer re-laid out by column (sqc_csc_*) */")
        ram_decls += [
            f"static {ctype} sqc_tmp_{part}[{max(1, tmp[part])}];"
            for part, ctype in (("w8", "int8_t"), ("w16", "int16_t"), ("idx", "uint8_t"))
            if any(f"sqc_tmp_{part} +" in line for line in em.init)
        ]
        ram_decls += [
            f"static uint32_t sqc_tmp_cur[{tmp['cols']}];",
            f"static int32_t sqc_tmp_prev[{tmp['cols']}];",
        ]
    if em.rans_scratch:
        ram_decls += [
            f"#define SQC_RANS_SCRATCH {em.rans_scratch}u",
            "static uint32_t sqc_rans_buf[SQC_RANS_SCRATCH];",
        ]
    run = [
        f"    memcpy(sqc_act + {offsets[inp.slot]}, in, {inp.numel} * sizeof(sqc_act_t));",
        *em.run,
        f"    memcpy(out, sqc_act + {offsets[outp.slot]}, {outp.numel} * sizeof(sqc_act_t));",
    ]
    # arrays referenced only by ops that never run would warn; every array above is used by construction
    if not any("sqc_w16 +" in line for line in em.init + em.run):
        run.insert(0, "    (void)sqc_w16;")
    if not any("sqc_w8 +" in line for line in em.init + em.run):
        run.insert(0, "    (void)sqc_w8;")
    if not any("sqc_idx +" in line for line in em.init + em.run):
        run.insert(0, "    (void)sqc_idx;")
    if not any("sqc_huff" in line for line in em.init):
        run.insert(0, "    (void)sqc_huff;")
    if not any("sqc_acc" in line for line in em.run):
        run.insert(0, "    (void)sqc_acc;")
    notes = "\n".join(f" * {line}" for line in [*program.notes, f"options: {program.options}"])
    subst = {
        "MODEL": model_name,
        "ACT_TYPE": "int8_t" if program.act_bits == 8 else "int16_t",
        "ACT_BITS": str(program.act_bits),
        "INPUT_SIZE": str(inp.numel),
        "OUTPUT_SIZE": str(outp.numel),
        "INPUT_SHAPE": "x".join(map(str, inp.shape)),
        "OUTPUT_SHAPE": "x".join(map(str, outp.shape)),
        "INPUT_FRAC": str(inp.fmt.frac),
        "OUTPUT_FRAC": str(outp.fmt.frac),
        "ROM_BYTES": str(em.rom_bytes),
        "RAM_BYTES": str(ram),
        "ARENA_BYTES": str(arena_bytes),
        "ARENA_STATIC": "1" if static_arena else "0",
        "KERNEL_CONFIG": (
            f"#define SQC_CONV_X16 {em.x16}  /* int16 copy of a wide convolution's input (SSE2 kernel) */\n"
            if em.x16
            else ""
        ),
        "NOTES": notes.replace("*/", "* /"),
        "ROM": "\n".join(em.rom) + "\n",
        "RAM": "\n".join(ram_decls) + "\n",
        "INIT": ("    sqc_u16 = (uint16_t *)(void *)(base + SQC_ARENA_U16);\n" if em.arena["u16"] else "")
        + "".join(em.init),
        "RUN": "\n".join(run) + "\n",
    }
    files: dict[str, bytes] = {}
    for name, tmpl in (("model.h", "model.h.tmpl"), ("model.c", "model.c.tmpl")):
        text = template(tmpl)
        for key, value in subst.items():
            text = text.replace("{{" + key + "}}", value)
        files[name] = text.encode("utf-8")
    for name in STATIC_FILES:
        files[name] = resources.files("sqc.targets.c").joinpath("templates", name).read_bytes()
    write_files(out_dir, files, force=force, inputs=inputs)
    return {
        "rom_bytes": em.rom_bytes,
        "rom_weight_bytes": em.rom_weights,
        "ram_bytes": ram,
        "ram": ram_parts,
        "arena": arena,
        "arena_bytes": arena_bytes,
        "input": {"shape": list(inp.shape), "frac": inp.fmt.frac, "bits": program.act_bits},
        "output": {"shape": list(outp.shape), "frac": outp.fmt.frac, "bits": program.act_bits},
        "layers": [
            {"tensor": w.name, "storage": w.origin, "rom_bytes": w.rom_bytes, "kept": w.kept}
            for w in program.weights
        ],
    }


class CTarget:
    """Registered as target ``c``: ``sqc lower model.sqc --target c -o out/ --calib data.npz``."""

    name = "c"
    takes_calib = True
    takes_options = True

    def lower(self, request: LowerRequest) -> LowerReport:
        lowering = integer_lowering(request, "c", ("arena", "linear"), keep_rans=True)
        output = Path(request.output)
        report = write_project(
            lowering.program,
            output,
            model_name=Path(request.source).stem,
            force=request.force,
            arena=lowering.extra.get("arena", "static"),
            inputs=(request.source, calib_file(request.calib)),
            linear=lowering.extra.get("linear", "auto"),
        )
        report["accuracy"] = compared(lowering)
        report["options"] = lowering.program.options
        report["output_dir"] = str(output)
        ram = ", ".join(f"{k} {v:,}" for k, v in report["ram"].items())
        first = [
            f"wrote {output}/ (target c)",
            f"ROM {report['rom_bytes']:,} bytes (weights {report['rom_weight_bytes']:,}); "
            f"RAM {report['ram_bytes']:,} bytes ({ram})",
        ]
        return integer_report("c", output, project_bytes(output), first, report, lowering.program.notes)
