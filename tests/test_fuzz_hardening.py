"""What the fuzzing campaigns of the format 1.2 reader changed (``benchmarks/fuzz_container.py``).

* The rANS decoder has two paths, decision by decision in Python for few lanes and a round at a time in
  numpy for many; both must read exactly what the plain reference (``rans_reference``) reads, valid or
  damaged, down to the error message.
* A small valid stream can stand for many decisions; the few-lane path keeps such a file cheap.
* atheris (3.0.0) leaks the result of every instrumented comparison; the harness
  (``tests/fuzz/harness.py``) plugs it, and the plug must be right (one reference too many) or stay
  out of the way.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqc_rans_cases import random_case  # tests/models_pkg, on the path (conftest.py)

from sqc.errors import SqcFormatError
from sqc.formats import rans, rans_reference

ROOT = Path(__file__).resolve().parent.parent


def _outcome(decode: Callable[..., Any], *args: Any) -> Any:
    try:
        mask, symbols, index = decode(*args)
    except SqcFormatError as exc:
        return str(exc)
    return (None if mask is None else mask.tolist(), symbols.tolist(), index)


def _all_paths(
    data: bytes, shape: tuple[int, ...], sparse: bool, width: int, alphabet: int, mode: int
) -> tuple[Any, Any, Any]:
    numel = math.prod(shape)
    _, cols = rans.matrix_shape(shape)
    lanes = rans.lane_count(numel)
    inner = (data, numel, cols, lanes, sparse, width, alphabet, mode)

    def checked(path: Callable[..., Any]) -> Callable[..., Any]:
        """The path behind :func:`rans.decode`'s size checks (the reference makes the same ones)."""

        def run(*args: Any) -> Any:
            rans._check_sizes(numel, len(data), sparse, width)
            return path(*args)

        return run

    return (
        _outcome(checked(rans._decode_scalar), *inner),
        _outcome(checked(rans._decode_rounds), *inner),
        _outcome(rans_reference.decode, data, shape, sparse, width, alphabet, mode),
    )


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([(1,), (7,), (5, 9), (3, 2, 5), (40, 10), (2000,), (6, 700)]),
    st.integers(1, 7),
    st.booleans(),
    st.floats(0.0, 1.0),
    st.integers(0, 7),  # value mode | mask model << 2 (the mask model only where sparse)
    st.integers(0, 2**32 - 1),
)
@example((2, 8200), 3, True, 0.2, 1, 0)  # two lanes that meet in one column every round
@example((2, 8200), 3, True, 0.2, 5, 0)  # the same in mask model 1
@example((3, 5500), 5, False, 1.0, 2, 1)  # two lanes, dense
@example((6, 700), 1, False, 0.0, 0, 1)  # a stream too short for its decisions: refused by every path
def test_both_decoder_paths_read_what_the_reference_reads(
    shape: tuple[int, ...], width: int, sparse: bool, density: float, mode: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    numel = math.prod(shape)
    alphabet, mask, symbols = random_case(rng, shape, width, sparse, density)
    kept = symbols.size
    mode = min(mode & 3, width) | (mode >> 2 << 2 if sparse else 0)
    coded = rans.encode(mask, symbols, shape, width, mode)
    data = coded.data
    flipped = bytearray(data)
    bit = int(rng.integers(8 * len(data)))
    flipped[bit // 8] ^= 1 << (bit % 8)
    lanes = rans.lane_count(numel)
    noise = rng.integers(0, 256, 4 * lanes + 2 * int(rng.integers(0, len(data))), dtype=np.uint8).tobytes()
    for variant in (data, bytes(flipped), data[: int(rng.integers(len(data)))], noise):
        scalar, rounds, reference = _all_paths(variant, shape, sparse, width, alphabet, mode)
        assert scalar == reference
        assert rounds == reference
    scalar, _, _ = _all_paths(data, shape, sparse, width, alphabet, mode)
    if rans.fits(numel, kept, width, sparse, len(data)):  # beyond the decision cap writers fall back
        assert not isinstance(scalar, str) and scalar[1] == symbols.tolist()
    else:
        assert isinstance(scalar, str) and "decisions" in scalar


def test_the_round_path_still_decodes_many_lanes() -> None:
    """Above :data:`rans.SCALAR_LANES` lanes the numpy path runs (no reference here: it is slow)."""
    shape = (64, 4200)  # 268,800 positions, 17 lanes
    assert rans.lane_count(math.prod(shape)) > rans.SCALAR_LANES
    rng = np.random.default_rng(5)
    mask = rng.random(math.prod(shape)) < 0.02
    symbols = np.minimum(rng.geometric(0.5, int(mask.sum())) - 1, 6)
    coded = rans.encode(mask, symbols, shape, 3)
    got_mask, got, index = rans.decode(coded.data, shape, True, 3, 7, coded.mode)
    assert got_mask is not None and got_mask.tolist() == mask.tolist() and got.tolist() == symbols.tolist()
    assert index == coded.index_bytes


SMALL_BUSY_STREAM = bytes.fromhex("00041000700c373d28bf213dbd05d6e5582ddc2d")
"""What ``rans.encode`` writes for 16,384 16-bit codes, all 0 but the one at 100 (value mode 0; encoding
it takes seconds, so the bytes are kept here)."""


def test_a_small_valid_stream_of_many_decisions_is_refused() -> None:
    """A valid 20-byte stream standing for 262,144 binary decisions: what the encoder writes, so no
    check on the stream's own consistency can refuse it, and 1 MB of such streams took hours in numpy.
    The decision cap (FORMAT.md) refuses it before decoding, on every path; the container's writer never
    writes it (that tensor falls back to Huffman)."""
    shape = (rans.LANE_SPAN,)
    assert not rans.fits(rans.LANE_SPAN, rans.LANE_SPAN, 16, False, len(SMALL_BUSY_STREAM))
    with pytest.raises(SqcFormatError, match="262,144 binary decisions cannot be context-coded in 20 bytes"):
        rans.decode(SMALL_BUSY_STREAM, shape, False, 16, 1 << 16, 0)
    with pytest.raises(SqcFormatError, match="262,144 binary decisions"):
        rans_reference.decode(SMALL_BUSY_STREAM, shape, False, 16, 1 << 16, 0)


def test_a_symbol_outside_the_alphabet_is_refused_in_its_round() -> None:
    """Noise under a codebook of 3 entries (2-bit symbols): refused at the first symbol 3 on either
    path, not after the whole tensor (a valid stream never holds one, so the early refusal is safe)."""
    numel = 3 * rans.LANE_SPAN  # 3 lanes: both paths can run it
    noise = np.random.default_rng(0).integers(0, 256, 12 + 2000, dtype=np.uint8).tobytes()
    inner = (noise, numel, numel, 3, False, 2, 3, 0)
    for decode in (rans._decode_scalar, rans._decode_rounds):
        start = time.perf_counter()
        with pytest.raises(SqcFormatError, match="alphabet of 3"):
            decode(*inner)
        assert time.perf_counter() - start < 1.0


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None, reason="atheris (the fuzz extra) not installed"
)
def test_the_atheris_comparison_leak_plug(tmp_path: Path) -> None:
    """Instrumented numpy comparisons leak their result under atheris; after the plug they do not, and
    a comparison still returns its result (with the right reference count)."""
    (tmp_path / "compares.py").write_text("def less(a, b):\n    return a < b\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT / "tests" / "fuzz")!r}]
        import atheris, numpy as np
        with atheris.instrument_imports(include=["compares"]):
            import compares
        import harness

        a, b = np.arange(100), np.arange(100)[::-1].copy()
        result = compares.less(a, b)
        leaked = sys.getrefcount(result) - 2
        plugged = harness.plug_trace_cmp_leak()
        result = compares.less(a, b)
        assert sys.getrefcount(result) == 2, sys.getrefcount(result)
        assert result.tolist() == (a < b).tolist() and compares.less(1, 2) is True
        assert plugged == (leaked == 1) and harness.plug_trace_cmp_leak() == plugged
        print("leaked", leaked, "plugged", plugged)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "plugged" in run.stdout
