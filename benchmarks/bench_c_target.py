"""The C target on LeNet-300-100, LeNet-5 and SqueezeNet v1.1 (224x224): batch-1 latency vs PyTorch eager
and ONNX Runtime on the dense fp32 model (one thread each, same machine, same run), the sparse linear
layouts against each other, density scaling of the sparse kernel on fc1, ROM/RAM (the decoded form
included) vs .sqc vs fp32, and top-1 of the integer program vs the float model.

The LeNets are compressed at Deep Compression's per-layer densities (LeNet-300-100 8%/9%/26%, LeNet-5
66%/12%/8%/19%) and at 90 % uniform pruning (every layer), with k-means sharing and Huffman coding,
without retraining; calibration uses the 1,000 images in ``examples/mnist_test_1k.npz``; accuracy is
measured on the 10,000 MNIST test images (``../shared/data/mnist``) when present. SqueezeNet v1.1 comes
from sqc's zoo with its seeded random initialisation (no weights are downloaded: latency only), pruned
90 % per layer and 8-bit quantized, calibrated and timed on random 224x224 images; its max-pools use
``ceil_mode=False``, which at 224x224 gives the same windows (the integer targets refuse ceil_mode).
Latencies are medians over every single inference of many runs; the C kernel is built with the emitted
Makefile's default flags (``-std=c99 -O2``, no fast-math, baseline x86-64: SSE2).

    python benchmarks/bench_c_target.py [--runs 20] [--out benchmarks/results/c_target.json]
"""

from __future__ import annotations

import argparse
import json
import os
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
from sqc.models import get_model  # noqa: E402
from sqc.targets.c import write_project  # noqa: E402
from sqc.targets.legalize import LowerOptions, legalize  # noqa: E402
from sqc.targets.simulate import compare, quantize_input  # noqa: E402

CALIB = ROOT / "examples" / "mnist_test_1k.npz"
PIPELINES = {
    "lenet300": "prune{per_layer=fc1:0.92;fc2:0.91;fc3:0.74},share{bits=6},huffman",
    "lenet5": "prune{per_layer=conv1:0.34;conv2:0.88;fc1:0.92;fc2:0.81},"
    "share{bits=5 per_layer=conv1:8;conv2:8},huffman",
}
UNIFORM_90 = {
    "lenet300": "prune{sparsity=0.9 scope=layer},share{bits=6},huffman",
    "lenet5": "prune{sparsity=0.9 scope=layer},share{bits=5 per_layer=conv1:8;conv2:8},huffman",
}
SQUEEZENET = "prune{sparsity=0.9 scope=layer},quant,huffman"
LAYOUTS = ("column", "row", "entries")  # the writer's sparse linear layouts (sqc.targets.c.LINEAR_LAYOUTS)
FC1_DENSITIES = (0.08, 0.09, 0.10, 0.26, 0.50, 1.00)


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


def c_build(program, project: Path, name: str = "model", linear: str = "auto") -> tuple[Path, dict]:
    report = write_project(program, project, model_name=name, force=True, linear=linear)
    return build(project), report


