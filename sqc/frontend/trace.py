"""From a user's model to the canonical IR: tracing, canonicalisation, shape propagation.

Two graph sources are accepted: ``torch.fx.symbolic_trace`` of an ``nn.Module`` (non-tensor forward
arguments with defaults are specialised through ``concrete_args``), and the ATen graph of a
``torch.export`` program — a ``.pt2``, or a module symbolic tracing cannot follow, captured by
:mod:`sqc.frontend.capture`. Both are rewritten into one canonical form: modules become functional calls on
``get_attr`` parameters, synonyms collapse to one name of the vocabulary in :mod:`sqc.ir.ops`, dropout,
asserts and other inference no-ops disappear, tied tensors become one record with aliases. An ATen
operator the vocabulary lacks is kept as it is (the open op set: passes only transform weights); an
operator a file could not store (a custom library's, one with side effects) is refused with the node,
the op and the source line.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import fx
from torch.fx.node import Argument, map_arg

from sqc.errors import ModelLoadError, TraceError
from sqc.frontend.capture import INTERNAL_DIRS, export_module, output_structure, readable_names, user_frame
from sqc.ir.ops import (
    FUNCTIONS,
    IDENTITY_FUNCTIONS,
    IDENTITY_METHODS,
    METHOD_FUNCTIONS,
    METHODS,
    aten_name,
    function_name,
    functional_variant,
)
from sqc.ir.records import MAX_INPUT_ELEMENTS, CompressedModel, InputSpec, TensorState, all_finite

# ---------------------------------------------------------------------------------------------
# tracing


class _Tracer(fx.Tracer):
    """An fx tracer that remembers which module it is inside, for error messages."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.sqc_path: list[str] = []

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        self.sqc_path.append(self.path_of_module(m) or type(m).__name__)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.sqc_path.pop()


def _tensor_arguments(module: nn.Module) -> tuple[list[str], dict[str, Any]]:
    """Forward parameters without defaults are tensor inputs; those with defaults are specialised."""
    signature = inspect.signature(module.forward)
    tensors: list[str] = []
    concrete: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TraceError(
                f"{type(module).__name__}.forward takes *{name}: sqc needs named tensor arguments"
            )
        if param.default is inspect.Parameter.empty:
            tensors.append(name)
        else:
            concrete[name] = param.default
    return tensors, concrete


def symbolic_trace(module: nn.Module) -> tuple[fx.GraphModule, list[str]]:
    """fx-trace ``module``; a failure names the module being traced, the source line and the reason."""
    tensor_args, concrete = _tensor_arguments(module)
    tracer = _Tracer()
    try:
        graph = tracer.trace(module, concrete_args=concrete or None)
    except Exception as exc:
        where = tracer.sqc_path[-1] if tracer.sqc_path else f"{type(module).__name__} (top level)"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"cannot trace module {where}{user_frame(exc)}: {reason}") from None
    return fx.GraphModule(tracer.root, graph), tensor_args


# ---------------------------------------------------------------------------------------------
# canonicalisation


def _where(node: fx.Node) -> str:
    """Source line (in the user's code, not torch's or ours) a node came from, as the tracer recorded."""
    trace = (node.stack_trace or "").strip().splitlines()
    files = [
        i
        for i, line in enumerate(trace)
        if line.strip().startswith("File ") and not any(d in line for d in INTERNAL_DIRS)
    ]
    if not files:
        return ""
    i = files[-1]
    location = trace[i].strip().replace('File "', "").replace('", line ', ":").split(",")[0]
    code = trace[i + 1].strip() if i + 1 < len(trace) else ""
    return f" at {location} `{code}`"


