"""The op vocabulary of the canonical graph.

Every graph sqc keeps is made only of these ops (plus ``placeholder``, ``get_attr`` and ``output``):
``call_function`` nodes whose target is one of :data:`FUNCTIONS`, and ``call_method`` nodes for the
methods in :data:`METHODS`. The container stores an op by its short name and the reader accepts only
names from these tables, so a ``.sqc`` file can never name an arbitrary Python callable. Targets
(C, HLS) will implement exactly this list.
"""

from __future__ import annotations

import operator
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
