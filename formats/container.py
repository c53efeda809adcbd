"""The ``.sqc`` container: header, section table, graph, tensors, report (``FORMAT.md`` specifies it).

Writing is deterministic (same IR -> same bytes) and atomic (:func:`sqc.outputs.write_atomic`: temp
file in the target directory, fsync, rename; an existing regular file is only replaced with ``force``,
a symlink or special file never). Reading validates the magic, the version,
every length and offset, and a CRC32 per section before anything is decoded; the header bytes the
table CRC does not cover (magic, version, section count) are covered by a CRC stored in the graph
section, so every single-bit flip anywhere in a file is detected. The reader's memory and time are
linear in the file size: a file may not declare more tensor elements than :func:`element_budget`
allows for its size, and JSON sections may not inflate (or hold more graph nodes) than their size
warrants.
"""

from __future__ import annotations

import gc
import json
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import fx

from sqc.errors import SqcError, SqcFormatError
from sqc.formats.binio import Reader, Writer
from sqc.formats.graph_codec import (
    BYTES_PER_NODE,
    DTYPE_NAMES,
    DTYPE_NAMES_1_2,
    NODE_BASE,
    VALUES_BASE,
    VALUES_PER_BYTE,
    brief,
    decode_graph,
    graph_nodes,
    graph_text,
    inflate_json,
    json_limit,
)
from sqc.formats.tensor_codec import (
    CODEC_NAMES,
    Breakdown,
    decode_tensor,
    decode_values,
    encode_tensor_cached,
)
from sqc.inputs import read_regular
from sqc.ir.names import name_problem, names_problem, shown_name
from sqc.ir.records import MAX_INPUT_ELEMENTS, CompressedModel, InputSpec, PassRecord, TensorState
from sqc.outputs import write_atomic
from sqc.version import PRODUCER

MAGIC = b"\x89SQC\r\n\x1a\n"
VERSION = (1, 5)
"""The newest format this sqc writes and reads. A file is written in the oldest format that holds it:
1.2 unless the model needs what 1.3 added (ATen operators, typed buffers, tied tensors, ...), 1.4
only for scaled fixed-point weights (a free quantization step, ``quant{qp=..}``), and 1.5 only for a
context-coded mask in mask model 1 (row and column densities)."""


def oldest_version(features: set[str]) -> tuple[int, int]:
    """The oldest format that holds a model using ``features`` (names from the writer's checks)."""
    if "mask-model" in features:
        return (1, 5)
    if "scaled" in features:
        return (1, 4)
    return (1, 3) if features else (1, 2)


