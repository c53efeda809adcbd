"""``auto``: closed-loop compression for a tolerance — prune and share per layer, planning for retraining.

Why: ``prune{target=auto}`` and ``share{bits=auto}`` allocate from sensitivity curves measured on the
network *as it is*, so they spend the whole tolerance on damage that the fine-tuning after them would
have won back: an automatic recipe built from them reached a quarter (LeNet-300-100) and a half
(LeNet-5) of the hand-tuned ratios. This pass closes the loop instead. The curves only rank the layers;
how far to go is decided by measuring the *retrained* network:

1. **Pruning.** With retraining (``allocation=global``, the default then), a probe prunes all layers
   together by global magnitude to one pooled sparsity of the ``sparsities`` sweep, from the original
   weights along the AGP schedule (``steps`` stages, an epoch of masked retraining after each, then
   ``epochs`` more), and measures; a binary search over the sweep finds the highest sparsity within
   the pruning share of the tolerance (``1 - reserve``) in ``rounds`` probes. The per-layer
   sparsities come out of the ranking (layers of many small weights lose most), not from the
   sensitivity curves, which measure layers pruned alone and *not* retrained and so misrank them
   (see :meth:`Auto._search_pooled`). Without retraining (``allocation=curves``, the default then),
   the allocator gives, from the pruning curves, the per-layer sparsities of the fewest bytes whose
   predicted drop is ``r * tolerance`` for a relaxation ``r``; a probe prunes to them and measures.
   ``r`` grows by 4x while probes stay within, then is bisected (geometrically) between the last
   probe within and the first beyond. The smallest probe within wins.
2. **Sharing.** On that network, sharing curves are measured afresh (bits per layer, each layer alone),
   and the same search runs over their allocation, each probe sharing from the pruned weights and
   retraining the centroids (``share_epochs`` at ``share_lr``: trained quantization), until the whole
   tolerance is met.

Decisions use the evaluation the run was given (the built-in one reads ``x_val``/``y_val`` of
``--data``; keep them out of the training data): never the test set, and the report names the split.
Where the evaluation gives per-example values, a probe counts as within only if its drop plus
``margin`` standard errors of it (paired per example against the starting network: :func:`paired`)
is, so that a tolerance below the validation noise is not met by luck. The drop is that of the
smoothest statistic the evaluation gives (``statistic=auto``): the built-in top-1 gives, per example,
the probability of the right label (``confidences``), whose paired drop is 2-3 times less noisy than
that of top-1 at the same scale, so that a 0.1-point tolerance on 5,000 images can be certified
(on top-1 outcomes, a probe within it passed or failed by luck); a user's evaluation may give
``outcomes`` (its metric's per-example terms) or only the metric.

Without training (only ``--eval``), the same search runs on the network as compressed: a pruning probe
prunes to its allocation in one shot, a sharing probe shares, and each is measured as it is. The
sensitivity curves still rank the layers, and the closed loop corrects what their additivity gets
wrong (layers that each cost nothing alone may together cost everything).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch

from sqc.compiler.allocation import Choice, solve
from sqc.compiler.pass_base import Pass, PassContext, PassResult, Stat, check_range
from sqc.compiler.sensitivity import Analysis, Kind, Sweeper, parse_sweep, reference_metric
from sqc.errors import PipelineError
from sqc.ir.records import CompressedModel, Fields, TensorState, restore, snapshot
from sqc.passes._common import change_stats, encoded_bytes, selected, totals
from sqc.passes.prune import Prune
from sqc.passes.share import share_record

GROWTH = 4.0
"""Factor by which the relaxation grows while probes stay within the budget."""
EVAL_ONLY_ROUNDS = 3
"""Without retraining a probe costs one evaluation, so the search runs this many times the rounds."""
DISTORTION_SAMPLE = 1 << 16
"""Kept weights a sharing point's distortion is estimated on (k-means on a sample: a proxy suffices)."""


@dataclass(frozen=True)
class Probe:
    """One closed-loop trial: the relaxation, the per-layer values it gave, and what was measured."""

    relaxation: float
    """The allocator's relaxation, or the pooled sparsity of a ``global``/``lamp`` pruning probe."""
    values: tuple[tuple[str, float], ...]
    predicted_bytes: int
    drop: float
    state: dict[str, Fields]
    """Every record of the model after the probe (biases and norm statistics train too)."""
    margin: float = 0.0
    """``margin`` standard errors of the drop, paired per example against the model auto started from
    (0 when the evaluation gives nothing per example): decisions are made on ``drop + margin``."""
    metric_drop: float = 0.0
    """The evaluation's own drop (top-1) from the model auto started from; ``drop`` is the decision
    statistic's (:class:`Signal`), the same number unless that is the confidences."""

    @property
    def bound(self) -> float:
        return self.drop + self.margin


