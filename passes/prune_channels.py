"""``prune-channels``: structured pruning that really removes filters, and every slice that depends on them.

Unstructured pruning leaves the dense shapes in place: the model is only smaller once it is stored
sparse, and no faster on ordinary kernels. Removing a whole filter makes every tensor that touches its
channel smaller — but a channel rarely belongs to one layer. A residual add ties the channels of every
block in a stage together, a concat (SqueezeNet's Fire expand layers) maps slices of its output back to
the branches that made them, a flatten before a Linear turns one channel into a block of input features.
Getting any of that wrong gives a model of the right shape that computes something else, so the pass
first builds a channel-dependency graph (networkx) over the whole IR and only removes what it can follow.

The graph has one vertex per *channel unit* of every value: a contiguous run of indices along the
value's *tracked dimension* (one channel of a conv output along dim 1; one feature of a linear's output
along its last dim; after ``flatten(x, 1)`` the H*W features that came from a channel; after
``view(B, T, H, D)`` one attention head). The tracked dimension moves with permute/transpose/squeeze,
and a view splits or merges it: whole into one output dimension, into heads (the outer part), or — when
that outer part is later indexed apart, as MultiheadAttention's packed ``(…, 3, E)`` projection is —
into its inner part, coupling the same feature of q, k and v. Edges couple units that must go together:
a unit of an op's output with the unit of its input it comes from (element-wise ops, ATen's too,
pooling, norms, depthwise convs, views), the operands of an element-wise op (a residual add, a
squeeze-excitation gate multiplied over H and W), a concat's or split's slice with its part, the heads
of q, k, v and the attention's result. Each unit lists the tensor slices that exist because of it — a
producer's filter row (a column for GPT-2's ``Conv1D``, an ``addmm`` whose weight is stored (in, out))
and bias entry, BatchNorm/LayerNorm entries, a layer scale's entry, a consumer's weight columns (a
``Conv1D``'s rows), per-channel parameters — and units touching the same slice of a tensor (a weight used
twice) are coupled too. A connected component is a *group*: removed together or not at all.
Components that reach a graph input or output, a channel-mixing op (softmax over the channels, a
reduction over them, a grouped conv), or an op the pass does not understand are kept; the last is
refused with the node's name unless ``unknown=keep``. Every argument that encodes a width (a depthwise
conv's ``groups``, a view's head count or width, ``unflatten``/``split`` sizes, ``normalized_shape``) is
rewritten; a width the graph computes from ``x.size()`` becomes ``-1``.

Removing a group computes exactly what zeroing its filters in the original computes (the tests check
this on every family), with one deliberate exception: a layer norm over the pruned channels (ConvNeXt's,
or a LayerNorm2d's mean and variance over dim 1) takes its statistics over the channels that remain,
as a network built that narrow would. ``target=auto``, which measures removal by zeroing, therefore
only approximates the effect on such channels.

Groups with the same set of producing layers form a *space* (all 64 channels of a ResNet stage, the
16 squeeze channels of a Fire module); ``ratio`` of each space's groups are removed (per ``scope=layer``,
with ``per_layer`` overrides matched against the producing layers), the ones whose filters have the
smallest L1 or L2 norm summed over the group. ``scope=global`` ranks every group by its norm divided by
its space's mean norm, so that layers with different fan-in compete on equal terms. Every space keeps
at least one group.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
import torch
from torch import fx

from sqc.compiler.pass_base import LayerMap, OptionError, Pass, PassContext, PassResult, Stat, check_range
from sqc.errors import PipelineError
from sqc.ir.ops import FUNCTION_NAMES, aten_name
from sqc.ir.records import CompressedModel

Unit = tuple[str, int]
"""A channel unit: (value node name, index of the unit along dim 1)."""
_PIN: Unit = ("#pin", 0)
SliceRole = Literal["out", "in", "param"]

_ELEMENTWISE = frozenset(
    {
        # the vocabulary's activations, and ATen's element-wise ops that reach the IR through torch.export
        "relu", "relu6", "leaky_relu", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "neg",
        "hardswish", "hardsigmoid", "mish", "elu", "selu", "celu", "softplus", "softsign", "logsigmoid",
        "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "erf", "square", "sign",
        "clamp", "clamp_min", "clamp_max", "dropout", "alias", "clone", "contiguous", "detach",
        "_to_copy", "to", "type_as", "lift_fresh_copy",
    }
)  # fmt: skip
_POOLS = frozenset(
    {
        "max_pool1d",
        "max_pool2d",
        "avg_pool1d",
        "avg_pool2d",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
    }
)
_BINARY = frozenset(
    {
        "add",
        "sub",
        "rsub",
        "mul",
        "truediv",
        "div",
        "floordiv",
        "pow",
        "maximum",
        "minimum",
        "fmod",
        "remainder",
    }
)
_STATISTICS = frozenset({"mean", "var", "std"})
"""Reductions that, kept over the channels (``keepdim``), are a normalisation's statistics."""
_PRODUCERS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "addmm"})
"""Ops that make new channels even from an input or a constant."""
_MULTI = _BINARY | _PRODUCERS | {"cat", "matmul", "bmm", "scaled_dot_product_attention"}
"""Ops whose first argument need not carry the channels."""


@dataclass(frozen=True)
class Slice:
    """Indices ``[start, stop)`` along ``axis`` of tensor ``tensor`` that exist because of one unit.

    ``role``: ``out`` is a producer's filter (weight rows, bias entries), ``in`` a consumer's weight
    columns, ``param`` a per-channel parameter or buffer (BatchNorm, PReLU, depthwise filters).
    """

    tensor: str
    axis: int
    start: int
    stop: int
    role: SliceRole


@dataclass
class Group:
    """Coupled channel units, removed together: their slices, and the filters that produce them."""

    units: list[Unit]
    slices: list[Slice]
    sources: list[tuple[str, int]]  # (weight tensor, row)
    blocked: str = ""  # why the group cannot be removed (an op the pass does not follow), if so
    score: float = 0.0  # the criterion's norm summed over the group's filters

    @property
    def space(self) -> tuple[str, ...]:
        """The producing layers: groups with the same ones are ranked against each other."""
        return tuple(sorted({name.rpartition(".")[0] or name for name, _ in self.sources}))


@dataclass(frozen=True)
class Rewrite:
    """An op argument that encodes a tracked width: after removal it becomes ``fold`` times the new
    number of indices of ``value`` (a depthwise conv's ``groups``, a reshape's hard-coded width or head
    count, a layer norm's ``normalized_shape``, a split's size). ``index`` addresses an entry of a list
    argument; ``infer`` writes ``-1`` instead (a width the graph computes at run time from a size)."""

    node: fx.Node
    position: int
    index: int | None
    value: str
    fold: int = 1
    infer: bool = False