HEADER_SIZE = 28
ENTRY_SIZE = 20
KIND_GRAPH, KIND_TENSOR, KIND_REPORT = 1, 2, 3
JSON_ZLIB, JSON_PRESET = 0, 1
"""Codec byte of a graph or report section: 0 = zlib (RFC 1950); 1 (format 1.2) = raw DEFLATE (RFC 1951)
with the preset dictionary :data:`PRESET_DICTIONARY`. A model's fixed overhead is a few hundred bytes
of JSON, mostly the same key names, op names and canonical pipeline text in every file; the dictionary
halves it (LeNet-300-100: 1,015 -> 501 B), which decides whether a small model's file beats ``xz`` of
its bare codes. Both sections use the same codec, and each decodes on its own.

The dictionary is part of the format and never changes: its ``"producer":"sqc 0.1"`` is fixed text that
the writers of 0.1 happen to repeat, not the writer's :data:`~sqc.version.PRODUCER`."""
PRESET_DICTIONARY = "".join(
    [
        '"diagnostics":[],"changed":false,"stats":{},"layers":{}},{"changed":true,"diagnostics":[],',
        '"max_pool2d","avg_pool2d","adaptive_avg_pool2d","batch_norm","running_mean","running_var",',
        '"num_batches_tracked","dropout","add","cat","mul","reshape","view","size","softmax","sigmoid",',
        '"tanh","gelu","hardtanh","leaky_relu","conv1d","mean","flatten","flatten",[{"%":0},1],{},[1,',
        '"stride","padding","dilation","groups","kernel_size","ceil_mode","output_size",',
        "finetune{epochs=2 lr=0.01 schedule=masked}",
        'quant{bits=8 granularity=tensor per_layer=\\"\\" layers=*}',
        "prune{sparsity=0.9 scope=layer per_layer=",
        " layers=* schedule=oneshot steps=4 epochs=1 lr=0.01 target=fixed budget=none}",
        'share{bits=5 per_layer=\\"\\" init=linear iterations=50 layers=* budget=none},',
        "huffman{layers=*}",
        "rans{layers=*}",
        '{"header_crc32":',
        ',"inputs":[["x",[1,3,224,224],"float32"]],"nodes":[["in","x"],["call","',
        '["attr","conv1_weight",0],["attr","conv1_bias",1],["call","conv1","conv2d",[{"%":',
        '],{"inplace":false},[1,',
        '["call","relu","relu",[{"%":',
        '["attr","fc1_weight",0],["attr","fc1_bias",1],["call","fc1","linear",[{"%":',
        '},{"%":',
        '["out",{"%":',
        '"pipeline":"',
        '","producer":"sqc 0.1","schema":1,"seed":0,"tensors":[["',
        '.weight",[',
        '],"weight"],["',
        '.bias",[',
        '],"param"],["',
        '],"buffer"],["',
        '"bits_per_weight_coded":',
        '"centroids":',
        '"sparsity":',
        '"kept":',
        '"bits":',
        '"max_abs_error":0.',
        '"density":0.',
        '"bits_per_weight":32.0,',
        '"bits_per_weight":',
        '"bytes_after":',
        '"bytes_before":',
        '[{"changed":true,"diagnostics":[],"layers":{"',
        '},"spec":"',
        '","stats":{"bytes_after":',
        '}},{"changed":true,"diagnostics":[],"layers":{"fc1.weight":{"',
        '.weight":{"',
    ]
).encode()
"""The graph and report sections' preset dictionary (format 1.2): these exact bytes (UTF-8). Strings a
file is likely to repeat, the most frequent last (DEFLATE codes nearer matches in fewer bits)."""
NO_TENSOR = 0xFFFFFFFF
MAX_SECTIONS = 1 << 20
MAX_ELEMENTS_BASE = 1 << 20
ELEMENTS_PER_BYTE = 1 << 12
"""A file of ``n`` bytes may declare at most ``MAX_ELEMENTS_BASE + ELEMENTS_PER_BYTE * n`` tensor
elements in total (see :func:`element_budget`): decoding costs 10-35 bytes per element, so a small file
cannot make the reader allocate gigabytes. Real files stay far below it: dense codes cost at least a
bit per element, a 99.9 %-pruned Huffman-coded layer about a byte per 400 elements, and biases and
BatchNorm parameters are stored whole. Only a file with almost nothing left in it (99.99 % pruning of
a model without biases) could exceed it; :func:`serialize` refuses to write such a file."""
__all__ = [
    "SqcFormat",
    "assemble",
    "element_budget",
    "header_crc",
    "read",
    "read_layout",
    "save",
    "serialize",
    "write_atomic",
]


@dataclass
class Section:
    kind: int
    codec: int
    tensor: int
    crc: int
    offset: int
    length: int