class _Builder:
    """Builds the canonical graph node by node from a traced or exported graph."""

    def __init__(self, source: fx.GraphModule, names: dict[fx.Node, str] | None = None) -> None:
        self.source = source
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Argument] = {}
        self.attrs: dict[str, fx.Node] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self.owners: dict[tuple[Any, ...], str] = {}
        self.aliases: dict[str, str] = {}
        self.names = names or {}

    def attr(self, qualified: str) -> fx.Node | None:
        """A get_attr node for a parameter/buffer of the source module (None for a missing bias).

        A tensor reached under a second name (tied weights: GPT-2's ``lm_head.weight`` is
        ``transformer.wte.weight``) gets the first name's node, and the second name is an alias.
        """
        if qualified in self.attrs:
            return self.attrs[qualified]
        value = _fetch(self.source, qualified)
        if value is None:
            return None
        if not isinstance(value, torch.Tensor):
            raise TraceError(f"attribute {qualified} is a {type(value).__name__}, not a tensor")
        key = _identity(value)
        owner = self.owners.get(key) if key is not None else None
        if owner is not None:
            self.aliases[qualified] = owner
            self.attrs[qualified] = self.attrs[owner]
            return self.attrs[owner]
        if key is not None:
            self.owners[key] = qualified
        self.tensors[qualified] = value
        node = self.graph.get_attr(qualified)
        self.attrs[qualified] = node
        return node

    def arg(self, value: Argument) -> Argument:
        return map_arg(value, lambda n: self.env[n])

    def call(
        self, name: str, args: tuple[Argument, ...], kwargs: dict[str, Argument], like: fx.Node
    ) -> fx.Node:
        """A vocabulary call named after the traced node it replaces (``fc1``, not ``linear_3``)."""
        return self.open_call(FUNCTIONS[name], args, kwargs, like)

    def open_call(
        self, target: Any, args: tuple[Argument, ...], kwargs: dict[str, Argument], like: fx.Node
    ) -> fx.Node:
        """A call of any storable target (a vocabulary function or an ATen operator)."""
        name = self.names.get(like, like.name)
        return self.graph.create_node("call_function", target, args, kwargs, name=name)

    def method(
        self, name: str, args: tuple[Argument, ...], kwargs: dict[str, Argument], like: fx.Node
    ) -> fx.Node:
        return self.graph.create_node("call_method", name, args, kwargs, name=like.name)


def _identity(value: torch.Tensor) -> tuple[Any, ...] | None:
    """What makes two tensors the same tensor: the same memory seen the same way. Tied weights are one
    Parameter under two names in a module, and two Parameters over one storage in a loaded ``.pt2``."""
    if value.numel() == 0 or value.is_meta:
        return None
    return (
        value.untyped_storage().data_ptr(),
        value.storage_offset(),
        tuple(value.shape),
        value.stride(),
        value.dtype,
        type(value) is nn.Parameter,
    )


def _fetch(module: nn.Module, qualified: str) -> Any:
    obj: Any = module
    for part in qualified.split("."):
        obj = getattr(obj, part)
    return obj


def _unsupported(node: fx.Node, what: str) -> TraceError:
    return TraceError(f"unsupported op in node {node.name}: {what}{_where(node)}")


