"""The rANS coder's C core (``formats/_rans_native.c``) against its numpy/Python paths, and the decision cap.

The C core must be a drop-in: the same bytes written, the same mask and symbols read, the same
``SqcFormatError`` message for every damaged stream. Each case runs twice, once with the C core and once
with ``rans._native`` set to None (what ``SQC_RANS=python`` or a missing extension gives). The cap on
binary decisions per stream byte (FORMAT.md) is refused by every reader path and honoured by both
writers (the container's and the C target's), which fall back to Huffman/packed beyond it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqc_rans_cases import random_case  # tests/models_pkg, on the path (conftest.py)

from sqc.errors import SqcFormatError
from sqc.formats import rans, rans_reference
from sqc.formats.tensor_codec import encode_tensor
from sqc.ir.records import TensorState

NATIVE = rans._native
needs_native = pytest.mark.skipif(NATIVE is None, reason="the C core is not built (or SQC_RANS=python)")


def test_the_c_core_is_built_and_used() -> None:
    """``pip install .`` compiles it; only SQC_RANS=python turns it off."""
    if os.environ.get("SQC_RANS", "").lower() == "python":
        assert rans.IMPLEMENTATION == "python" and NATIVE is None
    else:
        assert rans.IMPLEMENTATION == "native" and NATIVE is not None


def _outcome(call: Any) -> Any:
    try:
        result = call()
    except SqcFormatError as exc:
        return f"SqcFormatError: {exc}"
    if isinstance(result, rans.Coded):
        return result
    mask, symbols, index = result
    return (None if mask is None else mask.tolist(), symbols.tolist(), index)


def _both(monkeypatch: pytest.MonkeyPatch, call: Any) -> tuple[Any, Any]:
    """``call()`` with the C core, then with the numpy/Python paths."""
    native = _outcome(call)
    with monkeypatch.context() as patch:
        patch.setattr(rans, "_native", None)
        python = _outcome(call)
    return native, python


@needs_native
@settings(
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.sampled_from(
        [(1,), (7,), (0,), (3, 0), (5, 9), (3, 2, 5), (40, 10), (2000,), (6, 700), (2, 8200), (7, 7001)]
    ),
    st.integers(1, 12),
    st.booleans(),
    st.floats(0.0, 1.0),
    st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 7]),  # value mode | mask model << 2
    st.integers(0, 2**32 - 1),
)
@example((2, 8200), 3, True, 0.2, 1, 0)  # two lanes that meet in one column every round
@example((2, 8200), 3, True, 0.2, 5, 0)  # the same with mask model 1 (row and column densities)
@example((7, 7001), 16, False, 1.0, 3, 1)  # three uneven lanes, the widest symbols, every context set
def test_the_c_core_writes_and_reads_what_python_does(
    monkeypatch: pytest.MonkeyPatch,
    shape: tuple[int, ...],
    width: int,
    sparse: bool,
    density: float,
    mode: int | None,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    numel = math.prod(shape)
    alphabet, mask, symbols = random_case(rng, shape, width, sparse, density)
    kept = symbols.size
    fixed = None if mode is None else min(mode & 3, width) | (mode >> 2 << 2 if sparse else 0)
    native, python = _both(monkeypatch, lambda: rans.encode(mask, symbols, shape, width, fixed))
    assert native == python
    data = native.data
    flipped = bytearray(data)
    bit = int(rng.integers(8 * len(data)))
    flipped[bit // 8] ^= 1 << (bit % 8)
    lanes = rans.lane_count(numel)
    noise = rng.integers(0, 256, 4 * lanes + 2 * int(rng.integers(0, len(data))), dtype=np.uint8).tobytes()
    cut = data[: int(rng.integers(len(data)))]
    for variant in (data, bytes(flipped), cut, noise, data + b"\0\0"):
        args = (variant, shape, sparse, width, alphabet, native.mode)
        got, expected = _both(monkeypatch, lambda a=args: rans.decode(*a))
        assert got == expected
    got, _ = _both(monkeypatch, lambda: rans.decode(data, shape, sparse, width, alphabet, native.mode))
    if rans.fits(numel, kept, width, sparse, len(data)):
        assert got[1] == symbols.tolist() and got[2] == native.index_bytes
        assert got[0] == (None if mask is None else mask.tolist())
    else:
        assert "cannot be context-coded" in got


@needs_native
def test_many_lanes_and_the_mode_choice_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the scalar path's 16 lanes (the numpy round path), with every mode tried by the encoder."""
    rng = np.random.default_rng(5)
    shape = (64, 4200)
    mask = rng.random(math.prod(shape)) < 0.05
    symbols = np.minimum(rng.geometric(0.5, int(mask.sum())) - 1, 6)
    native, python = _both(monkeypatch, lambda: rans.encode(mask, symbols, shape, 3))
    assert native == python
    got, expected = _both(monkeypatch, lambda: rans.decode(native.data, shape, True, 3, 7, native.mode))
    assert got == expected and got[1] == symbols.tolist()


@needs_native
def test_the_c_core_matches_the_plain_reference() -> None:
    rng = np.random.default_rng(9)
    shape = (9, 400)
    mask = rng.random(math.prod(shape)) < 0.3
    symbols = rng.integers(0, 20, int(mask.sum()))
    for mode in (None, 1, 5):  # the encoder's choice, then each mask model
        fast = rans.encode(mask, symbols, shape, 5, mode)
        plain = rans_reference.encode(mask, symbols, shape, 5, mode)
        assert (fast.data, fast.index_bytes, fast.mode) == (plain.data, plain.index_bytes, plain.mode)


