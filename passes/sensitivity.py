"""``sensitivity``: per-layer rate-distortion curves (Deep Compression's sensitivity analysis, with bytes).

For every selected weight layer on its own — all other layers as they are — the pass prunes the layer
to each sparsity of a sweep, and separately shares it at each number of bits, measures the metric and
the bytes the container actually writes for that layer at that point (the real encoder, Huffman
coded), and puts the layer back exactly. The result is an analysis: cached in the pass context for
``prune{target=auto}`` / ``share{bits=auto}``, stored in the report, and readable again later
(``reuse=`` a ``.sqc`` whose report holds it, or the JSON of ``sqc sensitivity --json``).

Bytes of a pruning point are counted as the layer would be written after ``share{bits=rate_bits}``
and ``huffman`` (``rate_bits=0``: as the layer is coded now), so that pruning is chosen for what it
saves in the final file rather than in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqc.compiler.pass_base import QUIET, Pass, PassContext, PassResult, check_range
from sqc.compiler.sensitivity import (
    ANALYSIS,
    DEFAULT_BITS,
    DEFAULT_SPARSITIES,
    Kind,
    Point,
    Sweeper,
    beyond,
    cached_analysis,
    check_matches,
    current_sparsity,
    layer_qps,
    load_analysis,
    parse_sweep,
)
from sqc.ir.records import CompressedModel, TensorState
from sqc.passes._common import selected


@dataclass(frozen=True)
class Sensitivity(Pass):
    """Measure, for each layer alone, the metric and the coded bytes at each sparsity and bit width.

    ``sparsities`` and ``bits`` are the sweeps (``;``-separated; empty skips that sweep). Each point
    is measured with the other layers as they are, and the layer is restored exactly afterwards, so
    the model leaves the pass unchanged. ``samples=N`` evaluates on the first N validation samples
    (the built-in evaluator from ``--data``; a user's ``--eval`` function always sees its own data).
    Bytes of a pruning point are those of the layer after ``share{bits=rate_bits},huffman``
    (``rate_bits=0``: as coded now). ``qps`` (empty: skipped) sweeps ``quant{qp=..}`` steps relative to
    each layer's scale (:data:`DEFAULT_QPS`), bytes counted rANS-coded, for ``quant{qp=auto}``.
    ``reuse=FILE`` reads the curves instead of measuring them: the
    JSON of ``sqc sensitivity --json`` or a ``.sqc`` whose report holds a sensitivity record
    (``reuse`` because ``from`` is a Python keyword). The curves go into the report, and stay in the
    context for ``prune{target=auto}`` and ``share{bits=auto}`` until a pass changes the weights.
    """

    name = "sensitivity"
    summary = "per-layer metric and coded bytes vs sparsity and bits, each layer alone (an analysis)"
    preserves = frozenset({ANALYSIS})

    sparsities: str = DEFAULT_SPARSITIES
    bits: str = DEFAULT_BITS
    samples: int = 0
    rate_bits: int = 5
    layers: str = "*"
    reuse: str = ""
    qps: str = field(default="", metadata=QUIET)

    def __post_init__(self) -> None:
        parse_sweep(self.sparsities, "sparsities", whole=False, low=0.0, high=0.9999)
        parse_sweep(self.bits, "bits", whole=True, low=1, high=16)
        parse_sweep(self.qps, "qps", whole=True, low=-64, high=16)
        check_range("samples", self.samples, 0, 1 << 40)
        check_range("rate_bits", self.rate_bits, 0, 16)

    def context_needs(self) -> frozenset[str]:
        return frozenset() if self.reuse else frozenset({"evaluate"})

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        states = selected(model, self.layers, self.name)
        analysis = cached_analysis(ctx)
        diagnostics = []
        if self.reuse:
            loaded = load_analysis(Path(self.reuse))
            check_matches(loaded, states)
            analysis.adopt(loaded)
            ctx.note(f"sensitivity: curves read from {self.reuse}")
        else:
            redo = bool(analysis.source) or (analysis.samples, analysis.rate_bits) != (
                self.samples,
                self.rate_bits,
            )
            if redo:
                analysis.reset(self.samples, self.rate_bits)
            if self.samples and not ctx.can_evaluate_subset:
                diagnostics.append(
                    f"samples={self.samples} not applied: a user's evaluation function sees its own data"
                )
            sweeper = Sweeper(model, ctx, analysis)
            sparsities = parse_sweep(self.sparsities, "sparsities", whole=False, low=0.0, high=0.9999)
            bits = parse_sweep(self.bits, "bits", whole=True, low=1, high=16)
            qps = parse_sweep(self.qps, "qps", whole=True, low=-64, high=16)
            sweeper.ensure_all(
                [
                    (
                        "prune",
                        states,
                        sparsities,
                        not same_sweep(analysis.prune, states, sparsities, "prune"),
                    ),
                    ("share", states, bits, not same_sweep(analysis.share, states, bits, "share")),
                    ("quant", states, qps, not same_sweep(analysis.quant, states, qps, "quant")),
                ]
            )
            diagnostics.extend(sweeper.diagnostics)
        names = [s.name for s in states if s.name in analysis.layer_names()]
        return PassResult(False, analysis.report_stats(), analysis.report_layers(names), diagnostics)


def same_sweep(
    curves: dict[str, list[Point]], states: list[TensorState], values: tuple[float, ...], kind: Kind
) -> bool:
    """Whether every state's cached curve covers exactly ``values`` (so nothing needs measuring again)."""
    for state in states:
        if state.name not in curves:
            continue
        have = [p.value for p in curves[state.name]]
        if kind == "prune":
            want = [current_sparsity(state), *beyond(state, values)]
        elif kind == "quant":
            want = [float(qp) for qp in layer_qps(state, values)]
        else:
            want = sorted({float(int(v)) for v in values}, reverse=True)
        if have != want:
            return False
    return True
