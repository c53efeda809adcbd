"""The ONNX target's operators: one handler per vocabulary function or ATen operator.

A handler takes the converter, the fx node and the node's arguments with every input already an ONNX
value name (a run-time int is a :class:`~sqc.targets.onnx.Sym`, a Python number stays one), emits ONNX
nodes through the converter and returns the node's value (a name, or a tuple of them). What a handler
cannot express raises :class:`~sqc.targets.onnx.Unsupported`, which the converter turns into one line
naming the node.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import fx

from sqc.ir.ops import aten_name, function_name
from sqc.targets.onnx_graph import INT64_MAX, Converter, Sym, Unsupported


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _pair(value: Any, n: int) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    values = list(value)
    return values * n if len(values) == 1 else values


def _out_dtype(node: fx.Node) -> torch.dtype:
    meta = node.meta.get("tensor_meta")
    return meta.dtype if meta is not None and hasattr(meta, "dtype") else torch.float32


def _static_shape(node: fx.Node, i: int = 0) -> tuple[int, ...]:
    arg = node.all_input_nodes[i]
    meta = arg.meta.get("tensor_meta")
    if meta is None:
        raise Unsupported(f"no shape known for {arg.name}")
    return tuple(int(d) for d in meta.shape)


# ---- handlers: (converter, fx node, *args, **kwargs) -> value ------------------------------------

Handler = Callable[..., Any]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


def _unary(op_type: str, **attrs: Any) -> Handler:
    def handler(c: Converter, node: fx.Node, x: str, *args: Any, **kwargs: Any) -> str:
        return c.op(op_type, [c.tensor(x)], node.name, **attrs)

    return handler


for _names, _type in (
    (("relu", "aten::relu", "aten::relu_"), "Relu"),
    (("sigmoid", "aten::sigmoid"), "Sigmoid"),
    (("tanh", "aten::tanh"), "Tanh"),
    (("neg", "aten::neg"), "Neg"),
    (("aten::exp",), "Exp"),
    (("aten::sqrt",), "Sqrt"),
    (("aten::clone", "aten::contiguous", "aten::alias", "aten::detach", "aten::lift_fresh_copy"), "Identity"),
):
    for _name in _names:
        HANDLERS[_name] = _unary(_type)


@handles("aten::rsqrt")
def _rsqrt(c: Converter, node: fx.Node, x: str) -> str:
    return c.op("Reciprocal", [c.op("Sqrt", [x])], node.name)


@handles("aten::hardswish", "aten::hardswish_")
def _hardswish(c: Converter, node: fx.Node, x: str) -> str:
    return c.op("HardSwish", [x], node.name)


@handles("aten::hardsigmoid", "aten::hardsigmoid_")
def _hardsigmoid(c: Converter, node: fx.Node, x: str) -> str:
    return c.op("HardSigmoid", [x], node.name, alpha=1.0 / 6.0, beta=0.5)


@handles("aten::to", "aten::_to_copy", "aten::type_as")
def _to(c: Converter, node: fx.Node, x: str, *args: Any, **kwargs: Any) -> str:
    return c.op("Identity", [c.cast(x, _out_dtype(node))], node.name)


@handles("aten::dropout", "aten::dropout_")
def _dropout(c: Converter, node: fx.Node, x: str, *args: Any, **kwargs: Any) -> str:
    if _arg(args, kwargs, 1, "train", False):
        raise Unsupported("dropout in training mode")
    return c.op("Identity", [x], node.name)


@handles("silu", "aten::silu", "aten::silu_")
def _silu(c: Converter, node: fx.Node, x: str, *args: Any, **kwargs: Any) -> str:
    return c.op("Mul", [x, c.op("Sigmoid", [x])], node.name)


@handles("gelu", "aten::gelu")
def _gelu(c: Converter, node: fx.Node, x: str, approximate: str = "none") -> str:
    return c.op("Gelu", [x], node.name, approximate=approximate)


@handles("relu6", "hardtanh", "aten::hardtanh", "aten::clamp")
def _clip(c: Converter, node: fx.Node, x: str, *args: Any, **kwargs: Any) -> str:
    name = function_name(node.target)
    if name == "relu6":
        low, high = 0.0, 6.0
    elif name == "hardtanh" or aten_name(node.target) == "aten::hardtanh":
        low, high = _arg(args, kwargs, 0, "min_val", -1.0), _arg(args, kwargs, 1, "max_val", 1.0)
    else:
        low, high = _arg(args, kwargs, 0, "min"), _arg(args, kwargs, 1, "max")
    dtype = c.dtype(x)
    bounds = ["" if v is None else c.tensor(v, dtype) for v in (low, high)]
    return c.op("Clip", [x, *bounds], node.name)


@handles("leaky_relu", "aten::leaky_relu")
def _leaky(c: Converter, node: fx.Node, x: str, negative_slope: float = 0.01, *rest: Any, **kw: Any) -> str:
    return c.op("LeakyRelu", [x], node.name, alpha=float(kw.get("negative_slope", negative_slope)))


@handles(
    "softmax", "log_softmax", "aten::softmax", "aten::_softmax", "aten::log_softmax", "aten::_log_softmax"
)
def _softmax(c: Converter, node: fx.Node, x: str, *args: Any, **kwargs: Any) -> str:
    dim = _arg(args, kwargs, 0, "dim")
    if dim is None:
        raise Unsupported("softmax without dim")
    log = "log_softmax" in (function_name(node.target) or aten_name(node.target) or "")
    return c.op("LogSoftmax" if log else "Softmax", [x], node.name, axis=int(dim))


@handles("prelu", "aten::prelu", "aten::_prelu_kernel")
def _prelu(c: Converter, node: fx.Node, x: str, weight: str) -> str:
    rank = c.rank(x)
    if rank >= 3:
        weight = c.op("Reshape", [weight, c.ints([-1] + [1] * (rank - 2))])
    return c.op("PRelu", [x, weight], node.name)


@handles("linear", "aten::linear")
def _linear(c: Converter, node: fx.Node, x: str, weight: str, bias: str | None = None) -> str:
    y = c.op("MatMul", [x, c.op("Transpose", [weight], perm=[1, 0])])
    return c.op("Add", [y, bias], node.name) if bias is not None else c.op("Identity", [y], node.name)


@handles("aten::addmm")
def _addmm(c: Converter, node: fx.Node, bias: str, a: str, b: str, beta: float = 1, alpha: float = 1) -> str:
    if beta != 1 or alpha != 1:
        raise Unsupported("addmm with beta or alpha other than 1")
    return c.op("Add", [c.op("MatMul", [a, b]), bias], node.name)


@handles("matmul", "aten::matmul", "aten::bmm", "aten::mm")
def _matmul(c: Converter, node: fx.Node, a: str, b: str) -> str:
    return c.op("MatMul", [a, b], node.name)


@handles("conv1d", "conv2d", "aten::conv1d", "aten::conv2d")
def _conv(
    c: Converter,
    node: fx.Node,
    x: str,
    weight: str,
    bias: str | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> str:
    n = c.rank(weight) - 2
    attrs: dict[str, Any] = {"strides": _pair(stride, n), "dilations": _pair(dilation, n), "group": groups}
    if padding == "same":
        attrs["auto_pad"] = "SAME_UPPER"
    elif padding == "valid":
        attrs["pads"] = [0] * (2 * n)
    else:
        attrs["pads"] = _pair(padding, n) * 2
    inputs = [x, weight] + ([bias] if bias is not None else [])
    return c.op("Conv", inputs, node.name, **attrs)


@handles("batch_norm", "aten::batch_norm")
def _batch_norm(c: Converter, node: fx.Node, x: str, *args: Any, **kwargs: Any) -> str:
    if aten_name(node.target):  # (input, weight, bias, running_mean, running_var, training, momentum, eps)
        weight, bias, mean, var = (
            _arg(args, kwargs, i, k) for i, k in enumerate(("weight", "bias", "running_mean", "running_var"))
        )
        training, eps = _arg(args, kwargs, 4, "training", False), _arg(args, kwargs, 6, "eps", 1e-5)
    else:  # F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        mean, var, weight, bias = (
            _arg(args, kwargs, i, k) for i, k in enumerate(("running_mean", "running_var", "weight", "bias"))
        )
        training, eps = _arg(args, kwargs, 4, "training", False), _arg(args, kwargs, 6, "eps", 1e-5)
    if training or mean is None or var is None:
        raise Unsupported("batch norm in training mode (no running statistics)")
    channels = _static_shape(node)[1]
    if weight is None:
        weight = c.const(np.ones(channels, np.float32), "bn_scale")
    if bias is None:
        bias = c.const(np.zeros(channels, np.float32), "bn_bias")
    return c.op("BatchNormalization", [x, weight, bias, mean, var], node.name, epsilon=float(eps))


@handles("aten::layer_norm")
def _layer_norm(
    c: Converter,
    node: fx.Node,
    x: str,
    shape: Sequence[int],
    weight: str | None = None,
    bias: str | None = None,
    eps: float = 1e-5,
    *rest: Any,
    **kw: Any,
) -> str:
    shape = list(shape)
    if weight is None:
        weight = c.const(np.ones(shape, np.float32), "ln_scale")
    inputs = [x, weight] + ([bias] if bias is not None else [])
    return c.op("LayerNormalization", inputs, node.name, axis=-len(shape), epsilon=float(eps))


def _pool(c: Converter, node: fx.Node, x: str, n: int, kind: str, args: tuple, kwargs: dict) -> str:
    kernel = _pair(_arg(args, kwargs, 0, "kernel_size"), n)
    stride = _arg(args, kwargs, 1, "stride")
    stride = kernel if stride is None or stride == [] else _pair(stride, n)
    padding = _pair(_arg(args, kwargs, 2, "padding", 0), n) * 2
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": stride, "pads": padding}
    if kind == "max":
        dilation = _pair(_arg(args, kwargs, 3, "dilation", 1), n)
        attrs["ceil_mode"] = int(bool(_arg(args, kwargs, 4, "ceil_mode", False)))
        if _arg(args, kwargs, 5, "return_indices", False):
            raise Unsupported("max pooling that returns indices")
        return c.op("MaxPool", [x], node.name, dilations=dilation, **attrs)
    attrs["ceil_mode"] = int(bool(_arg(args, kwargs, 3, "ceil_mode", False)))
    attrs["count_include_pad"] = int(bool(_arg(args, kwargs, 4, "count_include_pad", True)))
    if _arg(args, kwargs, 5, "divisor_override") is not None:
        raise Unsupported("average pooling with divisor_override")
    return c.op("AveragePool", [x], node.name, **attrs)


for _n in (1, 2):
    for _kind in ("max", "avg"):

        def _pool_handler(
            c: Converter, node: fx.Node, x: str, *a: Any, _n: int = _n, _k: str = _kind, **kw: Any
        ) -> str:
            return _pool(c, node, x, _n, _k, a, kw)

        HANDLERS[f"{_kind}_pool{_n}d"] = _pool_handler
        HANDLERS[f"aten::{_kind}_pool{_n}d"] = _pool_handler


def _adaptive(c: Converter, node: fx.Node, x: str, output_size: Any, n: int, kind: str) -> str:
    spatial = _static_shape(node)[-n:]
    out = [s if o is None else o for o, s in zip(_pair(output_size, n), spatial, strict=True)]
    if all(o == 1 for o in out):
        return c.op("GlobalMaxPool" if kind == "max" else "GlobalAveragePool", [x], node.name)
    if any(s % o for s, o in zip(spatial, out, strict=True)):
        raise Unsupported(f"adaptive pooling from {list(spatial)} to {out}: the sizes do not divide")
    kernel = [s // o for s, o in zip(spatial, out, strict=True)]
    return c.op(
        "MaxPool" if kind == "max" else "AveragePool", [x], node.name, kernel_shape=kernel, strides=kernel
    )


for _n in (1, 2):
    for _kind in ("max", "avg"):

        def _adaptive_handler(
            c: Converter,
            node: fx.Node,
            x: str,
            size: Any,
            *rest: Any,
            _n: int = _n,
            _k: str = _kind,
            **kw: Any,
        ) -> Any:
            if (rest and rest[0]) or kw.get("return_indices"):
                raise Unsupported("adaptive max pooling that returns indices")
            return _adaptive(c, node, x, size, _n, _k)

        HANDLERS[f"adaptive_{_kind}_pool{_n}d"] = _adaptive_handler
        HANDLERS[f"aten::adaptive_{_kind}_pool{_n}d"] = _adaptive_handler
        HANDLERS[f"aten::_adaptive_{_kind}_pool{_n}d"] = _adaptive_handler


# ---- shape ops --------------------------------------------------------------------------------


@handles("flatten", "aten::flatten", "aten::flatten.using_ints")
def _flatten(c: Converter, node: fx.Node, x: str, start_dim: int = 0, end_dim: int = -1) -> str:
    rank = c.rank(x)
    if rank == 0:
        return c.op("Reshape", [x, c.ints([1])], node.name)
    start, end = start_dim % rank, end_dim % rank
    parts = [c.dims(x, 0, start)] if start else []
    parts.append(c.ints([-1]))
    if end + 1 < rank:
        parts.append(c.dims(x, end + 1))
    return c.op("Reshape", [x, c.op("Concat", parts, axis=0)], node.name)


@handles("reshape", "aten::view", "aten::reshape", "aten::_unsafe_view")
def _reshape(c: Converter, node: fx.Node, x: str, shape: Any, *more: Any) -> str:
    items = [shape, *more] if not isinstance(shape, (list, tuple)) else list(shape)
    if any(i == 0 for i in items if isinstance(i, int)):
        raise Unsupported("reshape to a zero-size dimension")
    return c.op("Reshape", [x, c.shape(items)], node.name)


@handles("aten::unflatten")
def _unflatten(c: Converter, node: fx.Node, x: str, dim: int, sizes: Sequence[Any]) -> str:
    rank = c.rank(x)
    dim = dim % rank
    parts = ([c.dims(x, 0, dim)] if dim else []) + [c.shape(list(sizes))]
    if dim + 1 < rank:
        parts.append(c.dims(x, dim + 1))
    return c.op("Reshape", [x, c.op("Concat", parts, axis=0)], node.name)


@handles("permute", "aten::permute")
def _permute(c: Converter, node: fx.Node, x: str, *dims: Any) -> str:
    perm = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else list(dims)
    rank = c.rank(x)
    return c.op("Transpose", [x], node.name, perm=[d % rank for d in perm])


@handles("transpose", "aten::transpose")
def _transpose(c: Converter, node: fx.Node, x: str, dim0: int, dim1: int) -> str:
    rank = c.rank(x)
    perm = list(range(rank))
    a, b = dim0 % rank, dim1 % rank
    perm[a], perm[b] = perm[b], perm[a]
    return c.op("Transpose", [x], node.name, perm=perm)


@handles("aten::t")
def _t(c: Converter, node: fx.Node, x: str) -> str:
    return c.op("Transpose", [x], node.name, perm=list(range(c.rank(x)))[::-1])


@handles("squeeze", "aten::squeeze")
def _squeeze(c: Converter, node: fx.Node, x: str, dim: Any = None) -> str:
    if dim is None:
        shape = _static_shape(node)
        dims = [d for d, s in enumerate(shape) if s == 1]
    else:
        rank = c.rank(x)
        dims = [d % rank for d in ([dim] if isinstance(dim, int) else dim)]
        shape = _static_shape(node)
        dims = [d for d in dims if shape[d] == 1]  # torch leaves a dimension that is not 1
    if not dims:
        return c.op("Identity", [x], node.name)
    return c.op("Squeeze", [x, c.ints(dims)], node.name)


@handles("unsqueeze", "aten::unsqueeze")
def _unsqueeze(c: Converter, node: fx.Node, x: str, dim: int) -> str:
    rank = c.rank(x)
    return c.op("Unsqueeze", [x, c.ints([dim % (rank + 1)])], node.name)


@handles("cat", "aten::cat", "aten::concat")
def _cat(c: Converter, node: fx.Node, tensors: Sequence[str], dim: int = 0) -> str:
    dtype = _out_dtype(node)
    return c.op("Concat", [c.cast(c.tensor(t), dtype) for t in tensors], node.name, axis=int(dim))


@handles("pad", "aten::pad", "aten::constant_pad_nd")
def _pad(
    c: Converter, node: fx.Node, x: str, pad: Sequence[int], mode: str = "constant", value: Any = None
) -> str:
    if aten_name(node.target) == "aten::constant_pad_nd":
        mode, value = "constant", mode if not isinstance(mode, str) else value
    rank = c.rank(x)
    pad = list(pad)
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    if mode not in modes:
        raise Unsupported(f"pad mode {mode!r}")
    inputs = [x, c.ints(begins + ends)]
    if mode == "constant" and value:
        inputs.append(c.tensor(float(value), c.dtype(x)))
    return c.op("Pad", inputs, node.name, mode=modes[mode])


# ---- arithmetic -------------------------------------------------------------------------------

_PY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
}
_ONNX = {"add": "Add", "sub": "Sub", "mul": "Mul", "truediv": "Div", "floordiv": "Div"}
_ATEN = {
    "aten::add": "add",
    "aten::add_": "add",
    "aten::sub": "sub",
    "aten::mul": "mul",
    "aten::mul_": "mul",
    "aten::div": "truediv",
    "aten::floor_divide": "floordiv",
}


def _binary(c: Converter, node: fx.Node, a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
    name = function_name(node.target) or _ATEN.get((aten_name(node.target) or "").split(".")[0], "")
    alpha = _arg(args, kwargs, 0, "alpha", 1)
    if alpha != 1:
        b = (
            b * alpha
            if isinstance(b, (int, float))
            else c.op("Mul", [c.tensor(b), c.tensor(alpha, c.dtype(b))])
        )
    if kwargs.get("rounding_mode") is not None:
        raise Unsupported(f"division with rounding_mode={kwargs['rounding_mode']}")
    numbers = (bool, int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return _PY[name](a, b)
    if all(isinstance(v, (int, Sym)) for v in (a, b)):  # run-time ints (shape arithmetic)
        if name == "truediv":
            raise Unsupported("true division of sizes")
        return Sym(c.op(_ONNX[name], [c.tensor(a, torch.int64), c.tensor(b, torch.int64)]))
    dtype = _out_dtype(node)
    inputs = [c.cast(c.tensor(v, dtype), dtype) for v in (a, b)]
    out = c.op(_ONNX[name], inputs, node.name)
    if name == "floordiv" and dtype.is_floating_point:
        out = c.op("Floor", [out], node.name)
    return out


for _name in ("add", "sub", "mul", "truediv", "floordiv", *_ATEN):
    HANDLERS[_name] = _binary


_COMPARE = {
    "aten::eq": "Equal",
    "aten::lt": "Less",
    "aten::le": "LessOrEqual",
    "aten::gt": "Greater",
    "aten::ge": "GreaterOrEqual",
}


@handles(*_COMPARE, "aten::ne")
def _compare(c: Converter, node: fx.Node, a: Any, b: Any) -> str:
    name = (aten_name(node.target) or "").split(".")[0]
    dtype = c.dtype(a) if isinstance(a, str) else c.dtype(b) if isinstance(b, str) else torch.int64
    inputs = [c.cast(c.tensor(v, dtype), dtype) for v in (a, b)]
    if name == "aten::ne":
        return c.op("Not", [c.op("Equal", inputs)], node.name)
    return c.op(_COMPARE[name], inputs, node.name)


@handles("aten::bitwise_not", "aten::logical_not")
def _not(c: Converter, node: fx.Node, x: str) -> str:
    if c.dtype(x) != torch.bool:
        raise Unsupported("bitwise not of an integer tensor")
    return c.op("Not", [x], node.name)


@handles("aten::masked_fill", "aten::where")
def _where(c: Converter, node: fx.Node, *args: Any) -> str:
    dtype = _out_dtype(node)
    if (aten_name(node.target) or "").startswith("aten::masked_fill"):
        x, mask, value = args
        cond, yes, no = mask, value, x
    else:
        if len(args) != 3:
            raise Unsupported("where with one argument")
        cond, yes, no = args
    branches = [c.cast(c.tensor(v, dtype), dtype) for v in (yes, no)]
    return c.op("Where", [c.cast(c.tensor(cond, torch.bool), torch.bool), *branches], node.name)


@handles("aten::pow")
def _pow(c: Converter, node: fx.Node, a: Any, b: Any) -> str:
    dtype = _out_dtype(node)
    return c.op(
        "Pow",
        [c.cast(c.tensor(a, dtype), dtype), c.tensor(b, c.dtype(b) if isinstance(b, str) else dtype)],
        node.name,
    )


@handles("mean", "sum", "aten::mean", "aten::sum")
def _reduce(
    c: Converter, node: fx.Node, x: str, dim: Any = None, keepdim: bool = False, *rest: Any, **kw: Any
) -> str:
    dim = kw.get("dim", dim)
    keepdim = kw.get("keepdim", keepdim)
    op = (
        "ReduceMean"
        if "mean" in (function_name(node.target) or aten_name(node.target) or "")
        else "ReduceSum"
    )
    if dim is None or dim == []:
        return c.op(op, [x], node.name, keepdims=int(bool(keepdim)))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return c.op(op, [x, c.ints(dims)], node.name, keepdims=int(bool(keepdim)))


# ---- indexing -------------------------------------------------------------------------------


def _slice(c: Converter, x: str, axis: int, start: Any, stop: Any, step: Any, stem: str) -> str:
    start = 0 if start is None else start
    stop = INT64_MAX if stop is None else stop
    items = [c.shape([v]) for v in (start, stop)]
    return c.op("Slice", [x, *items, c.ints([axis]), c.ints([1 if step is None else step])], stem)


@handles("getitem")
def _getitem(c: Converter, node: fx.Node, value: Any, index: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return value[index]
    if not isinstance(value, str):
        raise Unsupported(f"indexing a {type(value).__name__}")
    items = list(index) if isinstance(index, tuple) else [index]
    rank = c.rank(value)
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    x, axis = value, 0
    for item in items:
        if item is Ellipsis:
            axis += rank - consumed
        elif item is None:
            x = c.op("Unsqueeze", [x, c.ints([axis])])
            axis += 1
        elif isinstance(item, slice):
            if item != slice(None):
                x = _slice(c, x, axis, item.start, item.stop, item.step, "slice")
            axis += 1
        elif isinstance(item, (int, Sym)):
            index_value = c.const(np.int64(item)) if isinstance(item, int) else c.op("Squeeze", [item.name])
            x = c.op("Gather", [x, index_value], axis=axis)
        else:
            raise Unsupported(f"index {item!r} (only ints, slices, None and ...)")
    return c.op("Identity", [x], node.name)


@handles("aten::select")
def _select(c: Converter, node: fx.Node, x: str, dim: int, index: int) -> str:
    return c.op("Gather", [x, c.const(np.int64(index))], node.name, axis=dim % c.rank(x))


@handles("aten::slice")
def _aten_slice(
    c: Converter, node: fx.Node, x: str, dim: int = 0, start: Any = None, end: Any = None, step: int = 1
) -> str:
    return _slice(c, x, dim % c.rank(x), start, end, step, node.name)


@handles("aten::gather")
def _gather(c: Converter, node: fx.Node, x: str, dim: int, index: str, *rest: Any, **kw: Any) -> str:
    return c.op("GatherElements", [x, index], node.name, axis=dim % c.rank(x))


@handles("aten::split", "aten::split_with_sizes", "aten::chunk")
def _split(c: Converter, node: fx.Node, x: str, size: Any, dim: int = 0) -> tuple:
    rank = c.rank(x)
    dim = dim % rank
    length = _static_shape(node)[dim]
    name = aten_name(node.target) or ""
    if name.startswith("aten::chunk"):
        step = -(-length // size)
        sizes = [min(step, length - i) for i in range(0, length, step)]
    elif isinstance(size, int):
        sizes = [min(size, length - i) for i in range(0, length, size)]
    else:
        sizes = list(size)
    outs = c.op("Split", [x, c.ints(sizes)], node.name, outputs=len(sizes), axis=dim)
    outs = [outs] if isinstance(outs, str) else outs
    for out in outs:
        c.ranks[out] = rank
        c.dtypes[out] = c.dtype(x)
    return tuple(outs)


@handles("aten::embedding")
def _embedding(c: Converter, node: fx.Node, weight: str, indices: str, *rest: Any, **kw: Any) -> str:
    return c.op("Gather", [weight, indices], node.name, axis=0)


@handles("aten::zeros", "aten::ones", "aten::full")
def _filled(c: Converter, node: fx.Node, size: Sequence[Any], *args: Any, **kwargs: Any) -> str:
    name = aten_name(node.target) or ""
    fill = 0 if name == "aten::zeros" else 1 if name == "aten::ones" else _arg(args, kwargs, 0, "fill_value")
    dtype = _out_dtype(node)
    value = c.onnx.numpy_helper.from_array(
        np.asarray([fill], dtype=torch.empty((), dtype=dtype).numpy().dtype)
    )
    return c.op("ConstantOfShape", [c.shape(list(size))], node.name, value=value)


@handles("aten::arange")
def _arange(c: Converter, node: fx.Node, *args: Any, **kwargs: Any) -> str:
    numbers = [a for a in args if isinstance(a, (int, float, Sym))]
    start, end, step = (
        (0, numbers[0], 1) if len(numbers) == 1 else (*numbers[:2], numbers[2] if len(numbers) > 2 else 1)
    )
    dtype = _out_dtype(node)

    def scalar(v: Any) -> str:
        if isinstance(v, Sym):
            return (
                c.cast(c.op("Squeeze", [v.name]), dtype)
                if dtype != torch.int64
                else c.op("Squeeze", [v.name])
            )
        return c.tensor(v, dtype)

    return c.op("Range", [scalar(start), scalar(end), scalar(step)], node.name)


@handles("aten::expand")
def _expand(c: Converter, node: fx.Node, x: str, size: Sequence[Any], *rest: Any, **kw: Any) -> str:
    out = list(node.meta["tensor_meta"].shape)
    items = [out[i] if isinstance(s, int) and s == -1 else s for i, s in enumerate(size)]
    return c.op("Expand", [x, c.shape(items)], node.name)


@handles("aten::scaled_dot_product_attention")
def _attention(
    c: Converter,
    node: fx.Node,
    q: str,
    k: str,
    v: str,
    attn_mask: str | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> str:
    if dropout_p or enable_gqa:
        raise Unsupported("attention with dropout or grouped-query heads")
    q_shape, k_shape = _static_shape(node, 0), _static_shape(node, 1)
    rank = len(q_shape)
    scale = 1.0 / math.sqrt(q_shape[-1]) if scale is None else scale
    perm = [*range(rank - 2), rank - 1, rank - 2]
    scores = c.op("MatMul", [q, c.op("Transpose", [k], perm=perm)])
    scores = c.op("Mul", [scores, c.tensor(float(scale))])
    if is_causal:
        length, source = q_shape[-2], k_shape[-2]
        attn_mask = c.const(np.tril(np.ones((length, source), dtype=bool)), "causal")
        c.dtypes[attn_mask] = torch.bool
    if attn_mask is not None:
        if c.dtype(attn_mask) == torch.bool:
            scores = c.op("Where", [attn_mask, scores, c.tensor(-math.inf)])
        else:
            scores = c.op("Add", [scores, attn_mask])
    weights = c.op("Softmax", [scores], axis=-1)
    return c.op("MatMul", [weights, v], node.name)


def _recurrent(
    c: Converter,
    node: fx.Node,
    kind: str,
    x: str,
    hx: Any,
    params: Sequence[str],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple:
    """``aten::lstm.input``/``aten::gru.input`` as one ONNX LSTM/GRU per layer (time-major inside)."""
    if train:
        raise Unsupported(f"{kind} in training mode")
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != per * dirs * num_layers:
        raise Unsupported(f"{kind} with projections or an unexpected parameter list")
    w_hh = node.args[2][1]  # the hidden size is the width of the first hidden-to-hidden matrix
    meta = w_hh.meta.get("tensor_meta") if isinstance(w_hh, fx.Node) else None
    if meta is None:
        raise Unsupported(f"{kind} weights of unknown shape")
    hidden_size = int(meta.shape[1])
    # torch gate order: lstm i,f,g,o -> ONNX i,o,f,c; gru r,z,n -> ONNX z,r,h
    order = [0, 3, 1, 2] if kind == "lstm" else [1, 0, 2]
    perm = c.ints([g * hidden_size + j for g in order for j in range(hidden_size)], "gate_order")
    h0s = [hx[0], hx[1]] if kind == "lstm" else [hx]
    seq = c.op("Transpose", [x], perm=[1, 0, 2]) if batch_first else x
    finals: list[list[str]] = [[] for _ in h0s]
    for layer in range(num_layers):
        ws, rs, bs = [], [], []
        for d in range(dirs):
            base = (layer * dirs + d) * per
            w_ih, w_hh = params[base], params[base + 1]
            ws.append(c.op("Gather", [w_ih, perm], axis=0))
            rs.append(c.op("Gather", [w_hh, perm], axis=0))
            if has_biases:
                b_ih = c.op("Gather", [params[base + 2], perm], axis=0)
                b_hh = c.op("Gather", [params[base + 3], perm], axis=0)
                bs.append(c.op("Concat", [b_ih, b_hh], axis=0))
        stack = lambda names: c.op("Concat", [c.op("Unsqueeze", [n, c.ints([0])]) for n in names], axis=0)  # noqa: E731
        inputs = [seq, stack(ws), stack(rs), stack(bs) if has_biases else "", ""]
        for h0 in h0s:
            inputs.append(_slice(c, h0, 0, layer * dirs, (layer + 1) * dirs, 1, "h0"))
        attrs: dict[str, Any] = {
            "hidden_size": hidden_size,
            "direction": "bidirectional" if bidirectional else "forward",
        }
        if kind == "gru":
            attrs["linear_before_reset"] = 1
        outs = c.op(kind.upper(), inputs, f"{node.name}_l{layer}", outputs=1 + len(h0s), **attrs)
        y = outs[0]  # (seq, dirs, batch, hidden)
        y = c.op("Transpose", [y], perm=[0, 2, 1, 3])
        seq = c.op("Reshape", [y, c.ints([0, 0, -1])])
        for i, state in enumerate(outs[1:]):
            finals[i].append(state)
    output = (
        c.op("Transpose", [seq], node.name, perm=[1, 0, 2])
        if batch_first
        else c.op("Identity", [seq], node.name)
    )
    c.ranks[output] = 3
    states = []
    for parts in finals:
        state = c.op("Concat", parts, f"{node.name}_h", axis=0)
        c.ranks[state] = 3
        states.append(state)
    return (output, *states)


@handles("aten::lstm")
def _lstm(c: Converter, node: fx.Node, *args: Any) -> tuple:
    return _recurrent(c, node, "lstm", *args)


@handles("aten::gru")
def _gru(c: Converter, node: fx.Node, *args: Any) -> tuple:
    return _recurrent(c, node, "gru", *args)


def lookup(name: str) -> Handler | None:
    """The handler of a vocabulary name, or of an ATen schema name (``aten::add.Tensor`` falls back to
    ``aten::add``: the overloads a graph holds share their positional form)."""
    return HANDLERS.get(name) or HANDLERS.get(name.split(".")[0])