@dataclass
class Layout:
    """What ``inspect`` needs: every section with its size and, for tensors, the byte breakdown."""

    size: int
    version: tuple[int, int]
    sections: list[Section]
    meta: dict[str, Any]
    report: list[PassRecord]
    tensors: dict[str, tuple[TensorState, Breakdown, Section]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """The random seed the pipeline ran with (0 for files written before format 1.1)."""
        return int(self.meta.get("seed", 0))


def header_crc(count: int, version: tuple[int, int] = VERSION) -> int:
    """CRC-32 of the header bytes 0..15 (magic, version, section count): the ``header_crc32`` of the
    graph section. The size field is checked against the real size and the table CRC against the
    table, so with this every header bit is covered."""
    return zlib.crc32(MAGIC + struct.pack("<HHI", version[0], version[1], count))


def element_budget(size: int) -> int:
    """The most tensor elements (summed over all tensors) a file of ``size`` bytes may declare."""
    return MAX_ELEMENTS_BASE + ELEMENTS_PER_BYTE * size


def serialize(model: CompressedModel) -> bytes:
    """The whole file as bytes (deterministic)."""
    names = list(model.tensors)
    clash = names_problem(names)
    if clash is not None:
        raise SqcError(f"tensor name {shown_name(clash[0])} cannot be stored: {clash[1]}")
    index = {name: i for i, name in enumerate(names)}
    features: set[str] = set()
    nodes = graph_nodes(model.graph_module, index, features)
    aliases = _aliases_of(model)
    if aliases:
        features.add("aliases")
    if any(s.dtype not in DTYPE_NAMES_1_2 for s in model.inputs):
        features.add("dtype-1.3")
    if any(s.dense is not None and s.dense.dtype != torch.float32 for s in model.tensors.values()):
        features.add("typed")
    if any(s.fmt is not None and s.fmt.mult for s in model.tensors.values()):
        features.add("scaled")
    encoded = [encode_tensor_cached(model.tensors[name]) for name in names]
    if any(info.mask_model for _, _, info in encoded):
        features.add("mask-model")
    version = oldest_version(features)
    meta: dict[str, Any] = {
        "inputs": [[s.name, list(s.shape), s.dtype] for s in model.inputs],
        "tensors": [[name, list(model.tensors[name].shape), model.tensors[name].role] for name in names],
        "pipeline": model.pipeline,
        "producer": PRODUCER,
        "seed": int(getattr(model, "seed", 0)),
        "header_crc32": header_crc(len(names) + 2, version),
    }
    if aliases:
        meta["aliases"] = aliases
    bodies: list[tuple[int, int, int, bytes]] = [
        (KIND_GRAPH, JSON_PRESET, NO_TENSOR, _deflate_preset(graph_text(nodes, meta), PRESET_DICTIONARY))
    ]
    for i, (codec, payload, _) in enumerate(encoded):
        bodies.append((KIND_TENSOR, codec, i, payload))
    records = [r.to_json() for r in model.report]
    for record in records:
        problem = report_problem(record)
        if problem:
            raise SqcError(f"pass {brief(record.get('spec'))} reported what a file cannot hold: {problem}")
    report = json.dumps(records, separators=(",", ":"), sort_keys=True)
    report_bytes = _deflate_preset(report.encode("utf-8"), PRESET_DICTIONARY)
    bodies.append((KIND_REPORT, JSON_PRESET, NO_TENSOR, report_bytes))
    data = assemble(bodies, version)
    elements = sum(model.tensors[name].numel for name in names)
    if elements > element_budget(len(data)):
        raise SqcError(
            f"the model has {elements:,} tensor elements but compresses to {len(data):,} bytes, more "
            f"than {ELEMENTS_PER_BYTE:,} elements per byte: readers refuse such a file as a decompression "
            "bomb (is most of the model pruned away?)"
        )
    return data


def _aliases_of(model: CompressedModel) -> list[list[str]]:
    """``[[alias, record name], ...]`` sorted by alias, after checking what the reader will check."""
    for alias, name in model.aliases.items():
        problem = _name_problem(alias)
        if problem or alias in model.tensors or name not in model.tensors:
            raise SqcError(f"tensor alias {alias!r} -> {name!r} cannot be stored: {problem or 'not a tie'}")
    return [[alias, model.aliases[alias]] for alias in sorted(model.aliases)]


def assemble(bodies: list[tuple[int, int, int, bytes]], version: tuple[int, int] = VERSION) -> bytes:
    """Header + section table + payloads for ``(kind, codec, tensor, payload)`` sections, in order.

    This only frames the payloads (lengths, CRCs, size); :func:`serialize` builds a valid file with it,
    and tests and the fuzzer use it to build files with any content.
    """
    table = Writer()
    for kind, codec, tensor, payload in bodies:
        table.u8(kind)
        table.u8(codec)
        table.u16(0)
        table.u32(tensor)
        table.u32(zlib.crc32(payload))
        table.u64(len(payload))
    table_bytes = table.getvalue()
    total = HEADER_SIZE + len(table_bytes) + sum(len(b[3]) for b in bodies)
    head = Writer()
    head.raw(MAGIC)
    head.u16(version[0])
    head.u16(version[1])
    head.u32(len(bodies))
    head.u64(total)
    head.u32(zlib.crc32(table_bytes))
    return head.getvalue() + table_bytes + b"".join(b[3] for b in bodies)


def _deflate_preset(text: bytes, zdict: bytes) -> bytes:
    """Raw DEFLATE (level 9, 32 KiB window) of ``text`` with the preset dictionary ``zdict``."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=zdict)
    return packer.compress(text) + packer.flush()


def _inflate_section(data: memoryview, codec: int, zdict: bytes, what: str, offset: int) -> tuple[Any, bytes]:
    """The JSON document of a graph or report section and its text; the same limits as
    :func:`~sqc.formats.graph_codec.inflate_json` (a failure is a format error at ``offset``)."""
    if codec == JSON_ZLIB:
        return inflate_json(data, what, offset), b""  # 1.0/1.1: the report uses no dictionary
    limit = json_limit(len(data))
    try:
        inflater = zlib.decompressobj(-15, zdict=zdict)
        text = inflater.decompress(data, limit)
        if inflater.unconsumed_tail:
            raise SqcFormatError(
                f"{what} inflates to more than {limit} bytes ({len(data)} compressed): a zip bomb?", offset
            )
        if not inflater.eof or inflater.unused_data:
            raise SqcFormatError(f"{what}: truncated or trailing DEFLATE data", offset)
        return json.loads(text.decode("utf-8")), text
    except SqcFormatError:
        raise
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SqcFormatError(f"{what} is not valid DEFLATE/JSON ({exc})", offset) from None


def save(model: CompressedModel, path: Path, *, force: bool = False) -> int:
    """Write atomically; refuse to replace an existing file unless ``force``. Returns the size."""
    data = serialize(model)
    write_atomic(path, data, force=force)
    return len(data)


def _read_bytes(path: Path) -> bytes:
    return read_regular(Path(path))


def read_layout(
    data: bytes | memoryview, *, decode_tensors: bool = True, max_elements: int | None = None
) -> Layout:
    """Validate the whole file and parse every section (decoding tensors unless asked not to).

    ``max_elements`` replaces :func:`element_budget` as the limit on the tensor elements the file may
    declare (for a trusted file that compresses better than that).
    """
    view = memoryview(data)
    r = Reader(view, 0, "header")
    if len(view) == 0:
        raise SqcFormatError("not an .sqc file (empty)", 0)
    if len(view) < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        raise SqcFormatError("not an .sqc file (bad magic)", 0)
    r.take(len(MAGIC))
    major, minor = r.u16(), r.u16()
    if major > VERSION[0]:
        raise SqcFormatError(
            f"written by a newer sqc (format {major}.{minor}); upgrade sqc to read it "
            f"(this sqc reads format {VERSION[0]}.x)",
            8,
        )
    if major != VERSION[0]:
        raise SqcFormatError(f"unsupported .sqc version {major}.{minor} (this sqc reads {VERSION[0]}.x)", 8)
    count = r.u32()
    total = r.u64()
    table_crc = r.u32()
    if total != len(view):
        raise SqcFormatError(
            f"file is {len(view)} bytes but its header says {total} (truncated or padded)", 16
        )
    if count < 2 or count > MAX_SECTIONS or HEADER_SIZE + count * ENTRY_SIZE > len(view):
        raise SqcFormatError(f"implausible section count {count}", 12)
    table = r.take(count * ENTRY_SIZE)
    if zlib.crc32(table) != table_crc:
        raise SqcFormatError("section table checksum mismatch", HEADER_SIZE)
    t = Reader(table, HEADER_SIZE, "section table")
    sections: list[Section] = []
    offset = HEADER_SIZE + count * ENTRY_SIZE
    for _ in range(count):
        kind, codec, reserved, tensor, crc, length = t.u8(), t.u8(), t.u16(), t.u32(), t.u32(), t.u64()
        if reserved != 0 or kind not in (KIND_GRAPH, KIND_TENSOR, KIND_REPORT):
            raise SqcFormatError(f"section {len(sections)} has unknown kind {kind}", t.offset - ENTRY_SIZE)
        if kind != KIND_TENSOR and (codec not in (JSON_ZLIB, JSON_PRESET) or tensor != NO_TENSOR):
            raise SqcFormatError(
                f"section {len(sections)} ({_KINDS[kind]}) has a codec or tensor number",
                t.offset - ENTRY_SIZE,
            )
        if length > len(view) - offset:
            raise SqcFormatError(
                f"section {len(sections)} runs past the end of the file", t.offset - ENTRY_SIZE
            )
        sections.append(Section(kind, codec, tensor, crc, offset, length))
        offset += length
    if offset != len(view):
        raise SqcFormatError(f"{len(view) - offset} bytes after the last section", offset)
    for number, s in enumerate(sections):
        if zlib.crc32(view[s.offset : s.offset + s.length]) != s.crc:
            raise SqcFormatError(
                f"section {number} ({_kind_name(s)}) checksum mismatch: the file is corrupt", s.offset
            )
    if sections[0].kind != KIND_GRAPH or sections[-1].kind != KIND_REPORT:
        raise SqcFormatError("sections out of order: the graph comes first and the report last", HEADER_SIZE)
    if sections[0].codec != sections[-1].codec:
        raise SqcFormatError("the graph and report sections use different codecs", HEADER_SIZE)
    if sections[0].codec == JSON_PRESET and minor < 2:
        raise SqcFormatError(f"preset-dictionary sections in a format {major}.{minor} file", HEADER_SIZE)
    graph_doc, _ = _inflate_section(
        view[sections[0].offset : sections[0].offset + sections[0].length],
        sections[0].codec,
        PRESET_DICTIONARY,
        "graph section",
        sections[0].offset,
    )
    meta = _check_meta(graph_doc, sections[0].offset)
    _check_header_crc(meta, count, (major, minor))
    elements = sum(math.prod(entry[1]) for entry in meta["tensors"])
    limit = element_budget(len(view)) if max_elements is None else max_elements
    if elements > limit:
        raise SqcFormatError(
            f"graph section: the tensors declare {elements:,} elements, more than a file of "
            f"{len(view):,} bytes may ({limit:,}): a decompression bomb?",
            sections[0].offset,
        )
    report_doc, _ = _inflate_section(
        view[sections[-1].offset : sections[-1].offset + sections[-1].length],
        sections[-1].codec,
        PRESET_DICTIONARY,
        "report section",
        sections[-1].offset,
    )
    report = _check_report(report_doc, sections[-1].offset)
    layout = Layout(len(view), (major, minor), sections, meta, report)
    tensor_sections = sections[1:-1]
    if len(tensor_sections) != len(meta["tensors"]) or any(s.kind != KIND_TENSOR for s in tensor_sections):
        raise SqcFormatError(
            f"{len(tensor_sections)} tensor sections for {len(meta['tensors'])} tensors in the graph",
            HEADER_SIZE,
        )
    for i, s in enumerate(tensor_sections):
        if s.tensor != i:
            raise SqcFormatError(
                f"section {i + 1} claims tensor {s.tensor}, expected {i}", HEADER_SIZE + (i + 1) * ENTRY_SIZE
            )
        name, shape, role = meta["tensors"][i]
        payload = view[s.offset : s.offset + s.length]
        if decode_tensors:
            state, info = decode_tensor(s.codec, payload, name, tuple(shape), role, s.offset)
        else:
            state, info = TensorState(name, tuple(shape), role), Breakdown()
        layout.tensors[name] = (state, info, s)
    return layout


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value < high


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a tensor name, or None: the shared rule of :mod:`sqc.ir.names` (ASCII
    identifier parts, no keyword, dunder or module attribute), which also keeps quotes, backslashes and
    control characters out of the source fx generates."""
    return name_problem(name)


def _check_meta(doc: Any, offset: int) -> dict[str, Any]:
    def bad(message: str) -> SqcFormatError:
        return SqcFormatError(f"graph section: {message}", offset)

    if not isinstance(doc, dict):
        raise bad("not an object")
    tensors = doc.get("tensors")
    inputs = doc.get("inputs")
    if (
        not isinstance(tensors, list)
        or not isinstance(inputs, list)
        or not isinstance(doc.get("pipeline"), str)
    ):
        raise bad("missing tensors, inputs or pipeline")
    if "seed" in doc and not _is_int(doc["seed"], 0, 1 << 64):
        raise bad(f"malformed seed {brief(doc['seed'])}")
    seen = set()
    for entry in tensors:
        ok = (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
            and len(entry[1]) <= 8
            and all(_is_int(d, 0, 1 << 40) for d in entry[1])
            and entry[2] in ("weight", "param", "buffer")
        )
        if not ok or entry[0] in seen:
            raise bad(f"malformed tensor entry {brief(entry)}")
        problem = _name_problem(entry[0])
        if problem:
            raise bad(f"tensor name {brief(entry[0])}: {problem}")
        numel = math.prod(entry[1])
        if numel > (1 << 34):
            raise bad(f"tensor {brief(entry[0])} claims {numel} elements")
        seen.add(entry[0])
    clash = names_problem(entry[0] for entry in tensors)
    if clash is not None:
        raise bad(f"tensor name {brief(clash[0])}: {clash[1]}")
    input_elements = 0
    for entry in inputs:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
            and len(entry[1]) <= 8
            and isinstance(entry[2], str)
            and entry[2] in DTYPE_NAMES
        ):
            raise bad(f"malformed input entry {brief(entry)}")
        if not all(_is_int(d, 0, 1 << 31) for d in entry[1]):
            raise bad(f"malformed input shape {brief(entry[1])}")
        input_elements += math.prod(entry[1])
        if input_elements > MAX_INPUT_ELEMENTS:
            raise bad(
                f"the inputs declare more than {MAX_INPUT_ELEMENTS:,} elements (example inputs are built)"
            )
    aliases = doc.get("aliases", [])
    if not isinstance(aliases, list):
        raise bad("malformed aliases")
    targets = set()
    for entry in aliases:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and all(isinstance(part, str) for part in entry)
            and entry[1] in seen
            and entry[0] not in seen
            and entry[0] not in targets
        ):
            raise bad(f"malformed alias {brief(entry)}")
        problem = _name_problem(entry[0])
        if problem:
            raise bad(f"tensor alias {brief(entry[0])} has {problem}")
        targets.add(entry[0])
    return doc


