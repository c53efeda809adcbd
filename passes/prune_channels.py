"""``prune-channels``: structured pruning that really removes filters, and every slice that depends on them.

Unstructured pruning leaves the dense shapes in place: the model is only smaller once it is stored
sparse, and no faster on ordinary kernels. Removing a whole filter makes every tensor that touches its
channel smaller — but a channel rarely belongs to one layer. A residual add ties the channels of every
block in a stage together, a concat (SqueezeNet's Fire expand layers) maps slices of its output back to
the branches that made them, a flatten before a Linear turns one channel into a block of input features.
Getting any of that wrong gives a model of the right shape that computes something else, so the pass
first builds a channel-dependency graph (networkx) over the whole IR and only removes what it can follow.

The graph has one vertex per *channel unit* of every value: a contiguous run of indices along dim 1
(one channel of a conv output; after ``flatten(x, 1)`` the H*W features that came from it). Edges
couple units that must go together: a unit of an op's output with the unit of its input it comes from
(activations, pooling, BatchNorm, depthwise convs, flatten, reshape), the operands of an element-wise
add/mul, a concat's output slice with the input it came from. Each unit lists the tensor slices that
exist because of it — a producer's filter row and bias entry, BatchNorm statistics and affine entries,
a consumer's weight columns, per-channel parameters — and units touching the same slice of a tensor
(a weight used twice) are coupled too. A connected component is a *group*: removed together or not
at all. Components that reach a graph input or output, a channel-mixing op (softmax or a reduction
over channels, a grouped conv), or an op the pass does not understand are kept; the last is refused
with the node's name unless ``unknown=keep``.

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

from sqc.errors import PipelineError
from sqc.ir import CompressedModel
from sqc.ops import FUNCTION_NAMES
from sqc.pass_base import LayerMap, OptionError, Pass, PassContext, PassResult, Stat, check_range

Unit = tuple[str, int]
"""A channel unit: (value node name, index of the unit along dim 1)."""
_PIN: Unit = ("#pin", 0)
SliceRole = Literal["out", "in", "param"]

_ELEMENTWISE = frozenset(
    {"relu", "relu6", "leaky_relu", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "neg"}
)
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
_BINARY = frozenset({"add", "sub", "mul", "truediv", "floordiv"})


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


@dataclass
class ChannelGraph:
    """The channel-dependency analysis of one IR (see the module docstring)."""

    model: CompressedModel
    graph: nx.Graph = field(default_factory=nx.Graph)
    layout: dict[str, list[int]] = field(default_factory=dict)
    slices: dict[Unit, list[Slice]] = field(default_factory=lambda: defaultdict(list))
    sources: dict[Unit, tuple[str, int]] = field(default_factory=dict)
    unknown: dict[Unit, str] = field(default_factory=dict)
    pinned: list[str] = field(default_factory=list)
    rewrites: list[tuple[fx.Node, int, str]] = field(default_factory=list)
    """(node, argument position, value) pairs to update after removal: a depthwise conv's ``groups``
    and a reshape's hard-coded channel count become the new width of that value's dim 1."""

    def __post_init__(self) -> None:
        self.graph.add_node(_PIN)
        for node in self.model.graph_module.graph.nodes:
            self._visit(node)
        self._couple_shared_slices()

    # -- building ----------------------------------------------------------------------------------

    def _units(self, name: str) -> list[Unit]:
        return [(name, i) for i in range(len(self.layout[name]))]

    def _offsets(self, name: str) -> list[tuple[int, int]]:
        out, start = [], 0
        for size in self.layout[name]:
            out.append((start, start + size))
            start += size
        return out

    def _new(self, node: fx.Node, sizes: list[int]) -> list[Unit]:
        self.layout[node.name] = sizes
        units = self._units(node.name)
        self.graph.add_nodes_from(units)
        return units

    def _couple(self, a: Iterable[Unit], b: Iterable[Unit]) -> None:
        self.graph.add_edges_from(zip(a, b, strict=True))

    def _pin(self, units: Iterable[Unit], why: str | None = None) -> None:
        units = list(units)
        self.graph.add_edges_from((_PIN, u) for u in units)
        if why and units:
            self.pinned.append(why)

    def _passthrough(self, node: fx.Node, source: fx.Node) -> None:
        self._couple(self._units(source.name), self._new(node, list(self.layout[source.name])))

    def _attach(self, value: str, tensor: fx.Node | None, axis: int, role: SliceRole) -> None:
        """Every unit of ``value`` owns its slice of ``tensor`` along ``axis`` (a get_attr node)."""
        if tensor is None:
            return
        for unit, (start, stop) in zip(self._units(value), self._offsets(value), strict=True):
            self.slices[unit].append(Slice(str(tensor.target), axis, start, stop, role))

    def _unknown(self, node: fx.Node, reason: str) -> None:
        """An op whose channel mapping the pass cannot follow: everything it touches is one blocked group."""
        marker: Unit = ("#unknown", len(self.unknown))
        self.unknown[marker] = f"node {node.name} ({_op(node)}) {reason}"
        self.graph.add_node(marker)
        for arg in _activations(node, self.layout):
            self.graph.add_edges_from((marker, u) for u in self._units(arg.name))
        shape = node.meta.get("shape")
        if shape is not None and len(shape) >= 2:
            self.graph.add_edges_from((marker, u) for u in self._new(node, [1] * shape[1]))

    def _visit(self, node: fx.Node) -> None:
        shape = node.meta.get("shape")
        if node.op == "placeholder":
            if shape is not None and len(shape) >= 2:
                self._pin(self._new(node, [1] * shape[1]))
            return
        if node.op == "output":
            for arg in _flat_nodes(node.args):
                if arg.name in self.layout:
                    self._pin(self._units(arg.name))
            return
        if node.op != "call_function":
            return  # get_attr (parameters, handled by their consumers) and x.size() (an int)
        acts = _activations(node, self.layout)
        if not acts:
            if shape is not None and len(shape) >= 2:
                self._pin(self._new(node, [1] * shape[1]))  # computed from constants only
            return
        name = _op(node)
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
        handler(node)

    # -- ops ---------------------------------------------------------------------------------------

    def _elementwise(self, node: fx.Node) -> None:
        self._passthrough(node, _first(node))

    def _pool(self, node: fx.Node) -> None:
        x = _first(node)
        if len(_shape(x)) < 3:
            self._unknown(node, "pools a tensor without spatial dimensions")
            return
        self._passthrough(node, x)  # with return_indices the tuple carries the layout to its getitem

    def _conv(self, node: fx.Node) -> None:
        x, weight, bias = _first(node), _arg(node, 1, "weight"), _arg(node, 2, "bias")
        groups = int(_arg(node, 6, "groups", 1))
        if not _is_attr(weight):
            self._unknown(node, "convolves with a computed weight")
            return
        out_channels, in_channels = _shape(node)[1], _shape(x)[1]
        if groups == 1:
            self._attach(x.name, weight, 1, "in")
            units = self._new(node, [1] * out_channels)
            for j, unit in enumerate(units):
                self.slices[unit].append(Slice(str(weight.target), 0, j, j + 1, "out"))
                if _is_attr(bias):
                    self.slices[unit].append(Slice(str(bias.target), 0, j, j + 1, "out"))
                self.sources[unit] = (str(weight.target), j)
            return
        if groups == in_channels and all(size == 1 for size in self.layout[x.name]):
            # depthwise: channel c of the input makes channels c*m..c*m+m-1 of the output
            multiplier = out_channels // in_channels
            self._couple(self._units(x.name), self._new(node, [multiplier] * in_channels))
            self._attach(node.name, weight, 0, "param")
            self._attach(node.name, bias if _is_attr(bias) else None, 0, "param")
            self.rewrites.append((node, 6, x.name))
            return
        # a grouped conv: removing one input channel would unbalance its group
        self._pin(self._units(x.name), f"node {node.name}: grouped conv (groups={groups}) keeps its channels")
        self._pin(self._new(node, [1] * out_channels))

    _op_conv1d = _conv
    _op_conv2d = _conv

    def _op_linear(self, node: fx.Node) -> None:
        x, weight, bias = _first(node), _arg(node, 1, "weight"), _arg(node, 2, "bias")
        if len(_shape(x)) != 2 or not _is_attr(weight):
            self._unknown(node, "is a linear layer on a tensor that is not (batch, features)")
            return
        self._attach(x.name, weight, 1, "in")
        units = self._new(node, [1] * _shape(node)[1])
        for j, unit in enumerate(units):
            self.slices[unit].append(Slice(str(weight.target), 0, j, j + 1, "out"))
            if _is_attr(bias):
                self.slices[unit].append(Slice(str(bias.target), 0, j, j + 1, "out"))
            self.sources[unit] = (str(weight.target), j)

    def _op_batch_norm(self, node: fx.Node) -> None:
        x = _first(node)
        self._passthrough(node, x)
        for position, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
            tensor = _arg(node, position, key)
            if _is_attr(tensor):
                self._attach(node.name, tensor, 0, "param")

    def _op_prelu(self, node: fx.Node) -> None:
        self._passthrough(node, _first(node))
        weight = _arg(node, 1, "weight")
        if _is_attr(weight) and math.prod(_attr_shape(self.model, weight)) > 1:
            self._attach(node.name, weight, 0, "param")

    def _mixing(self, node: fx.Node, what: str) -> None:
        for arg in _activations(node, self.layout):
            self._pin(self._units(arg.name), f"node {node.name}: {what} keeps its input channels")
        shape = node.meta.get("shape")
        if shape is not None and len(shape) >= 2:
            self._pin(self._new(node, [1] * shape[1]))

    def _softmax(self, node: fx.Node) -> None:
        x = _first(node)
        dim = _arg(node, 1, "dim")
        if dim is None or _norm(int(dim), len(_shape(x))) == 1:
            self._mixing(node, f"{_op(node)} over channels")
        else:
            self._passthrough(node, x)

    _op_softmax = _softmax
    _op_log_softmax = _softmax

    def _reduce(self, node: fx.Node) -> None:
        x = _first(node)
        rank = len(_shape(x))
        dims = _arg(node, 1, "dim")
        keepdim = bool(_arg(node, 2, "keepdim", False))
        if dims is None:
            self._mixing(node, f"{_op(node)} over all dimensions")
            return
        dims = [_norm(int(d), rank) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if 1 in dims or 0 in dims:
            self._mixing(node, f"{_op(node)} over the batch or channel dimension")
        elif len(_shape(node)) >= 2 and (keepdim or min(dims) >= 2):
            self._passthrough(node, x)
        else:
            self._unknown(node, "reduces to a shape the pass cannot map")

    _op_mean = _reduce
    _op_sum = _reduce

    def _op_flatten(self, node: fx.Node) -> None:
        x = _first(node)
        rank = len(_shape(x))
        start = _norm(int(_arg(node, 1, "start_dim", 0)), rank)
        end = _norm(int(_arg(node, 2, "end_dim", -1)), rank)
        if start >= 2 or end <= start:
            self._passthrough(node, x)
        elif start == 1:  # one channel becomes a block of prod(shape[2:end+1]) features
            block = math.prod(_shape(x)[2 : end + 1])
            self._couple(self._units(x.name), self._new(node, [s * block for s in self.layout[x.name]]))
        else:
            self._unknown(node, "flattens the batch dimension into the channels")

    def _op_reshape(self, node: fx.Node) -> None:
        x = _first(node)
        before, after = _shape(x), _shape(node)
        target = _arg(node, 1, "shape")
        if (
            len(before) >= 2
            and len(after) >= 2
            and before[0] == after[0]
            and isinstance(target, (list, tuple))
            and len(target) == len(after)
        ):
            if after[1] == before[1]:  # the channels stay, the rest is reshaped
                self._passthrough(node, x)
                self._rewrite_reshape(node, target)
                return
            if len(after) == 2 and after[1] == math.prod(before[1:]):  # a flatten
                block = math.prod(before[2:])
                self._couple(self._units(x.name), self._new(node, [s * block for s in self.layout[x.name]]))
                self._rewrite_reshape(node, target)
                return
        self._unknown(node, f"reshapes {tuple(before)} to {tuple(after)} across the channels")

    def _rewrite_reshape(self, node: fx.Node, target: Any) -> None:
        if isinstance(target[1], int) and target[1] != -1:
            self.rewrites.append((node, 1, node.name))  # a hard-coded width: set to the new one

    def _op_permute(self, node: fx.Node) -> None:
        x = _first(node)
        dims = _arg(node, 1, "dims")
        rank = len(_shape(x))
        if isinstance(dims, (list, tuple)) and [_norm(int(d), rank) for d in dims[:2]] == [0, 1]:
            self._passthrough(node, x)
        else:
            self._unknown(node, "moves the channel dimension")

    def _op_transpose(self, node: fx.Node) -> None:
        x = _first(node)
        rank = len(_shape(x))
        dims = {_norm(int(_arg(node, 1, "dim0")), rank), _norm(int(_arg(node, 2, "dim1")), rank)}
        if dims & {0, 1}:
            self._unknown(node, "moves the channel dimension")
        else:
            self._passthrough(node, x)

    def _op_squeeze(self, node: fx.Node) -> None:
        x = _first(node)
        dim = _arg(node, 1, "dim")
        if isinstance(dim, int) and _norm(dim, len(_shape(x))) >= 2:
            self._passthrough(node, x)
        else:
            self._unknown(node, "may squeeze the batch or channel dimension")

    def _op_unsqueeze(self, node: fx.Node) -> None:
        x = _first(node)
        dim = _arg(node, 1, "dim")
        if isinstance(dim, int) and _norm(dim, len(_shape(x)) + 1) >= 2:
            self._passthrough(node, x)
        else:
            self._unknown(node, "inserts a dimension before the channels")

    def _op_pad(self, node: fx.Node) -> None:
        x = _first(node)
        pad = _arg(node, 1, "pad")
        if isinstance(pad, (list, tuple)) and len(pad) // 2 <= len(_shape(x)) - 2:
            self._passthrough(node, x)
        else:
            self._unknown(node, "pads the channel dimension")

    def _op_cat(self, node: fx.Node) -> None:
        parts = _arg(node, 0, "tensors")
        dim = _norm(int(_arg(node, 1, "dim", 0)), len(_shape(node)))
        if not isinstance(parts, (list, tuple)) or not all(
            isinstance(p, fx.Node) and p.name in self.layout for p in parts
        ):
            self._unknown(node, "concatenates values the pass cannot follow")
            return
        if dim == 1:  # output slices map back to the input that made them
            units = self._new(node, [s for p in parts for s in self.layout[p.name]])
            at = 0
            for part in parts:
                count = len(self.layout[part.name])
                self._couple(self._units(part.name), units[at : at + count])
                at += count
            return
        layouts = {tuple(self.layout[p.name]) for p in parts}
        if dim == 0 or len(layouts) != 1:
            self._unknown(node, f"concatenates along dim {dim} values with different channel layouts")
            return
        units = self._new(node, list(layouts.pop()))
        for part in parts:
            self._couple(self._units(part.name), units)

    def _binary(self, node: fx.Node) -> None:
        out = _shape(node)
        rank = len(out)
        full: list[fx.Node] = []
        params: list[tuple[fx.Node, int]] = []
        for arg in node.args[:2]:
            if not isinstance(arg, fx.Node):
                continue
            shape = tuple(_attr_shape(self.model, arg)) if _is_attr(arg) else _shape(arg)
            axis = 1 - (rank - len(shape))  # the operand's axis that broadcasts against dim 1
            if axis < 0 or shape[axis] == 1:
                continue  # constant across the channels
            if _is_attr(arg):
                params.append((arg, axis))
            elif axis == 1 and arg.name in self.layout:
                full.append(arg)
            else:
                self._unknown(node, "broadcasts an operand's other dimension against the channels")
                return
        if not full:
            self._mixing(node, "an element-wise op whose channels come from a constant")
            return
        layouts = {tuple(self.layout[a.name]) for a in full}
        if len(layouts) != 1:
            self._unknown(node, "combines operands with different channel layouts")
            return
        units = self._new(node, list(layouts.pop()))
        for arg in full:
            self._couple(self._units(arg.name), units)
        for tensor, axis in params:
            self._attach(node.name, tensor, axis, "param")

    def _op_getitem(self, node: fx.Node) -> None:
        x = _first(node)
        index = node.args[1]
        if "shape" not in x.meta and isinstance(index, int):  # (values, indices) of a pooling op
            self._passthrough(node, x)
            return
        full = slice(None, None, None)
        if isinstance(index, tuple) and len(index) >= 2 and index[0] == full and index[1] == full:
            self._passthrough(node, x)
        else:
            self._unknown(node, "indexes into the batch or channel dimension")

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
    return FUNCTION_NAMES.get(node.target, str(node.target))  # type: ignore[arg-type]


def _flat_nodes(value: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(value, out.append)
    return out


def _activations(node: fx.Node, layout: dict[str, list[int]]) -> list[fx.Node]:
    return [n for n in dict.fromkeys(_flat_nodes((node.args, node.kwargs))) if n.name in layout]


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


def _norm(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def filter_norms(model: CompressedModel, criterion: str) -> dict[str, torch.Tensor]:
    """L1 or L2 norm of every filter (row) of every conv/linear weight."""
    out = {}
    for state in model.weights():
        rows = state.decode().reshape(state.shape[0], -1)
        out[state.name] = rows.abs().sum(1) if criterion == "l1" else rows.pow(2).sum(1).sqrt()
    return out


def remove_groups(model: CompressedModel, analysis: ChannelGraph, groups: list[Group]) -> list[str]:
    """Physically remove ``groups``: slice every tensor, update op arguments, re-propagate shapes.

    Returns the names of the tensors that changed. The caller verifies the IR.
    """
    from sqc.frontend import example_inputs, propagate_shapes

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
    for node, position, value in analysis.rewrites:
        if not removed_units.get(value):
            continue
        new = sum(analysis.layout[value]) - removed_units[value]
        args = list(node.args)
        if position == 6:  # a depthwise conv's groups
            while len(args) < 7:
                args.append({3: 1, 4: 0, 5: 1}.get(len(args)))
            args[6] = new
        else:  # a reshape's target shape: its dim-1 entry
            target = list(args[1])
            target[1] = new
            args[1] = tuple(target)
        node.args = tuple(args)
    gm.recompile()
    propagate_shapes(gm, example_inputs(model.inputs))
    return list(by_tensor)


# ----------------------------------------------------------------------------------------------- pass


@dataclass(frozen=True)
class PruneChannels(Pass):
    """Remove whole filters and every tensor slice that depends on them (structured pruning).

    Channels are grouped by a dependency analysis over the graph (residual adds, concats, BatchNorm,
    flatten before a Linear, depthwise convs; see ``passes/prune_channels.py``) and a group is removed
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
    summary = "structured pruning: remove filters/channels through residual adds, concats, BN, flatten"
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
        from sqc.passes.sensitivity import parse_sweep

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
        norms = filter_norms(model, self.criterion)
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
        of its groups removed (the others as they are), then :func:`sqc.allocation.allocate` keeps the
        fewest parameters within the budget and verifies the combination, backing off if needed.

        Removal is measured without changing shapes: zeroing a group's filters and its consumers'
        columns computes exactly what removing it computes (the tests check this), and the module is
        put back from the records after every measurement."""
        from sqc.allocation import Choice, allocate
        from sqc.passes.sensitivity import parse_sweep, reference_metric

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
        for key, ranked in auto.items():
            ctx.note(f"prune-channels: sensitivity of {key}")
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
        evaluations = 0

        def chosen_of(choice: dict[str, int]) -> list[Group]:
            picked = list(fixed)
            for key, index in choice.items():
                picked.extend(auto[key][: _count(curves[key][index].value, len(auto[key]))])
            return picked

        def measure(choice: dict[str, int]) -> float:
            nonlocal evaluations
            evaluations += 1
            ctx.note(f"prune-channels: verifying allocation ({evaluations})")
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
        from sqc.inspection import flops

        before = {s.name: s.shape[0] for s in model.weights()}
        params_before = sum(s.numel for s in model.tensors.values())
        flops_before = sum(flops(model.graph_module).values())
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
        flops_after = sum(flops(model.graph_module).values())
        layers: dict[str, dict[str, Stat]] = {}
        for name, channels in before.items():
            state = model.tensors[name]
            if state.shape[0] != channels:
                layers[name] = {"channels_before": channels, "channels_after": state.shape[0]}
        stats: dict[str, Stat] = {
            "groups_removed": len(chosen),
            "filters_removed": sum(len(g.sources) for g in chosen),
            "params_before": params_before,
            "params_after": params_after,
            "flops_before": flops_before,
            "flops_after": flops_after,
            **extra,
        }
        return PassResult(bool(chosen), stats, layers, diagnostics)


Space = tuple[str, ...]


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
