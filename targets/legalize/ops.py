"""The graph walk: one handler per op, each turning an fx node into integer ops of the program — batch
norm and clamps folded into the epilogue of the conv/linear before them, every bias, multiplier, shift
and table computed — or refusing it with the node's name."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from sqc.ir.ops import aten_name, function_name
from sqc.ir.records import CompressedModel
from sqc.targets.integer import (
    ActFormat,
    Add,
    Affine,
    Cat,
    Clamp,
    Conv,
    IntProgram,
    LayerNorm,
    Linear,
    Lut,
    LutInterp,
    MatMul,
    Mul,
    Op,
    Pad,
    Pool,
    PRelu,
    Requant,
    Softmax,
    SoftmaxPoly,
    Strided,
    Tensor,
    Weights,
    choose_frac,
    chw,
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


class GraphWalk:
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

    # helpers -----------------------------------------------------------------------------------
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

    # the walk ----------------------------------------------------------------------------------
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

    # weighted layers ---------------------------------------------------------------------------
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

    # element-wise --------------------------------------------------------------------------------
    def op_relu(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        lo, hi = self.clamp_bounds(node, op, x.fmt)
        y = self.new(node, x.fmt)
        self.ops.append(Clamp(node.name, [x.name], y.name, lo, hi))

    op_relu6 = op_relu
    op_hardtanh = op_relu

    def op_leaky_relu(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        mult, frac = multiplier(float(a["negative_slope"]), f"node {node.name}")
        y = self.new(node, x.fmt)
        self.ops.append(PRelu(node.name, [x.name], y.name, 1, x.numel, np.array([mult]), frac))

    def op_prelu(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        slope = self.param(node, a["weight"])
        assert slope is not None
        channels = slope.numel()
        if channels not in (1, x.shape[0]):
            raise self.fail(node, f"{channels} slopes for {x.shape[0]} channels")
        pairs = [multiplier(float(s), f"node {node.name}") for s in slope.reshape(-1)]
        frac = min(p[1] for p in pairs)
        mult = np.array([round_half_even(float(s) * 2.0**frac) for s in slope.reshape(-1)], dtype=np.int64)
        y = self.new(node, x.fmt)
        self.ops.append(PRelu(node.name, [x.name], y.name, channels, x.numel // channels, mult, frac))

    def op_sigmoid(self, node: fx.Node, op: str) -> None:
        x = self.tensor(node, node.args[0])
        fmt = self.fmt(node)
        if x.fmt.bits > LUT_BITS:
            # knots every 2^shift codes, the last one at qmax + 1; linear interpolation in between
            shift = x.fmt.bits - LUT_BITS
            knots = torch.arange(0, (1 << LUT_BITS) + 1, dtype=torch.float64) * 2.0**shift + x.fmt.qmin
            values = _lut_function(op, node)(knots * 2.0**-x.fmt.frac) * 2.0**fmt.frac
            table = torch.round(values).clamp(-(1 << 30), 1 << 30).to(torch.int64).numpy()
            y = self.new(node, fmt)
            self.ops.append(LutInterp(node.name, [x.name], y.name, op, table, shift))
            return
        codes = torch.arange(x.fmt.qmin, x.fmt.qmax + 1, dtype=torch.float64) * 2.0**-x.fmt.frac
        values = _lut_function(op, node)(codes)
        table = torch.round(values * 2.0**fmt.frac).clamp(fmt.qmin, fmt.qmax).to(torch.int64).numpy()
        y = self.new(node, fmt)
        self.ops.append(Lut(node.name, [x.name], y.name, op, table))

    op_tanh = op_sigmoid
    op_gelu = op_sigmoid
    op_silu = op_sigmoid
    op_hardswish = op_sigmoid
    op_hardsigmoid = op_sigmoid

    def op_softmax(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        dim = a["dim"]
        if dim is None or int(dim) not in (-1, len(x.shape) + self.lead - 1):
            raise self.fail(node, "softmax is supported over the last axis only")
        y = self.new(node, ActFormat(self.bits, self.bits - 1))
        self.softmax(x, y)

    def softmax(self, x: Tensor, y: Tensor) -> None:
        """Softmax over the last axis: the exp table at 8 bits, I-BERT's i-exp polynomial above."""
        cols = x.shape[-1]
        if x.fmt.bits <= 8:
            self.ops.append(Softmax(y.name, [x.name], y.name, x.numel // cols, cols, exp_table(x.fmt)))
            return
        ln2, qb, qc, base = iexp_constants(x.fmt)
        self.ops.append(SoftmaxPoly(y.name, [x.name], y.name, x.numel // cols, cols, ln2, qb, qc, base))

    def _binary(self, node: fx.Node, op: str) -> None:
        lhs, rhs = node.args[0], node.args[1]
        if any(isinstance(v, fx.Node) and v in self.value and self.value[v] is None for v in (lhs, rhs)):
            self.value[node] = None  # arithmetic on sizes: only ever feeds reshape arguments
            return
        if isinstance(lhs, fx.Node) and isinstance(rhs, fx.Node):
            a, b = self.tensor(node, lhs), self.tensor(node, rhs)
            if a.shape != b.shape:
                shape = self.calib.shapes.get(node.name)
                if shape is None:
                    raise self.fail(node, "no tensor value seen during calibration")
                a, b = self.broadcast(node, a, shape, 0), self.broadcast(node, b, shape, 1)
            fmt = self.fmt(node)
            if op in ("add", "sub"):
                common = max(a.fmt.frac, b.fmt.frac)
                shift = common - fmt.frac
                self._check_shifts(node, np.array([shift]))
                y = self.new(node, fmt)
                self.ops.append(
                    Add(
                        node.name,
                        [a.name, b.name],
                        y.name,
                        1 << (common - a.fmt.frac),
                        1 << (common - b.fmt.frac),
                        shift,
                        op == "sub",
                    )
                )
            elif op == "mul":
                shift = a.fmt.frac + b.fmt.frac - fmt.frac
                self._check_shifts(node, np.array([shift]))
                y = self.new(node, fmt)
                self.ops.append(Mul(node.name, [a.name, b.name], y.name, shift))
            else:
                raise self.fail(node, "division of two tensors is not supported")
            return
        tensor_first = isinstance(lhs, fx.Node)
        x = self.tensor(node, lhs if tensor_first else rhs)
        const = rhs if tensor_first else lhs
        if not isinstance(const, (int, float)) or isinstance(const, bool):
            raise self.fail(node, f"constant operand {const!r} is not a number")
        c = float(const)
        if op == "add":
            self._affine(node, x, [1.0], [c], 1)
        elif op == "sub" and tensor_first:
            self._affine(node, x, [1.0], [-c], 1)
        elif op == "mul":
            self._affine(node, x, [c], [0.0], 1)
        elif op == "truediv" and tensor_first and c != 0:
            self._affine(node, x, [1.0 / c], [0.0], 1)
        else:
            raise self.fail(node, "this form of constant arithmetic is not supported")

    op_add = _binary
    op_sub = _binary
    op_mul = _binary
    op_truediv = _binary

    # data movement -----------------------------------------------------------------------------
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

    def _broadcast_strides(self, node: fx.Node, x: Tensor, shape: tuple[int, ...]) -> list[int]:
        if len(x.shape) != len(shape) or any(a not in (1, b) for a, b in zip(x.shape, shape, strict=True)):
            raise self.fail(node, f"broadcasting {x.shape} to {tuple(shape)} is not supported")
        return [0 if a == 1 else st for a, st in zip(x.shape, contiguous_strides(x.shape), strict=True)]

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

    # pooling -----------------------------------------------------------------------------------
    def _pool(
        self,
        node: fx.Node,
        x: Tensor,
        kind: Literal["max", "avg"],
        rows: list[tuple[int, int]],
        cols: list[tuple[int, int]],
        divisor: np.ndarray | None,
    ) -> None:
        c, h, w = chw(x.shape)
        y = self.new(node, x.fmt)
        if y.numel != c * len(rows) * len(cols):
            raise self.fail(node, f"pooling output {y.shape} does not match its windows")
        self.ops.append(
            Pool(
                node.name,
                [x.name],
                y.name,
                kind,
                c,
                (h, w),
                (len(rows), len(cols)),
                np.array([r[0] for r in rows]),
                np.array([r[1] for r in rows]),
                np.array([q[0] for q in cols]),
                np.array([q[1] for q in cols]),
                divisor,
            )
        )

    def op_max_pool2d(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        one_d = op.endswith("1d")
        x = self.tensor(node, a["input"])
        kind: Literal["max", "avg"] = "max" if op.startswith("max") else "avg"
        k = _pair(a["kernel_size"], one_d)
        s = _pair(a["stride"] if a["stride"] not in (None, (), []) else a["kernel_size"], one_d)
        p = _pair(a["padding"], one_d, 0)
        if a["ceil_mode"]:
            raise self.fail(node, "ceil_mode=True is not supported")
        if kind == "max" and _pair(a["dilation"], one_d) != (1, 1):
            raise self.fail(node, "dilated pooling is not supported")
        _, h, w = chw(x.shape)
        oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
        rows = [(max(0, o * s[0] - p[0]), min(h, o * s[0] - p[0] + k[0])) for o in range(oh)]
        cols = [(max(0, o * s[1] - p[1]), min(w, o * s[1] - p[1] + k[1])) for o in range(ow)]
        divisor = None
        if kind == "avg":
            override = a.get("divisor_override")
            if override:
                counts = [int(override)] * (oh * ow)
            elif a["count_include_pad"]:
                counts = [k[0] * k[1]] * (oh * ow)
            else:
                counts = [(r[1] - r[0]) * (q[1] - q[0]) for r in rows for q in cols]
            divisor = np.array(counts, dtype=np.int64)
        self._pool(node, x, kind, rows, cols, divisor)

    op_max_pool1d = op_max_pool2d
    op_avg_pool1d = op_max_pool2d
    op_avg_pool2d = op_max_pool2d

    def op_adaptive_avg_pool2d(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        if op.startswith("adaptive_max") and a["return_indices"]:
            raise self.fail(node, "return_indices is not supported")
        one_d = op.endswith("1d")
        x = self.tensor(node, a["input"])
        _, h, w = chw(x.shape)
        size = a["output_size"]
        oh, ow = _pair(size, one_d)
        oh = h if oh is None else oh
        ow = w if ow is None else ow

        def windows(n: int, out: int) -> list[tuple[int, int]]:
            return [((i * n) // out, -((-(i + 1) * n) // out)) for i in range(out)]

        rows, cols = windows(h, oh), windows(w, ow)
        kind: Literal["max", "avg"] = "max" if "max" in op else "avg"
        divisor = None
        if kind == "avg":
            divisor = np.array([(r[1] - r[0]) * (q[1] - q[0]) for r in rows for q in cols], dtype=np.int64)
        self._pool(node, x, kind, rows, cols, divisor)

    op_adaptive_avg_pool1d = op_adaptive_avg_pool2d
    op_adaptive_max_pool1d = op_adaptive_avg_pool2d
    op_adaptive_max_pool2d = op_adaptive_avg_pool2d

    def op_mean(self, node: fx.Node, op: str) -> None:
        a = _bind(node, op)
        x = self.tensor(node, a["input"])
        dims = a["dim"] if isinstance(a["dim"], (tuple, list)) else [a["dim"]]
        rank = len(x.shape) + 1
        if len(dims) == 1 and dims[0] is not None and (not self.lead or len(x.shape) not in (2, 3)):
            self._mean_axis(node, x, self._axis(node, x, dims[0]))
            return
        axes = sorted(int(d) % rank for d in dims if d is not None)
        if not self.lead or len(x.shape) not in (2, 3) or axes != list(range(2, rank)):
            raise self.fail(node, "mean is supported over all spatial axes only (global average pooling)")
        _, h, w = chw(x.shape)
        self._pool(node, x, "avg", [(0, h)], [(0, w)], np.array([h * w], dtype=np.int64))

    # reductions, normalization and attention ---------------------------------------------------
    def internal(self, name: str, shape: tuple[int, ...], fmt: ActFormat) -> Tensor:
        """A tensor of the program that no graph node produces (a step inside one node's lowering)."""
        if name in self.tensors:
            raise LowerError(f"tensor {name}: the name is taken by a node")
        tensor = Tensor(name, tuple(shape), fmt, name)
        self.tensors[name] = tensor
        return tensor

    def _mean_axis(self, node: fx.Node, x: Tensor, axis: int) -> None:
        """Mean over one axis: the axis is moved last (a strided copy) unless it is, then average pooling
        over rows of it."""
        outer, size = math.prod(x.shape[:axis]), x.shape[axis]
        inner = math.prod(x.shape[axis + 1 :])
        if inner > 1:
            moved = self.internal(f"{node.name}_last", (outer * inner, 1, size), x.fmt)
            self.ops.append(
                Strided(moved.name, [x.name], moved.name, (outer, inner, size), (size * inner, 1, inner), 0)
            )
            x = moved
        else:
            x = Tensor(x.name, (outer, 1, size), x.fmt, x.slot)  # the same codes seen as (rows, 1, size)
        self._pool(node, x, "avg", [(0, 1)], [(0, size)], np.array([size], dtype=np.int64))

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