def _check_header_crc(meta: dict[str, Any], count: int, version: tuple[int, int]) -> None:
    """The header bytes outside the table CRC (magic, version, count) against the graph's copy of
    their CRC. Format 1.0 files have none; a 1.0 file whose minor version was damaged reads as >= 1.1
    and is caught because the CRC is then missing."""
    stored = meta.get("header_crc32")
    if stored is None and version[1] == 0:
        return
    if stored is None:
        raise SqcFormatError(f"header checksum missing from a format {version[0]}.{version[1]} file", 0)
    if stored != header_crc(count, version):
        raise SqcFormatError("header checksum mismatch: the version or section count bytes are corrupt", 0)


MAX_REPORT_TEXT = 4096
"""The longest string a report may hold (a key, a spec, a value, a diagnostic): sqc's are < 300."""


def _scalar(value: Any) -> bool:
    """A report value: a boolean, a 64-bit integer, a float (NaN included: a metric may be), or text."""
    if isinstance(value, (bool, float)):
        return True
    if isinstance(value, int):
        return -(1 << 63) <= value < (1 << 64)
    return isinstance(value, str) and len(value) <= MAX_REPORT_TEXT


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_REPORT_TEXT


def report_problem(obj: Any) -> str | None:
    """Why one pass record (``PassRecord.to_json()``) cannot be stored or read, or None. Reader and
    writer agree: every stats value, and every value of a layer's row, is a scalar that prints (a list,
    an object or a 400-digit number where ``inspect`` formats a number used to crash it)."""
    if not isinstance(obj, dict) or not _text(obj.get("spec")) or not isinstance(obj.get("changed"), bool):
        return "a record without a spec or changed flag"
    stats, layers, notes = obj.get("stats", {}), obj.get("layers", {}), obj.get("diagnostics", [])
    if not isinstance(stats, dict) or not isinstance(layers, dict) or not isinstance(notes, list):
        return "stats, layers or diagnostics of the wrong type"
    for key, value in stats.items():
        if not _text(key) or not _scalar(value):
            return f"stats entry {brief(key)} = {brief(value)} is not a number or short text"
    for layer, row in layers.items():
        if not _text(layer) or not isinstance(row, dict):
            return f"layer entry {brief(layer)} is not an object"
        for key, value in row.items():
            if not _text(key) or not _scalar(value):
                return f"layer {brief(layer)}: {brief(key)} = {brief(value)} is not a number or short text"
    if not all(_text(line) for line in notes):
        return "a diagnostic that is not short text"
    return None


