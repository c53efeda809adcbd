"""The C target's re-laid-out sparse linear layers (``sqc_csc_*`` at start-up; per inference
``sqc_linear_csc_*``, by input column, the default, or ``sqc_linear_csr_*``, by output row): bit-exact
with the integer simulator at every density, 0 % and 100 % included, with empty rows and columns, gaps
of more than 255 rows inside a column (zero-weight steps), zero inputs (whose columns the kernel skips),
8- and 16-bit activations, under ASan/UBSan."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

import sqc
from sqc.formats import sparse_index
from sqc.targets.c import conv_vector, csc_entries, write_project
from sqc.targets.integer import Linear, Stream, Weights
from sqc.targets.legalize import LowerOptions, legalize
from sqc.targets.legalize.weights import _best_index, _stream
from sqc.targets.simulate import quantize_input, simulate
from tests.test_target_c import (
    MNIST,
    SANITIZE,
    STRICT,
    build,
    lenet,
    lower_and_check,
    mnist,
    needs_cc,
    run_binary,
)


def mlp() -> nn.Module:
    """64 -> 600 -> 40 -> 10. fc1 has empty rows (10..19), an empty column (5) and a column (7) whose
    only weights sit in rows 0, 300 and 599 (gaps of 300 rows: steps of 255 carrying a zero weight)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 600), nn.Linear(600, 40), nn.Linear(40, 10))  # no ReLU: no dead layer
    with torch.no_grad():
        w = model[0].weight
        w[10:20] = 0.0
        w[:, 5] = 0.0
        w[:, 7] = 0.0
        w[[0, 300, 599], 7] = torch.tensor([2.0, -2.0, 2.0])
    return model.eval()


