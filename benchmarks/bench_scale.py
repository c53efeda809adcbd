"""sqc at VGG-16 scale: ``prune,share,huffman`` on 138,357,544 parameters, end to end.

The issue's targets on this 2-core machine: ``prune,share,huffman`` in <= 30 s wall with peak RSS
<= 2 GB, and decoded back (``sqc.load``) in <= 5 s. Each run measures the command a user types,
``sqc compress vgg16.pt --arch ...`` on a saved state_dict (wall time and that process's peak RSS,
interpreter and imports included), and the Python API on a model the caller holds.

The model has VGG-16's exact layer shapes (13 conv3x3,
three fully connected layers, 1000 classes) with seeded random weights; the weights' values do not
matter for time and memory, only the shapes do.

Every measurement runs in a fresh subprocess so that peak RSS (``ru_maxrss``) belongs to that one
measurement. The compress worker reports: model construction (not part of the target), trace + first
verification, each pass (``on_pass`` callback; includes the verification after the pass), ``save``
(serialise + atomic write), file size, the process peak RSS, and the peak RSS seen during each phase
(a 20 ms sampler of /proc/self/statm). The decompress worker reports ``sqc.load`` time and its own
peak RSS. ``--profile`` adds one cProfile'd compress run plus a "memory profile": the main thread's
Python stack every time the RSS reaches a new high, so the allocation that sets the peak is named.

Run: ``python benchmarks/bench_scale.py [--runs 3] [--profile]``  (about 3-4 minutes per run).
Writes ``benchmarks/results/scale.json`` (and ``scale_profile.txt`` with ``--profile``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from provenance import git_state  # benchmarks/provenance.py (this script's directory is on sys.path)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PIPELINE = "prune,share,huffman"
INPUT_SHAPE = (1, 3, 224, 224)
VGG16_PARAMS = 138_357_544
TARGET_SECONDS = 30.0
TARGET_BYTES = 2 * 10**9
TARGET_LOAD_SECONDS = 5.0
"""Issue 8's targets on this 2-core machine: ``prune,share,huffman`` in <= 30 s with peak RSS <= 2 GB,
and the file decoded back in <= 5 s."""
CFG: list[int | str] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
]


def build_vgg16(seed: int = 0, width: float = 1.0) -> Any:
    """A module with VGG-16's exact shapes and seeded random weights (PyTorch's default init); with
    ``width`` != 1 every channel count and hidden width is scaled (the growth curve's smaller models)."""
    import torch
    from torch import nn

    class VGG16(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            channels = 3
            for v in CFG:
                if v == "M":
                    layers.append(nn.MaxPool2d(2))
                else:
                    out = max(1, round(int(v) * width))
                    layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
                    channels = out
            self.features = nn.Sequential(*layers)
            hidden = max(1, round(4096 * width))
            self.classifier = nn.Sequential(
                nn.Linear(channels * 7 * 7, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, 1000),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    torch.manual_seed(seed)
    model = VGG16().eval()
    count = sum(p.numel() for p in model.parameters())
    if width == 1.0 and count != VGG16_PARAMS:
        raise SystemExit(f"VGG-16 shape error: {count:,} parameters, expected {VGG16_PARAMS:,}")
    return model


# ------------------------------------------------------------------------------------------ samplers


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class RssSampler(threading.Thread):
    """Peak RSS per phase label; optionally the main thread's stack at every new overall high."""

    def __init__(self, interval: float = 0.02, stacks: bool = False) -> None:
        super().__init__(daemon=True)
        self.interval, self.stacks = interval, stacks
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self.order: list[str] = []
        self.highs: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._main = threading.main_thread().ident
        self._top = 0

    def set_phase(self, name: str) -> None:
        self.sample()
        self.phase = name

    def sample(self) -> None:
        rss = _rss_bytes()
        phase = self.phase
        if phase not in self.peaks:
            self.order.append(phase)
        self.peaks[phase] = max(self.peaks.get(phase, 0), rss)
        if self.stacks and rss > self._top + (32 << 20):  # a new high by more than 32 MiB
            self._top = rss
            frame = sys._current_frames().get(self._main)
            stack = traceback.format_stack(frame)[-6:] if frame is not None else []
            self.highs.append(
                {"rss_mb": round(rss / 2**20), "phase": phase, "stack": [s.strip() for s in stack]}
            )

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


# ------------------------------------------------------------------------------------------- workers


def worker_compress(out: Path, pipeline: str, profile: Path | None, width: float = 1.0) -> dict[str, Any]:
    """One compress + save in this process. ``sqc.app.api.trace`` and ``CompressedModel.verify`` are wrapped
    (same calls, same arguments) only to label the phases for the timers and the RSS sampler."""
    import torch

    import sqc
    import sqc.app.api
    from sqc.compiler.pipeline import Pipeline
    from sqc.ir.records import CompressedModel

    sampler = RssSampler(stacks=profile is not None)
    sampler.start()
    sampler.set_phase("import+build")
    rss_import = _rss_bytes()
    started = time.perf_counter()
    model = build_vgg16(width=width)
    build_s = time.perf_counter() - started
    rss_model = _rss_bytes()

    names = [p.name for p in Pipeline.parse(pipeline).passes]
    seconds: dict[str, float] = {}
    verifies = [0]
    original_trace, original_verify = sqc.app.api.trace, CompressedModel.verify

    def trace(*args: Any, **kwargs: Any) -> Any:
        sampler.set_phase("trace")
        begun = time.perf_counter()
        try:
            return original_trace(*args, **kwargs)
        finally:
            seconds["trace"] = time.perf_counter() - begun
            sampler.set_phase("after trace")

    def verify(self: Any) -> None:
        k = verifies[0]
        label = "verify (input)" if k == 0 else f"verify after {names[k - 1]}"
        sampler.set_phase(label)
        begun = time.perf_counter()
        try:
            original_verify(self)
        finally:
            seconds[label] = time.perf_counter() - begun
            verifies[0] += 1
            sampler.set_phase(names[k] if k < len(names) else "(after last pass)")

    passes: list[dict[str, Any]] = []

    def on_pass(index: int, pass_: Any, result: Any, elapsed: float) -> None:
        passes.append({"pass": pass_.spec(), "seconds": elapsed})

    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    sqc.app.api.trace, CompressedModel.verify = trace, verify  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        artifact = sqc.compress(model, [INPUT_SHAPE], pipeline, on_pass=on_pass)
        compress_s = time.perf_counter() - started
    finally:
        sqc.app.api.trace, CompressedModel.verify = original_trace, original_verify  # type: ignore[method-assign]
    sampler.set_phase("save")
    started = time.perf_counter()
    size = artifact.save(out, force=True)
    save_s = time.perf_counter() - started
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    if profiler is not None:
        profiler.disable()
    sampler.stop()
    for i, p in enumerate(passes):  # on_pass time includes the verification after the pass
        p["verify_s"] = seconds.get(f"verify after {names[i]}", 0.0)
        p["pass_only_s"] = p["seconds"] - p["verify_s"]
    phase_peaks = {k: round(sampler.peaks[k] / 2**20) for k in sampler.order if k != "start"}
    result = {
        "loadavg_1min_at_end": os.getloadavg()[0],
        "params": sum(s.numel for s in artifact.model.tensors.values()),
        "threads": torch.get_num_threads(),
        "build_s": build_s,
        "trace_s": seconds.get("trace", 0.0),
        "verify_s": sum(v for k, v in seconds.items() if k.startswith("verify")),
        "phase_seconds": seconds,
        "trace_and_first_verify_s": compress_s - sum(p["seconds"] for p in passes),
        "passes": passes,
        "compress_s": compress_s,
        "save_s": save_s,
        "end_to_end_s": compress_s + save_s,
        "file_bytes": size,
        "sha256": digest,
        "ratio_vs_fp32": 4 * VGG16_PARAMS / size,
        "rss_after_import_mb": round(rss_import / 2**20),
        "rss_after_model_mb": round(rss_model / 2**20),
        "peak_rss_mb": round(_peak_bytes() / 2**20),
        "phase_peak_rss_mb": phase_peaks,
    }
    if profiler is not None:
        import io
        import pstats

        assert profile is not None
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(60)
        stats.print_callers("encode_tensor|ir.py:.*\\((verify|kept|decode)\\)")
        highs = "\n".join(
            f"--- RSS {h['rss_mb']} MiB during {h['phase']}\n    " + "\n    ".join(h["stack"])
            for h in sampler.highs
        )
        profile.write_text(
            f"cProfile of one compress+save run of {pipeline} on VGG-16 shapes\n\n{text.getvalue()}\n\n"
            f"Main-thread Python stack at each new RSS high (+32 MiB steps):\n{highs}\n"
        )
        result["rss_highs"] = [
            {"rss_mb": h["rss_mb"], "phase": h["phase"], "where": h["stack"][-1:]} for h in sampler.highs
        ]
    return result


def worker_hotspots() -> dict[str, Any]:
    """Time and transient RSS of the IR/codec functions the profile points at, on VGG-16's largest layer
    (classifier.0: 4096 x 25088, 10% kept, 32 centroids): the installed sqc function, then reference
    implementations of the same computation (the slower one sqc used at 7f38531, and a cheaper one)."""
    import inspect

    import numpy as np
    import torch

    import sqc.ir.records
    from sqc.formats import huffman, tensor_codec
    from sqc.ir.records import TensorState

    code_dtype = getattr(sqc.ir.records, "CODE_DTYPE", torch.int64)
    shape = (4096, 25088)
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(shape, generator=gen)
    mask = weights.abs() > 1.6449  # ~10% kept, as prune{sparsity=0.9}
    del weights
    codes = torch.randint(0, 32, shape, generator=gen).to(code_dtype)
    codes = torch.where(mask, codes, torch.zeros((), dtype=code_dtype))
    codebook = torch.linspace(-3, 3, 32)
    state = TensorState("classifier.0.weight", shape, "weight", mask=mask, codes=codes, codebook=codebook)
    state.coder = "huffman"
    mask_np = mask.flatten().numpy()
    positions = np.flatnonzero(mask_np)

    def huffman_cost(counts: np.ndarray) -> float:
        lengths = huffman.code_lengths(counts)
        return float((counts * lengths.astype(np.int64)).sum()) + 4 * np.count_nonzero(lengths)

    def widths_by_passes() -> int:  # 7f38531: for each width, two full passes over the gaps
        gaps = np.diff(np.flatnonzero(mask_np), prepend=-1) - 1
        costs = []
        for bits in tensor_codec.INDEX_BITS:
            top = (1 << bits) - 1
            counts = np.bincount(gaps % top, minlength=top + 1).astype(np.int64)
            counts[top] += int((gaps // top).sum())
            costs.append(huffman_cost(counts))
        return list(tensor_codec.INDEX_BITS)[int(np.argmin(costs))]

    def widths_by_histogram() -> int:  # the same choice from one histogram of the gaps
        hist = np.bincount(np.diff(np.flatnonzero(mask_np), prepend=-1) - 1)
        values = np.flatnonzero(hist)
        weight = hist[values]
        costs = []
        for bits in tensor_codec.INDEX_BITS:
            top = (1 << bits) - 1
            counts = np.bincount(values % top, weights=weight, minlength=top + 1).astype(np.int64)
            counts[top] += int(((values // top) * weight).sum())
            costs.append(huffman_cost(counts))
        return list(tensor_codec.INDEX_BITS)[int(np.argmin(costs))]

    first = next(iter(inspect.signature(tensor_codec._index_bits_for).parameters))
    if first == "gaps":
        from sqc.formats.sparse_index import gaps_of

        index_input = gaps_of(positions)
    else:
        index_input = positions if first == "positions" else mask_np

    cases: list[tuple[str, str, Any]] = [
        ("sqc/ir.py TensorState.kept", "installed sqc", lambda: state.kept),
        ("  reference", "int(mask.sum()) (bool -> int64 copy)", lambda: int(mask.sum())),
        ("  reference", "torch.count_nonzero(mask)", lambda: int(torch.count_nonzero(mask))),
        ("sqc/ir.py TensorState.verify", "installed sqc", state.verify),
        ("  reference", "(codes[~mask] != 0).any() (gather)", lambda: bool((codes[~mask] != 0).any())),
        ("  reference", "((codes != 0) & ~mask).any()", lambda: bool(((codes != 0) & ~mask).any())),
        ("sqc/ir.py TensorState.decode", "installed sqc", state.decode),
        ("  reference", "codebook[codes] (the lookup alone)", lambda: codebook[codes]),
        (
            "  reference",
            "index_select(codebook, 0, codes.flatten())",
            lambda: torch.index_select(codebook, 0, codes.flatten()),
        ),
        (
            "formats/tensor_codec.py _index_bits_for",
            "installed sqc",
            lambda: tensor_codec._index_bits_for(index_input, True),
        ),
        ("  reference", "16 widths x 2 passes over 10M gaps", widths_by_passes),
        ("  reference", "16 widths from one gap histogram", widths_by_histogram),
        (
            "formats/tensor_codec.py encode_tensor",
            "installed sqc, huffman coder",
            lambda: tensor_codec.encode_tensor(state),
        ),
    ]
    out = []
    for where, what, fn in cases:
        times, transients = [], []
        for _ in range(3):  # median time, largest transient of three
            sampler = RssSampler(interval=0.002)
            base = _rss_bytes()
            sampler.start()
            started = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - started)
            sampler.stop()
            transients.append(max(sampler.peaks.values()) - base)
        seconds, peak = statistics.median(times), max(transients) + base
        if isinstance(value, tuple):
            value = len(value[1])  # encode_tensor: payload bytes
        out.append(
            {
                "where": where,
                "what": what,
                "seconds": seconds,
                "transient_rss_mb": round((peak - base) / 2**20),
                "result": value if isinstance(value, (int, bool)) else None,
            }
        )
    widths = {c["result"] for c in out if "gap" in c["what"] or "_index_bits_for" in c["where"]}
    if len(widths) != 1:
        raise SystemExit(f"index widths disagree: {widths}")
    return {
        "layer": {"shape": list(shape), "kept": int(torch.count_nonzero(mask)), "centroids": 32},
        "code_dtype": str(code_dtype).removeprefix("torch."),
        "codes_mb": round(codes.numel() * codes.element_size() / 2**20),
        "codes_uint8_would_be_mb": round(codes.numel() / 2**20),
        "cases": out,
    }


def worker_decompress(path: Path, profile: Path | None = None) -> dict[str, Any]:
    import torch

    import sqc

    rss_import = _rss_bytes()
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    module = sqc.load(path)
    load_s = time.perf_counter() - started
    if profiler is not None:
        import io
        import pstats

        assert profile is not None
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
        with open(profile, "a") as handle:
            handle.write(
                f"\n\ncProfile of sqc.load on the {path.stat().st_size:,}-byte file\n{text.getvalue()}"
            )
    peak_load = _peak_bytes()
    # sanity, outside the timing: right size, about 10% non-zero, a forward pass runs
    params = sum(p.numel() for p in module.parameters())
    weights = [p for name, p in module.named_parameters() if name.endswith("weight")]
    nonzero = sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    started = time.perf_counter()
    with torch.no_grad():
        out = module(torch.rand(INPUT_SHAPE, generator=torch.Generator().manual_seed(0)))
    forward_s = time.perf_counter() - started
    return {
        "load_s": load_s,
        "rss_after_import_mb": round(rss_import / 2**20),
        "peak_rss_load_mb": round(peak_load / 2**20),
        "params": params,
        "weight_density": nonzero,
        "output_shape": list(out.shape),
        "output_finite": bool(torch.isfinite(out).all()),
        "forward_s": forward_s,
    }


ARCH_MODULE = """
import sys
sys.path.insert(0, {benchmarks!r})
from bench_scale import build_vgg16


def VGG16():
    return build_vgg16()
"""


def prepare_cli_inputs(tmp: Path) -> Path:
    """A state_dict file of the seeded VGG-16 and a module (``vgg_arch:VGG16``) that builds it, as a user
    of the command line would have them. Returns the state_dict's path."""
    import torch

    (tmp / "vgg_arch.py").write_text(ARCH_MODULE.format(benchmarks=str(HERE)))
    path = tmp / "vgg16.pt"
    torch.save(build_vgg16().state_dict(), path)
    return path


def run_cli(model: Path, out: Path, pipeline: str, timeout: float) -> dict[str, Any]:
    """``sqc compress model.pt --arch ... -o out.sqc`` in a fresh process: wall time and that process's
    peak RSS (``wait4``), everything included (interpreter, imports, loading the file, passes, save)."""
    cmd = [
        sys.executable,
        "-m",
        "sqc.app.cli",
        "compress",
        str(model),
        "--arch",
        "vgg_arch:VGG16",
        "--input-shape",
        ",".join(map(str, INPUT_SHAPE)),
        "--passes",
        pipeline,
        "-o",
        str(out),
        "--force",
    ]
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(model.parent), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryFile("w+") as out_log, tempfile.TemporaryFile("w+") as err_log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_log, stderr=err_log, text=True, env=env)
        deadline = started + timeout
        while True:  # wait4: this child's own rusage (RUSAGE_CHILDREN would be the max over all children)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise SystemExit(f"sqc compress took more than {timeout} s")
            time.sleep(0.05)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_log.seek(0)
        err_log.seek(0)
        stdout, stderr = out_log.read(), err_log.read()
    if proc.returncode != 0:
        raise SystemExit(f"sqc compress failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {
        "wall_s": wall,
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "file_bytes": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "loadavg_1min_at_end": os.getloadavg()[0],
        "last_line": stdout.strip().splitlines()[-1:] or stderr.strip().splitlines()[-1:],
    }


# -------------------------------------------------------------------------------------------- driver


def run_worker(args: list[str], timeout: float, pythonpath: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    env = None
    if pythonpath is not None:
        env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def run_ab(args: argparse.Namespace) -> None:
    """Interleaved A/B of two sqc copies: A, B, A, B, ... so both see the same background load."""
    dirs = [d.strip() for d in args.ab.split(",")]
    if len(dirs) != 2:
        raise SystemExit("--ab takes two directories separated by a comma")
    out = args.out if args.out != RESULTS / "scale.json" else RESULTS / "scale_ab.json"
    runs: dict[str, list[dict[str, Any]]] = {d: [] for d in dirs}
    with tempfile.TemporaryDirectory(prefix="sqc-scale-ab-") as tmp:
        for run in range(args.runs):
            for d in dirs:
                path = Path(tmp) / f"{len(runs[d])}-{Path(d).name}.sqc"
                c = run_worker(
                    ["--worker", "compress", "--file", str(path), "--pipeline", args.pipeline],
                    args.timeout,
                    d,
                )
                back = run_worker(["--worker", "decompress", "--file", str(path)], args.timeout, d)
                c["load_s"], c["peak_rss_load_mb"] = back["load_s"], back["peak_rss_load_mb"]
                runs[d].append(c)
                print(
                    f"  run {run + 1} {d}: compress+save {c['end_to_end_s']:.1f} s, peak RSS "
                    f"{c['peak_rss_mb']} MiB; load {c['load_s']:.1f} s, {c['peak_rss_load_mb']} MiB; "
                    f"load average {c['loadavg_1min_at_end']:.1f}",
                    flush=True,
                )
    summary = {
        d: {
            "end_to_end_s": median_of(rows, "end_to_end_s"),
            "peak_rss_mb": median_of(rows, "peak_rss_mb"),
            "load_s": median_of(rows, "load_s"),
            "peak_rss_load_mb": median_of(rows, "peak_rss_load_mb"),
            "file_bytes": rows[0]["file_bytes"],
            "sha256": sorted({r["sha256"] for r in rows}),
        }
        for d, rows in runs.items()
    }
    a, b = (summary[d] for d in dirs)
    summary["time_ratio_b_over_a"] = b["end_to_end_s"] / a["end_to_end_s"]
    summary["peak_ratio_b_over_a"] = b["peak_rss_mb"] / a["peak_rss_mb"]
    summary["load_time_ratio_b_over_a"] = b["load_s"] / a["load_s"]
    summary["load_peak_ratio_b_over_a"] = b["peak_rss_load_mb"] / a["peak_rss_load_mb"]
    result = {
        "benchmark": "bench_scale --ab",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]),
        "pipeline": args.pipeline,
        "a": dirs[0],
        "b": dirs[1],
        "summary": summary,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for d in dirs:
        print(
            f"{d}: median {summary[d]['end_to_end_s']:.1f} s, peak RSS {summary[d]['peak_rss_mb']:.0f} MiB; "
            f"load {summary[d]['load_s']:.1f} s, {summary[d]['peak_rss_load_mb']:.0f} MiB"
        )
    print(
        f"B/A: time x{summary['time_ratio_b_over_a']:.2f}, peak memory "
        f"x{summary['peak_ratio_b_over_a']:.2f}; load time x{summary['load_time_ratio_b_over_a']:.2f}, "
        f"load memory x{summary['load_peak_ratio_b_over_a']:.2f}; wrote {out}"
    )


GROWTH_PIPELINE = "prune,share,quant,huffman"
GROWTH_WIDTHS = (0.0845, 0.17, 0.34, 0.68, 1.0)
"""Channel multipliers of VGG-16 giving about 1M, 4M, 16M, 64M and 138M parameters."""


def run_growth(args: argparse.Namespace) -> None:
    """Time and peak RSS of compress + save and of load at each width, one fresh process each, plus the
    exponent of a power-law fit (1 = linear in the parameter count)."""
    import math

    rows = []
    with tempfile.TemporaryDirectory(prefix="sqc-growth-") as tmp:
        path = Path(tmp) / "vgg.sqc"
        for width in GROWTH_WIDTHS:
            c = run_worker(
                [
                    "--worker",
                    "compress",
                    "--file",
                    str(path),
                    "--pipeline",
                    GROWTH_PIPELINE,
                    "--width",
                    str(width),
                ],
                args.timeout,
            )
            d = run_worker(["--worker", "decompress", "--file", str(path)], args.timeout)
            row = {
                "width": width,
                "params": d["params"],
                "compress_and_save_s": round(c["end_to_end_s"], 2),
                "peak_rss_compress_mb": c["peak_rss_mb"],
                "rss_after_model_built_mb": c["rss_after_model_mb"],
                "load_s": round(d["load_s"], 2),
                "peak_rss_load_mb": d["peak_rss_load_mb"],
                "file_bytes": c["file_bytes"],
            }
            rows.append(row)
            print(
                f"  {row['params']:>12,} params: compress+save {row['compress_and_save_s']:6.1f} s, peak RSS "
                f"{row['peak_rss_compress_mb']:>5} MiB; load {row['load_s']:5.1f} s, "
                f"{row['peak_rss_load_mb']} MiB",
                flush=True,
            )

    def exponent(key: str, start: int = 1) -> float:
        xs = [math.log(r["params"]) for r in rows[start:]]
        ys = [math.log(max(r[key], 1e-9)) for r in rows[start:]]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)

    fits = {k: round(exponent(k), 3) for k in ("compress_and_save_s", "peak_rss_compress_mb", "load_s")}
    print(f"  power-law exponents from 4M up (1 = linear): {fits}")
    out = args.out if args.out != RESULTS / "scale.json" else RESULTS / "scale_growth.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "bench_scale --growth",
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "pipeline": GROWTH_PIPELINE,
                "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                "loadavg_1min_at_end": os.getloadavg()[0],
                "git": git_state(),
                "rows": rows,
                "exponents_from_4M": fits,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="compress and decompress runs (median reported)")
    parser.add_argument("--pipeline", default=PIPELINE)
    parser.add_argument("--profile", action="store_true", help="one extra cProfile'd run with RSS stacks")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument(
        "--ab",
        metavar="DIR_A,DIR_B",
        help="A/B mode: alternate compress runs between two sqc copies (PYTHONPATH directories, e.g. "
        "pip install --no-deps --target DIR of two commits) under the same machine load; writes "
        "results/scale_ab.json unless --out is given",
    )
    parser.add_argument("--worker", choices=["compress", "decompress", "hotspots"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--growth",
        action="store_true",
        help=f"growth curve: VGG-16 shapes at widths giving 1M..138M parameters through {GROWTH_PIPELINE}; "
        "writes results/scale_growth.json",
    )
    args = parser.parse_args()

    if args.worker == "compress":
        print(json.dumps(worker_compress(args.file, args.pipeline, args.profile_out, args.width)))
        return
    if args.worker == "decompress":
        print(json.dumps(worker_decompress(args.file, args.profile_out)))
        return
    if args.worker == "hotspots":
        print(json.dumps(worker_hotspots()))
        return
    if args.ab:
        run_ab(args)
        return
    if args.growth:
        run_growth(args)
        return

    import sqc

    print(
        f"VGG-16 shapes ({VGG16_PARAMS:,} params, {4 * VGG16_PARAMS / 1e6:.1f} MB fp32), pipeline "
        f"{args.pipeline}"
    )
    print(
        f"sqc from {Path(sqc.__file__).parent}; {os.cpu_count()} cores; {args.runs} run(s), each in a fresh "
        f"process"
    )
    compress_runs: list[dict[str, Any]] = []
    decompress_runs: list[dict[str, Any]] = []
    cli_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sqc-scale-") as tmp:
        path = Path(tmp) / "vgg16.sqc"
        state_dict = prepare_cli_inputs(Path(tmp))
        for run in range(args.runs):
            cli = run_cli(state_dict, Path(tmp) / "cli.sqc", args.pipeline, args.timeout)
            cli_runs.append(cli)
            print(
                f"  run {run + 1}: sqc compress vgg16.pt (CLI) {cli['wall_s']:.1f} s wall, peak RSS "
                f"{cli['peak_rss_mb']} MiB",
                flush=True,
            )
            c = run_worker(
                ["--worker", "compress", "--file", str(path), "--pipeline", args.pipeline], args.timeout
            )
            compress_runs.append(c)
            passes = ", ".join(f"{p['pass'].split('{')[0]} {p['pass_only_s']:.1f}" for p in c["passes"])
            print(
                f"  run {run + 1}: compress+save {c['end_to_end_s']:.1f} s (trace {c['trace_s']:.1f}, "
                f"{passes}, verify {c['verify_s']:.1f}, save {c['save_s']:.1f}); peak RSS "
                f"{c['peak_rss_mb']} MiB; file {c['file_bytes']:,} B",
                flush=True,
            )
            d = run_worker(["--worker", "decompress", "--file", str(path)], args.timeout)
            decompress_runs.append(d)
            print(f"         load {d['load_s']:.1f} s, peak RSS {d['peak_rss_load_mb']} MiB", flush=True)
        profile_summary = None
        if args.profile:
            profile_path = args.out.with_name("scale_profile.txt")
            print(f"  profiling one more run -> {profile_path}", flush=True)
            profile_path.parent.mkdir(parents=True, exist_ok=True)
            p = run_worker(
                [
                    "--worker",
                    "compress",
                    "--file",
                    str(path),
                    "--pipeline",
                    args.pipeline,
                    "--profile-out",
                    str(profile_path),
                ],
                args.timeout,
            )
            profile_summary = {
                "note": "cProfile overhead inflates times; see scale_profile.txt for the full listing",
                "end_to_end_s_under_profiler": p["end_to_end_s"],
                "passes": p["passes"],
                "phase_peak_rss_mb": p["phase_peak_rss_mb"],
                "rss_highs": p["rss_highs"],
            }
            q = run_worker(
                ["--worker", "decompress", "--file", str(path), "--profile-out", str(profile_path)],
                args.timeout,
            )
            profile_summary["load_s_under_profiler"] = q["load_s"]
            print("  measuring hot spots on the largest layer (fresh process)", flush=True)
            profile_summary["hotspots"] = run_worker(["--worker", "hotspots"], args.timeout)
            for case in profile_summary["hotspots"]["cases"]:
                print(
                    f"    {case['where']:<42} {case['what']:<42} {case['seconds']:7.2f} s "
                    f"{case['transient_rss_mb']:>6} MiB",
                    flush=True,
                )

    pass_names = [p["pass"] for p in compress_runs[0]["passes"]]
    per_pass = {
        name: statistics.median(r["passes"][i]["pass_only_s"] for r in compress_runs)
        for i, name in enumerate(pass_names)
    }
    phases = list(compress_runs[0]["phase_seconds"])
    per_phase = {k: statistics.median(r["phase_seconds"][k] for r in compress_runs) for k in phases}
    peak_phases = list(compress_runs[0]["phase_peak_rss_mb"])
    phase_peaks = {
        k: statistics.median(r["phase_peak_rss_mb"].get(k, 0) for r in compress_runs) for k in peak_phases
    }
    summary = {
        "end_to_end_s": median_of(compress_runs, "end_to_end_s"),
        "compress_s": median_of(compress_runs, "compress_s"),
        "trace_s": median_of(compress_runs, "trace_s"),
        "verify_s_total": median_of(compress_runs, "verify_s"),
        "per_pass_s_excluding_verify": per_pass,
        "trace_and_verify_s_by_phase": per_phase,
        "peak_rss_mb_by_phase": phase_peaks,
        "save_s": median_of(compress_runs, "save_s"),
        "build_model_s": median_of(compress_runs, "build_s"),
        "peak_rss_mb": median_of(compress_runs, "peak_rss_mb"),
        "rss_after_model_mb": median_of(compress_runs, "rss_after_model_mb"),
        "file_bytes": compress_runs[0]["file_bytes"],
        "file_identical_across_runs": len({r["sha256"] for r in compress_runs}) == 1,
        "ratio_vs_fp32": compress_runs[0]["ratio_vs_fp32"],
        "load_s": median_of(decompress_runs, "load_s"),
        "peak_rss_load_mb": median_of(decompress_runs, "peak_rss_load_mb"),
        "loadavg_1min_at_end_of_compress_runs": [r["loadavg_1min_at_end"] for r in compress_runs],
    }
    summary["cli_wall_s"] = median_of(cli_runs, "wall_s")
    summary["cli_peak_rss_mb"] = median_of(cli_runs, "peak_rss_mb")
    summary["cli_file_identical_to_api"] = {r["sha256"] for r in cli_runs} == {
        r["sha256"] for r in compress_runs
    }
    summary["meets_time_target"] = max(summary["end_to_end_s"], summary["cli_wall_s"]) <= TARGET_SECONDS
    summary["meets_memory_target"] = summary["cli_peak_rss_mb"] * 2**20 <= TARGET_BYTES
    summary["meets_load_target"] = summary["load_s"] <= TARGET_LOAD_SECONDS
    result = {
        "benchmark": "bench_scale",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]),
        "model": {
            "shape": "VGG-16",
            "params": VGG16_PARAMS,
            "fp32_bytes": 4 * VGG16_PARAMS,
            "input": list(INPUT_SHAPE),
        },
        "git": git_state(),
        "pipeline": args.pipeline,
        "targets": {
            "end_to_end_s": TARGET_SECONDS,
            "peak_rss_bytes": TARGET_BYTES,
            "load_s": TARGET_LOAD_SECONDS,
            "note": "time: both the API run and the CLI run; memory: the CLI run (sqc owns the model it "
            "loads; the API run's peak also holds the caller's own fp32 model)",
        },
        "summary": summary,
        "cli_runs": cli_runs,
        "compress_runs": compress_runs,
        "decompress_runs": decompress_runs,
        "profile": profile_summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    s = summary
    print()
    print(f"{'measure':<34}{'median':>14}  target")
    print(
        f"{'sqc compress vgg16.pt (CLI), wall':<34}{s['cli_wall_s']:>12.1f} s  <= {TARGET_SECONDS:.0f} s "
        f"{'MET' if s['meets_time_target'] else 'MISSED'} (both this and the API run below)"
    )
    print(
        f"{'  peak RSS of that process':<34}{s['cli_peak_rss_mb'] * 2**20 / 1e9:>12.2f} GB  <= 2 GB "
        f"{'MET' if s['meets_memory_target'] else 'MISSED'} ({s['cli_peak_rss_mb']:.0f} MiB)"
    )
    print(f"{'  file identical to the API run':<34}{'yes' if s['cli_file_identical_to_api'] else 'NO':>14}")
    print(f"{'API: compress + save':<34}{s['end_to_end_s']:>12.1f} s")
    print(f"{'  trace (fx + canonicalise + IR)':<34}{s['trace_s']:>12.1f} s")
    for name, sec in per_pass.items():
        print(f"{'  ' + name.split('{')[0]:<34}{sec:>12.1f} s")
    print(f"{'  verify (4 runs of the IR check)':<34}{s['verify_s_total']:>12.1f} s")
    print(f"{'  save (serialise + write)':<34}{s['save_s']:>12.1f} s")
    print(f"{'API: peak RSS (caller holds fp32)':<34}{s['peak_rss_mb'] * 2**20 / 1e9:>12.2f} GB")
    print(f"{'  of which the fp32 model + torch':<34}{s['rss_after_model_mb'] * 2**20 / 1e9:>12.2f} GB")
    print(f"{'file size':<34}{s['file_bytes'] / 1e6:>12.2f} MB  ({s['ratio_vs_fp32']:.1f}x vs fp32)")
    print(
        f"{'decompress (sqc.load)':<34}{s['load_s']:>12.1f} s  <= {TARGET_LOAD_SECONDS:.0f} s "
        f"{'MET' if s['meets_load_target'] else 'MISSED'} (peak RSS "
        f"{s['peak_rss_load_mb'] * 2**20 / 1e9:.2f} GB)"
    )
    print("peak RSS by phase (MiB, median): " + ", ".join(f"{k} {v:.0f}" for k, v in phase_peaks.items()))
    loads = ", ".join(f"{x:.1f}" for x in s["loadavg_1min_at_end_of_compress_runs"])
    print(
        f"1-min load average at the end of each compress run: {loads} "
        "(2 cores; above ~1.5 the times are inflated)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
