"""``quant``: fixed-point quantization of weights, or of the codebook when ``share`` ran."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from sqc.ir import CompressedModel, FixedPoint, TensorState, slices
from sqc.pass_base import LayerMap, Pass, PassContext, PassResult, Stat, check_range
from sqc.passes._common import (
    change_stats,
    encoded_bytes,
    layer_stats,
    override,
    selected,
    totals,
    unused_overrides,
)


@dataclass(frozen=True)
class Quant(Pass):
    """Round to signed fixed point ``code * 2**-frac`` with ``bits`` bits.

    The fraction length is chosen per tensor (or per output channel with ``granularity=channel``)
    among the lengths around the one that just covers the largest magnitude, keeping the one with the
    least squared error — clipping a rare outlier sometimes buys a finer step for everyone else.
    Rounding is half to even, then saturation to the code range (see :class:`sqc.ir.FixedPoint`). After
    ``share`` the codebook is quantized instead (always per tensor), and the codes stay.

    ``params=N`` also stores the other parameters — biases, BatchNorm affine, PReLU slopes — as
    ``N``-bit fixed point, per tensor (0, the default, leaves them float32). On a small pruned network
    they are a large share of the file: LeNet-300-100's 410 float32 biases are 1.6 KB next to ~22 KB of
    coded weights.
    """

    name = "quant"
    summary = "fixed-point quantization (per tensor or per channel); quantizes the codebook after share"
    conflicts = {"entropy-coded": "huffman or rans must come after every pass that changes weights"}
    establishes = frozenset({"codes", "fixed-point"})

    bits: int = 8
    granularity: Literal["tensor", "channel"] = "tensor"
    per_layer: LayerMap = ()
    layers: str = "*"
    params: int = 0

    def __post_init__(self) -> None:
        check_range("bits", self.bits, 2, 16)
        if self.params:
            check_range("params", self.params, 2, 24)
        for layer, value in self.per_layer:
            check_range(f"per_layer[{layer}]", value, 2, 16)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        states = selected(model, self.layers, self.name)
        layers = {}
        for state in states:
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
        if self.params:
            others = quantize_params(model, self.params)
            layers.update(others)
            states += [model.tensors[name] for name in others]
        model.sync([s.name for s in states])
        return PassResult(
            True, {"bits": self.bits, **totals(layers)}, layers, unused_overrides(model, self.per_layer)
        )


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
        layers[state.name] = {**change_stats(state, before, size), "frac": ",".join(map(str, fmt.frac))}
    return layers


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
