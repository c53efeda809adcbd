"""Shape handlers: flatten, permute, transpose, indexing, slicing, expand, cat, pad."""

from __future__ import annotations

import math

import numpy as np
from torch import fx

from sqc.targets.integer import (
    Cat,
    Pad,
    Strided,
    Tensor,
    chw,
    round_half_even,
)
from sqc.targets.legalize.options import BatchAxisError
from sqc.targets.legalize.walk import (
    MAX_RANK,
    WalkBase,
    _bind,
    contiguous_strides,
    merge_dims,
)


class ShapeOps(WalkBase):
    """Shape handlers: flatten, permute, transpose, indexing, slicing, expand, cat, pad."""

    def op_flatten(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        shape = self.calib.shapes.get(node.name)
        if shape is None or math.prod(shape) != x.numel:
            raise self.fail(node, "reshapes across the batch dimension are not supported")
        self.new(node, x.fmt, slot=x.slot)

    op_reshape = op_flatten

    op_squeeze = op_flatten

    op_unsqueeze = op_flatten

    def strided(self, node: fx.Node, x: Tensor, dims: list[int], strides: list[int], offset: int) -> None:
        """Output ``node`` as the index walk (dims, strides, offset) over ``x``: an alias of x's slot when
        the walk is x itself in order, else a :class:`Strided` op."""
        shape = self.calib.shapes.get(node.name)
        if shape is None or math.prod(shape) != math.prod(dims):
            raise self.fail(node, f"output {shape} does not match the index walk {tuple(dims)}")
        merged, steps = merge_dims(dims, strides)
        if offset == 0 and steps == (1,) and merged[0] == x.numel:
            self.new(node, x.fmt, slot=x.slot)
            return
        if len(merged) > MAX_RANK:
            raise self.fail(
                node, f"the index walk has {len(merged)} dimensions after merging (max {MAX_RANK})"
            )
        y = self.new(node, x.fmt)
        self.ops.append(Strided(node.name, [x.name], y.name, merged, steps, offset))

    def op_permute(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        order = node.args[1] if len(node.args) > 1 else node.kwargs.get("dims")
        order = list(order) if isinstance(order, (list, tuple)) else list(node.args[1:])
        rank = len(x.shape) + self.lead
        if len(order) != rank or (self.lead and int(order[0]) % rank != 0):
            raise self.fail(node, "permutations that move the batch axis are not supported", BatchAxisError)
        axes = [self._axis(node, x, d) for d in order[self.lead :]]
        st = contiguous_strides(x.shape)
        self.strided(node, x, [x.shape[a] for a in axes], [st[a] for a in axes], 0)

    def op_transpose(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        a, b = (self._axis(node, x, d) for d in node.args[1:3])
        axes = list(range(len(x.shape)))
        axes[a], axes[b] = axes[b], axes[a]
        st = contiguous_strides(x.shape)
        self.strided(node, x, [x.shape[i] for i in axes], [st[i] for i in axes], 0)

    def op_getitem(self, node: fx.Node, op: str) -> None:
        """Basic indexing: integers, slices (any positive step), None and Ellipsis; the batch axis is
        taken whole."""
        x = self.tensor(node, node.args[0])
        index = node.args[1]
        items = list(index) if isinstance(index, tuple) else [index]
        if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in items):
            raise self.fail(
                node, f"indexing with {index!r}: only integers, slices, None and ... are supported"
            )
        consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items[at : at + 1] = [slice(None)] * (len(x.shape) + self.lead - consumed)
        items += [slice(None)] * (len(x.shape) + self.lead - sum(1 for i in items if i is not None))
        first = next(i for i in items if i is not None)
        if self.lead and (first != slice(None) or items[0] is None):
            raise self.fail(node, "indexing the batch axis is not supported", BatchAxisError)
        sizes = [-1] * self.lead + list(x.shape)
        steps = [0] * self.lead + list(contiguous_strides(x.shape))
        dims: list[int] = []
        strides: list[int] = []
        offset, axis = 0, 0
        for item in items:
            if item is None:
                dims.append(1)
                strides.append(0)
                continue
            if axis >= self.lead:
                n, st = sizes[axis], steps[axis]
                if isinstance(item, int):
                    if not -n <= item < n:
                        raise self.fail(node, f"index {item} out of range for size {n}")
                    offset += (item % n) * st
                else:
                    start, stop, step = item.indices(n)
                    if step <= 0:
                        raise self.fail(node, "slices with a non-positive step are not supported")
                    offset += start * st
                    dims.append(len(range(start, stop, step)))
                    strides.append(st * step)
            axis += 1
        self.strided(node, x, dims, strides, offset)

    def op_slice(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        args = [*node.args[1:], None, None, None, None][:4]
        dim, start, end, step = (args[0] or 0), args[1], args[2], (args[3] or 1)
        if self.lead and int(dim) % (len(x.shape) + 1) == 0:  # export slices the batch axis whole
            if start not in (None, 0) or step != 1 or not (end is None or int(end) >= 1 << 62):
                raise self.fail(node, "slicing the batch axis is not supported", BatchAxisError)
            self.new(node, x.fmt, slot=x.slot)
            return
        axis = self._axis(node, x, dim)
        end = None if end is not None and int(end) >= 1 << 62 else end
        self._index_axis(node, x, axis, slice(start, end, step))

    def op_select(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        self._index_axis(node, x, self._axis(node, x, node.args[1]), int(node.args[2]))

    def _index_axis(self, node: fx.Node, x: Tensor, axis: int, item: int | slice) -> None:
        n, st = x.shape[axis], contiguous_strides(x.shape)
        dims, strides = list(x.shape), list(st)
        if isinstance(item, int):
            if not -n <= item < n:
                raise self.fail(node, f"index {item} out of range for size {n}")
            offset = (item % n) * st[axis]
            del dims[axis], strides[axis]
        else:
            start, stop, step = item.indices(n)
            if step <= 0:
                raise self.fail(node, "slices with a non-positive step are not supported")
            offset = start * st[axis]
            dims[axis] = len(range(start, stop, step))
            strides[axis] = st[axis] * step
        self.strided(node, x, dims, strides, offset)

    def op_expand(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        shape = self.calib.shapes.get(node.name)
        if shape is None:
            raise self.fail(node, "no tensor value seen during calibration")
        self.strided(node, x, list(shape), self._broadcast_strides(node, x, tuple(shape)), 0)

    def op_cat(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        inputs = [self.tensor(node, t) for t in a["tensors"]]
        axis = self._axis(node, inputs[0], a["dim"])
        fmt = self.fmt(node)
        outer = math.prod(inputs[0].shape[:axis])
        inner = [math.prod(t.shape[axis:]) for t in inputs]
        shifts = [t.fmt.frac - fmt.frac for t in inputs]
        self._check_shifts(node, np.array(shifts))
        y = self.new(node, fmt)
        self.ops.append(Cat(node.name, [t.name for t in inputs], y.name, outer, inner, shifts))

    def op_pad(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        pads = [int(p) for p in a["pad"]]
        if a["mode"] != "constant" or len(pads) not in (2, 4) or min(pads) < 0 or len(x.shape) not in (2, 3):
            raise self.fail(
                node, "only non-negative constant padding of the last one or two axes is supported"
            )
        left, right = pads[0], pads[1]
        top, bottom = (pads[2], pads[3]) if len(pads) == 4 else (0, 0)
        if len(x.shape) == 2 and len(pads) == 4:
            raise self.fail(node, "padding the channel axis is not supported")
        value = float(a["value"] or 0.0)
        fill = max(x.fmt.qmin, min(x.fmt.qmax, round_half_even(value * 2.0**x.fmt.frac)))
        c, h, w = chw(x.shape)
        y = self.new(node, x.fmt)
        self.ops.append(Pad(node.name, [x.name], y.name, c, (h, w), (top, bottom, left, right), fill))
