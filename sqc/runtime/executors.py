"""Where independent evaluations run: in this process, in a local process pool, or on Ray.

A sensitivity sweep is (layers x settings) full evaluations of the model, each independent of the
others (apply one point to one layer, evaluate, put the layer back). That is the one part of sqc that
outgrows one core, and the only part that needs to: every point can be measured by any worker that
holds a copy of the model and the evaluation. An executor therefore ships *once per worker* an opaque
payload (the pickled model and evaluator, see :func:`ship`), then hands out small tasks
(``(layer, kind, value)``) and returns their results in task order, so the caller assembles exactly
what a serial loop would have produced: results are identical whatever the executor (tested).

Three executors:

* ``serial``: the tasks run here, one after another, on the live model (no copy, no pickling);
* ``process`` (the default): a local :class:`~concurrent.futures.ProcessPoolExecutor` started with
  ``forkserver`` (``spawn`` where that is missing; never ``fork``, which can deadlock a process whose
  OpenMP threads are running); each worker gets ``cpu_count // workers`` torch threads;
* ``ray``: one Ray actor per worker (``num_cpus=1``) holds the payload, put once in Ray's object store;
  tasks go to whichever actor is free. ``RAY_ADDRESS`` (``auto``, ``host:6379`` or ``ray://host:10001``)
  connects to a running cluster; without it a local instance is started for the run and shut down after.

This module knows nothing of models: what a task does is a module-level function, so it is pickled by
reference and the workers import it (they need the same sqc and torch installed).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal

from sqc.errors import PipelineError, SqcError

ExecutorKind = Literal["serial", "process", "ray"]
KINDS: tuple[ExecutorKind, ...] = ("serial", "process", "ray")
RAY_HINT = "pip install 'sqc[ray]' (or pip install 'ray>=2.9')"

Setup = Callable[[Any], Any]
"""``setup(payload) -> state``: run once per worker on the unpickled payload (e.g. rebuild the model)."""
TaskFn = Callable[[Any, Any], Any]
"""``fn(state, task) -> result``: one unit of work; module-level, so it pickles by reference."""


@dataclass(frozen=True)
class Executor:
    """How a run distributes independent evaluations (a run setting, like the seed: not a pass option,
    because it never changes a result and so does not belong in the pipeline text stored in files).

    ``workers=0`` means every local CPU (``process``) or every CPU of the Ray cluster (``ray``).
    ``min_seconds``: with ``workers=0``, a ``process`` sweep whose serial estimate is below this runs
    serially, since starting workers (each imports torch) costs about a second; a given number of
    workers always uses the pool.
    """

    kind: ExecutorKind = "process"
    workers: int = 0
    min_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PipelineError(f"executor {self.kind!r}: must be one of {', '.join(KINDS)}")
        if self.workers < 0:
            raise PipelineError(f"workers={self.workers}: must be 0 (all CPUs) or more")

    @classmethod
    def from_options(cls, kind: str, workers: int) -> Executor:
        """The executor the ``--executor``/``--workers`` options ask for; a bad value is an error that
        names the option."""
        if kind not in KINDS:
            raise SqcError(f"executor={kind}: must be one of {', '.join(KINDS)}")
        if workers < 0:
            raise SqcError(f"workers={workers}: must be 0 (every CPU) or more")
        return cls(kind, workers)  # type: ignore[arg-type]

    def describe(self) -> str:
        return self.kind if self.kind == "serial" else f"{self.kind} ({self.workers or 'all'} workers)"


DEFAULT_EXECUTOR = Executor()
"""What a run uses unless told otherwise: a local process pool over every CPU (frozen, so shared)."""


def callable_name(fn: object) -> str:
    """``pkg.module:qualname`` of a callable, for messages that must say which one is meant."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}"


def unpicklable(obj: object) -> str | None:
    """Why ``obj`` cannot be shipped to another process (None if it can)."""
    try:
        pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError, ...
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def local_workers(requested: int, tasks: int) -> int:
    return max(1, min(requested or (os.cpu_count() or 1), tasks))


