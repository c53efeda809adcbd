"""Sensitivity analysis: per-layer rate-distortion curves, the sweeper that measures them, and the
allocator that turns them into per-layer choices (``prune{target=auto}``, ``share{bits=auto}``,
``quant{qp=auto}``); the ``sensitivity`` pass (:mod:`sqc.passes.sensitivity`) runs a sweep on its own.

For every selected weight layer on its own — all other layers as they are — a sweep prunes the layer
to each sparsity, separately shares it at each number of bits (or quantizes it at each step), measures
the metric and the bytes the container actually writes for that layer at that point (the real
encoder), and puts the layer back exactly. The result is an :class:`Analysis`: cached in the pass
context, stored in the report, and readable again later (:func:`load_analysis`).

Bytes of a pruning point are counted as the layer would be written after ``share{bits=rate_bits}``
and ``huffman`` (``rate_bits=0``: as the layer is coded now), so that pruning is chosen for what it
saves in the final file rather than in float32.

The per-layer transforms a sweep applies (prune a layer to a sparsity, share it to a number of bits,
quantize it at a step) are the passes' own, found by name in :data:`sqc.compiler.registry.LAYER_TRANSFORMS`
as passes are: the compiler does not import the passes built on it.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch

from sqc.compiler.allocation import Choice, allocate
from sqc.compiler.pass_base import OptionError, PassContext, Stat, check_range
from sqc.compiler.registry import layer_transform
from sqc.errors import PipelineError
from sqc.formats.tensor_codec import encoded_size
from sqc.ir.records import Coder, CompressedModel, Fields, PassRecord, TensorState, restore, snapshot
from sqc.runtime.executors import Executor, Stopwatch, callable_name, local_workers, run_tasks, unpicklable

Kind = Literal["prune", "share", "quant"]
DEFAULT_SPARSITIES = "0.5;0.6;0.7;0.8;0.9;0.95;0.97"
DEFAULT_BITS = "8;6;5;4;3;2"
DEFAULT_QPS = "-24;-20;-16;-14;-12;-10;-8;-6;-4;-2;0;2;4"
"""``quant{qp=auto}`` sweep, relative to each layer's scale: ``qp = offset + round(4 log2 std)`` (the
standard deviation of its kept weights), so that one sweep suits layers of any magnitude: offset -24 is a
step of std/64 (~8 bits a weight), -4 a step of std/2 (~1.5 bits), 4 a step of 2 std. The coarse end is
for pruned layers: their kept weights all lie away from zero, so steps far coarser than a dense layer
takes still keep most of them (90 %-pruned LeNet-5's fc1 keeps its accuracy at offset +3; with the sweep
ending at -4, ``qp=auto`` could not go past it and gave 30 KB where 26 KB held the same test accuracy)."""
JSON_FORMAT = "sqc-sensitivity/1"
ANALYSIS = "sensitivity"
"""The key of the analysis in the pass context (passes that keep the weights list it in ``preserves``)."""


@dataclass(frozen=True)
class Point:
    """One measured point: ``value`` is a sparsity (pruning curve) or a number of bits (sharing curve)."""

    value: float
    metric: float
    bytes: int


@dataclass
class Analysis:
    """Per-layer curves and the baseline metric they are measured against.

    A pruning curve starts with the layer as it is (its current sparsity, the baseline metric); a
    sharing curve goes from most to fewest bits. ``source`` names the file a reused analysis came from.
    """

    metric: float | None = None
    samples: int = 0
    rate_bits: int = 5
    prune: dict[str, list[Point]] = field(default_factory=dict)
    share: dict[str, list[Point]] = field(default_factory=dict)
    quant: dict[str, list[Point]] = field(default_factory=dict)
    numel: dict[str, int] = field(default_factory=dict)
    source: str = ""
    evaluations: int = 0

    def curves(self, kind: Kind) -> dict[str, list[Point]]:
        return {"prune": self.prune, "share": self.share, "quant": self.quant}[kind]

    def layer_names(self) -> set[str]:
        return set(self.prune) | set(self.share) | set(self.quant)

    def reset(self, samples: int, rate_bits: int) -> None:
        """Forget every curve (the cached object is shared with the context, so it is emptied in place)."""
        self.adopt(Analysis(samples=samples, rate_bits=rate_bits))

    def adopt(self, other: Analysis) -> None:
        """Become ``other`` in place."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    # -- JSON (``sqc sensitivity --json``) ---------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        layers: dict[str, Any] = {}
        for name in sorted(self.layer_names()):
            layers[name] = {
                "numel": self.numel.get(name, 0),
                "prune": [
                    {"sparsity": p.value, "metric": p.metric, "bytes": p.bytes}
                    for p in self.prune.get(name, [])
                ],
                "share": [
                    {"bits": int(p.value), "metric": p.metric, "bytes": p.bytes}
                    for p in self.share.get(name, [])
                ],
            }
            if name in self.quant:
                layers[name]["quant"] = [
                    {"qp": int(p.value), "metric": p.metric, "bytes": p.bytes} for p in self.quant[name]
                ]
        return {
            "format": JSON_FORMAT,
            "metric": self.metric,
            "samples": self.samples,
            "rate_bits": self.rate_bits,
            "layers": layers,
        }

    @staticmethod
    def from_json(doc: Any, where: str) -> Analysis:
        try:
            if doc.get("format") != JSON_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {JSON_FORMAT!r}")
            out = Analysis(float(doc["metric"]), int(doc["samples"]), int(doc["rate_bits"]), source=where)
            for name, layer in doc["layers"].items():
                out.numel[name] = int(layer["numel"])
                if layer.get("prune"):
                    out.prune[name] = [
                        Point(float(p["sparsity"]), float(p["metric"]), int(p["bytes"]))
                        for p in layer["prune"]
                    ]
                if layer.get("share"):
                    out.share[name] = [
                        Point(float(p["bits"]), float(p["metric"]), int(p["bytes"])) for p in layer["share"]
                    ]
                if layer.get("quant"):
                    out.quant[name] = [
                        Point(float(p["qp"]), float(p["metric"]), int(p["bytes"])) for p in layer["quant"]
                    ]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"{where}: not a sensitivity analysis ({exc})") from None
        return out

    # -- the report (flat statistics: ``metric@s0.9``, ``bytes@b5``) -------------------------------

    def report_layers(self, names: list[str]) -> dict[str, dict[str, Stat]]:
        layers: dict[str, dict[str, Stat]] = {}
        for name in names:
            row: dict[str, Stat] = {"numel": self.numel.get(name, 0)}
            curves = (
                ("s", self.prune.get(name, [])),
                ("b", self.share.get(name, [])),
                ("q", self.quant.get(name, [])),
            )
            for tag, points in curves:
                for p in points:
                    key = f"{p.value:g}" if tag == "s" else f"{int(p.value)}"
                    row[f"metric@{tag}{key}"] = p.metric
                    row[f"bytes@{tag}{key}"] = p.bytes
            layers[name] = row
        return layers

    def report_stats(self) -> dict[str, Stat]:
        stats: dict[str, Stat] = {
            "metric": self.metric if self.metric is not None else float("nan"),
            "samples": self.samples,
            "rate_bits": self.rate_bits,
            "layers": len(self.layer_names()),
            "evaluations": self.evaluations,
        }
        if self.source:
            stats["source"] = self.source
        return stats

    @staticmethod
    def from_report(record: PassRecord, where: str) -> Analysis:
        key = re.compile(r"^(metric|bytes)@([sbq])(.+)$")
        try:
            out = Analysis(
                float(record.stats["metric"]),
                int(record.stats["samples"]),
                int(record.stats["rate_bits"]),
                source=where,
            )
            for name, row in record.layers.items():
                out.numel[name] = int(row["numel"])
                found: dict[tuple[str, float], dict[str, float]] = {}
                for text, number in row.items():
                    m = key.match(text)
                    if m:
                        found.setdefault((m.group(2), float(m.group(3))), {})[m.group(1)] = float(number)
                prune = sorted((v, d) for (t, v), d in found.items() if t == "s")
                share = sorted(((v, d) for (t, v), d in found.items() if t == "b"), reverse=True)
                if prune:
                    out.prune[name] = [Point(v, d["metric"], int(d["bytes"])) for v, d in prune]
                if share:
                    out.share[name] = [Point(v, d["metric"], int(d["bytes"])) for v, d in share]
                quant = sorted((v, d) for (t, v), d in found.items() if t == "q")
                if quant:
                    out.quant[name] = [Point(v, d["metric"], int(d["bytes"])) for v, d in quant]
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"{where}: the sensitivity record is malformed ({exc})") from None
        return out


