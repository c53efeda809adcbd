"""sqc's HLS target vs hls4ml (the peer) on LeNet-300-100 and LeNet-5 trained on MNIST.

For each network, side by side, in the same run on the same machine:

* **hls4ml**: the float model through hls4ml's PyTorch front end (Vitis backend, ``io_parallel``, default
  precision ``ap_fixed<16,6>``, reuse 1), ``compile()`` (its C simulation, built with g++), ``predict()``;
* **sqc**: the same float model compressed with the repository's Deep Compression recipe
  (``benchmarks/recipes/<net>.toml``: pruning with retraining, 5-bit k-means, trained quantization,
  entropy coding; cached across runs), lowered with ``--target hls`` (calibrated on 1,000 *training*
  images), its ``tb.cpp`` + ``model.cpp`` compiled with g++ against the same ``ap_types`` headers, run on
  the test set, and checked bit for bit against the PyTorch integer simulator.

Reported for both: on-chip weight storage (bits of the weight arrays / ROMs; biases and epilogue
constants separately), csim top-1 on the 10,000 MNIST test images, csim throughput (images/s; hls4ml
through ``predict``, sqc in the testbench, both one image at a time), g++ compile time.

    python benchmarks/bench_hls.py [--samples 10000] [--reuse 16] [--out benchmarks/results/hls.json]

hls4ml is needed (``pip install hls4ml``; it brings no torch of its own). Its default
``ChannelsLastConversion="full"`` expects channels-last inputs; what it gives with channels-first
MNIST tensors is recorded, and the comparison uses ``channels_last_conversion="internal"``, as a user
would after reading hls4ml's documentation.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sqc  # noqa: E402
from benchmarks.mnist import load_mnist  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402
from examples.lenet import LeNet5, LeNet300  # noqa: E402
from sqc.compiler.pipeline import Pipeline, recipe_settings  # noqa: E402
from sqc.runtime.data import Dataset  # noqa: E402
from sqc.targets.hls import HlsOptions, find_ap_types, write_project  # noqa: E402
from sqc.targets.legalize import LowerOptions, legalize  # noqa: E402
from sqc.targets.simulate import quantize_input, simulate  # noqa: E402

NETWORKS = {"lenet300": LeNet300, "lenet5": LeNet5}
CACHE = Path(tempfile.gettempdir()) / "sqc_bench_hls"


def float_model(name: str) -> torch.nn.Module:
    model = NETWORKS[name]()
    model.load_state_dict(torch.load(ROOT / "examples" / f"{name}.pt", weights_only=True))
    return model.eval()


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.reshape(labels.shape[0], -1).argmax(1) == labels).mean())


# ------------------------------------------------------------------------------------------ hls4ml


def hls4ml_run(name: str, x: np.ndarray, y: np.ndarray, conversion: str, work: Path) -> dict[str, Any]:
    import hls4ml

    model = float_model(name)
    out: dict[str, Any] = {"hls4ml": hls4ml.__version__, "channels_last_conversion": conversion}
    try:
        config = hls4ml.utils.config_from_pytorch_model(
            model, (1, 28, 28), granularity="model", backend="Vitis", channels_last_conversion=conversion
        )
        out["precision"] = config["Model"]["Precision"]["default"]
        out["reuse"] = config["Model"]["ReuseFactor"]
        hm = hls4ml.converters.convert_from_pytorch_model(
            model, hls_config=config, output_dir=str(work / f"{name}_{conversion}"), backend="Vitis",
            io_type="io_parallel",
        )  # fmt: skip
        start = time.perf_counter()
        hm.compile()
        out["compile_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        pred = hm.predict(np.ascontiguousarray(x))
        seconds = time.perf_counter() - start
    except Exception as exc:  # record the exact error, as a user would report it
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback_tail"] = traceback.format_exc().strip().splitlines()[-4:]
        return out
    out["samples"] = int(x.shape[0])
    out["top1"] = top1(np.asarray(pred), y)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out["agreement_with_float"] = float(
        (np.asarray(pred).reshape(x.shape[0], -1).argmax(1) == ref.argmax(1)).mean()
    )
    out["images_per_s"] = round(x.shape[0] / seconds, 1)
    weights = biases = 0
    for layer in hm.get_layers():
        for var in layer.get_weights():
            bits = int(np.asarray(var.data).size) * int(var.type.precision.width)
            if var.name.startswith("b"):
                biases += bits
            else:
                weights += bits
    out["weight_bits"] = weights
    out["bias_bits"] = biases
    return out


# --------------------------------------------------------------------------------------------- sqc


def compressed(name: str, data: Dataset) -> Path:
    """The recipe's .sqc, cached (fine-tuning takes minutes on two cores)."""
    recipe = ROOT / "benchmarks" / "recipes" / f"{name}.toml"
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}-{zlib.crc32(recipe.read_bytes()):08x}.sqc"
    if path.exists():
        return path
    print(f"  compressing {name} with {recipe.relative_to(ROOT)} (cached in {CACHE}) ...", flush=True)
    torch.manual_seed(0)
    artifact = sqc.compress(
        float_model(name),
        [(1, 1, 28, 28)],
        Pipeline.from_recipe(recipe),
        data=data,
        **recipe_settings(recipe),
    )
    artifact.save(path, force=True)
    return path


