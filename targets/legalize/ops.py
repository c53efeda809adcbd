"""The graph walk: one handler per op, each turning an fx node into integer ops of the program (batch norm
and clamps folded into the epilogue of the conv/linear before them; every bias, multiplier, shift and
table computed), or refusing it with the node's name. The handlers live by family in the modules
mixed in here; what they share is :mod:`sqc.targets.legalize.walk`."""

from __future__ import annotations

from sqc.targets.legalize.attention import AttentionOps
from sqc.targets.legalize.elementwise import ElementwiseOps
from sqc.targets.legalize.layers import LayerOps
from sqc.targets.legalize.pooling import PoolOps
from sqc.targets.legalize.shapes import ShapeOps
from sqc.targets.legalize.walk import refuse_open_ops

__all__ = ["GraphWalk", "refuse_open_ops"]


class GraphWalk(LayerOps, ElementwiseOps, ShapeOps, PoolOps, AttentionOps):
    """The whole walk: :class:`~sqc.targets.legalize.walk.WalkBase` with every family of handlers."""
