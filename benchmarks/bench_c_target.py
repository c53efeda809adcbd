"""The C target on LeNet-300-100 and LeNet-5: batch-1 latency vs PyTorch eager and ONNX Runtime (one
thread each, same machine, same run), dense vs sparse kernels on fc1, ROM vs .sqc vs fp32, and top-1 of
the integer program vs the float model.

Models are compressed at Deep Compression's per-layer densities (LeNet-300-100 8%/9%/26%, LeNet-5
66%/12%/8%/19%) with k-means sharing and Huffman coding, without retraining; calibration uses the
1,000 images in ``examples/mnist_test_1k.npz``; accuracy is measured on the 10,000 MNIST test images
(``../shared/data/mnist``) when present. Latencies are medians over every single inference of many
runs; the C kernel is built with the emitted Makefile's default flags (``-std=c99 -O2``, no fast-math).

    python benchmarks/bench_c_target.py [--runs 20] [--out benchmarks/results/c_target.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sqc  # noqa: E402
from examples.lenet import LeNet5, LeNet300  # noqa: E402
from sqc.targets.c import write_project  # noqa: E402
from sqc.targets.legalize import LowerOptions, legalize  # noqa: E402
from sqc.targets.simulate import compare, quantize_input  # noqa: E402

CALIB = ROOT / "examples" / "mnist_test_1k.npz"
PIPELINES = {
    "lenet300": "prune{per_layer=fc1:0.92;fc2:0.91;fc3:0.74},share{bits=6},huffman",
    "lenet5": "prune{per_layer=conv1:0.34;conv2:0.88;fc1:0.92;fc2:0.81},"
    "share{bits=5 per_layer=conv1:8;conv2:8},huffman",
}


def build(project: Path) -> Path:
    subprocess.run(["make", "-s"], cwd=project, check=True)
    return project / "model"


def c_latency_us(binary: Path, codes: torch.Tensor, runs: int) -> float:
    data = binary.parent / "bench_in.bin"
    codes.numpy().astype(np.int8).tofile(data)
    out = subprocess.run(
        [str(binary), "--bench", str(data), str(runs)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip()) / 1000.0


def torch_latency_us(model: nn.Module, x: torch.Tensor, runs: int) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x[:1])
        for _ in range(runs):
            for i in range(x.shape[0]):
                sample = x[i : i + 1]
                t0 = time.perf_counter_ns()
                model(sample)
                times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000.0


def ort_latency_us(model: nn.Module, x: torch.Tensor, runs: int, work: Path) -> tuple[float | None, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime not installed (pip install '.[bench]')"
    path = work / "model.onnx"
    try:
        torch.onnx.export(model, (x[:1],), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    except Exception as exc:  # the exporter depends on optional packages and torch's version
        return None, f"ONNX export failed: {str(exc).splitlines()[0]}"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    samples = [x[i : i + 1].numpy() for i in range(x.shape[0])]
    for s in samples[:10]:
        session.run(None, {"x": s})
    times = []
    for _ in range(runs):
        for s in samples:
            t0 = time.perf_counter_ns()
            session.run(None, {"x": s})
            times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000.0, f"onnxruntime {ort.__version__}"


def test_images() -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from mnist import load_mnist

        x, y = load_mnist("test")
        return x, y, "MNIST test set (10,000)"
    except Exception:
        with np.load(CALIB) as data:
            return (
                torch.from_numpy(data["x_val"]),
                torch.from_numpy(data["y_val"]),
                "examples/mnist_test_1k.npz",
            )


def bench_model(name: str, model: nn.Module, runs: int, work: Path) -> dict:
    artifact = sqc.compress(model, [(1, 1, 28, 28)], PIPELINES[name])
    source = work / f"{name}.sqc"
    artifact.save(source, force=True)
    program = legalize(source, CALIB)
    report = write_project(program, work / name, model_name=name, force=True)
    binary = build(work / name)
    with np.load(CALIB) as data:
        x = torch.from_numpy(data["x_val"]).float()
    torch.set_num_threads(1)
    c_us = c_latency_us(binary, quantize_input(program, x), runs)
    eager_us = torch_latency_us(model, x, max(1, runs // 10))
    ort_us, ort_note = ort_latency_us(model, x, max(1, runs // 4), work)
    xt, yt, where = test_images()
    acc = compare(program, artifact.module().eval(), xt, yt)
    with torch.no_grad():
        original = float((model(xt).argmax(-1) == yt).float().mean())
    fp32 = 4 * sum(p.numel() for p in model.parameters())
    return {
        "pipeline": PIPELINES[name],
        "latency_us": {"c_int8": c_us, "pytorch_eager_fp32": eager_us, "onnxruntime_fp32": ort_us},
        "ratios": {
            "eager_over_c": eager_us / c_us,
            "ort_over_c": (ort_us / c_us) if ort_us else None,
        },
        "onnxruntime": ort_note,
        "bytes": {
            "fp32": fp32,
            "sqc_file": source.stat().st_size,
            "rom": report["rom_bytes"],
            "rom_weights": report["rom_weight_bytes"],
            "ram": report["ram_bytes"],
            "ram_parts": report["ram"],
        },
        "accuracy": {
            "data": where,
            "original_fp32_top1": original,
            "compressed_float_top1": acc["float_top1"],
            "integer_top1": acc["int_top1"],
            "integer_vs_compressed_float_agreement": acc["top1_agreement"],
        },
        "layers": report["layers"],
    }


def bench_fc1(runs: int, work: Path) -> list[dict]:
    """fc1 of LeNet-300-100 alone (784 -> 300), pruned to Deep Compression's densities, 6-bit shared:
    the sparse kernel (relative index) against the dense kernel (zeros multiplied), same weights."""
    base = LeNet300()
    base.load_state_dict(torch.load(ROOT / "examples" / "lenet300.pt", weights_only=True))
    layer = nn.Sequential(nn.Linear(784, 300)).eval()
    layer[0].load_state_dict(base.fc1.state_dict())
    with np.load(CALIB) as data:
        x = torch.from_numpy(data["x_val"]).float().reshape(-1, 784)
    calib = work / "flat.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    rows = []
    for density in (0.08, 0.09, 0.26):
        artifact = sqc.compress(layer, [(1, 784)], f"prune{{sparsity={1 - density:.2f}}},share{{bits=6}}")
        row: dict[str, float] = {"density": density}
        for mode in ("auto", "never"):
            program = legalize(artifact.model, calib, LowerOptions(sparse=mode))  # type: ignore[arg-type]
            project = work / f"fc1_{density}_{mode}"
            report = write_project(program, project, force=True)
            us = c_latency_us(build(project), quantize_input(program, x), runs)
            key = "sparse" if mode == "auto" else "dense"
            row[f"{key}_us"] = us
            row[f"{key}_rom_weights"] = report["rom_weight_bytes"]
            row[f"{key}_arena"] = report["ram"]["weight_arena"]
        row["speedup"] = row["dense_us"] / row["sparse_us"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="passes over the 1,000 images per C measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "c_target.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"machine": platform.platform(), "torch": torch.__version__}
    try:
        from provenance import git_state

        results["git"] = git_state()
    except Exception as exc:
        results["git"] = {"error": str(exc)}
    results["cc"] = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, factory in (("lenet300", LeNet300), ("lenet5", LeNet5)):
            model = factory()
            model.load_state_dict(torch.load(ROOT / "examples" / f"{name}.pt", weights_only=True))
            results[name] = bench_model(name, model.eval(), args.runs, work)
            print(
                name, json.dumps(results[name]["latency_us"]), json.dumps(results[name]["bytes"]), flush=True
            )
        results["fc1_dense_vs_sparse"] = bench_fc1(args.runs, work)
        print(json.dumps(results["fc1_dense_vs_sparse"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
