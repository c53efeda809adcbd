"""Integer ops for today's models (issue 18): every new op lowers, and the PyTorch integer simulator, the
C target and the HLS C simulation agree on every output code on random inputs (``targets/INTEGER.md``).

Also the accuracy the integer program keeps against the float model, which these tests print and bound
loosely (random weights: a gross error, not a tuned figure, is what they catch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sqc_int_check import MISSING, simulate_tensor, three_way

import sqc
from sqc.targets.integer import IntProgram, LayerNorm, Lut, LutInterp, Softmax, SoftmaxPoly, Strided
from sqc.targets.legalize import LowerOptions, legalize
from sqc.targets.simulate import Simulator, dequantize_output, simulate

needs_tools = pytest.mark.skipif(bool(MISSING), reason=f"needs {MISSING}")


def lower(
    model: nn.Module, x: torch.Tensor, tmp: Path, pipeline: str = "quant", options: list[str] | None = None
) -> IntProgram:
    """Compress ``model`` (example shape of ``x``), calibrate on ``x`` and legalize."""
    source = tmp / "model.sqc"
    sqc.compress(model.eval(), [(1, *x.shape[1:])], pipeline).save(source, force=True)
    calib = tmp / "calib.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    opts, _ = LowerOptions.parse(options or [])
    return legalize(source, calib, opts)


def float_error(program: IntProgram, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |int - float| / max |float|, top-1 agreement) of the program's dequantized outputs."""
    got = dequantize_output(program, simulate(program, x)).reshape(x.shape[0], -1)
    with torch.no_grad():
        ref = model.eval()(x).to(torch.float64).reshape(x.shape[0], -1)
    rel = float((got - ref).abs().max() / ref.abs().max())
    return rel, float((got.argmax(-1) == ref.argmax(-1)).double().mean())


class ShapeOps(nn.Module):
    """permute, slicing with steps, transpose, a rank-5 reshape, integer indexing with Ellipsis, None."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x)).permute(0, 2, 3, 1)  # (N, 6, 8, 8) channels-last
        y = y[:, 1:5, ::2, 2:]  # (N, 4, 4, 6)
        y = y.transpose(1, 3).reshape(-1, 2, 3, 4, 4)  # (N, 2, 3, 4, 4)
        y = y[:, 1, ..., None, 1:3]  # (N, 3, 4, 1, 2)
        return self.fc(y.flatten(1))


class ExportedShapeOps(nn.Module):
    """The same moves as ATen ops (hardswish makes sqc capture through torch.export): slice, select,
    expand, unsqueeze; and a broadcasting product."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.fc = nn.Linear(8 * 3 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))  # (N, 8, 6, 8)
        row = y[:, :, 2]  # select: (N, 8, 8)
        gate = torch.sigmoid(row[:, :, 3:4]).unsqueeze(2)  # (N, 8, 1, 1)
        y = y[:, :, 1:6:2] * gate.expand(-1, -1, 3, 8)  # (N, 8, 3, 8)
        return self.fc(y.flatten(1))


