"""The ONNX target's graph builder: :class:`Converter` walks the IR's fx graph in order and emits ONNX
nodes and initializers, keeping each weight in the integer form the records store (the forms are
described in :mod:`sqc.targets.onnx`). The operator handlers it dispatches to are
:mod:`sqc.targets.onnx_ops`, given to it by the target, which imports both."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from sqc.errors import SqcError
from sqc.ir.ops import aten_name, function_name
from sqc.ir.records import CompressedModel, TensorState

OPSET = 21
"""INT4 and INT16 ``DequantizeLinear`` and UINT4 ``Cast`` need opset 21; ``Gelu`` needs 20."""
WEIGHT_FORMS = ("int", "float")
INT64_MAX = 2**63 - 1


def onnx_module() -> Any:
    try:
        import onnx
    except ImportError:
        raise SqcError("target onnx needs the onnx package: pip install 'sqc[onnx]'") from None
    return onnx


@dataclass(frozen=True)
class Sym:
    """A Python int the graph computes at run time (``x.size(0)``): a 1-D int64 tensor of one element."""

    name: str


def _width(bits: int) -> int:
    """The ONNX integer width that holds ``bits``-bit values: 4, 8, 16 or 32."""
    return 4 if bits <= 4 else 8 if bits <= 8 else 16 if bits <= 16 else 32


def _index_bits(entries: int) -> int:
    return max(1, math.ceil(math.log2(max(2, entries))))


@dataclass(frozen=True)
class Layout:
    """Where a record's integer codes went: ``codes`` (an initializer, every code or the kept ones),
    ``positions`` (int64 positions of the kept ones, or None when dense), ``filled`` (some stored code
    is the filler)."""

    codes: str
    positions: str | None
    filled: bool


class Unsupported(SqcError):
    """An op (or an argument of one) that has no ONNX form here."""


class Converter:
    """One pass over the fx graph, in order, emitting ONNX nodes and initializers."""

    def __init__(
        self, model: CompressedModel, weights: str = "int", handlers: Callable[[str], Any] | None = None
    ) -> None:
        self.onnx = onnx_module()
        self.handlers = handlers
        self.helper = self.onnx.helper
        self.model = model
        self.weights = weights
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.used: set[str] = set()
        self.values: dict[fx.Node, Any] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.ranks: dict[str, int] = {}
        self.attrs: dict[str, str] = {}

    # ---- naming and emission -------------------------------------------------------------

    def fresh(self, stem: str) -> str:
        name, i = stem, 1
        while name in self.used:
            name, i = f"{stem}_{i}", i + 1
        self.used.add(name)
        return name

    def const(self, value: Any, stem: str = "const", dtype: Any = None) -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.fresh(stem)
        self.inits.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, values: Sequence[int], stem: str = "ints") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), stem)

    def op(
        self, op_type: str, inputs: Sequence[str], stem: str | None = None, outputs: int = 1, **attrs: Any
    ) -> Any:
        """Emit one node; its output name (``str``), or the list of them when ``outputs > 1``."""
        names = [self.fresh(f"{stem or op_type}" + (f"_{k}" if outputs > 1 else "")) for k in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    # ---- weights ---------------------------------------------------------------------------

    def weight(self, target: str) -> str:
        """The ONNX value of a ``get_attr``: a record decoded in the graph, or a module constant."""
        if target in self.attrs:
            return self.attrs[target]
        state = self.model.tensors.get(target)
        if state is None:
            held = self.model.graph_module.get_submodule("")
            for part in target.split("."):
                held = getattr(held, part)
            if not isinstance(held, torch.Tensor):
                raise Unsupported(f"get_attr {target}: not a tensor")
            name = self.const(held.detach().numpy(), target)
        elif self.weights == "float" or state.kind == "dense":
            value = state.decode().detach()
            name = self.const(value.numpy(), target)
        elif state.kind == "fixed":
            name = self._fixed(state)
        else:
            name = self._shared(state)
        self.attrs[target] = name
        if state is None:
            self.dtypes[name] = held.dtype
        else:
            self.dtypes[name] = state.dense.dtype if state.dense is not None else torch.float32
        self.ranks[name] = len(state.shape) if state is not None else held.dim()
        return name

    def _packed(self, name: str, values: np.ndarray, bits: int, signed: bool) -> str:
        """An integer initializer of the narrowest ONNX type that holds ``bits``-bit values."""
        tp = self.onnx.TensorProto
        if bits <= 4:
            nibbles = (values.reshape(-1).astype(np.int64) & 0xF).astype(np.uint8)
            if nibbles.size % 2:
                nibbles = np.append(nibbles, np.uint8(0))
            raw = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
            kind = tp.INT4 if signed else tp.UINT4
            self.inits.append(self.helper.make_tensor(name, kind, list(values.shape), raw, raw=True))
            return name
        if signed:
            dtype = np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32
        else:
            dtype = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.int32
        self.inits.append(self.onnx.numpy_helper.from_array(values.astype(dtype), name))
        return name

    def _fixed(self, state: TensorState) -> str:
        assert state.codes is not None and state.fmt is not None
        fmt = state.fmt
        layout = self._layout(state, state.codes.numpy().astype(np.int64), fmt.bits, fmt.bits, 0, True)
        codes = layout.codes
        if layout.positions is not None:
            codes = self._scatter(
                state, self.op("Cast", [codes], to=self.onnx.TensorProto.INT32), layout.positions
            )
        steps = np.asarray(fmt.steps, dtype=np.float32)
        if fmt.per_channel:
            scale = self.const(steps, f"{state.name}.scale")
            return self.op("DequantizeLinear", [codes, scale], state.name, axis=0)
        scale = self.const(steps.reshape(()), f"{state.name}.scale")
        return self.op("DequantizeLinear", [codes, scale], state.name)

    def _shared(self, state: TensorState) -> str:
        assert state.codes is not None and state.codebook is not None
        book = state.codebook.numpy().astype(np.float32)
        zero = np.flatnonzero((book == 0) & ~np.signbit(book))
        filler = int(zero[0]) if zero.size else book.size  # the entry a pruned position reads: +0.0
        bits = _index_bits(book.size)
        values = state.codes.numpy().astype(np.int64)
        # the width once the filler must be representable: never narrower than the codes themselves
        layout = self._layout(state, values, bits, _index_bits(max(book.size, filler + 1)), filler)
        if layout.filled and filler == book.size:
            book = np.append(book, np.float32(0.0))
        indices = self.op("Cast", [layout.codes], f"{state.name}.index", to=self.onnx.TensorProto.INT32)
        table = self.const(book, f"{state.name}.codebook")
        if layout.positions is None:
            return self.op("Gather", [table, indices], state.name, axis=0)
        kept = self.op("Gather", [table, indices], f"{state.name}.kept_values", axis=0)
        return self._scatter(state, kept, layout.positions, state.name)

    def _scatter(self, state: TensorState, kept: str, positions: str, name: str | None = None) -> str:
        """``kept`` values (int32 codes or float32 weights) at ``positions`` of a zero tensor of the
        record's shape: the sparse layout expanded (ONNX Runtime folds it once, at load)."""
        dtype = np.float32 if name is not None else np.int32
        zeros = self.op(
            "ConstantOfShape",
            [self.ints([state.numel], "numel")],
            value=self.onnx.numpy_helper.from_array(np.zeros(1, dtype)),
        )
        scattered = self.op("ScatterElements", [zeros, positions, kept], axis=0)
        return self.op(
            "Reshape", [scattered, self.ints(list(state.shape), "shape")], name or f"{state.name}.codes"
        )

    def _layout(
        self,
        state: TensorState,
        values: np.ndarray,
        bits: int,
        filler_bits: int,
        filler: int,
        signed: bool = False,
    ) -> Layout:
        """The integer codes of a record in whichever of two layouts takes fewer bytes:

        * dense: every code (``filler`` at pruned positions), packed at the narrowest ONNX width;
        * sparse: the kept codes and the gaps between their positions (Deep Compression's relative
          index, at 4, 8 or 16 bits; a gap longer than the width allows takes ``filler`` entries on
          pruned positions on the way), turned into positions by ``CumSum``.

        ``filler_bits`` is the code width once ``filler`` must be representable (a codebook that needs a
        +0.0 entry appended).
        """
        flat = values.reshape(-1)
        mask = None if state.mask is None else state.mask.numpy().reshape(-1)
        pruned = mask is not None and not bool(mask.all())
        dense_bits = _width(filler_bits if pruned else bits)
        best: tuple[float, int] = (flat.size * dense_bits / 8, 0)
        kept = np.flatnonzero(mask) if pruned else np.empty(0, np.int64)
        distance = np.diff(kept, prepend=-1)
        for gap_bits in (4, 8, 16) if pruned else ():
            fillers = int(((distance - 1) // ((1 << gap_bits) - 1)).sum())
            cost = (kept.size + fillers) * (_width(filler_bits if fillers else bits) + gap_bits) / 8
            best = min(best, (cost, gap_bits))
        gap_bits = best[1]
        if not gap_bits:
            if pruned:
                flat = np.where(mask, flat, filler)
            codes = self._packed(
                self.fresh(f"{state.name}.codes"), flat.reshape(values.shape), dense_bits, signed
            )
            return Layout(codes, None, pruned)
        limit = (1 << gap_bits) - 1
        fillers = (distance - 1) // limit
        # each kept entry is preceded by its fillers: gaps of ``limit``, then the rest of its distance
        last = np.cumsum(fillers + 1) - 1
        gaps = np.full(int(last[-1]) + 1 if last.size else 0, limit, dtype=np.int64)
        gaps[last] = distance - fillers * limit
        entries = np.full(gaps.size, filler, dtype=np.int64)
        entries[last] = flat[kept]
        filled = bool(fillers.any())
        codes = self._packed(
            self.fresh(f"{state.name}.kept"), entries, _width(filler_bits if filled else bits), signed
        )
        steps = self._packed(self.fresh(f"{state.name}.gaps"), gaps, gap_bits, False)
        tp = self.onnx.TensorProto
        positions = self.op("CumSum", [self.op("Cast", [steps], to=tp.INT64), self.ints([0], "axis")])
        positions = self.op("Sub", [positions, self.const(np.int64(1), "one")], f"{state.name}.positions")
        return Layout(codes, positions, filled)

    # ---- values ----------------------------------------------------------------------------

    def tensor(self, value: Any, dtype: torch.dtype = torch.float32) -> str:
        """An ONNX name for a graph value: a tensor, a run-time int, or a Python number (a constant)."""
        if isinstance(value, str):
            return value
        if isinstance(value, Sym):
            return value.name
        if isinstance(value, (bool, int, float)):
            return self.const(np.asarray(value, dtype=torch.empty((), dtype=dtype).numpy().dtype))
        raise Unsupported(f"value {value!r} is not a tensor")

    def shape(self, items: Sequence[Any]) -> str:
        """A 1-D int64 shape tensor from Python ints and run-time ints."""
        if all(isinstance(i, int) for i in items):
            return self.ints(items, "shape")
        parts: list[str] = []
        run: list[int] = []
        for item in items:
            if isinstance(item, int):
                run.append(item)
                continue
            if run:
                parts.append(self.ints(run, "shape"))
                run = []
            if not isinstance(item, Sym):
                raise Unsupported(f"shape entry {item!r} is not an int")
            parts.append(item.name)
        if run:
            parts.append(self.ints(run, "shape"))
        return self.op("Concat", parts, "shape", axis=0)

    def dims(self, x: str, start: int, end: int | None = None) -> str:
        """``x.shape[start:end]`` as a 1-D int64 tensor."""
        attrs = {"start": start} if end is None else {"start": start, "end": end}
        return self.op("Shape", [x], "dims", **attrs)

    def rank(self, x: str) -> int:
        if x not in self.ranks:
            raise Unsupported(f"the rank of {x} is not known")
        return self.ranks[x]

    def dtype(self, x: str) -> torch.dtype:
        return self.dtypes.get(x, torch.float32)

    def elem(self, dtype: torch.dtype) -> int:
        return self.helper.np_dtype_to_tensor_dtype(torch.empty((), dtype=dtype).numpy().dtype)

    def cast(self, x: str, dtype: torch.dtype) -> str:
        if self.dtype(x) == dtype:
            return x
        out = self.op("Cast", [x], "cast", to=self.elem(dtype))
        self.dtypes[out] = dtype
        return out

    # ---- the walk --------------------------------------------------------------------------

    def run(self, name: str) -> Any:
        gm = self.model.graph_module
        from sqc.frontend.trace import example_inputs

        examples = example_inputs(self.model.inputs)
        try:  # ranks, dtypes and the few static sizes some ops need (the batch stays symbolic)
            ShapeProp(gm).propagate(*examples)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SqcError(f"target onnx: the graph does not run on example inputs ({first})") from None
        inputs, outputs = [], []
        for node in gm.graph.nodes:
            where = f"node {node.name}"
            try:
                if node.op == "placeholder":
                    spec = self.model.inputs[len(inputs)]
                    value = self.fresh(node.name)
                    dims: list[Any] = ["batch", *spec.shape[1:]] if spec.shape else []
                    dtype = getattr(torch, spec.dtype)
                    inputs.append(self.helper.make_tensor_value_info(value, self.elem(dtype), dims))
                elif node.op == "get_attr":
                    value = self.weight(str(node.target))
                elif node.op == "output":
                    outputs = self._outputs(node.args[0])
                    continue
                else:
                    value = self.call(node)
            except Unsupported as exc:
                raise SqcError(f"target onnx: {where} ({_op_text(node)}): {exc}") from None
            self.values[node] = value
            self._note(node, value)
        graph = self.helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        model = self.helper.make_model(
            graph, opset_imports=[self.helper.make_opsetid("", OPSET)], producer_name="sqc"
        )
        model.ir_version = min(model.ir_version, 10)
        return model

    def _note(self, node: fx.Node, value: Any) -> None:
        meta = node.meta.get("tensor_meta")
        if isinstance(value, str) and meta is not None and hasattr(meta, "shape"):
            self.ranks.setdefault(value, len(meta.shape))
            self.dtypes.setdefault(value, meta.dtype)

    def _outputs(self, result: Any) -> list[Any]:
        if isinstance(result, dict):
            items = list(result.items())
        elif isinstance(result, (tuple, list)):
            items = [(f"output_{i}", v) for i, v in enumerate(result)]
        else:
            items = [("output", result)]
        infos = []
        for key, node in items:
            if not isinstance(node, fx.Node) or not isinstance(self.values.get(node), str):
                raise Unsupported(f"graph output {key} is not a tensor")
            value = self.values[node]
            name = self.fresh(str(key))
            self.nodes.append(self.helper.make_node("Identity", [value], [name]))
            meta = node.meta.get("tensor_meta")
            rank = len(meta.shape) if meta is not None else self.rank(value)
            infos.append(
                self.helper.make_tensor_value_info(name, self.elem(self.dtype(value)), [None] * rank)
            )
        return infos

    def call(self, node: fx.Node) -> Any:
        args = fx.node.map_arg(node.args, lambda n: self.values[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.values[n])
        if node.op == "call_method":
            if node.target == "size":
                return self.size(*args, **kwargs)
            raise Unsupported(f"method {node.target} has no ONNX form in sqc")
        name = function_name(node.target) if node.op == "call_function" else None
        if name is None:
            name = aten_name(node.target)
        handler = self.handlers(name or "") if self.handlers is not None else None
        if handler is None:
            raise Unsupported("no ONNX form in sqc's ONNX target")
        try:
            return handler(self, node, *args, **kwargs)
        except TypeError as exc:  # a signature this converter does not know (another torch's overload)
            raise Unsupported(f"arguments not understood ({exc})") from None

    # ---- ops that several handlers share ------------------------------------------------------

    def size(self, x: str, dim: int | None = None) -> Any:
        rank = self.rank(x)
        if dim is None:
            return tuple(Sym(self.dims(x, d, d + 1)) for d in range(rank))
        dim = dim % rank
        return Sym(self.dims(x, dim, dim + 1))


def _op_text(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"method {node.target}"
    return function_name(node.target) or aten_name(node.target) or str(node.target)