@dataclass(frozen=True)
class Auto(Pass):
    """Prune and share every selected layer for ``--tolerance``, measured after retraining.

    ``rounds`` closed-loop probes per stage; a pruning probe runs the AGP schedule (``steps`` stages of
    one epoch) plus ``epochs`` of masked retraining at ``lr``. ``allocation`` is how a pruning probe
    spreads its sparsity over the layers: ``global`` magnitude or ``lamp`` scores at one pooled
    sparsity (searched over ``sparsities``), or ``curves``: the sensitivity allocation; ``auto``
    (default) is ``global`` when there is training and ``curves`` when there is not. A sharing probe
    retrains the centroids for ``share_epochs`` at ``share_lr``. ``reserve`` is the part of the
    tolerance the pruning search leaves for sharing. ``statistic`` is what a probe's drop is measured
    on: ``confidences`` or ``outcomes`` (per example, paired against the starting network) or the
    ``metric``; ``auto``: the first the evaluation gives. ``margin`` is how many paired standard errors
    a probe's drop must stay below the budget by (0: the raw drop). ``sparsities`` (pooled
    sparsities, or each layer's with ``curves``) and ``bits`` (each layer's) are the sweeps the
    allocation chooses from. Needs an evaluation; training (``--data`` with ``x_train``, or
    ``--finetune``) when there is any is used, and without it the probes are measured without
    retraining.
    """

    name = "auto"
    summary = "closed-loop prune + share for the tolerance: allocations measured after retraining"
    needs = frozenset({"evaluate"})
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
    reserve: float = 0.1
    margin: float = 1.0
    statistic: Literal["auto", "confidences", "outcomes", "metric"] = "auto"
    allocation: Literal["auto", "curves", "global", "lamp"] = "auto"
    sparsities: str = "0.5;0.7;0.8;0.85;0.88;0.9;0.92;0.93;0.94;0.95;0.96;0.97;0.98;0.99"
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
        check_range("margin", self.margin, 0.0, 10.0)
        parse_sweep(self.sparsities, "sparsities", whole=False, low=0.0, high=0.9999)
        parse_sweep(self.bits, "bits", whole=True, low=1, high=16)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        states = selected(model, self.layers, self.name)
        coded = [s.name for s in states if s.codes is not None]
        if coded:
            raise PipelineError(f"auto compresses float weights, but {coded[0]} already holds codes")
        signal = Signal.of(model, ctx, self.statistic, self.margin)
        entry = signal.entry
        recorded = reference_metric(model)
        reference = entry if recorded is None else recorded
        tolerance = max(0.0, ctx.tolerance - (reference - entry))
        before = {s.name: (s.decode(), encoded_bytes(s)) for s in states}

        retrain = ctx.can_finetune

        def pruning(values: dict[str, float]) -> None:
            if not retrain:  # eval-only: the allocation itself, in one shot
                Prune(per_layer=tuple(values.items()), layers=self.layers, scope="layer").run(model, ctx)
                return
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
            if retrain and self.share_epochs:
                ctx.finetune(model, self.share_epochs, self.share_lr)

        sweeps = {
            "prune": parse_sweep(self.sparsities, "sparsities", whole=False, low=0.0, high=0.9999),
            "share": parse_sweep(self.bits, "bits", whole=True, low=1, high=16),
        }
        allocation = self.allocation if self.allocation != "auto" else "global" if retrain else "curves"
        if allocation == "curves":
            pruned, prune_probes, prune_notes = self._search(
                model,
                ctx,
                states,
                "prune",
                sweeps["prune"],
                pruning,
                tolerance * (1 - self.reserve),
                signal,
            )
        else:
            pruned, prune_probes, prune_notes = self._search_pooled(
                model,
                ctx,
                states,
                allocation,
                sweeps["prune"],
                tolerance * (1 - self.reserve),
                signal,
            )
        restore(model, frozen(pruned.state))
        shared, share_probes, share_notes = self._search(
            model, ctx, states, "share", sweeps["share"], sharing, tolerance, signal
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
            "decided_by": signal.kind,
            "margin": self.margin if signal.kind != "metric" else 0.0,
            "prune_allocation": allocation,
            "prune_probes": _describe(prune_probes),
            "share_probes": _describe(share_probes),
            **totals(layers),
        }
        diagnostics = prune_notes + share_notes
        if entry - after > tolerance + 1e-12:
            why = (
                "even the safest probes were beyond it"
                if signal.kind != "confidences"
                else "the confidences, which decide (less noisy than top-1), put it within"
            )
            diagnostics.append(
                f"the metric dropped {entry - after:.6g}, more than the tolerance {tolerance:.6g}: {why}"
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
        budget: float,
        signal: Signal,
    ) -> tuple[Probe, list[Probe], list[str]]:
        """The smallest probe within ``budget`` (its drop measured by ``signal``, margin included),
        the probes, and notes."""
        analysis = Analysis(rate_bits=5 if kind == "prune" else 0)
        sweeper = Sweeper(model, ctx, analysis)
        sweeper.ensure(kind, states, sweep, redo=True)
        assert analysis.metric is not None
        scale = max(budget, 1e-4)  # a zero tolerance still relaxes: retraining may win it all back
        retrain = ctx.can_finetune
        # without retraining, each point also costs its weight distortion (see distortion()), at a
        # price that lets all layers spend all of it at relaxation 1 and ever less below
        price = 0.0 if retrain else scale / len(states)
        curves = {}
        for state in states:
            points = analysis.curves(kind)[state.name]
            costs = distortions(state, kind, [p.value for p in points]) if price else [0.0] * len(points)
            curves[state.name] = [
                Choice(p.value, analysis.metric - p.metric + price * cost, p.bytes)
                for p, cost in zip(points, costs, strict=True)
            ]
        everything = list(model.tensors.values())  # fine-tuning also moves biases and norm statistics
        start = frozen(snapshot(everything))
        rounds = self.rounds if kind == "prune" else self.share_rounds
        if not retrain:  # a probe is one evaluation: cheap next to the sweep
            rounds *= EVAL_ONLY_ROUNDS
        probes: dict[tuple[tuple[str, float], ...], Probe] = {}

        def probe(relaxation: float) -> Probe:
            choice = solve(curves, relaxation * scale)
            values = tuple((name, curves[name][index].value) for name, index in sorted(choice.items()))
            if values in probes:
                return probes[values]
            restore(model, frozen(start))
            ctx.note(f"auto: {kind} probe (relaxation {relaxation:g})", len(probes), rounds)
            apply(dict(values))
            predicted = sum(curves[name][index].bytes for name, index in choice.items())
            found = signal.probe(model, ctx, relaxation, values, predicted, frozen(snapshot(everything)))
            probes[values] = found
            return found

        within: Probe | None = None
        beyond: float | None = None
        relaxation = 1.0
        for _ in range(8 * rounds):  # relaxations that give an allocation already measured are free
            if len(probes) >= rounds:
                break
            found = probe(relaxation)
            if found.bound <= budget + 1e-12:
                if within is None or found.predicted_bytes < within.predicted_bytes:
                    within = found
                relaxation = relaxation * GROWTH if beyond is None else math.sqrt(relaxation * beyond)
            else:
                beyond = relaxation
                low = within.relaxation if within is not None else 0.0
                relaxation = math.sqrt(low * beyond) if low else relaxation / GROWTH
        return choose(list(probes.values()), budget, kind)

    def _search_pooled(
        self,
        model: CompressedModel,
        ctx: PassContext,
        states: list[TensorState],
        scope: Literal["global", "lamp"],
        sweep: tuple[float, ...],
        budget: float,
        signal: Signal,
    ) -> tuple[Probe, list[Probe], list[str]]:
        """The highest pooled sparsity of ``sweep`` whose probe stays within ``budget``: a binary
        search over the sweep, each probe pruning all layers together by ``scope`` (global magnitude,
        or LAMP scores) along the AGP schedule with retraining, then measured.

        Why pooled and not from the sensitivity curves: the curves measure each layer pruned alone and
        not retrained, and that misranks layers once retraining follows. The large, redundant layers
        (LeNet-300-100's fc1, LeNet-5's fc1) look costly at 95 % in one shot, but retraining wins it
        all back, while the small layers the allocation then prunes instead (a conv1 of 500 weights,
        an output layer) save few bytes and cost accuracy that stays lost: at equal size the curve
        allocations changed about twice as many test predictions as the hand recipes. A global
        magnitude ranking prunes layers of many small weights most, as the hand recipes do, and
        leaves one number to search, which the closed loop can afford to measure after retraining."""
        everything = list(model.tensors.values())
        start = frozen(snapshot(everything))
        retrain = ctx.can_finetune
        probes: dict[int, Probe] = {}

        def probe(index: int) -> Probe:
            restore(model, frozen(start))
            ctx.note(f"auto: prune probe ({scope} sparsity {sweep[index]:g})", len(probes), self.rounds)
            pooled = Prune(sparsity=sweep[index], scope=scope, layers=self.layers)
            if retrain:
                replace(pooled, schedule="agp", steps=self.steps, epochs=1, lr=self.lr).run(model, ctx)
                if self.epochs:
                    ctx.finetune(model, self.epochs, self.lr)
            else:
                pooled.run(model, ctx)
            values = tuple((s.name, round(1 - s.density, 6)) for s in states)
            size = sum(encoded_bytes(s) for s in states)
            probes[index] = signal.probe(model, ctx, sweep[index], values, size, frozen(snapshot(everything)))
            return probes[index]

        low, high = -1, len(sweep)  # the highest index measured within, the lowest measured beyond
        while high - low > 1 and len(probes) < self.rounds:
            index = (low + high) // 2
            if probe(index).bound <= budget + 1e-12:
                low = index
            else:
                high = index
        return choose(list(probes.values()), budget, "prune")