def _module_call(b: _Builder, node: fx.Node, mod: nn.Module) -> Argument:
    """Rewrite ``call_module`` of a standard layer as its functional form on get_attr parameters."""
    path = str(node.target)
    x = b.arg(node.args[0]) if node.args else None
    if node.kwargs or len(node.args) != 1:
        raise _unsupported(node, f"{type(mod).__name__} called with extra arguments")

    def p(name: str) -> fx.Node | None:
        return b.attr(f"{path}.{name}")

    if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)):
        return x
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        op = "conv1d" if isinstance(mod, nn.Conv1d) else "conv2d"
        padding: Any = mod.padding
        if mod.padding_mode != "zeros":
            x = b.call(
                "pad", (x, tuple(mod._reversed_padding_repeated_twice)), {"mode": mod.padding_mode}, node
            )
            padding = 0
        return b.call(
            op, (x, p("weight"), p("bias"), mod.stride, padding, mod.dilation, mod.groups), {}, node
        )
    if isinstance(mod, nn.Linear):
        return b.call("linear", (x, p("weight"), p("bias")), {}, node)
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if mod.running_mean is None or mod.running_var is None:
            raise _unsupported(node, f"{type(mod).__name__} without running statistics")
        args = (x, p("running_mean"), p("running_var"), p("weight"), p("bias"), False, 0.0, mod.eps)
        return b.call("batch_norm", args, {}, node)
    if isinstance(mod, nn.PReLU):
        return b.call("prelu", (x, p("weight")), {}, node)
    simple: dict[type[nn.Module], tuple[str, Callable[[Any], tuple[Any, ...]]]] = {
        nn.ReLU: ("relu", lambda m: ()),
        nn.ReLU6: ("relu6", lambda m: ()),
        nn.Sigmoid: ("sigmoid", lambda m: ()),
        nn.Tanh: ("tanh", lambda m: ()),
        nn.SiLU: ("silu", lambda m: ()),
        nn.LeakyReLU: ("leaky_relu", lambda m: (m.negative_slope,)),
        nn.Hardtanh: ("hardtanh", lambda m: (m.min_val, m.max_val)),
        nn.Softmax: ("softmax", lambda m: (m.dim,)),
        nn.LogSoftmax: ("log_softmax", lambda m: (m.dim,)),
        nn.Flatten: ("flatten", lambda m: (m.start_dim, m.end_dim)),
        nn.AdaptiveAvgPool1d: ("adaptive_avg_pool1d", lambda m: (m.output_size,)),
        nn.AdaptiveAvgPool2d: ("adaptive_avg_pool2d", lambda m: (m.output_size,)),
        nn.AvgPool1d: (
            "avg_pool1d",
            lambda m: (m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad),
        ),
        nn.AvgPool2d: (
            "avg_pool2d",
            lambda m: (
                m.kernel_size,
                m.stride,
                m.padding,
                m.ceil_mode,
                m.count_include_pad,
                m.divisor_override,
            ),
        ),
    }
    if type(mod) in simple:
        op, extra = simple[type(mod)]
        return b.call(op, (x, *extra(mod)), {}, node)
    if isinstance(mod, nn.GELU):
        return b.call("gelu", (x,), {"approximate": mod.approximate}, node)
    if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
        if mod.return_indices:
            raise _unsupported(node, f"{type(mod).__name__} with return_indices")
        op = "max_pool1d" if isinstance(mod, nn.MaxPool1d) else "max_pool2d"
        return b.call(
            op, (x, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode), {}, node
        )
    if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        if mod.return_indices:
            raise _unsupported(node, f"{type(mod).__name__} with return_indices")
        op = "adaptive_max_pool1d" if isinstance(mod, nn.AdaptiveMaxPool1d) else "adaptive_max_pool2d"
        return b.call(op, (x, mod.output_size), {}, node)
    raise _unsupported(node, f"module {path} of type {type(mod).__name__}")


def _method_call(b: _Builder, node: fx.Node) -> Argument:
    name = str(node.target)
    args = b.arg(node.args)
    kwargs = b.arg(node.kwargs)
    if name in IDENTITY_METHODS:
        return args[0]
    if name in METHODS:
        return b.method(name, tuple(args), dict(kwargs), node)
    if name in METHOD_FUNCTIONS:
        op, packing = METHOD_FUNCTIONS[name]
        if packing == "shape" and not (len(args) == 2 and isinstance(args[1], (tuple, list))):
            args = (args[0], tuple(args[1:]))  # x.view(a, b) -> reshape(x, (a, b))
        return b.call(op, tuple(args), dict(kwargs), node)
    raise _unsupported(node, f"tensor method .{name}()")


def _function_call(b: _Builder, node: fx.Node) -> Argument:
    target = node.target
    args = b.arg(node.args)
    kwargs = b.arg(node.kwargs)
    constant = not any(isinstance(a, fx.Node) for a in (*args, *kwargs.values()))
    if target in _ASSERTS:
        if constant and target is torch._assert and not args[0]:
            raise TraceError(f"node {node.name}: a specialised argument fails its check: {args[1]}")
        return None  # a check on shapes or on a specialised argument: the traced example passed it
    if constant and getattr(target, "__module__", None) == "_operator":
        return target(*args, **kwargs)  # type: ignore[operator]  # fold guards on specialised arguments
    if target in IDENTITY_FUNCTIONS:
        return args[0] if args else kwargs["input"]
    if target is torch.add and "alpha" not in kwargs:
        return b.call("add", tuple(args), {}, node)
    name = function_name(target)  # type: ignore[arg-type]
    if name is None:
        label = getattr(target, "__qualname__", None) or str(target)
        module = getattr(target, "__module__", "") or ""
        raise _unsupported(node, f"function {module + '.' if module else ''}{label}")
    return b.call(name, tuple(args), dict(kwargs), node)


