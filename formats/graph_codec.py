"""The graph section: the canonical FX graph as a documented op list (JSON, zlib), never a pickle.

Node entries (``FORMAT.md`` has the full schema)::

    ["in", name]                                   a graph input (placeholder)
    ["attr", name, tensor_index]                   a stored tensor (get_attr)
    ["call", name, op, args, kwargs, shape|null]   a vocabulary function (sqc.ir.ops.FUNCTIONS), or an
                                                   ATen operator by schema name ("aten::layer_norm")
    ["method", name, method, args, kwargs, null]   a vocabulary method (sqc.ir.ops.METHODS)
    ["out", value]                                 the graph output

Arguments are JSON values; a reference to an earlier node is ``{"%": index}``, a slice
``{"slice": [start, stop, step]}``, Ellipsis ``{"...": 0}``, a dtype ``{"dtype": "float32"}``, a layout,
memory format or device (``{"device": "cpu"}``); lists and tuples both become lists and come back as
tuples. The reader only accepts op names from the vocabulary or ATen operators that pass
:func:`sqc.ir.ops.resolve_aten`, and references to earlier nodes, so a file cannot name arbitrary code.

torch.fx turns the graph into Python source, so everything from the file that reaches that source is
checked first: node names must come back from fx's namespace unchanged (valid, unique identifiers),
keyword-argument names must be identifiers, and tensor names (which fx quotes inside ``getattr``) are
checked by the container. Work is linear in the section size: inflating is capped relative to the
compressed size, and so is the number of nodes.
"""

from __future__ import annotations

import json
import keyword
import reprlib
import zlib
from typing import Any

import torch
from torch import fx

from sqc.errors import SqcFormatError
from sqc.ir.ops import FUNCTIONS, METHODS, resolve_aten, stored_name

GRAPH_SCHEMA = 1
MAX_JSON = 64 << 20  # inflate limit: a graph of a million nodes fits; a zip bomb does not
JSON_BASE, JSON_RATIO = 16 << 10, 64
"""A JSON section may inflate to at most ``JSON_BASE + JSON_RATIO x`` its compressed size (and never past
``MAX_JSON``). sqc's own sections inflate 2-20x (level-9 zlib of repetitive JSON); a zip bomb is ~1000x."""
VALUES_BASE, VALUES_PER_BYTE = 4096, 4
"""At most ``VALUES_BASE + VALUES_PER_BYTE x`` argument values (every list, dict and scalar counts) in a
graph section of ``x`` compressed bytes: sqc's graphs hold 0.05-0.25 per byte (BERT, GPT-2, LSTM,
MobileNet-like). Without it a 319 KB section of one wide argument list took 6 GB and 100 s to build."""
NODE_BASE, BYTES_PER_NODE = 256, 2
"""At most ``NODE_BASE + compressed graph bytes / BYTES_PER_NODE`` nodes; sqc's graphs cost 5-30 bytes per
node. Each node costs ~9 KB once fx has built the module, so this bounds memory by the file size."""
_DTYPES_1_2 = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "int64": torch.int64,
}
_DTYPES = _DTYPES_1_2 | {
    name: getattr(torch, name)
    for name in ("bfloat16", "int32", "int16", "int8", "uint8", "bool", "complex64", "complex128")
}
"""dtypes an argument or a graph input may name; format 1.3 added all but the first four."""
DTYPE_NAMES = frozenset(_DTYPES)
DTYPE_NAMES_1_2 = frozenset(_DTYPES_1_2)
_LAYOUTS = {"strided": torch.strided, "sparse_coo": torch.sparse_coo}
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
    "preserve_format": torch.preserve_format,
}
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta")
"""``{"device": "cpu"}`` arguments (format 1.3): a device type, optionally ``:index``. A stored graph
names the device the model was captured on; :func:`decode_graph` can map them all to another."""
FEATURES_1_3 = frozenset(
    {"aten", "layout", "memory_format", "device", "dtype-1.3", "aliases", "typed", "items"}
)
"""What a graph may use only in a format 1.3 file (the writer picks the oldest version that reads it)."""


