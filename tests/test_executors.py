"""Sensitivity sweeps on executors: a local process pool and Ray give the serial run's curves bit for bit."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sqc.compiler.pass_base import PassContext
from sqc.compiler.pipeline import Pipeline
from sqc.compiler.sensitivity import Analysis, cached_analysis
from sqc.errors import PipelineError, SqcError
from sqc.runtime.data import top1
from sqc.runtime.executors import Executor, callable_name

# the Gated model and its data from test_sensitivity (tests are not importable as modules here)
_spec = importlib.util.spec_from_file_location(
    "_sensitivity_fixtures", Path(__file__).with_name("test_sensitivity.py")
)
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
Gated, fresh_ir, gated_data = _fixtures.Gated, _fixtures.fresh_ir, _fixtures.gated_data

SWEEP = "sensitivity{sparsities=0.5;0.8;0.9;0.95;0.97;0.99 bits=8;5;3;2;1}"


def sweep(executor: Executor, evaluate=None, text: str = SWEEP) -> tuple[Analysis, list[str]]:
    """The curves of ``text`` on a fresh Gated model, and the pass's diagnostics; the model must come
    back exactly as it was."""
    data = gated_data()
    ctx = PassContext(
        evaluate=evaluate or top1(data), evaluate_subset=lambda n: top1(data, n), executor=executor
    )
    ir = fresh_ir()
    before = {name: s.decode().clone() for name, s in ir.tensors.items()}
    Pipeline.parse(text).run(ir, ctx)
    ir.verify()
    for name, state in ir.tensors.items():
        assert torch.equal(state.decode(), before[name]) and state.mask is None and state.codes is None
    return cached_analysis(ctx), ir.report[-1].diagnostics


@pytest.fixture(scope="module")
def serial() -> Analysis:
    return sweep(Executor("serial"))[0]


def same(a: Analysis, b: Analysis) -> None:
    """Bit-for-bit equal curves (Point is a frozen dataclass of floats and ints: == is exact)."""
    assert a.prune == b.prune and a.share == b.share
    assert list(a.prune) == list(b.prune) and list(a.share) == list(b.share)  # same order too
    assert (a.metric, a.numel, a.evaluations) == (b.metric, b.numel, b.evaluations)
    assert a.to_json() == b.to_json()


def test_process_pool_gives_the_serial_curves(serial: Analysis):
    analysis, diagnostics = sweep(Executor("process", workers=2))
    same(analysis, serial)
    assert not diagnostics
    assert serial.evaluations == 1 + 2 * 6 + 2 * 5  # baseline + every point, whichever executor


def test_ray_gives_the_serial_curves(serial: Analysis):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'sqc[ray]'); not tested")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        analysis, diagnostics = sweep(Executor("ray", workers=2))
        assert ray.is_initialized()  # a caller's Ray instance is left running
    finally:
        ray.shutdown()
    same(analysis, serial)
    assert not diagnostics


def test_the_builtin_evaluator_pickles_with_only_its_samples():
    data = gated_data(copies=50)
    whole, subset = top1(data), top1(data, 8)
    again = pickle.loads(pickle.dumps(subset))
    assert again.x.shape[0] == 8 and len(pickle.dumps(subset)) < len(pickle.dumps(whole)) / 20
    assert again(Gated()) == subset(Gated()) == 1.0


def test_small_sweeps_with_automatic_workers_stay_serial(serial: Analysis):
    # the default (process, every CPU) does not start workers for a sweep estimated under min_seconds
    analysis, _ = sweep(Executor())
    same(analysis, serial)
    assert PassContext().executor == Executor("process", 0)


def lambda_evaluator():
    data = gated_data()
    inner = top1(data)
    return lambda module: inner(module)


def test_an_unpicklable_evaluation_falls_back_to_serial_with_a_warning(serial: Analysis):
    evaluate = lambda_evaluator()
    analysis, diagnostics = sweep(Executor("process", workers=2), evaluate)
    same(analysis, serial)
    assert len(diagnostics) == 1
    assert "ran serially" in diagnostics[0] and "lambda_evaluator.<locals>.<lambda>" in diagnostics[0]


def test_ray_refuses_an_unpicklable_evaluation_in_one_line():
    evaluate = lambda_evaluator()
    with pytest.raises(SqcError) as caught:
        sweep(Executor("ray", workers=2), evaluate)
    message = str(caught.value)
    assert "\n" not in message and callable_name(evaluate) in message and "cannot be pickled" in message


def test_ray_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SqcError, match=r"needs Ray: pip install 'sqc\[ray\]'"):
        sweep(Executor("ray", workers=2))


def test_executor_settings_are_checked():
    with pytest.raises(PipelineError, match="must be one of serial, process, ray"):
        Executor("threads")  # type: ignore[arg-type]
    with pytest.raises(PipelineError, match="workers=-1"):
        Executor("process", -1)


@pytest.fixture
def cli_workspace(tmp_path: Path, monkeypatch):
    """A state_dict of the Small test model and a small data file in the working directory; the app."""
    from sqc_test_models import Small

    from sqc.app.cli import app

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(Small().state_dict(), "small.pt")
    g = np.random.default_rng(0)
    np.savez("d.npz", x_val=g.normal(size=(40, 16)).astype(np.float32), y_val=g.integers(0, 4, 40))
    return app


def test_cli_takes_executor_and_workers(cli_workspace):
    from typer.testing import CliRunner

    app = cli_workspace
    common = ["sensitivity", "small.pt", "--arch", "sqc_test_models:Small", "--data", "d.npz"]
    common += ["--sparsities", "0.9,0.95", "--bits", "", "--no-png", "--json"]
    runner = CliRunner()
    result = runner.invoke(app, [*common, "--executor", "serial"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*common, "--executor", "threads"])
    assert result.exit_code != 0 and "must be one of serial, process, ray" in str(result.exception)


def test_compress_runs_its_sweep_on_the_executor_asked_for(cli_workspace):
    """``sqc compress --executor``: a ``prune{target=auto}`` sweep on a 2-worker process pool writes the
    serial run's file byte for byte; an unknown executor is refused before any work."""
    from typer.testing import CliRunner

    app = cli_workspace
    common = ["compress", "small.pt", "--arch", "sqc_test_models:Small", "--data", "d.npz"]
    common += ["--passes", "prune{target=auto},share{bits=3},huffman", "--tolerance", "0.05"]
    runner = CliRunner()
    for name, options in (("serial", ["--executor", "serial"]), ("pool", ["--workers", "2"])):
        result = runner.invoke(app, [*common, *options, "-o", f"{name}.sqc"])
        assert result.exit_code == 0, result.output
    assert Path("serial.sqc").read_bytes() == Path("pool.sqc").read_bytes()
    result = runner.invoke(app, [*common, "--executor", "threads", "-o", "x.sqc"])
    assert result.exit_code != 0 and "executor=threads: must be one of" in str(result.exception)
    assert not Path("x.sqc").exists()
