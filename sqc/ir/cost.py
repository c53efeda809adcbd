"""What a graph costs to run: FLOPs and multiply-accumulates per layer, from the shapes recorded at
tracing. An IR analysis: ``inspect`` reports it, and ``prune-channels`` reports what it removed."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import fx


def flops(gm: fx.GraphModule) -> dict[str, int]:
    """FLOPs (2 x multiply-accumulates for conv/linear; one per element for the rest) per layer,
    from the shapes recorded at tracing. The layer of a node is the module its weight belongs to."""
    return {
        layer: counts[0]
        for layer, counts in compute(gm.graph, lambda name: gm.get_parameter(name).shape).items()
    }


_WEIGHTED: dict[str, tuple[int, int | None]] = {
    "conv1d": (1, None),
    "conv2d": (1, None),
    "linear": (1, None),
    "conv3d.default": (1, None),
    "addmm.default": (2, 0),  # GPT-2's Conv1D: addmm(bias, x, weight[in, out])
    "mm.default": (1, 0),
}
"""Layers whose multiply-accumulates are counted, by the target's ``__name__``: the argument holding
the stored weight, and the weight dimension each output element sums over (None: all but the first,
as for a conv kernel or a linear weight)."""


def compute(graph: fx.Graph, shape_of: Callable[[str], Sequence[int]]) -> dict[str, tuple[int, int]]:
    """(FLOPs, MACs) per layer of a graph whose nodes carry ``meta["shape"]``; ``shape_of`` gives the
    shape of a stored tensor. MACs count the multiply-accumulates of conv/linear layers only, the
    figure that structured pruning reduces and latency follows."""
    out: dict[str, tuple[int, int]] = {}
    for node in graph.nodes:
        if node.op != "call_function" or "shape" not in node.meta:
            continue
        numel = math.prod(node.meta["shape"])
        name = getattr(node.target, "__name__", "")
        position, reduced = _WEIGHTED.get(name, (1, None))
        weight = node.args[position] if len(node.args) > position else None
        macs = 0
        if isinstance(weight, fx.Node) and weight.op == "get_attr" and name in _WEIGHTED:
            shape = shape_of(str(weight.target))
            macs = numel * (math.prod(shape[1:]) if reduced is None else shape[reduced])
            count = 2 * macs
            layer = str(weight.target).rpartition(".")[0]
        else:
            count = numel
            layer = "(other ops)"
        before = out.get(layer, (0, 0))
        out[layer] = (before[0] + count, before[1] + macs)
    return out
