"""The ``.sqc`` container: header, section table, graph, tensors, report (``FORMAT.md`` specifies it).

Writing is deterministic (same IR -> same bytes) and atomic (temp file in the target directory, fsync,
rename; an existing file is only replaced with ``force``). Reading validates the magic, the version,
every length and offset, and a CRC32 per section before anything is decoded.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
from torch import fx

from sqc.errors import SqcError, SqcFormatError
from sqc.formats.binio import Reader, Writer
from sqc.formats.graph_codec import decode_graph, encode_graph, inflate_json
from sqc.formats.tensor_codec import CODEC_NAMES, Breakdown, decode_tensor, encode_tensor
from sqc.ir import CompressedModel, InputSpec, PassRecord, TensorState

MAGIC = b"\x89SQC\r\n\x1a\n"
VERSION = (1, 0)
HEADER_SIZE = 28
ENTRY_SIZE = 20
KIND_GRAPH, KIND_TENSOR, KIND_REPORT = 1, 2, 3
NO_TENSOR = 0xFFFFFFFF
MAX_SECTIONS = 1 << 20

__all__ = ["SqcFormat", "read", "read_layout", "save", "serialize", "write_atomic"]


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


def serialize(model: CompressedModel) -> bytes:
    """The whole file as bytes (deterministic)."""
    names = list(model.tensors)
    index = {name: i for i, name in enumerate(names)}
    meta = {
        "inputs": [[s.name, list(s.shape), s.dtype] for s in model.inputs],
        "tensors": [[name, list(model.tensors[name].shape), model.tensors[name].role] for name in names],
        "pipeline": model.pipeline,
        "producer": "sqc 0.1",
    }
    bodies: list[tuple[int, int, int, bytes]] = [
        (KIND_GRAPH, 0, NO_TENSOR, encode_graph(model.graph_module, index, meta))
    ]
    for i, name in enumerate(names):
        codec, payload, _ = encode_tensor(model.tensors[name])
        bodies.append((KIND_TENSOR, codec, i, payload))
    report = [r.to_json() for r in model.report]
    bodies.append((KIND_REPORT, 0, NO_TENSOR, _deflate_json(report)))
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
    head.u16(VERSION[0])
    head.u16(VERSION[1])
    head.u32(len(bodies))
    head.u64(total)
    head.u32(zlib.crc32(table_bytes))
    return head.getvalue() + table_bytes + b"".join(b[3] for b in bodies)


def _deflate_json(obj: Any) -> bytes:
    return zlib.compress(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8"), 9)


def save(model: CompressedModel, path: Path, *, force: bool = False) -> int:
    """Write atomically; refuse to replace an existing file unless ``force``. Returns the size."""
    data = serialize(model)
    write_atomic(path, data, force=force)
    return len(data)


def write_atomic(path: Path, data: bytes, *, force: bool = False) -> None:
    """Temp file beside ``path``, fsync, then rename: a reader never sees half a file."""
    path = Path(path)
    if path.exists() and not force:
        raise SqcError(f"{path}: already exists (use --force to replace it)")
    if path.is_dir():
        raise SqcError(f"{path}: is a directory")
    if not path.parent.exists():
        raise SqcError(f"{path.parent}: no such directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not force and path.exists():
            raise SqcError(f"{path}: already exists (use --force to replace it)")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SqcError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SqcError(f"{path}: is a directory") from None
    except OSError as exc:
        raise SqcError(f"{path}: cannot read ({exc.strerror})") from None


def read_layout(data: bytes | memoryview, *, decode_tensors: bool = True) -> Layout:
    """Validate the whole file and parse every section (decoding tensors unless asked not to)."""
    view = memoryview(data)
    r = Reader(view, 0, "header")
    if len(view) < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        raise SqcFormatError("not an .sqc file (bad magic)", 0)
    r.take(len(MAGIC))
    major, minor = r.u16(), r.u16()
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
    graph_doc = inflate_json(
        view[sections[0].offset : sections[0].offset + sections[0].length],
        "graph section",
        sections[0].offset,
    )
    meta = _check_meta(graph_doc, sections[0].offset)
    report_doc = inflate_json(
        view[sections[-1].offset : sections[-1].offset + sections[-1].length],
        "report section",
        sections[-1].offset,
    )
    try:
        report = [PassRecord.from_json(obj) for obj in report_doc]
    except (TypeError, KeyError, ValueError, AttributeError):
        raise SqcFormatError("report section is malformed", sections[-1].offset) from None
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
    seen = set()
    for entry in tensors:
        ok = (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
            and len(entry[1]) <= 8
            and all(isinstance(d, int) and 0 <= d < (1 << 40) for d in entry[1])
            and entry[2] in ("weight", "param", "buffer")
        )
        if not ok or entry[0] in seen:
            raise bad(f"malformed tensor entry {str(entry)[:60]}")
        numel = 1
        for d in entry[1]:
            numel *= d
        if numel > (1 << 34):
            raise bad(f"tensor {entry[0]} claims {numel} elements")
        seen.add(entry[0])
    for entry in inputs:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
        ):
            raise bad(f"malformed input entry {str(entry)[:60]}")
        if not all(isinstance(d, int) and 0 <= d < (1 << 31) for d in entry[1]):
            raise bad(f"malformed input shape {entry[1]}")
    return doc


def _kind_name(s: Section) -> str:
    if s.kind == KIND_TENSOR:
        return f"tensor #{s.tensor}, {CODEC_NAMES.get(s.codec, '?')}"
    return {KIND_GRAPH: "graph", KIND_REPORT: "report"}[s.kind]


def read(path: Path) -> CompressedModel:
    """Load a ``.sqc`` file back into the IR (graph, records, inputs, pipeline, report)."""
    data = _read_bytes(path)
    try:
        layout = read_layout(data)
    except SqcFormatError as exc:
        raise SqcFormatError(f"{path}: {exc}") from None
    return model_from_layout(layout, str(path))


def model_from_layout(layout: Layout, where: str) -> CompressedModel:
    meta = layout.meta
    names = [t[0] for t in meta["tensors"]]
    try:
        graph = decode_graph(meta, names, layout.sections[0].offset)
    except SqcFormatError as exc:
        raise SqcFormatError(f"{where}: {exc}") from None
    root = nn.Module()
    records: dict[str, TensorState] = {}
    for name in names:
        state = layout.tensors[name][0]
        records[name] = state
        value = state.decode()
        *path, leaf = name.split(".")
        owner = root
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
            if not isinstance(owner, nn.Module):
                raise SqcFormatError(f"{where}: tensor name {name} clashes with another tensor")
        if hasattr(owner, leaf):
            raise SqcFormatError(f"{where}: tensor name {name} is used twice")
        if state.role == "buffer":
            owner.register_buffer(leaf, value)
        else:
            owner.register_parameter(leaf, nn.Parameter(value))
    try:
        gm = fx.GraphModule(root, graph, class_name="SqcModel")
    except Exception as exc:
        raise SqcFormatError(f"{where}: graph section does not form a module ({exc})") from None
    inputs = [InputSpec(n, tuple(s), d) for n, s, d in meta["inputs"]]
    placeholders = [n.name for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        raise SqcFormatError(f"{where}: {len(placeholders)} graph inputs but {len(inputs)} input specs")
    return CompressedModel(gm, records, inputs, meta["pipeline"], layout.report)


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