def _check_report(doc: Any, offset: int) -> list[PassRecord]:
    if not isinstance(doc, list):
        raise SqcFormatError("report section is malformed", offset)
    for number, obj in enumerate(doc):
        problem = report_problem(obj)
        if problem:
            raise SqcFormatError(f"report section is malformed: pass #{number + 1}: {problem}", offset)
    return [PassRecord.from_json(obj) for obj in doc]


_KINDS = {KIND_GRAPH: "graph", KIND_TENSOR: "tensor", KIND_REPORT: "report"}


def _kind_name(s: Section) -> str:
    if s.kind == KIND_TENSOR:
        return f"tensor #{s.tensor}, {CODEC_NAMES.get(s.codec, '?')}"
    return _KINDS[s.kind]


def read(path: Path) -> CompressedModel:
    """Load a ``.sqc`` file back into the IR (graph, records, inputs, pipeline, report)."""
    data = _read_bytes(path)
    with without_cycle_collection():
        try:
            layout = read_layout(data)
        except SqcFormatError as exc:
            raise _located(exc, str(path)) from None
        return model_from_layout(layout, str(path))


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a file is decoded.

    Why: decoding allocates many small containers per tensor, and every few hundred allocations the
    collector walks all surviving objects again — quadratic in the number of tensors. A crafted file of
    16,125 tiny tensors took 108 s to load, 97 of them in the collector, and 4 s without it. Reading
    creates no reference cycles that outlive it, so nothing is lost by collecting once afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _located(exc: SqcFormatError, where: str) -> SqcFormatError:
    """``exc`` prefixed with the file name, keeping its offset."""
    located = SqcFormatError(f"{where}: {exc}")
    located.offset = exc.offset
    return located


