"""``auto``: closed-loop compression for a tolerance — prune and share per layer, planning for retraining.

Why: ``prune{target=auto}`` and ``share{bits=auto}`` allocate from sensitivity curves measured on the
network *as it is*, so they spend the whole tolerance on damage that the fine-tuning after them would
have won back: an automatic recipe built from them reached a quarter (LeNet-300-100) and a half
(LeNet-5) of the hand-tuned ratios. This pass closes the loop instead. The curves only rank the layers;
how far to go is decided by measuring the *retrained* network:

1. **Pruning.** From the pruning curves, the allocator gives the per-layer sparsities of the fewest
   bytes whose predicted drop is ``r * tolerance``, for a relaxation ``r``. A probe prunes to them from
   the original weights along the AGP schedule (``steps`` stages, an epoch of masked retraining after
   each, then ``epochs`` more) and measures. ``r`` grows by 4x while probes stay within the pruning
   share of the tolerance (``1 - reserve``), then is bisected (geometrically) between the last probe
   within and the first beyond; ``rounds`` probes in all. The smallest probe within wins.
2. **Sharing.** On that network, sharing curves are measured afresh (bits per layer, each layer alone),
   and the same search runs over their allocation, each probe sharing from the pruned weights and
   retraining the centroids (``share_epochs`` at ``share_lr``: trained quantization), until the whole
   tolerance is met.

Decisions use the evaluation the run was given (the built-in one reads ``x_val``/``y_val`` of
``--data``; keep them out of the training data): never the test set, and the report names the split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sqc.allocation import Choice, solve
from sqc.errors import PipelineError
from sqc.ir import CompressedModel, TensorState
from sqc.pass_base import Pass, PassContext, PassResult, Stat, check_range
from sqc.passes._common import change_stats, encoded_bytes, selected, totals
from sqc.passes.prune import Prune
from sqc.passes.sensitivity import (
    Analysis,
    Fields,
    Kind,
    Sweeper,
    parse_sweep,
    reference_metric,
    restore,
    snapshot,
)
from sqc.passes.share import share_record

GROWTH = 4.0
"""Factor by which the relaxation grows while probes stay within the budget."""


@dataclass(frozen=True)
class Probe:
    """One closed-loop trial: the relaxation, the per-layer values it gave, and what was measured."""

    relaxation: float
    values: tuple[tuple[str, float], ...]
    predicted_bytes: int
    drop: float
    state: dict[str, Fields]
    """Every record of the model after the probe (biases and norm statistics train too)."""


@dataclass(frozen=True)
class Auto(Pass):
    """Prune and share every selected layer for ``--tolerance``, measured after retraining.

    ``rounds`` closed-loop probes per stage; a pruning probe runs the AGP schedule (``steps`` stages of
    one epoch) plus ``epochs`` of masked retraining at ``lr``; a sharing probe retrains the centroids
    for ``share_epochs`` at ``share_lr``. ``reserve`` is the part of the tolerance the pruning search
    leaves for sharing. ``sparsities`` and ``bits`` are the sensitivity sweeps the allocation chooses
    from. Needs an evaluation and training (``--data`` with ``x_train``, or ``--eval`` and
    ``--finetune``).
    """

    name = "auto"
    summary = "closed-loop prune + share for the tolerance: allocations measured after retraining"
    needs = frozenset({"evaluate", "finetune"})
    conflicts = {
        "codes": "auto starts from float weights: put it before share and quant",
        "entropy-coded": "huffman or rans must come after every pass that changes weights",
    }
    establishes = frozenset({"pruned", "codes", "shared"})

    rounds: int = 5
    steps: int = 3
    epochs: int = 2
    lr: float = 0.01
    share_rounds: int = 3
    share_epochs: int = 1
    share_lr: float = 0.001
    reserve: float = 0.25
    sparsities: str = "0.5;0.7;0.8;0.85;0.9;0.93;0.95;0.97;0.98;0.99"
    bits: str = "8;6;5;4;3;2"
    layers: str = "*"

    def __post_init__(self) -> None:
        check_range("rounds", self.rounds, 1, 100)
        check_range("share_rounds", self.share_rounds, 1, 100)
        check_range("steps", self.steps, 1, 100)
        check_range("epochs", self.epochs, 0, 10_000)
        check_range("share_epochs", self.share_epochs, 0, 10_000)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        check_range("share_lr", self.share_lr, 0.0, 10.0, low_open=True)
        check_range("reserve", self.reserve, 0.0, 0.99)
        parse_sweep(self.sparsities, "sparsities", whole=False, low=0.0, high=0.9999)
        parse_sweep(self.bits, "bits", whole=True, low=1, high=16)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        states = selected(model, self.layers, self.name)
        coded = [s.name for s in states if s.codes is not None]
        if coded:
            raise PipelineError(f"auto compresses float weights, but {coded[0]} already holds codes")
        entry = ctx.evaluate(model)
        recorded = reference_metric(model)
        reference = entry if recorded is None else recorded
        tolerance = max(0.0, ctx.tolerance - (reference - entry))
        before = {s.name: (s.decode(), encoded_bytes(s)) for s in states}

        def pruning(values: dict[str, float]) -> None:
            # prune's own AGP stages (one epoch of masked retraining after each, divergence retried)
            stages = Prune(
                per_layer=tuple(values.items()),
                layers=self.layers,
                scope="layer",
                schedule="agp",
                steps=self.steps,
                epochs=1,
                lr=self.lr,
            )
            stages.run(model, ctx)
            if self.epochs:
                ctx.finetune(model, self.epochs, self.lr)

        def sharing(values: dict[str, float]) -> None:
            for state in states:
                model.release(state.name)
                share_record(state, int(values[state.name]))
            model.sync([s.name for s in states])
            if self.share_epochs:
                ctx.finetune(model, self.share_epochs, self.share_lr)

        sweeps = {
            "prune": parse_sweep(self.sparsities, "sparsities", whole=False, low=0.0, high=0.9999),
            "share": parse_sweep(self.bits, "bits", whole=True, low=1, high=16),
        }
        pruned, prune_probes, prune_notes = self._search(
            model, ctx, states, "prune", sweeps["prune"], pruning, reference, tolerance * (1 - self.reserve)
        )
        restore(model, frozen(pruned.state))
        shared, share_probes, share_notes = self._search(
            model, ctx, states, "share", sweeps["share"], sharing, reference, tolerance
        )
        restore(model, frozen(shared.state))
        after = ctx.evaluate(model)
        layers: dict[str, dict[str, Stat]] = {}
        sparsity, bits = dict(pruned.values), dict(shared.values)
        for state in states:
            old, size = before[state.name]
            layers[state.name] = {
                **change_stats(state, old, size),
                "target": round(sparsity[state.name], 6),
                "bits": int(bits[state.name]),
            }
        stats: dict[str, Stat] = {
            "metric_reference": reference,
            "metric_before": entry,
            "metric_after": after,
            "tolerance": tolerance,
            "decided_on": ctx.evaluation_split,
            "prune_probes": _describe(prune_probes),
            "share_probes": _describe(share_probes),
            **totals(layers),
        }
        diagnostics = prune_notes + share_notes
        if reference - after > tolerance + 1e-12:
            diagnostics.append(
                f"the metric dropped {reference - after:.6g}, more than the tolerance {tolerance:.6g}: "
                "even the safest probes were beyond it"
            )
        return PassResult(True, stats, layers, diagnostics)

    def _search(
        self,
        model: CompressedModel,
        ctx: PassContext,
        states: list[TensorState],
        kind: Kind,
        sweep: tuple[float, ...],
        apply: Callable[[dict[str, float]], None],
        reference: float,
        budget: float,
    ) -> tuple[Probe, list[Probe], list[str]]:
        """The smallest probe within ``budget`` (measured from ``reference``), the probes, and notes."""
        analysis = Analysis(rate_bits=5 if kind == "prune" else 0)
        sweeper = Sweeper(model, ctx, analysis)
        sweeper.ensure(kind, states, sweep, redo=True)
        assert analysis.metric is not None
        curves = {
            s.name: [
                Choice(p.value, analysis.metric - p.metric, p.bytes) for p in analysis.curves(kind)[s.name]
            ]
            for s in states
        }
        everything = list(model.tensors.values())  # fine-tuning also moves biases and norm statistics
        start = frozen(snapshot(everything))
        rounds = self.rounds if kind == "prune" else self.share_rounds
        scale = max(budget, 1e-4)  # a zero tolerance still relaxes: retraining may win it all back
        probes: dict[tuple[tuple[str, float], ...], Probe] = {}

        def probe(relaxation: float) -> Probe:
            choice = solve(curves, relaxation * scale)
            values = tuple((name, curves[name][index].value) for name, index in sorted(choice.items()))
            if values in probes:
                return probes[values]
            restore(model, frozen(start))
            ctx.note(f"auto: {kind} probe (relaxation {relaxation:g})", len(probes), rounds)
            apply(dict(values))
            drop = reference - ctx.evaluate(model)
            predicted = sum(curves[name][index].bytes for name, index in choice.items())
            found = Probe(relaxation, values, predicted, drop, frozen(snapshot(everything)))
            probes[values] = found
            return found

        within: Probe | None = None
        beyond: float | None = None
        relaxation = 1.0
        for _ in range(8 * rounds):  # relaxations that give an allocation already measured are free
            if len(probes) >= rounds:
                break
            found = probe(relaxation)
            if found.drop <= budget + 1e-12:
                if within is None or found.predicted_bytes < within.predicted_bytes:
                    within = found
                relaxation = relaxation * GROWTH if beyond is None else math.sqrt(relaxation * beyond)
            else:
                beyond = relaxation
                low = within.relaxation if within is not None else 0.0
                relaxation = math.sqrt(low * beyond) if low else relaxation / GROWTH
        measured = list(probes.values())
        fitted = monotone_drops(measured)
        chosen = [p for p, d in zip(measured, fitted, strict=True) if d <= budget + 1e-12]
        notes = []
        if chosen:
            best = min(chosen, key=lambda p: (p.predicted_bytes, p.drop))
        else:  # nothing fitted: keep the safest probe measured
            best = min(measured, key=lambda p: (p.drop, p.predicted_bytes))
            notes.append(f"auto: no {kind} probe stayed within {budget:.6g}; kept the one that lost least")
        return best, measured, notes


def monotone_drops(probes: list[Probe]) -> list[float]:
    """Each probe's drop, smoothed so that a smaller allocation never counts as losing less than a larger
    one (isotonic regression by pooling adjacent violators, over probes sorted by predicted bytes).

    Why: a validation metric is noisy at the scale of a tight tolerance, and taking the smallest probe
    that happened to measure within it picks the luckiest measurement; pooling it with the larger probes
    that measured worse gives the estimate all of them support."""
    order = sorted(range(len(probes)), key=lambda i: -probes[i].predicted_bytes)
    blocks: list[tuple[float, int]] = []  # (mean drop, count), drops non-decreasing as bytes fall
    for i in order:
        mean, count = probes[i].drop, 1
        while blocks and blocks[-1][0] > mean:
            last, n = blocks.pop()
            mean, count = (last * n + mean * count) / (n + count), n + count
        blocks.append((mean, count))
    fitted = [0.0] * len(probes)
    position = 0
    for mean, count in blocks:
        for i in order[position : position + count]:
            fitted[i] = mean
        position += count
    return fitted


def frozen(saved: dict[str, Fields]) -> dict[str, Fields]:
    """A snapshot that training cannot reach: fine-tuning writes a dense record's tensor in place (the
    module's parameter shares its storage), so a probe's state is kept as copies, and restored as fresh
    copies of those, so that the stored one stays as it was whatever trains next."""
    return {name: tuple(_copy(value) for value in fields) for name, fields in saved.items()}


def _copy(value: object) -> object:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _describe(probes: list[Probe]) -> str:
    """``relaxation:drop:bytes`` of each probe, in the order they ran (for the report)."""
    return ";".join(f"{p.relaxation:.4g}:{p.drop:.4g}:{p.predicted_bytes}" for p in probes)
