"""The graph walk's ground: the tables and helpers every op handler uses, and :class:`WalkBase`, which
holds the program being built, formats, epilogues and the shared tensor helpers. The handlers
themselves, one method per op (``op_<name>``), are mixed in by family (``layers``, ``elementwise``,
``shapes``, ``pooling``, ``attention``); :class:`~sqc.targets.legalize.ops.GraphWalk` combines them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from sqc.ir.ops import aten_name, function_name
from sqc.ir.records import CompressedModel
from sqc.targets.integer import (
    ActFormat,
    Affine,
    IntProgram,
    Op,
    Requant,
    Softmax,
    SoftmaxPoly,
    Strided,
    Tensor,
    Weights,
    choose_frac,
    multiplier,
    round_half_even,
)
from sqc.targets.legalize.calibrate import Calibration
from sqc.targets.legalize.options import BatchAxisError, LowerError, LowerOptions
from sqc.targets.legalize.weights import legalize_weights

# ------------------------------------------------------------------------------------------------
# the graph walk

# Positional parameter names (PyTorch's order) and defaults of the ops the walk reads arguments of.
_SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "conv1d": (
        ("input", None),
        ("weight", None),
        ("bias", None),
        ("stride", 1),
        ("padding", 0),
        ("dilation", 1),
        ("groups", 1),
    ),
    "linear": (("input", None), ("weight", None), ("bias", None)),
    "batch_norm": (
        ("input", None),
        ("running_mean", None),
        ("running_var", None),
        ("weight", None),
        ("bias", None),
        ("training", False),
        ("momentum", 0.1),
        ("eps", 1e-5),
    ),
    "prelu": (("input", None), ("weight", None)),
    "relu": (("input", None), ("inplace", False)),
    "relu6": (("input", None), ("inplace", False)),
    "leaky_relu": (("input", None), ("negative_slope", 0.01), ("inplace", False)),
    "hardtanh": (("input", None), ("min_val", -1.0), ("max_val", 1.0), ("inplace", False)),
    "sigmoid": (("input", None),),
    "tanh": (("input", None),),
    "gelu": (("input", None), ("approximate", "none")),
    "silu": (("input", None), ("inplace", False)),
    "softmax": (("input", None), ("dim", None), ("_stacklevel", 3), ("dtype", None)),
    "max_pool1d": (
        ("input", None),
        ("kernel_size", None),
        ("stride", None),
        ("padding", 0),
        ("dilation", 1),
        ("ceil_mode", False),
        ("return_indices", False),
    ),
    "avg_pool1d": (
        ("input", None),
        ("kernel_size", None),
        ("stride", None),
        ("padding", 0),
        ("ceil_mode", False),
        ("count_include_pad", True),
    ),
    "avg_pool2d": (
        ("input", None),
        ("kernel_size", None),
        ("stride", None),
        ("padding", 0),
        ("ceil_mode", False),
        ("count_include_pad", True),
        ("divisor_override", None),
    ),
    "adaptive_avg_pool1d": (("input", None), ("output_size", None)),
    "adaptive_max_pool1d": (("input", None), ("output_size", None), ("return_indices", False)),
    "pad": (("input", None), ("pad", None), ("mode", "constant"), ("value", None)),
    "cat": (("tensors", None), ("dim", 0)),
    "mean": (("input", None), ("dim", None), ("keepdim", False), ("dtype", None)),
}
_SIGNATURES["conv2d"] = _SIGNATURES["conv1d"]
_SIGNATURES["max_pool2d"] = _SIGNATURES["max_pool1d"]
_SIGNATURES["adaptive_avg_pool2d"] = _SIGNATURES["adaptive_avg_pool1d"]
_SIGNATURES["adaptive_max_pool2d"] = _SIGNATURES["adaptive_max_pool1d"]

_ALIASES = {"flatten", "reshape", "squeeze", "unsqueeze"}
_CLAMPS = {"relu", "relu6", "hardtanh"}
_LUTS = {"sigmoid", "tanh", "gelu", "silu"}
NORM_FRAC = 16  # fraction bits of LayerNorm's normalized value z = (x - mean) / std
LUT_BITS = 10  # wider activations use 2^10 + 1 interpolation knots instead of a full table
MAX_RANK = 8  # dimensions of a Strided op after merging (the C kernel's counter array)

# ATen operators (the open op set of exported graphs) that the integer targets lower, by schema name ->
# the ``op_*`` handler that takes them.
_ATEN_OPS = {
    "aten::hardswish": "hardswish",
    "aten::hardswish_": "hardswish",
    "aten::hardsigmoid": "hardsigmoid",
    "aten::hardsigmoid_": "hardsigmoid",
    "aten::slice.Tensor": "slice",
    "aten::select.int": "select",
    "aten::unflatten.int": "reshape",
    "aten::expand": "expand",
    "aten::layer_norm": "layer_norm",
    "aten::scaled_dot_product_attention": "attention",
}


def refuse_open_ops(model: CompressedModel) -> None:
    """Refuse, before any work, a graph holding an ATen operator outside sqc's vocabulary: the integer
    targets have kernels for the vocabulary only (the PyTorch target runs every operator)."""
    for node in model.graph_module.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            if aten_name(node.target) in _ATEN_OPS:
                continue
            raise LowerError(
                f"node {node.name} ({aten_name(node.target) or node.target}): the integer targets have no "
                "kernel for this operator (they lower sqc's op vocabulary; use --target pytorch)"
            )


# Handlers that read (C, H, W) per-sample layouts: not available when the program's shapes are whole
# tensors (a graph that moves the batch axis, lowered per sample).
_PER_SAMPLE_ONLY = frozenset(
    {
        "conv1d",
        "conv2d",
        "batch_norm",
        "prelu",
        "pad",
        *(f"{k}_pool{d}" for k in ("max", "avg", "adaptive_max", "adaptive_avg") for d in ("1d", "2d")),
    }
)


def _lut_function(op: str, node: fx.Node) -> Any:
    """The float function a table op computes, in float64 (tables are rounded from it)."""
    if op == "gelu":
        approximate = str(_bind(node, op)["approximate"])
        return lambda v: F.gelu(v, approximate=approximate)
    return {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "silu": F.silu,
        "hardswish": F.hardswish,
        "hardsigmoid": F.hardsigmoid,
    }[op]


def constant_epilogue(value: float, fmt: ActFormat, bound: int) -> tuple[int, int, int]:
    """(B, M, S) of an epilogue channel whose output is the constant ``value`` for every accumulator
    ``|acc| <= bound``: ``M = 1``, ``S = bitlen(bound) + 1``, ``B = k * 2^S`` with ``k`` the constant's code;
    then ``rshift_round(acc + B, S) = k + floor((acc + 2^(S-1)) / 2^S) = k`` exactly (a zero-scale
    batch-norm channel, ``INTEGER.md``)."""
    k = max(fmt.qmin, min(fmt.qmax, round_half_even(value * 2.0**fmt.frac)))
    s = int(bound).bit_length() + 1
    return k << s, 1, s


def exp_table(fmt: ActFormat) -> np.ndarray:
    """Softmax's ``E[d] = round_half_even(2^15 * exp(-d * 2^-fx))`` for every code difference d."""
    diffs = torch.arange(0, 1 << fmt.bits, dtype=torch.float64) * 2.0**-fmt.frac
    return torch.round(torch.exp(-diffs) * 2.0**15).to(torch.int64).numpy()