def choose(measured: list[Probe], budget: float, kind: Kind) -> tuple[Probe, list[Probe], list[str]]:
    """The smallest probe whose smoothed bound (:func:`monotone_drops`) is within ``budget`` (or, when
    none is, the one that lost least), the probes, and a note when none was within."""
    fitted = monotone_drops(measured)
    chosen = [p for p, d in zip(measured, fitted, strict=True) if d <= budget + 1e-12]
    notes = []
    if chosen:
        best = min(chosen, key=lambda p: (p.predicted_bytes, p.drop))
    else:  # nothing fitted: keep the safest probe measured
        best = min(measured, key=lambda p: (p.bound, p.predicted_bytes))
        notes.append(f"auto: no {kind} probe stayed within {budget:.6g}; kept the one that lost least")
    return best, measured, notes


def distortions(state: TensorState, kind: Kind, values: list[float]) -> list[float]:
    """The share of the layer's weight energy (sum of squares) each point of its curve destroys: pruning
    to sparsity ``value`` removes the smallest weights' energy; sharing with ``value`` bits leaves the
    k-means error (estimated on a fixed sample of the kept weights).

    Why: without retraining, a metric such as an accuracy on a few hundred inputs saturates. Many layers
    then measure no drop at all, alone, up to high sparsities, so the allocation sends every layer
    there and the network collapses, and no smaller relaxation changes the allocation. Priced in
    beside the measured drops, the distortion ranks those points: a smaller relaxation then backs off,
    the least damaging points last."""
    weights = state.decode().reshape(-1).to(torch.float64)
    if state.mask is not None:
        weights = weights[state.mask.reshape(-1)]
    energy = float((weights * weights).sum())
    if not energy or not weights.numel():
        return [0.0] * len(values)
    if kind == "prune":
        squares = (weights * weights).sort().values
        removed = torch.cat([torch.zeros(1, dtype=torch.float64), squares.cumsum(0)])
        pruned = state.numel - weights.numel()
        drops = [min(weights.numel(), max(0, round(v * state.numel) - pruned)) for v in values]
        return [float(removed[d]) / energy for d in drops]  # the ``d`` smallest kept weights go
    from sqc.passes.share import kmeans_1d

    if weights.numel() > DISTORTION_SAMPLE:
        g = torch.Generator().manual_seed(0)
        weights = weights[torch.randperm(weights.numel(), generator=g)[:DISTORTION_SAMPLE]]
    out = []
    for value in values:
        codebook, codes = kmeans_1d(weights.float(), 1 << int(value))
        error = codebook.double()[codes.long()] - weights
        out.append(float((error * error).mean() / (weights * weights).mean()))
    return out


