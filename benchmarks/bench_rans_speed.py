"""rANS coder speed, native C core against the numpy/Python paths, and the worst crafted input under the
decision cap.

* Speed: encode (mode choice included) and decode of the rANS coder alone, in ns per binary decision,
  Mweights/s and stream MB/s, medians of ``--runs`` (process CPU time): every weight tensor of
  LeNet-300-100 and LeNet-5 (``examples/``) after ``quant{bits=6}`` (dense) and
  ``prune{sparsity=0.9},quant{bits=6}``, and one synthetic 10M-weight layer (pruned to 10 %, 5-bit
  codes). The Python paths run with ``rans._native`` set to None (what ``SQC_RANS=python`` gives).
* Worst case: ``.sqc`` files of about 1 MB built to maximise the reader's decisions under the cap
  (FORMAT.md, "Context-coded layout"): one dense 16-bit tensor whose stream sits at the cap, and many
  small tensors each at the cap (the per-stream base times the tensor count). Each is read by
  ``sqc inspect`` and by ``sqc.load`` in a fresh process under ``/usr/bin/time -v``: wall time, CPU
  time (user + system: the figure to trust on a shared machine) and peak RSS.

Run: ``python benchmarks/bench_rans_speed.py [--runs 5]``; writes ``benchmarks/results/rans_speed.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sqc
from sqc.formats import rans
from sqc.formats.binio import varint
from sqc.formats.tensor_codec import CONTEXT_CODED, FIXED, WANTS_RANS, _symbols

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.append(str(REPO))
sys.path.append(str(REPO / "tests" / "fuzz"))
from crafted import craft  # noqa: E402
from provenance import git_state  # noqa: E402

from examples.lenet import LeNet5, LeNet300  # noqa: E402

MODELS = {
    "LeNet-300-100": (LeNet300, "lenet300.pt", (1, 784)),
    "LeNet-5": (LeNet5, "lenet5.pt", (1, 1, 28, 28)),
}
PIPELINES = {"quant6 dense": "quant{bits=6}", "prune 90 % + quant6": "prune{sparsity=0.9},quant{bits=6}"}
NATIVE = rans._native


def median(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median CPU time of the process (the coder is single-threaded): on a shared machine wall time
    measures the other tenants as much as the coder."""
    times, out = [], None
    for _ in range(runs):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), out


def layers() -> list[tuple[str, np.ndarray | None, np.ndarray, tuple[int, ...], int]]:
    """``(name, mask, kept symbols, shape, width)`` of every weight tensor of both LeNets, both pipelines."""
    out = []
    for model_name, (cls, file, shape) in MODELS.items():
        for label, text in PIPELINES.items():
            model = cls()
            model.load_state_dict(torch.load(REPO / "examples" / file, weights_only=True))
            artifact = sqc.compress(model.eval(), [shape], text)
            for name, state in artifact.model.tensors.items():
                if state.codes is None or state.role != "weight":
                    continue
                symbols, _, width = _symbols(state)
                mask = None if state.mask is None else state.mask.flatten().numpy()
                kept = symbols if mask is None else symbols[mask]
                out.append((f"{model_name} {name} ({label})", mask, kept, tuple(state.shape), int(width)))
    return out


