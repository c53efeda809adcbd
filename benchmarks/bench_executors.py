"""Sensitivity sweep on executors: serial vs a 2-worker process pool vs 2 Ray workers, same run.

A real sweep: LeNet-5 (``examples/lenet5.pt``) evaluated on the 10,000 MNIST test images
(``benchmarks/mnist.py``; ``--data examples/mnist_test_1k.npz`` for the 1,000-image subset), every
weight layer at sparsities 0.5..0.97 and at 8..2 bits (the defaults of ``sqc sensitivity``): 52
points, each a full evaluation plus the coded bytes. Wall time of the whole sweep (including starting
the workers, which is what a user waits for) per executor, median of ``--runs``, executors
interleaved within each repetition so that machine noise hits them alike; the curves of every
parallel run are checked equal to the serial run's, bit for bit.

Ray: a local instance with ``num_cpus=2`` is started once, before the timed runs (what ``ray start``
does on a cluster); its start-up is reported separately. Actors (which import torch) start inside
each timed run.

Run: ``python benchmarks/bench_executors.py [--runs 3] [--data FILE]``; writes
``benchmarks/results/executors.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.append(str(REPO))
sys.path.append(str(HERE))
from provenance import git_state  # noqa: E402

from sqc.compiler.pass_base import PassContext  # noqa: E402
from sqc.compiler.sensitivity import Analysis, cached_analysis  # noqa: E402
from sqc.frontend.trace import trace  # noqa: E402
from sqc.models import lenet5  # noqa: E402
from sqc.passes.sensitivity import Sensitivity  # noqa: E402
from sqc.runtime.data import Dataset, load_data, top1  # noqa: E402
from sqc.runtime.executors import Executor  # noqa: E402


def dataset(path: str | None) -> tuple[Dataset, str]:
    if path:
        return load_data(Path(path)), path
    from mnist import load_mnist

    x, y = load_mnist("test")
    return Dataset(x.reshape(-1, 1, 28, 28).float() / 255.0 if x.dtype == torch.uint8 else x, y), "MNIST test"


def sweep(data: Dataset, executor: Executor, threads: int | None = None) -> tuple[float, Analysis]:
    """One whole sweep on a fresh model; ``threads`` limits torch's intra-op threads here (a worker)."""
    default = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _sweep(data, executor)
    finally:
        torch.set_num_threads(default)


def _sweep(data: Dataset, executor: Executor) -> tuple[float, Analysis]:
    model = lenet5()
    model.load_state_dict(torch.load(REPO / "examples" / "lenet5.pt", weights_only=True))
    ir = trace(model, [(1, 1, 28, 28)], copy_weights=False)
    ctx = PassContext(evaluate=top1(data), executor=executor)
    start = time.perf_counter()
    Sensitivity().run(ir, ctx)
    return time.perf_counter() - start, cached_analysis(ctx)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", default=None, help=".npz with x_val/y_val (default: the MNIST test set)")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    data, data_name = dataset(args.data)
    # serial at torch's default threads (both cores, intra-op) and at 1 thread (one worker's share)
    executors = {
        "serial": (Executor("serial"), None),
        "serial 1 thread": (Executor("serial"), 1),
        "process x2": (Executor("process", 2), None),
    }
    ray_start = None
    ray_version = None
    if not args.no_ray:
        try:
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_start = time.perf_counter() - start
            ray_version = ray.__version__
            executors["ray x2"] = (Executor("ray", 2), None)
        except ImportError:
            print("ray not installed: pip install 'sqc[ray]' to include it")
    times: dict[str, list[float]] = {name: [] for name in executors}
    reference: Analysis | None = None
    identical = {name: True for name in executors}
    sweep(data, Executor("serial"))  # warm-up: first-touch allocations, lazy imports
    for run in range(args.runs):
        for name, (executor, threads) in executors.items():
            seconds, analysis = sweep(data, executor, threads)
            times[name].append(seconds)
            if reference is None:
                reference = analysis
            identical[name] &= analysis.to_json() == reference.to_json()
            print(f"run {run + 1}: {name:<15} {seconds:6.2f} s  identical={identical[name]}", flush=True)
    if "ray x2" in executors:
        import ray

        ray.shutdown()
    assert reference is not None
    points = sum(len(v) - 1 for v in reference.prune.values()) + sum(len(v) for v in reference.share.values())
    serial = statistics.median(times["serial"])
    one = statistics.median(times["serial 1 thread"])
    rows = {
        name: {
            "median_s": round(statistics.median(t), 3),
            "runs_s": [round(x, 3) for x in t],
            "speedup_vs_serial": round(serial / statistics.median(t), 3),
            "speedup_vs_serial_1_thread": round(one / statistics.median(t), 3),
            "curves_identical_to_serial": identical[name],
        }
        for name, t in times.items()
    }
    result: dict[str, Any] = {
        "benchmark": "sensitivity sweep on executors",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "ray": ray_version,
        },
        "provenance": git_state(),
        "model": "LeNet-5 (examples/lenet5.pt)",
        "data": f"{data_name}, {data.x_val.shape[0]} images",
        "points": points,
        "evaluations": reference.evaluations,
        "ray_local_start_s": None if ray_start is None else round(ray_start, 3),
        "loadavg_1min_at_end": os.getloadavg()[0],
        "executors": rows,
    }
    print(f"\n{points} points, {reference.evaluations} evaluations, {data.x_val.shape[0]} images")
    for name, row in rows.items():
        print(
            f"  {name:<15} median {row['median_s']:6.2f} s  vs serial {row['speedup_vs_serial']:.2f}x  "
            f"vs 1 thread {row['speedup_vs_serial_1_thread']:.2f}x  "
            f"identical={row['curves_identical_to_serial']}"
        )
    out = HERE / "results" / "executors.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
