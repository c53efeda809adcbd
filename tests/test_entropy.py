"""The context-adaptive rANS coder (``formats/rans.py``), the delta-coded codebook and the ``rans`` pass.

Round trips are property tests; every decoder faces corrupt bytes and must answer with
``SqcFormatError`` only. Compression claims are checked on structure the context model is built for
(dead columns, runs, correlated neighbours), not on exact byte counts, which the benchmarks report.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sqc
from sqc.errors import PipelineError, SqcFormatError
from sqc.formats import container, rans, tensor_codec
from sqc.formats.tensor_codec import decode_tensor, encode_tensor, encode_tensor_cached
from sqc.ir.records import FixedPoint, TensorState

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tensors(draw: st.DrawFn) -> tuple[np.ndarray | None, np.ndarray, tuple[int, ...], int]:
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
    numel = math.prod(shape)
    width = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sparse = draw(st.booleans())
    mask = rng.random(numel) < draw(st.floats(0.0, 1.0)) if sparse else None
    kept = numel if mask is None else int(mask.sum())
    alphabet = draw(st.integers(1, 1 << width))
    symbols = rng.integers(0, alphabet, kept) if draw(st.booleans()) else np.full(kept, alphabet - 1)
    return mask, symbols, shape, width


@SETTINGS
@given(tensors(), st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 7]))
@example((None, np.zeros(729, dtype=np.int64), (9, 9, 9), 6), None)  # 4,374 decisions, 6 bytes
def test_rans_roundtrip(
    case: tuple[np.ndarray | None, np.ndarray, tuple[int, ...], int], mode: int | None
) -> None:
    mask, symbols, shape, width = case
    if mode is not None and mask is None:
        mode &= 3  # a mask model (mode >> 2) is for sparse tensors only
    coded = rans.encode(mask, symbols, shape, width, mode)
    if mode is not None:
        assert coded.mode == mode
    numel = math.prod(shape)
    if not rans.fits(numel, len(symbols), width, mask is not None, len(coded.data)):
        # past the decision cap (a near-constant tensor: thousands of decisions per byte): writers fall
        # back to Huffman or packed, and a reader refuses the stream
        with pytest.raises(SqcFormatError, match=r"binary decisions|positions"):
            rans.decode(coded.data, shape, mask is not None, width, 1 << width, coded.mode)
        return
    got_mask, got, index = rans.decode(coded.data, shape, mask is not None, width, 1 << width, coded.mode)
    assert got.tolist() == symbols.tolist()
    assert (got_mask is None) == (mask is None)
    if mask is not None:
        assert got_mask is not None and got_mask.tolist() == mask.tolist()
    assert index == coded.index_bytes and index + coded.value_bytes == len(coded.data)


def test_rans_many_lanes_roundtrip() -> None:
    """Lanes of unequal length, lanes starting mid-row, several lanes on one column in a round."""
    rng = np.random.default_rng(1)
    shape = (7, 7001)  # 49,007 positions: 3 lanes
    assert rans.lane_count(math.prod(shape)) == 3
    mask = rng.random(math.prod(shape)) < 0.1
    symbols = rng.integers(0, 40, int(mask.sum()))
    coded = rans.encode(mask, symbols, shape, 6)
    got_mask, got, _ = rans.decode(coded.data, shape, True, 6, 40, coded.mode)
    assert got_mask is not None and np.array_equal(got_mask, mask) and np.array_equal(got, symbols)


def _structured(rows: int = 60, cols: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A pruned layer with what real ones have: dead input columns, runs, correlated codes."""
    rng = np.random.default_rng(seed)
    col_density = np.where(rng.random(cols) < 0.35, 0.0, rng.uniform(0.05, 0.5, cols))
    mask = rng.random((rows, cols)) < col_density
    codes = np.clip(np.cumsum(rng.integers(-1, 2, int(mask.sum()))) % 32, 0, 31)
    return mask, codes


def test_rans_beats_huffman_on_structure() -> None:
    mask, codes = _structured()
    full = np.zeros(mask.shape, dtype=np.int32)
    full[mask] = codes
    state = TensorState(
        "w",
        mask.shape,
        "weight",
        codes=torch.from_numpy(full),
        codebook=torch.linspace(-1, 1, 32),
        mask=torch.from_numpy(mask),
    )
    state.coder = "huffman"
    huff = len(encode_tensor(state)[1])
    state.coder = "rans"
    _, payload, info = encode_tensor(state)
    assert info.streams == {"index": "rans", "values": "rans"}
    assert len(payload) < 0.8 * huff


