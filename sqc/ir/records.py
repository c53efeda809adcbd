"""The sqc IR: a canonical torch.fx GraphModule plus one typed record per tensor.

The graph says *what is computed* (a small, documented op vocabulary, see :mod:`sqc.ir.ops`); the
:class:`TensorState` records say *how every parameter and buffer is stored*: dense floats, a pruning
mask, a k-means codebook with integer codes, a fixed-point format, and the entropy coder. The records
are the single source of truth. The GraphModule's parameters are a materialised view of them
(:meth:`CompressedModel.sync`), kept so that the model stays runnable between passes; the container
and every target read the records, never the module.
"""

from __future__ import annotations

import fnmatch
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import fx

from sqc.errors import VerifyError
from sqc.ir.names import check_names

Role = Literal["weight", "param", "buffer"]
Coder = Literal["raw", "huffman", "rans"]
CODERS: tuple[Coder, ...] = ("raw", "huffman", "rans")
CODE_DTYPE = torch.int32
"""Fixed-point codes (<= 24 bits) are int32, half the memory of int64."""
INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32)
"""Codebook indices may be any of these (the range check is against the codebook size); ``share`` and
the reader use the narrowest that holds the codebook (:func:`index_dtype`): on VGG-16 shared at 5 bits,
uint8 codes take 132 MiB where int32 took 528. Index with ``codes.long()``: torch reads a uint8 index
tensor as a boolean mask."""


def index_dtype(entries: int) -> torch.dtype:
    """The dtype of the codes indexing a codebook of ``entries`` centroids (at most 2^16)."""
    if entries <= 1 << 8:
        return torch.uint8
    return torch.int16 if entries <= 1 << 15 else torch.int32


def all_finite(values: torch.Tensor) -> bool:
    """True when no element is NaN or ±Inf.

    ``torch.isfinite(t).all()`` builds an ``abs`` copy and two bool tensors (+690 MiB and 0.8 s on a
    100M-weight layer); ``aminmax`` is one pass with no temporaries (0.07 s): NaN propagates to both
    results and an infinity is the minimum or the maximum, so both are finite exactly when every element
    is.
    """
    if values.numel() == 0 or not values.is_floating_point():  # integer and bool tensors are finite
        return True
    low, high = torch.aminmax(values.detach())
    return math.isfinite(float(low)) and math.isfinite(float(high))


MAX_STEP_MULT = 255
"""Largest step multiplier of a scaled fixed-point format (8 bits: the step is set to 0.4 % or better)."""
MAX_SCALED_BITS = 16
"""Widest code of a scaled format: ``|code * mult| < 2**23``, so every value is an exact float32."""