def inputs(n: int) -> torch.Tensor:
    """Half of the inputs are zero (their columns are skipped), the rest uniform in [-1, 1)."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(n, 64, generator=g) * 2 - 1
    return torch.where(torch.rand(n, 64, generator=g) < 0.5, torch.zeros_like(x), x)


def emptied(w: Weights) -> Weights:
    """The same layer with every weight pruned (0 % density): no symbol, no index entry. Legalization
    cannot produce it from a model (an all-zero layer gets no usable weight format), so the test builds
    it from a real layer, keeping its epilogue."""
    none = np.zeros(0, dtype=np.int64)
    mask = np.zeros(w.values.size, dtype=bool)
    return replace(
        w,
        values=np.zeros_like(w.values),
        symbols=_stream(none, w.symbols.alphabet, w.symbols.width, True),
        index=_best_index(mask, True)[1],
        runtime_index=sparse_index.encode_gaps(mask, 8).astype(np.uint8),
    )


def check(
    pipeline: str,
    tmp_path,
    options: list[str] | None = None,
    flags: list[str] = STRICT,
    empty_last: bool = False,
    linear: str = "auto",
) -> list[int]:
    x = inputs(200)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    artifact = sqc.compress(mlp(), [(1, 64)], pipeline)
    opts, _ = LowerOptions.parse(options)
    program = legalize(artifact.model, calib, opts)
    if empty_last:
        last = [op for op in program.ops if isinstance(op, Linear)][-1]
        last.weights = emptied(last.weights)
    report = write_project(program, tmp_path / "c", force=True, linear=linear)
    linears = [op for op in program.ops if isinstance(op, Linear)]
    for op in linears:  # every layer here takes the by-column layout
        rows, cols = op.weights.shape
        assert csc_entries(op.weights, cols, rows, by_row=linear == "row") is not None
    assert report["ram"]["relayout_scratch"] > 0
    got = run_binary(build(tmp_path / "c", flags), quantize_input(program, x), program.act_bits, tmp_path)
    want = simulate(program, x).reshape(x.shape[0], -1).numpy()
    assert np.array_equal(got, want)
    return [op.weights.kept for op in linears]


@needs_cc
@pytest.mark.parametrize("linear", ["column", "row"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_csc_bit_exact_across_densities(sparsity: float, linear: str, tmp_path) -> None:
    s = sparsity
    kept = check(f"prune{{per_layer=0:{s};1:{s};2:{s}}},share{{bits=6}}", tmp_path, linear=linear)
    assert 0 < kept[0] < 600 * 64


@needs_cc
@pytest.mark.parametrize("linear", ["column", "row"])
def test_csc_full_and_empty_layers(linear: str, tmp_path) -> None:
    """100 % density (sparse=always on unpruned layers) and 0 % (a layer with no weight left)."""
    kept = check("quant", tmp_path, options=["sparse=always"], linear=linear)
    assert kept == [600 * 64, 40 * 600, 10 * 40]
    pipeline = "prune{per_layer=0:0.5;1:0.5;2:0.5},share{bits=6},huffman"
    kept = check(pipeline, tmp_path, empty_last=True, linear=linear)
    assert kept[2] == 0


@needs_cc
def test_csc_codebook_int16_and_sanitizers(tmp_path) -> None:
    """Shared weights (codebook), 16-bit activations and wide weights, built with ASan + UBSan."""
    check("prune{per_layer=0:0.8;1:0.8;2:0.8},share{bits=5},huffman", tmp_path, flags=SANITIZE)
    check("prune{per_layer=0:0.8;1:0.8;2:0.8},share{bits=5}", tmp_path, flags=SANITIZE, linear="row")
    check(
        "prune{per_layer=0:0.8;1:0.8;2:0.8},share{bits=10}", tmp_path, options=["act_bits=16"], flags=SANITIZE
    )


def test_csc_entries_count_the_zero_weight_steps() -> None:
    """The planned entry count: one per runtime entry plus one per 255 rows skipped within a column."""
    mask = np.zeros((600, 3), dtype=bool)
    mask[[0, 300, 599], 0] = True  # gaps 300 and 299 within column 0: one extra step each
    mask[256, 1] = True  # first row 256 from row 0: one extra step
    mask[:, 2] = True  # a full column: no row-major gap reaches 255 (no filler entry)
    flat = mask.reshape(-1)
    weights = Weights(
        name="w",
        shape=(600, 3),
        values=flat.astype(np.int64).reshape(600, 3),
        frac=(0,) * 600,
        value_bits=8,
        codebook=None,
        offset=-128,
        sparse=True,
        index_bits=8,
        symbols=Stream("packed", 8, int(flat.sum()), 256, b""),
        index=None,
        origin="test",
        runtime_index=sparse_index.encode_gaps(flat, 8).astype(np.uint8),
    )
    assert weights.runtime_index is not None and weights.runtime_index.size == 604
    assert csc_entries(weights, 3, 600) == 604 + 3


@needs_cc
@pytest.mark.parametrize(
    "flags",
    [
        [*STRICT, "-DSQC_NO_AVX2"],  # the SSE2 int16 convolution and int32 epilogues only
        [*STRICT, "-U__SSE2__"],  # the portable C loops only
        SANITIZE,  # run-time AVX2 dispatch where the processor has it
    ],
    ids=["sse2", "portable", "sanitized"],
)
def test_vector_paths_bit_exact_on_lenet5(flags: list[str], tmp_path) -> None:
    """LeNet-5 (wide 8-bit convolutions, unit-multiplier epilogues, by-column linear layers) gives the
    simulator's bits whichever of the vector paths the build takes."""
    images, _ = mnist()
    lower_and_check(
        lenet("LeNet5"), (1, 1, 28, 28), "prune,share,huffman", images[:200], tmp_path, MNIST, flags
    )