def load_analysis(path: Path) -> Analysis:
    """A sensitivity analysis from ``sqc sensitivity --json`` output or a ``.sqc`` file's report."""
    from sqc.errors import SqcError
    from sqc.formats.container import MAGIC, read_layout

    if not path.is_file():
        raise PipelineError(f"reuse={path}: no such file")
    data = path.read_bytes()
    if data.startswith(MAGIC):
        try:
            report = read_layout(data, decode_tensors=False).report
        except SqcError as exc:
            raise PipelineError(f"reuse={path}: {exc}") from None
        records = [r for r in report if r.spec.split("{")[0] == "sensitivity"]
        if not records:
            passes = ", ".join(r.spec.split("{")[0] for r in report) or "none"
            raise PipelineError(f"reuse={path}: its report holds no sensitivity record (passes: {passes})")
        return Analysis.from_report(records[-1], str(path))
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PipelineError(f"reuse={path}: neither a .sqc file nor sensitivity JSON") from None
    return Analysis.from_json(doc, str(path))


# -- measuring ---------------------------------------------------------------------------------------


def coded_bytes(state: TensorState, rate_bits: int, coder: Coder = "huffman") -> int:
    """Bytes the container writes for ``state`` once it holds codes and is coded by ``coder``: a float
    record is first shared to ``rate_bits`` on a scratch copy (``0``: counted as it is coded now)."""
    share_record = layer_transform("share")
    scratch = TensorState(
        state.name, state.shape, state.role, state.dense, state.mask, state.codes, state.codebook, state.fmt
    )
    if scratch.codes is None:
        if not rate_bits:
            return encoded_size(scratch)
        share_record(scratch, rate_bits)
    scratch.coder = coder
    return encoded_size(scratch)


