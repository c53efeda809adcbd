"""The C target: emitted projects compile warning-free and compute exactly what the integer simulator does.

Every model is compressed, legalized once, emitted, compiled with the system C compiler and run on real
inputs; its output codes must equal the simulator's on every input and every element (a one-LSB
difference is a bug). Top-1 agreement with the float model is reported (``-s`` shows it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sqc
from sqc.targets.c import write_project
from sqc.targets.legalize import LowerError, LowerOptions, legalize
from sqc.targets.simulate import quantize_input, simulate

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "examples" / "mnist_test_1k.npz"
CC = shutil.which("cc")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
SANITIZE = [
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-O1",
    "-g",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
]

needs_cc = pytest.mark.skipif(CC is None, reason="no system C compiler (cc) on PATH")


def lenet(name: str) -> nn.Module:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sqc_examples_lenet", ROOT / "examples" / "lenet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, name)()
    model.load_state_dict(torch.load(ROOT / "examples" / f"{name.lower()}.pt", weights_only=True))
    return model.eval()


def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(MNIST) as data:
        return torch.from_numpy(data["x_val"]).float(), torch.from_numpy(data["y_val"])


def build(project: Path, flags: list[str]) -> Path:
    assert CC is not None
    cmd = [CC, *flags, "-o", "model", "main.c", "model.c", "sqc_kernels.c"]
    result = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    return project / "model"


def run_binary(binary: Path, codes: torch.Tensor, act_bits: int, tmp: Path) -> np.ndarray:
    dtype = np.int8 if act_bits == 8 else np.int16
    inputs, outputs = tmp / "in.bin", tmp / "out.bin"
    codes.numpy().astype(dtype).tofile(inputs)
    subprocess.run([str(binary), str(inputs), str(outputs)], check=True, capture_output=True, timeout=120)
    return np.fromfile(outputs, dtype=dtype).reshape(codes.shape[0], -1)


def lower_and_check(
    model: nn.Module,
    shape: tuple[int, ...],
    pipeline: str,
    x: torch.Tensor,
    tmp: Path,
    calib: Path,
    flags: list[str] = STRICT,
    options: list[str] | None = None,
    arena: str = "static",
) -> dict:
    """Compress, legalize, emit, compile, run; assert bit-identical outputs; return what was measured."""
    artifact = sqc.compress(model, [shape], pipeline)
    source = tmp / "model.sqc"
    artifact.save(source, force=True)
    opts, _ = LowerOptions.parse(options)
    program = legalize(source, calib, opts)
    report = write_project(program, tmp / "c", force=True, arena=arena)
    binary = build(tmp / "c", flags)
    got = run_binary(binary, quantize_input(program, x), program.act_bits, tmp)
    want = simulate(program, x).reshape(x.shape[0], -1).numpy()
    mismatched = int((got != want).any(axis=1).sum())
    assert mismatched == 0, f"{mismatched} of {x.shape[0]} outputs differ from the integer simulator"
    with torch.no_grad():
        reference = artifact.module().eval()(x).reshape(x.shape[0], -1).argmax(-1).numpy()
    report["agreement"] = float((want.argmax(-1) == reference).mean())
    report["sqc_bytes"] = source.stat().st_size
    return report


@needs_cc
@pytest.mark.parametrize("arch", ["LeNet300", "LeNet5"])
@pytest.mark.parametrize(
    "pipeline",
    [
        "prune,share,huffman",
        "prune,quant,huffman",
        "prune,quant{qp=-26 rdo=0.2},huffman",
        "prune,quant{qp=-26 granularity=channel},rans",  # a scaled step per output channel
    ],
)
def test_lenet_bit_exact_on_mnist(arch: str, pipeline: str, tmp_path: Path) -> None:
    x, _ = mnist()
    report = lower_and_check(lenet(arch), (1, 1, 28, 28), pipeline, x, tmp_path, MNIST)
    print(
        f"\n{arch} {pipeline}: top-1 agreement with float {report['agreement']:.1%}, "
        f"ROM {report['rom_bytes']:,} B (.sqc {report['sqc_bytes']:,} B), RAM {report['ram_bytes']:,} B"
    )
    assert report["agreement"] >= 0.97  # int8 activations on a 90%-pruned model without retraining
    assert report["rom_weight_bytes"] < report["sqc_bytes"]  # the weights stay compressed in ROM


@needs_cc
def test_lenet_rans_decoded_in_c(tmp_path: Path) -> None:
    """``prune,share,rans``: ROM keeps every layer's context-coded rANS stream (the container's bytes),
    sqc_init decodes it under ASan/UBSan, and the outputs equal the simulator's on every input."""
    x, _ = mnist()
    x = x[:300]
    artifact = sqc.compress(lenet("LeNet300"), [(1, 1, 28, 28)], "prune,share,rans")
    program = legalize(artifact.model, MNIST, LowerOptions(calib_samples=300), keep_rans=True)
    assert [w.symbols.kind for w in program.weights] == ["rans"] * 3
    report = write_project(program, tmp_path / "c", force=True)
    assert (
        report["ram"]["rans_scratch"] > 0 and "SQC_RANS_SCRATCH" in (tmp_path / "c" / "model.c").read_text()
    )
    binary = build(tmp_path / "c", SANITIZE)
    got = run_binary(binary, quantize_input(program, x), program.act_bits, tmp_path)
    want = simulate(program, x).reshape(x.shape[0], -1).numpy()
    assert int((got != want).any(axis=1).sum()) == 0
    # without keep_rans (what other integer targets get) the same tensors are stored Huffman-coded
    plain = legalize(artifact.model, MNIST, LowerOptions(calib_samples=50))
    assert {w.symbols.kind for w in plain.weights} <= {"packed", "huffman"}
    assert any("rANS-coded in the .sqc" in note for note in plain.notes)