def run_tasks(
    executor: Executor,
    payload: bytes,
    setup: Setup,
    fn: TaskFn,
    tasks: Sequence[Any],
    done: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """Run ``fn(setup(pickle.loads(payload)), task)`` for every task on ``executor``'s workers; the
    results in task order. ``done(finished, total)`` is called as results arrive (for progress).

    The serial executor is not handled here: it needs no payload (the caller runs on its live state).
    """
    if not tasks:
        return []
    if executor.kind == "process":
        return _run_process(executor, payload, setup, fn, tasks, done)
    if executor.kind == "ray":
        return _run_ray(executor, payload, setup, fn, tasks, done)
    raise PipelineError(f"executor {executor.kind!r} takes no payload: run the tasks in place")


# -- local process pool ------------------------------------------------------------------------------

_STATE: Any = None


def _init_process(setup: Setup, payload: bytes, threads: int) -> None:
    global _STATE
    import torch

    torch.set_num_threads(threads)
    _STATE = setup(pickle.loads(payload))


def _call_process(fn: TaskFn, task: Any) -> Any:
    return fn(_STATE, task)


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_process(
    executor: Executor,
    payload: bytes,
    setup: Setup,
    fn: TaskFn,
    tasks: Sequence[Any],
    done: Callable[[int, int], None] | None,
) -> list[Any]:
    workers = local_workers(executor.workers, len(tasks))
    threads = max(1, (os.cpu_count() or 1) // workers)
    results: list[Any] = [None] * len(tasks)
    try:
        with ProcessPoolExecutor(
            workers, mp_context=_context(), initializer=_init_process, initargs=(setup, payload, threads)
        ) as pool:
            pending = {pool.submit(_call_process, fn, task): i for i, task in enumerate(tasks)}
            finished = 0
            while pending:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in ready:
                    results[pending.pop(future)] = future.result()
                    finished += 1
                    if done is not None:
                        done(finished, len(tasks))
    except BrokenProcessPool as exc:
        raise PipelineError(
            f"the process pool's workers died ({exc}): a worker could not import or unpickle the model "
            "or the evaluation, or ran out of memory; try executor=serial"
        ) from None
    return results


# -- Ray -----------------------------------------------------------------------------------------------


class _RayWorker:
    """Holds one unpickled payload; measures tasks sent to it (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, setup: Setup, payload: bytes) -> None:
        self.state = setup(pickle.loads(payload))

    def run(self, fn: TaskFn, task: Any) -> Any:
        return fn(self.state, task)


def _run_ray(
    executor: Executor,
    payload: bytes,
    setup: Setup,
    fn: TaskFn,
    tasks: Sequence[Any],
    done: Callable[[int, int], None] | None,
) -> list[Any]:
    try:
        import ray
    except ImportError:
        raise PipelineError(f"executor=ray needs Ray: {RAY_HINT}") from None
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:  # a running cluster (``ray start --head``): it brings its own resources
            ray.init(address=address, log_to_driver=False)
        else:  # a local instance for this run only
            ray.init(
                address="local",
                num_cpus=executor.workers or None,
                include_dashboard=False,
                log_to_driver=False,
            )
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(executor.workers or cpus, len(tasks)))
        ref = ray.put(payload)  # once into the object store; each node fetches it once
        actor = ray.remote(num_cpus=1)(_RayWorker)
        actors = [actor.remote(setup, ref) for _ in range(workers)]
        results: list[Any] = [None] * len(tasks)
        queue = list(enumerate(tasks))[::-1]
        running: dict[Any, tuple[int, Any]] = {}
        for handle in actors:
            if queue:
                index, task = queue.pop()
                running[handle.run.remote(fn, task)] = (index, handle)
        finished = 0
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref_done in ready:
                index, handle = running.pop(ref_done)
                results[index] = ray.get(ref_done)
                finished += 1
                if done is not None:
                    done(finished, len(tasks))
                if queue:
                    nxt, task = queue.pop()
                    running[handle.run.remote(fn, task)] = (nxt, handle)
        for handle in actors:
            ray.kill(handle)
        return results
    except ray.exceptions.RayError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"a Ray task failed: {first}") from None
    finally:
        if started:
            ray.shutdown()


class Stopwatch:
    """Seconds spent in timed calls (to estimate what a sweep would take serially)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def time(self, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    @property
    def mean(self) -> float | None:
        return self.seconds / self.calls if self.calls else None
