"""One check for the integer ops (issue 18): a program's outputs from the PyTorch integer simulator, the
C target (built with ``-Wall -Wextra -Werror``) and the HLS target (C-simulated with g++ and the
ap_fixed/ap_int headers) on the same inputs, asserted identical code for code. ``needs`` says what is
missing to run a backend (the tests skip, naming it)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sqc.targets.c import write_project as write_c
from sqc.targets.hls import HlsOptions, find_ap_types
from sqc.targets.hls import write_project as write_hls
from sqc.targets.integer import IntProgram
from sqc.targets.simulate import quantize_input, simulate

CC = shutil.which("cc")
GXX = shutil.which("g++")
AP_TYPES = find_ap_types()
MISSING = ", ".join(
    what for what, have in (("cc", CC), ("g++", GXX), ("the ap_types headers (hls4ml)", AP_TYPES)) if not have
)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-4000:]}"
    return done


def c_outputs(program: IntProgram, codes: np.ndarray, tmp: Path) -> np.ndarray:
    project = tmp / "c"
    write_c(program, project, force=True)
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
    _run([str(CC), *flags, "-o", "model", "main.c", "model.c", "sqc_kernels.c"], project)
    dtype = np.int8 if program.act_bits == 8 else np.int16
    codes.astype(dtype).tofile(tmp / "in.bin")
    _run([str(project / "model"), str(tmp / "in.bin"), str(tmp / "out.bin")], tmp)
    return np.fromfile(tmp / "out.bin", dtype=dtype).reshape(codes.shape[0], -1)


def hls_outputs(program: IntProgram, codes: np.ndarray, want: np.ndarray, tmp: Path) -> np.ndarray:
    project = tmp / "hls"
    write_hls(program, project, options=HlsOptions.parse({}), golden=(codes, want), force=True)
    cmd = [str(GXX), "-std=c++14", "-O1", f"-I{AP_TYPES}", "-I.", "-o", "csim", "tb.cpp", "model.cpp"]
    _run(cmd, project)
    ran = subprocess.run(
        ["./csim", "tb_input.bin", "tb_output.bin", "got.bin"], cwd=project, capture_output=True, text=True
    )
    dtype = np.int8 if program.act_bits == 8 else np.int16
    assert (project / "got.bin").exists(), ran.stdout + ran.stderr
    return np.fromfile(project / "got.bin", dtype=dtype).reshape(codes.shape[0], -1)


def three_way(program: IntProgram, x: torch.Tensor, tmp: Path, hls_samples: int | None = None) -> np.ndarray:
    """Simulator = C = HLS csim on ``x`` (the first ``hls_samples`` of it for the slower csim), every
    output code; returns the simulator's codes."""
    codes = quantize_input(program, x).reshape(x.shape[0], -1).numpy()
    want = simulate(program, x).reshape(x.shape[0], -1).numpy()
    got = c_outputs(program, codes, tmp)
    differ = int((got != want).any(axis=1).sum())
    assert differ == 0, f"C: {differ} of {x.shape[0]} outputs differ from the integer simulator"
    k = x.shape[0] if hls_samples is None else hls_samples
    got = hls_outputs(program, codes[:k], want[:k], tmp)
    differ = int((got != want[:k]).any(axis=1).sum())
    assert differ == 0, f"HLS csim: {differ} of {k} outputs differ from the integer simulator"
    return want


def simulate_tensor(program: IntProgram, x: torch.Tensor, name: str) -> torch.Tensor:
    """The codes of one intermediate tensor (the program cut after the op that writes its slot)."""
    slot = program.tensors[name].slot
    cut = next(i for i, op in enumerate(program.ops) if program.tensors[op.output].slot == slot)
    head = replace(program, ops=program.ops[: cut + 1], output=name)
    return simulate(head, x).reshape(x.shape[0], *program.tensors[name].shape)
