"""The op set of the canonical graph: sqc's vocabulary, and the open set of ATen operators.

Every graph sqc keeps is made of these ops (plus ``placeholder``, ``get_attr`` and ``output``):
``call_function`` nodes whose target is one of :data:`FUNCTIONS` (the vocabulary: what passes such as
``prune-channels`` and the integer targets understand), ``call_method`` nodes for the methods in
:data:`METHODS`, and ``call_function`` nodes of ATen operator overloads that :func:`aten_name` accepts
(everything else ``torch.export`` produces: layer norm, attention, LSTM, ...). The container stores a
vocabulary op by its short name and an ATen operator by its schema name; the reader resolves names
only through these tables and :func:`resolve_aten`, so a ``.sqc`` file can never name an arbitrary
Python callable. The C and HLS targets implement the vocabulary and refuse the rest by node.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

FUNCTIONS: dict[str, Callable[..., Any]] = {
    # layers with weights
    "conv1d": F.conv1d,
    "conv2d": F.conv2d,
    "linear": F.linear,
    "batch_norm": F.batch_norm,
    "prelu": F.prelu,
    # activations
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "hardtanh": F.hardtanh,
    "gelu": F.gelu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    # pooling
    "max_pool1d": F.max_pool1d,
    "max_pool2d": F.max_pool2d,
    "avg_pool1d": F.avg_pool1d,
    "avg_pool2d": F.avg_pool2d,
    "adaptive_avg_pool1d": F.adaptive_avg_pool1d,
    "adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "adaptive_max_pool1d": F.adaptive_max_pool1d,
    "adaptive_max_pool2d": F.adaptive_max_pool2d,
    # shape
    "flatten": torch.flatten,
    "reshape": torch.reshape,
    "permute": torch.permute,
    "transpose": torch.transpose,
    "squeeze": torch.squeeze,
    "unsqueeze": torch.unsqueeze,
    "pad": F.pad,
    "cat": torch.cat,
    # arithmetic
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "neg": operator.neg,
    "matmul": torch.matmul,
    "mean": torch.mean,
    "sum": torch.sum,
    "getitem": operator.getitem,
}

METHODS: frozenset[str] = frozenset({"size"})
"""Methods kept as ``call_method``: ``x.size(d)`` yields an int, which keeps the batch size dynamic."""

FUNCTION_NAMES: dict[Callable[..., Any], str] = {fn: name for name, fn in FUNCTIONS.items()}

# Ops that give the same result as a vocabulary function with the same positional signature.
SYNONYMS: dict[Callable[..., Any], str] = {
    torch.relu: "relu",
    F.relu_: "relu",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.softmax: "softmax",
    torch.log_softmax: "log_softmax",
    torch.max_pool1d: "max_pool1d",
    torch.max_pool2d: "max_pool2d",
    torch.avg_pool1d: "avg_pool1d",
    torch.conv1d: "conv1d",
    torch.conv2d: "conv2d",
    torch.prelu: "prelu",
    torch.concat: "cat",
    torch.concatenate: "cat",
    torch.mul: "mul",
    torch.sub: "sub",
    torch.div: "truediv",
    torch.neg: "neg",
    operator.iadd: "add",
    operator.imul: "mul",
    operator.matmul: "matmul",
}

# Methods rewritten to a vocabulary function: method name -> (function name, how the varargs pack).
# "shape" packs ``x.view(a, b)`` into ``reshape(x, (a, b))``; "plain" passes arguments unchanged.
METHOD_FUNCTIONS: dict[str, tuple[str, str]] = {
    "view": ("reshape", "shape"),
    "reshape": ("reshape", "shape"),
    "permute": ("permute", "shape"),
    "flatten": ("flatten", "plain"),
    "transpose": ("transpose", "plain"),
    "squeeze": ("squeeze", "plain"),
    "unsqueeze": ("unsqueeze", "plain"),
    "relu": ("relu", "plain"),
    "sigmoid": ("sigmoid", "plain"),
    "tanh": ("tanh", "plain"),
    "softmax": ("softmax", "plain"),
    "log_softmax": ("log_softmax", "plain"),
    "mean": ("mean", "plain"),
    "sum": ("sum", "plain"),
    "add": ("add", "plain"),
    "sub": ("sub", "plain"),
    "mul": ("mul", "plain"),
    "div": ("truediv", "plain"),
    "matmul": ("matmul", "plain"),
}

# No-ops at inference: the node is replaced by its first argument.
IDENTITY_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout, torch.dropout}
)
IDENTITY_METHODS: frozenset[str] = frozenset({"contiguous", "clone", "detach"})


def function_name(target: Callable[..., Any]) -> str | None:
    """The vocabulary name of a callable, if it is one (directly or as a synonym)."""
    try:
        return FUNCTION_NAMES.get(target) or SYNONYMS.get(target)
    except TypeError:  # unhashable target
        return None


# ---------------------------------------------------------------------------------------------
# the open set: ATen operators


ATEN_NAMESPACE = "aten"
_ATEN_NAME = re.compile(r"aten::([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?")
ATEN_REFUSED: frozenset[str] = frozenset(
    {"from_file", "_print", "_assert_async", "_functional_assert_async", "save", "_cufft_clear_plan_cache"}
)
"""ATen operators a graph may not hold although their arguments could be stored: they read or write
files, print, or exist only for their side effects. Nothing in a model's inference needs them."""
_STORABLE_TYPES = frozenset(
    {
        "Tensor",
        "int",
        "SymInt",
        "float",
        "bool",
        "number",
        "str",
        "Device",
        "List[int]",
        "List[SymInt]",
        "List[float]",
        "List[bool]",
        "List[Tensor]",
        "List[Optional[Tensor]]",
        "List[str]",
    }
)
"""Schema argument types whose values the graph codec can store. ``Optional[...]`` of these too, and
``Optional[Generator]`` (which a stored graph can only pass as None): an operator that takes a storage,
a stream, a class or a dictionary is refused, since no file could describe such an argument anyway."""