def parse_sweep(text: str, option: str, *, whole: bool, low: float, high: float) -> tuple[float, ...]:
    """``0.5;0.9`` -> ``(0.5, 0.9)``; empty text is an empty sweep."""
    values = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            number = float(part)
        except ValueError:
            raise OptionError(option, f"{part!r} is not a number (separate values with ';')") from None
        if whole and number != int(number):
            raise OptionError(option, f"{part} is not a whole number of bits")
        check_range(option, number, low, high)
        values.append(number)
    if len(set(values)) != len(values):
        raise OptionError(option, f"{text!r} repeats a value")
    return tuple(values)


@dataclass(frozen=True)
class Task:
    """One sweep point: prune layer ``name`` to sparsity ``value`` (or share it to ``value`` bits),
    evaluate, count its coded bytes (``rate_bits`` as in :func:`coded_bytes`), put it back."""

    kind: Kind
    name: str
    value: float
    rate_bits: int


def measure_point(model: CompressedModel, evaluate: Callable[[], float], task: Task) -> Point:
    """Measure one point on ``model`` and restore the layer exactly. The serial sweep and every worker
    of a parallel one run this same function, so their results are the same numbers."""
    state = model.tensors[task.name]
    saved = snapshot([state])
    try:
        transform = layer_transform(task.kind)
        if task.kind == "prune":
            transform(state, task.value)
        elif task.kind == "share":
            model.release(state.name)
            transform(state, int(task.value))
        else:  # a step is chosen for the rate the context coder gives it
            model.release(state.name)
            transform(state, int(task.value))
            model.sync([state.name])
            return Point(task.value, evaluate(), coded_bytes(state, 0, "rans"))
        model.sync([state.name])
        return Point(task.value, evaluate(), coded_bytes(state, task.rate_bits))
    finally:
        restore(model, saved)


Payload = tuple[Any, dict[str, TensorState], Callable[[torch.nn.Module], float]]


