"""Calibration from inputs alone, the public integer simulator, and an HLS project that builds where it lands.

* Calibration takes a file with only inputs (``x_val`` or ``x``, or a bare ``.pt`` tensor) or loaders
  of ``x`` / ``(x, y)`` batches, and legalizes to the same program as the labelled file; labels only add
  the top-1 lines of the report.
* ``sqc.simulate`` and ``sqc lower --target sim`` give the output codes of the compiled C target, bit for
  bit, on the MNIST test images, and the same accuracy block ``lower --target c`` prints.
* The emitted HLS ``Makefile`` records the ``ap_types`` directory found at lowering time: ``make csim``
  builds and the testbench passes with a ``python3`` on PATH that cannot find hls4ml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sqc_lenet import MNIST, lenet, mnist  # tests/models_pkg, on the path (conftest.py)

import sqc
from sqc.runtime.data import DataError
from sqc.targets.calib import calibration_data
from sqc.targets.hls import HlsError, build_files, find_ap_types
from sqc.targets.legalize import LowerOptions, legalize
from sqc.targets.simulate import simulate

CC, GXX, MAKE = shutil.which("cc"), shutil.which("g++"), shutil.which("make")
AP_TYPES = find_ap_types()
needs_cc = pytest.mark.skipif(CC is None or MAKE is None, reason="needs a C compiler (cc) and make")
needs_csim = pytest.mark.skipif(
    GXX is None or MAKE is None or AP_TYPES is None,
    reason="C simulation needs g++, make and the ap_types headers (pip install hls4ml or set SQC_AP_TYPES)",
)


@pytest.fixture(scope="module")
def lenet_sqc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lenet") / "lenet300.sqc"
    sqc.compress(lenet("LeNet300"), [(1, 1, 28, 28)], "prune,quant,huffman").save(path)
    return path


# ------------------------------------------------------------------------------------------------
# 3. calibration needs inputs only


def test_inputs_only_calibration_gives_the_labelled_program(lenet_sqc: Path, tmp_path: Path) -> None:
    """x_val alone, x alone, a bare .pt tensor, a tensor, loaders of x or (x, y) batches: one program
    (the same output codes on every MNIST image as calibration with labels)."""
    x, y = mnist()
    xs = torch.from_numpy(x)
    np.savez(tmp_path / "x_val.npz", x_val=x)
    np.savez(tmp_path / "x.npz", x=x)
    torch.save(xs, tmp_path / "x.pt")
    torch.save({"x": xs}, tmp_path / "dict.pt")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs), batch_size=128)
    pairs = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xs, torch.from_numpy(y)), batch_size=100
    )
    opts = LowerOptions(calib_samples=600)
    want = simulate(legalize(lenet_sqc, MNIST, opts), xs)
    sources: list[object] = [
        tmp_path / "x_val.npz",
        tmp_path / "x.npz",
        str(tmp_path / "x.pt"),
        tmp_path / "dict.pt",
        xs,
        x,
        loader,
        [b for b in xs.split(50)],  # a list of bare batches
        pairs,
    ]
    for source in sources:
        program = legalize(lenet_sqc, source, opts)  # type: ignore[arg-type]
        assert torch.equal(simulate(program, xs), want), type(source).__name__
        assert program.notes[0].startswith("calibrated on 600 inputs")
    # labels come along when every batch has them, and only then
    assert calibration_data(pairs, 600).y is not None and calibration_data(loader, 600).y is None
    assert torch.equal(calibration_data(pairs, 600).y, torch.from_numpy(y[:600]).long())  # type: ignore[arg-type]


def test_report_with_and_without_labels(lenet_sqc: Path, tmp_path: Path, cli: Callable[..., object]) -> None:
    """The C target's report: agreement and error vs the float model always, top-1 on labels only when
    the calibration data has labels; a y that is not class labels is noted and ignored."""
    x, y = mnist()
    np.savez(tmp_path / "x.npz", x_val=x)
    np.savez(tmp_path / "reg.npz", x_val=x, y_val=y.astype(np.float32))  # regression targets

    def lower(calib: Path, *more: str) -> dict:
        out = tmp_path / calib.stem
        result = cli("lower", lenet_sqc, "--target", "c", "-o", out, "--calib", calib, "--force", *more)
        assert result.code == 0, result.err  # type: ignore[attr-defined]
        return result  # type: ignore[return-value]

    labelled, bare, regression = lower(MNIST), lower(tmp_path / "x.npz"), lower(tmp_path / "reg.npz")
    for result in (labelled, bare, regression):
        assert "top-1 agreement" in result.out and "max |error|" in result.out  # type: ignore[attr-defined]
    assert "top-1 on labels: float 97.40%" in labelled.out  # type: ignore[attr-defined]
    assert "top-1 on labels" not in bare.out + regression.out  # type: ignore[attr-defined]
    assert "y_val (float32 (1000,)) is not class labels" in regression.out  # type: ignore[attr-defined]
    report = json.loads(
        cli(  # type: ignore[attr-defined]
            "lower", lenet_sqc, "--target", "c", "-o", tmp_path / "j", "--calib", tmp_path / "x.npz", "--json"
        ).out
    )
    acc = report["accuracy"]
    assert "int_top1" not in acc and acc["samples"] == 1000 and acc["top1_agreement"] >= 0.97
    assert 0 < acc["mean_abs_error"] <= acc["max_abs_error"] <= 4 * acc["output_lsb"]


def test_loaders_calibrate_an_unlabelled_model(
    tmp_path: Path, cli: Callable[..., object], monkeypatch
) -> None:
    """An embedding-like model (16 real-valued outputs, no classes) lowered with --loaders whose batches
    are bare inputs: MNIST images pooled to 8x8."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16)).eval()
    source = tmp_path / "embed.sqc"
    sqc.compress(model, [(1, 1, 8, 8)], "prune{sparsity=0.5},quant").save(source)
    (tmp_path / "calib_loaders.py").write_text(
        "import numpy as np, torch, torch.nn.functional as F\n"
        f"X = F.adaptive_avg_pool2d(torch.from_numpy(np.load({str(MNIST)!r})['x_val']), 8)\n"
        "def make():\n"
        "    return None, torch.utils.data.DataLoader(X, batch_size=64)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "embed.npz"
    result = cli("lower", source, "--target", "sim", "-o", out, "--loaders", "calib_loaders:make", "--json")
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    report = json.loads(result.out)  # type: ignore[attr-defined]
    assert report["samples"] == 1000 and report["inputs"] == "--loaders calib_loaders:make"
    assert "int_top1" not in report["accuracy"]
    assert report["accuracy"]["max_abs_error"] <= 8 * report["accuracy"]["output_lsb"]
    with np.load(out) as saved:
        assert saved["codes"].shape == (1000, 16)
    x = F.adaptive_avg_pool2d(torch.from_numpy(mnist()[0]), 8)
    sim = sqc.simulate(source, x, calib=x)
    with np.load(out) as saved:
        assert np.array_equal(saved["codes"], sim.codes.numpy())
    # both sources at once, or neither, is one line
    both = cli("lower", source, "--target", "sim", "-o", out, "--force", "--calib", MNIST, "--loaders", "x:y")
    assert both.code == 1 and "either --calib or --loaders" in both.err  # type: ignore[attr-defined]


def test_calibration_errors_are_one_line(tmp_path: Path) -> None:
    x, y = mnist()
    np.savez(tmp_path / "labels.npz", y_val=y)
    np.savez(tmp_path / "short.npz", x_val=x, y_val=y[:10])
    torch.save([1, 2], tmp_path / "list.pt")
    for source, message in (
        (tmp_path / "labels.npz", "missing x_val (or x), the calibration inputs (found: y_val)"),
        (tmp_path / "short.npz", "y_val has 10 rows but there are 1000 inputs"),
        (tmp_path / "list.pt", "holds a list, expected a tensor or a dict of tensors"),
        (tmp_path / "none.npz", "no such data file"),
        (torch.zeros(4, dtype=torch.int32), "has dtype torch.int32, expected floating point"),
        ([torch.zeros(2, 3), torch.zeros(2, 4)], "batches have samples of different shapes"),
        (3, "calib=int: expected a data file"),
    ):
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            calibration_data(source)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# 4. a public integer simulator


def build_c(project: Path) -> Path:
    subprocess.run([MAKE or "make", "-s"], cwd=project, check=True, capture_output=True)
    return project / "model"


def run_c(binary: Path, codes: np.ndarray, tmp: Path) -> np.ndarray:
    codes.tofile(tmp / "in.bin")
    subprocess.run([str(binary), str(tmp / "in.bin"), str(tmp / "out.bin")], check=True, timeout=120)
    return np.fromfile(tmp / "out.bin", dtype=codes.dtype).reshape(codes.shape[0], -1)


@needs_cc
@pytest.mark.parametrize(
    ("arch", "pipeline", "options"),
    [("LeNet300", "prune,quant,huffman", []), ("LeNet5", "prune,share,rans", ["act_bits=16"])],
)
def test_simulate_equals_the_c_target(
    arch: str, pipeline: str, options: list[str], tmp_path: Path, cli: Callable[..., object]
) -> None:
    """sqc.simulate on the 1,000 MNIST test images == the output codes of the C project `sqc lower
    --target c` emits (compiled with its Makefile), calibrated on inputs only; and the accuracy block
    of `lower --target sim` == that of `lower --target c`."""
    x, y = mnist()
    source = tmp_path / "m.sqc"
    sqc.compress(lenet(arch), [(1, 1, 28, 28)], pipeline).save(source)
    np.savez(tmp_path / "calib.npz", x_val=x[:500])  # calibrate on half, simulate all
    flags = [a for o in options for a in ("--option", o)]
    c = cli("lower", source, "--target", "c", "-o", tmp_path / "c", "--calib", MNIST, "--json", *flags)
    assert c.code == 0, c.err  # type: ignore[attr-defined]

    sim = sqc.simulate(source, x, calib=MNIST, options=options)
    dtype = np.int8 if sim.bits == 8 else np.int16
    assert sim.bits == (16 if options else 8) and sim.codes.shape == (1000, 10)
    got = run_c(build_c(tmp_path / "c"), sim.input_codes.numpy().astype(dtype), tmp_path)
    assert np.array_equal(got, sim.codes.numpy()), f"{int((got != sim.codes.numpy()).any(1).sum())} differ"
    top1 = float((sim.values.argmax(-1).numpy() == y).mean())
    print(f"\n{arch} {pipeline} {options}: integer top-1 {top1:.2%} (sqc.simulate == C on 1,000 images)")

    s = cli("lower", source, "--target", "sim", "-o", tmp_path / "s.npz", "--calib", MNIST, "--json", *flags)
    assert s.code == 0, s.err  # type: ignore[attr-defined]
    c_acc, s_acc = json.loads(c.out)["accuracy"], json.loads(s.out)["accuracy"]  # type: ignore[attr-defined]
    assert s_acc == c_acc and s_acc["int_top1"] == pytest.approx(top1)
    with np.load(tmp_path / "s.npz") as saved:
        assert saved["codes"].dtype == dtype and np.array_equal(saved["codes"], got)
        assert np.array_equal(saved["values"], saved["codes"] * 2.0 ** -int(saved["frac"]))
        assert np.array_equal(
            saved["input_codes"].reshape(1000, -1), sim.input_codes.reshape(1000, -1).numpy()
        )

    # the same program on other inputs, without calibrating again; calibration on inputs only
    half = sqc.simulate(sim.program, x[:100])
    assert torch.equal(half.codes, sim.codes[:100])
    other = sqc.simulate(
        source, torch.from_numpy(x), calib=tmp_path / "calib.npz", options=dict(o.split("=") for o in options)
    )
    c2 = cli(
        "lower", source, "--target", "c", "-o", tmp_path / "c2", "--calib", tmp_path / "calib.npz", *flags
    )
    assert c2.code == 0, c2.err  # type: ignore[attr-defined]
    got2 = run_c(build_c(tmp_path / "c2"), other.input_codes.numpy().astype(dtype), tmp_path)
    assert np.array_equal(got2, other.codes.numpy())


def test_lower_sim_files_and_errors(lenet_sqc: Path, tmp_path: Path, cli: Callable[..., object]) -> None:
    """`--target sim`: .npy holds the codes; --option inputs= simulates another file (its labels give
    the top-1 line); the text summary; one-line errors."""
    x, _ = mnist()
    np.savez(tmp_path / "calib.npz", x_val=x[:300])
    npy = tmp_path / "codes.npy"
    text = cli(
        "lower", lenet_sqc, "--target", "sim", "-o", npy, "--calib", tmp_path / "calib.npz",
        "--option", f"inputs={MNIST}",
    )  # fmt: skip
    assert text.code == 0, text.err  # type: ignore[attr-defined]
    lines = text.out.splitlines()  # type: ignore[attr-defined]
    assert lines[0].startswith(f"wrote {npy}") and "integer outputs of 1,000 inputs" in lines[0]
    assert any(line.startswith("note: calibrated on 300 inputs") for line in lines)
    assert lines[-1].startswith("top-1 on labels: float")
    sim = sqc.simulate(lenet_sqc, MNIST, calib=tmp_path / "calib.npz")
    assert np.array_equal(np.load(npy), sim.codes.numpy())
    assert sim.labels is not None and np.array_equal(sim.labels.numpy(), mnist()[1])
    assert lines[-1].endswith(f"integer {float((sim.values.argmax(-1) == sim.labels).double().mean()):.2%}")
    for argv, message in (
        (("-o", tmp_path / "o.csv", "--calib", MNIST), "target sim writes .npz"),
        (("-o", tmp_path / "o.npz"), "needs --calib FILE"),
        (("-o", npy, "--calib", MNIST), "already exists"),
        (("-o", tmp_path / "o.npz", "--calib", MNIST, "--option", "reuse=4"), "--option reuse: unknown"),
        (("-o", MNIST, "--calib", MNIST, "--force"), "is also an input"),
    ):
        failed = cli("lower", lenet_sqc, "--target", "sim", *argv)
        assert failed.code == 1 and message in failed.err and failed.err.count("\n") == 1, failed.err  # type: ignore[attr-defined]
    with pytest.raises(sqc.SqcError, match="calib= is required"):
        sqc.simulate(lenet_sqc, x)


# ------------------------------------------------------------------------------------------------
# 6. the emitted HLS project builds where it lands


@needs_csim
def test_hls_make_csim_uses_the_headers_found_at_lowering(
    lenet_sqc: Path, tmp_path: Path, cli: Callable[..., object]
) -> None:
    """`make csim` in the emitted project with a python3 on PATH that has no hls4ml (it fails): the
    Makefile's recorded AP_TYPES builds it and the testbench matches the golden codes; an explicit
    --option ap_types=DIR (a path with a space) is recorded instead; a wrong AP_TYPES= says so."""
    assert AP_TYPES is not None
    headers = tmp_path / "my headers"
    shutil.copytree(AP_TYPES, headers)
    out = tmp_path / "hls"
    common = ("--calib", MNIST, "--option", "calib_samples=200", "--option", "tb_samples=20")
    result = cli("lower", lenet_sqc, "--target", "hls", "-o", out, *common, "--option", f"ap_types={headers}")
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    assert f"make csim: AP_TYPES={headers} recorded in the Makefile" in result.out  # type: ignore[attr-defined]
    makefile, readme = (out / "Makefile").read_text(), (out / "README.md").read_text()
    assert f"AP_TYPES ?= {headers}\n" in makefile and "python3" not in makefile
    assert f"AP_TYPES ?= {headers}" in readme and "make csim AP_TYPES=" in readme

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho 'no hls4ml here' >&2\nexit 1\n")
    (fake / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    env.pop("AP_TYPES", None)
    built = subprocess.run(["make", "test"], cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "20 inferences, 0 differ" in built.stdout

    wrong = subprocess.run(
        ["make", "-B", "csim", "AP_TYPES=/nonexistent/ap_types"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0 and "no ap_fixed.h in AP_TYPES=/nonexistent/ap_types" in wrong.stderr

    # the default: the headers sqc finds itself ($SQC_AP_TYPES, else hls4ml), recorded absolute
    default = cli("lower", lenet_sqc, "--target", "hls", "-o", tmp_path / "d", *common)
    assert default.code == 0, default.err  # type: ignore[attr-defined]
    assert f"AP_TYPES ?= {AP_TYPES}\n" in (tmp_path / "d" / "Makefile").read_text()
    bad = cli(
        "lower",
        lenet_sqc,
        "--target",
        "hls",
        "-o",
        tmp_path / "b",
        *common,
        "--option",
        f"ap_types={tmp_path}",
    )
    assert bad.code == 1 and f"ap_types={tmp_path}: no ap_fixed.h" in bad.err  # type: ignore[attr-defined]


def test_hls_makefile_without_headers_says_what_to_pass(tmp_path: Path) -> None:
    """Nothing found at lowering time: AP_TYPES is left empty and both files say to pass it."""
    files = build_files("m", None)
    makefile, readme = files["Makefile"].decode(), files["README.md"].decode()
    assert "AP_TYPES ?= \n" in makefile and "none was found: pass AP_TYPES=... to make" in readme
    (tmp_path / "Makefile").write_text(makefile)
    if MAKE is not None:
        for name in ("tb.cpp", "model.cpp", "model.h", "sqc_hls.h"):
            (tmp_path / name).write_text("")
        ran = subprocess.run(["make", "csim"], cwd=tmp_path, capture_output=True, text=True)
        assert ran.returncode != 0 and "no ap_fixed.h in AP_TYPES=:" in ran.stderr
    with pytest.raises(HlsError, match="quotes or line breaks"):
        build_files("m", Path('/a"b'))
    assert "AP_TYPES ?= /x$$y" in build_files("m", Path("/x$y"))["Makefile"].decode()
