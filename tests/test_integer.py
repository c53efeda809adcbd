"""Integer semantics: the simulator against float PyTorch, the rounding rule, and the C stream decoders
and requantization against their Python definitions (property tests)."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqc
from sqc.formats import bitpack, huffman, rans
from sqc.targets.c import plan_activations
from sqc.targets.integer import Conv, Linear, rshift_round
from sqc.targets.legalize import LowerOptions, legalize
from sqc.targets.simulate import Simulator, quantize_input
from sqc.targets.simulate import rshift_round as rshift_round_torch

CC = shutil.which("cc")


class ConvLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, stride=2, groups=3)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


def _calib(tmp_path: Path, x: torch.Tensor) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, x_val=x.numpy(), y_val=np.zeros(x.shape[0], dtype=np.int64))
    return path


@pytest.mark.parametrize("pipeline", ["quant{bits=8}", "quant{bits=6 granularity=channel}", "share{bits=4}"])
def test_conv_and_linear_match_float_within_half_an_lsb(tmp_path: Path, pipeline: str) -> None:
    """Each layer, fed the same integer input, equals float PyTorch on the dequantized weights and input
    to within half a step of its output format (the one rounding), wherever it does not saturate."""
    torch.manual_seed(0)
    model = ConvLinear().eval()
    x = torch.rand(40, 3, 8, 8) * 2 - 1
    artifact = sqc.compress(model, [(1, 3, 8, 8)], pipeline)
    program = legalize(artifact.model, _calib(tmp_path, x), LowerOptions(act_bits=16))
    sim = Simulator(program)
    codes = quantize_input(program, x)
    for op in program.ops:
        src, out = program.tensors[op.inputs[0]], program.tensors[op.output]
        xin = codes.reshape(x.shape[0], *src.shape)
        y = sim.step(op, [xin], out, x.shape[0]).reshape(x.shape[0], *out.shape)
        w = op.weights
        weights = torch.from_numpy(w.values).double() * torch.tensor(
            [2.0**-f for f in w.frac]
        ).double().reshape((-1,) + (1,) * (len(w.shape) - 1))
        bias = torch.from_numpy(op.requant.bias).double() * torch.tensor(
            [2.0 ** -(src.fmt.frac + f) for f in w.frac]
        )
        xf = xin.double() * 2.0**-src.fmt.frac
        if isinstance(op, Conv):
            ref = F.conv2d(xf, weights, bias, op.stride, op.padding, op.dilation, op.groups)
        else:
            assert isinstance(op, Linear)
            ref = F.linear(xf, weights, bias)
        step = 2.0**-out.fmt.frac
        inside = (y > out.fmt.qmin) & (y < out.fmt.qmax)
        error = (y.double() * step - ref).abs()[inside]
        assert float(error.max()) <= step / 2, f"{op.name}: {float(error.max())} > {step / 2}"
        assert float(inside.double().mean()) > 0.95
        codes = y


def test_weights_are_the_records_exactly(tmp_path: Path) -> None:
    """Legalized integer weights times their step are the IR's decoded weights, bit for bit."""
    torch.manual_seed(0)
    artifact = sqc.compress(ConvLinear().eval(), [(1, 3, 8, 8)], "prune{sparsity=0.5},quant{bits=7},huffman")
    program = legalize(artifact.model, _calib(tmp_path, torch.rand(8, 3, 8, 8)))
    for w in program.weights:
        steps = torch.tensor([2.0**-f for f in w.frac]).reshape((-1,) + (1,) * (len(w.shape) - 1))
        value = torch.from_numpy(w.values).double() * steps
        assert torch.equal(value.float(), artifact.model.tensors[w.name].decode())


def test_activation_plan_never_overlaps_live_tensors(tmp_path: Path, firenet: nn.Module) -> None:
    artifact = sqc.compress(firenet, [(1, 3, 16, 16)], "quant")
    program = legalize(artifact.model, _calib(tmp_path, torch.rand(8, 3, 16, 16)))
    offsets, total = plan_activations(program)
    for op in program.ops:
        out = program.tensors[op.output]
        span = (offsets[out.slot], offsets[out.slot] + out.numel)
        assert span[1] <= total
        for name in op.inputs:
            t = program.tensors[name]
            other = (offsets[t.slot], offsets[t.slot] + t.numel)
            assert span[1] <= other[0] or other[1] <= span[0], f"{op.name} overwrites its input {name}"


@given(st.integers(-(2**46), 2**46), st.integers(-16, 40))
def test_rshift_round_is_round_half_up(value: int, shift: int) -> None:
    from fractions import Fraction

    exact = Fraction(value, 1) / Fraction(2) ** shift
    want = int((exact + Fraction(1, 2)).__floor__())
    assert rshift_round(value, shift) == want
    assert int(rshift_round_torch(torch.tensor([value]), shift)[0]) == want


