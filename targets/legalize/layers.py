"""Conv, linear and batch-norm handlers: weights, biases and the requantizing epilogue."""

from __future__ import annotations

import torch
from torch import fx

from sqc.targets.integer import (
    Conv,
    Linear,
)
from sqc.targets.legalize.walk import (
    WalkBase,
    _bind,
    _pair,
)


class LayerOps(WalkBase):
    """Conv, linear and batch-norm handlers: weights, biases and the requantizing epilogue."""

    def op_conv2d(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        one_d = op == "conv1d"
        x = self.tensor(node, a["input"])
        if len(x.shape) != (2 if one_d else 3):
            raise self.fail(node, f"input of per-sample shape {x.shape}")
        w = self._weights(node, a["weight"])
        padding = a["padding"]
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            else:
                raise self.fail(node, f"padding={padding!r} is not supported; give explicit padding")
        tail, requant = self._epilogue(node, w, x, self.param(node, a["bias"]))
        self.ops.append(
            Conv(
                node.name,
                [x.name],
                tail.name,
                w,
                _pair(a["stride"], one_d),
                _pair(padding, one_d, 0),
                _pair(a["dilation"], one_d),
                int(a["groups"]),
                requant,
            )
        )

    op_conv1d = op_conv2d

    def op_linear(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        w = self._weights(node, a["weight"])
        if not x.shape or x.shape[-1] != w.shape[1]:
            raise self.fail(node, f"input of per-sample shape {x.shape} for {w.shape[1]} features")
        tail, requant = self._epilogue(node, w, x, self.param(node, a["bias"]))
        rows = x.numel // w.shape[1]
        self.ops.append(Linear(node.name, [x.name], tail.name, w, requant, rows))

    def op_batch_norm(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        mean, var = self.param(node, a["running_mean"]), self.param(node, a["running_var"])
        gamma, beta = self.param(node, a["weight"]), self.param(node, a["bias"])
        assert mean is not None and var is not None
        scale = 1.0 / torch.sqrt(var + float(a["eps"]))
        scale = scale * gamma if gamma is not None else scale
        zero = scale.abs() < 1e-12
        beta_ = beta if beta is not None else torch.zeros_like(scale)
        # a zero-scale channel outputs beta whatever the input: _affine takes scale 0 as "add is the value"
        add = torch.where(zero, beta_, -mean + beta_ / torch.where(zero, torch.ones_like(scale), scale))
        scale = torch.where(zero, torch.zeros_like(scale), scale)
        channels = x.shape[0]
        self._affine(node, x, [float(s) for s in scale], [float(v) for v in add], channels)