def test_rans_truncations_and_flips_raise_format_errors() -> None:
    mask, codes = _structured(6, 24, seed=3)
    coded = rans.encode(mask, codes, mask.shape, 5)
    args = (mask.shape, True, 5, 32, coded.mode)
    for cut in range(len(coded.data)):
        with pytest.raises(SqcFormatError):
            rans.decode(coded.data[:cut], *args)
    detected = 0
    for bit in range(8 * len(coded.data)):
        data = bytearray(coded.data)
        data[bit // 8] ^= 1 << (bit % 8)
        try:
            got_mask, got, _ = rans.decode(bytes(data), *args)
        except SqcFormatError:
            detected += 1
            continue
        assert got_mask is not None and got.size == int(got_mask.sum())
    assert detected >= 0.9 * 8 * len(coded.data)  # the container's CRC catches the rest


@SETTINGS
@given(st.binary(max_size=64), st.integers(0, 300), st.integers(1, 16), st.integers(0, 3), st.booleans())
def test_rans_decode_fuzz(blob: bytes, numel: int, width: int, mode: int, sparse: bool) -> None:
    try:
        rans.decode(blob, (numel,), sparse, width, 1 << width, mode)
    except SqcFormatError:
        pass


def test_rans_decode_rejects_bad_headers() -> None:
    coded = rans.encode(None, np.arange(10) % 4, (10,), 2)
    for width, alphabet, mode in ((0, 1, 0), (17, 1 << 17, 0), (2, 4, 4)):
        with pytest.raises(SqcFormatError):
            rans.decode(coded.data, (10,), False, width, alphabet, mode)
    with pytest.raises(SqcFormatError, match="alphabet"):
        rans.decode(rans.encode(None, np.array([3]), (1,), 2, 0).data, (1,), False, 2, 3, 0)
    with pytest.raises(SqcFormatError, match="positions"):  # work bound: too many positions per byte
        rans.decode(b"\0" * 8, (rans.LANE_SPAN + 8 * rans.MAX_POSITIONS_PER_BYTE + 1,), True, 1, 2, 0)


# ------------------------------------------------------------------------------- delta-coded codebook


@SETTINGS
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=80),
    st.booleans(),
)
def test_float_deltas_roundtrip_bit_exact(values: list[float], sort: bool) -> None:
    book = np.array(sorted(values) if sort else values, dtype=np.float32)
    data = tensor_codec.encode_float_deltas(book)
    assert data is not None
    got, used = tensor_codec.decode_float_deltas(memoryview(data + b"tail"), book.size)
    assert used == len(data)
    assert got.view(np.uint32).tolist() == book.view(np.uint32).tolist()  # -0.0 and subnormals too


def test_float_deltas_corruption() -> None:
    book = np.linspace(-0.3, 0.3, 64, dtype=np.float32)
    data = tensor_codec.encode_float_deltas(book)
    assert data is not None and len(data) < 0.8 * 4 * book.size
    for cut in range(len(data)):
        with pytest.raises(SqcFormatError):
            tensor_codec.decode_float_deltas(memoryview(data[:cut]), book.size)
    for bit in range(8 * len(data)):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            tensor_codec.decode_float_deltas(memoryview(bytes(bad)), book.size)
        except SqcFormatError:
            pass


# ---------------------------------------------------------------------------------- tensor sections


def _states() -> list[TensorState]:
    mask, codes = _structured(20, 64, seed=5)
    full = np.zeros(mask.shape, dtype=np.int32)
    full[mask] = codes
    book = TensorState(
        "a.weight",
        mask.shape,
        "weight",
        codes=torch.from_numpy(full),
        codebook=torch.linspace(-1, 1, 32),
        mask=torch.from_numpy(mask),
    )
    dense = TensorState(
        "b.weight",
        (6, 5),
        "weight",
        codes=torch.arange(30, dtype=torch.int32).reshape(6, 5) % 7,
        codebook=torch.linspace(-1, 1, 7),
    )
    fixed = TensorState(
        "c.weight",
        (8, 9),
        "weight",
        fmt=FixedPoint(8, (5,)),
        codes=torch.randint(-128, 128, (8, 9), generator=torch.Generator().manual_seed(0), dtype=torch.int32),
    )
    wide = TensorState(
        "d.weight",
        (4, 4),
        "weight",
        fmt=FixedPoint(20, (10,)),
        codes=torch.arange(16, dtype=torch.int32).reshape(4, 4) * 999,
    )
    empty = TensorState(
        "e.weight",
        (0, 3),
        "weight",
        codes=torch.zeros((0, 3), dtype=torch.int32),
        codebook=torch.ones(2),
        mask=torch.zeros((0, 3), dtype=torch.bool),
    )
    return [book, dense, fixed, wide, empty]