# -- the decision cap -------------------------------------------------------------------------------


def test_the_cap_is_the_same_rule_everywhere() -> None:
    assert (rans.MAX_DECISIONS_BASE, rans.MAX_DECISIONS_PER_BYTE) == (
        rans_reference.MAX_DECISIONS_BASE,
        rans_reference.MAX_DECISIONS_PER_BYTE,
    )
    budget = rans.decision_budget(100)
    assert budget == rans.MAX_DECISIONS_BASE + 100 * rans.MAX_DECISIONS_PER_BYTE
    assert rans.fits(budget // 4, budget // 4, 3, False, 100)  # dense: width decisions per symbol
    assert not rans.fits(budget // 4 + 1, budget // 4 + 1, 4, False, 100)
    assert rans.decisions(1000, 10, 6, True) == 1060


def _refusals(
    monkeypatch: pytest.MonkeyPatch, data: bytes, shape: tuple[int, ...], sparse: bool, width: int
) -> set[str]:
    outcomes = set(_both(monkeypatch, lambda: rans.decode(data, shape, sparse, width, 1 << width, 0)))
    outcomes.add(_outcome(lambda: rans_reference.decode(data, shape, sparse, width, 1 << width, 0)))
    return outcomes


def test_a_dense_stream_over_the_cap_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """4,096 16-bit zeros: a valid stream of a few bytes for 65,536 decisions, written by the encoder."""
    shape = (4096,)
    coded = rans.encode(None, np.zeros(4096, dtype=np.int64), shape, 16, 0)
    assert len(coded.data) < 40 and not rans.fits(4096, 4096, 16, False, len(coded.data))
    budget = rans.decision_budget(len(coded.data))
    expected = (
        f"SqcFormatError: 65,536 binary decisions cannot be context-coded in {len(coded.data)} bytes "
        f"(at most {budget:,})"
    )
    assert _refusals(monkeypatch, coded.data, shape, False, 16) == {expected}


def test_a_sparse_stream_over_the_cap_is_refused_after_its_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every one of 6,000 positions kept, each a 16-bit zero: the mask part (6,000 decisions) is within
    the cap, the whole (102,000) is not; refused once the mask is known, before any value is decoded."""
    shape = (6000,)
    coded = rans.encode(np.ones(6000, dtype=bool), np.zeros(6000, dtype=np.int64), shape, 16, 0)
    nbytes = len(coded.data)
    assert 6000 <= rans.decision_budget(nbytes) < 102_000
    (refusal,) = _refusals(monkeypatch, coded.data, shape, True, 16)
    assert refusal.startswith(
        f"SqcFormatError: 102,000 binary decisions cannot be context-coded in {nbytes} bytes"
    )


def _fixed_state(codes: np.ndarray, mask: np.ndarray | None = None) -> TensorState:
    state = TensorState(
        "w",
        tuple(codes.shape),
        "weight",
        codes=torch.from_numpy(codes.astype(np.int32)),
        codebook=torch.linspace(-1, 1, 64),
        mask=None if mask is None else torch.from_numpy(mask),
    )
    state.coder = "rans"
    return state


def test_both_writers_fall_back_at_the_cap() -> None:
    """A 6-bit layer of one repeated code: its rANS stream would be a few bytes for 120,000 decisions.
    The container stores it packed/Huffman-coded, and the C target's legalizer agrees (no rANS stream);
    a layer within the cap keeps rANS in both."""
    from sqc.targets.legalize.weights import _rans_stream

    flat = np.full((100, 200), 7)
    over = _fixed_state(flat)
    _, _, info = encode_tensor(over)
    assert "rans" not in info.streams.values()
    kept = flat.ravel()
    assert _rans_stream(over, None, False, kept, 6, 64, True) is None

    varied = np.minimum(np.random.default_rng(0).geometric(0.2, (100, 200)) - 1, 63)
    within = _fixed_state(varied)
    _, _, info = encode_tensor(within)
    assert info.streams["values"] == "rans"
    assert _rans_stream(within, None, False, varied.ravel(), 6, 64, True) is not None


@needs_native
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_scatter_table_is_numpys_masked_assignment(density: float) -> None:
    """``rans.scatter`` (the C core's branch-free walk) writes ``table[symbol]`` at the kept positions in
    order and +0.0 elsewhere, bit for bit as numpy's boolean assignment."""
    rng = np.random.default_rng(3)
    mask = rng.random(1000) < density
    symbols = rng.integers(0, 7, int(mask.sum()))
    table = rng.standard_normal(7).astype(np.float32)
    expected = np.zeros(1000, dtype=np.float32)
    expected[mask] = table[symbols]
    assert np.array_equal(rans.scatter(mask, symbols, table).view(np.int32), expected.view(np.int32))


@needs_native
@pytest.mark.parametrize("size", [5, 40])  # the tail loop alone; sixteen at a time, then the tail
@pytest.mark.parametrize("change", ["none", "fewer", "more", "outside"])
def test_scatter_table_refuses_symbols_that_do_not_fit(size: int, change: str) -> None:
    """Fewer or more symbols than kept positions, or a symbol past the table: an error, never a read
    outside the buffers."""
    count = {"none": 0, "fewer": size - 1, "more": size + 1, "outside": size}[change]
    symbols = np.zeros(count, dtype=np.int64)
    if change == "outside":
        symbols[-1] = 9
    with pytest.raises(ValueError, match="do not match"):
        NATIVE.scatter_table(
            np.ones(size, dtype=bool), symbols, np.zeros(2, dtype=np.float32), np.zeros(size, np.float32)
        )
