"""The HLS target: the emitted Vitis HLS project, C-simulated with g++ and the real ap_fixed/ap_int headers,
computes exactly what the PyTorch integer simulator and the C target compute.

No vendor tool runs here: ``tb.cpp`` is compiled with g++ against the ``ap_types`` headers the hls4ml
wheel ships (``hls4ml/templates/vivado/ap_types``; ``$SQC_AP_TYPES`` overrides). Each model is compiled
once (``-O1``, the fastest to build) and run on real inputs; every output code must equal the simulator's
and the C target's. Without g++ or the headers the C-simulation tests skip, saying which is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import sqc
from sqc.targets.hls import HlsError, HlsOptions, decode_symbols, find_ap_types, lay_out, write_project
from sqc.targets.integer import IntProgram, Weights
from sqc.targets.legalize import LowerOptions, legalize
from sqc.targets.simulate import quantize_input, simulate

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "examples" / "mnist_test_1k.npz"
GXX = shutil.which("g++")
CC = shutil.which("cc")
AP_TYPES = find_ap_types()

needs_csim = pytest.mark.skipif(
    GXX is None or AP_TYPES is None,
    reason="C simulation needs g++ and the ap_fixed/ap_int headers (pip install hls4ml, which ships them, "
    "or set SQC_AP_TYPES)"
    + ("; g++ is missing" if GXX is None else "")
    + ("; the headers are missing" if AP_TYPES is None else ""),
)


def lenet(name: str) -> nn.Module:
    spec = importlib.util.spec_from_file_location("sqc_examples_lenet", ROOT / "examples" / "lenet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, name)()
    model.load_state_dict(torch.load(ROOT / "examples" / f"{name.lower()}.pt", weights_only=True))
    return model.eval()


def mnist(n: int) -> torch.Tensor:
    with np.load(MNIST) as data:
        return torch.from_numpy(data["x_val"][:n]).float()


def program_for(
    model: nn.Module, shape: tuple[int, ...], pipeline: str, tmp: Path, calib: Path, options: list[str] = ()
) -> IntProgram:
    source = tmp / "model.sqc"
    sqc.compress(model, [shape], pipeline).save(source, force=True)
    opts, _ = LowerOptions.parse(list(options))
    return legalize(source, calib, opts)


def csim(program: IntProgram, x: torch.Tensor, tmp: Path, options: dict[str, str]) -> tuple[np.ndarray, dict]:
    """Emit with the simulator's codes as golden data, compile tb.cpp + model.cpp once, run; the outputs."""
    codes = quantize_input(program, x).reshape(x.shape[0], -1).numpy()
    want = simulate(program, x).reshape(x.shape[0], -1).numpy()
    project = tmp / "hls"
    report = write_project(
        program, project, options=HlsOptions.parse(options), golden=(codes, want), force=True
    )
    cmd = [
        str(GXX),
        "-std=c++14",
        "-O1",
        "-Wall",
        f"-I{AP_TYPES}",
        "-I.",
        "-o",
        "csim",
        "tb.cpp",
        "model.cpp",
    ]
    built = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(cmd)} failed:\n{built.stderr[-4000:]}"
    ran = subprocess.run(
        ["./csim", "tb_input.bin", "tb_output.bin", "got.bin"], cwd=project, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"{x.shape[0]} inferences, 0 differ" in ran.stdout
    dtype = np.int8 if program.act_bits == 8 else np.int16
    got = np.fromfile(project / "got.bin", dtype=dtype).reshape(x.shape[0], -1)
    mismatched = int((got != want).any(axis=1).sum())
    assert mismatched == 0, f"{mismatched} of {x.shape[0]} outputs differ from the integer simulator"
    return got, report


def c_target(program: IntProgram, x: torch.Tensor, tmp: Path) -> np.ndarray:
    """The same program through the C target: its outputs on the same input codes."""
    from sqc.targets.c import write_project as write_c

    project = tmp / "c"
    write_c(program, project, force=True)
    if shutil.which("make"):  # the C target's own build, whatever files it emits
        subprocess.run(["make", "-s"], cwd=project, check=True, capture_output=True)
    else:
        cmd = [str(CC), "-std=c99", "-O2", "-o", "model", "main.c", "model.c", "sqc_kernels.c"]
        subprocess.run(cmd, cwd=project, check=True, capture_output=True)
    dtype = np.int8 if program.act_bits == 8 else np.int16
    quantize_input(program, x).numpy().astype(dtype).tofile(tmp / "in.bin")
    subprocess.run(
        [str(project / "model"), str(tmp / "in.bin"), str(tmp / "out.bin")], check=True, timeout=120
    )
    return np.fromfile(tmp / "out.bin", dtype=dtype).reshape(x.shape[0], -1)


@needs_csim
@pytest.mark.skipif(CC is None, reason="no system C compiler (cc) for the C target")
@pytest.mark.parametrize(
    ("arch", "samples", "options"),
    [
        ("LeNet300", 1000, {"reuse": "16"}),
        ("LeNet5", 300, {"reuse": "conv*:4;fc1:256;fc2:32", "interface": "mm"}),
    ],
)
def test_lenet_csim_bit_exact(arch: str, samples: int, options: dict[str, str], tmp_path: Path) -> None:
    """Pruned, shared, Huffman-coded LeNets on MNIST: csim == integer simulator == C target."""
    program = program_for(lenet(arch), (1, 1, 28, 28), "prune,share,huffman", tmp_path, MNIST)
    assert any(w.symbols.kind == "huffman" for w in program.weights)  # decoded at lowering time
    x = mnist(samples)
    got, report = csim(program, x, tmp_path, options)
    assert np.array_equal(got, c_target(program, x, tmp_path))
    # compressed on chip: at most a quarter of hls4ml's dense ap_fixed<16,6> weight arrays
    assert report["total"]["rom_bits"] * 4 <= report["dense_ap_fixed_16_6"]["rom_bits"]
    assert all(layer["multipliers"] <= layer["kept"] for layer in report["layers"])


@needs_csim
@pytest.mark.skipif(CC is None, reason="no system C compiler (cc) for the C target")
@pytest.mark.parametrize(  # power-of-two and scaled steps, per tensor and per channel
    "quant", ["quant", "quant{qp=-24}", "quant{qp=-24 granularity=channel}"]
)
def test_firenet_csim_bit_exact(firenet: nn.Module, quant: str, tmp_path: Path) -> None:
    """Every op kind (folded BatchNorm, PReLU, residual add, Fire concat, grouped/dilated conv, conv1d,
    pooling, tables, product, padding, softmax) with fixed-point codes in ROM, stream interface."""
    x = torch.rand(48, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    program = program_for(firenet, (1, 3, 16, 16), f"prune{{sparsity=0.5}},{quant},huffman", tmp_path, calib)
    got, _ = csim(program, x, tmp_path, {"reuse": "8"})
    assert np.array_equal(got, c_target(program, x, tmp_path))
    source = (tmp_path / "hls" / "model.cpp").read_text()
    assert "static void s_" in source  # tensors with several readers are copied for DATAFLOW


def _walk(w: Weights, reuse: int) -> np.ndarray:
    """The kernels' walk in Python: every lane's entries back to a dense integer kernel."""
    lanes = lay_out(w, reuse)
    out = np.zeros((lanes.out, lanes.per), dtype=np.int64)
    fill = (1 << lanes.index_bits) - 1
    for p in range(lanes.lanes):
        col, row, nxt = 0, 0, 0
        for e in range(int(lanes.counts[p])):
            g = int(lanes.idx[p, e]) if lanes.sparse else 0
            col += g
            crossed = 0
            while col >= lanes.per:
                col, row, crossed = col - lanes.per, row + 1, crossed + 1
            assert crossed <= lanes.wraps  # the kernels check WRAPS boundaries per entry
            if lanes.sparse and g == fill:
                continue
            s = int(lanes.sym[p, nxt])
            out[int(lanes.rowmap[p, row]), col] = w.codebook[s] if w.codebook is not None else s
            nxt, col = nxt + 1, col + 1
    return out.reshape(w.values.shape)


def test_lane_layout_reproduces_the_weights(tmp_path: Path) -> None:
    """Lanes (balanced channels, re-encoded relative index, padded banks) hold exactly the program's
    weights."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 10)).eval()
    x = torch.rand(16, 64)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(16, dtype=np.int64))
    for pipeline in (
        "prune{sparsity=0.8},share{bits=3},huffman",
        "prune{sparsity=0.7},share{bits=4},rans",  # rANS in the file: the program carries decoded codes
        "prune{sparsity=0.6},quant{bits=6}",
        "quant",
    ):
        program = program_for(model, (1, 64), pipeline, tmp_path, calib)
        for w, reuse in ((w, r) for w in program.weights for r in (1, 7, 64, 10_000)):
            assert np.array_equal(_walk(w, reuse), w.values)
            lanes = lay_out(w, reuse)
            assert lanes.wraps >= 1 and lanes.lanes <= w.shape[0]
            positions, _ = decode_symbols(w)
            assert lanes.kept == positions.size
            assert 1 <= lanes.index_bits <= 8 if lanes.sparse else lanes.index_bits == 0


def test_options() -> None:
    opts = HlsOptions.parse(
        {"reuse": "*:16;fc1:4", "interface": "mm", "part": "xc7z020clg400-1", "clock": "10"}
    )
    assert (opts.reuse_for("fc1", "fc1.weight"), opts.reuse_for("fc2", "fc2.weight")) == (4, 16)
    assert HlsOptions.parse({"reuse": "8"}).reuse_for("anything", "x") == 8
    for bad, message in (
        ({"reuse": "fc1:x"}, "reuse=fc1:x"),
        ({"reuse": "0"}, "positive"),
        ({"interface": "pcie"}, "interface=pcie: expected stream or mm"),
        ({"clock": "fast"}, "clock"),
        ({"part": "a b"}, "part=a b"),
    ):
        with pytest.raises(HlsError, match=message):
            HlsOptions.parse(bad)


def test_cli_lower_hls(tmp_path: Path, cli: Callable[..., object]) -> None:
    """`sqc lower --target hls`: project files, pragmas driven by the options, the report (text, --json)."""
    source = tmp_path / "m.sqc"
    sqc.compress(lenet("LeNet300"), [(1, 1, 28, 28)], "prune,quant,huffman").save(source)
    out = tmp_path / "hls"
    common = ("--calib", MNIST, "--option", "calib_samples=200", "--option", "tb_samples=20")
    result = cli(
        "lower", source, "--target", "hls", "-o", out, *common, "--json",
        "--option", "reuse=fc1:64;fc2:8", "--option", "interface=mm", "--option", "part=xc7z020clg400-1",
        "--option", "clock=8",
    )  # fmt: skip
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    report = json.loads(result.out)  # type: ignore[attr-defined]
    assert {p.name for p in out.iterdir()} >= {
        "model.h", "model.cpp", "sqc_hls.h", "tb.cpp", "build.tcl", "Makefile",
        "tb_input.bin", "tb_output.bin",
    }  # fmt: skip
    assert [layer["reuse"] for layer in report["layers"]] == [64, 8, 1]
    assert report["tb_samples"] == 20 and report["accuracy"]["samples"] == 200
    assert report["total"]["rom_bits"] * 4 <= report["dense_ap_fixed_16_6"]["rom_bits"]
    assert any("Huffman-coded streams decoded at lowering time" in n for n in report["notes"])
    assert (out / "tb_input.bin").stat().st_size == 20 * 784
    tcl = (out / "build.tcl").read_text()
    assert "set_part xc7z020clg400-1" in tcl and "create_clock -period 8 " in tcl
    for step in ("csim_design", "csynth_design", "cosim_design", "export_design"):
        assert step in tcl
    model = (out / "model.cpp").read_text()
    for pragma in ("INTERFACE mode = m_axi", "INTERFACE mode = s_axilite", "DATAFLOW", "ARRAY_PARTITION"):
        assert pragma in model
    assert "SQC_ROM(ap_int<8>, signed char, r_fc1_sym" in model  # 8-bit fixed-point codes, kept only
    kernels = (out / "sqc_hls.h").read_text()
    assert "#pragma HLS PIPELINE II = 1" in kernels and "#pragma HLS UNROLL" in kernels
    # the text report and the stream interface
    text = cli("lower", source, "--target", "hls", "-o", tmp_path / "s", *common)
    assert text.code == 0, text.err  # type: ignore[attr-defined]
    assert "dense ap_fixed<16,6>" in text.out and "smaller than dense" in text.out  # type: ignore[attr-defined]
    assert "INTERFACE mode = axis" in (tmp_path / "s" / "model.cpp").read_text()
    # one-line errors naming the option
    for argv, message in (
        ((), "needs --calib"),
        (("--calib", MNIST, "--option", "interface=pcie"), "--option interface=pcie: expected stream or mm"),
        (("--calib", MNIST, "--option", "bogus=1"), "--option bogus: unknown option"),
    ):
        failed = cli("lower", source, "--target", "hls", "-o", tmp_path / "x", "--force", *argv)
        assert failed.code == 1 and message in failed.err and failed.err.count("\n") == 1  # type: ignore[attr-defined]
