"""Coding efficiency and coder throughput: sqc's Huffman and rANS against entropy, xz and zstd.

For each weight tensor of the reference models (LeNet-300-100 and LeNet-5 from ``examples/``, Deep
Compression's densities and widths, no retraining) after ``prune`` + ``share``:

* coded bytes of the weight + index streams with ``huffman`` and with ``rans`` (the tensor section minus
  its header and codebook), the zero-order empirical entropy of the same symbols (H0 of the relative
  index gaps + H0 of the kept codes), and ``xz -9e`` / ``zstd -19`` of the same codes as a dense byte
  map (0 = pruned, k + 1 = centroid k; two bytes per weight above 255 centroids); bits per weight and
  the gap to H0;
* whole files: ``.sqc`` with each coder against the byte map of all kernels through xz / zstd, plus the
  fp32 codebooks and biases (what ``bench_lenet.py`` compares);
* throughput: encode and decode of each coder in weights/s (median of ``--runs``), the whole pipeline
  (compress + serialise, read back), and ``zstd -d`` of the raw fp32 state_dict bytes, same run.

Run: ``python benchmarks/bench_coding.py [--runs 3]``; writes ``benchmarks/results/coding.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sqc
from sqc.formats import container
from sqc.formats.tensor_codec import decode_tensor, encode_tensor

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.append(str(REPO))
from provenance import git_state  # noqa: E402

from examples.lenet import LeNet5, LeNet300  # noqa: E402

MODELS = {
    "LeNet-300-100": (
        LeNet300,
        "lenet300.pt",
        "prune{per_layer=fc1:0.92;fc2:0.91;fc3:0.74},share{bits=6}",
    ),
    "LeNet-5": (
        LeNet5,
        "lenet5.pt",
        "prune{per_layer=conv1:0.34;conv2:0.88;fc1:0.92;fc2:0.81},share{bits=5 per_layer=conv1:8;conv2:8}",
    ),
}
TOOLS = {"xz -9e": ["xz", "-9e", "-T1", "-c"], "zstd -19": ["zstd", "-19", "-q", "-c"]}


def squeeze(argv: list[str], data: bytes) -> int | None:
    if shutil.which(argv[0]) is None:
        return None
    return len(subprocess.run(argv, input=data, capture_output=True, check=True).stdout)


def h0_bits(symbols: np.ndarray) -> float:
    if symbols.size == 0:
        return 0.0
    counts = np.unique(symbols, return_counts=True)[1].astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def byte_map(codes: np.ndarray, mask: np.ndarray, k: int) -> bytes:
    full = np.where(mask, codes.astype(np.int64) + 1, 0)
    return full.astype("<u2" if k >= 256 else "u1").tobytes()


def median(fn: Any, runs: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(runs):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def stream_bytes(state: Any) -> tuple[int, dict[str, str]]:
    _, _, info = encode_tensor(state)
    return info.index + info.values, info.streams


def bench_model(name: str, runs: int) -> dict[str, Any]:
    factory, checkpoint, pipeline = MODELS[name]
    model = factory()
    model.load_state_dict(torch.load(REPO / "examples" / checkpoint, weights_only=True))
    model.eval()
    artifacts = {c: sqc.compress(model, [(1, 1, 28, 28)], f"{pipeline},{c}") for c in ("huffman", "rans")}
    base = sqc.compress(model, [(1, 1, 28, 28)], pipeline).model
    rows, maps, side = [], [], 0
    for state in base.weights():
        codes = state.codes.flatten().numpy()
        mask = state.mask.flatten().numpy()
        positions = np.flatnonzero(mask)
        gaps = np.diff(positions, prepend=-1) - 1
        h0 = (h0_bits(gaps) + h0_bits(codes[positions])) / 8
        k = state.codebook.numel()
        bmap = byte_map(codes, mask, k)
        maps.append(bmap)
        row: dict[str, Any] = {
            "tensor": f"{name} {state.layer}",
            "numel": state.numel,
            "kept": int(positions.size),
            "centroids": k,
            "h0_bytes": round(h0, 1),
        }
        for coder, artifact in artifacts.items():
            size, streams = stream_bytes(artifact.model.tensors[state.name])
            row[f"{coder}_bytes"] = size
            row[f"{coder}_streams"] = streams
            row[f"{coder}_vs_h0"] = round(size / h0, 4) if h0 else None
            row[f"{coder}_bits_per_weight"] = round(8 * size / state.numel, 4)
        for tool, argv in TOOLS.items():
            row[f"{tool}_bytes"] = squeeze(argv, bmap)
        rows.append(row)
    for state in base.tensors.values():
        side += 4 * (state.codebook.numel() if state.codebook is not None else state.numel)
    files = {c: len(a.to_bytes()) for c, a in artifacts.items()}
    whole = {f"sqc {c}": n for c, n in files.items()}
    for tool, argv in TOOLS.items():
        size = squeeze(argv, b"".join(maps))
        whole[f"byte map {tool} + fp32 codebooks and biases"] = None if size is None else size + side
    # throughput
    weights = sum(s.numel for s in base.weights())
    speed: dict[str, Any] = {"weights": weights}
    for coder, artifact in artifacts.items():
        states = [artifact.model.tensors[s.name] for s in base.weights()]
        enc_t, encoded = median(lambda st=states: [encode_tensor(s) for s in st], runs)
        dec_t, _ = median(
            lambda st=states, en=encoded: [
                decode_tensor(c, p, s.name, s.shape, s.role) for s, (c, p, _) in zip(st, en, strict=True)
            ],
            runs,
        )
        data = artifact.to_bytes()
        pipe_t, _ = median(
            lambda c=coder: sqc.compress(model, [(1, 1, 28, 28)], f"{pipeline},{c}").to_bytes(), runs
        )
        read_t, _ = median(
            lambda d=data: container.model_from_layout(container.read_layout(d), "bench"), runs
        )
        speed[coder] = {
            "encode_weights_per_s": weights / enc_t,
            "decode_weights_per_s": weights / dec_t,
            "pipeline_compress_and_serialise_s": pipe_t,
            "pipeline_read_s": read_t,
        }
    raw = b"".join(t.detach().numpy().astype("<f4").tobytes() for t in model.state_dict().values())
    if shutil.which("zstd"):
        packed = subprocess.run(
            ["zstd", "-19", "-q", "-c"], input=raw, capture_output=True, check=True
        ).stdout
        zt, _ = median(
            lambda: subprocess.run(["zstd", "-d", "-q", "-c"], input=packed, capture_output=True, check=True),
            runs,
        )
        speed["zstd -d raw fp32 state_dict"] = {"decode_weights_per_s": (len(raw) // 4) / zt, "seconds": zt}
    return {"tensors": rows, "whole_file_bytes": whole, "throughput": speed}


def synthetic(rows: int, cols: int, density: float, k: int, seed: int = 0) -> tuple[Any, Any]:
    """A pruned, shared matrix with the structure of a real layer: 30 % dead input columns, magnitude
    pruning of the rest to ``density``, codes of ``k`` centroids by value."""
    g = np.random.default_rng(seed)
    w = g.normal(size=(rows, cols)).astype(np.float32)
    alive = g.random(cols) < 0.7
    threshold = np.quantile(np.abs(w[:, alive]), 1 - density / 0.7)
    mask = (np.abs(w) >= threshold) & alive[None, :]
    symbols = np.clip(((w + 3) / 6 * k).astype(np.int64), 0, k - 1)
    return mask, symbols[mask]


def rans_at_scale(runs: int, big: bool) -> list[dict[str, Any]]:
    """Encode/decode weights/s of the rANS coder alone on layer-shaped tensors: LeNet-5 fc1's shape
    (500x800, 8 %, 5 bits; 25 lanes), a 10M-weight pruned/shared tensor (611 lanes) and, with
    ``big``, VGG-16 fc6 (4096x25088, 4 %; 4096 lanes)."""
    from sqc.formats import rans

    cases = [("LeNet-5 fc1 shape", 500, 800, 0.08, runs), ("10M weights", 2500, 4000, 0.10, runs)]
    if big:
        cases.append(("VGG-16 fc6 shape", 4096, 25088, 0.04, 1))
    rows = []
    for name, r, c, density, n in cases:
        mask, kept = synthetic(r, c, density, 32)
        enc_t, coded = median(lambda m=mask, k=kept, s=(r, c): rans.encode(m, k, s, 5), n)
        dec_t, got = median(lambda d=coded.data, s=(r, c), v=coded.mode: rans.decode(d, s, True, 5, 32, v), n)
        assert np.array_equal(got[1], kept)
        rows.append(
            {
                "tensor": name,
                "numel": r * c,
                "kept": int(kept.size),
                "lanes": rans.lane_count(r * c),
                "bytes": len(coded.data),
                "encode_s": round(enc_t, 3),
                "decode_s": round(dec_t, 3),
                "encode_weights_per_s": round(r * c / enc_t),
                "decode_weights_per_s": round(r * c / dec_t),
            }
        )
        print(
            f"{name}: {r * c:,} weights, {rows[-1]['lanes']} lanes: encode {enc_t:.2f} s "
            f"({r * c / enc_t / 1e6:.2f} Mw/s), decode {dec_t:.2f} s ({r * c / dec_t / 1e6:.2f} Mw/s)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "coding.json")
    parser.add_argument(
        "--rans-scale",
        action="store_true",
        help="only the rANS coder's speed on layer-shaped tensors up to VGG-16 fc6 (results/rans_scale.json)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.rans_scale:
        rows = rans_at_scale(args.runs, big=True)
        out = HERE / "results" / "rans_scale.json"
        out.write_text(
            json.dumps(
                {
                    "benchmark": "bench_coding --rans-scale",
                    "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                    "git": git_state(),
                    "loadavg_1min_at_end": os.getloadavg()[0],
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {out}")
        return
    models = {name: bench_model(name, args.runs) for name in MODELS}
    totals = {
        key: sum(m["whole_file_bytes"][key] or 0 for m in models.values())
        for key in next(iter(models.values()))["whole_file_bytes"]
    }
    sum_streams = {
        c: sum(r[f"{c}_bytes"] for m in models.values() for r in m["tensors"]) for c in ("huffman", "rans")
    }
    sum_h0 = sum(r["h0_bytes"] for m in models.values() for r in m["tensors"])
    result = {
        "benchmark": "bench_coding",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": " ".join(["python", "benchmarks/bench_coding.py", *sys.argv[1:]]),
        "git": git_state(),
        "loadavg_1min_at_end": os.getloadavg()[0],
        "models": models,
        "totals_whole_file_bytes": totals,
        "totals_streams": {**sum_streams, "h0": round(sum_h0, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(
        f"{'tensor':<22}{'kept':>7}{'H0':>9}{'huffman':>9}{'/H0':>7}{'rans':>8}{'/H0':>7}{'xz':>8}{'zstd':>8}"
        f"{'bpw h':>7}{'bpw r':>7}"
    )
    for m in models.values():
        for r in m["tensors"]:
            print(
                f"{r['tensor']:<22}{r['kept']:>7,}{r['h0_bytes']:>9,.0f}{r['huffman_bytes']:>9,}"
                f"{r['huffman_vs_h0']:>7.3f}{r['rans_bytes']:>8,}{r['rans_vs_h0']:>7.3f}"
                f"{r['xz -9e_bytes'] or 0:>8,}{r['zstd -19_bytes'] or 0:>8,}"
                f"{r['huffman_bits_per_weight']:>7.3f}{r['rans_bits_per_weight']:>7.3f}"
            )
    print("streams total:", result["totals_streams"])
    for name, m in models.items():
        print(name, m["whole_file_bytes"])
        for coder in ("huffman", "rans"):
            t = m["throughput"][coder]
            print(
                f"  {coder}: encode {t['encode_weights_per_s'] / 1e6:.2f} Mw/s, decode "
                f"{t['decode_weights_per_s'] / 1e6:.2f} Mw/s, pipeline "
                f"{t['pipeline_compress_and_serialise_s']:.2f} s, read {t['pipeline_read_s']:.3f} s"
            )
        z = m["throughput"].get("zstd -d raw fp32 state_dict")
        if z:
            print(f"  zstd -d raw fp32: {z['decode_weights_per_s'] / 1e6:.1f} Mw/s")
    print("totals:", totals)
    xz = totals.get("byte map xz -9e + fp32 codebooks and biases") or 0
    if xz:
        print(f"sqc rans vs xz summed: {totals['sqc rans'] / xz - 1:+.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