def iexp_constants(fmt: ActFormat) -> tuple[int, int, int, int]:
    """I-BERT's integer exp for softmax (Kim et al. 2021): ``exp(-t) = 2^-z exp(-p)`` with ``t = z ln2 + p``,
    and ``exp(-p) ~ 0.3585 (1.353 - p)^2 + 0.344`` on ``[0, ln2)``. In codes of ``fmt``: ``ln2``,
    ``qb = 1.353``, ``qc = 0.344 / 0.3585`` (squared scale; the common factor 0.3585 * 2^-2fx cancels in
    the normalization), and ``base``, the shift that keeps ``e`` within 30 bits."""
    scale = 2.0**fmt.frac
    ln2 = max(1, round_half_even(math.log(2) * scale))
    qb = round_half_even(1.353 * scale)
    qc = round_half_even(0.344 / 0.3585 * scale * scale)
    base = max(0, (qb * qb + qc).bit_length() - 30)
    return ln2, qb, qc, base


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major element strides of a per-sample shape."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def merge_dims(dims: list[int], strides: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The same index walk in fewest dimensions: size-1 dimensions dropped, a dimension merged into the
    one before it when the walk runs on contiguously (``stride[k] == stride[k+1] * dims[k+1]``)."""
    out: list[list[int]] = []
    for n, st in zip(dims, strides, strict=True):
        if n == 1:
            continue
        if out and out[-1][1] == st * n:
            out[-1] = [out[-1][0] * n, st]
        else:
            out.append([n, st])
    if not out:
        out = [[1, 1]]
    return tuple(d for d, _ in out), tuple(st for _, st in out)


def _bind(node: fx.Node, op: str) -> dict[str, Any]:
    sig = _SIGNATURES[op]
    bound = {name: default for name, default in sig}
    for (name, _), value in zip(sig, node.args, strict=False):
        bound[name] = value
    for key, value in node.kwargs.items():
        bound[key] = value
    return bound


def _pair(value: Any, one_d: bool, height: int | None = 1) -> tuple[Any, Any]:
    """A 2-D (height, width) parameter; a 1-D op's height gets ``height`` (1 for sizes, 0 for padding)."""
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    items = [None if v is None else int(v) for v in items]
    if one_d:
        return height, items[-1]
    return items[0], items[-1]