@pytest.mark.parametrize("index", range(5))
def test_tensor_sections_roundtrip_with_rans(index: int) -> None:
    state = _states()[index]
    state.coder = "rans"
    state.verify()
    codec, payload, info = encode_tensor(state)
    got, got_info = decode_tensor(codec, payload, state.name, state.shape, "weight", base=100)
    assert got.coder == "rans"
    assert torch.equal(got.decode(), state.decode())
    if state.codebook is not None:
        assert got.codebook is not None and torch.equal(got.codebook, state.codebook)
    assert got_info.total == info.total == len(payload)
    if state.name == "d.weight":  # 20-bit codes: rans cannot code them, Huffman/packed does
        assert "rans" not in info.streams.values()


def _fixed_state(case: tuple[np.ndarray | None, np.ndarray, tuple[int, ...], int]) -> TensorState:
    """A fixed-point record from a drawn mask and symbols (symbol ``s`` is code ``s - 2^(width-1)``)."""
    mask, symbols, shape, width = case
    codes = np.zeros(math.prod(shape), dtype=np.int32)
    if mask is None:
        codes[:] = symbols - (1 << (width - 1))
    else:
        codes[mask] = symbols - (1 << (width - 1))
    return TensorState(
        "w",
        shape,
        "weight",
        fmt=FixedPoint(max(width, 2), (4,)),
        codes=torch.from_numpy(codes).reshape(shape),
        mask=None if mask is None else torch.from_numpy(mask).reshape(shape),
    )


@SETTINGS
@given(tensors(), st.booleans())
def test_packed_sizes_without_packing(
    case: tuple[np.ndarray | None, np.ndarray, tuple[int, ...], int], shared: bool
) -> None:
    """The passes' price of a packed (coder ``raw``) record, counted without packing, is the length of
    the section the writer builds, for fixed-point codes and (the same codes as indices) a codebook."""
    state = _fixed_state(case)
    if shared:
        assert state.codes is not None
        state.codes = state.codes - state.codes.min() if state.codes.numel() else state.codes
        state.codebook = torch.linspace(-1, 1, int(state.codes.max()) + 1 if state.codes.numel() else 1)
        state.fmt = None
        if state.mask is not None:
            state.codes = torch.where(state.mask, state.codes, torch.zeros_like(state.codes))
    assert tensor_codec.encoded_size(state) == len(encode_tensor(state)[1])


@settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tensors())
def test_skipping_layouts_below_the_entropy_bound_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, case: tuple[np.ndarray | None, np.ndarray, tuple[int, ...], int]
) -> None:
    """The writer skips the packed/Huffman layouts when the context-coded one is below their entropy
    bound: the section must be byte for byte what building every layout and keeping the smallest gives."""
    state = _fixed_state(case)
    state.coder = "rans"
    fast = encode_tensor(state)
    with monkeypatch.context() as patch:
        patch.setattr(tensor_codec, "_zero_order_bound", lambda *_: -math.inf)
        slow = encode_tensor(state)
    assert fast[:2] == slow[:2] and fast[2].total == slow[2].total


def test_tensor_section_corruption_is_a_format_error_with_offset() -> None:
    state = _states()[0]
    state.coder = "rans"
    codec, payload, _ = encode_tensor(state)
    for cut in range(len(payload)):
        with pytest.raises(SqcFormatError) as err:
            decode_tensor(codec, payload[:cut], state.name, state.shape, "weight", base=1000)
        assert err.value.offset is not None and err.value.offset >= 1000
    flags_at = payload.index(bytes([tensor_codec.CONTEXT_CODED | tensor_codec.WANTS_RANS | 1]))
    for bad_flags in (
        0x40,
        tensor_codec.CONTEXT_CODED | 1,
        tensor_codec.CONTEXT_CODED | 0x22,
        tensor_codec.WANTS_RANS | tensor_codec.WANTS_HUFFMAN,
    ):
        bad = bytearray(payload)
        bad[flags_at] = bad_flags
        with pytest.raises(SqcFormatError):
            decode_tensor(codec, bytes(bad), state.name, state.shape, "weight")


# ---------------------------------------------------------------------------- pass and container


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))


def test_rans_pass_through_the_container(tmp_path) -> None:
    model = _mlp()
    artifact = sqc.compress(model, [(1, 64)], "prune{sparsity=0.8},share{bits=5},rans")
    path = tmp_path / "m.sqc"
    artifact.save(path)
    layout = container.read_layout(path.read_bytes())
    # 1.2 holds every classic model, unless a mask is coded in mask model 1 (format 1.5)
    models = {encode_tensor_cached(s)[2].mask_model for s in artifact.model.tensors.values()}
    assert layout.version == ((1, 5) if 1 in models else (1, 2)) and container.VERSION == (1, 5)
    assert layout.sections[0].codec == layout.sections[-1].codec == container.JSON_PRESET
    assert layout.report[-1].spec == "rans{layers=*}"
    restored = sqc.load(path)
    x = torch.randn(5, 64)
    assert torch.equal(restored(x), artifact.module()(x))
    for name, state in artifact.model.tensors.items():
        got = layout.tensors[name][0]
        assert got.coder == state.coder and torch.equal(got.decode(), state.decode())
    huffman = sqc.compress(model, [(1, 64)], "prune{sparsity=0.8},share{bits=5},huffman").to_bytes()
    assert len(path.read_bytes()) < len(huffman)