# ATen ops of a torch.export program -> (vocabulary name, argument adapter).
def _aten_table() -> dict[
    Any, Callable[[tuple[Any, ...], dict[str, Any]], tuple[str, tuple[Any, ...], dict]]
]:
    aten = torch.ops.aten

    def same(name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], tuple[str, tuple[Any, ...], dict]]:
        return lambda a, k: (name, a, k)

    def batch_norm(a: tuple[Any, ...], k: dict[str, Any]) -> tuple[str, tuple[Any, ...], dict]:
        x, w, bias, mean, var, _training, momentum, eps = a[:8]
        return "batch_norm", (x, mean, var, w, bias, False, momentum, eps), {}

    def add(a: tuple[Any, ...], k: dict[str, Any]) -> tuple[str, tuple[Any, ...], dict]:
        if k.get("alpha", 1) != 1:
            raise ValueError("add with alpha")
        return "add", a[:2], {}

    table: dict[Any, Any] = {
        aten.conv1d.default: same("conv1d"),
        aten.conv2d.default: same("conv2d"),
        aten.linear.default: same("linear"),
        aten.batch_norm.default: batch_norm,
        aten.prelu.default: same("prelu"),
        aten.relu.default: same("relu"),
        aten.relu_.default: same("relu"),
        aten.hardtanh.default: same("hardtanh"),
        aten.leaky_relu.default: same("leaky_relu"),
        aten.gelu.default: same("gelu"),
        aten.silu.default: same("silu"),
        aten.sigmoid.default: same("sigmoid"),
        aten.tanh.default: same("tanh"),
        aten.softmax.int: lambda a, k: ("softmax", a[:2], {}),
        aten.log_softmax.int: lambda a, k: ("log_softmax", a[:2], {}),
        aten.max_pool1d.default: same("max_pool1d"),
        aten.max_pool2d.default: same("max_pool2d"),
        aten.avg_pool1d.default: same("avg_pool1d"),
        aten.avg_pool2d.default: same("avg_pool2d"),
        aten.adaptive_avg_pool1d.default: same("adaptive_avg_pool1d"),
        aten.adaptive_avg_pool2d.default: same("adaptive_avg_pool2d"),
        # ATen's adaptive max pooling returns (values, indices); a getitem follows
        aten.adaptive_max_pool1d.default: lambda a, k: ("adaptive_max_pool1d", a, {"return_indices": True}),
        aten.adaptive_max_pool2d.default: lambda a, k: ("adaptive_max_pool2d", a, {"return_indices": True}),
        aten.flatten.using_ints: same("flatten"),
        aten.view.default: same("reshape"),
        aten.reshape.default: same("reshape"),
        aten.permute.default: same("permute"),
        aten.transpose.int: same("transpose"),
        aten.squeeze.dim: same("squeeze"),
        aten.unsqueeze.default: same("unsqueeze"),
        aten.pad.default: same("pad"),
        aten.constant_pad_nd.default: lambda a, k: (
            "pad",
            (a[0], a[1], "constant", a[2] if len(a) > 2 else 0.0),
            {},
        ),
        aten.cat.default: same("cat"),
        aten.add.Tensor: add,
        aten.sub.Tensor: lambda a, k: ("sub", a[:2], {}),
        aten.mul.Tensor: same("mul"),
        aten.div.Tensor: same("truediv"),
        aten.neg.default: same("neg"),
        aten.matmul.default: same("matmul"),
        aten.mean.dim: same("mean"),
        aten.sum.dim_IntList: same("sum"),
    }
    return table


_ATEN_IDENTITY = {
    "aten.dropout.default",
    "aten.clone.default",
    "aten.contiguous.default",
    "aten.detach.default",
}
_ATEN_DROPPED = {
    "aten._assert_tensor_metadata.default",
    "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default",
}
_ASSERTS = frozenset({torch._assert, torch.fx._symbolic_trace._assert_is_none})


