"""Transformer handlers: integer LayerNorm, matmul of activations, attention."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import fx

from sqc.targets.integer import (
    ActFormat,
    LayerNorm,
    MatMul,
    Strided,
    Tensor,
    choose_frac,
    multiplier,
    round_half_even,
)
from sqc.targets.legalize.walk import (
    NORM_FRAC,
    WalkBase,
    contiguous_strides,
    merge_dims,
)


class AttentionOps(WalkBase):
    """Transformer handlers: integer LayerNorm, matmul of activations, attention."""

    def op_layer_norm(self, node: fx.Node, op: str) -> None:
        """LayerNorm over the last axis, integer-only (``INTEGER.md``)."""
        args = [*node.args, None, None, None, None][:5]
        x = self.tensor(node, args[0])
        shape, eps = list(args[1]), float(args[4] if args[4] is not None else 1e-5)
        cols = x.shape[-1] if x.shape else 0
        if shape != [cols]:
            raise self.fail(node, f"normalized shape {shape}: only the last axis ({cols}) is supported")
        if cols**3 * 2.0 ** (2 * x.fmt.bits) >= 2.0**62:
            raise self.fail(node, f"{cols} features: the int64 sum of squares could overflow")
        gamma, beta = self.param(node, args[2]), self.param(node, args[3])
        gamma = gamma if gamma is not None else torch.ones(cols, dtype=torch.float64)
        beta = beta if beta is not None else torch.zeros(cols, dtype=torch.float64)
        fmt = self.fmt(node)
        pairs = [multiplier(float(g), f"node {node.name}") for g in gamma]
        mult = np.array([p[0] for p in pairs], dtype=np.int64)
        shift = np.array([NORM_FRAC + p[1] - fmt.frac for p in pairs], dtype=np.int64)
        bias = np.array(
            [round_half_even(float(b) * 2.0 ** (NORM_FRAC + p[1])) for b, p in zip(beta, pairs, strict=True)],
            dtype=np.int64,
        )
        self._check_shifts(node, shift)
        e = round_half_even(cols * cols * eps * 2.0 ** (2 * x.fmt.frac))
        y = self.new(node, fmt)
        rows = x.numel // cols
        self.ops.append(LayerNorm(node.name, [x.name], y.name, rows, cols, e, NORM_FRAC, mult, bias, shift))

    def _matmul(self, node: fx.Node, a: Tensor, b: Tensor, y: Tensor, scale: float = 1.0) -> None:
        if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
            raise self.fail(node, f"matmul of {a.shape} and {b.shape}: equal leading axes are supported")
        mult, fm = (1, 0) if scale == 1.0 else multiplier(scale, f"node {node.name}")
        shift = a.fmt.frac + b.fmt.frac + fm - y.fmt.frac
        self._check_shifts(node, np.array([shift]))
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        batch = math.prod(a.shape[:-2])
        self.ops.append(MatMul(y.name, [a.name, b.name], y.name, batch, m, k, n, mult, shift))

    def op_matmul(self, node: fx.Node, op: str) -> None:
        a, b = self.tensor(node, node.args[0]), self.tensor(node, node.args[1])
        self._matmul(node, a, b, self.new(node, self.fmt(node)))

    def op_attention(self, node: fx.Node, op: str) -> None:
        """``softmax(q k^T * scale) v``: a strided transpose of k, an integer matmul (the scale folded into
        its multiplier), the 8-bit softmax and a second matmul."""
        q, k, v = (self.tensor(node, a) for a in node.args[:3])
        extra = dict(zip(("attn_mask", "dropout_p", "is_causal"), node.args[3:6], strict=False))
        extra |= {
            key: node.kwargs[key] for key in ("attn_mask", "dropout_p", "is_causal") if key in node.kwargs
        }
        if extra.get("attn_mask") is not None or extra.get("is_causal") or float(extra.get("dropout_p") or 0):
            raise self.fail(node, "attention masks, causal attention and dropout are not supported")
        scale = float(node.kwargs.get("scale") or 1.0 / math.sqrt(q.shape[-1]))
        st = contiguous_strides(k.shape)
        dims = [*k.shape[:-2], k.shape[-1], k.shape[-2]]
        kt = self.internal(f"{node.name}_kT", tuple(dims), k.fmt)
        merged, steps = merge_dims(dims, [*st[:-2], st[-1], st[-2]])
        self.ops.append(Strided(kt.name, [k.name], kt.name, merged, steps, 0))
        peak = self.calib.max_abs.get(f"{node.name}_scores", 0.0)
        scores_shape = (*q.shape[:-1], k.shape[-2])
        scores = self.internal(
            f"{node.name}_scores", scores_shape, ActFormat(self.bits, choose_frac(peak, self.bits))
        )
        self._matmul(node, q, kt, scores, scale)
        probs = self.internal(f"{node.name}_probs", scores_shape, ActFormat(self.bits, self.bits - 1))
        self.softmax(scores, probs)
        self._matmul(node, probs, v, self.new(node, self.fmt(node)))
