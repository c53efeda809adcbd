"""Structure-aware mutations of ``.sqc`` files, shared by the fuzzer and the test suite.

Random bytes almost never get past the CRCs, so most mutations here take a file apart (header, table,
sections; the graph and report JSON inflated), change one thing, and put it back together with every
length and checksum fixed up, so that the change reaches the parsers behind the checksums. A few
mutations leave the damage unrepaired, to exercise the checks themselves.

``mutate(data, rng, mutate_bytes)`` is the entry point; ``mutate_bytes(blob, max_size)`` is the byte
mutator (``atheris.Mutate`` under the fuzzer, :func:`random_bytes_mutation` elsewhere).
"""

from __future__ import annotations

import copy
import json
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqc.formats import container
from sqc.formats.binio import varint

ByteMutator = Callable[[bytes, int], bytes]

# Values that break assumptions: boundaries of every width the format uses, huge shapes, wrong types.
INTERESTING: list[Any] = [
    0,
    1,
    -1,
    2,
    7,
    8,
    255,
    256,
    65535,
    65536,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 34,
    (1 << 34) + 1,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    1 << 64,
    -(1 << 63),
    1.5,
    -0.0,
    1e308,
    float("inf"),
    float("nan"),
    True,
    False,
    None,
    "",
    "x",
    "relu",
    "fc1.weight",
    "a.b.c",
    ".",
    "a..b",
    '"',
    "\\",
    "\n",
    "__class__",
    "forward",
    "_parameters",
    "\ufb01",  # NFKC-normalises to "fi"
    "a-b",  # the C identifier of "a_b"
    "[/x]\x1b[31m",  # rich markup and an escape sequence
    "float32",
    "weight",
    "buffer",
    [],
    {},
    [0],
    [1 << 20, 1 << 20],
    [1 << 17, 1 << 17],
    [1 << 34],
    [3, 0, 5],
    {"%": 0},
    {"%": -1},
    {"%": 1 << 40},
    {"slice": [None, None, None]},
    {"dtype": "float32"},
    {"...": 0},
    {"map": {}},
    # format 1.3: ATen operators, argument kinds, ordered dicts, declared sizes
    "aten::layer_norm",
    "aten::add.Tensor",
    "aten::from_file",
    "aten::__class__",
    "aten::relu.nope",
    "prims::add",
    {"device": "cpu"},
    {"device": "cuda:99999"},
    {"device": "evil"},
    {"layout": "strided"},
    {"memory_format": "channels_last"},
    {"dtype": "bool"},
    {"items": [["b", 1], ["a", 2]]},
    {"items": [["a", 1], ["a", 2]]},
    list(range(5000)),  # a wide argument list
    [1, 700_000_000],  # a huge declared input
    [["lm.weight", "fc1.weight"]],  # an alias table
    "int64",
]


@dataclass
class Parsed:
    """A file split into its parts; ``sections`` are ``[kind, codec, tensor, payload]``."""

    version: tuple[int, int]
    sections: list[list[Any]]


def split(data: bytes) -> Parsed | None:
    """Header and table parsed loosely (CRCs ignored); None when the table does not frame the file."""
    if len(data) < container.HEADER_SIZE or data[:8] != container.MAGIC:
        return None
    major, minor, count = struct.unpack_from("<HHI", data, 8)
    if not 1 <= count <= 4096 or container.HEADER_SIZE + container.ENTRY_SIZE * count > len(data):
        return None
    offset = container.HEADER_SIZE + container.ENTRY_SIZE * count
    sections = []
    for i in range(count):
        kind, codec, _, tensor, _, length = struct.unpack_from(
            "<BBHIIQ", data, container.HEADER_SIZE + container.ENTRY_SIZE * i
        )
        if length > len(data) - offset:
            return None
        sections.append([kind, codec, tensor, data[offset : offset + length]])
        offset += length
    return Parsed((major, minor), sections)


def join(parsed: Parsed, fix_header_crc: bool = True) -> bytes:
    """Reassemble with correct lengths, CRCs and size; optionally fix the graph's header_crc32 too."""
    sections = [list(s) for s in parsed.sections]
    if fix_header_crc and sections:
        doc = inflate(sections[0][3])
        if isinstance(doc, dict) and "header_crc32" in doc:
            doc["header_crc32"] = container.header_crc(len(sections), parsed.version)
            sections[0][3] = deflate(doc, sections[0][1])
    return container.assemble([tuple(s) for s in sections], parsed.version)  # type: ignore[misc]


def inflate(payload: bytes) -> Any:
    """The JSON of a graph or report section, zlib (format 1.0/1.1) or preset-dictionary DEFLATE (1.2)."""
    try:
        return json.loads(zlib.decompress(payload))
    except Exception:
        pass
    try:
        inflater = zlib.decompressobj(-15, zdict=container.PRESET_DICTIONARY)
        return json.loads(inflater.decompress(payload) + inflater.flush())
    except Exception:
        return None


def _json_text(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )


def deflate(doc: Any, codec: int = container.JSON_ZLIB) -> bytes:
    """A graph or report section's bytes for ``doc`` in ``codec`` (the section table's codec byte)."""
    return _pack(_json_text(doc), codec)


def _pack(text: bytes, codec: int) -> bytes:
    if codec == container.JSON_PRESET:
        packer = zlib.compressobj(
            9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=container.PRESET_DICTIONARY
        )
        return packer.compress(text) + packer.flush()
    return zlib.compress(text, 9)