def read_module(path: Path) -> fx.GraphModule:
    """Only the runnable module of a ``.sqc`` file (what ``sqc.load`` returns), decoded tensor by tensor
    straight to float values (:func:`~sqc.formats.tensor_codec.decode_values`): no record, code tensor
    or mask outlives its own tensor, so memory stays close to the output's size. Validation and
    errors are those of :func:`read`."""
    data = _read_bytes(path)
    with without_cycle_collection():
        return module_from_bytes(data, str(path))


def module_from_bytes(data: bytes | memoryview, where: str) -> fx.GraphModule:
    """:func:`read_module` of a file's bytes (``where`` names it in errors)."""
    layout, value = _value_reader(data, where)
    module, _ = _module_from_layout(layout, where, value)
    return module


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.sqc`` file by name, decoded to float values, without building the module:
    what ``torch.nn.Module.load_state_dict`` takes (a tied name maps to the same tensor as the name it
    is tied to). Why apart from :func:`read_module`: a user who has the architecture loads the weights
    into it, and the decoder's own cost is measured without fx's code generation. Validation and errors
    are those of :func:`read` for everything but the graph, which this does not read."""
    data = _read_bytes(path)
    with without_cycle_collection():
        return state_dict_from_bytes(data, str(path))


def state_dict_from_bytes(data: bytes | memoryview, where: str) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict` of a file's bytes (``where`` names it in errors)."""
    layout, value = _value_reader(data, where)
    tensors = {name: value(name) for name in layout.tensors}
    for alias, name in layout.meta.get("aliases", []):
        tensors[alias] = tensors[name]
    return tensors