# ------------------------------------------------------------------------------------------------
# the C decoders and requantization, against Python

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sqc_kernels.h"

static uint8_t data[1 << 20];
static int16_t values[1 << 16];
static uint16_t scratch[1 << 16];
static uint8_t entries[1 << 16];
static uint32_t words[1 << 18];

int main(int argc, char **argv)
{
    size_t n = fread(data, 1, sizeof(data), stdin);
    if (argc == 2 && strcmp(argv[1], "requant") == 0) {
        size_t i;
        for (i = 0; i + 16 <= n; i += 16) {
            int64_t t;
            int32_t s, lo, hi, r;
            memcpy(&t, data + i, 8);
            memcpy(&s, data + i + 8, 4);
            lo = SQC_ACT_MIN;
            hi = SQC_ACT_MAX;
            r = sqc_requant(t, s, lo, hi);
            fwrite(&r, 4, 1, stdout);
        }
        return 0;
    }
    if (argc == 9 && strcmp(argv[1], "rans") == 0) { /* rans numel cols sparse width alphabet mode count */
        sqc_rans_t r;
        sqc_sink_t sink;
        uint32_t count = (uint32_t)atol(argv[8]);
        memset(&sink, 0, sizeof(sink));
        sink.w16 = values;
        sink.cap = count;
        r.data = data;
        r.size = (uint32_t)n;
        r.numel = (uint32_t)atol(argv[2]);
        r.cols = (uint32_t)atol(argv[3]);
        r.sparse = (uint8_t)atoi(argv[4]);
        r.width = (uint8_t)atoi(argv[5]);
        r.alphabet = (uint32_t)atol(argv[6]);
        r.mode = (uint8_t)atoi(argv[7]);
        if (count > (1u << 16) ||
            sqc_rans_decode(&r, &sink, r.sparse ? entries : 0, count, words, 1u << 18) != 0) {
            return 3;
        }
        if (r.sparse) {
            fwrite(entries, 1, count, stdout);
        }
        fwrite(values, 2, count, stdout);
        return 0;
    }
    {
        sqc_stream_t s;
        sqc_sink_t sink;
        memset(&sink, 0, sizeof(sink));
        sink.w16 = values;
        sink.cap = 1u << 16;
        s.data = data;
        s.size = (uint32_t)n;
        s.kind = (uint8_t)atoi(argv[1]);
        s.width = (uint8_t)atoi(argv[2]);
        s.count = (uint32_t)atol(argv[3]);
        if (sqc_decode(&s, &sink, scratch, 1u << 16) != 0) {
            return 3;
        }
        fwrite(values, 2, s.count, stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CC is None:
        pytest.skip("no system C compiler (cc) on PATH")
    work = tmp_path_factory.mktemp("harness")
    for name in ("sqc_kernels.c", "sqc_kernels.h", "sqc_weights.inc"):
        text = resources.files("sqc.targets.c").joinpath("templates", name).read_text(encoding="utf-8")
        (work / name).write_text(text)
    (work / "model.h").write_text(
        "#include <stdint.h>\ntypedef int16_t sqc_act_t;\n#define SQC_ACT_BITS 16\n"
    )
    (work / "harness.c").write_text(HARNESS)
    flags = [
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
    ]
    result = subprocess.run(
        [CC, *flags, "-o", "harness", "harness.c", "sqc_kernels.c"], cwd=work, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return work / "harness"


def _decode(harness: Path, data: bytes, kind: int, width: int, count: int) -> np.ndarray:
    result = subprocess.run(
        [str(harness), str(kind), str(width), str(count)], input=data, capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()
    return np.frombuffer(result.stdout, dtype=np.int16).astype(np.int64)


symbol_streams = st.integers(1, 12).flatmap(
    lambda bits: st.tuples(
        st.just(bits),
        st.lists(st.integers(0, (1 << bits) - 1), min_size=1, max_size=400)
        | st.lists(st.sampled_from([0, 1, (1 << bits) - 1]), min_size=1, max_size=400),
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbol_streams)
def test_c_decoders_match_python(harness: Path, case: tuple[int, list[int]]) -> None:
    """The emitted C decoders read sqc's packed and canonical-Huffman streams as Python writes them."""
    bits, symbols = case
    arr = np.array(symbols, dtype=np.int64)
    packed = bitpack.pack(arr, bits, False)
    assert np.array_equal(_decode(harness, packed, 0, bits, arr.size), arr)
    coded = huffman.serialize(huffman.encode(arr, 1 << bits))
    assert np.array_equal(_decode(harness, coded, 1, bits, arr.size), arr)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(-(2**46), 2**46), st.integers(-16, 40)), min_size=1, max_size=200))
def test_c_requant_matches_the_rule(harness: Path, cases: list[tuple[int, int]]) -> None:
    """One rounding rule everywhere: C's requantization equals round-half-up then saturation."""
    data = b"".join(np.array([t], "<i8").tobytes() + np.array([s, 0], "<i4").tobytes() for t, s in cases)
    result = subprocess.run([str(harness), "requant"], input=data, capture_output=True, check=True)
    got = np.frombuffer(result.stdout, dtype="<i4")
    want = [max(-32768, min(32767, rshift_round(t, s))) for t, s in cases]
    assert got.tolist() == want


def runtime_entries(mask: np.ndarray | None, values: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """The C runtime's sparse layout, written independently of the C code: per kept position its gap
    from the previous one, gaps of 255 or more split off as entries of 254 carrying a zero weight."""
    if mask is None:
        return None, values
    entries: list[int] = []
    weights: list[int] = []
    last = -1
    for pos, value in zip(np.flatnonzero(mask).tolist(), values.tolist(), strict=True):
        gap = pos - last - 1
        while gap >= 255:
            entries.append(254)
            weights.append(0)
            gap -= 255
        entries.append(gap)
        weights.append(value)
        last = pos
    return np.array(entries, dtype=np.int64), np.array(weights, dtype=np.int64)


def _rans_case(
    harness: Path,
    mask: np.ndarray | None,
    symbols: np.ndarray,
    shape: tuple[int, ...],
    width: int,
    mask_mode: int | None = None,
) -> None:
    """The C decoder against ``rans.decode`` on one tensor (``mask_mode``: force that mask model)."""
    coded = rans.encode(mask, symbols, shape, width)
    if mask_mode is not None and mask is not None:
        coded = rans.encode(mask, symbols, shape, width, coded.value_mode | mask_mode << 2)
    numel = int(np.prod(shape))
    _, cols = rans.matrix_shape(shape)
    py_mask, py_symbols, _ = rans.decode(coded.data, shape, mask is not None, width, 1 << width, coded.mode)
    want_entries, want_weights = runtime_entries(py_mask, py_symbols)
    count = numel if want_entries is None else int(want_entries.size)
    argv = [numel, cols, int(mask is not None), width, 1 << width, coded.mode, count]
    result = subprocess.run([str(harness), "rans", *map(str, argv)], input=coded.data, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout
    if want_entries is not None:
        assert np.array_equal(np.frombuffer(out[:count], dtype=np.uint8), want_entries)
        out = out[count:]
    assert np.array_equal(np.frombuffer(out, dtype=np.int16).astype(np.int64), want_weights)
    # a truncated stream or a wrong count is refused, never read out of bounds (ASan would abort)
    for data, n in ((coded.data[:-2], count), (coded.data, count + 1)):
        argv[-1] = n
        bad = subprocess.run([str(harness), "rans", *map(str, argv)], input=data, capture_output=True)
        assert bad.returncode == 3, bad.stderr.decode()


rans_tensors = st.tuples(
    st.integers(1, 6),  # rows
    st.integers(1, 90),  # columns
    st.integers(1, 9),  # symbol width
    st.sampled_from([None, 0.02, 0.3, 0.9]),  # density (None: dense, no mask)
    st.integers(0, 2**32 - 1),  # seed
    st.sampled_from([0, 1]),  # mask model (format 1.5 adds 1)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rans_tensors)
def test_c_rans_decoder_matches_python(
    harness: Path, case: tuple[int, int, int, float | None, int, int]
) -> None:
    """The emitted C decoder of the context-coded layout reads what formats/rans.py writes: the same mask
    (as runtime entries) and symbols, every value mode and both mask models, skewed and uniform symbols."""
    rows, cols, width, density, seed, mask_mode = case
    rng = np.random.default_rng(seed)
    shape = (rows, cols) if rows > 1 else (cols,)
    mask = None if density is None else rng.random(rows * cols) < density
    kept = rows * cols if mask is None else int(mask.sum())
    skew = rng.random() < 0.5
    high = 1 << width
    symbols = np.minimum(rng.geometric(0.5, kept) - 1, high - 1) if skew else rng.integers(0, high, kept)
    _rans_case(harness, mask, symbols.astype(np.int64), shape, width, mask_mode)


def test_c_rans_decoder_lanes_and_long_gaps(harness: Path) -> None:
    """Several interleaved lanes (numel > 2^14) with gaps longer than 255 and 510 positions, rows that
    cross lane boundaries, and a dense multi-lane tensor."""
    rng = np.random.default_rng(7)
    shape = (3, 12_001)
    mask = rng.random(36_003) < 0.004
    mask[:700] = False  # a gap spanning two filler lengths at the start
    mask[12_000:12_900] = False
    for mask_mode in (0, 1):
        _rans_case(harness, mask, rng.integers(0, 16, int(mask.sum())), shape, 4, mask_mode)
    _rans_case(harness, None, rng.integers(0, 4, 20_000), (4, 5_000), 2)
