"""``quant``: fixed-point quantization of weights, or of the codebook when ``share`` ran."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from sqc.compiler.pass_base import (
    QUIET,
    LayerMap,
    OptionError,
    Pass,
    PassContext,
    PassResult,
    Stat,
    check_range,
)
from sqc.errors import PipelineError
from sqc.ir.records import MAX_SCALED_BITS, CompressedModel, FixedPoint, TensorState, best_format, slices
from sqc.passes._common import (
    change_stats,
    encoded_bytes,
    is_overridden,
    layer_stats,
    override,
    selected,
    totals,
    unused_overrides,
)
from sqc.passes._rate import rdo_levels

QP_MIN, QP_MAX = -200, 40
"""``qp`` range: steps from 2^-50 to 2^10, far past any weight range in either direction."""
DEFAULT_RDO = 0.1
"""Measured on LeNet-300-100 (dense and 90 % pruned, qp -34..-18): 0.5-2 % fewer bytes at equal weight
MSE at high rates, 3-8 % at low rates; 0.2 and above lose at high rates."""
Fit = Literal["gain", "mse", "none"]
DEFAULT_FIT: Fit = "gain"
"""How the stored step is refitted to the chosen codes (:func:`fitted_step`)."""


def qp_step(qp: int) -> float:
    """The quantization step of ``qp`` (NNCodec's convention at density 2: four steps per octave)."""
    return 2.0 ** (qp / 4)


@dataclass(frozen=True)
class Quant(Pass):
    """Round to signed fixed point ``code * 2**-frac`` with ``bits`` bits, or with a free step (``qp``).

    The fraction length is chosen per tensor (or per output channel with ``granularity=channel``)
    among the lengths around the one that just covers the largest magnitude, keeping the one with the
    least squared error — clipping a rare outlier sometimes buys a finer step for everyone else.
    Rounding is half to even, then saturation to the code range (see
    :class:`sqc.ir.records.FixedPoint`). After
    ``share`` the codebook is quantized instead (always per tensor), and the codes stay.

    ``params=N`` also stores the other parameters — biases, BatchNorm affine, PReLU slopes — as
    ``N``-bit fixed point, per tensor (``params=0`` leaves them float32). On a small pruned network they
    are a large share of the file: LeNet-300-100's 410 float32 biases are 1.6 KB next to ~22 KB of coded
    weights, and a 1,000-parameter model's biases are a tenth of its file. The default, 16, halves them
    at a relative error of ~2^-16 and changed no top-1 at any width on either LeNet
    (``benchmarks/bench_defaults.py``).

    ``qp=Q`` sets the rate instead of the width: every selected tensor gets the step ``2**(Q/4)`` (Q is
    NNCodec's quantization parameter at its default density; ``per_layer`` then overrides ``qp``), kept to
    8 significant bits as ``mult * 2**-frac`` (a *scaled* format, :class:`sqc.ir.records.FixedPoint`), and the
    codes are as wide as the largest weight needs: nothing is clipped. ``rdo=r`` then picks each code
    to minimise ``(w - code*step)**2 + lambda * R(code)`` with ``lambda = r * step**2`` and ``R`` the bits
    the context coder's own model charges (:func:`sqc.passes._rate.rdo_levels`): weights near a
    decision boundary move to the cheaper level, small ones to zero. ``rdo=0`` is plain rounding.
    The stored step is then refitted to the chosen levels (``fit``, :func:`fitted_step`): ``gain``
    (default) scales them so that the layer's output keeps its gain (rounding most small weights to
    zero otherwise attenuates every layer, which frozen batch-norm statistics pass on), ``mse`` takes
    the least-squares scale when closer, ``none`` the qp step; with ``granularity=channel`` every output
    channel's step is refitted to its own codes (chosen at the qp step; a step per channel in the
    file, ~2 bytes each). Zero levels become pruned positions (a pruned tensor's always, an unpruned
    one's when at least half its levels are zero): the context coder codes where the non-zero levels
    are more cheaply than zeros.
    """

    name = "quant"
    summary = "fixed-point quantization (per tensor or per channel); quantizes the codebook after share"
    conflicts = {"entropy-coded": "huffman or rans must come after every pass that changes weights"}
    establishes = frozenset({"codes", "fixed-point"})

    bits: int = 8
    granularity: Literal["tensor", "channel"] = "tensor"
    per_layer: LayerMap = ()
    layers: str = "*"
    params: int = 16
    qp: int | Literal["auto"] | None = field(default=None, metadata=QUIET)
    rdo: float = field(default=DEFAULT_RDO, metadata=QUIET)
    fit: Fit = field(default=DEFAULT_FIT, metadata=QUIET)
    budget: float | None = field(default=None, metadata=QUIET)

    def __post_init__(self) -> None:
        check_range("bits", self.bits, 2, 16)
        if self.params:
            check_range("params", self.params, 2, 24)
        check_range("rdo", self.rdo, 0, 100)
        if self.qp is None:
            for layer, value in self.per_layer:
                check_range(f"per_layer[{layer}]", value, 2, 16)
            if self.budget is not None:
                raise OptionError("budget", "only applies with qp=auto")
            return
        if self.budget is not None:
            if self.qp != "auto":
                raise OptionError("budget", "only applies with qp=auto")
            check_range("budget", self.budget, 0, math.inf)
        if self.qp != "auto":
            check_range("qp", self.qp, QP_MIN, QP_MAX)
        for layer, value in self.per_layer:
            check_range(f"per_layer[{layer}]", value, QP_MIN, QP_MAX)
            if value != int(value):
                raise OptionError(f"per_layer[{layer}]", f"qp must be an integer, got {value}")

    def context_needs(self) -> frozenset[str]:
        return frozenset({"evaluate"}) if self.qp == "auto" else frozenset()

    def is_default(self, option: dataclasses.Field[Any]) -> bool:
        # rdo and fit mean something only with a step: spelt out whenever qp is, so a reproducer
        # never depends on their defaults
        if option.name in ("rdo", "fit") and self.qp is not None:
            return False
        return super().is_default(option)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        if self.qp == "auto":
            return _auto_quant(self, model, ctx)
        states = selected(model, self.layers, self.name)
        layers = {}
        for state in states:
            if self.qp is not None:
                layers[state.name] = self._at_step(state, int(override(state, self.per_layer, self.qp)), ctx)
                continue
            size = encoded_bytes(state)
            bits = int(override(state, self.per_layer, self.bits))
            ctx.note(f"quant: {state.name} ({state.numel:,} weights, {bits} bits)")
            if state.codebook is not None:  # only the codebook changes: no weight is decoded
                old = state.codebook
                fmt = best_format(old, bits, per_channel=False)
                state.codebook = fmt.dequantize(fmt.quantize(old))
                state.fmt = fmt
                stats = layer_stats(state, size, codebook_error(state, old))
            else:
                values = state.decode()
                fmt = best_format(
                    values, bits, per_channel=self.granularity == "channel" and values.dim() > 1
                )
                mask = state.mask
                state.dense = None
                state.codes, state.fmt = fmt.quantize(values), fmt
                state.set_mask(mask)
                stats = change_stats(state, values, size)
                del values
            layers[state.name] = {**stats, "frac": ",".join(map(str, fmt.frac))}
        others = quantize_params(model, self.params) if self.params else {}
        states += [model.tensors[name] for name in others]
        model.sync([s.name for s in states])
        setting: dict[str, Stat] = {"bits": self.bits}
        if self.qp is not None:
            setting = {"qp": self.qp, "rdo": self.rdo, "fit": self.fit, "granularity": self.granularity}
        stats = {**setting, **totals({**layers, **others}), **params_summary(others)}
        return PassResult(True, stats, layers, unused_overrides(model, self.per_layer))

    def _at_step(self, state: TensorState, qp: int, ctx: PassContext) -> dict[str, Stat]:
        """Quantize one weight record at ``qp``; its statistics."""
        if state.codebook is not None:
            raise PipelineError(
                f"quant: {state.name} is shared (a codebook); qp quantizes weights, so put "
                "quant{qp=..} instead of share, or use quant{bits=..} to quantize the codebook"
            )
        size = encoded_bytes(state)
        values = state.decode()
        quant_record(state, qp, self.rdo, self.fit, self.granularity == "channel")
        assert state.fmt is not None
        ctx.note(f"quant: {state.name} ({state.numel:,} weights, qp {qp}, {state.fmt.bits} bits)")
        return {**change_stats(state, values, size), **_step_stats(state, qp)}


def _auto_quant(pass_: Quant, model: CompressedModel, ctx: PassContext) -> PassResult:
    """``qp=auto``: each layer's step from its sensitivity curve (metric and rANS-coded bytes per qp),
    allocated under the budget and verified like ``share{bits=auto}``."""
    from sqc.compiler.sensitivity import auto_allocate

    states = selected(model, pass_.layers, pass_.name)
    coded = [s.name for s in states if s.codes is not None]
    if coded:
        raise PipelineError(f"qp=auto quantizes float weights, but {coded[0]} already holds codes")
    fixed = {s.name: override(s, pass_.per_layer, 0) for s in states if is_overridden(s, pass_.per_layer)}
    if len(fixed) == len(states):
        raise PipelineError("qp=auto: per_layer fixes every selected layer, nothing is left to choose")

    def apply(state: TensorState, qp: float) -> None:
        model.release(state.name)
        quant_record(state, int(qp), pass_.rdo, pass_.fit, pass_.granularity == "channel")
        model.sync([state.name])

    outcome = auto_allocate(model, ctx, "quant", states, fixed, pass_.budget, apply)
    chosen = {**fixed, **outcome.values}
    layers: dict[str, dict[str, Stat]] = {}
    for state in states:
        if state.codes is None:  # a layer left as it was must still be quantized: quant establishes codes
            apply(state, chosen[state.name])
        before, size = outcome.before[state.name]
        layers[state.name] = {
            **change_stats(state, before, size),
            **_step_stats(state, int(chosen[state.name])),
        }
        if state.name in outcome.predicted:
            layers[state.name]["predicted_drop"] = outcome.predicted[state.name]
    stats = {"qp": "auto", "rdo": pass_.rdo, "fit": pass_.fit, **totals(layers), **outcome.stats}
    return PassResult(True, stats, layers, unused_overrides(model, pass_.per_layer) + outcome.diagnostics)


def _step_stats(state: TensorState, qp: int) -> dict[str, Stat]:
    """The layer's qp, its stored step (the smallest and largest with a step per channel) and code width."""
    assert state.fmt is not None
    steps = state.fmt.steps
    spread: dict[str, Stat] = {"step_max": max(steps)} if len(steps) > 1 else {}
    return {"qp": qp, "step": min(steps), **spread, "code_bits": state.fmt.bits}


def codebook_error(state: TensorState, old: torch.Tensor) -> float:
    """The largest change of a kept weight when the codebook ``old`` became ``state.codebook``: the
    largest centroid move among the centroids a kept weight uses (found slice by slice)."""
    assert state.codes is not None and state.codebook is not None
    k = old.numel()
    used = torch.zeros(k, dtype=torch.bool)
    codes = state.codes.reshape(-1)
    mask = None if state.mask is None else state.mask.reshape(-1)
    for part in slices(codes.numel()):
        kept = codes[part] if mask is None else codes[part][mask[part]]
        used |= torch.bincount(kept.long(), minlength=k) > 0
    moves = (state.codebook - old).abs()[used]
    return float(moves.max()) if moves.numel() else 0.0


def quantize_params(model: CompressedModel, bits: int) -> dict[str, dict[str, Stat]]:
    """Quantize every float parameter that is not a compressible weight (biases, norm affine, slopes)."""
    layers: dict[str, dict[str, Stat]] = {}
    for state in model.tensors.values():
        if state.role != "param" or state.codes is not None or state.dense is None:
            continue
        before = state.decode()
        size = encoded_bytes(state)
        fmt = best_format(before, bits, per_channel=False)
        state.dense = None
        state.codes, state.fmt = fmt.quantize(before), fmt
        layers[state.name] = change_stats(state, before, size)
    return layers


def params_summary(others: dict[str, dict[str, Stat]]) -> dict[str, Stat]:
    """The report's account of ``params=N``: how many tensors and their worst error, as pass statistics.
    One layer entry per bias would be most of a small model's report (and of its file: a 1,000-parameter
    model's report is a fifth of it), and each tensor's format is in the file anyway."""
    if not others:
        return {}
    return {
        "params": len(others),
        "params_max_abs_error": max(float(v["max_abs_error"]) for v in others.values()),
    }


ZEROS_AS_PRUNED = 0.5
"""An unpruned tensor whose codes are at least this share zeros gets them as a pruning mask: the
context coder then codes where the non-zero levels are (run and column contexts) and only their values,
which on LeNet-5 measured 2.5-6 % fewer bytes than coding each zero as a symbol at 55-92 % zeros, and
0.2 % more at 38 %."""


def quant_record(
    state: TensorState, qp: int, rdo: float = DEFAULT_RDO, fit: Fit = DEFAULT_FIT, per_channel: bool = False
) -> None:
    """Quantize one record's weights in place at step ``2**(qp/4)`` (the caller syncs the module).

    Levels that come out zero are pruned positions afterwards (:func:`zeros_pruned`): the values do
    not change, only how the coder is told where the zeros are. ``fit`` and ``per_channel`` say how the
    stored step is refitted to the codes (:func:`quantize_step`)."""
    values = state.decode()
    fmt, codes = quantize_step(values, qp_step(qp), state.mask, rdo, state.name, fit, per_channel)
    mask = zeros_pruned(codes, state.mask)
    state.dense = None
    state.codes, state.fmt = codes, fmt
    state.set_mask(mask)


def zeros_pruned(codes: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask after quantization: a pruned tensor drops its kept positions whose level is zero (its
    mask is coded anyway, and a pruned position is cheaper than a kept zero); an unpruned one gets a mask
    of its non-zero levels when they are at most ``1 - ZEROS_AS_PRUNED`` of it."""
    nonzero = codes != 0
    if mask is not None:
        return mask & nonzero
    kept = int(nonzero.sum())
    return nonzero if codes.numel() and kept <= (1 - ZEROS_AS_PRUNED) * codes.numel() else None


def quantize_step(
    values: torch.Tensor,
    step: float,
    mask: torch.Tensor | None,
    rdo: float,
    name: str,
    fit: Fit = DEFAULT_FIT,
    per_channel: bool = False,
) -> tuple[FixedPoint, torch.Tensor]:
    """``(format, codes)`` for ``values`` at ``step`` (kept to 8 significant bits): codes as wide as
    the largest weight needs, chosen by :func:`~sqc.passes._rate.rdo_levels` among the kept weights
    (pruned positions stay 0). The stored step is then refitted to those levels (:func:`fitted_step`,
    to 8 significant bits), with ``per_channel`` one step per slice along axis 0, each refitted to its
    slice's levels: the codes stay, their scale changes."""
    probe = FixedPoint.scaled(2, step)
    exact = probe.steps[0]
    flat = values.reshape(-1)
    kept = flat if mask is None else flat[mask.reshape(-1)]
    peak = float(kept.abs().max()) if kept.numel() else 0.0
    reach = round(peak / exact)
    bits = max(2, reach.bit_length() + 1)
    if bits > MAX_SCALED_BITS:
        raise PipelineError(
            f"quant: {name} needs {bits}-bit codes at step {exact:.3g} (largest weight {peak:.3g}); "
            f"a scaled format holds {MAX_SCALED_BITS}: raise qp"
        )
    qmax = (1 << (bits - 1)) - 1
    wide = kept.to(torch.float64)  # converted once: the RDO and both error sums read it
    levels, _ = rdo_levels(wide / exact, -qmax - 1, qmax, rdo, pruned=flat.numel() - kept.numel())
    top = int(levels.abs().max()) if levels.numel() else 0
    bits = max(2, top.bit_length() + 1)  # rate-distortion choices can only narrow the range
    codes = torch.zeros(flat.numel(), dtype=torch.int32)
    if mask is None:
        codes = levels
    else:
        codes[mask.reshape(-1)] = levels
    codes = codes.reshape(values.shape)
    if per_channel and values.dim() > 1:
        rows = values.reshape(values.shape[0], -1).to(torch.float64)  # pruned positions: 0 in both
        levels_by_row = codes.reshape(values.shape[0], -1).to(torch.float64)
        steps = [
            fitted_step(w, q, probe, fit) if bool(q.any()) else probe
            for w, q in zip(rows, levels_by_row, strict=True)
        ]
        mults = tuple(m for f in steps for m in f.multipliers)
        fracs = tuple(f.frac[0] for f in steps)
        return FixedPoint(bits, fracs, mults if any(m != 1 for m in mults) else ()), codes
    if top:
        probe = fitted_step(wide, levels.to(torch.float64), probe, fit)
    return FixedPoint(bits, probe.frac, probe.mult), codes


def fitted_step(values: torch.Tensor, levels: torch.Tensor, nominal: FixedPoint, fit: Fit) -> FixedPoint:
    """The scaled format (8 significant bits) of the step that ``levels`` are stored with, for the float64
    ``values`` they quantize (``nominal``: the step they were chosen at).

    ``gain`` (the default): ``<w, w> / <q, w>``, the step at which the quantized tensor's projection
    on the original *is* the original. Rounding to zero removes the small weights' share of every
    output, and the least-squares step keeps that loss (its tensor's projection is ``|w_q|^2 / |w|^2 < 1``
    of the original): each layer's output comes out attenuated, and with batch norm's frozen statistics
    and fixed biases the attenuation compounds layer after layer. Measured on CREPE-full at qp -1 (74-93 %
    of each kernel rounded to zero): raw pitch accuracy 61 % with the least-squares step, 99 % with
    this one, the same bytes (weight MSE 0.027 against 0.042: it is not the MSE that matters).
    ``mse``: the least-squares step ``<w, q> / <q, q>`` where closer than the nominal one (the least
    weight error). ``none``: the nominal step."""
    if fit == "none":
        return nominal
    if fit == "gain":
        along = float((values * levels).sum())
        return FixedPoint.scaled(2, float((values * values).sum()) / along) if along > 0 else nominal
    fitted = FixedPoint.scaled(2, float((values * levels).sum() / (levels * levels).sum()))
    if _error(values, levels, fitted.steps[0]) < _error(values, levels, nominal.steps[0]):
        return fitted
    return nominal


def _error(values: torch.Tensor, levels: torch.Tensor, step: float) -> float:
    """Squared error of ``levels * step`` against ``values`` (both float64)."""
    return float(((values - levels * step) ** 2).sum())