def _encode_arg(value: Any, index: dict[fx.Node, int], features: set[str]) -> Any:
    if isinstance(value, fx.Node):
        return {"%": index[value]}
    if isinstance(value, (list, tuple)):
        return [_encode_arg(v, index, features) for v in value]
    if isinstance(value, dict):
        keys = [str(k) for k in value]
        if keys != sorted(keys):  # JSON objects are written with sorted keys: keep the order as pairs
            features.add("items")
            return {"items": [[str(k), _encode_arg(v, index, features)] for k, v in value.items()]}
        return {"map": {str(k): _encode_arg(v, index, features) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode_arg(v, index, features) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"...": 0}
    if isinstance(value, torch.dtype):
        name = str(value).removeprefix("torch.")
        if name not in _DTYPES:
            raise ValueError(f"dtype {value} cannot be stored")
        if name not in DTYPE_NAMES_1_2:
            features.add("dtype-1.3")
        return {"dtype": name}
    if isinstance(value, torch.layout):
        features.add("layout")
        return {"layout": _enum_name(_LAYOUTS, value)}
    if isinstance(value, torch.memory_format):
        features.add("memory_format")
        return {"memory_format": _enum_name(_MEMORY_FORMATS, value)}
    if isinstance(value, torch.device):
        features.add("device")
        return {"device": str(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"argument of type {type(value).__name__} cannot be stored")


def _enum_name(table: dict[str, Any], value: Any) -> str:
    for name, member in table.items():
        if member == value:
            return name
    raise ValueError(f"argument {value} cannot be stored")


def op_label(node: fx.Node) -> str:
    """The name a ``call_function`` node's operator is stored under: a vocabulary name (``conv2d``) or
    an ATen schema name (``aten::layer_norm``)."""
    name = stored_name(node.target)
    if name is None:
        raise ValueError(f"node {node.name}: operator {node.target} cannot be stored")
    return name


def graph_text(nodes: list[list[Any]], extra: dict[str, Any]) -> bytes:
    """The graph document as UTF-8 JSON: keys sorted, no spaces."""
    doc = {"schema": GRAPH_SCHEMA, "nodes": nodes, **extra}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=True).encode("utf-8")


def graph_nodes(gm: fx.GraphModule, tensor_index: dict[str, int], features: set[str]) -> list[list[Any]]:
    """The ``nodes`` list of the graph document; what it uses of format 1.3 is added to ``features``
    (see :data:`FEATURES_1_3`)."""
    index: dict[fx.Node, int] = {}
    nodes: list[list[Any]] = []
    for node in gm.graph.nodes:
        index[node] = len(nodes)
        if node.op == "placeholder":
            nodes.append(["in", node.name])
        elif node.op == "get_attr":
            nodes.append(["attr", node.name, tensor_index[str(node.target)]])
        elif node.op in ("call_function", "call_method"):
            op = op_label(node) if node.op == "call_function" else str(node.target)
            if op.startswith("aten::"):
                features.add("aten")
            shape = node.meta.get("shape")
            nodes.append(
                [
                    "call" if node.op == "call_function" else "method",
                    node.name,
                    op,
                    _encode_arg(node.args, index, features),
                    {k: _encode_arg(v, index, features) for k, v in node.kwargs.items()},
                    list(shape) if shape is not None else None,
                ]
            )
        elif node.op == "output":
            nodes.append(["out", _encode_arg(node.args[0], index, features)])
        else:
            raise ValueError(f"node {node.name}: op {node.op} cannot be stored")
    return nodes


def json_limit(compressed: int) -> int:
    """The most bytes a JSON section of ``compressed`` bytes may inflate to."""
    return min(MAX_JSON, JSON_BASE + JSON_RATIO * compressed)


def brief(value: Any, limit: int = 60) -> str:
    """A short repr for messages, safe for values from a file (huge or deeply nested)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxlist = short.maxtuple = short.maxdict = 4
    return short.repr(value)[: 2 * limit]


def inflate_json(data: bytes | memoryview, what: str, offset: int) -> Any:
    """zlib + JSON with a size limit (:func:`json_limit`); any failure is a format error at ``offset``."""
    limit = json_limit(len(data))
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(data, limit)
        if inflater.unconsumed_tail:
            raise SqcFormatError(
                f"{what} inflates to more than {limit} bytes ({len(data)} compressed): a zip bomb?", offset
            )
        if not inflater.eof or inflater.unused_data:
            raise SqcFormatError(f"{what}: truncated or trailing zlib data", offset)
        return json.loads(text.decode("utf-8"))
    except SqcFormatError:
        raise
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SqcFormatError(f"{what} is not valid zlib/JSON ({exc})", offset) from None


def _is_pair(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)


def _device_ok(text: str) -> bool:
    kind, _, number = text.partition(":")
    return kind in _DEVICE_TYPES and (not number or (number.isdigit() and len(number) <= 4))


def decode_graph(
    doc: Any,
    tensors: list[str],
    offset: int,
    max_nodes: int | None = None,
    device: torch.device | None = None,
    max_values: int | None = None,
) -> fx.Graph:
    """Rebuild the fx.Graph from the op list, accepting only vocabulary ops and backward references.

    Every node gets the name stored in the file; a name fx would change (not an identifier, a Python
    keyword or builtin, or a duplicate) is refused, so the generated source only holds names that were
    checked, and fx's name search never runs (it is quadratic on crafted names).
    """

    def bad(message: str) -> SqcFormatError:
        return SqcFormatError(f"graph section: {message}", offset)

    if (
        not isinstance(doc, dict)
        or doc.get("schema") != GRAPH_SCHEMA
        or not isinstance(doc.get("nodes"), list)
    ):
        raise bad(f"unknown graph schema {brief(doc.get('schema') if isinstance(doc, dict) else None)}")
    if max_nodes is not None and len(doc["nodes"]) > max_nodes:
        raise bad(f"{len(doc['nodes'])} nodes is more than a section of this size can describe ({max_nodes})")
    graph = fx.Graph()
    built: list[fx.Node] = []

    values = [0]

    def arg(value: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise bad("arguments nested too deeply")
        values[0] += 1
        if max_values is not None and values[0] > max_values:
            raise bad(f"more argument values than a section of this size can describe ({max_values})")
        if isinstance(value, list):
            return tuple(arg(v, depth + 1) for v in value)
        if isinstance(value, dict):
            if len(value) != 1:
                raise bad(f"malformed argument {brief(value)}")
            ((key, inner),) = value.items()
            if key == "%":
                if type(inner) is not int or not 0 <= inner < len(built):
                    raise bad(f"reference to node {brief(inner)} that is not defined before use")
                return built[inner]
            if key == "slice" and isinstance(inner, list) and len(inner) == 3:
                return slice(*(arg(v, depth + 1) for v in inner))
            if key == "...":
                return Ellipsis
            if key == "dtype" and inner in _DTYPES:
                return _DTYPES[inner]
            if key == "layout" and inner in _LAYOUTS:
                return _LAYOUTS[inner]
            if key == "memory_format" and inner in _MEMORY_FORMATS:
                return _MEMORY_FORMATS[inner]
            if key == "device" and isinstance(inner, str) and _device_ok(inner):
                return torch.device(inner) if device is None else device
            if key == "map" and isinstance(inner, dict):
                return {k: arg(v, depth + 1) for k, v in inner.items()}
            if key == "items" and isinstance(inner, list) and all(_is_pair(p) for p in inner):
                pairs = {k: arg(v, depth + 1) for k, v in inner}
                if len(pairs) != len(inner):
                    raise bad(f"repeated key in {brief(value)}")
                return pairs
            raise bad(f"malformed argument {brief(value)}")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise bad(f"malformed argument {brief(value)}")

    def keywords(kwargs: dict[str, Any], position: int) -> dict[str, Any]:
        # fx writes ``key = value`` into the generated source: a key must be a plain identifier.
        for key in kwargs:
            if not (key.isascii() and key.isidentifier()) or keyword.iskeyword(key):  # NFKC: ｉｎ reads as in
                raise bad(f"node #{position}: keyword argument name {brief(key)} is not an identifier")
        return {k: arg(v) for k, v in kwargs.items()}

    def named(node: fx.Node, name: str, position: int) -> fx.Node:
        if node.name != name:
            raise bad(f"node #{position}: name {brief(name)} is not a valid, unique node name")
        return node

    outputs = 0
    used = [False] * len(tensors)
    for position, entry in enumerate(doc["nodes"]):
        if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
            raise bad(f"node #{position} is malformed")
        kind = entry[0]
        try:
            if kind == "in" and len(entry) == 2 and isinstance(entry[1], str):
                node = named(graph.placeholder(entry[1]), entry[1], position)
            elif (
                kind == "attr"
                and len(entry) == 3
                and isinstance(entry[1], str)
                and type(entry[2]) is int
                and 0 <= entry[2] < len(tensors)
            ):
                node = named(
                    graph.create_node("get_attr", tensors[entry[2]], name=entry[1]), entry[1], position
                )
                used[entry[2]] = True
            elif kind in ("call", "method") and len(entry) == 6 and isinstance(entry[4], dict):
                _, name, op, args, kwargs, shape = entry
                if not isinstance(args, list) or not isinstance(name, str) or not isinstance(op, str):
                    raise bad(f"node #{position} is malformed")
                if kind == "call" and op.startswith("aten::"):
                    try:
                        target: Any = resolve_aten(op)
                    except ValueError as exc:
                        raise bad(f"node #{position} ({brief(name)}): {exc}") from None
                elif kind == "call":
                    if op not in FUNCTIONS:
                        raise bad(f"node #{position} ({brief(name)}): unknown op {brief(op)}")
                    target = FUNCTIONS[op]
                elif op not in METHODS:
                    raise bad(f"node #{position} ({brief(name)}): unknown method {brief(op)}")
                else:
                    target = op
                node = graph.create_node(
                    "call_function" if kind == "call" else "call_method",
                    target,
                    arg(args),
                    keywords(kwargs, position),
                    name=name,
                )
                named(node, name, position)
                if shape is not None:
                    if (
                        not isinstance(shape, list)
                        or len(shape) > 16
                        or not all(type(d) is int and 0 <= d < (1 << 40) for d in shape)
                    ):
                        raise bad(f"node #{position} ({brief(name)}): malformed shape")
                    node.meta["shape"] = tuple(shape)
            elif kind == "out" and len(entry) == 2:
                node = graph.output(arg(entry[1]))
                outputs += 1
            else:
                raise bad(f"node #{position} of kind {brief(kind)} is malformed")
        except SqcFormatError:
            raise
        except Exception as exc:  # fx rejects an odd name or argument
            raise bad(f"node #{position}: {' '.join(str(exc).split())[:200]}") from None
        built.append(node)
    if outputs != 1 or built[-1].op != "output":
        raise bad("the graph must end with exactly one output")
    if not all(used):
        raise bad(f"tensor {brief(tensors[used.index(False)])} is not used by the graph")
    return graph