class Geometries(nn.Module):
    """Every convolution geometry the SSE2/AVX2 path flattens into unpadded stride-1 runs: padding,
    stride 2 with and without padding, a stride (3) that does not divide the padded input, dilation with
    an asymmetric kernel and padding, a stride on rows only, grouped and depthwise, 1x1 with stride;
    non-square planes."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),  # 33x37
            nn.Conv2d(8, 8, 3, stride=2, padding=1),  # 17x19
            nn.Conv2d(8, 8, 3, stride=2),  # 8x9
            nn.Conv2d(8, 8, (1, 3), padding=(0, 2), dilation=2),  # 8x9
            nn.Conv2d(8, 8, (3, 1), stride=(2, 1)),  # 3x9: strided rows, whole unpadded columns
            nn.Conv2d(8, 8, 3, padding=1, groups=4),  # 3x9
            nn.Conv2d(8, 8, 3, stride=3, padding=2, groups=8),  # 2x4
            nn.Conv2d(8, 8, 1, stride=2),  # 1x2
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.convs(x), 1))


def test_conv_vector_layout_reads_the_padded_strided_input() -> None:
    """The int16 copy's layout (sqc_widen_conv) and the tap offsets (conv_vector): every valid output
    of every tap reads, at offset + oy * qw + ox, the padded input at (oy sh + ky dh, ox sw + kx dw)."""
    rng = np.random.default_rng(0)
    for (h, w), (kh, kw), stride, pad, dil in [
        ((7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
        ((8, 11), (3, 3), (2, 2), (1, 1), (1, 1)),
        ((9, 10), (5, 3), (3, 2), (2, 0), (1, 2)),
        ((6, 6), (1, 1), (2, 2), (0, 0), (1, 1)),
    ]:
        (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        geo = conv_vector(2, (h, w), (oh, ow), (kh, kw), stride, pad, dil)
        x = rng.integers(-128, 128, size=(2, h, w))
        padded = np.pad(x, ((0, 0), (ph, ph + sh), (pw, pw + sw)))
        block = sh * sw * geo.qh * geo.qw
        copy = np.zeros(geo.size, dtype=np.int64)
        for ch in range(2):
            for py in range(sh):
                for px in range(sw):
                    phase = padded[ch, py::sh, px::sw][: geo.qh, : geo.qw]
                    at = ch * block + (py * sw + px) * geo.qh * geo.qw
                    copy[at : at + geo.qh * geo.qw] = phase.reshape(-1)
        assert geo.wide % 16 == 0 and geo.wide >= (oh - 1) * geo.qw + ow
        for ch in range(2):
            for t, off in enumerate(geo.taps):
                ky, kx = divmod(t, kw)
                assert ch * block + off + geo.wide <= geo.size
                for oy in range(oh):
                    got = copy[ch * block + off + oy * geo.qw :][:ow]
                    want = padded[ch, oy * sh + ky * dh, kx * dw : kx * dw + (ow - 1) * sw + 1 : sw]
                    assert np.array_equal(got, want)


@needs_cc
@pytest.mark.parametrize("pipeline", ["prune{sparsity=0.6},quant,huffman", "quant"])
@pytest.mark.parametrize(
    "flags",
    [
        STRICT,  # run-time AVX2 dispatch where the processor has it
        [*STRICT, "-DSQC_NO_AVX2"],  # SSE2 only
        [*STRICT, "-U__SSE2__"],  # the portable C loops only
        SANITIZE,
    ],
    ids=["avx2", "sse2", "portable", "sanitized"],
)
def test_padded_and_strided_convs_bit_exact_on_every_path(flags: list[str], pipeline: str, tmp_path) -> None:
    """Sparse and dense 8-bit convolutions of every geometry give the simulator's bits on each path."""
    torch.manual_seed(5)
    x = torch.rand(48, 3, 33, 37, generator=torch.Generator().manual_seed(6)) * 2 - 1
    calib = tmp_path / "calib.npz"
    np.savez(calib, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    lower_and_check(Geometries().eval(), (1, 3, 33, 37), pipeline, x, tmp_path, calib, flags)
    model_c = (tmp_path / "c" / "model.c").read_text()
    assert model_c.count("_vtaps[") == 8  # every convolution has the vector geometry