class WalkBase:
    """Walks the fx graph in order, building the :class:`IntProgram`; each node goes to ``op_<name>``."""

    def __init__(
        self,
        model: CompressedModel,
        calib: Calibration,
        opts: LowerOptions,
        keep_rans: bool = False,
        whole: bool = False,
    ) -> None:
        self.lead = 0 if whole else 1  # axes of a graph tensor in front of the program's shapes (batch)
        self.keep_rans = keep_rans
        self.model = model
        self.calib = calib
        self.opts = opts
        self.bits = opts.act_bits
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.notes: list[str] = []
        self.value: dict[fx.Node, Any] = {}
        self.fused: set[fx.Node] = set()

    def fail(self, node: fx.Node, what: str, kind: type[LowerError] = LowerError) -> LowerError:
        return kind(f"node {node.name} ({self.opname(node)}): {what}")

    @staticmethod
    def opname(node: fx.Node) -> str:
        if node.op == "call_function":
            return function_name(node.target) or str(node.target)  # type: ignore[arg-type]
        return str(node.target)

    def fmt(self, node: fx.Node) -> ActFormat:
        return ActFormat(self.bits, choose_frac(self.calib.max_abs.get(node.name, 0.0), self.bits))

    def new(self, node: fx.Node, fmt: ActFormat, slot: str | None = None) -> Tensor:
        shape = self.calib.shapes.get(node.name)
        if shape is None:
            raise self.fail(node, "no tensor value seen during calibration")
        tensor = Tensor(node.name, tuple(shape), fmt, slot or node.name)
        self.tensors[tensor.name] = tensor
        self.value[node] = tensor
        return tensor

    def tensor(self, node: fx.Node, arg: Any) -> Tensor:
        if isinstance(arg, fx.Node) and isinstance(self.value.get(arg), Tensor):
            return self.value[arg]  # type: ignore[no-any-return]
        raise self.fail(node, f"expects an activation tensor, got {arg!r}")

    def param(self, node: fx.Node, arg: Any) -> torch.Tensor | None:
        if arg is None:
            return None
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            return self.model.tensors[str(arg.target)].decode().to(torch.float64)
        raise self.fail(node, f"expects a stored parameter, got {arg!r}")

    def single_user(self, node: fx.Node, names: set[str]) -> fx.Node | None:
        if len(node.users) != 1:
            return None
        (user,) = node.users
        if user.op == "call_function" and self.opname(user) in names and user.args and user.args[0] is node:
            return user
        return None

    def clamp_bounds(self, node: fx.Node, op: str, fmt: ActFormat) -> tuple[int, int]:
        scale = 2.0**fmt.frac
        if op == "relu":
            return 0, fmt.qmax
        if op == "relu6":
            return 0, min(fmt.qmax, math.floor(6.0 * scale))
        a = _bind(node, "hardtanh")
        lo = max(fmt.qmin, math.ceil(float(a["min_val"]) * scale))
        hi = min(fmt.qmax, math.floor(float(a["max_val"]) * scale))
        if lo > hi:
            raise self.fail(node, "hardtanh range is empty in the output format")
        return lo, hi

    def run(self) -> IntProgram:
        gm = self.model.graph_module
        first: Tensor | None = None
        out: Tensor | None = None
        for node in gm.graph.nodes:
            if node in self.fused:
                continue
            if node.op == "placeholder":
                first = self.new(node, self.fmt(node))
            elif node.op == "get_attr":
                self.value[node] = node
            elif node.op == "call_method":
                if node.target != "size":
                    raise self.fail(node, f"method .{node.target}() is not supported")
                self.value[node] = None  # only ever feeds reshape arguments, which are read from shapes
            elif node.op == "call_function":
                self.call(node)
            elif node.op == "output":
                out = self.tensor(node, node.args[0])
        assert first is not None and out is not None
        if not self.ops:
            raise LowerError("the model computes nothing the integer targets can run")
        return IntProgram(
            self.tensors, self.ops, first.name, out.name, self.bits, self.notes, self.opts.as_dict()
        )

    def call(self, node: fx.Node) -> None:
        op = self.opname(node)
        if isinstance(node.target, torch._ops.OpOverload):
            op = _ATEN_OPS.get(aten_name(node.target) or "", op)
        if not self.lead and op in _PER_SAMPLE_ONLY:
            raise self.fail(node, "not supported in a graph that moves the batch axis (lowered per sample)")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise self.fail(node, "op not supported by the integer targets")
        handler(node, op)

    def _epilogue(
        self, node: fx.Node, w: Weights, x: Tensor, bias: torch.Tensor | None
    ) -> tuple[fx.Node, Requant]:
        """Fold a following batch norm and ReLU-like clamp; return the last node folded and the epilogue."""
        tail = node
        channels = w.shape[0]
        constants: dict[int, float] = {}
        scale = torch.ones(channels, dtype=torch.float64)
        shift_add = torch.zeros(channels, dtype=torch.float64) if bias is None else bias.clone()
        bn = self.single_user(node, {"batch_norm"})
        if bn is not None:
            a = _bind(bn, "batch_norm")
            mean, var = self.param(bn, a["running_mean"]), self.param(bn, a["running_var"])
            gamma, beta = self.param(bn, a["weight"]), self.param(bn, a["bias"])
            assert mean is not None and var is not None
            scale = 1.0 / torch.sqrt(var + float(a["eps"]))
            scale = scale * gamma if gamma is not None else scale
            zero = scale.abs() < 1e-12
            if bool(zero.any()):  # y = beta whatever the input: the channel folds to a constant
                beta_ = beta if beta is not None else torch.zeros_like(scale)
                constants = {int(c): float(beta_[c]) for c in torch.nonzero(zero).reshape(-1)}
                scale = torch.where(zero, torch.ones_like(scale), scale)
            shift_add = shift_add - mean + (beta / scale if beta is not None else 0.0)
            self.fused.add(bn)
            tail = bn
        lo, hi = None, None
        act = self.single_user(tail, _CLAMPS)
        if act is not None:
            self.fused.add(act)
            tail = act
        fmt = self.fmt(tail)
        if act is not None:
            lo, hi = self.clamp_bounds(act, self.opname(act), fmt)
        facc = np.array([x.fmt.frac + f for f in w.frac], dtype=np.int64)
        steps = w.multipliers  # a scaled weight format: the accumulator counts steps of mult * 2**-facc
        bias_q = np.array(
            [
                round_half_even(float(v) * 2.0 ** int(f) / m)
                for v, f, m in zip(shift_add, facc, steps, strict=True)
            ]
        )
        if bn is None:
            mult = np.array(steps, dtype=np.int64)
            mfrac = np.zeros(channels, dtype=np.int64)
        else:
            pairs = [multiplier(float(s) * m, f"node {bn.name}") for s, m in zip(scale, steps, strict=True)]
            mult = np.array([p[0] for p in pairs], dtype=np.int64)
            mfrac = np.array([p[1] for p in pairs], dtype=np.int64)
        shift = facc + mfrac - fmt.frac
        l1 = np.abs(w.values.reshape(channels, -1)).sum(axis=1) * (1 << (x.fmt.bits - 1))
        for c, value in constants.items():
            bias_q[c], mult[c], shift[c] = constant_epilogue(value, fmt, int(l1[c]))
        if constants:
            self.notes.append(
                f"{bn.name if bn is not None else node.name}: {len(constants)} batch-norm channel(s) with "
                "a zero scale output their constant beta"
            )
        bound = l1 + np.abs(bias_q)
        if int(bound.max()) >= 1 << 31:
            raise self.fail(
                node,
                f"the int32 accumulator could overflow (bound {int(bound.max()):,}); try --option act_bits=8",
            )
        self._check_shifts(node, shift)
        requant = Requant(
            bias_q.astype(np.int64),
            mult,
            shift.astype(np.int64),
            fmt.qmin if lo is None else lo,
            fmt.qmax if hi is None else hi,
        )
        self.new(tail, fmt)
        return tail, requant

    def _check_shifts(self, node: fx.Node, shift: np.ndarray) -> None:
        if shift.size and (int(shift.min()) < -16 or int(shift.max()) > 62):
            raise self.fail(
                node, f"requantization shift {int(shift.min())}..{int(shift.max())} outside -16..62"
            )

    def _weights(self, node: fx.Node, arg: Any) -> Weights:
        if not (isinstance(arg, fx.Node) and arg.op == "get_attr"):
            raise self.fail(node, "weights must be a stored tensor")
        state = self.model.tensors[str(arg.target)]
        return legalize_weights(state, self.opts, self.notes, self.keep_rans)

    def _affine(
        self, node: fx.Node, x: Tensor, scales: list[float], adds: list[float], channels: int
    ) -> None:
        """``y = (x + add) * scale`` per channel, as ``requant((x + B) * M, S)``; a channel whose scale is 0
        outputs the constant ``add`` (:func:`constant_epilogue`)."""
        fmt = self.fmt(node)
        pairs = [multiplier(s, f"node {node.name}") for s in scales]
        bias = np.array(
            [
                round_half_even(v * 2.0**x.fmt.frac) if s != 0 else 0
                for v, s in zip(adds, scales, strict=True)
            ],
            dtype=np.int64,
        )
        if bias.size and int(np.abs(bias).max()) + (1 << (x.fmt.bits - 1)) >= 1 << 31:
            raise self.fail(node, "the added constant does not fit the int32 accumulator")
        mult = np.array([p[0] for p in pairs], dtype=np.int64)
        shift = np.array([x.fmt.frac + p[1] - fmt.frac for p in pairs], dtype=np.int64)
        for c, s in enumerate(scales):
            if s == 0:
                bias[c], mult[c], shift[c] = constant_epilogue(adds[c], fmt, 1 << (x.fmt.bits - 1))
                if abs(int(bias[c])) + (1 << (x.fmt.bits - 1)) >= 1 << 31:
                    raise self.fail(node, f"channel {c}: its constant output does not fit the int32 epilogue")
        self._check_shifts(node, shift)
        y = self.new(node, fmt)
        inner = x.numel // channels
        self.ops.append(
            Affine(
                node.name, [x.name], y.name, channels, inner, Requant(bias, mult, shift, fmt.qmin, fmt.qmax)
            )
        )

    def softmax(self, x: Tensor, y: Tensor) -> None:
        """Softmax over the last axis: the exp table at 8 bits, I-BERT's i-exp polynomial above."""
        cols = x.shape[-1]
        if x.fmt.bits <= 8:
            self.ops.append(Softmax(y.name, [x.name], y.name, x.numel // cols, cols, exp_table(x.fmt)))
            return
        ln2, qb, qc, base = iexp_constants(x.fmt)
        self.ops.append(SoftmaxPoly(y.name, [x.name], y.name, x.numel // cols, cols, ln2, qb, qc, base))

    def broadcast(self, node: fx.Node, x: Tensor, shape: tuple[int, ...], k: int) -> Tensor:
        """``x`` expanded to ``shape`` (same rank; size-1 axes repeated, stride 0) as its own tensor."""
        if x.shape == tuple(shape):
            return x
        merged, steps = merge_dims(list(shape), self._broadcast_strides(node, x, shape))
        name = f"{node.name}_bcast{k}"
        if name in self.tensors or len(merged) > MAX_RANK:
            raise self.fail(node, f"cannot broadcast {x.shape} to {tuple(shape)}")
        y = Tensor(name, tuple(shape), x.fmt, name)
        self.tensors[name] = y
        self.ops.append(Strided(name, [x.name], name, merged, steps, 0))
        return y

    def _axis(self, node: fx.Node, x: Tensor, dim: Any) -> int:
        """A non-batch axis of ``x`` (0-based over the per-sample shape) from a full-tensor axis."""
        rank = len(x.shape) + self.lead
        d = int(dim)
        d = d + rank if d < 0 else d
        if not self.lead <= d < rank:
            raise self.fail(
                node,
                f"axis {dim} is the batch axis or out of range (the batch axis stays put)",
                BatchAxisError,
            )
        return d - self.lead

    def _broadcast_strides(self, node: fx.Node, x: Tensor, shape: tuple[int, ...]) -> list[int]:
        if len(x.shape) != len(shape) or any(a not in (1, b) for a, b in zip(x.shape, shape, strict=True)):
            raise self.fail(node, f"broadcasting {x.shape} to {tuple(shape)} is not supported")
        return [0 if a == 1 else st for a, st in zip(x.shape, contiguous_strides(x.shape), strict=True)]

    def internal(self, name: str, shape: tuple[int, ...], fmt: ActFormat) -> Tensor:
        """A tensor of the program that no graph node produces (a step inside one node's lowering)."""
        if name in self.tensors:
            raise LowerError(f"tensor {name}: the name is taken by a node")
        tensor = Tensor(name, tuple(shape), fmt, name)
        self.tensors[name] = tensor
        return tensor