def _aten_call(b: _Builder, node: fx.Node, table: dict[Any, Any]) -> Argument:
    target = node.target
    args = b.arg(node.args)
    kwargs = b.arg(node.kwargs)
    label = str(target)
    if label in _ATEN_IDENTITY:
        return args[0]
    if label in _ATEN_DROPPED:
        return None
    if label == "aten.sym_size.int":
        return b.method("size", tuple(args), {}, node)
    adapter = table.get(target)
    if adapter is not None:
        try:
            name, new_args, new_kwargs = adapter(tuple(args), dict(kwargs))
            return b.call(name, tuple(new_args), new_kwargs, node)
        except (ValueError, IndexError):
            pass  # a form the vocabulary does not cover (add with alpha): kept as the ATen operator
    op = _functional_if_private(node, target)
    if aten_name(op) is None:
        if getattr(op, "namespace", None) != "aten":
            raise _unsupported(node, f"operator {label} (sqc stores ATen operators, not custom ones)")
        raise _unsupported(node, f"ATen op {label} (its arguments cannot be stored, or it has side effects)")
    return b.open_call(op, tuple(args), dict(kwargs), node)


def _functional_if_private(node: fx.Node, op: Any) -> Any:
    """``aten.silu`` for ``aten.silu_`` when nothing else reads the tensor it overwrites: the same
    result without aliasing, which passes and targets follow more easily. Otherwise ``op`` itself."""
    functional = functional_variant(op)
    first = node.args[0] if node.args else None
    if functional is None or not isinstance(first, fx.Node) or first.op in ("placeholder", "get_attr"):
        return op
    return functional if len(first.users) == 1 else op


def canonicalize(
    source: fx.GraphModule, *, copy_weights: bool = True
) -> tuple[fx.GraphModule, dict[str, torch.Tensor]]:
    """Rewrite a traced or exported graph into the vocabulary of :mod:`sqc.ir.ops`; ATen operators
    outside it are kept as they are (the open op set)."""
    exported = _is_aten_graph(source)
    b = _Builder(source, readable_names(source) if exported else None)
    modules = dict(source.named_modules())
    aten = None
    for node in source.graph.nodes:
        if node.op == "placeholder":
            # a placeholder with a default is a non-tensor argument that fx specialised (concrete_args);
            # in an exported graph, a constant argument (use_cache=False) carries its value in meta
            value = node.meta.get("val") if exported else None
            if node.args:
                b.env[node] = node.args[0]
            elif exported and "val" in node.meta and not isinstance(value, torch.Tensor):
                b.env[node] = value
            else:
                b.env[node] = b.graph.placeholder(node.name)
        elif node.op == "get_attr":
            b.env[node] = b.attr(str(node.target))
        elif node.op == "call_module":
            if str(node.target) == "_guards_fn":  # export's input guards: shapes are checked by sqc
                continue
            b.env[node] = _module_call(b, node, modules[str(node.target)])
        elif node.op == "call_method":
            b.env[node] = _method_call(b, node)
        elif node.op == "call_function":
            if isinstance(node.target, torch._ops.OpOverload):
                aten = aten if aten is not None else _aten_table()
                b.env[node] = _aten_call(b, node, aten)
            else:
                b.env[node] = _function_call(b, node)
        elif node.op == "output":
            b.graph.output(output_structure(source, b.arg(node.args[0])))
    b.graph.eliminate_dead_code()
    used = {str(n.target) for n in b.graph.nodes if n.op == "get_attr"}
    tensors = {name: value for name, value in b.tensors.items() if name in used}
    for node in list(b.graph.nodes):
        if node.op == "get_attr" and str(node.target) not in used:
            b.graph.erase_node(node)
    root = nn.Module()
    for name, value in tensors.items():
        if value.is_complex():
            raise TraceError(f"tensor {name} has dtype {value.dtype}; sqc stores real tensors only")
        # floating tensors are float32 in the IR; others (int64 position ids, bool masks) keep their
        # dtype and are stored exactly. A copy, unless the caller owns the model (loaded from a file):
        # then sharing saves a whole model.
        floating = value.is_floating_point()
        owned = value.detach().to(torch.float32) if floating else value.detach()
        owned = owned.clone() if copy_weights else owned
        _install(root, name, owned, is_param=floating and isinstance(value, nn.Parameter))
    gm = fx.GraphModule(root, b.graph, class_name="SqcModel")
    gm.meta["sqc_aliases"] = {alias: name for alias, name in b.aliases.items() if name in used}
    tie(gm, gm.meta["sqc_aliases"])
    return gm, tensors