def bench_config(name: str, model: nn.Module, pipeline: str, runs: int, work: Path, x: torch.Tensor) -> dict:
    """One compressed LeNet: C latency with each sparse linear layout, ROM/RAM, accuracy."""
    artifact = sqc.compress(model, [(1, 1, 28, 28)], pipeline)
    source = work / f"{name}.sqc"
    artifact.save(source, force=True)
    program = legalize(source, CALIB)
    codes = quantize_input(program, x)
    layouts: dict[str, float] = {}
    reports: dict[str, dict] = {}
    for linear in LAYOUTS:
        binary, reports[linear] = c_build(program, work / f"{name}_{linear}", name, linear)
        layouts[linear] = c_latency_us(binary, codes, runs)
    report = reports["column"]  # the default (linear=auto)
    xt, yt, where = test_images()
    acc = compare(program, artifact.module().eval(), xt, yt)
    with torch.no_grad():
        original = float((model(xt).argmax(-1) == yt).float().mean())
    fp32 = 4 * sum(p.numel() for p in model.parameters())
    return {
        "pipeline": pipeline,
        "c_int8_us": layouts["column"],
        "c_int8_us_by_linear_layout": layouts,
        "bytes": {
            "fp32": fp32,
            "sqc_file": source.stat().st_size,
            "rom": report["rom_bytes"],
            "rom_weights": report["rom_weight_bytes"],
            "ram": report["ram_bytes"],
            "ram_parts": report["ram"],
            "ram_by_linear_layout": {k: r["ram_bytes"] for k, r in reports.items()},
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


def bench_model(name: str, model: nn.Module, runs: int, work: Path) -> dict:
    """Both compressed variants of one LeNet against eager and ONNX Runtime on its dense fp32 model."""
    with np.load(CALIB) as data:
        x = torch.from_numpy(data["x_val"]).float()
    torch.set_num_threads(1)
    configs = {
        "deep_compression": bench_config(name, model, PIPELINES[name], runs, work, x),
        "uniform_90": bench_config(f"{name}_u90", model, UNIFORM_90[name], runs, work, x),
    }
    eager_us = torch_latency_us(model, x, max(1, runs // 10))
    ort_us, ort_note = ort_latency_us(model, x, max(1, runs // 4), work)
    out = configs["deep_compression"]
    for config in configs.values():
        c_us = config["c_int8_us"]
        config["ort_over_c"] = ort_us / c_us if ort_us else None
        config["eager_over_c"] = eager_us / c_us
    return {
        "pipeline": out["pipeline"],
        "latency_us": {
            "c_int8": out["c_int8_us"],
            "pytorch_eager_fp32": eager_us,
            "onnxruntime_fp32": ort_us,
        },
        "ratios": {"eager_over_c": out["eager_over_c"], "ort_over_c": out["ort_over_c"]},
        "onnxruntime": ort_note,
        "bytes": out["bytes"],
        "accuracy": out["accuracy"],
        "layers": out["layers"],
        "configs": configs,
    }


def bench_fc1(runs: int, work: Path) -> dict:
    """fc1 of LeNet-300-100 alone (784 -> 300), 6-bit shared, pruned to a range of densities (100 %: no
    pruning, stored sparse anyway): the default by-column kernel and the relative-index walk it replaced
    (``entries``) against the dense kernel (zeros multiplied), on the MNIST images (82 % of the pixels
    are zero, and the by-column kernel skips their columns) and on random inputs without zeros, where
    only the weights' sparsity can pay."""
    base = LeNet300()
    base.load_state_dict(torch.load(ROOT / "examples" / "lenet300.pt", weights_only=True))
    layer = nn.Sequential(nn.Linear(784, 300)).eval()
    layer[0].load_state_dict(base.fc1.state_dict())
    with np.load(CALIB) as data:
        x = torch.from_numpy(data["x_val"]).float().reshape(-1, 784)
    calib = work / "flat.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    g = torch.Generator().manual_seed(0)
    rows = []
    dense_us: dict[str, float] = {}
    for density in FC1_DENSITIES:
        prune = f"prune{{sparsity={1 - density:.2f}}}," if density < 1 else ""
        artifact = sqc.compress(layer, [(1, 784)], prune + "share{bits=6}")
        program = legalize(artifact.model, calib, LowerOptions(sparse="always"))  # type: ignore[arg-type]
        codes = quantize_input(program, x)
        inputs = {"mnist": codes, "no_zeros": torch.randint(1, 128, codes.shape, generator=g)}
        row: dict = {"density": density, "kept": program.weights[0].kept}
        for linear in ("column", "entries"):
            binary, report = c_build(program, work / f"fc1_{density}_{linear}", linear=linear)
            for kind, data in inputs.items():
                row[f"{linear}_{kind}_us"] = c_latency_us(binary, data, runs)
            row[f"{linear}_ram_weights"] = report["ram"]["weight_arena"]
            row["rom_weights"] = report["rom_weight_bytes"]
        if not dense_us:
            dense = legalize(artifact.model, calib, LowerOptions(sparse="never"))  # type: ignore[arg-type]
            binary, report = c_build(dense, work / "fc1_dense")
            for kind, data in inputs.items():
                dense_us[kind] = c_latency_us(binary, data, runs)
            dense_us["ram_weights"] = report["ram"]["weight_arena"]
        rows.append(row)
    full = rows[-1]
    tenth = next(r for r in rows if r["density"] == 0.10)
    scaling = {
        kind: {
            "us_at_10_percent": tenth[f"column_{kind}_us"],
            "us_at_100_percent": full[f"column_{kind}_us"],
            "ratio": tenth[f"column_{kind}_us"] / full[f"column_{kind}_us"],
        }
        for kind in ("mnist", "no_zeros")
    }
    return {"rows": rows, "dense_kernel": dense_us, "scaling_10_vs_100": scaling}


def bench_squeezenet(runs: int, work: Path) -> dict:
    """SqueezeNet v1.1 at 224x224 (random weights: latency only) against eager and ONNX Runtime."""
    torch.manual_seed(0)
    model = get_model("squeezenet1_1").eval()
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d):
            module.ceil_mode = False  # same windows at 224x224; the integer targets refuse ceil_mode
    x = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    calib = work / "squeezenet_calib.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    artifact = sqc.compress(model, [(1, 3, 224, 224)], SQUEEZENET)
    source = work / "squeezenet.sqc"
    artifact.save(source, force=True)
    program = legalize(source, calib)
    binary, report = c_build(program, work / "squeezenet", "squeezenet")
    c_us = c_latency_us(binary, quantize_input(program, x), runs)
    eager_us = torch_latency_us(model, x, runs)
    ort_us, ort_note = ort_latency_us(model, x, runs, work)
    return {
        "pipeline": SQUEEZENET,
        "latency_us": {"c_int8": c_us, "pytorch_eager_fp32": eager_us, "onnxruntime_fp32": ort_us},
        "ratios": {"eager_over_c": eager_us / c_us, "ort_over_c": (ort_us / c_us) if ort_us else None},
        "onnxruntime": ort_note,
        "bytes": {
            "fp32": 4 * sum(p.numel() for p in model.parameters()),
            "sqc_file": source.stat().st_size,
            "rom": report["rom_bytes"],
            "ram": report["ram_bytes"],
            "ram_parts": report["ram"],
        },
    }


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
            for config, figures in results[name]["configs"].items():
                print(name, config, json.dumps(figures["c_int8_us_by_linear_layout"]), flush=True)
            print(name, json.dumps(results[name]["latency_us"]), flush=True)
        results["fc1_density"] = bench_fc1(args.runs, work)
        print(json.dumps(results["fc1_density"]["scaling_10_vs_100"]), flush=True)
        results["squeezenet1_1"] = bench_squeezenet(max(1, args.runs // 10), work)
        print("squeezenet1_1", json.dumps(results["squeezenet1_1"]["latency_us"]), flush=True)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["loadavg_1min_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