def random_bytes_mutation(blob: bytes, max_size: int, rng: random.Random | None = None) -> bytes:
    """A small libFuzzer-like byte mutator: flip, set, insert, delete, duplicate a run."""
    rng = rng or random.Random()
    out = bytearray(blob)
    for _ in range(rng.choice((1, 1, 2, 4))):
        op = rng.randrange(6)
        if not out:
            out.append(rng.randrange(256))
            continue
        i = rng.randrange(len(out))
        if op == 0:
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            del out[i : i + rng.randint(1, 8)]
        elif op == 4:
            j = rng.randrange(len(out))
            out[i:i] = out[j : j + rng.randint(1, 16)]
        else:
            out[i : i + 8] = struct.pack("<Q", rng.choice((0, 1 << 31, 1 << 63, (1 << 64) - 1)))
    return bytes(out[:max_size])


def _paths(doc: Any, prefix: tuple[Any, ...] = (), limit: int = 2000) -> list[tuple[Any, ...]]:
    """Paths to every value in a JSON document (breadth-first, at most ``limit``)."""
    out: list[tuple[Any, ...]] = []
    queue = [(prefix, doc)]
    while queue and len(out) < limit:
        path, value = queue.pop(0)
        out.append(path)
        if isinstance(value, dict):
            queue.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            queue.extend(((*path, i), v) for i, v in enumerate(value))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def mutate_json(doc: Any, rng: random.Random) -> Any:
    """One structural edit: replace, delete, duplicate or swap a value somewhere in the document."""
    doc = copy.deepcopy(doc)
    paths = _paths(doc)
    path = rng.choice(paths)
    if not path:
        return rng.choice(INTERESTING)
    parent, key = _get(doc, path[:-1]), path[-1]
    op = rng.randrange(8)
    if op <= 2:
        parent[key] = copy.deepcopy(rng.choice(INTERESTING))
    elif op == 3:
        parent[key] = copy.deepcopy(_get(doc, rng.choice(paths)))  # graft another part of the file
    elif op == 4:
        del parent[key]
    elif op == 5 and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))  # duplicate (a node, a tensor, a dimension)
    elif op == 6 and isinstance(parent, list) and len(parent) > 1:
        other = rng.randrange(len(parent))
        parent[key], parent[other] = parent[other], parent[key]
    else:
        value = parent[key]
        if type(value) is int:
            parent[key] = rng.choice((value + 1, value - 1, value * 2, -value, value << 20))
        elif isinstance(value, str):
            parent[key] = value + rng.choice(("_1", "x", ".a", "'", "\u00e9"))
        elif isinstance(value, list):
            parent[key] = value * rng.choice((0, 2, 3))
        else:
            parent[key] = copy.deepcopy(rng.choice(INTERESTING))
    return doc


def _mutate_payload(payload: bytes, rng: random.Random, mutate_bytes: ByteMutator) -> bytes:
    """Byte mutation, or a varint-shaped field written somewhere (huge counts, boundaries)."""
    if payload and rng.random() < 0.3:
        i = rng.randrange(len(payload))
        value = rng.choice((0, 1, 127, 128, 16383, 16384, 1 << 20, 1 << 31, 1 << 40, (1 << 62) + 1))
        field = varint(value)
        keep = rng.random() < 0.5
        return payload[:i] + field + payload[i + (0 if keep else len(field)) :]
    return mutate_bytes(payload, max(64, 2 * len(payload)))


def mutate(data: bytes, rng: random.Random, mutate_bytes: ByteMutator, max_size: int = 1 << 16) -> bytes:
    """A mutated file: mostly well-framed (CRCs fixed) with one change inside, sometimes raw damage."""
    parsed = split(data)
    choice = rng.random()
    if parsed is None or choice < 0.08:
        return mutate_bytes(data, max_size)  # raw damage, nothing repaired
    sections = parsed.sections
    if choice < 0.16:  # raw damage, then the framing repaired where it still parses
        again = split(mutate_bytes(data, max_size))
        return join(again, rng.random() < 0.8) if again is not None else data
    if choice < 0.24:  # the version fields (a newer major, an unknown minor)
        parsed.version = (
            rng.choice((0, 1, 1, 2, 255, 65535)),
            rng.choice((0, 1, 2, 9, 65535)),
        )
        return join(parsed, rng.random() < 0.7)
    if choice < 0.34:  # sections reordered, duplicated, dropped, or table fields changed
        op = rng.randrange(4)
        i = rng.randrange(len(sections))
        if op == 0:
            j = rng.randrange(len(sections))
            sections[i], sections[j] = sections[j], sections[i]
        elif op == 1:
            sections.insert(rng.randrange(len(sections) + 1), list(sections[i]))
        elif op == 2 and len(sections) > 1:
            del sections[i]
        else:
            field = rng.randrange(3)
            sections[i][field] = rng.choice((0, 1, 2, 3, 4, 255, (1 << 32) - 1, rng.randrange(8)))
            if field < 2:
                sections[i][field] &= 0xFF
        return join(parsed, rng.random() < 0.9)
    if choice < 0.62 and len(sections) > 2:  # a tensor payload
        section = sections[rng.randrange(1, len(sections) - 1)]
        section[3] = _mutate_payload(section[3], rng, mutate_bytes)
        return join(parsed)
    # the graph (usually) or the report, as JSON or as text
    index = 0 if rng.random() < 0.8 or len(sections) < 2 else len(sections) - 1
    doc = inflate(sections[index][3])
    if doc is None or rng.random() < 0.15:
        text = _json_text(doc) if doc is not None else sections[index][3]
        mutated = mutate_bytes(text, max(256, 2 * len(text)))
        sections[index][3] = _pack(mutated, sections[index][1])
    else:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            doc = mutate_json(doc, rng)
        sections[index][3] = deflate(doc, sections[index][1])
    return join(parsed, rng.random() < 0.95)