@pytest.fixture
def calib_npz(tmp_path: Path) -> Callable[[torch.Tensor], Path]:
    def write(x: torch.Tensor) -> Path:
        path = tmp_path / "calib.npz"
        np.savez(path, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
        return path

    return write


@needs_cc
@pytest.mark.parametrize(
    "pipeline",
    [
        "prune{sparsity=0.5},quant,huffman",
        "prune{sparsity=0.5},share{bits=4}",
        "prune{sparsity=0.5},quant{qp=-24},huffman",  # scaled steps, folded into BatchNorm's multiplier
    ],
)
def test_firenet_bit_exact(
    firenet: nn.Module, pipeline: str, tmp_path: Path, calib_npz: Callable[[torch.Tensor], Path]
) -> None:
    """Residual add, Fire concat, folded BatchNorm, PReLU, global average pooling, grouped/dilated conv,
    conv1d, sigmoid/tanh tables, element-wise product, padding, softmax: every op kind at once."""
    x = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    report = lower_and_check(firenet, (1, 3, 16, 16), pipeline, x, tmp_path, calib_npz(x))
    print(f"\nFireNet {pipeline}: top-1 agreement {report['agreement']:.1%}")


class Residual(nn.Module):
    """A plain residual CNN: conv-BN-ReLU6 blocks, a skip add, leaky ReLU, hardtanh, avg pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn(self.stem(x)))
        x = F.leaky_relu(self.body(x), 0.1) + x
        x = F.hardtanh(F.avg_pool2d(x, 2, padding=0), -2.0, 2.0)
        return self.head(torch.flatten(x, 1))


@needs_cc
def test_sanitizers_and_int16(tmp_path: Path, calib_npz: Callable[[torch.Tensor], Path]) -> None:
    """ASan + UBSan on a 16-bit-activation build of a residual CNN and on LeNet-5: no report, same bits."""
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    lower_and_check(
        model,
        (1, 1, 28, 28),
        "prune{sparsity=0.7},quant{bits=6},huffman",
        x,
        tmp_path,
        calib_npz(x),
        flags=SANITIZE,
        options=["act_bits=16", "weight_bits=10"],
    )
    images, _ = mnist()
    second = tmp_path / "lenet5"
    second.mkdir()
    lower_and_check(
        lenet("LeNet5"), (1, 1, 28, 28), "prune,share,huffman", images[:100], second, MNIST, flags=SANITIZE
    )


ARENA_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "model.h"

int main(void)
{
    unsigned char *arena = malloc(SQC_ARENA_BYTES + 2u);
    static sqc_act_t in[SQC_INPUT_SIZE], out[SQC_OUTPUT_SIZE];
    if (!arena || sqc_init() != -1 || sqc_run(in, out) != -1) { /* no arena yet */
        return 1;
    }
    if (sqc_init_arena(arena, SQC_ARENA_BYTES - 1u) != -1 || /* too small */
        sqc_init_arena(arena + 1, SQC_ARENA_BYTES) != -1) { /* odd address */
        return 2;
    }
    if (sqc_init_arena(arena, SQC_ARENA_BYTES) != 0 || sqc_init() != 0 || sqc_run(in, out) != 0) {
        return 3;
    }
    free(arena);
    return 0;
}
"""


@needs_cc
def test_dense_layout_caller_arena_and_default_makefile(tmp_path: Path) -> None:
    """``sparse=never`` multiplies pruned weights as zeros and gives the same bits; `make` builds.
    ``arena=caller``: no static arena; the application's memory (SQC_ARENA_BYTES) holds the decoded
    weights, RAM is reported without it, results are the same bits, and misuse is refused (ASan/UBSan)."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    x, _ = mnist()
    x = x[:200]
    sparse = lower_and_check(
        lenet("LeNet300"), (1, 1, 28, 28), "prune,share,huffman", x, tmp_path, MNIST, arena="caller"
    )
    header = (tmp_path / "c" / "model.h").read_text()
    assert (
        f"#define SQC_ARENA_BYTES {sparse['arena_bytes']}" in header
        and "#define SQC_ARENA_STATIC 0" in header
    )
    assert sparse["arena_bytes"] == sparse["ram"]["weight_arena"] > 0
    assert sparse["ram_bytes"] == sum(sparse["ram"].values()) - sparse["arena_bytes"]
    assert "sqc_arena[" not in (tmp_path / "c" / "model.c").read_text()
    (tmp_path / "c" / "driver.c").write_text(ARENA_DRIVER)
    assert CC is not None
    cmd = [CC, *SANITIZE, "-o", "driver", "driver.c", "model.c", "sqc_kernels.c"]
    built = subprocess.run(cmd, cwd=tmp_path / "c", capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    result = subprocess.run([str(tmp_path / "c" / "driver")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    dense_dir = tmp_path / "dense"
    dense_dir.mkdir()
    dense = lower_and_check(
        lenet("LeNet300"),
        (1, 1, 28, 28),
        "prune,share,huffman",
        x,
        dense_dir,
        MNIST,
        options=["sparse=never"],
    )
    assert dense["ram"]["weight_arena"] > sparse["ram"]["weight_arena"]
    assert dense["ram_bytes"] == sum(dense["ram"].values())  # the static arena counts
    result = subprocess.run(["make", "-s"], cwd=dense_dir / "c", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "-ffast-math" not in (dense_dir / "c" / "Makefile").read_text()


def test_cli_lower_c(tmp_path: Path, cli: Callable[..., object]) -> None:
    artifact = sqc.compress(lenet("LeNet300"), [(1, 1, 28, 28)], "prune,quant,huffman")
    source = tmp_path / "m.sqc"
    artifact.save(source)
    out = tmp_path / "c"
    result = cli(
        "lower",
        source,
        "--target",
        "c",
        "-o",
        out,
        "--calib",
        MNIST,
        "--json",
        "--option",
        "calib_samples=300",
    )
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    report = json.loads(result.out)  # type: ignore[attr-defined]
    assert report["rom_bytes"] > 0 and report["ram_bytes"] > 0
    assert report["accuracy"]["samples"] == 300
    assert {p.name for p in out.iterdir()} >= {"model.h", "model.c", "main.c", "Makefile", "sqc_kernels.c"}
    header = (out / "model.h").read_text()
    assert f"#define SQC_ROM_BYTES {report['rom_bytes']}" in header
    # one-line errors: no calibration data, unknown option, options for a target that takes none
    for argv, message in (
        ((), "needs --calib"),
        (("--calib", MNIST, "--option", "bogus=1"), "--option bogus: unknown option"),
        (("--calib", MNIST, "--option", "act_bits=12"), "act_bits=12: expected 8 or 16"),
    ):
        failed = cli("lower", source, "--target", "c", "-o", tmp_path / "x", "--force", *argv)
        assert failed.code == 1 and message in failed.err and failed.err.count("\n") == 1  # type: ignore[attr-defined]
    failed = cli("lower", source, "--target", "pytorch", "-o", tmp_path / "m.pt", "--calib", MNIST)
    assert failed.code == 1 and "takes no --calib" in failed.err  # type: ignore[attr-defined]


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc(x), dim=-1)


def test_unsupported_op_names_the_node(tmp_path: Path, calib_npz: Callable[[torch.Tensor], Path]) -> None:
    x = torch.rand(8, 16)
    artifact = sqc.compress(Unsupported().eval(), [(1, 16)], "quant")
    with pytest.raises(LowerError, match=r"node log_softmax \(log_softmax\): op not supported"):
        legalize(artifact.model, calib_npz(x))