@dataclass(frozen=True)
class FixedPoint:
    """Signed two's-complement fixed point: ``value = code * mult * 2**-frac``.

    ``frac`` holds one entry (per-tensor format) or one per slice along axis 0 (per-channel format).
    ``mult`` is empty for the classic power-of-two step (``mult = 1``), or holds one integer multiplier
    in ``1..255`` per ``frac`` entry: a *scaled* format, whose step ``mult * 2**-frac`` is set freely
    (rate control, ``quant{qp=..}``) and still means integer arithmetic to the integer targets (the
    multiplier folds into the requantization of the layer's output). Codes lie in
    ``[-2**(bits-1), 2**(bits-1) - 1]``. Conversion from float rounds half to even (``torch.round``)
    and then saturates to that range; the C and HLS targets read the stored codes, so weights never
    need re-rounding, and the rule is stated here once.
    """

    bits: int
    frac: tuple[int, ...]
    mult: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 24:
            raise ValueError(f"fixed-point width must be 2..24 bits, got {self.bits}")
        if not self.frac:
            raise ValueError("fixed-point format needs at least one fraction length")
        if any(not -64 <= f <= 64 for f in self.frac):
            raise ValueError(f"fraction lengths must be within -64..64, got {self.frac}")
        if self.mult:
            if len(self.mult) != len(self.frac):
                raise ValueError(f"{len(self.mult)} step multipliers for {len(self.frac)} fraction lengths")
            if any(not 1 <= m <= MAX_STEP_MULT for m in self.mult):
                raise ValueError(f"step multipliers must be within 1..{MAX_STEP_MULT}, got {self.mult}")
            if self.bits > MAX_SCALED_BITS:
                raise ValueError(f"a scaled fixed-point format holds at most {MAX_SCALED_BITS}-bit codes")

    @classmethod
    def scaled(cls, bits: int, step: float) -> FixedPoint:
        """A per-tensor format whose step is ``step`` to 8 significant bits (``mult`` in 128..255, or a
        plain power of two when the step is one)."""
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"quantization step must be a positive number, got {step}")
        frac = 7 - math.floor(math.log2(step))
        mult = round(step * 2.0**frac)
        if mult > MAX_STEP_MULT:  # a step just below a power of two rounds up to 256
            frac, mult = frac - 1, 128
        while mult % 2 == 0 and mult > 1:  # the canonical form: an odd multiplier (or 1)
            frac, mult = frac - 1, mult // 2
        if not -64 <= frac <= 64:
            raise ValueError(f"quantization step {step:g} is outside 2^-57..2^64")
        return cls(bits, (frac,), () if mult == 1 else (mult,))

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def per_channel(self) -> bool:
        return len(self.frac) > 1

    @property
    def multipliers(self) -> tuple[int, ...]:
        """One multiplier per ``frac`` entry (1 for a power-of-two step)."""
        return self.mult or (1,) * len(self.frac)

    @property
    def steps(self) -> tuple[float, ...]:
        """The step of every slice (exact: an 8-bit multiplier times a power of two)."""
        return tuple(math.ldexp(float(m), -f) for m, f in zip(self.multipliers, self.frac, strict=True))

    def scale(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The step ``mult * 2**-frac`` broadcastable against a tensor of ``shape`` (float64, exact)."""
        steps = torch.tensor(self.steps, dtype=torch.float64)
        if self.per_channel:
            return steps.reshape((-1,) + (1,) * (len(shape) - 1))
        return steps.reshape(())

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        """Float values -> integer codes (round half to even, then saturate)."""
        scaled = values.to(torch.float64) / self.scale(tuple(values.shape))
        return torch.round(scaled).clamp_(self.qmin, self.qmax).to(CODE_DTYPE)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes -> float32 values, computed in float32 and exact: ``|code * mult| < 2**24`` fits
        the float32 significand, the step (at most 8 significant bits) is a float32 too, and the rest of
        the product is a power of two between 2**-64 and 2**64, inside float32's normal range. (Half the
        memory of a float64 product: a 42M-weight tensor loads in 650 MB instead of 1 GB.)"""
        values = codes.to(torch.float32)
        return values.mul_(self.scale(tuple(codes.shape)).to(torch.float32))


def best_format(values: torch.Tensor, bits: int, *, per_channel: bool) -> FixedPoint:
    """The fixed-point format with the least squared error (per tensor, or per slice along axis 0)."""
    if values.numel() == 0:  # nothing to fit: any format represents an empty tensor exactly
        return FixedPoint(bits, (0,))
    rows = values.reshape(values.shape[0], -1) if per_channel else values.reshape(1, -1)
    rows = rows.to(torch.float64)
    peak = rows.abs().amax(dim=1)
    qmax = (1 << (bits - 1)) - 1
    # the fraction length that just covers the peak; a zero row gets the finest representable step
    cover = torch.where(
        peak > 0, torch.floor(torch.log2(qmax / peak.clamp(min=1e-300))), torch.full_like(peak, 64.0 - bits)
    ).clamp(-64 + 4, 64 - 4)
    best_frac = cover.to(torch.int64)
    best_err = torch.full_like(peak, math.inf)
    for delta in (0, 1, 2, 3):  # finer steps that clip the largest values
        frac = (cover + delta).to(torch.int64)
        step = torch.pow(2.0, -frac.to(torch.float64)).unsqueeze(1)
        codes = torch.round(rows / step).clamp(-qmax - 1, qmax)
        err = ((codes * step - rows) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_frac = torch.where(better, frac, best_frac)
    return FixedPoint(bits, tuple(int(f) for f in best_frac))


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

    def value_tensors(self) -> tuple[torch.Tensor | None, ...]:
        """The tensors that make up the value: ``(dense, mask, codes, codebook)``."""
        return (self.dense, self.mask, self.codes, self.codebook)

    def __getstate__(self) -> dict[str, object]:
        # private caches (``_verified``, ``_synced``, encoded sizes) hold weak references: not picklable,
        # and meaningless in another process
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

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
        """Weights the mask keeps (counted once per mask: passes ask often, and a mask is never written
        in place without its version counter saying so)."""
        if self.mask is None:
            return self.numel
        cached = self.__dict__.get("_kept")
        if cached is not None and cached[0]() is self.mask and cached[1] == self.mask._version:
            return cached[2]
        count = int(torch.count_nonzero(self.mask))
        self.__dict__["_kept"] = (weakref.ref(self.mask), self.mask._version, count)
        return count

    @property
    def density(self) -> float:
        return self.kept / self.numel if self.numel else 1.0

    def decode(self) -> torch.Tensor:
        """The float32 tensor this record stands for: what every target must reproduce.

        For a dense record this is the stored tensor itself, not a copy: callers must not modify it
        in place (passes never do; they build new tensors and store those).
        """
        if self.codebook is not None and self.codes is not None:
            values = _gather(self.codebook, self.codes, self.mask)
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
        """Raise :class:`VerifyError` unless the record is internally consistent.

        The structural checks always run; the whole-tensor ones (finite values, nothing kept at pruned
        positions, codes in range) run once per value: a record whose tensors are unchanged since it
        last passed (:class:`RecordVersion`) is not scanned again.
        """
        where = f"tensor {self.name}"
        if self.mask is not None and (self.mask.dtype != torch.bool or tuple(self.mask.shape) != self.shape):
            raise VerifyError(f"{where}: mask must be bool of shape {self.shape}")
        if self.coder not in CODERS:
            raise VerifyError(f"{where}: unknown coder {self.coder!r}")
        if self.codes is None:
            if self.dense is None or tuple(self.dense.shape) != self.shape:
                raise VerifyError(f"{where}: dense value missing or of the wrong shape")
            if self.dense.dtype != torch.float32 and not (self.role == "buffer" and self.mask is None):
                # buffers such as position ids or masks keep their dtype; everything passes touch is float32
                raise VerifyError(f"{where}: dense values must be float32, got {self.dense.dtype}")
            if self.coder != "raw":
                raise VerifyError(f"{where}: coder {self.coder} needs integer codes")
        else:
            allowed = INDEX_DTYPES if self.codebook is not None else (CODE_DTYPE,)
            if tuple(self.codes.shape) != self.shape or self.codes.dtype not in allowed:
                kinds = "/".join(str(d).removeprefix("torch.") for d in allowed)
                raise VerifyError(f"{where}: codes must be {kinds} of shape {self.shape}")
            if self.dense is not None:
                raise VerifyError(f"{where}: both dense values and codes are set")
            if self.codebook is not None:
                book = self.codebook
                if book.dim() != 1 or book.numel() == 0 or book.dtype != torch.float32:
                    raise VerifyError(f"{where}: codebook must be a non-empty float32 vector")
                if self.fmt is not None and (self.fmt.per_channel or self.fmt.mult):
                    raise VerifyError(f"{where}: a codebook format is per-tensor with a power-of-two step")
            elif self.fmt is None:
                raise VerifyError(f"{where}: integer codes without a codebook or a fixed-point format")
            elif self.fmt.per_channel and len(self.fmt.frac) != self.shape[0]:
                raise VerifyError(
                    f"{where}: {len(self.fmt.frac)} channel formats for {self.shape[0]} channels"
                )
        stamp = self.__dict__.get("_verified")
        if stamp is not None and stamp.holds_for(self):
            return
        self._verify_values(where)
        self.__dict__["_verified"] = RecordVersion(self)

    def _verify_values(self, where: str) -> None:
        """The whole-tensor checks of :meth:`verify`."""
        if self.codes is None:
            assert self.dense is not None
            if not all_finite(self.dense):
                raise VerifyError(f"{where}: NaN or Inf in the weights")
            if self.mask is not None and _nonzero_where_pruned(self.dense, self.mask):
                raise VerifyError(f"{where}: non-zero values at pruned positions")
            return
        if self.mask is not None and _nonzero_where_pruned(self.codes, self.mask):
            raise VerifyError(f"{where}: non-zero codes at pruned positions")
        low, high = (int(v) for v in torch.aminmax(self.codes)) if self.numel else (0, 0)
        if self.codebook is not None:
            k = self.codebook.numel()
            if low < 0 or high >= k:
                raise VerifyError(f"{where}: codes outside the codebook of {k} entries")
            if not all_finite(self.codebook):
                raise VerifyError(f"{where}: NaN or Inf in the codebook")
            if self.fmt is not None and not torch.equal(
                self.fmt.dequantize(self.fmt.quantize(self.codebook)), self.codebook
            ):
                raise VerifyError(f"{where}: codebook is not representable in its fixed-point format")
        else:
            assert self.fmt is not None
            if low < self.fmt.qmin or high > self.fmt.qmax:
                raise VerifyError(f"{where}: codes outside the {self.fmt.bits}-bit range")

    def bits_per_weight(self) -> float:
        """Bits of the value alphabet (before entropy coding): log2(K) or the fixed-point width, else 32."""
        if self.codebook is not None:
            return max(1.0, math.ceil(math.log2(max(2, self.codebook.numel()))))
        if self.fmt is not None:
            return float(self.fmt.bits)
        return 32.0


SLICE = 1 << 22
"""Elements per slice when a whole-tensor computation walks a large tensor: temporaries stay a few MiB
instead of the tensor's size (on a 100M-weight layer, hundreds of MiB each)."""


def slices(numel: int, step: int = SLICE) -> Iterator[slice]:
    """Consecutive slices of ``step`` elements covering a flat tensor of ``numel`` elements."""
    for start in range(0, numel, step):
        yield slice(start, start + step)


def _nonzero_where_pruned(values: torch.Tensor, mask: torch.Tensor) -> bool:
    """``((values != 0) & ~mask).any()`` slice by slice: the whole-tensor expression allocates three
    temporaries the size of the tensor (+294 MiB on a 100M-weight layer)."""
    flat_values, flat_mask = values.reshape(-1), mask.reshape(-1)
    return any(
        bool((flat_values[part] != 0).logical_and_(~flat_mask[part]).any())
        for part in slices(flat_values.numel())
    )


def _gather(codebook: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``codebook[codes]``, zero where ``mask`` is False (code 0 is a centroid, so pruned positions
    need the mask), slice by slice: ``index_select`` wants int32 or int64 indices and the codes may be
    narrower, and ``~mask`` of the whole tensor would be one more temporary of the tensor's size."""
    flat_codes = codes.reshape(-1)
    flat_mask = None if mask is None else mask.reshape(-1)
    values = torch.empty(flat_codes.numel(), dtype=codebook.dtype)
    for part in slices(values.numel()):
        torch.index_select(codebook, 0, flat_codes[part].to(torch.int32), out=values[part])
        if flat_mask is not None:
            values[part].masked_fill_(~flat_mask[part], 0.0)
    return values.reshape(codes.shape)


class RecordVersion:
    """The exact value representation a record has now, to tell later whether it is still the same.

    Records are values: passes replace their tensors and never write into them, and an in-place torch
    operation on one of them (``codes[0] = 9``) bumps its version counter. So "the same tensor objects
    at the same versions, with the same shape and format" means "the same values". The tensors are
    held by weak reference: a freed tensor whose address is reused by a new one cannot pass for it,
    and the stamp keeps nothing alive. Work is O(1), which is what lets the verifier, the encoded-size
    cache and :meth:`CompressedModel.sync` skip whole-tensor work on records a pass did not touch.
    """

    __slots__ = ("_key", "_refs")

    def __init__(self, state: TensorState) -> None:
        self._refs = tuple(None if t is None else weakref.ref(t) for t in state.value_tensors())
        self._key = self._key_of(state)

    @staticmethod
    def _key_of(state: TensorState) -> tuple[object, ...]:
        versions = tuple(-1 if t is None else t._version for t in state.value_tensors())
        return (state.shape, state.fmt, versions)

    def holds_for(self, state: TensorState) -> bool:
        if self._key != self._key_of(state):
            return False
        parts = state.value_tensors()
        return all(
            (ref is None and t is None) or (ref is not None and ref() is t)
            for ref, t in zip(self._refs, parts, strict=True)
        )


MAX_INPUT_ELEMENTS = 1 << 26
"""The most elements a model's inputs may have together (67M: 256 MiB of float32; an ImageNet image
is 150K, a batch of 64 of them 9.6M). sqc builds example inputs of the declared shapes (tracing,
shape propagation, ``decompress -o .pt2``), so a shape read from a file or typed by a user is checked
against it before anything is allocated."""


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
    aliases: dict[str, str] = field(default_factory=dict)
    """Tied tensors: another name of a tensor -> the name of its record (GPT-2's ``lm_head.weight`` ->
    ``transformer.wte.weight``). The tensor is stored and compressed once; the graph reads it by its
    record's name, and the restored module holds the one parameter under both names, still tied."""

    def __post_init__(self) -> None:
        # Names are checked once, here, against the rule every reader and target shares: a name that
        # reads differently in fx's source, nn.Module or a C identifier gives a silently different model.
        check_names(self.tensors)

    def weights(self, pattern: str = "*") -> Iterator[TensorState]:
        """Compressible weight tensors (conv/linear kernels) whose name or layer matches the glob."""
        for state in self.tensors.values():
            if state.role == "weight" and matches(state, pattern):
                yield state

    def sync(self, names: list[str] | None = None) -> None:
        """Point the GraphModule's tensors at the decoded record values, so it computes what the
        records say. The module's tensor is rebound, never written in place: a dense record and its
        parameter share one storage, and snapshots a pass took before changing a record stay valid.

        Each synced tensor is stamped (the record's :class:`RecordVersion`, the value bound and the
        versions of both), so :meth:`verify` can tell in O(1) that the module still holds exactly
        this value instead of decoding the record again and comparing every element.
        """
        for name in names if names is not None else list(self.tensors):
            state = self.tensors[name]
            self.release(name)  # let go of the old values before the new ones are built
            held = self._held(name)
            values = state.decode()
            held.data = values
            state.__dict__["_synced"] = (RecordVersion(state), values, values._version, held._version)

    def release(self, name: str) -> None:
        """Drop the module's copy of a tensor while a pass rebuilds its record; the pass syncs it after."""
        self.tensors[name].__dict__.pop("_synced", None)
        self._held(name).data = torch.empty(0)

    def _held(self, name: str) -> torch.Tensor:
        module = self.graph_module
        return module.get_parameter(name) if self.tensors[name].role != "buffer" else module.get_buffer(name)

    def verify(self) -> None:
        """Check every record and that the module holds exactly what the records decode to."""
        params = dict(self.graph_module.named_parameters(remove_duplicate=False))
        buffers = dict(self.graph_module.named_buffers(remove_duplicate=False))
        missing = (set(params) | set(buffers)) - set(self.tensors) - set(self.aliases)
        if missing:
            raise VerifyError(f"tensors without a record: {', '.join(sorted(missing))}")
        for name, state in self.tensors.items():
            state.verify()
            held = params.get(name, buffers.get(name))
            if held is None:
                raise VerifyError(f"tensor {name}: recorded but not in the graph module")
            if tuple(held.shape) != state.shape:
                raise VerifyError(f"tensor {name}: module shape {tuple(held.shape)} != record {state.shape}")
            if _still_synced(state, held):
                continue
            value = state.decode()
            if held.data_ptr() != value.data_ptr() and not torch.equal(held.detach(), value):
                raise VerifyError(f"tensor {name}: module value differs from the record (missing sync?)")
        self.graph_module.graph.lint()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.graph_module(*inputs)


def _still_synced(state: TensorState, held: torch.Tensor) -> bool:
    """Whether ``held`` is untouched since :meth:`CompressedModel.sync` bound it to the record's value:
    the record unchanged, ``held`` still on the bound storage with the same layout, and neither written
    in place since (version counters). The bound value is kept alive by the stamp, so its address
    cannot have been reused."""
    stamp = state.__dict__.get("_synced")
    if stamp is None:
        return False
    record, values, values_version, held_version = stamp
    return (
        record.holds_for(state)
        and held.data_ptr() == values.data_ptr()
        and held.dtype == values.dtype
        and held.stride() == values.stride()
        and held._version == held_version
        and values._version == values_version
    )


def matches(state: TensorState, pattern: str) -> bool:
    """A glob matches a tensor by its full name (``fc1.weight``) or its layer (``fc1``)."""
    return fnmatch.fnmatchcase(state.name, pattern) or fnmatch.fnmatchcase(state.layer, pattern)


Fields = tuple[Any, ...]
_FIELDS = ("dense", "mask", "codes", "codebook", "fmt", "coder")


def snapshot(states: list[TensorState]) -> dict[str, Fields]:
    """The records' value fields. Passes replace tensors and never write them in place, so holding
    the references is an exact copy at no cost."""
    return {s.name: tuple(getattr(s, f) for f in _FIELDS) for s in states}


def restore(model: CompressedModel, saved: dict[str, Fields], names: list[str] | None = None) -> None:
    """Put the snapshotted records back exactly and make the module compute them again."""
    names = list(saved) if names is None else names
    for name in names:
        state = model.tensors[name]
        for attr, value in zip(_FIELDS, saved[name], strict=True):
            setattr(state, attr, value)
    model.sync(names)