@dataclass(frozen=True)
class Signal:
    """What a probe's drop is measured on, paired per example against the model auto started from.

    ``kind`` is what the evaluation gives: ``confidences`` (per example, a smooth score whose mean
    moves with the metric: the built-in top-1 gives the probability of the right label), ``outcomes``
    (per example, the metric's own terms: 1 where right), or only the ``metric``. ``start`` holds the
    starting model's per-example values, ``entry`` its metric."""

    kind: Literal["confidences", "outcomes", "metric"]
    start: torch.Tensor | None
    entry: float
    margin: float

    @classmethod
    def of(cls, model: CompressedModel, ctx: PassContext, statistic: str, margin: float) -> Signal:
        """The signal ``statistic`` names (``auto``: the least noisy the evaluation gives)."""
        evaluator = ctx.evaluator()
        order = ("confidences", "outcomes") if statistic == "auto" else (statistic,)
        for kind in order:
            if kind != "metric" and getattr(evaluator, kind, None) is not None:
                start = per_example(model, ctx, kind)
                entry = float(start.mean()) if kind == "outcomes" else ctx.evaluate(model)
                return cls(kind, start, entry, margin)
        if statistic not in ("auto", "metric"):
            raise PipelineError(f"auto: statistic={statistic}, but the evaluation gives no {statistic}")
        return cls("metric", None, ctx.evaluate(model), 0.0)

    def probe(
        self,
        model: CompressedModel,
        ctx: PassContext,
        relaxation: float,
        values: tuple[tuple[str, float], ...],
        size: int,
        state: dict[str, Fields],
    ) -> Probe:
        """The probe of ``values`` measured on ``model`` as it is now."""
        drop, error = paired(model, ctx, self)
        metric = self.entry - drop if self.kind != "confidences" else ctx.evaluate(model)
        return Probe(relaxation, values, size, drop, state, self.margin * error, self.entry - metric)