@needs_tools
@pytest.mark.parametrize("model", [ShapeOps, ExportedShapeOps])
def test_shape_ops_bit_exact(model: type[nn.Module], tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = model().eval()
    x = torch.randn(64, 4, 6, 8)
    program = lower(net, x, tmp_path)
    assert any(isinstance(op, Strided) for op in program.ops)
    three_way(program, x, tmp_path)
    rel, agree = float_error(program, net, x)
    print(f"\n{model.__name__}: max error {rel:.2%} of the output range, top-1 agreement {agree:.0%}")
    assert agree >= 0.8


class Activation(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.act = act
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


ACTIVATIONS = {
    "hardswish": nn.Hardswish(),
    "hardsigmoid": nn.Hardsigmoid(),
    "silu": nn.SiLU(),
    "sigmoid": nn.Sigmoid(),
    "tanh": nn.Tanh(),
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
}


@needs_tools
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_tables_bit_exact(name: str, bits: int, tmp_path: Path) -> None:
    """8-bit activations: the function is a 256-entry table rounded from float64, so the op itself
    errs by at most half an output step (where nothing saturates). 16-bit: 1025 knots, linearly
    interpolated; the op's error over every input code is printed and bounded. C and HLS read the same
    table."""
    torch.manual_seed(0)
    net = Activation(ACTIVATIONS[name]).eval()
    x = torch.randn(64, 3, 8, 8)
    program = lower(net, x, tmp_path, options=[f"act_bits={bits}"])
    (op,) = [op for op in program.ops if isinstance(op, (Lut, LutInterp))]
    src, dst = program.tensors[op.inputs[0]].fmt, program.tensors[op.output].fmt
    codes = torch.arange(src.qmin, src.qmax + 1, dtype=torch.int64)
    exact = ACTIVATIONS[name].double()(codes * 2.0**-src.frac) * 2.0**dst.frac
    inside = (exact >= dst.qmin) & (exact <= dst.qmax)
    got = Simulator(program).step(op, [codes.reshape(1, -1)], program.tensors[op.output], 1).reshape(-1)
    error = float((got.double() - exact)[inside].abs().max())
    print(f"\n{name} ({bits}-bit): op error <= {error:.2f} output LSB", end="")
    assert error <= (0.5 if bits == 8 else 1.5)
    three_way(program, x, tmp_path)
    rel, agree = float_error(program, net, x)
    print(f"; model max error {rel:.2%} of the output range, top-1 agreement {agree:.0%}")
    assert agree >= 0.8


class ZeroScaleBN(nn.Module):
    """Batch norms with channels whose scale is zero (pruned by network slimming): after a conv (folded,
    then ReLU) and standalone after a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x)))
        y = self.bn2(y + self.conv2(y))
        return self.fc(y.flatten(1))


@needs_tools
def test_zero_scale_batch_norm_folds_to_its_constant(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ZeroScaleBN().eval()
    with torch.no_grad():
        for bn in (net.bn, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight[[1, 4]] = 0.0
            bn.bias.uniform_(-0.5, 0.5)
        net.conv.weight[4] = 0.0  # a pruned filter too: its accumulator is always 0
    x = torch.randn(64, 3, 8, 8)
    program = lower(net, x, tmp_path)
    assert any("zero scale" in note for note in program.notes)
    three_way(program, x, tmp_path)
    # the constant channels output beta (after the ReLU for the folded one), exactly as float does
    sim_bn = simulate_tensor(program, x, "bn2")
    want = net.bn2.bias[[1, 4]].double()
    fmt = program.tensors["bn2"].fmt
    assert torch.equal(
        sim_bn[:, [1, 4]], torch.round(want * 2.0**fmt.frac).reshape(1, 2, 1, 1).expand(64, 2, 8, 8)
    )
    rel, agree = float_error(program, net, x)
    print(f"\nzero-scale BN: max error {rel:.2%} of the output range, top-1 agreement {agree:.0%}")
    assert agree >= 0.8


class Norm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 32)
        self.norm = nn.LayerNorm(32)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x))


@needs_tools
@pytest.mark.parametrize("bits", [8, 16])
def test_layer_norm_integer_only(bits: int, tmp_path: Path) -> None:
    """LayerNorm over rows of a (N, 8, 32) tensor: integer mean and variance, Newton's isqrt, a 16-bit
    normalized value; its error against float LayerNorm of the same input codes is printed and bounded
    (in output LSBs), and simulator = C = HLS csim."""
    torch.manual_seed(0)
    net = Norm().eval()
    x = torch.randn(64, 8, 32)
    program = lower(net, x, tmp_path, options=[f"act_bits={bits}"])
    (op,) = [op for op in program.ops if isinstance(op, LayerNorm)]
    src, dst = program.tensors[op.inputs[0]].fmt, program.tensors[op.output].fmt
    codes = simulate_tensor(program, x, op.inputs[0])
    got = Simulator(program).step(op, [codes], program.tensors[op.output], x.shape[0]).reshape(codes.shape)
    want = F.layer_norm(
        codes.double() * 2.0**-src.frac,
        (32,),
        net.norm.weight.detach().double(),
        net.norm.bias.detach().double(),
    )
    exact = want * 2.0**dst.frac
    inside = (exact >= dst.qmin) & (exact <= dst.qmax)
    error = float((got.double() - exact)[inside].abs().max())
    print(f"\nLayerNorm ({bits}-bit): error <= {error:.2f} output LSB")
    assert error <= 1.0
    three_way(program, x, tmp_path)


class Probabilities(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc(x) * 2.0, dim=-1)


@needs_tools
@pytest.mark.parametrize("bits", [8, 16])
def test_softmax(bits: int, tmp_path: Path) -> None:
    """Softmax over rows: the exp table at 8 bits, I-BERT's integer exp polynomial at 16 bits; the error
    against float softmax of the same input codes is printed and bounded, and simulator = C = HLS."""
    torch.manual_seed(0)
    net = Probabilities().eval()
    x = torch.randn(64, 4, 16)
    program = lower(net, x, tmp_path, options=[f"act_bits={bits}"])
    (op,) = [op for op in program.ops if isinstance(op, (Softmax, SoftmaxPoly))]
    src, dst = program.tensors[op.inputs[0]].fmt, program.tensors[op.output].fmt
    codes = simulate_tensor(program, x, op.inputs[0])
    got = simulate_tensor(program, x, op.output).double()
    exact = F.softmax(codes.double() * 2.0**-src.frac, dim=-1) * 2.0**dst.frac
    error = float((got - exact).abs().max())
    print(f"\nsoftmax ({bits}-bit): error <= {error:.2f} output LSB = {error * 2.0**-dst.frac:.2e}")
    assert error <= (1.0 if bits == 8 else 32.0)
    three_way(program, x, tmp_path)