def _storable(type_text: str) -> bool:
    inner = type_text[len("Optional[") : -1] if type_text.startswith("Optional[") else type_text
    if inner == "Generator":
        return type_text.startswith("Optional[")
    # ScalarType, Layout and MemoryFormat appear in schemas as int (their enum values)
    return inner in _STORABLE_TYPES


def aten_name(op: Any) -> str | None:
    """The schema name of an ATen operator overload (``aten::add.Tensor``, ``aten::silu_``), or None
    when ``op`` is not one a graph may hold (another namespace, a refused or unstorable operator)."""
    if not isinstance(op, torch._ops.OpOverload) or op.namespace != ATEN_NAMESPACE:
        return None
    schema = op._schema
    base = schema.name.removeprefix("aten::")
    if base in ATEN_REFUSED or not all(_storable(str(a.type)) for a in schema.arguments):
        return None
    return f"aten::{base}.{schema.overload_name}" if schema.overload_name else f"aten::{base}"


def resolve_aten(name: str) -> torch._ops.OpOverload:
    """The ATen operator overload a schema name stands for; ``ValueError`` saying why when there is none.

    Names come from files, so nothing is looked up before it is checked: the text must be a schema
    name in the ``aten`` namespace, the operator must exist in this torch build (asked of the JIT
    registry, so an attribute such as ``__class__`` is never fetched), and it must pass
    :func:`aten_name`'s rules.
    """
    match = _ATEN_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an ATen schema name (aten::op or aten::op.overload)")
    base, overload = match.group(1), match.group(2) or "default"
    if not torch._C._jit_get_schemas_for_operator(f"aten::{base}"):
        raise ValueError(f"no ATen operator {base!r} in torch {torch.__version__}")
    packet = getattr(torch.ops.aten, base)
    if overload not in packet.overloads():
        raise ValueError(f"ATen operator {base!r} has no overload {overload!r}")
    op = getattr(packet, overload)
    if aten_name(op) != (f"aten::{base}" if overload == "default" else f"aten::{base}.{overload}"):
        raise ValueError(f"ATen operator {name!r} may not appear in a stored graph")
    return op


def functional_variant(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """``aten::silu`` for ``aten::silu_``: the out-of-place overload with the same arguments, if any."""
    schema = op._schema
    base = schema.name.removeprefix("aten::")
    if not base.endswith("_") or base.endswith("__"):
        return None
    packet = getattr(torch.ops.aten, base[:-1], None)
    if packet is None or not hasattr(packet, "overloads"):
        return None
    overload = schema.overload_name or "default"
    if overload not in packet.overloads():
        return None
    candidate = getattr(packet, overload)
    same_arguments = [str(a.type) for a in candidate._schema.arguments] == [
        str(a.type) for a in schema.arguments
    ]
    return candidate if same_arguments else None


def stored_name(target: Any) -> str | None:
    """The name an fx ``call_function`` target is stored under: a vocabulary name (``conv2d``) or an ATen
    schema name (``aten::layer_norm``); None for anything else. The container writes it and the IR's
    text form prints it."""
    if not isinstance(target, torch._ops.OpOverload):
        name = FUNCTION_NAMES.get(target)
        if name is not None:
            return name
    return aten_name(target)
