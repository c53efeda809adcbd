"""The graph section: the canonical FX graph as a documented op list (JSON, zlib), never a pickle.

Node entries (``FORMAT.md`` has the full schema)::

    ["in", name]                                   a graph input (placeholder)
    ["attr", name, tensor_index]                   a stored tensor (get_attr)
    ["call", name, op, args, kwargs, shape|null]   a vocabulary function (sqc.ops.FUNCTIONS)
    ["method", name, method, args, kwargs, null]   a vocabulary method (sqc.ops.METHODS)
    ["out", value]                                 the graph output

Arguments are JSON values; a reference to an earlier node is ``{"%": index}``, a slice
``{"slice": [start, stop, step]}``, Ellipsis ``{"...": 0}``, a dtype ``{"dtype": "float32"}``; lists and
tuples both become lists and come back as tuples. The reader only accepts op names from the
vocabulary and references to earlier nodes, so a file cannot name arbitrary code.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import torch
from torch import fx

from sqc.errors import SqcFormatError
from sqc.ops import FUNCTION_NAMES, FUNCTIONS, METHODS

GRAPH_SCHEMA = 1
MAX_JSON = 64 << 20  # inflate limit: a graph of a million nodes fits; a zip bomb does not
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.int64}


def _encode_arg(value: Any, index: dict[fx.Node, int]) -> Any:
    if isinstance(value, fx.Node):
        return {"%": index[value]}
    if isinstance(value, (list, tuple)):
        return [_encode_arg(v, index) for v in value]
    if isinstance(value, dict):
        return {"map": {str(k): _encode_arg(v, index) for k, v in value.items()}}
    if isinstance(value, slice):
        return {
            "slice": [
                _encode_arg(value.start, index),
                _encode_arg(value.stop, index),
                _encode_arg(value.step, index),
            ]
        }
    if value is Ellipsis:
        return {"...": 0}
    if isinstance(value, torch.dtype):
        name = str(value).removeprefix("torch.")
        if name not in _DTYPES:
            raise ValueError(f"dtype {value} cannot be stored")
        return {"dtype": name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"argument of type {type(value).__name__} cannot be stored")


def encode_graph(gm: fx.GraphModule, tensor_index: dict[str, int], extra: dict[str, Any]) -> bytes:
    """The graph section bytes: zlib(JSON) of the op list plus ``extra`` metadata."""
    index: dict[fx.Node, int] = {}
    nodes: list[list[Any]] = []
    for node in gm.graph.nodes:
        index[node] = len(nodes)
        if node.op == "placeholder":
            nodes.append(["in", node.name])
        elif node.op == "get_attr":
            nodes.append(["attr", node.name, tensor_index[str(node.target)]])
        elif node.op in ("call_function", "call_method"):
            op = FUNCTION_NAMES[node.target] if node.op == "call_function" else str(node.target)
            shape = node.meta.get("shape")
            nodes.append(
                [
                    "call" if node.op == "call_function" else "method",
                    node.name,
                    op,
                    _encode_arg(node.args, index),
                    {k: _encode_arg(v, index) for k, v in node.kwargs.items()},
                    list(shape) if shape is not None else None,
                ]
            )
        elif node.op == "output":
            nodes.append(["out", _encode_arg(node.args[0], index)])
        else:
            raise ValueError(f"node {node.name}: op {node.op} cannot be stored")
    doc = {"schema": GRAPH_SCHEMA, "nodes": nodes, **extra}
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=True)
    return zlib.compress(text.encode("utf-8"), 9)


def inflate_json(data: bytes | memoryview, what: str, offset: int) -> Any:
    """zlib + JSON with a size limit; any failure is a format error at ``offset``."""
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(bytes(data), MAX_JSON)
        if inflater.unconsumed_tail:
            raise SqcFormatError(f"{what} inflates to more than {MAX_JSON} bytes", offset)
        if not inflater.eof or inflater.unused_data:
            raise SqcFormatError(f"{what}: truncated or trailing zlib data", offset)
        return json.loads(text.decode("utf-8"))
    except SqcFormatError:
        raise
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SqcFormatError(f"{what} is not valid zlib/JSON ({exc})", offset) from None


def decode_graph(doc: Any, tensors: list[str], offset: int) -> fx.Graph:
    """Rebuild the fx.Graph from the op list, accepting only vocabulary ops and backward references."""

    def bad(message: str) -> SqcFormatError:
        return SqcFormatError(f"graph section: {message}", offset)

    if (
        not isinstance(doc, dict)
        or doc.get("schema") != GRAPH_SCHEMA
        or not isinstance(doc.get("nodes"), list)
    ):
        raise bad(f"unknown graph schema {doc.get('schema') if isinstance(doc, dict) else None!r}")
    graph = fx.Graph()
    built: list[fx.Node] = []

    def arg(value: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise bad("arguments nested too deeply")
        if isinstance(value, list):
            return tuple(arg(v, depth + 1) for v in value)
        if isinstance(value, dict):
            if len(value) != 1:
                raise bad(f"malformed argument {value!r}")
            ((key, inner),) = value.items()
            if key == "%":
                if not isinstance(inner, int) or not 0 <= inner < len(built):
                    raise bad(f"reference to node {inner!r} that is not defined before use")
                return built[inner]
            if key == "slice" and isinstance(inner, list) and len(inner) == 3:
                return slice(*(arg(v, depth + 1) for v in inner))
            if key == "...":
                return Ellipsis
            if key == "dtype" and inner in _DTYPES:
                return _DTYPES[inner]
            if key == "map" and isinstance(inner, dict):
                return {k: arg(v, depth + 1) for k, v in inner.items()}
            raise bad(f"malformed argument {value!r}")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise bad(f"malformed argument {value!r}")

    outputs = 0
    for position, entry in enumerate(doc["nodes"]):
        if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
            raise bad(f"node #{position} is malformed")
        kind = entry[0]
        try:
            if kind == "in" and len(entry) == 2 and isinstance(entry[1], str):
                node = graph.placeholder(entry[1])
            elif (
                kind == "attr"
                and len(entry) == 3
                and isinstance(entry[2], int)
                and 0 <= entry[2] < len(tensors)
            ):
                node = graph.get_attr(tensors[entry[2]])
            elif kind in ("call", "method") and len(entry) == 6 and isinstance(entry[4], dict):
                _, name, op, args, kwargs, shape = entry
                if not isinstance(args, list) or not isinstance(name, str):
                    raise bad(f"node #{position} is malformed")
                if kind == "call":
                    if op not in FUNCTIONS:
                        raise bad(f"node #{position} ({name}): unknown op {op!r}")
                    node = graph.call_function(
                        FUNCTIONS[op], arg(args), {k: arg(v) for k, v in kwargs.items()}
                    )
                else:
                    if op not in METHODS:
                        raise bad(f"node #{position} ({name}): unknown method {op!r}")
                    node = graph.call_method(op, arg(args), {k: arg(v) for k, v in kwargs.items()})
                node.name = graph._graph_namespace.create_name(name, node)
                if shape is not None:
                    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                        raise bad(f"node #{position} ({name}): malformed shape")
                    node.meta["shape"] = tuple(shape)
            elif kind == "out" and len(entry) == 2:
                node = graph.output(arg(entry[1]))
                outputs += 1
            else:
                raise bad(f"node #{position} of kind {kind!r} is malformed")
        except SqcFormatError:
            raise
        except Exception as exc:  # fx rejects an odd name or argument
            raise bad(f"node #{position}: {exc}") from None
        built.append(node)
    if outputs != 1 or built[-1].op != "output":
        raise bad("the graph must end with exactly one output")
    return graph