def ship(model: CompressedModel, evaluator: Callable[[torch.nn.Module], float]) -> bytes:
    """The pickled ``(graph module, records, evaluator)`` a worker rebuilds the model from.

    The module is pickled with its tensors released (the worker re-syncs them from the records), so
    the weights travel once rather than twice (plain pickle does not share storage between a record
    and its parameter); records are fresh copies without their cached encoded sizes (weak references).
    """
    held = {}
    for name, state in model.tensors.items():
        module = model.graph_module
        tensor = module.get_parameter(name) if state.role != "buffer" else module.get_buffer(name)
        held[name] = (tensor, tensor.data)
        model.release(name)
    try:
        records = {
            name: TensorState(s.name, s.shape, s.role, s.dense, s.mask, s.codes, s.codebook, s.fmt, s.coder)
            for name, s in model.tensors.items()
        }
        return pickle.dumps((model.graph_module, records, evaluator), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for tensor, data in held.values():
            tensor.data = data


def _worker_setup(payload: Payload) -> tuple[CompressedModel, Callable[[torch.nn.Module], float]]:
    module, records, evaluator = payload
    model = CompressedModel(module, records, [])
    model.sync()
    return model, evaluator


def _worker_measure(state: tuple[CompressedModel, Callable[[torch.nn.Module], float]], task: Task) -> Point:
    model, evaluator = state
    return measure_point(model, lambda: float(evaluator(model.graph_module)), task)


class Sweeper:
    """Measures curves into an :class:`Analysis` (only the layers and kinds it lacks), on the context's
    executor: the points are independent, so they may run anywhere and are assembled in sweep order."""

    def __init__(self, model: CompressedModel, ctx: PassContext, analysis: Analysis) -> None:
        self.model, self.ctx, self.analysis = model, ctx, analysis
        self.diagnostics: list[str] = []
        self.clock = Stopwatch()

    def evaluate(self) -> float:
        self.analysis.evaluations += 1
        return self.clock.time(lambda: self.ctx.evaluate(self.model, self.analysis.samples or None))

    def ensure(self, kind: Kind, states: list[TensorState], values: tuple[float, ...], *, redo: bool) -> None:
        """Measure ``kind`` curves over ``values`` for the states without one (every state if ``redo``)."""
        self.ensure_all([(kind, states, values, redo)])

    def ensure_all(self, requests: list[tuple[Kind, list[TensorState], tuple[float, ...], bool]]) -> None:
        """:meth:`ensure` for several sweeps at once, so that a parallel executor starts its workers once."""
        jobs: list[tuple[Kind, TensorState, list[Task]]] = []
        for kind, states, values, redo in requests:
            curves = self.analysis.curves(kind)
            todo = [s for s in states if redo or s.name not in curves]
            if kind == "share":
                todo = [s for s in todo if not (s.codes is not None and s.codebook is None)]  # fixed point
            if kind == "quant":
                todo = [s for s in todo if s.codes is None]  # weights already coded keep their codes
            if not todo or not values:
                continue
            rate = self.analysis.rate_bits
            for state in todo:
                if kind == "prune":
                    tasks = [Task(kind, state.name, v, rate) for v in beyond(state, values)]
                elif kind == "quant":
                    tasks = [Task(kind, state.name, float(qp), 0) for qp in layer_qps(state, values)]
                else:
                    tasks = [
                        Task(kind, state.name, float(b), 0) for b in sorted({int(b) for b in values})[::-1]
                    ]
                jobs.append((kind, state, tasks))
        if not jobs:
            return
        if self.analysis.metric is None:
            self.ctx.note("sensitivity: baseline")
            self.analysis.metric = self.evaluate()
        tasks = [task for _, _, batch in jobs for task in batch]
        results = iter(self._measure(tasks))
        for kind, state, batch in jobs:
            self.analysis.numel[state.name] = state.numel
            points = []
            if kind == "prune":
                first = Point(current_sparsity(state), self.analysis.metric, coded_bytes(state, rate))
                points.append(first)
            points.extend(next(results) for _ in batch)
            self.analysis.curves(kind)[state.name] = points

    def _measure(self, tasks: list[Task]) -> list[Point]:
        executor = self._choose(len(tasks))
        if executor.kind == "serial":
            points = []
            for number, task in enumerate(tasks, 1):
                what = {"prune": f"sparsity {task.value:g}", "share": f"{int(task.value)} bits"}.get(
                    task.kind, f"qp {int(task.value)}"
                )
                self.ctx.note(f"sensitivity: {task.name} {what}", number, len(tasks))
                points.append(measure_point(self.model, self.evaluate, task))
            return points
        self.ctx.note(f"sensitivity: {len(tasks)} points on {executor.describe()}")
        payload = ship(self.model, self.ctx.evaluator(self.analysis.samples or None))
        points = run_tasks(
            executor,
            payload,
            _worker_setup,
            _worker_measure,
            tasks,
            lambda done, total: self.ctx.note(f"sensitivity: points on {executor.describe()}", done, total),
        )
        self.analysis.evaluations += len(tasks)
        return points

    def _choose(self, points: int) -> Executor:
        """The context's executor, or serial where a pool cannot help or cannot be used."""
        executor = self.ctx.executor
        if executor.kind == "serial" or points < 2:
            return Executor("serial")
        device = self.ctx.device
        if device.type != "cpu":
            if executor.kind == "process" and executor.workers == 0:
                # the accelerator asked for, rather than a pool of CPU processes that would each need
                # their own context on it
                self.ctx.note(f"sensitivity: sweeping on {device} in this process")
                return Executor("serial")
            self.ctx.note(f"sensitivity: the {executor.kind} workers evaluate on their CPUs, not on {device}")
        if executor.kind == "process":
            if local_workers(executor.workers, points) < 2:
                return Executor("serial")
            each = self.clock.mean
            if executor.workers == 0 and each is not None and each * points < executor.min_seconds:
                return Executor("serial")  # finishes before the workers would have imported torch
        evaluator = self.ctx.evaluator(self.analysis.samples or None)
        why = unpicklable(evaluator)
        if why is None:
            return executor
        name = callable_name(evaluator)
        if executor.kind == "ray":
            raise PipelineError(
                f"executor=ray ships the evaluation to Ray workers, but {name} cannot be pickled ({why}): "
                "make it a module-level function or a picklable object, or use executor=serial"
            )
        self.diagnostics.append(
            f"sweep ran serially: the evaluation {name} cannot be pickled for the process pool ({why}); "
            "make it a module-level function (or pass executor=serial to silence this)"
        )
        return Executor("serial")


def cached_analysis(ctx: PassContext) -> Analysis:
    """The context's sensitivity analysis (an empty one, to be measured into, if nobody made it yet)."""
    analysis = ctx.analysis(ANALYSIS, Analysis)
    assert isinstance(analysis, Analysis)
    return analysis


def layer_qps(state: TensorState, offsets: tuple[float, ...]) -> list[int]:
    """The ``qp`` sweep of one layer: ``offsets`` (finest first) on its own scale (:data:`DEFAULT_QPS`)."""
    values = state.decode().reshape(-1)
    if state.mask is not None:
        values = values[state.mask.reshape(-1)]
    std = float(values.to(torch.float64).std()) if values.numel() > 1 else 0.0
    if not (std > 0 and math.isfinite(std)):
        std = float(values.abs().max()) if values.numel() else 0.0
    base = round(4 * math.log2(std)) if std > 0 else 0
    return sorted({int(offset) + base for offset in offsets})


def current_sparsity(state: TensorState) -> float:
    return round(1.0 - state.density, 6)


def beyond(state: TensorState, sparsities: tuple[float, ...]) -> list[float]:
    """The sweep's sparsities that would prune more of ``state`` than is pruned now, ascending."""
    pruned = state.numel - state.kept
    return sorted(s for s in sparsities if round(s * state.numel) > pruned)


def check_matches(analysis: Analysis, states: list[TensorState]) -> None:
    """A reused analysis must describe this model: same layer names, same sizes."""
    for state in states:
        numel = analysis.numel.get(state.name)
        if numel is not None and numel != state.numel:
            raise PipelineError(
                f"{analysis.source}: layer {state.name} has {numel:,} weights there but {state.numel:,} here "
                "(the curves were measured on another model)"
            )


# -- target=auto / bits=auto -------------------------------------------------------------------------


@dataclass
class Outcome:
    """What an automatic allocation did, for the calling pass to report."""

    values: dict[str, float]
    predicted: dict[str, float]
    before: dict[str, tuple[torch.Tensor, int]]
    snapshot: dict[str, Fields]
    stats: dict[str, Stat]
    diagnostics: list[str]
    changed: bool


def reference_metric(model: CompressedModel) -> float | None:
    """The metric the first accuracy-aware pass of this model found (the tolerance counts from it)."""
    for record in model.report:
        value = record.stats.get("metric_reference")
        if isinstance(value, (int, float)):
            return float(value)
    return None


def auto_allocate(
    model: CompressedModel,
    ctx: PassContext,
    kind: Kind,
    states: list[TensorState],
    fixed: dict[str, float],
    budget: float | None,
    apply: Callable[[TensorState, float], None],
) -> Outcome:
    """Choose, apply and verify per-layer points for ``prune{target=auto}`` / ``share{bits=auto}``.

    ``fixed`` layers get their given value; the others one point of their sensitivity curve, chosen
    by :func:`sqc.compiler.allocation.allocate` under the budget and verified with the full evaluation. The
    model is left holding the result.
    """
    entry = ctx.evaluate(model)
    recorded = reference_metric(model)
    reference = entry if recorded is None else recorded
    spend = budget if budget is not None else max(0.0, ctx.tolerance - (reference - entry))
    analysis = cached_analysis(ctx)
    auto = [s for s in states if s.name not in fixed]
    missing = [s.name for s in auto if s.name not in analysis.curves(kind)]
    if missing and analysis.source:
        raise PipelineError(
            f"the sensitivity curves from {analysis.source} have no {kind} curve for {missing[0]}: "
            "measure them (drop reuse=) or select fewer layers"
        )
    if missing:
        if kind == "prune":
            values = parse_sweep(DEFAULT_SPARSITIES, "sparsities", whole=False, low=0.0, high=0.9999)
        elif kind == "quant":
            values = parse_sweep(DEFAULT_QPS, "qps", whole=True, low=-64, high=16)
        else:
            values = parse_sweep(DEFAULT_BITS, "bits", whole=True, low=1, high=16)
        sweeper = Sweeper(model, ctx, analysis)
        sweeper.ensure(kind, auto, values, redo=False)
        swept = sweeper.diagnostics
    else:
        swept = []
    unmeasurable = [s.name for s in auto if not analysis.curves(kind).get(s.name)]
    if unmeasurable:
        raise PipelineError(f"no {kind} curve can be measured for {unmeasurable[0]}")
    assert analysis.metric is not None
    curves = {
        s.name: [Choice(p.value, analysis.metric - p.metric, p.bytes) for p in analysis.curves(kind)[s.name]]
        for s in auto
    }
    saved = snapshot(states)
    before = {s.name: (s.decode(), encoded_size(s)) for s in states}
    by_name = {s.name: s for s in states}
    for name, value in fixed.items():
        apply(by_name[name], value)
    applied: dict[str, int] = {}
    evaluations = 0
    rounds = 0

    def measure(choice: dict[str, int]) -> float:
        nonlocal evaluations, rounds
        # each back-off moves one layer one point back, so the first choice bounds the rounds left
        rounds = rounds or 1 + sum(choice.values())
        for name, index in choice.items():
            if applied.get(name) == index:
                continue
            restore(model, saved, [name])
            if kind != "prune" or index > 0:  # index 0 of a pruning curve is the layer as it is
                apply(by_name[name], curves[name][index].value)
            applied[name] = index
        evaluations += 1
        ctx.note(f"{kind}: verifying allocation", evaluations, rounds)
        return entry - ctx.evaluate(model)

    result = allocate(curves, spend, measure)
    diagnostics = list(swept)
    if analysis.source:
        diagnostics.append(f"sensitivity curves reused from {analysis.source}")
    if not result.within:
        diagnostics.append(
            f"budget {spend:.6g} not met: even the safest points measure a drop of {result.measured_drop:.6g}"
        )
    stats: dict[str, Stat] = {
        "metric_reference": reference,
        "metric_before": entry,
        "budget": spend,
        "metric_predicted": entry - result.predicted_drop,
        "metric_after": entry - result.measured_drop,
        "backoffs": result.backoffs,
        "verifications": evaluations,
    }
    changed = any(
        any(a is not b for a, b in zip(saved[s.name], snapshot([s])[s.name], strict=True)) for s in states
    )
    return Outcome(result.values, result.predicted, before, saved, stats, diagnostics, changed)