def tie(module: nn.Module, aliases: dict[str, str]) -> None:
    """Register each alias as the very tensor object of its record: tied weights stay tied."""
    for alias, name in aliases.items():
        try:
            _install(module, alias, module.get_parameter(name), is_param=True)
        except AttributeError:
            _install(module, alias, module.get_buffer(name), is_param=False)


def _is_aten_graph(source: fx.GraphModule) -> bool:
    return any(isinstance(n.target, torch._ops.OpOverload) for n in source.graph.nodes)


def _install(root: nn.Module, qualified: str, value: torch.Tensor, *, is_param: bool) -> None:
    """Register ``value`` at the dotted path, making the modules on the way; a Parameter is taken as it
    is (the same object under two names is a tie), other tensors become parameters or buffers."""
    *path, leaf = qualified.split(".")
    owner = root
    for part in path:
        if not hasattr(owner, part):
            owner.add_module(part, nn.Module())
        owner = getattr(owner, part)
    if not is_param:
        owner.register_buffer(leaf, value)
    elif isinstance(value, nn.Parameter):
        owner.register_parameter(leaf, value)
    else:
        owner.register_parameter(leaf, nn.Parameter(value, requires_grad=value.is_floating_point()))


# ---------------------------------------------------------------------------------------------
# shapes and the IR


class _ShapeProp(fx.Interpreter):
    """Records output shapes in ``node.meta["shape"]``; an error names the node and its source line."""

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"the example input does not fit node {n.name}{_where(n)}: {first}"
            ) from None
        if isinstance(result, torch.Tensor):
            n.meta["shape"] = tuple(result.shape)
        return result


def propagate_shapes(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> None:
    try:
        with torch.no_grad():
            _ShapeProp(gm).run(*inputs)
    except ModelLoadError as exc:  # fx's Interpreter appends a multi-line graph dump: keep our line
        raise ModelLoadError(str(exc).strip().splitlines()[0]) from None


INPUT_DTYPES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
)
"""dtypes a graph input may have (``--input-shape 1,16:int64``)."""