@dataclass
class ChannelGraph:
    """The channel-dependency analysis of one IR (see the module docstring)."""

    model: CompressedModel
    graph: nx.Graph = field(default_factory=nx.Graph)
    layout: dict[str, list[int]] = field(default_factory=dict)
    """Per tracked value: the sizes of its units along its tracked dimension (the inner part of it)."""
    axis: dict[str, int] = field(default_factory=dict)
    """Per tracked value: the dimension its units lie along (1 for a conv's output, -1 for a linear's)."""
    fold: dict[str, int] = field(default_factory=dict)
    """Per tracked value: how many times the tracked run repeats in its dimension (MultiheadAttention
    folds the batch into the head dimension: ``(T, B*H, D)``); 1 almost everywhere."""
    free: dict[str, Unit] = field(default_factory=dict)
    """Values without channels of their own (inputs, constants, what an unknown op makes): the vertex
    their units hang from, ``_PIN`` or the unknown op's marker."""
    slices: dict[Unit, list[Slice]] = field(default_factory=lambda: defaultdict(list))
    sources: dict[Unit, tuple[str, int]] = field(default_factory=dict)
    unknown: dict[Unit, str] = field(default_factory=dict)
    pinned: list[str] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    tuples: dict[str, int] = field(default_factory=dict)
    """Split and unbind nodes: how many pieces they make (piece k is tracked as ``name#k``)."""
    filter_axis: dict[str, int] = field(default_factory=dict)
    """Per producing weight: the dimension its filters lie along — 0 (rows) for conv and linear, 1
    (columns) for GPT-2's ``Conv1D``, whose weight is stored (in, out). Norms are taken along it."""

    def __post_init__(self) -> None:
        self.graph.add_node(_PIN)
        for node in self.model.graph_module.graph.nodes:
            self._visit(node)
        self._couple_shared_slices()

    # -- building ----------------------------------------------------------------------------------

    def _units(self, key: str) -> list[Unit]:
        return [(key, i) for i in range(len(self.layout[key]))]

    def _offsets(self, key: str) -> list[tuple[int, int]]:
        out, start = [], 0
        for size in self.layout[key]:
            out.append((start, start + size))
            start += size
        return out

    def _joined(
        self, node: fx.Node, keys: list[str], pieces: list[list[Unit]] | None, axis: int, problem: str
    ) -> list[Unit] | None:
        """New units for ``node``, laid out as every value of ``keys`` is, each coupled with those
        values' units (``pieces``, or the units of ``keys``): operands that meet index by index. None,
        with the node marked unknown for ``problem``, when their channel layouts differ."""
        layouts = {(tuple(self.layout[k]), self.fold[k]) for k in keys}
        if len(layouts) != 1:
            self._unknown(node, problem)
            return None
        sizes, fold = layouts.pop()
        units = self._new(node, list(sizes), axis, fold)
        for piece in pieces if pieces is not None else [self._units(k) for k in keys]:
            self._couple(piece, units)
        return units

    def _new(self, node: fx.Node | str, sizes: list[int], axis: int, fold: int = 1) -> list[Unit]:
        key = node if isinstance(node, str) else node.name
        self.layout[key], self.axis[key], self.fold[key] = sizes, axis, fold
        units = self._units(key)
        self.graph.add_nodes_from(units)
        return units

    def _activations(self, node: fx.Node) -> list[fx.Node]:
        """The tracked values (and tuples of them) an op reads."""
        found = dict.fromkeys(_flat_nodes((node.args, node.kwargs)))
        return [n for n in found if n.name in self.layout or n.name in self.tuples]

    def _keys(self, value: fx.Node) -> list[str]:
        if value.name in self.tuples:
            return [f"{value.name}#{k}" for k in range(self.tuples[value.name])]
        return [value.name]

    def _tracked(self, value: Any) -> bool:
        return isinstance(value, fx.Node) and value.name in self.layout

    def _at(self, value: fx.Node, axis: int) -> list[Unit] | None:
        """The units of ``value`` along ``axis``: its own if it is tracked along that axis, None if it is
        tracked along another; a free value gets fixed units (hanging from its anchor) on demand."""
        if value.name in self.layout:
            return self._units(value.name) if self.axis[value.name] == axis else None
        key = f"{value.name}@{axis}"
        if key not in self.layout:
            shape = _shape(value)
            if axis >= len(shape):
                return None
            units = self._new(key, [1] * shape[axis], axis)
            self._anchor(units, value)
        return self._units(key)

    def _anchor(self, units: Iterable[Unit], value: fx.Node) -> None:
        """Tie ``units`` to what holds a free ``value`` fixed (an input: kept; an unknown op: blocked)."""
        anchor = self.free.get(value.name, _PIN)
        self.graph.add_edges_from((anchor, u) for u in units)

    def _couple(self, a: Iterable[Unit], b: Iterable[Unit]) -> None:
        self.graph.add_edges_from(zip(a, b, strict=True))

    def _pin(self, units: Iterable[Unit], why: str | None = None) -> None:
        units = list(units)
        self.graph.add_edges_from((_PIN, u) for u in units)
        if why and units:
            self.pinned.append(why)

    def _passthrough(self, node: fx.Node, source: fx.Node, axis: int | None = None) -> None:
        key = source.name
        units = self._new(
            node, list(self.layout[key]), self.axis[key] if axis is None else axis, self.fold[key]
        )
        self._couple(self._units(key), units)

    def _attach(self, key: str, tensor: fx.Node | None, axis: int, role: SliceRole) -> None:
        """Every unit of ``key`` owns its slice of ``tensor`` along ``axis`` (a get_attr node)."""
        if tensor is None:
            return
        for unit, (start, stop) in zip(self._units(key), self._offsets(key), strict=True):
            self.slices[unit].append(Slice(str(tensor.target), axis, start, stop, role))

    def _source(self, node: fx.Node, weight: fx.Node, bias: Any, axis: int, weight_axis: int = 0) -> None:
        """``node`` makes one new unit per filter of ``weight`` (rows, or ``weight_axis``) along ``axis``."""
        units = self._new(node, [1] * _attr_shape(self.model, weight)[weight_axis], axis)
        self.filter_axis[str(weight.target)] = weight_axis
        for j, unit in enumerate(units):
            self.slices[unit].append(Slice(str(weight.target), weight_axis, j, j + 1, "out"))
            if _is_attr(bias):
                self.slices[unit].append(Slice(str(bias.target), 0, j, j + 1, "out"))
            self.sources[unit] = (str(weight.target), j)

    def _unknown(self, node: fx.Node, reason: str) -> None:
        """An op whose channel mapping the pass cannot follow: everything it touches is one blocked group."""
        marker: Unit = ("#unknown", len(self.unknown))
        self.unknown[marker] = f"node {node.name} ({_describe(node)}) {reason}"
        self.graph.add_node(marker)
        for arg in self._activations(node):
            for key in self._keys(arg):
                self.graph.add_edges_from((marker, u) for u in self._units(key))
        self.free[node.name] = marker  # whatever uses its result is blocked by it too

    def _visit(self, node: fx.Node) -> None:
        if node.op == "output":
            for arg in _flat_nodes(node.args):
                if arg.name in self.layout:
                    self._pin(self._units(arg.name))
            return
        if node.op != "call_function":
            return  # placeholders and get_attr are free; x.size() is an int
        name = _op(node)
        if not self._activations(node) and name not in _PRODUCERS:
            # computed from inputs and constants only: free, and blocked if an input is
            anchors = [
                self.free[a.name] for a in _flat_nodes((node.args, node.kwargs)) if a.name in self.free
            ]
            self.free[node.name] = next((a for a in anchors if a != _PIN), _PIN)
            return
        handler = getattr(self, f"_op_{name}", None)
        if handler is None:
            if name in _ELEMENTWISE:
                handler = self._elementwise
            elif name in _POOLS:
                handler = self._pool
            elif name in _BINARY:
                handler = self._binary
        if handler is None:
            self._unknown(node, "is not an op prune-channels follows channels through")
            return
        first = node.args[0] if node.args else None
        held = isinstance(first, fx.Node) and (first.name in self.layout or first.name in self.tuples)
        if name not in _MULTI and not held:
            self._unknown(node, "combines channels with an operand the pass cannot follow")
            return
        handler(node)

    # -- ops ---------------------------------------------------------------------------------------

    def _elementwise(self, node: fx.Node) -> None:
        self._passthrough(node, _first(node))

    def _pool(self, node: fx.Node) -> None:
        x = _first(node)
        if len(_shape(x)) < 3 or self.axis[x.name] != 1:
            self._unknown(node, "pools a tensor without spatial dimensions, or along the channels")
            return
        self._passthrough(node, x)  # with return_indices the tuple carries the layout to its getitem

    def _conv(self, node: fx.Node) -> None:
        x, weight, bias = _first(node), _arg(node, 1, "weight"), _arg(node, 2, "bias")
        groups = int(_arg(node, 6, "groups", 1))
        if not _is_attr(weight):
            self._unknown(node, "convolves with a computed weight")
            return
        inputs = self._at(x, 1)
        if inputs is None or (self._tracked(x) and self.fold[x.name] != 1):
            self._unknown(node, "convolves over a dimension the channels were moved to")
            return
        key = x.name if self._tracked(x) else f"{x.name}@1"
        out_channels, in_channels = _shape(node)[1], _shape(x)[1]
        if groups == 1:
            self._attach(key, weight, 1, "in")
            self._source(node, weight, bias, 1)
            return
        if groups == in_channels and all(size == 1 for size in self.layout[key]):
            # depthwise: channel c of the input makes channels c*m..c*m+m-1 of the output
            multiplier = out_channels // in_channels
            self._couple(inputs, self._new(node, [multiplier] * in_channels, 1))
            self._attach(node.name, weight, 0, "param")
            self._attach(node.name, bias if _is_attr(bias) else None, 0, "param")
            self.rewrites.append(Rewrite(node, 6, None, key))
            return
        # a grouped conv: removing one input channel would unbalance its group
        self._pin(inputs, f"node {node.name}: grouped conv (groups={groups}) keeps its channels")
        self._pin(self._new(node, [1] * out_channels, 1))

    _op_conv1d = _conv
    _op_conv2d = _conv
    _op_conv3d = _conv

    def _op_linear(self, node: fx.Node) -> None:
        x, weight, bias = _first(node), _arg(node, 1, "weight"), _arg(node, 2, "bias")
        last = len(_shape(x)) - 1
        if not _is_attr(weight) or last < 0:
            self._unknown(node, "is a linear layer with a computed weight")
            return
        inputs = self._at(x, last)
        if inputs is None:  # tracked along another dimension: the layer maps each of its units alone
            self._passthrough(node, x)
            return
        key = x.name if self._tracked(x) else f"{x.name}@{last}"
        if self.fold[key] != 1:
            self._unknown(node, "is a linear layer over features folded with another dimension")
            return
        self._attach(key, weight, 1, "in")
        self._source(node, weight, bias, last)

    def _op_addmm(self, node: fx.Node) -> None:
        """GPT-2's ``Conv1D``: ``addmm(bias, x.reshape(-1, in), weight)`` with the weight stored
        (in, out). A filter is a *column* of the weight (and its bias entry); a consumer's input
        feature is a *row*. The reshape/view around it are ordinary views, whose widths
        :meth:`_reshape` rewrites. ``beta``/``alpha`` only scale, so any value keeps this mapping."""
        bias, x, weight = _arg(node, 0, "input"), _arg(node, 1, "mat1"), _arg(node, 2, "mat2")
        if bias is None:  # ATen names the first operand ``self``
            bias = node.kwargs.get("self")
        if not isinstance(x, fx.Node) or not _is_attr(weight) or len(_attr_shape(self.model, weight)) != 2:
            self._unknown(node, "multiplies by a computed weight")
            return
        out = _attr_shape(self.model, weight)[1]
        inputs = self._at(x, 1)
        if inputs is None:  # tracked along the rows (positions): each row is mapped alone
            shape = _shape_of(self.model, bias) if isinstance(bias, fx.Node) else ()
            if self._tracked(bias) or (len(shape) == 2 and shape[0] != 1):
                self._unknown(node, "adds a bias with rows of its own to rows the pass tracks")
                return
            self._passthrough(node, x)
            return
        key = x.name if self._tracked(x) else f"{x.name}@1"
        if self.fold[key] != 1:
            self._unknown(node, "is a linear layer over features folded with another dimension")
            return
        if self._tracked(bias):
            self._unknown(node, "adds a bias computed from channels the pass tracks")
            return
        # the bias broadcasts against (rows, out): its last dimension is the filters' or constant
        bias_shape = _shape_of(self.model, bias) if isinstance(bias, fx.Node) else ()
        per_filter = bool(bias_shape) and bias_shape[-1] == out and out != 1
        sliceable = per_filter and _is_attr(bias) and len(bias_shape) == 1
        self._attach(key, weight, 0, "in")
        self._source(node, weight, bias if sliceable else None, 1, weight_axis=1)
        if per_filter and not sliceable:
            self._anchor(self._units(node.name), bias)  # a per-filter bias the pass cannot slice: kept

    def _op_batch_norm(self, node: fx.Node) -> None:
        x = _first(node)
        self._passthrough(node, x)
        if self.axis[x.name] != 1:
            return  # normalises channels that are not the ones tracked: nothing to slice
        if self.fold[x.name] != 1:
            self._unknown(node, "normalises channels folded with another dimension")
            return
        for position, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
            tensor = _arg(node, position, key)
            if _is_attr(tensor):
                self._attach(node.name, tensor, 0, "param")

    def _op_layer_norm(self, node: fx.Node) -> None:
        """Normalised over the tracked features: they stay followable (the norm's weight and bias
        entries go with them), and a removed feature also leaves the statistics, as in a network
        built with fewer channels. Over several dimensions including them: kept."""
        x = _first(node)
        rank, axis = len(_shape(x)), self.axis[x.name]
        normalized = _arg(node, 1, "normalized_shape")
        count = len(normalized) if isinstance(normalized, (list, tuple)) else 1
        if axis < rank - count:
            self._passthrough(node, x)
            return
        if count != 1 or self.fold[x.name] != 1:
            self._mixing(node, "a layer norm over several dimensions")
            return
        self._passthrough(node, x)
        for position, key in ((2, "weight"), (3, "bias")):
            tensor = _arg(node, position, key)
            if _is_attr(tensor):
                self._attach(node.name, tensor, 0, "param")
        if isinstance(normalized, (list, tuple)):
            self.rewrites.append(Rewrite(node, 1, 0, node.name))

    def _op_group_norm(self, node: fx.Node) -> None:
        x = _first(node)
        if self.axis[x.name] == 1:
            self._mixing(node, "a group norm over channels")
        else:
            self._passthrough(node, x)

    def _op_prelu(self, node: fx.Node) -> None:
        x = _first(node)
        self._passthrough(node, x)
        weight = _arg(node, 1, "weight")
        if _is_attr(weight) and math.prod(_attr_shape(self.model, weight)) > 1:
            if self.axis[x.name] != 1 or self.fold[x.name] != 1:
                self._unknown(node, "has one slope per channel, and the tracked units are not channels")
                return
            self._attach(node.name, weight, 0, "param")

    def _mixing(self, node: fx.Node, what: str) -> None:
        for arg in self._activations(node):
            for key in self._keys(arg):
                self._pin(self._units(key), f"node {node.name}: {what} keeps its input channels")
        # the result is free: fixed, but whatever it is combined with is not blocked by it

    def _softmax(self, node: fx.Node) -> None:
        x = _first(node)
        dim = _arg(node, 1, "dim")
        if dim is None or _norm(int(dim), len(_shape(x))) == self.axis[x.name]:
            self._mixing(node, f"{_op(node)} over channels")
        else:
            self._passthrough(node, x)

    _op_softmax = _softmax
    _op_log_softmax = _softmax

    def _reduce(self, node: fx.Node) -> None:
        x = _first(node)
        rank, axis = len(_shape(x)), self.axis[x.name]
        dims = _arg(node, 1, "dim")
        keepdim = bool(_arg(node, 2, "keepdim", False))
        if dims is None or (isinstance(dims, (list, tuple)) and not dims):
            self._mixing(node, f"{_op(node)} over all dimensions")
            return
        dims = [_norm(int(d), rank) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if axis in dims:
            if keepdim and _op(node) in _STATISTICS:
                # a normalisation's statistic (a LayerNorm2d's mean and variance over channels): the
                # result is one value per position, which a removed channel simply no longer enters
                return
            self._mixing(node, f"{_op(node)} over the channels")
            return
        self._passthrough(node, x, axis if keepdim else axis - sum(d < axis for d in dims))

    _op_mean = _reduce
    _op_sum = _reduce
    _op_var = _reduce
    _op_std = _reduce
    _op_amax = _reduce
    _op_amin = _reduce

    # shapes

    def _op_flatten(self, node: fx.Node) -> None:
        self._reshape(node, lambda j: "auto")

    def _op_reshape(self, node: fx.Node) -> None:
        target = _arg(node, 1, "shape")
        after = _shape(node)
        if not isinstance(target, (list, tuple)) or len(target) != len(after):
            self._unknown(node, "reshapes to a shape the pass cannot read")
            return
        inferred = any(isinstance(t, int) and t == -1 for t in target)

        def entry(j: int) -> Any:
            if isinstance(target[j], int):
                return "auto" if target[j] == -1 else (1, j)
            return None if inferred else (1, j, "infer")

        self._reshape(node, entry)

    _op_view = _op_reshape
    _op__unsafe_view = _op_reshape

    def _op_unflatten(self, node: fx.Node) -> None:
        x = _first(node)
        dim = _norm(int(_arg(node, 1, "dim")), len(_shape(x)))
        sizes = _arg(node, 2, "sizes")
        if not isinstance(sizes, (list, tuple)):
            self._unknown(node, "unflattens to sizes the pass cannot read")
            return
        inferred = any(isinstance(t, int) and t == -1 for t in sizes)

        def entry(j: int) -> Any:
            if not dim <= j < dim + len(sizes):
                return "auto"
            size = sizes[j - dim]
            if isinstance(size, int):
                return "auto" if size == -1 else (2, j - dim)
            return None if inferred else (2, j - dim, "infer")

        self._reshape(node, entry)

    def _reshape(self, node: fx.Node, entry: Any) -> None:
        """Any view of the same elements: the dimensions are matched in runs of equal products, and the
        tracked run of indices (``fold`` repeats of the layout, at stride ``inner`` in its run) lands
        whole in one output dimension, is split there into heads (the output dimension holds its outer
        part) or keeps its inner part in one output dimension (the outer part is indexed apart later,
        as MultiheadAttention's packed q/k/v are)."""
        x = _first(node)
        before, after = _shape(x), _shape(node)
        runs = _runs(before, after)
        axis, layout = self.axis[x.name], self.layout[x.name]
        run = next((r for r in runs if axis in r[0]), None) if runs is not None else None
        if run is None:
            self._unknown(node, f"reshapes {tuple(before)} to {tuple(after)} in a way the pass cannot map")
            return
        ins, outs = run
        inner = math.prod(before[d] for d in ins if d > axis)
        span = inner * sum(layout)  # the tracked indices occupy strides [inner, span)
        whole, heads, split = None, None, None
        for j in outs:
            stride = math.prod(after[d] for d in outs if d > j)
            top = stride * after[j]
            if stride <= inner and top >= span and inner % stride == 0 and top % span == 0:
                whole = whole if whole is not None else (j, inner // stride, top // span)
            elif inner < stride < span and stride % inner == 0 and span % stride == 0 and top % span == 0:
                heads = (j, stride // inner, top // span)
            elif stride == inner and top < span and span % top == 0:
                split = (j, after[j])
        if whole is not None:
            j, block, out_fold = whole
            self._couple(self._units(x.name), self._new(node, [s * block for s in layout], j, out_fold))
        elif heads is not None and (split is None or not _indexed_later(node, heads[0])):
            j, width, out_fold = heads  # each output index holds ``width`` consecutive tracked indices
            units = self._new(node, [1] * (sum(layout) // width), j, out_fold)
            for unit, (start, stop) in zip(self._units(x.name), self._offsets(x.name), strict=True):
                for h in range(start // width, (stop - 1) // width + 1):
                    self.graph.add_edge(unit, units[h])
        elif split is not None:
            j, width = split  # output index e holds the tracked indices e, e + width, e + 2*width, ...
            units = self._new(node, [1] * width, j)
            for unit, (start, stop) in zip(self._units(x.name), self._offsets(x.name), strict=True):
                for index in range(start, stop):
                    self.graph.add_edge(unit, units[index % width])
        else:
            self._unknown(node, f"reshapes {tuple(before)} to {tuple(after)} across the channels")
            return
        j = self.axis[node.name]
        spec = entry(j)
        if spec == "auto":
            return
        if spec is None:
            self._unknown(node, f"has a width for dimension {j} the pass cannot rewrite")
            return
        self.rewrites.append(Rewrite(node, spec[0], spec[1], node.name, self.fold[node.name], len(spec) > 2))

    def _op_permute(self, node: fx.Node) -> None:
        x = _first(node)
        dims = _arg(node, 1, "dims")
        rank = len(_shape(x))
        if not isinstance(dims, (list, tuple)):
            self._unknown(node, "permutes dimensions the pass cannot read")
            return
        self._passthrough(node, x, [_norm(int(d), rank) for d in dims].index(self.axis[x.name]))

    def _op_transpose(self, node: fx.Node) -> None:
        x = _first(node)
        rank, axis = len(_shape(x)), self.axis[x.name]
        a, b = _norm(int(_arg(node, 1, "dim0")), rank), _norm(int(_arg(node, 2, "dim1")), rank)
        self._passthrough(node, x, b if axis == a else a if axis == b else axis)

    def _op_t(self, node: fx.Node) -> None:
        x = _first(node)
        self._passthrough(node, x, len(_shape(x)) - 1 - self.axis[x.name])

    def _op_squeeze(self, node: fx.Node) -> None:
        x = _first(node)
        shape, axis = _shape(x), self.axis[x.name]
        dim = _arg(node, 1, "dim")
        if dim is None:
            dims = [d for d, size in enumerate(shape) if size == 1]
        else:
            listed = dim if isinstance(dim, (list, tuple)) else [dim]
            dims = [d for d in (_norm(int(v), len(shape)) for v in listed) if shape[d] == 1]
        if axis in dims:
            self._unknown(node, "squeezes the channel dimension")
            return
        self._passthrough(node, x, axis - sum(d < axis for d in dims))

    def _op_unsqueeze(self, node: fx.Node) -> None:
        x = _first(node)
        axis = self.axis[x.name]
        dim = _norm(int(_arg(node, 1, "dim")), len(_shape(x)) + 1)
        self._passthrough(node, x, axis + 1 if dim <= axis else axis)

    def _op_select(self, node: fx.Node) -> None:
        x = _first(node)
        axis = self.axis[x.name]
        dim = _norm(int(_arg(node, 1, "dim")), len(_shape(x)))
        if dim == axis:
            self._unknown(node, "selects one index of the channels")
            return
        self._passthrough(node, x, axis - 1 if dim < axis else axis)

    def _op_slice(self, node: fx.Node) -> None:
        x = _first(node)
        shape, axis = _shape(x), self.axis[x.name]
        dim = _norm(int(_arg(node, 1, "dim", 0)), len(shape))
        start, end, step = _arg(node, 2, "start"), _arg(node, 3, "end"), _arg(node, 4, "step", 1)
        whole = (
            start in (None, 0) and (end is None or (isinstance(end, int) and end >= shape[dim])) and step == 1
        )
        if dim == axis and not whole:
            self._unknown(node, "slices the channels")
            return
        self._passthrough(node, x)

    def _op_expand(self, node: fx.Node) -> None:
        x = _first(node)
        sizes = _arg(node, 1, "size")
        out_rank = len(_shape(node))
        axis = self.axis[x.name] + out_rank - len(_shape(x))
        if not isinstance(sizes, (list, tuple)) or len(sizes) != out_rank:
            self._unknown(node, "expands to sizes the pass cannot read")
            return
        self._passthrough(node, x, axis)
        if sizes[axis] != -1:
            if not isinstance(sizes[axis], int):
                self._unknown(node, "expands the channels to a computed size")
                return
            self.rewrites.append(Rewrite(node, 1, axis, node.name, self.fold[node.name]))

    def _op_pad(self, node: fx.Node) -> None:
        x = _first(node)
        pad = _arg(node, 1, "pad")
        if isinstance(pad, (list, tuple)) and self.axis[x.name] < len(_shape(x)) - len(pad) // 2:
            self._passthrough(node, x)
        else:
            self._unknown(node, "pads the channel dimension")

    def _op_cat(self, node: fx.Node) -> None:
        parts = _arg(node, 0, "tensors")
        dim = _norm(int(_arg(node, 1, "dim", 0)), len(_shape(node)))
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) for p in parts):
            self._unknown(node, "concatenates values the pass cannot follow")
            return
        axes = {self.axis[p.name] for p in parts if self._tracked(p)}
        if len(axes) != 1:
            self._unknown(node, "concatenates values tracked along different dimensions")
            return
        axis = axes.pop()
        pieces = [self._at(p, axis) for p in parts]
        keys = [p.name if self._tracked(p) else f"{p.name}@{axis}" for p in parts]
        if any(self.fold[k] != 1 for k in keys) and dim == axis:
            self._unknown(node, "concatenates channels folded with another dimension")
            return
        if dim == axis:  # output slices map back to the input that made them
            units = self._new(node, [s for k in keys for s in self.layout[k]], axis)
            at = 0
            for piece in pieces:
                assert piece is not None
                self._couple(piece, units[at : at + len(piece)])
                at += len(piece)
            return
        assert all(piece is not None for piece in pieces)
        self._joined(
            node, keys, pieces, axis, f"concatenates along dim {dim} values with different channel layouts"
        )  # type: ignore[arg-type]

    def _op_split(self, node: fx.Node) -> None:
        """``x.split(size, dim)`` (GPT-2's packed q/k/v): along the tracked dimension, piece k holds the
        tracked indices [k*size, (k+1)*size), and the pieces are coupled index by index so that they
        keep one size (the single ``size`` argument is rewritten)."""
        x = _first(node)
        size, dim = _arg(node, 1, "split_size"), _arg(node, 2, "dim", 0)
        self._split(node, x, size if isinstance(size, int) else None, None, dim)

    def _op_split_with_sizes(self, node: fx.Node) -> None:
        x = _first(node)
        sizes = _arg(node, 1, "split_sizes")
        self._split(
            node, x, None, list(sizes) if isinstance(sizes, (list, tuple)) else None, _arg(node, 2, "dim", 0)
        )

    def _split(self, node: fx.Node, x: fx.Node, size: int | None, sizes: list[Any] | None, dim: Any) -> None:
        shape, axis = _shape(x), self.axis[x.name]
        dim = _norm(int(dim), len(shape))
        width = shape[dim]
        if sizes is None:
            if size is None:
                self._unknown(node, "splits by a size the pass cannot read")
                return
            sizes = [min(size, width - at) for at in range(0, width, size)]
        self.tuples[node.name] = len(sizes)
        if dim != axis:
            for k in range(len(sizes)):
                self._passthrough_key(f"{node.name}#{k}", x)
            return
        offsets = self._offsets(x.name)
        bounds = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
        if (
            self.fold[x.name] != 1
            or not all(isinstance(s, int) for s in sizes)
            or not {b for b in bounds} <= {start for start, _ in offsets} | {width}
        ):
            self._unknown(node, "splits the channels inside a unit")
            return
        pieces = []
        for k in range(len(sizes)):
            inside = [
                i for i, (start, stop) in enumerate(offsets) if bounds[k] <= start and stop <= bounds[k + 1]
            ]
            units = self._new(f"{node.name}#{k}", [self.layout[x.name][i] for i in inside], axis)
            self._couple([(x.name, i) for i in inside], units)
            pieces.append(units)
            if size is None:
                self.rewrites.append(Rewrite(node, 1, k, f"{node.name}#{k}"))
        if size is not None:
            if len({len(p) for p in pieces}) != 1:
                self._unknown(node, "splits the channels into pieces of different sizes")
                return
            for piece in pieces[1:]:
                self._couple(pieces[0], piece)
            self.rewrites.append(Rewrite(node, 1, None, f"{node.name}#0"))

    def _passthrough_key(self, key: str, source: fx.Node) -> None:
        units = self._new(key, list(self.layout[source.name]), self.axis[source.name], self.fold[source.name])
        self._couple(self._units(source.name), units)

    def _op_unbind(self, node: fx.Node) -> None:
        x = _first(node)
        shape, axis = _shape(x), self.axis[x.name]
        dim = _norm(int(_arg(node, 1, "dim", 0)), len(shape))
        if dim == axis:
            self._unknown(node, "unbinds the channels")
            return
        self.tuples[node.name] = shape[dim]
        for k in range(shape[dim]):
            self._passthrough_key(f"{node.name}#{k}", x)
            self.axis[f"{node.name}#{k}"] = axis - 1 if dim < axis else axis

    def _binary(self, node: fx.Node) -> None:
        out = _shape(node)
        rank = len(out)
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        tracked = [a for a in operands if self._tracked(a)]
        axes = {self.axis[a.name] + rank - len(_shape(a)) for a in tracked}
        if len(axes) != 1:
            self._unknown(node, "combines operands tracked along different dimensions")
            return
        axis = axes.pop()
        units = self._joined(
            node, [a.name for a in tracked], None, axis, "combines operands with different channel layouts"
        )
        if units is None:
            return
        for arg in operands:
            if arg in tracked:
                continue
            shape = tuple(_attr_shape(self.model, arg)) if _is_attr(arg) else _shape(arg)
            dim = axis - (
                rank - len(shape)
            )  # the operand's dimension that broadcasts against the tracked one
            if dim < 0 or shape[dim] == 1:
                continue  # constant across the channels
            param = _param_view(self.model, arg, dim)
            if param is not None and self.fold[node.name] == 1:
                self._attach(node.name, param[0], param[1], "param")
            else:
                self._anchor(units, arg)  # a per-channel value the pass cannot slice: the channels stay

    def _op_masked_fill(self, node: fx.Node) -> None:
        """``scores.masked_fill(mask, value)`` (GPT-2's causal mask over the attention scores): element-
        wise on ``scores``; a mask that is the same for every channel (it broadcasts over the tracked
        dimension) leaves the mapping alone, one that differs per channel keeps them."""
        x, mask, value = _first(node), _arg(node, 1, "mask"), _arg(node, 2, "value")
        if self._tracked(mask) or self._tracked(value):
            self._unknown(node, "masks with values computed from channels")
            return
        self._passthrough(node, x)
        if isinstance(mask, fx.Node):
            rank, shape = len(_shape(node)), _shape_of(self.model, mask)
            dim = self.axis[x.name] - (rank - len(shape))
            if dim >= 0 and shape[dim] != 1:
                self._anchor(self._units(node.name), mask)

    def _op_matmul(self, node: fx.Node) -> None:
        """Batched matrix products (attention: ``q @ k.transpose(-2, -1)``, ``scores @ v``): a tracked
        batch dimension (the heads) is shared by both operands and the result; a tracked contracted
        dimension is summed away (both operands lose it together); rows and columns go to the result."""
        a, b = node.args[0], node.args[1]
        if not isinstance(a, fx.Node) or not isinstance(b, fx.Node):
            self._unknown(node, "multiplies operands the pass cannot follow")
            return
        ra, rb, rank = len(_shape(a)), len(_shape(b)), len(_shape(node))
        if ra < 2 or rb < 2:
            self._unknown(node, "is a matrix-vector product")
            return
        result: set[int] = set()
        for value, r, keep in ((a, ra, ra - 2), (b, rb, rb - 1)):
            if not self._tracked(value):
                continue
            axis = self.axis[value.name]
            if axis == keep:
                result.add(rank - 2 if value is a else rank - 1)
            elif axis < r - 2:
                result.add(axis + rank - r)
            else:
                other, other_contract = (b, rb - 2) if value is a else (a, ra - 1)
                units = self._at(other, other_contract) if not _is_attr(other) else None
                if (
                    units is None
                    or (self._tracked(other) and self.fold[other.name] != 1)
                    or self.fold[value.name] != 1
                ):
                    self._unknown(node, "contracts channels with an operand the pass cannot follow")
                    return
                key = other.name if self._tracked(other) else f"{other.name}@{other_contract}"
                if self.layout[key] != self.layout[value.name]:
                    self._unknown(node, "contracts operands with different channel layouts")
                    return
                self._couple(self._units(value.name), units)
        if not result:
            return  # the tracked indices were summed away: the result is free
        if len(result) != 1:
            self._unknown(node, "would track two dimensions of its result")
            return
        axis = result.pop()
        tracked = [
            v for v, r in ((a, ra), (b, rb)) if self._tracked(v) and self.axis[v.name] + rank - r == axis
        ]
        units = self._joined(
            node, [v.name for v in tracked], None, axis, "multiplies operands with different channel layouts"
        )
        if units is None:
            return
        for value, r in ((a, ra), (b, rb)):  # an untracked operand with its own batch of heads keeps them
            dim = axis - (rank - r)
            if value not in tracked and 0 <= dim < r - 2 and _shape(value)[dim] != 1:
                self._anchor(units, value)

    _op_bmm = _op_matmul

    def _op_scaled_dot_product_attention(self, node: fx.Node) -> None:
        """Heads are batch dimensions of q, k and v (``(B, H, L, D)``): a tracked head dimension couples
        q, k, v and the result. The head size (the last dimension) would change the default scale."""
        q, k, v = (_arg(node, i, key) for i, key in enumerate(("query", "key", "value")))
        mask = _arg(node, 3, "attn_mask")
        rank = len(_shape(node))
        if self._tracked(mask):
            self._unknown(node, "takes an attention mask computed from channels")
            return
        tracked = [t for t in (q, k, v) if self._tracked(t)]
        axes = {self.axis[t.name] + rank - len(_shape(t)) for t in tracked}
        if len(axes) != 1 or (axis := next(iter(axes))) >= rank - 2:
            self._unknown(node, "attends over tracked features, not whole heads")
            return
        units = self._joined(
            node,
            [t.name for t in tracked],
            None,
            axis,
            "attends with q, k, v whose heads are laid out differently",
        )
        if units is None:
            return
        for t in (q, k, v):
            if isinstance(t, fx.Node) and t not in tracked:
                dim = axis - (rank - len(_shape(t)))
                if dim >= 0 and _shape(t)[dim] != 1:
                    self._anchor(units, t)

    def _op_getitem(self, node: fx.Node) -> None:
        x = _first(node)
        index = node.args[1]
        if isinstance(index, int) and f"{x.name}#{index}" in self.layout:  # a piece of a split
            key = f"{x.name}#{index}"
            units = self._new(node, list(self.layout[key]), self.axis[key], self.fold[key])
            self._couple(self._units(key), units)
            return
        if "shape" not in x.meta and isinstance(index, int):  # (values, indices) of a pooling op
            self._passthrough(node, x)
            return
        axis, rank = self.axis[x.name], len(_shape(x))
        entries = list(index) if isinstance(index, tuple) else [index]
        if any(e is Ellipsis for e in entries):
            at = entries.index(Ellipsis)
            used = sum(e is not None and e is not Ellipsis for e in entries)
            entries[at : at + 1] = [slice(None)] * (rank - used)
        dim = out = 0
        moved = None
        for e in entries:
            if e is None:
                out += 1
                continue
            if dim == axis:
                if e != slice(None, None, None):
                    self._unknown(node, "indexes into the channels")
                    return
                moved = out
            if isinstance(e, int):
                dim += 1
            elif isinstance(e, slice):
                dim, out = dim + 1, out + 1
            else:
                self._unknown(node, "indexes with a tensor")
                return
        self._passthrough(node, x, moved if moved is not None else out + axis - dim)

    def _couple_shared_slices(self) -> None:
        """Units owning the same slice of a tensor go together; overlapping unequal slices are kept."""
        by_axis: dict[tuple[str, int], list[tuple[int, int, Unit]]] = defaultdict(list)
        for unit, owned in self.slices.items():
            for s in owned:
                by_axis[(s.tensor, s.axis)].append((s.start, s.stop, unit))
        for (tensor, axis), entries in by_axis.items():
            entries.sort()
            reach, widest = -1, None  # the furthest stop so far, and the unit that reaches it
            for k, (start, stop, unit) in enumerate(entries):
                previous = entries[k - 1] if k else None
                if previous is not None and previous[:2] == (start, stop):
                    self.graph.add_edge(previous[2], unit)
                elif start < reach and widest is not None:
                    self._pin([widest, unit], f"tensor {tensor}: overlapping channel slices on axis {axis}")
                if stop > reach:
                    reach, widest = stop, unit

    # -- groups ------------------------------------------------------------------------------------

    def groups(self) -> list[Group]:
        """Every removable or blocked group, in graph order; pinned components are not groups."""
        out = []
        order = {name: i for i, name in enumerate(self.layout)}
        for component in nx.connected_components(self.graph):
            if _PIN in component:
                continue
            units = sorted((u for u in component if u[0] in self.layout), key=lambda u: (order[u[0]], u[1]))
            sources = [self.sources[u] for u in units if u in self.sources]
            if not sources:
                continue
            blocked = [self.unknown[u] for u in component if u in self.unknown]
            slices = [s for u in units for s in self.slices.get(u, [])]
            out.append(Group(units, slices, sources, min(blocked) if blocked else ""))
        out.sort(key=lambda g: (order[g.units[0][0]], g.units[0][1]))
        return out


# -------------------------------------------------------------------------------------------- helpers


def _op(node: fx.Node) -> str:
    """The name an op is dispatched by: its vocabulary name, or an ATen operator's base name (the
    in-place variant ``hardswish_`` is ``hardswish``)."""
    name = FUNCTION_NAMES.get(node.target)  # type: ignore[arg-type]
    if name is not None:
        return name
    if isinstance(node.target, torch._ops.OpOverload):
        base = node.target._schema.name.partition("::")[2]
        return base[:-1] if base.endswith("_") and not base.endswith("__") else base
    return str(node.target)


def _describe(node: fx.Node) -> str:
    """The op as the user reads it in a message: ``getitem``, ``aten::select.int``."""
    return FUNCTION_NAMES.get(node.target) or aten_name(node.target) or str(node.target)  # type: ignore[arg-type]


def _runs(before: tuple[int, ...], after: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """The dimensions of a view matched in runs of equal element counts, or None if they do not match."""
    runs, i, j = [], 0, 0
    while i < len(before) or j < len(after):
        ins, outs, left, right = [], [], 1, 1
        if i < len(before):
            ins.append(i)
            left *= before[i]
            i += 1
        if j < len(after):
            outs.append(j)
            right *= after[j]
            j += 1
        while left != right:
            if left < right and i < len(before):
                ins.append(i)
                left *= before[i]
                i += 1
            elif right < left and j < len(after):
                outs.append(j)
                right *= after[j]
                j += 1
            else:
                return None
        runs.append((ins, outs))
    return runs


def _indexed_later(node: fx.Node, dim: int, depth: int = 8) -> bool:
    """Whether dimension ``dim`` of ``node``'s result is taken apart by index downstream (through
    unsqueeze/transpose/squeeze/permute): MultiheadAttention's packed projection ``(..., 3, E)``,
    whose q, k and v are then selected."""
    if depth == 0:
        return False
    for user in node.users:
        if user.op != "call_function" or not user.args or user.args[0] is not node:
            continue
        name, rank = _op(user), len(_shape(node))
        nxt: int | None = None
        if name in ("select", "unbind"):
            if _norm(int(_arg(user, 1, "dim", 0)), rank) == dim:
                return True
        elif name == "getitem" and isinstance(user.args[1], int) and dim == 0:
            return True
        elif name == "unsqueeze":
            at = _norm(int(user.args[1]), rank + 1)
            nxt = dim + 1 if at <= dim else dim
        elif name == "transpose":
            a, b = (_norm(int(d), rank) for d in user.args[1:3])
            nxt = b if dim == a else a if dim == b else dim
        elif name == "permute":
            nxt = [_norm(int(d), rank) for d in user.args[1]].index(dim)
        elif name == "squeeze" and isinstance(user.args[1] if len(user.args) > 1 else None, int):
            at = _norm(int(user.args[1]), rank)
            if at != dim:
                nxt = dim - 1 if at < dim and _shape(node)[at] == 1 else dim
        if nxt is not None and _indexed_later(user, nxt, depth - 1):
            return True
    return False


def _param_view(model: CompressedModel, value: fx.Node, dim: int) -> tuple[fx.Node, int] | None:
    """The stored tensor and its axis behind dimension ``dim`` of ``value``, when ``value`` is that
    tensor itself or a chain of unsqueeze/None-indexing of a 1-D one (``w[:, None, None]``)."""
    if _is_attr(value):
        return value, dim
    node = value
    while (
        node.op == "call_function"
        and _op(node) in ("unsqueeze", "getitem")
        and isinstance(node.args[0], fx.Node)
    ):
        if _op(node) == "getitem":
            index = node.args[1]
            entries = index if isinstance(index, tuple) else (index,)
            if not all(e is None or e == slice(None, None, None) for e in entries):
                return None
        node = node.args[0]
    if not _is_attr(node) or len(_attr_shape(model, node)) != 1:
        return None
    shape = _shape(value)
    if shape[dim] != _attr_shape(model, node)[0] or math.prod(shape) != shape[dim]:
        return None
    return node, 0


def _flat_nodes(value: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(value, out.append)
    return out


def _first(node: fx.Node) -> fx.Node:
    value = node.args[0] if node.args else next(iter(node.kwargs.values()))
    assert isinstance(value, fx.Node)
    return value


def _arg(node: fx.Node, position: int, key: str, default: Any = None) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(key, default)


def _is_attr(value: Any) -> bool:
    return isinstance(value, fx.Node) and value.op == "get_attr"


def _attr_shape(model: CompressedModel, node: fx.Node) -> tuple[int, ...]:
    return model.tensors[str(node.target)].shape


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta.get("shape", ()))


def _shape_of(model: CompressedModel, value: fx.Node) -> tuple[int, ...]:
    """The shape of a stored tensor (get_attr) or of a computed value."""
    return tuple(_attr_shape(model, value)) if _is_attr(value) else _shape(value)


def _norm(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def filter_norms(
    model: CompressedModel, criterion: str, axes: dict[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """L1 or L2 norm of every filter of every conv/linear weight: its rows, or the dimension ``axes``
    names (the columns of a ``Conv1D`` weight stored (in, out))."""
    out = {}
    for state in model.weights():
        axis = (axes or {}).get(state.name, 0)
        rows = state.decode().movedim(axis, 0).reshape(state.shape[axis], -1)
        out[state.name] = rows.abs().sum(1) if criterion == "l1" else rows.pow(2).sum(1).sqrt()
    return out


def remove_groups(model: CompressedModel, analysis: ChannelGraph, groups: list[Group]) -> list[str]:
    """Physically remove ``groups``: slice every tensor, update op arguments, re-propagate shapes.

    Returns the names of the tensors that changed. The caller verifies the IR.
    """
    from sqc.frontend.trace import example_inputs, propagate_shapes

    drop: dict[tuple[str, int], set[int]] = defaultdict(set)
    for group in groups:
        for s in group.slices:
            drop[(s.tensor, s.axis)].update(range(s.start, s.stop))
    removed_units: dict[str, int] = defaultdict(int)
    for group in groups:
        for value, index in group.units:
            removed_units[value] += analysis.layout[value][index]
    by_tensor: dict[str, dict[int, set[int]]] = defaultdict(dict)
    for (tensor, axis), indices in drop.items():
        by_tensor[tensor][axis] = indices
    for name, axes in by_tensor.items():
        state = model.tensors[name]
        if state.codes is not None:
            raise PipelineError(
                f"prune-channels: tensor {name} holds codes; run prune-channels before share/quant"
            )
        values, mask = state.decode(), state.mask
        for axis, indices in sorted(axes.items()):
            keep = torch.tensor([i for i in range(state.shape[axis]) if i not in indices], dtype=torch.long)
            values = values.index_select(axis, keep)
            mask = mask.index_select(axis, keep) if mask is not None else None
        model.release(name)
        state.shape = tuple(values.shape)
        state.mask = None
        state.set_dense(values.contiguous())
        state.set_mask(mask)
    model.sync(list(by_tensor))
    gm = model.graph_module
    for rw in analysis.rewrites:
        if not removed_units.get(rw.value):
            continue
        new = -1 if rw.infer else rw.fold * (sum(analysis.layout[rw.value]) - removed_units[rw.value])
        args = list(rw.node.args)
        while len(args) <= rw.position:  # a conv's groups after defaulted stride, padding, dilation
            args.append({2: None, 3: 1, 4: 0, 5: 1}.get(len(args)))
        if rw.index is None:
            args[rw.position] = new
        else:
            entries = list(args[rw.position])
            entries[rw.index] = new
            args[rw.position] = entries if isinstance(args[rw.position], list) else tuple(entries)
        rw.node.args = tuple(args)
    gm.recompile()
    propagate_shapes(gm, example_inputs(model.inputs))
    return list(by_tensor)


# ----------------------------------------------------------------------------------------------- pass


@dataclass(frozen=True)
class PruneChannels(Pass):
    """Remove whole filters and every tensor slice that depends on them (structured pruning).

    Channels are grouped by a dependency analysis over the graph (residual adds, concats, BatchNorm
    and LayerNorm, flatten before a Linear, depthwise convs, squeeze-excitation gates, MLP hidden units,
    attention heads with q/k/v/out; see ``passes/prune_channels.py``) and a group is removed
    everywhere at once: the model really gets smaller and faster, with no sparse storage. In each
    channel space (groups made by the same layers) ``ratio`` of the groups go — those whose filters
    have the smallest ``criterion`` norm summed over the group; ``per_layer=glob:ratio`` overrides
    it for spaces made by matching layers; ``scope=global`` ranks groups of all spaces together by
    norm relative to their space's mean. ``layers`` limits which layers may lose filters. Graph
    inputs and outputs keep their channels. A channel that reaches an op the pass cannot follow is
    an error naming the node; ``unknown=keep`` keeps such channels instead.

    ``target=auto`` chooses each space's ratio instead (needs --data or --eval): the metric is
    measured with the weakest ``sweep`` fractions of one space's groups removed at a time, and the
    allocator keeps the fewest parameters whose predicted drop stays within the budget (``budget``,
    or what is left of ``--tolerance``), then measures the combination and backs off until it fits.
    ``per_layer`` spaces keep their given ratio.
    """

    name = "prune-channels"
    summary = "structured pruning: remove filters, hidden units and attention heads, and what depends on them"
    conflicts = {
        "codes": "prune-channels slices float weights: run it before share/quant",
        "entropy-coded": "huffman or rans must come after every pass that changes weights",
    }

    ratio: float = 0.5
    scope: Literal["layer", "global"] = "layer"
    criterion: Literal["l1", "l2"] = "l1"
    per_layer: LayerMap = ()
    layers: str = "*"
    unknown: Literal["error", "keep"] = "error"
    target: Literal["fixed", "auto"] = "fixed"
    budget: float | None = None
    sweep: str = "0.25;0.5;0.75"

    def __post_init__(self) -> None:
        from sqc.compiler.sensitivity import parse_sweep

        check_range("ratio", self.ratio, 0.0, 0.99)
        for layer, value in self.per_layer:
            check_range(f"per_layer[{layer}]", value, 0.0, 0.99)
        parse_sweep(self.sweep, "sweep", whole=False, low=0.0, high=0.99)
        if self.budget is not None:
            check_range("budget", self.budget, 0.0, float("inf"))
            if self.target != "auto":
                raise OptionError("budget", "only applies with target=auto")
        if self.target == "auto" and self.scope == "global":
            raise OptionError(
                "scope", "target=auto chooses a ratio per channel space; scope=global does not apply"
            )

    def context_needs(self) -> frozenset[str]:
        return frozenset({"evaluate"}) if self.target == "auto" else frozenset()

    def analyse(self, model: CompressedModel) -> tuple[ChannelGraph, dict[Space, list[Group]], list[str]]:
        """The analysis, the removable groups of each space ranked by score (weakest first), and
        diagnostics; a blocked group of a selected space is an error unless ``unknown=keep``."""
        analysis = ChannelGraph(model)
        diagnostics = list(dict.fromkeys(analysis.pinned))
        spaces: dict[Space, list[Group]] = defaultdict(list)
        for group in analysis.groups():
            if not all(_layer_matches(layer, self.layers) for layer in group.space):
                continue
            if group.blocked:
                if self.unknown == "error":
                    raise PipelineError(
                        f"prune-channels: {group.blocked}; channels of {', '.join(group.space)} reach it "
                        "(exclude those layers with layers=..., or unknown=keep to leave them)"
                    )
                diagnostics.append(f"kept channels of {', '.join(group.space)}: {group.blocked}")
                continue
            spaces[group.space].append(group)
        norms = filter_norms(model, self.criterion, analysis.filter_axis)
        for groups in spaces.values():
            for group in groups:
                group.score = float(sum(norms[w][row] for w, row in group.sources))
            groups.sort(key=lambda g: g.score)  # stable: equal scores stay in graph order
        return analysis, dict(spaces), diagnostics

    def plan(self, model: CompressedModel) -> tuple[ChannelGraph, list[Group], list[str]]:
        """The analysis, the groups this configuration removes (``target=fixed``), and diagnostics."""
        analysis, spaces, diagnostics = self.analyse(model)
        chosen: list[Group] = []
        if self.scope == "layer":
            for space, ranked in spaces.items():
                chosen.extend(ranked[: _count(self._ratio(space), len(ranked))])
            return analysis, chosen, diagnostics
        pool = []
        for space, groups in spaces.items():
            mean = sum(g.score for g in groups) / len(groups) or 1.0
            pool.extend((g.score / mean, i, space, g) for i, g in enumerate(groups))
        pool.sort(key=lambda item: item[:2])
        left = {space: len(groups) for space, groups in spaces.items()}
        target = math.floor(self.ratio * len(pool) + 1e-9)
        for _, _, space, group in pool:
            if len(chosen) >= target:
                break
            if left[space] > 1:
                left[space] -= 1
                chosen.append(group)
        return analysis, chosen, diagnostics

    def _ratio(self, space: Space) -> float:
        ratio = self.ratio
        for pattern, value in self.per_layer:
            if any(_layer_matches(layer, pattern) for layer in space):
                ratio = value
        return ratio

    def _overridden(self, space: Space) -> bool:
        return any(_layer_matches(layer, pattern) for pattern, _ in self.per_layer for layer in space)

    def _auto(
        self, model: CompressedModel, ctx: PassContext, spaces: dict[Space, list[Group]]
    ) -> tuple[list[Group], dict[str, Stat], list[str]]:
        """Channel sensitivity and allocation: per space, the metric with the weakest ``sweep`` fractions
        of its groups removed (the others as they are), then
        :func:`sqc.compiler.allocation.allocate` keeps the
        fewest parameters within the budget and verifies the combination, backing off if needed.

        Removal is measured without changing shapes: zeroing a group's filters and its consumers'
        columns computes exactly what removing it computes (the tests check this), and the module is
        put back from the records after every measurement."""
        from sqc.compiler.allocation import Choice, allocate
        from sqc.compiler.sensitivity import parse_sweep, reference_metric

        sweep = parse_sweep(self.sweep, "sweep", whole=False, low=0.0, high=0.99)
        entry = ctx.evaluate(model)
        recorded = reference_metric(model)
        reference = entry if recorded is None else recorded
        spend = self.budget if self.budget is not None else max(0.0, ctx.tolerance - (reference - entry))
        fixed = [
            g
            for space, r in spaces.items()
            if self._overridden(space)
            for g in r[: _count(self._ratio(space), len(r))]
        ]
        auto = {",".join(space): ranked for space, ranked in spaces.items() if not self._overridden(space)}

        def metric_without(groups: list[Group]) -> float:
            names = _zero(model, groups)
            try:
                return ctx.evaluate(model)
            finally:
                model.sync(names)

        curves: dict[str, list[Choice]] = {}
        for number, (key, ranked) in enumerate(auto.items(), 1):
            ctx.note(f"prune-channels: sensitivity of {key}", number, len(auto))
            total = sum(_elements(model, g) for g in ranked)
            points = [Choice(0.0, 0.0, total)]
            for ratio in sweep:
                count = _count(ratio, len(ranked))
                if count > _count(points[-1].value, len(ranked)):
                    drop = entry - metric_without(ranked[:count])
                    points.append(
                        Choice(ratio, drop, total - sum(_elements(model, g) for g in ranked[:count]))
                    )
            curves[key] = points
        evaluations = rounds = 0

        def chosen_of(choice: dict[str, int]) -> list[Group]:
            picked = list(fixed)
            for key, index in choice.items():
                picked.extend(auto[key][: _count(curves[key][index].value, len(auto[key]))])
            return picked

        def measure(choice: dict[str, int]) -> float:
            nonlocal evaluations, rounds
            evaluations += 1
            rounds = rounds or 1 + sum(choice.values())  # each back-off moves one space one point back
            ctx.note("prune-channels: verifying allocation", evaluations, rounds)
            return entry - metric_without(chosen_of(choice))

        if curves:
            result = allocate(curves, spend, measure)
            chosen, measured = chosen_of(result.choice), result.measured_drop
            ratios = {key: round(value, 6) for key, value in result.values.items()}
        else:
            chosen, measured, ratios = fixed, entry - metric_without(fixed), {}
        diagnostics = [f"chosen ratio {ratio:g} for {key}" for key, ratio in ratios.items()]
        if measured > spend + 1e-12:
            diagnostics.append(
                f"budget {spend:.6g} not met: even the safest points drop the metric {measured:.6g}"
            )
        stats: dict[str, Stat] = {
            "metric_reference": reference,
            "metric_before": entry,
            "budget": spend,
            "metric_after": entry - measured,
            "verifications": evaluations,
        }
        return chosen, stats, diagnostics

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        before = {s.name: s.shape for s in model.weights()}
        params_before = sum(s.numel for s in model.tensors.values())
        flops_before, macs_before = _cost(model)
        extra: dict[str, Stat] = {}
        if self.target == "auto":
            analysis, spaces, diagnostics = self.analyse(model)
            chosen, extra, notes = self._auto(model, ctx, spaces)
            diagnostics += notes
        else:
            analysis, chosen, diagnostics = self.plan(model)
        for pattern, _ in self.per_layer:
            if not any(_layer_matches(s.layer, pattern) for s in model.weights()):
                diagnostics.append(f"per_layer entry {pattern!r} matches no layer")
        if chosen:
            remove_groups(model, analysis, chosen)
        params_after = sum(s.numel for s in model.tensors.values())
        flops_after, macs_after = _cost(model)
        layers: dict[str, dict[str, Stat]] = {}
        for name, shape in before.items():
            axis = analysis.filter_axis.get(name, 0)  # a Conv1D's filters are its columns
            after = model.tensors[name].shape
            if after[axis] != shape[axis]:
                layers[name] = {"channels_before": shape[axis], "channels_after": after[axis]}
        stats: dict[str, Stat] = {
            "groups_removed": len(chosen),
            "filters_removed": sum(len(g.sources) for g in chosen),
            "params_before": params_before,
            "params_after": params_after,
            "flops_before": flops_before,
            "flops_after": flops_after,
            "macs_before": macs_before,
            "macs_after": macs_after,
            **extra,
        }
        return PassResult(bool(chosen), stats, layers, diagnostics)


Space = tuple[str, ...]


def _cost(model: CompressedModel) -> tuple[int, int]:
    """FLOPs and MACs of the model, counted as ``sqc inspect`` counts them."""
    from sqc.ir.cost import compute

    counts = compute(model.graph_module.graph, lambda name: model.tensors[name].shape).values()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _count(ratio: float, groups: int) -> int:
    """How many of a space's ``groups`` a ratio removes: rounded down, and one group always stays."""
    return max(0, min(math.floor(ratio * groups + 1e-9), groups - 1))


def _elements(model: CompressedModel, group: Group) -> int:
    """Tensor elements that exist because of ``group`` (its slices; the cost allocation minimises)."""
    total = 0
    for s in group.slices:
        shape = model.tensors[s.tensor].shape
        total += (s.stop - s.start) * math.prod(shape) // shape[s.axis]
    return total


def _zero(model: CompressedModel, groups: list[Group]) -> list[str]:
    """Zero the groups' filters and consumer columns in the module only (records untouched): the same
    function as removing them. Returns the tensors to sync back."""
    touched: dict[str, torch.Tensor] = {}
    for group in groups:
        for s in group.slices:
            if s.role == "param":  # left as they are: the zeroed columns already discard the channel
                continue
            if s.tensor not in touched:
                touched[s.tensor] = model.tensors[s.tensor].decode().clone()
            touched[s.tensor].narrow(s.axis, s.start, s.stop - s.start).zero_()
    module = model.graph_module
    for name, values in touched.items():
        state = model.tensors[name]
        held = module.get_parameter(name) if state.role != "buffer" else module.get_buffer(name)
        held.data = values
    return list(touched)


def _layer_matches(layer: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(layer, pattern)