def _value_reader(data: bytes | memoryview, where: str) -> tuple[Layout, Callable[[str], torch.Tensor]]:
    """The validated layout of a file's bytes, its tensors left coded, and a function decoding one of
    them by name straight to float values (:func:`~sqc.formats.tensor_codec.decode_values`)."""
    view = memoryview(data)
    try:
        layout = read_layout(data, decode_tensors=False)
    except SqcFormatError as exc:
        raise _located(exc, where) from None

    def value(name: str) -> torch.Tensor:
        state, _, s = layout.tensors[name]
        payload = view[s.offset : s.offset + s.length]
        try:
            return decode_values(s.codec, payload, name, state.shape, state.role, s.offset)
        except SqcFormatError as exc:
            raise _located(exc, where) from None

    return layout, value


def model_from_layout(layout: Layout, where: str) -> CompressedModel:
    """The IR from a validated layout (read with ``decode_tensors``): builds the graph and the module."""
    records = {name: state for name, (state, _, _) in layout.tensors.items()}
    gm, inputs = _module_from_layout(layout, where, lambda name: records[name].decode())
    model = CompressedModel(gm, records, inputs, layout.meta["pipeline"], layout.report)
    model.seed = layout.seed
    model.aliases = dict(layout.meta.get("aliases", []))
    return model


