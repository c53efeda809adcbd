"""The sqc IR: a canonical torch.fx GraphModule plus one typed record per tensor.

The graph says *what is computed* (a small, documented op vocabulary, see :mod:`sqc.ops`); the
:class:`TensorState` records say *how every parameter and buffer is stored*: dense floats, a pruning
mask, a k-means codebook with integer codes, a fixed-point format, and the entropy coder. The records
are the single source of truth. The GraphModule's parameters are a materialised view of them
(:meth:`CompressedModel.sync`), kept so that the model stays runnable between passes; the container
and every target read the records, never the module.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import fx

from sqc.errors import VerifyError

Role = Literal["weight", "param", "buffer"]
Coder = Literal["raw", "huffman", "rans"]
CODERS: tuple[Coder, ...] = ("raw", "huffman", "rans")
CODE_DTYPE = torch.int32
"""Integer codes are int32: codebook indices (< 2^16) and fixed-point codes (<= 24 bits) fit, at half
the memory of int64 — on a 138M-weight model that is the difference between 0.55 and 1.1 GB."""


@dataclass(frozen=True)
class FixedPoint:
    """Signed two's-complement fixed point: ``value = code * 2**-frac``.

    ``frac`` holds one entry (per-tensor format) or one per slice along axis 0 (per-channel format).
    Codes lie in ``[-2**(bits-1), 2**(bits-1) - 1]``. Conversion from float rounds half to even
    (``torch.round``) and then saturates to that range; the C and HLS targets read the stored codes, so
    weights never need re-rounding, and the rule is stated here once.
    """

    bits: int
    frac: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 24:
            raise ValueError(f"fixed-point width must be 2..24 bits, got {self.bits}")
        if not self.frac:
            raise ValueError("fixed-point format needs at least one fraction length")
        if any(not -64 <= f <= 64 for f in self.frac):
            raise ValueError(f"fraction lengths must be within -64..64, got {self.frac}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def per_channel(self) -> bool:
        return len(self.frac) > 1

    def scale(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The step ``2**-frac`` broadcastable against a tensor of ``shape`` (float64, exact)."""
        steps = torch.tensor([math.ldexp(1.0, -f) for f in self.frac], dtype=torch.float64)
        if self.per_channel:
            return steps.reshape((-1,) + (1,) * (len(shape) - 1))
        return steps.reshape(())

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        """Float values -> integer codes (round half to even, then saturate)."""
        scaled = values.to(torch.float64) / self.scale(tuple(values.shape))
        return torch.round(scaled).clamp_(self.qmin, self.qmax).to(CODE_DTYPE)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes -> float32 values; exact because the step is a power of two and bits <= 24."""
        return (codes.to(torch.float64) * self.scale(tuple(codes.shape))).to(torch.float32)


@dataclass
class TensorState:
    """How one parameter or buffer is stored. Exactly one value representation is active:

    * dense: ``dense`` holds float32 values (zeros where ``mask`` is False);
    * shared: ``codes`` index ``codebook`` (K float32 centroids, optionally fixed point via ``fmt``);
    * fixed: ``codes`` are fixed-point integers in format ``fmt``.

    ``mask`` (bool, True = kept) may accompany any of them; codes at pruned positions are 0 so that the
    encoding is canonical. ``coder`` is the entropy coder for the codes and the sparse index.
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    dense: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    codebook: torch.Tensor | None = None
    fmt: FixedPoint | None = None
    coder: Coder = "raw"

    @property
    def layer(self) -> str:
        """The module path that owns the tensor (``fc1`` for ``fc1.weight``)."""
        return self.name.rpartition(".")[0] or self.name

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def kind(self) -> Literal["dense", "shared", "fixed"]:
        if self.codebook is not None:
            return "shared"
        if self.codes is not None:
            return "fixed"
        return "dense"

    @property
    def kept(self) -> int:
        return self.numel if self.mask is None else int(torch.count_nonzero(self.mask))

    @property
    def density(self) -> float:
        return self.kept / self.numel if self.numel else 1.0

    def decode(self) -> torch.Tensor:
        """The float32 tensor this record stands for: what every target must reproduce.

        For a dense record this is the stored tensor itself, not a copy: callers must not modify it
        in place (passes never do; they build new tensors and store those).
        """
        if self.codebook is not None and self.codes is not None:
            values = _gather(self.codebook, self.codes)
            if self.mask is not None:  # code 0 is a centroid: pruned positions need the mask
                values = values.masked_fill_(~self.mask, 0.0)
        elif self.codes is not None and self.fmt is not None:
            values = self.fmt.dequantize(self.codes)  # pruned codes are 0, which decodes to +0.0
        elif self.dense is not None:
            values = self.dense  # pruned values are stored as +0.0 (set_mask); no copy is made
        else:
            raise VerifyError(f"tensor {self.name}: no value representation")
        return values.reshape(self.shape)

    def set_dense(self, values: torch.Tensor) -> None:
        """Replace the value by float32 ``values`` (taken over, not copied), dropping codes and codebook.

        Pruned positions are zeroed (as a new tensor) when a mask is set.
        """
        self.dense = values.detach().to(torch.float32).reshape(self.shape)
        self.codes = self.codebook = self.fmt = None
        if self.mask is not None:
            self.set_mask(self.mask)

    def set_mask(self, mask: torch.Tensor | None) -> None:
        """Set the pruning mask and zero what it removes, in whichever representation is active."""
        self.mask = None if mask is None else mask.to(torch.bool).reshape(self.shape).contiguous()
        if self.mask is None:
            return
        if self.codes is not None:
            self.codes = self.codes.masked_fill(~self.mask, 0)
        if self.dense is not None:
            self.dense = self.dense.masked_fill(~self.mask, 0.0)

    def verify(self) -> None:
        """Raise :class:`VerifyError` unless the record is internally consistent."""
        where = f"tensor {self.name}"
        if self.mask is not None and (self.mask.dtype != torch.bool or tuple(self.mask.shape) != self.shape):
            raise VerifyError(f"{where}: mask must be bool of shape {self.shape}")
        if self.coder not in CODERS:
            raise VerifyError(f"{where}: unknown coder {self.coder!r}")
        if self.codes is None:
            if self.dense is None or tuple(self.dense.shape) != self.shape:
                raise VerifyError(f"{where}: dense value missing or of the wrong shape")
            if self.dense.dtype != torch.float32:
                raise VerifyError(f"{where}: dense values must be float32, got {self.dense.dtype}")
            if not bool(torch.isfinite(self.dense).all()):
                raise VerifyError(f"{where}: NaN or Inf in the weights")
            if self.mask is not None and bool(((self.dense != 0) & ~self.mask).any()):
                raise VerifyError(f"{where}: non-zero values at pruned positions")
            if self.coder != "raw":
                raise VerifyError(f"{where}: coder {self.coder} needs integer codes")
            return
        if tuple(self.codes.shape) != self.shape or self.codes.dtype != CODE_DTYPE:
            raise VerifyError(f"{where}: codes must be int32 of shape {self.shape}")
        if self.dense is not None:
            raise VerifyError(f"{where}: both dense values and codes are set")
        if self.mask is not None and bool(((self.codes != 0) & ~self.mask).any()):
            raise VerifyError(f"{where}: non-zero codes at pruned positions")
        if self.codebook is not None:
            k = self.codebook.numel()
            if self.codebook.dim() != 1 or k == 0 or self.codebook.dtype != torch.float32:
                raise VerifyError(f"{where}: codebook must be a non-empty float32 vector")
            if self.numel and (int(self.codes.min()) < 0 or int(self.codes.max()) >= k):
                raise VerifyError(f"{where}: codes outside the codebook of {k} entries")
            if not bool(torch.isfinite(self.codebook).all()):
                raise VerifyError(f"{where}: NaN or Inf in the codebook")
            if self.fmt is not None:
                if self.fmt.per_channel:
                    raise VerifyError(f"{where}: a codebook format must be per-tensor")
                if not torch.equal(self.fmt.dequantize(self.fmt.quantize(self.codebook)), self.codebook):
                    raise VerifyError(f"{where}: codebook is not representable in its fixed-point format")
        else:
            if self.fmt is None:
                raise VerifyError(f"{where}: integer codes without a codebook or a fixed-point format")
            if self.fmt.per_channel and len(self.fmt.frac) != self.shape[0]:
                raise VerifyError(
                    f"{where}: {len(self.fmt.frac)} channel formats for {self.shape[0]} channels"
                )
            if self.numel and (
                int(self.codes.min()) < self.fmt.qmin or int(self.codes.max()) > self.fmt.qmax
            ):
                raise VerifyError(f"{where}: codes outside the {self.fmt.bits}-bit range")

    def bits_per_weight(self) -> float:
        """Bits of the value alphabet (before entropy coding): log2(K) or the fixed-point width, else 32."""
        if self.codebook is not None:
            return max(1.0, math.ceil(math.log2(max(2, self.codebook.numel()))))
        if self.fmt is not None:
            return float(self.fmt.bits)
        return 32.0


