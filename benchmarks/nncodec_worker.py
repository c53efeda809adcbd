"""NNCodec's side of ``bench_nncodec.py``: code weight tensors with NNCodec and decode them again.

Runs under NNCodec's own interpreter (``.venv-nncodec/bin/python``, set up by ``make bench``), never in
sqc's venv: NNCodec pins ``numpy<2`` and declares torchvision, OpenCV, pandas and scikit-learn, whose
registry wheels would replace sqc's CPU torch with a CUDA build. None of those is needed here. The
tensor API (``nnc.compress`` on a dict of float32 arrays, ``nnc.decompress`` on the bitstream) uses only
``nncodec.nnc_core`` and the deepCABAC extension; ``nncodec.nnc`` merely imports ``nncodec.framework``
(NNCodec's model-zoo and dataset glue, the only user of those packages) at module level. So this
worker puts an empty stand-in for ``nncodec.framework`` in ``sys.modules`` before the import, and then
calls NNCodec's public entry points exactly as a user would, with NNCodec's shipped defaults
(dependent quantization on, ``qp_density=2`` so the step is 2^(qp/4), parameter optimisation on).

Input: an ``.npz`` of float32 tensors (name -> array). NNCodec treats every tensor of two or more
dimensions as a weight (coded at ``qp``); the bench passes only those, so the byte count is the
weights' bitstream alone. Output: one JSON line per qp on stdout (bitstream bytes, median encode and
decode seconds, wall and CPU, over ``--runs``, whether every run produced the same bitstream) and the
decoded tensors as ``qp<qp>.npz`` in ``--out``.

Run: ``.venv-nncodec/bin/python benchmarks/nncodec_worker.py --weights W.npz --out DIR --qp -38 --qp -30``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np


def import_nnc() -> Any:
    """``nncodec.nnc`` without its model-zoo glue (see the module docstring for why)."""
    framework = types.ModuleType("nncodec.framework")
    for name in ("tensorflow_model", "pytorch_model", "use_case_init"):
        stub = types.ModuleType(f"nncodec.framework.{name}")
        setattr(framework, name, stub)
        sys.modules[stub.__name__] = stub
    sys.modules[framework.__name__] = framework
    from nncodec import nnc

    return nnc


def code(nnc: Any, weights: dict[str, np.ndarray], qp: int, runs: int) -> tuple[dict[str, Any], dict]:
    """Encode and decode ``weights`` at ``qp`` ``runs`` times; the figures and the decoded tensors."""
    encode_s, encode_cpu_s, decode_s, decode_cpu_s, streams = [], [], [], [], set()
    decoded: dict[str, np.ndarray] = {}
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        bitstream = nnc.compress(weights, bitstream_path=None, qp=qp, return_bitstream=True)
        encode_s.append(time.perf_counter() - started)
        encode_cpu_s.append(time.process_time() - cpu)
        streams.add(bytes(bitstream))
        started, cpu = time.perf_counter(), time.process_time()
        decoded = nnc.decompress(bytearray(bitstream))
        decode_s.append(time.perf_counter() - started)
        decode_cpu_s.append(time.process_time() - cpu)
    return {
        "qp": qp,
        "bytes": len(next(iter(streams))),
        "encode_s": statistics.median(encode_s),
        "encode_cpu_s": statistics.median(encode_cpu_s),
        "decode_s": statistics.median(decode_s),
        "decode_cpu_s": statistics.median(decode_cpu_s),
        "encode_runs_s": encode_s,
        "decode_runs_s": decode_s,
        "deterministic": len(streams) == 1,
    }, decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help=".npz of float32 weight tensors")
    parser.add_argument("--out", type=Path, required=True, help="directory for the decoded qp<qp>.npz")
    parser.add_argument("--qp", type=int, action="append", required=True, help="repeat for each qp")
    parser.add_argument("--runs", type=int, default=1, help="timing runs per qp (median reported)")
    args = parser.parse_args()
    nnc = import_nnc()
    with np.load(args.weights) as data:
        weights = {name: np.ascontiguousarray(data[name], dtype=np.float32) for name in data.files}
    print(json.dumps({"nncodec": version("nncodec"), "numpy": np.__version__}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for qp in args.qp:
        row, decoded = code(nnc, weights, qp, args.runs)
        missing = sorted(set(weights) - set(decoded))
        if missing:
            raise SystemExit(f"qp {qp}: NNCodec decoded no tensor for {', '.join(missing)}")
        np.savez(args.out / f"qp{qp}.npz", **{name: decoded[name] for name in weights})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