def _module_from_layout(
    layout: Layout, where: str, value_of: Callable[[str], torch.Tensor]
) -> tuple[fx.GraphModule, list[InputSpec]]:
    """The GraphModule (graph + one parameter or buffer per tensor, from ``value_of``) and the inputs."""
    meta = layout.meta
    names = [t[0] for t in meta["tensors"]]
    graph_section = layout.sections[0]

    def bad(message: str) -> SqcFormatError:
        return SqcFormatError(f"{where}: graph section: {message}", graph_section.offset)

    try:
        graph = decode_graph(
            meta,
            names,
            graph_section.offset,
            NODE_BASE + graph_section.length // BYTES_PER_NODE,
            max_values=VALUES_BASE + VALUES_PER_BYTE * graph_section.length,
        )
    except SqcFormatError as exc:
        raise _located(exc, where) from None

    def place(module: nn.Module, name: str, what: str) -> tuple[nn.Module, str]:
        """The module that will hold ``name`` (made as needed) and the attribute's name in it."""
        *path, leaf = name.split(".")
        owner = module
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
            if not isinstance(owner, nn.Module):
                raise bad(f"{what} {brief(name)} clashes with another tensor")
        if hasattr(owner, leaf):
            raise bad(f"{what} {brief(name)} is used twice or names a module attribute")
        return owner, leaf

    root = nn.Module()
    for name in names:
        owner, leaf = place(root, name, "tensor name")
        value = value_of(name)
        if layout.tensors[name][0].role == "buffer":
            owner.register_buffer(leaf, value)
        else:
            owner.register_parameter(leaf, nn.Parameter(value))
    try:
        gm = fx.GraphModule(root, graph, class_name="SqcModel")
    except Exception as exc:
        raise bad(f"does not form a module ({' '.join(str(exc).split())[:200]})") from None
    for alias, name in meta.get(
        "aliases", []
    ):  # after the GraphModule, which copies only what the graph reads
        owner, leaf = place(gm, alias, "tensor alias")
        if layout.tensors[name][0].role == "buffer":
            owner.register_buffer(leaf, gm.get_buffer(name))
        else:
            owner.register_parameter(leaf, gm.get_parameter(name))  # the same object: still tied
    inputs = [InputSpec(n, tuple(s), d) for n, s, d in meta["inputs"]]
    placeholders = [n.name for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        raise bad(f"{len(placeholders)} graph inputs but {len(inputs)} input specs")
    return gm, inputs


class SqcFormat:
    """The built-in container format, registered as ``sqc`` in the ``sqc.formats`` group."""

    name = "sqc"
    suffix = ".sqc"

    @staticmethod
    def save(model: CompressedModel, path: Path, *, force: bool = False) -> int:
        return save(model, path, force=force)

    @staticmethod
    def load(path: Path) -> CompressedModel:
        return read(path)