def _gather(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codebook[codes]`` without widening the int32 codes: plain indexing converts them to int64
    first, an 800 MB temporary on a 100M-weight layer; ``index_select`` takes int32 as it is."""
    return torch.index_select(codebook, 0, codes.reshape(-1)).reshape(codes.shape)


@dataclass(frozen=True)
class InputSpec:
    """A graph input as seen by the example the model was traced with."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass
class PassRecord:
    """What one pass did, as stored in the container and shown by ``inspect``."""

    spec: str
    changed: bool
    stats: dict[str, float | int | str] = field(default_factory=dict)
    layers: dict[str, dict[str, float | int | str]] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "changed": self.changed,
            "stats": self.stats,
            "layers": self.layers,
            "diagnostics": self.diagnostics,
        }

    @staticmethod
    def from_json(obj: dict[str, object]) -> PassRecord:
        return PassRecord(
            spec=str(obj["spec"]),
            changed=bool(obj["changed"]),
            stats=dict(obj.get("stats", {})),  # type: ignore[call-overload]
            layers=dict(obj.get("layers", {})),  # type: ignore[call-overload]
            diagnostics=list(obj.get("diagnostics", [])),  # type: ignore[call-overload]
        )


@dataclass
class CompressedModel:
    """The IR: canonical graph + tensor records + inputs + what the pipeline did."""

    graph_module: fx.GraphModule
    tensors: dict[str, TensorState]
    inputs: list[InputSpec]
    pipeline: str = ""
    report: list[PassRecord] = field(default_factory=list)
    seed: int = 0
    """The seed the pipeline ran with (``sqc.compress(seed=…)``); stored in the file's graph section."""

    def weights(self, pattern: str = "*") -> Iterator[TensorState]:
        """Compressible weight tensors (conv/linear kernels) whose name or layer matches the glob."""
        for state in self.tensors.values():
            if state.role == "weight" and matches(state, pattern):
                yield state

    def sync(self, names: list[str] | None = None) -> None:
        """Point the GraphModule's tensors at the decoded record values, so it computes what the
        records say. The module's tensor is rebound, never written in place: a dense record and its
        parameter share one storage, and snapshots a pass took before changing a record stay valid."""
        for name in names if names is not None else list(self.tensors):
            state = self.tensors[name]
            self.release(name)  # let go of the old values before the new ones are built
            module = self.graph_module
            held = module.get_parameter(name) if state.role != "buffer" else module.get_buffer(name)
            held.data = state.decode()

    def release(self, name: str) -> None:
        """Drop the module's copy of a tensor while a pass rebuilds its record; the pass syncs it after."""
        module = self.graph_module
        state = self.tensors[name]
        held = module.get_parameter(name) if state.role != "buffer" else module.get_buffer(name)
        held.data = torch.empty(0)

    def verify(self) -> None:
        """Check every record and that the module holds exactly what the records decode to."""
        params = dict(self.graph_module.named_parameters())
        buffers = dict(self.graph_module.named_buffers())
        missing = (set(params) | set(buffers)) - set(self.tensors)
        if missing:
            raise VerifyError(f"tensors without a record: {', '.join(sorted(missing))}")
        for name, state in self.tensors.items():
            state.verify()
            held = params.get(name, buffers.get(name))
            if held is None:
                raise VerifyError(f"tensor {name}: recorded but not in the graph module")
            if tuple(held.shape) != state.shape:
                raise VerifyError(f"tensor {name}: module shape {tuple(held.shape)} != record {state.shape}")
            value = state.decode()
            if held.data_ptr() != value.data_ptr() and not torch.equal(held.detach(), value):
                raise VerifyError(f"tensor {name}: module value differs from the record (missing sync?)")
        self.graph_module.graph.lint()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.graph_module(*inputs)


def matches(state: TensorState, pattern: str) -> bool:
    """A glob matches a tensor by its full name (``fc1.weight``) or its layer (``fc1``)."""
    return fnmatch.fnmatchcase(state.name, pattern) or fnmatch.fnmatchcase(state.layer, pattern)