def per_example(model: CompressedModel, ctx: PassContext, kind: str) -> torch.Tensor:
    """The evaluation's per-example ``kind`` (``outcomes``: their mean is the metric; ``confidences``),
    from a method of that name beside ``__call__``: the built-in top-1 has both, and a user's
    evaluation can by being an object with such methods (``module -> tensor``)."""
    from sqc.runtime.devices import on_device

    with on_device(model.graph_module, ctx.device) as module:
        values = getattr(ctx.evaluator(), kind)(module)
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1).cpu()


def paired(model: CompressedModel, ctx: PassContext, signal: Signal) -> tuple[float, float]:
    """The drop of ``signal`` from the starting model, and its standard error paired per example (0
    for the metric alone).

    Why paired: two networks that differ little get most examples equally right, so the noise of their
    difference is that of the examples they disagree on (McNemar's view), far below the noise of either
    accuracy. Why confidences when there are: a tolerance of 0.1 points on 5,000 validation images is
    about one standard error of a top-1 drop (each changed prediction counts whole, and retraining alone
    changes a few either way), so a probe within it passes or fails by luck, and the search backs off to
    allocations far below what the network tolerates (LeNet-5 stopped at sparsity 0.7 in two of three
    seeds). The probability of the right label moves by fractions where top-1 flips, and with the rest
    of the examples: its paired drop has a standard error 2-3 times smaller on the LeNets and rises
    smoothly with the sparsity, so ``drop + margin * error`` can certify the tolerance.

    Outcomes count one disagreement more than they saw (add-one, as Agresti and Coull's interval for a
    rate): a probe that changed none of ``n`` examples otherwise has an error of 0, and is certified
    however few ``n`` are, whereas its rate is only known to be below about ``1/n``. The floor is that
    of one whole outcome (the largest per-example value), ``unit / n``."""
    if signal.start is None:
        return signal.entry - ctx.evaluate(model), 0.0
    now = per_example(model, ctx, signal.kind)
    if now.shape != signal.start.shape:
        raise PipelineError(f"the evaluation gave {now.numel()} {signal.kind}, then {signal.start.numel()}")
    change = signal.start - now
    n = change.numel()
    if n < 2:
        return float(change.mean()), 0.0
    squares = float(((change - change.mean()) ** 2).sum())
    if signal.kind == "outcomes":  # one more example that changed by a whole right answer
        squares += float(max(signal.start.abs().max(), now.abs().max())) ** 2
    return float(change.mean()), math.sqrt(squares / (n - 1)) / math.sqrt(n)


def monotone_drops(probes: list[Probe]) -> list[float]:
    """Each probe's bound (drop + margin), smoothed so that a smaller allocation never counts as losing
    less than a larger one (isotonic regression by pooling adjacent violators, over probes sorted by
    predicted bytes).

    Why: a validation metric is noisy at the scale of a tight tolerance, and taking the smallest probe
    that happened to measure within it picks the luckiest measurement; pooling it with the larger probes
    that measured worse gives the estimate all of them support."""
    order = sorted(range(len(probes)), key=lambda i: -probes[i].predicted_bytes)
    blocks: list[tuple[float, int]] = []  # (mean drop, count), drops non-decreasing as bytes fall
    for i in order:
        mean, count = probes[i].bound, 1
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
    """``relaxation:drop:bytes:margin:metric_drop`` of each probe, in the order they ran (the report)."""
    return ";".join(
        f"{p.relaxation:.4g}:{p.drop:.4g}:{p.predicted_bytes}:{p.margin:.4g}:{p.metric_drop:.4g}"
        for p in probes
    )
