"""The ONNX target on the trained LeNets: file sizes (.sqc, .onnx with integer weights, .onnx with the
decoded weights in fp32, the uncompressed model as fp32 ONNX) and agreement with ``sqc.load``.

Pipelines, without retraining: Deep Compression's per-layer densities with k-means sharing and Huffman
coding (as ``bench_c_target.py``), 90 % global pruning with 8-bit and 4-bit fixed point and rANS, and
8-bit fixed point alone. ONNX Runtime runs the 1,000 images of ``examples/mnist_test_1k.npz`` twice: with
its default session options, which may fuse a ``DequantizeLinear -> MatMul`` into ``MatMulNBits`` at
int8 activation accuracy, and with ``session.qdq_matmulnbits_accuracy_level=1`` (fp32 arithmetic); both
are compared with the module ``sqc.load`` rebuilds (max abs difference of the logits, top-1 agreement).

    python benchmarks/bench_onnx.py [--out benchmarks/results/onnx.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sqc  # noqa: E402
from examples.lenet import LeNet5, LeNet300  # noqa: E402
from sqc.frontend.trace import trace  # noqa: E402
from sqc.targets.onnx import to_onnx, write_onnx  # noqa: E402

DATA = ROOT / "examples" / "mnist_test_1k.npz"
CASES = {
    "lenet300": (
        LeNet300,
        {
            "dc_share_huffman": "prune{per_layer=fc1:0.92;fc2:0.91;fc3:0.74},share{bits=6},huffman",
            "p90_q8_rans": "prune{sparsity=0.9},quant{bits=8},rans",
            "p90_q4_rans": "prune{sparsity=0.9},quant{bits=4 granularity=channel},rans",
            "q8_huffman": "quant{bits=8},huffman",
        },
    ),
    "lenet5": (
        LeNet5,
        {
            "dc_share_huffman": "prune{per_layer=conv1:0.34;conv2:0.88;fc1:0.92;fc2:0.81},"
            "share{bits=5 per_layer=conv1:8;conv2:8},huffman",
            "p90_q8_rans": "prune{sparsity=0.9},quant{bits=8},rans",
            "p90_q4_rans": "prune{sparsity=0.9},quant{bits=4 granularity=channel},rans",
            "q8_huffman": "quant{bits=8},huffman",
        },
    ),
}


def run(path: Path, x: np.ndarray, exact: bool) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if exact:
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "onnx.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with np.load(DATA) as data:
        x, labels = data["x_val"], data["y_val"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for net, (factory, pipelines) in CASES.items():
            model = factory()
            model.load_state_dict(torch.load(ROOT / "examples" / f"{net}.pt", weights_only=True))
            model.eval()
            dense = to_onnx(trace(model, [(1, 1, 28, 28)]), net, "float").SerializeToString()
            for name, pipeline in pipelines.items():
                source = work / f"{net}_{name}.sqc"
                sqc.compress(model, [(1, 1, 28, 28)], pipeline).save(source)
                started = time.perf_counter()
                report = write_onnx(source, work / "int.onnx", force=True)
                seconds = time.perf_counter() - started
                floats = write_onnx(source, work / "float.onnx", force=True, weights="float")
                with torch.no_grad():
                    want = sqc.load(source)(torch.from_numpy(x)).numpy()
                row = {
                    "network": net,
                    "pipeline_name": name,
                    "pipeline": pipeline,
                    "sqc_bytes": report["sqc_bytes"],
                    "onnx_int_bytes": report["bytes"],
                    "onnx_float_bytes": floats["bytes"],
                    "onnx_dense_fp32_bytes": len(dense),
                    "lower_seconds": round(seconds, 3),
                    "top1_sqc_load": float((want.argmax(1) == labels).mean()),
                }
                for label, exact in (("fp32_session", True), ("default_session", False)):
                    got = run(work / "int.onnx", x, exact)
                    row[f"max_abs_diff_{label}"] = float(np.abs(got - want).max())
                    row[f"top1_agreement_{label}"] = float((got.argmax(1) == want.argmax(1)).mean())
                rows.append(row)
                exact = f"{row['max_abs_diff_fp32_session']:.2g} / {row['max_abs_diff_default_session']:.2g}"
                agree = (
                    f"{row['top1_agreement_fp32_session']:.1%} / {row['top1_agreement_default_session']:.1%}"
                )
                print(
                    f"{net:9} {name:17} sqc {row['sqc_bytes']:>9,}  onnx int {row['onnx_int_bytes']:>9,}  "
                    f"onnx fp32 {row['onnx_float_bytes']:>9,}  dense fp32 onnx {len(dense):>9,}  "
                    f"diff {exact}  agree {agree}",
                    flush=True,
                )
    import onnx
    import onnxruntime
    from provenance import git_state

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "command": "python benchmarks/bench_onnx.py",
        "git": git_state(),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 1),
        "images": int(x.shape[0]),
        "rows": rows,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
