"""Structured pruning (``prune-channels``) against the unstructured pipeline: size, compute, latency.

Two parts.

1. **ImageNet-size networks** (ResNet-18 and SqueezeNet v1.1 from ``sqc.models``, seeded random
   weights — the sizes and latencies do not depend on the values): the traced model and the model
   with ``prune-channels{ratio=R}`` (default 0.5: half the channels of every prunable channel space),
   each written to ``.sqc`` and restored with ``sqc.load``. Reported: parameters, MACs and FLOPs (from
   ``sqc.inspect``), file size, and batch-1 CPU latency of the restored modules (and of the original
   eager module), one thread, runs of the variants interleaved in the same process, median and
   10th/90th percentiles.
2. **LeNet-5 on MNIST** (``examples/lenet5.pt`` in ``sqc.models.LeNet5``), fine-tuned with sqc's
   built-in trainer on the 60,000 training images, evaluated after a round trip through the file on
   the 10,000 test images:

   * ``channels``: ``prune-channels`` + fine-tuning + ``share`` + trained quantization + ``huffman``;
   * ``unstructured``: ``prune`` at Deep Compression's LeNet-5 densities + the same fine-tuning,
     sharing, trained quantization and Huffman coding;
   * ``both``: ``prune-channels`` then milder unstructured pruning, the rest the same.

   The settings were fixed before the run (no tuning against the test set). Reported: file size,
   top-1 error, parameters, MACs, batch-1 latency of the restored module.

Run: ``python benchmarks/bench_channels.py [--ratio 0.5] [--lenet-ratio 0.7] [--epochs 2] [--runs N]
[--quick]``. Writes ``benchmarks/results/channels.json``. One thread throughout; about 6 minutes.
The script uses the sqc it can import; when that sqc has no ``sqc.models`` (an older install) it
takes the checkout's sources instead, and the JSON records which one ran.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
import sqc  # noqa: E402
from sqc.app.api import Artifact  # noqa: E402
from sqc.app.inspection import describe_ir  # noqa: E402
from sqc.frontend.trace import trace  # noqa: E402
from sqc.models import LeNet5, get_model  # noqa: E402
from sqc.runtime.data import Dataset  # noqa: E402

sys.path.append(str(REPO))
sys.path.append(str(REPO / "tests" / "models_pkg"))  # sqc_mnist_eval: the measures, tested by the suite
from sqc_mnist_eval import error_pct  # noqa: E402

from benchmarks.mnist import load_mnist  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402

DC_DENSITIES = "conv1:0.34;conv2:0.88;fc1:0.92;fc2:0.81"  # Deep Compression's LeNet-5: 66/12/8/19 % kept
BOTH_DENSITIES = "conv1:0.2;conv2:0.6;fc1:0.8;fc2:0.6"  # milder: the layers are already smaller


def latency(modules: dict[str, torch.nn.Module], x: torch.Tensor, runs: int, warmup: int) -> dict[str, Any]:
    """Batch-1 latency in microseconds, the variants' runs interleaved so that load affects all alike."""
    times: dict[str, list[float]] = {name: [] for name in modules}
    with torch.inference_mode():
        for module in modules.values():
            module.eval()
            for _ in range(warmup):
                module(x)
        for _ in range(runs):
            for name, module in modules.items():
                start = time.perf_counter_ns()
                module(x)
                times[name].append((time.perf_counter_ns() - start) / 1000)
    out = {}
    for name, values in times.items():
        ordered = sorted(values)
        out[name] = {
            "median_us": round(statistics.median(values), 1),
            "p10_us": round(ordered[len(ordered) // 10], 1),
            "p90_us": round(ordered[(9 * len(ordered)) // 10], 1),
            "runs": len(values),
        }
    return out


def totals(path: Path) -> dict[str, Any]:
    t = sqc.inspect(path)["totals"]
    return {"params": t["params"], "macs": t["macs"], "flops": t["flops"], "file_bytes": t["file_bytes"]}


def imagenet_part(ratio: float, runs: int, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for name in ("resnet18", "squeezenet1_1"):
        torch.manual_seed(0)
        model = get_model(name).eval()
        shape = model.example_input_shape
        print(f"{name}: trace, prune-channels{{ratio={ratio}}}, save, load ...", flush=True)
        before_path, after_path = tmp / f"{name}.sqc", tmp / f"{name}_channels.sqc"
        Artifact(trace(model)).save(before_path, force=True)
        started = time.perf_counter()
        artifact = sqc.compress(model, None, f"prune-channels{{ratio={ratio}}}")
        seconds = time.perf_counter() - started
        artifact.save(after_path, force=True)
        restored_before, restored_after = sqc.load(before_path), sqc.load(after_path)
        x = torch.randn(shape)
        with torch.no_grad():  # the restored model is the model
            assert torch.allclose(restored_before(x), model(x), rtol=0, atol=1e-4)
        timing = latency(
            {"eager": model, "restored": restored_before, "restored_channels": restored_after},
            x,
            runs,
            warmup=5,
        )
        before, after = totals(before_path), totals(after_path)
        row = {
            "model": name,
            "pipeline": artifact.pipeline,
            "pass_seconds": round(seconds, 2),
            "before": before,
            "after": after,
            "params_ratio": round(after["params"] / before["params"], 4),
            "macs_ratio": round(after["macs"] / before["macs"], 4),
            "latency": timing,
            "speedup": round(timing["restored"]["median_us"] / timing["restored_channels"]["median_us"], 2),
            "pass_stats": artifact.report[0].stats,
        }
        rows.append(row)
        print(
            f"  params {before['params']:,} -> {after['params']:,}, MACs {before['macs']:,} -> "
            f"{after['macs']:,}, latency {timing['restored']['median_us'] / 1000:.2f} -> "
            f"{timing['restored_channels']['median_us'] / 1000:.2f} ms ({row['speedup']}x)",
            flush=True,
        )
    return rows


def mnist_part(ratio: float, epochs: int, runs: int, tmp: Path, quick: bool) -> dict[str, Any]:
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    if quick:
        x_train, y_train = x_train[:5000], y_train[:5000]
    data = Dataset(x_test, y_test, x_train, y_train)
    base = LeNet5()
    base.load_state_dict(torch.load(REPO / "examples" / "lenet5.pt", weights_only=True))
    base.eval()
    tail = f"finetune{{epochs={epochs} lr=0.01}},share{{bits=5}},finetune{{epochs=1 lr=0.001}},huffman"
    variants = {
        "channels": f"prune-channels{{ratio={ratio}}},{tail}",
        "unstructured": f"prune{{per_layer={DC_DENSITIES}}},{tail}",
        "both": f"prune-channels{{ratio={ratio}}},prune{{per_layer={BOTH_DENSITIES}}},{tail}",
    }
    base_info = describe_ir(trace(base), "lenet5")["totals"]
    results: dict[str, Any] = {
        "fp32": {
            "error_pct": round(error_pct(base, x_test, y_test), 2),
            "params": base_info["params"],
            "macs": base_info["macs"],
            "bytes": 4 * base_info["params"],
        },
        "variants": {},
    }
    restored: dict[str, torch.nn.Module] = {"fp32": base}
    for name, text in variants.items():
        print(f"lenet5 {name}: {text}", flush=True)
        torch.manual_seed(0)
        started = time.perf_counter()
        artifact = sqc.compress(copy.deepcopy(base), [(1, 1, 28, 28)], text, data=data)
        seconds = time.perf_counter() - started
        path = tmp / f"lenet5_{name}.sqc"
        artifact.save(path, force=True)
        module = sqc.load(path)
        restored[name] = module
        info = totals(path)
        results["variants"][name] = {
            "pipeline": artifact.pipeline,
            "seconds": round(seconds, 1),
            "error_pct": round(error_pct(module, x_test, y_test), 2),
            **info,
            "ratio_vs_fp32": round(4 * base_info["params"] / info["file_bytes"], 1),
        }
        print(f"  {results['variants'][name]}", flush=True)
    timing = latency(restored, torch.rand(1, 1, 28, 28), runs, warmup=50)
    for name, row in timing.items():
        (results["fp32"] if name == "fp32" else results["variants"][name])["latency"] = row
        print(f"  latency {name}: {row['median_us']} us (p10 {row['p10_us']}, p90 {row['p90_us']})")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=float, default=0.5, help="channels removed from ResNet-18/SqueezeNet")
    parser.add_argument("--lenet-ratio", type=float, default=0.7, help="channels removed from LeNet-5")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after pruning")
    parser.add_argument("--runs", type=int, default=0, help="latency runs per variant (default 60 / 400)")
    parser.add_argument("--quick", action="store_true", help="5,000 training images, few runs: a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS / "channels.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        imagenet = imagenet_part(args.ratio, args.runs or (5 if args.quick else 60), Path(tmp))
        mnist = mnist_part(
            args.lenet_ratio, args.epochs, args.runs or (50 if args.quick else 400), Path(tmp), args.quick
        )
    doc = {
        "benchmark": "bench_channels",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "threads": 1,
        "load_average": list(os.getloadavg()),
        "git": git_state(),
        "seconds": round(time.perf_counter() - started, 1),
        "imagenet": imagenet,
        "mnist_lenet5": mnist,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {doc['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