def sqc_run(
    name: str, source: Path, calib: Path, x: np.ndarray, y: np.ndarray, reuse: str, work: Path
) -> dict[str, Any]:
    gxx, ap = shutil.which("g++"), find_ap_types()
    assert gxx and ap, "g++ and the ap_types headers (pip install hls4ml) are needed"
    program = legalize(source, calib, LowerOptions())
    xt = torch.from_numpy(x)
    codes = quantize_input(program, xt).reshape(x.shape[0], -1).numpy()
    golden = simulate(program, xt).reshape(x.shape[0], -1).numpy()
    project = work / f"{name}_sqc"
    report = write_project(
        program, project, options=HlsOptions.parse({"reuse": reuse}), golden=(codes, golden), force=True
    )
    out: dict[str, Any] = {"sqc_file": str(source), "sqc_bytes": source.stat().st_size, "reuse": reuse}
    for level in ("-O1", "-O3"):
        cmd = [gxx, "-std=c++14", level, f"-I{ap}", "-I.", "-o", f"csim{level}", "tb.cpp", "model.cpp"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=project, check=True, capture_output=True)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        ran = subprocess.run(
            [f"./csim{level}", "tb_input.bin", "tb_output.bin", "got.bin"], cwd=project, capture_output=True,
            text=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
        assert ran.returncode == 0, ran.stdout + ran.stderr
        top_s = float(ran.stdout.split(" s in the top function")[0].rsplit(", ", 1)[1])
        out[level] = {
            "compile_s": round(compile_s, 2),
            "images_per_s": round(x.shape[0] / top_s, 1),
            "images_per_s_testbench_wall": round(x.shape[0] / wall, 1),
            "testbench": ran.stdout.strip(),
        }
    got = np.fromfile(project / "got.bin", dtype=np.int8).reshape(x.shape[0], -1)
    out["bit_exact_with_simulator"] = bool(np.array_equal(got, golden))
    out["samples"] = int(x.shape[0])
    out["top1"] = top1(got.astype(np.int64), y)
    with torch.no_grad():
        out["compressed_float_top1"] = top1(sqc.load(source)(xt).numpy(), y)
    out["weight_bits"] = report["total"]["rom_bits"]
    out["epilogue_bits"] = report["total"]["epilogue_bits"]
    out["multipliers"] = report["total"]["multipliers"]
    out["dense_multipliers_same_reuse"] = report["dense_ap_fixed_16_6"]["multipliers"]
    out["bram18"] = report["total"]["bram18"]
    out["layers"] = [
        {
            k: layer[k]
            for k in ("layer", "weights", "kept", "multipliers", "cycles_per_lane", "rom_bits", "rom")
        }
        | {"storage": layer["storage"]}
        for layer in report["layers"]
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=10_000, help="MNIST test images for accuracy/throughput"
    )
    parser.add_argument("--reuse", default="16", help="sqc's --option reuse")
    parser.add_argument("--networks", default="lenet300,lenet5")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hls.json")
    args = parser.parse_args(argv)

    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    data = Dataset(x_test, y_test, x_train, y_train)
    x = x_test[: args.samples].numpy().astype(np.float32).reshape(-1, 1, 28, 28)
    y = y_test[: args.samples].numpy()
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "git": git_state(),
        "gxx": subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "data": f"MNIST test set, first {x.shape[0]} images; sqc calibrated on 1,000 training images",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calib = work / "calib.npz"
        np.savez(calib, x_val=x_train[:1000].numpy().reshape(-1, 1, 28, 28), y_val=y_train[:1000].numpy())
        for name in args.networks.split(","):
            print(f"{name}:", flush=True)
            entry: dict[str, Any] = {}
            with torch.no_grad():
                entry["float_top1"] = top1(float_model(name)(torch.from_numpy(x)).numpy(), y)
            if name == "lenet300":  # hls4ml's default conversion, on a few images (it is cheap here)
                entry["hls4ml_default_config"] = hls4ml_run(name, x[:1000], y[:1000], "full", work)
            print("  hls4ml ...", flush=True)
            entry["hls4ml"] = hls4ml_run(name, x, y, "internal", work)
            print("  sqc ...", flush=True)
            entry["sqc"] = sqc_run(name, compressed(name, data), calib, x, y, args.reuse, work)
            h, s = entry["hls4ml"], entry["sqc"]
            if "weight_bits" in h:
                entry["weight_storage_ratio"] = round(h["weight_bits"] / s["weight_bits"], 2)
                entry["goal_met"] = bool(s["weight_bits"] * 4 <= h["weight_bits"] and s["top1"] >= h["top1"])
            print(json.dumps({k: v for k, v in entry.items() if k != "sqc"}, indent=1), flush=True)
            results[name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
