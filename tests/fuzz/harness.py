"""The fuzz harness of the ``.sqc`` reader: what one input does, and what a campaign needs around it.

:func:`make_target` is what a user's ``sqc inspect`` / ``sqc.load`` does with a file's bytes; it either
returns (the file is refused with a located :class:`SqcFormatError`, or read into a model that
verifies and that ``inspect --json`` describes) or raises: that is a bug. The campaigns that drive it
(``benchmarks/fuzz_container.py``: atheris or random mutations, replays, corpus selection) and the
suite's regression tests (``tests/test_reliability.py``, ``tests/test_fuzz_hardening.py``) share it.

Nothing here imports sqc at module level: under atheris, sqc must be imported inside
``atheris.instrument_imports`` first, which the campaign does before calling :func:`make_target`.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
"""The regression corpus the suite replays (``valid-*``, ``bug-*``, ``cov-*``)."""


class _FreshResult:
    """Compares to a new object each time, so that a leaked reference to the result shows."""

    def __lt__(self, other: object) -> object:
        return object()


def plug_trace_cmp_leak() -> bool:
    """Stop atheris leaking the result of every instrumented comparison; True if it did leak.

    atheris rewrites each ``COMPARE_OP`` of the instrumented code into ``atheris._trace_cmp(left,
    right, op, ...)``, whose native implementation (3.0.0: ``TraceCompareOp`` returns the new reference
    from ``PyObject_RichCompare`` as a ``py::handle``, which pybind11 increments again) keeps one
    reference too many to the result. For ``True``/``False``/small ints that only inflates a counter;
    a numpy comparison (``s >= f0`` in the rANS decoder, a few per round) allocates a new bool array
    every time, and each one leaks: RSS grew ~40 KB per execution until libFuzzer's RSS limit ended a
    format 1.2 campaign. The instrumented code looks ``_trace_cmp`` up on the module at every
    comparison, and ``atheris.Fuzz()`` installs the fuzzing-time version, so this runs after that (on
    the first input) and wraps whatever is installed with a ``Py_DecRef`` of the surplus reference,
    after checking on a probe that there is one (an atheris that fixed the bug is left alone).
    """
    import atheris

    native = atheris._trace_cmp
    if getattr(native, "sqc_plugged", False):
        return True
    probe = native(_FreshResult(), _FreshResult(), 0, 0, False)  # opid 0 = "<" (Python 3.11)
    if sys.getrefcount(probe) <= 2:  # the variable and the argument: no surplus reference
        return False
    decref = ctypes.pythonapi.Py_DecRef
    decref.argtypes, decref.restype = [ctypes.py_object], None
    decref(probe)

    def trace_cmp(left: object, right: object, op: int, counter: int, is_const: bool) -> object:
        result = native(left, right, op, counter, is_const)
        decref(result)
        return result

    trace_cmp.sqc_plugged = True  # type: ignore[attr-defined]
    atheris._trace_cmp = trace_cmp
    return True


def make_target() -> Callable[[bytes], None]:
    import json

    from sqc.app.inspection import inspect_container
    from sqc.errors import SqcFormatError
    from sqc.formats import container

    def target(data: bytes) -> None:
        try:
            layout = container.read_layout(data)
            model = container.model_from_layout(layout, "fuzz")
        except SqcFormatError as exc:
            if exc.offset is None:
                raise AssertionError(f"SqcFormatError without a byte offset: {exc}") from exc
            return
        model.verify()  # whatever the reader accepts must be a consistent model
        json.dumps(inspect_container(data, "fuzz"))  # and `sqc inspect --json` must describe it

    return target


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def memory_state() -> dict[str, float]:
    """Process memory in MB: RSS and its peak (kernel), and glibc malloc's view (``mallinfo2``):
    ``heap`` bytes obtained from the main and thread arenas, ``mmap`` large blocks, ``used`` and ``free``
    inside the arenas; plus Python object count and the sizes of caches that grow per model built."""
    import gc
    import linecache

    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
        out.update(heap=info.arena / 2**20, mmap=info.hblkhd / 2**20)
        out.update(used=info.uordblks / 2**20, free=info.fordblks / 2**20)
    out["objects"] = len(gc.get_objects())
    out["linecache"] = len(linecache.cache)
    fx_loader = getattr(sys.modules.get("torch.fx.graph_module"), "_loader", None)
    out["fx_sources"] = len(getattr(fx_loader, "eval_cache", ()))
    return out


def with_memory_log(target: Callable[[bytes], None], every: int, trace: int = 0) -> Callable[[bytes], None]:
    """``target`` that prints :func:`memory_state` every ``every`` calls (stderr, one line); with
    ``trace`` frames, also Python's allocations (tracemalloc, from the first report on) and the
    allocation sites that grew most since then."""
    import tracemalloc

    calls = 0
    start = time.perf_counter()
    baseline: list[tracemalloc.Snapshot] = []

    def logged(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls % every == 0:
            state = memory_state()
            if tracemalloc.is_tracing():
                state["traced"] = tracemalloc.get_traced_memory()[0] / 2**20
            fields = " ".join(f"{k}={v:.0f}" if v >= 10 else f"{k}={v:.1f}" for k, v in state.items())
            print(f"mem #{calls} {time.perf_counter() - start:.0f}s {fields}", file=sys.stderr, flush=True)
            if trace and not tracemalloc.is_tracing():
                tracemalloc.start(trace)
            elif tracemalloc.is_tracing():
                snapshot = tracemalloc.take_snapshot()
                if baseline:
                    for stat in snapshot.compare_to(baseline[0], "traceback")[:4]:
                        where = " <- ".join(
                            f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback[-6:])
                        )
                        print(
                            f"  {stat.size_diff / 1024:+.0f} KiB {stat.count_diff:+d} blocks {where}",
                            file=sys.stderr,
                        )
                else:
                    baseline.append(snapshot)
        target(data)

    return logged


def prepare_corpus(workdir: Path) -> Path:
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    from crafted import open_files, seed_files

    for name, data in (seed_files() | open_files()).items():
        (corpus / name).write_bytes(data)
    for path in sorted(CORPUS.glob("*.sqc")):
        shutil.copy(path, corpus / path.name)
    return corpus