def example_inputs(specs: list[InputSpec], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Deterministic example tensors for tracing and shape propagation: normal floats, and zeros for
    integer and bool inputs (token id 0 and an all-False mask are valid for any model)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        dtype = getattr(torch, spec.dtype)
        if dtype.is_floating_point:
            tensors.append(torch.randn(spec.shape, generator=generator).to(dtype))
        else:
            tensors.append(torch.zeros(spec.shape, dtype=dtype))
    return tuple(tensors)


def parse_input_spec(text: str, what: str = "--input-shape") -> InputSpec:
    """``1,3,224,224`` or ``1,16:int64`` (``x`` also separates dimensions) -> an unnamed InputSpec."""
    shape_text, _, dtype = text.strip().partition(":")
    dtype = dtype.strip() or "float32"
    if dtype not in INPUT_DTYPES:
        raise ModelLoadError(f"{what} {text!r}: dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
    try:
        shape = tuple(int(part) for part in shape_text.replace("x", ",").split(","))
    except ValueError:
        raise ModelLoadError(
            f"{what} {text!r}: expected comma-separated integers and an optional :dtype, e.g. 1,16:int64"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise ModelLoadError(f"{what} {text!r}: dimensions must be positive integers")
    if len(shape) > 8 or math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ModelLoadError(f"{what} {text!r}: more than {MAX_INPUT_ELEMENTS:,} elements or 8 dimensions")
    return InputSpec("", shape, dtype)


Example = torch.Tensor | InputSpec | str | tuple[int, ...] | list[int]


def as_examples(items: Any) -> tuple[torch.Tensor, ...]:
    """Example tensors from what a user gives: tensors (used as they are), InputSpecs, shapes, or
    ``"1,16:int64"`` texts (made by :func:`example_inputs`)."""
    if isinstance(items, (torch.Tensor, str)):
        items = (items,)
    specs: list[InputSpec | torch.Tensor] = []
    for item in items:
        if isinstance(item, torch.Tensor):
            specs.append(item.detach())
        elif isinstance(item, InputSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(parse_input_spec(item, "example input"))
        elif isinstance(item, (tuple, list)) and item and all(isinstance(d, int) and d > 0 for d in item):
            specs.append(InputSpec("", tuple(item)))
        elif isinstance(item, (tuple, list)) and item and all(isinstance(t, torch.Tensor) for t in item):
            specs.append(tuple(t.detach() for t in item))  # type: ignore[arg-type]  # a tuple argument
        else:
            raise ModelLoadError(
                f"example input {item!r}: give a tensor, a shape such as (1, 3, 224, 224) or '1,16:int64'"
            )
    wanted = [s for s in specs if isinstance(s, InputSpec)]
    if sum(math.prod(s.shape) for s in wanted) > MAX_INPUT_ELEMENTS or any(len(s.shape) > 8 for s in wanted):
        raise ModelLoadError(
            f"example input shapes of more than {MAX_INPUT_ELEMENTS:,} elements or 8 dimensions"
        )
    made = iter(example_inputs(wanted))
    return tuple(next(made) if isinstance(s, InputSpec) else s for s in specs)


def read_example_inputs(path: Path) -> tuple[torch.Tensor, ...]:
    """Example inputs from a ``.pt`` file: a tensor, a list or tuple of tensors, or a dict of them (in
    the forward's argument order). Read with ``weights_only=True``: nothing in the file runs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"--example-inputs {path}: no such file") from None
    except Exception as exc:
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelLoadError(
            f"--example-inputs {path}: not a tensor file readable without pickle ({first})"
        ) from None
    items = list(obj.values()) if isinstance(obj, dict) else obj
    items = [items] if isinstance(items, torch.Tensor) else items
    leaves: list[Any] = []
    if isinstance(items, (list, tuple)) and items:  # a tuple argument is a list inside the list
        items = [tuple(t) if isinstance(t, (list, tuple)) else t for t in items]
        leaves = [t for item in items for t in (item if isinstance(item, tuple) else (item,))]
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        raise ModelLoadError(
            f"--example-inputs {path}: holds a {type(obj).__name__}; expected a tensor, a list of tensors or "
            "a dict of tensors"
        )
    for tensor in leaves:
        if tensor.is_sparse or tensor.is_meta or str(tensor.dtype).removeprefix("torch.") not in INPUT_DTYPES:
            raise ModelLoadError(
                f"--example-inputs {path}: a {tensor.dtype} {tensor.layout} tensor; "
                f"expected dense tensors of {', '.join(INPUT_DTYPES)}"
            )
    return tuple(tuple(t.contiguous() for t in x) if isinstance(x, tuple) else x.contiguous() for x in items)


def build_ir(
    source: fx.GraphModule, examples: tuple[torch.Tensor, ...], *, copy_weights: bool = True
) -> CompressedModel:
    """Canonicalise ``source``, check its weights, propagate shapes and create one record per tensor."""
    gm, _ = canonicalize(source, copy_weights=copy_weights)
    examples = _flat(examples)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(examples):
        raise ModelLoadError(
            f"the model takes {len(placeholders)} tensor input(s) "
            f"({', '.join(p.name for p in placeholders)}) but {len(examples)} input shape(s) were given"
        )
    if sum(x.numel() for x in examples) > MAX_INPUT_ELEMENTS:
        raise ModelLoadError(f"the example inputs have more than {MAX_INPUT_ELEMENTS:,} elements together")
    specs = [
        InputSpec(p.name, tuple(x.shape), str(x.dtype).removeprefix("torch."))
        for p, x in zip(placeholders, examples, strict=True)
    ]
    for spec in specs:
        if spec.dtype not in INPUT_DTYPES:
            raise ModelLoadError(
                f"input {spec.name} has dtype {spec.dtype}: sqc takes {', '.join(INPUT_DTYPES)}"
            )
    params = dict(gm.named_parameters())
    tensors: dict[str, TensorState] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        name = str(node.target)
        value = params.get(name)
        role = "buffer" if value is None else ("weight" if value.dim() >= 2 else "param")
        value = value if value is not None else gm.get_buffer(name)
        if not all_finite(value):
            raise ModelLoadError(f"tensor {name} contains NaN or Inf; sqc refuses to compress a broken model")
        state = TensorState(name=name, shape=tuple(value.shape), role=role)  # type: ignore[arg-type]
        if value.dtype == torch.float32:
            state.set_dense(value.detach())
        else:  # an integer or bool buffer, kept exactly
            state.dense = value.detach()
        tensors[name] = state
    propagate_shapes(gm, examples)
    return CompressedModel(
        graph_module=gm, tensors=tensors, inputs=specs, aliases=dict(gm.meta.get("sqc_aliases", {}))
    )


def trace(model: nn.Module, inputs: Any = None, *, copy_weights: bool = True) -> CompressedModel:
    """Capture an ``nn.Module`` (or take an exported GraphModule as is) into the IR.

    ``inputs`` are example tensors, shapes or ``"1,16:int64"`` texts, one per forward tensor argument
    (see :func:`as_examples`); without them the shape is guessed (:func:`guess_input_shapes`).
    ``torch.fx.symbolic_trace`` is tried first: where it follows the model, the graph keeps the batch
    size dynamic and the names of the layers. Where it cannot (control flow, ``**kwargs``, LSTMs, an
    operator outside the vocabulary), the model is captured with ``torch.export`` instead.

    The IR copies the weights, so that later changes to ``model`` cannot reach it; pass
    ``copy_weights=False`` when the model is yours to give away (sqc never writes to it in place).
    """
    try:
        model = model.eval()
    except NotImplementedError:  # an exported program's module is already in inference form
        pass
    examples = None if inputs is None else as_examples(inputs)
    if isinstance(model, fx.GraphModule) and _is_aten_graph(model):
        if examples is None:
            raise ModelLoadError("an exported program needs its example input shapes")
        return build_ir(model, examples, copy_weights=copy_weights)
    try:
        if examples is not None and any(isinstance(x, tuple) for x in examples):
            raise TraceError("a tuple argument: symbolic tracing takes tensors only")
        source, _tensor_args = symbolic_trace(model)
        if examples is None:
            examples = as_examples(guess_input_shapes(model, source))
        return build_ir(source, examples, copy_weights=copy_weights)
    except TraceError as fx_error:
        if examples is None:
            declared = _declared_shapes(model)
            if declared is None:
                raise ModelLoadError(
                    f"{fx_error}; to capture it with torch.export instead, pass --input-shape "
                    "(e.g. --input-shape 1,3,224,224, or 1,16:int64 for token ids)"
                ) from None
            examples = as_examples(declared)
        try:
            return build_ir(export_module(model, examples), examples, copy_weights=copy_weights)
        except TraceError:  # a symbolic batch size brought an operation on sizes the IR cannot hold
            static = export_module(model, examples, dynamic_batch=False)
            return build_ir(static, examples, copy_weights=copy_weights)


def _flat(examples: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
    """The tensors of the examples in order, tuple arguments opened (as export flattens them)."""
    return tuple(t for x in examples for t in (x if isinstance(x, tuple) else (x,)))


def _declared_shapes(model: nn.Module) -> list[tuple[int, ...]] | None:
    declared = getattr(model, "example_input_shape", None)
    if declared is None:
        return None
    shapes = declared if isinstance(declared[0], (tuple, list)) else [declared]
    return [tuple(int(d) for d in s) for s in shapes]


def guess_input_shapes(model: nn.Module, source: fx.GraphModule) -> list[tuple[int, ...]]:
    """Input shapes when the user gave none: a model's ``example_input_shape`` attribute, or the input
    width of a first Linear layer (possibly behind a flatten); anything else must be told."""
    declared = _declared_shapes(model)
    if declared is not None:
        return declared
    placeholders = [n for n in source.graph.nodes if n.op == "placeholder"]
    if len(placeholders) == 1:
        node = placeholders[0]
        while len(node.users) == 1:
            (user,) = node.users
            if user.op == "call_module" and isinstance(source.get_submodule(str(user.target)), nn.Linear):
                linear = source.get_submodule(str(user.target))
                return [(1, linear.in_features)]
            if user.target in (torch.flatten, "flatten", "view", "reshape") or (
                user.op == "call_module" and isinstance(source.get_submodule(str(user.target)), nn.Flatten)
            ):
                node = user
                continue
            if user.target is F.linear:
                break
            break
    raise ModelLoadError(
        "cannot tell the model's input shape: pass --input-shape, e.g. --input-shape 1,3,224,224"
    )