@pytest.mark.parametrize("pipeline", ["rans", "prune,rans", "prune,share,huffman,rans", "share,rans,quant"])
def test_rans_order_is_checked(pipeline: str) -> None:
    with pytest.raises(PipelineError):
        sqc.compress(_mlp(), [(1, 64)], pipeline)


def test_preset_sections_need_format_1_2() -> None:
    data = sqc.compress(_mlp(), [(1, 64)], "prune,share,rans").to_bytes()
    old = bytearray(data)
    old[10:12] = (1).to_bytes(2, "little")  # claim 1.1: fixed header CRC is then wrong, and the codec
    with pytest.raises(SqcFormatError):
        container.read_layout(bytes(old))
    assert container.read_layout(data).version in ((1, 2), (1, 5))  # 1.5: a mask in mask model 1


# -- the fast coder against the plain one -----------------------------------------------------------


@settings(deadline=None, max_examples=16, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([(7, 11), (3, 2, 5), (40,), (1,), (9, 400), (3, 11000), (2, 16384)]),
    st.integers(1, 6),
    st.floats(0.0, 1.0),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
@example((3, 11000), 1, 0.0, True, 0)  # all pruned: a few bytes for 33,000 positions
def test_fast_coder_writes_the_reference_bytes(
    shape: tuple[int, ...], width: int, density: float, sparse: bool, seed: int
) -> None:
    """Same bytes, mode and split as ``rans_reference`` (the spec written plainly), and the fast decoder
    reads them back: multi-lane shapes with uneven lanes, and (2, 16384) whose lanes meet in one column."""
    from sqc.formats import rans_reference

    rng = np.random.default_rng(seed)
    numel = math.prod(shape)
    mask = rng.random(numel) < density if sparse else None
    kept = numel if mask is None else int(mask.sum())
    symbols = np.minimum(rng.geometric(0.3, kept) - 1, (1 << width) - 1)
    fast, plain = rans.encode(mask, symbols, shape, width), rans_reference.encode(mask, symbols, shape, width)
    assert (fast.data, fast.index_bytes, fast.value_bytes, fast.mode) == (
        plain.data,
        plain.index_bytes,
        plain.value_bytes,
        plain.mode,
    )
    if not rans.fits(numel, symbols.size, width, sparse, len(fast.data)):
        # denser than a reader accepts (e.g. a whole large tensor pruned codes to a few bytes): the
        # decoder refuses it as a bomb, and the container never writes it (it falls back to Huffman)
        with pytest.raises(SqcFormatError, match="cannot be context-coded"):
            rans.decode(fast.data, shape, sparse, width, 1 << width, fast.mode)
        return
    got_mask, got, _ = rans.decode(fast.data, shape, sparse, width, 1 << width, fast.mode)
    assert got.tolist() == symbols.tolist()
    if mask is not None:
        assert got_mask is not None and got_mask.tolist() == mask.tolist()


def test_bucket_tables_match_the_specified_buckets() -> None:
    seen = np.arange(0, 300, dtype=np.int64).repeat(300)
    kept = np.tile(np.arange(300, dtype=np.int64), 300)
    ok = kept <= seen
    seen, kept = seen[ok], kept[ok]
    assert np.array_equal(rans._COL_LUT[rans._column_index(kept, seen)], rans.column_bucket(kept, seen))
    runs = np.arange(200)
    specified = np.searchsorted(rans.RUN_THRESHOLDS, runs, side="right") * rans.COLUMN_BUCKETS
    assert np.array_equal(rans._RUN_LUT[np.minimum(runs, 63)], specified)


def test_rans_warns_with_the_estimate_on_a_slow_tensor(monkeypatch) -> None:
    from sqc.passes import rans as rans_pass

    monkeypatch.setattr(rans_pass, "SLOW_SECONDS", 0.0)
    artifact = sqc.compress(_mlp(), [(1, 64)], "prune{sparsity=0.8},share{bits=5},rans")
    diagnostics = artifact.report[-1].diagnostics
    assert len(diagnostics) == 2 and "0.weight: rANS coding of 3,072 weights takes about" in diagnostics[0]
    # VGG-16 fc6 (102.8M weights, 4 % kept, 5 bits): 35 s in numpy, ~2.5 s with the C core
    expected = 35 if rans.IMPLEMENTATION == "python" else 2.5
    assert rans.estimated_seconds(102_760_448, 4_110_418, 5, True) == pytest.approx(expected, rel=0.1)