def synthetic(rows: int, cols: int, density: float, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A pruned layer with dead input columns and magnitude pruning (as ``bench_coding.synthetic``)."""
    g = np.random.default_rng(seed)
    w = g.normal(size=(rows, cols)).astype(np.float32)
    alive = g.random(cols) < 0.7
    threshold = np.quantile(np.abs(w[:, alive]), 1 - density / 0.7)
    mask = (np.abs(w) >= threshold) & alive[None, :]
    symbols = np.clip(((w + 3) / 6 * k).astype(np.int64), 0, k - 1)
    return mask.ravel(), symbols[mask]


def speed_row(
    name: str,
    mask: np.ndarray | None,
    kept: np.ndarray,
    shape: tuple[int, ...],
    width: int,
    runs: int,
    py_runs: int,
) -> dict[str, Any]:
    numel = math.prod(shape)
    decisions = rans.decisions(numel, kept.size, width, mask is not None)
    row: dict[str, Any] = {"tensor": name, "numel": numel, "kept": int(kept.size), "width": width}
    row["decisions"] = decisions
    for impl, n in (("native", runs), ("python", py_runs)):
        rans._native = NATIVE if impl == "native" else None
        try:
            enc_t, coded = median(lambda: rans.encode(mask, kept, shape, width), n)
            dec_t, got = median(
                lambda c=coded: rans.decode(c.data, shape, mask is not None, width, 1 << width, c.mode),
                n,
            )
        finally:
            rans._native = NATIVE
        assert np.array_equal(got[1], kept)
        row["bytes"] = len(coded.data)
        row[impl] = {
            "encode_s": enc_t,
            "decode_s": dec_t,
            "encode_ns_per_decision": round(enc_t / decisions * 1e9, 2),
            "decode_ns_per_decision": round(dec_t / decisions * 1e9, 2),
            "encode_mweights_per_s": round(numel / enc_t / 1e6, 2),
            "decode_mweights_per_s": round(numel / dec_t / 1e6, 2),
            "encode_stream_mb_per_s": round(len(coded.data) / enc_t / 1e6, 3),
            "decode_stream_mb_per_s": round(len(coded.data) / dec_t / 1e6, 3),
        }
    row["speedup_encode"] = round(row["python"]["encode_s"] / row["native"]["encode_s"], 1)
    row["speedup_decode"] = round(row["python"]["decode_s"] / row["native"]["decode_s"], 1)
    nat, py = row["native"], row["python"]
    print(
        f"{name:52} {decisions:>11,} dec  native enc {nat['encode_ns_per_decision']:7.1f} dec "
        f"{nat['decode_ns_per_decision']:7.1f} ns/dec | python enc {py['encode_ns_per_decision']:7.1f} dec "
        f"{py['decode_ns_per_decision']:7.1f} ns/dec",
        flush=True,
    )
    return row


# ------------------------------------------------------------------------------ worst crafted input


def dense_stream(numel: int, rare: float, seed: int = 0) -> tuple[bytes, int]:
    """A dense 16-bit stream of ``numel`` codes, all 0 but a fraction ``rare`` of random ones (value
    mode 0): the rarer, the more decisions per byte."""
    g = np.random.default_rng(seed)
    symbols = np.where(g.random(numel) < rare, g.integers(0, 1 << 16, numel), 0)
    coded = rans.encode(None, symbols, (numel,), 16, 0)
    return coded.data, rans.decisions(numel, numel, 16, False)


def at_cap(numel: int) -> tuple[bytes, float]:
    """The stream of ``numel`` 16-bit codes closest to the cap from below (bisecting ``rare``)."""
    lo, hi = 1e-6, 0.05  # lo: far over the cap, hi: far within it
    best = None
    for _ in range(14):
        mid = math.sqrt(lo * hi)
        data, count = dense_stream(numel, mid)
        if count <= rans.decision_budget(len(data)):
            hi, best = mid, data
        else:
            lo = mid
    assert best is not None
    return best, hi


def wrap(streams: list[bytes], numel: int) -> bytes:
    """A valid file: one dense 16-bit fixed-point tensor per stream, every tensor used by the graph."""
    bodies = [bytes([16, 0, 0, CONTEXT_CODED | WANTS_RANS, 0]) + varint(len(s)) + s for s in streams]
    nodes: list[Any] = [["in", "x"]] + [["attr", f"t{i}", i] for i in range(len(streams))]
    for i in range(len(streams)):
        nodes.append(["call", f"add_{i}", "add", [{"%": len(nodes) - 1 if i else 0}, {"%": 1 + i}], {}, None])
    names = [[f"t{i}", [numel], "param"] for i in range(len(streams))]
    return craft(names, [(FIXED, b) for b in bodies], nodes=[*nodes, ["out", {"%": len(nodes) - 1}]])


def smallest_at_cap() -> tuple[bytes, int]:
    """The all-zero dense 16-bit tensor with the most decisions per file byte within the cap."""
    best: tuple[float, bytes, int] | None = None
    for numel in range(64, 4096, 8):
        data, count = dense_stream(numel, 0.0)
        if count <= rans.decision_budget(len(data)):
            ratio = count / (len(data) + 40)  # ~40 bytes of section entry, header and graph per tensor
            if best is None or ratio > best[0]:
                best = (ratio, data, numel)
    assert best is not None
    return best[1], best[2]


def timed(argv: list[str]) -> dict[str, Any]:
    """Wall time, peak RSS and the last line of output of a fresh process."""
    # run outside the repository: `python -c` puts the current directory first on sys.path, and the
    # source tree's formats/ has no compiled coder (the numpy fallback would be timed instead)
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *argv], capture_output=True, text=True, check=False, cwd=tempfile.gettempdir()
    )
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", proc.stderr)
    system = re.search(r"System time \(seconds\): ([\d.]+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    seconds = 0.0
    if wall:
        for part in wall.group(1).split(":"):
            seconds = seconds * 60 + float(part)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and not ln.startswith("\t")]
    return {
        "exit": proc.returncode,
        "wall_s": round(seconds, 2),
        "cpu_s": round(float(user.group(1)) + float(system.group(1)), 2) if user and system else None,
        "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
        "last_line": (lines[-1] if lines else "")[:160],
    }


def worst_case(target_bytes: int) -> list[dict[str, Any]]:
    rows = []
    bin_dir = Path(sys.executable).parent
    # one big stream: 16 decisions per code, as many codes as a ~1 MB stream may stand for at the cap
    numel = target_bytes * rans.MAX_DECISIONS_PER_BYTE // 16
    t0 = time.perf_counter()
    stream, rare = at_cap(numel // 8)  # bisect at 1/8 scale, then scale up and step back under the cap
    for _ in range(6):
        stream, count = dense_stream(numel, rare)
        if count <= rans.decision_budget(len(stream)):
            break
        rare *= 1.1
    big = wrap([stream], numel)
    build_big = time.perf_counter() - t0
    # many small streams at the cap: the per-stream base times the tensor count
    small, small_numel = smallest_at_cap()
    one = len(wrap([small, small], small_numel)) - len(wrap([small], small_numel))
    many = wrap([small] * ((target_bytes - 400) // one), small_numel)
    cases = [
        (
            f"one dense 16-bit tensor of {numel:,} codes, its stream at the cap",
            big,
            rans.decisions(numel, numel, 16, False),
            len(stream),
        ),
        (
            f"{(target_bytes - 400) // one:,} dense 16-bit tensors of {small_numel} zeros, each at the cap",
            many,
            rans.decisions(small_numel, small_numel, 16, False) * ((target_bytes - 400) // one),
            len(small),
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, data, count, stream_bytes in cases:
            path = Path(tmp) / "worst.sqc"
            path.write_bytes(data)
            row: dict[str, Any] = {
                "input": label,
                "file_bytes": len(data),
                "stream_bytes": stream_bytes,
                "decisions": count,
                "decisions_per_file_byte": round(count / len(data), 1),
            }
            row["sqc inspect"] = timed([str(bin_dir / "sqc"), "inspect", str(path)])
            row["sqc.load"] = timed(
                [sys.executable, "-c", f"import sqc; sqc.load({str(path)!r}); print('loaded')"]
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"(building the big stream took {build_big:.0f} s)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python-runs", type=int, default=3, help="runs of the (slow) Python paths")
    parser.add_argument("--worst-bytes", type=int, default=1 << 20, help="size of the crafted files")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "rans_speed.json")
    parser.add_argument(
        "--worst-only", action="store_true", help="only the crafted files (their rows of --out updated)"
    )
    parser.add_argument("--no-worst", action="store_true", help="keep the crafted files' rows of --out")
    args = parser.parse_args()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.worst_only:  # update the crafted files' rows of the results, keep the rest
        previous["worst_case"] = worst_case(args.worst_bytes)
        previous["cap"] = {"base": rans.MAX_DECISIONS_BASE, "per_byte": rans.MAX_DECISIONS_PER_BYTE}
        args.out.write_text(json.dumps(previous, indent=2) + "\n")
        return
    if NATIVE is None:
        sys.exit("the native rANS core is not built (pip install . compiles it; SQC_RANS must not be python)")
    torch.set_num_threads(1)
    rows = [speed_row(*case, args.runs, args.python_runs) for case in layers()]
    mask, kept = synthetic(2500, 4000, 0.10, 32)
    rows.append(speed_row("synthetic 2500x4000, 10 % kept, 5-bit", mask, kept, (2500, 4000), 5, args.runs, 1))
    worst = previous.get("worst_case", []) if args.no_worst else worst_case(args.worst_bytes)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "bench_rans_speed",
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                "git": git_state(),
                "cap": {"base": rans.MAX_DECISIONS_BASE, "per_byte": rans.MAX_DECISIONS_PER_BYTE},
                "loadavg_1min_at_end": os.getloadavg()[0],
                "speed": rows,
                "worst_case": worst,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
