"""The .sqc container: exact round trips, determinism, atomic writes, and hostile bytes."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sqc.compiler.pass_base import PassContext
from sqc.compiler.pipeline import Pipeline
from sqc.errors import SqcError, SqcFormatError
from sqc.formats import container
from sqc.formats.tensor_codec import (
    decode_tensor,
    decode_values,
    encode_tensor,
    encode_tensor_cached,
    encoded_size,
)
from sqc.frontend.trace import trace
from sqc.ir.records import FixedPoint, TensorState, index_dtype

PIPELINES = [
    "prune{sparsity=0.9},share{bits=5},huffman",
    "prune,quant,huffman",
    "quant{bits=4 granularity=channel}",
    "prune{sparsity=0.5}",
    "share{bits=3},quant{bits=5},huffman",
    "prune{sparsity=0.95 scope=global},quant{bits=12},huffman",
]


def compressed(model, text, shape):
    ir = trace(model, [shape])
    Pipeline.parse(text).run(ir, PassContext())
    return ir


@pytest.mark.parametrize("text", PIPELINES)
def test_round_trip_is_exact(firenet, text):
    ir = compressed(firenet, text, (2, 3, 16, 16))
    data = container.serialize(ir)
    back = container.model_from_layout(container.read_layout(data), "mem")
    assert list(back.tensors) == list(ir.tensors)
    for name, state in ir.tensors.items():
        restored = back.tensors[name]
        assert torch.equal(restored.decode(), state.decode()), name
        assert restored.kind == state.kind and restored.coder == state.coder and restored.fmt == state.fmt
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(back.forward(x), ir.forward(x))
    assert back.pipeline == str(Pipeline.parse(text))
    assert [r.spec for r in back.report] == [p.spec() for p in Pipeline.parse(text).passes]
    assert back.inputs == ir.inputs
    back.verify()


def test_same_input_same_bytes(firenet):
    first = container.serialize(compressed(firenet, PIPELINES[0], (1, 3, 16, 16)))
    second = container.serialize(compressed(firenet, PIPELINES[0], (1, 3, 16, 16)))
    assert first == second


def _state(draw_values, shape, kind, mask, coder, bits):
    state = TensorState("layer.weight", shape, "weight")
    state.set_dense(draw_values)
    if kind == "shared":
        from sqc.passes.share import kmeans_1d

        codebook, codes = kmeans_1d(draw_values.flatten(), 1 << bits)
        state.dense = None
        state.codebook, state.codes = codebook, codes.reshape(shape).to(index_dtype(codebook.numel()))
    elif kind in ("fixed", "fixed-channel"):
        from sqc.passes.quant import best_format

        fmt = best_format(draw_values, bits + 1, per_channel=kind == "fixed-channel")
        state.dense = None
        state.codes, state.fmt = fmt.quantize(draw_values), fmt
    elif kind == "shared-fixed":
        from sqc.passes.share import kmeans_1d

        codebook, codes = kmeans_1d(draw_values.flatten(), 1 << bits)
        fmt = FixedPoint(8, (6,))
        state.dense = None
        state.codebook, state.codes, state.fmt = (
            fmt.dequantize(fmt.quantize(codebook)),
            codes.reshape(shape).to(index_dtype(codebook.numel())),
            fmt,
        )
    if mask is not None:
        state.set_mask(mask)
    state.coder = coder if state.codes is not None else "raw"
    state.verify()
    return state


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 40),
    kind=st.sampled_from(["dense", "shared", "fixed", "fixed-channel", "shared-fixed"]),
    density=st.sampled_from([None, 0.0, 0.01, 0.1, 0.5, 1.0]),
    coder=st.sampled_from(["raw", "huffman", "rans"]),
    bits=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_tensor_codec_round_trip_property(rows, cols, kind, density, coder, bits, seed):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn((rows, cols), generator=generator)
    mask = None if density is None else torch.rand((rows, cols), generator=generator) < density
    state = _state(values, (rows, cols), kind, mask, coder, bits)
    codec, payload, info = encode_tensor(state)
    restored, parsed = decode_tensor(codec, payload, state.name, state.shape, "weight")
    assert torch.equal(restored.decode(), state.decode())
    values = decode_values(codec, payload, state.name, state.shape, "weight")  # bit for bit, -0.0 too
    assert torch.equal(values.view(torch.int32), state.decode().view(torch.int32))
    assert restored.coder == state.coder
    assert parsed.total == len(payload) == info.total
    assert (parsed.header, parsed.codebook, parsed.index, parsed.values) == (
        info.header,
        info.codebook,
        info.index,
        info.values,
    )


@pytest.mark.parametrize("kind", ["shared", "fixed", "fixed-channel", "shared-fixed"])
@pytest.mark.parametrize("density", [None, 0.05, 0.3])
def test_context_coded_values_decode_bit_for_bit(kind: str, density: float | None):
    """``sqc.load``'s straight-to-values path of a context-coded tensor (a table per symbol, scattered by
    the C core) gives ``decode()``'s float32 bits; the tensor is large enough that rANS is chosen."""
    generator = torch.Generator().manual_seed(7)
    values = torch.randn((64, 200), generator=generator)
    mask = None if density is None else torch.rand((64, 200), generator=generator) < density
    state = _state(values, (64, 200), kind, mask, "rans", 5)
    codec, payload, info = encode_tensor(state)
    assert "rans" in info.streams.values()
    decoded = decode_values(codec, payload, state.name, state.shape, "weight")
    assert torch.equal(decoded.view(torch.int32), state.decode().view(torch.int32))


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 40),
    kind=st.sampled_from(["dense", "shared", "fixed"]),
    density=st.sampled_from([None, 0.0, 0.3, 1.0]),
    coder=st.sampled_from(["raw", "huffman", "rans"]),
    seed=st.integers(0, 2**16),
)
def test_cached_encoding_is_the_encoding_until_the_record_changes(rows, cols, kind, density, coder, seed):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn((rows, cols), generator=generator)
    mask = None if density is None else torch.rand((rows, cols), generator=generator) < density
    state = _state(values, (rows, cols), kind, mask, "raw" if kind == "dense" else coder, 3)
    fresh = encode_tensor(state)
    assert encoded_size(state) == len(fresh[1])  # priced without building, or encoded and remembered
    assert encode_tensor_cached(state)[:2] == fresh[:2] == encode_tensor_cached(state)[:2]
    if kind != "dense":  # another coder, then a value written in place: both are seen
        state.coder = "huffman" if state.coder != "huffman" else "raw"
        assert encoded_size(state) == len(encode_tensor(state)[1])
        if kind == "shared":
            state.codebook.add_(1.0)
        else:
            state.codes.view(-1)[-1] = 0 if int(state.codes.view(-1)[-1]) else 1
            if state.mask is not None:
                state.set_mask(state.mask)
        assert encode_tensor_cached(state)[:2] == encode_tensor(state)[:2]
    else:
        state.dense.view(-1)[0] = 123.0
        assert encode_tensor_cached(state)[:2] == encode_tensor(state)[:2]


CORPUS = Path(__file__).parent / "fuzz" / "corpus"


def _outcome(read):
    try:
        return read()
    except SqcFormatError as exc:
        assert exc.offset is not None, str(exc)
        return "refused"


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.sqc")), ids=lambda p: p.name)
def test_module_reader_agrees_with_the_ir_reader(path: Path):
    """``sqc.load`` decodes tensor by tensor straight to values (read_module); on every corpus file,
    valid or hostile, it must accept and refuse exactly what the IR reader does, with the same values."""
    data = path.read_bytes()
    ir = _outcome(lambda: container.model_from_layout(container.read_layout(data), "x"))
    module = _outcome(lambda: container.module_from_bytes(data, "x"))
    assert (ir == "refused") == (module == "refused")
    if ir != "refused":
        expected = dict(ir.graph_module.state_dict())
        for name, value in module.state_dict().items():
            bits = (lambda t: t.view(torch.int32)) if value.dtype == torch.float32 else (lambda t: t)
            assert torch.equal(bits(value), bits(expected[name])), name


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.sqc")), ids=lambda p: p.name)
def test_state_dict_reader_agrees_with_the_ir_reader(path: Path):
    """``sqc.load_state_dict`` reads no graph: on every corpus file it refuses only what the IR reader
    refuses, and where that one accepts, gives the same names (aliases included) and values."""
    data = path.read_bytes()
    ir = _outcome(lambda: container.model_from_layout(container.read_layout(data), "x"))
    tensors = _outcome(lambda: container.state_dict_from_bytes(data, "x"))
    if tensors == "refused":
        assert ir == "refused"
    if ir != "refused":
        expected = dict(ir.graph_module.state_dict())
        assert set(tensors) >= set(expected)
        for name, value in expected.items():
            bits = (lambda t: t.view(torch.int32)) if value.dtype == torch.float32 else (lambda t: t)
            assert torch.equal(bits(tensors[name]), bits(value)), name


def test_state_dict_loads_into_the_users_model_with_ties_kept(tmp_path: Path):
    """The decoded tensors go into a fresh instance of the architecture by ``load_state_dict``: its
    outputs are ``sqc.load``'s, and a tied pair is one tensor."""
    import sqc

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(40, 8)
            self.mix = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 40, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.mix(self.embed(ids))))

    torch.manual_seed(0)
    path = tmp_path / "tied.sqc"
    artifact = sqc.compress(Tied().eval(), ["1,5:int64"], "prune{sparsity=0.5},quant{bits=6},rans")
    artifact.save(path)
    tensors = sqc.load_state_dict(path)
    assert tensors["head.weight"] is tensors["embed.weight"]
    fresh = Tied().eval()
    fresh.load_state_dict(tensors)
    ids = torch.randint(0, 40, (3, 5))
    with torch.no_grad():
        assert torch.equal(fresh(ids), sqc.load(path)(ids))
    kernels = torch.cat([tensors["embed.weight"].flatten(), tensors["mix.weight"].flatten()])
    assert float((kernels == 0).float().mean()) == pytest.approx(0.5, abs=0.02)  # pruned globally


def test_state_dict_reader_names_the_file_at_fault(tmp_path: Path, firenet):
    import sqc

    path = tmp_path / "broken.sqc"
    data = bytearray(container.serialize(compressed(firenet, "prune,quant,huffman", (1, 3, 16, 16))))
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SqcFormatError, match=r"broken\.sqc"):
        sqc.load_state_dict(path)


def test_tensor_payload_truncated_anywhere_is_a_format_error():
    values = torch.randn(20, 30)
    state = _state(values, (20, 30), "shared", values.abs() > 1.0, "huffman", 4)
    codec, payload, _ = encode_tensor(state)
    for cut in range(len(payload)):
        with pytest.raises(SqcFormatError):
            decode_tensor(codec, payload[:cut], state.name, state.shape, "weight", 1000)


def test_tensor_payload_mutations_never_crash():
    values = torch.randn(16, 16)
    state = _state(values, (16, 16), "fixed", values.abs() > 0.8, "huffman", 5)
    codec, payload, _ = encode_tensor(state)
    rng = random.Random(7)
    for _ in range(400):
        mutated = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            restored, _ = decode_tensor(codec, bytes(mutated), state.name, state.shape, "weight")
        except SqcFormatError:
            continue
        restored.verify()  # whatever decodes must still be a consistent record


@pytest.fixture
def sqc_bytes(firenet) -> bytes:
    return container.serialize(compressed(firenet, PIPELINES[0], (1, 3, 16, 16)))


def test_every_truncation_is_a_clean_error(sqc_bytes):
    for cut in list(range(0, 200)) + list(range(200, len(sqc_bytes), 97)):
        with pytest.raises(SqcFormatError):
            container.read_layout(sqc_bytes[:cut])


def test_bit_flips_are_caught_by_checksums(sqc_bytes):
    rng = random.Random(1)
    for _ in range(200):
        data = bytearray(sqc_bytes)
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        with pytest.raises(SqcFormatError) as info:
            container.read_layout(bytes(data))
        assert info.value.offset is not None


def _retable(data: bytes, edit) -> bytes:
    """Rewrite the section table with ``edit`` and fix its CRC, to reach the checks behind it."""
    count = int.from_bytes(data[12:16], "little")
    table = bytearray(data[28 : 28 + 20 * count])
    edit(table)
    header = bytearray(data[:28])
    header[24:28] = zlib.crc32(table).to_bytes(4, "little")
    return bytes(header) + bytes(table) + data[28 + 20 * count :]


def test_huge_length_field_is_refused_without_allocating(sqc_bytes):
    def huge(table: bytearray) -> None:
        table[12:20] = (1 << 62).to_bytes(8, "little")

    with pytest.raises(SqcFormatError, match="runs past the end"):
        container.read_layout(_retable(sqc_bytes, huge))


def test_sections_swapped_are_refused(sqc_bytes):
    def swap(table: bytearray) -> None:
        table[20:40], table[40:60] = table[40:60], table[20:40]

    with pytest.raises(SqcFormatError):
        container.read_layout(_retable(sqc_bytes, swap))


def test_wrong_version_and_magic(sqc_bytes):
    newer = bytearray(sqc_bytes)
    newer[8:10] = (2).to_bytes(2, "little")
    with pytest.raises(SqcFormatError, match=r"written by a newer sqc \(format 2\.\d\); upgrade sqc"):
        container.read_layout(bytes(newer))
    with pytest.raises(SqcFormatError, match="bad magic"):
        container.read_layout(b"PK\x03\x04" + sqc_bytes[4:])


def test_graph_section_cannot_name_arbitrary_code(firenet):
    from sqc.formats.graph_codec import decode_graph

    doc = {
        "schema": 1,
        "nodes": [["in", "x"], ["call", "evil", "os.system", [{"%": 0}], {}, None], ["out", {"%": 1}]],
    }
    with pytest.raises(SqcFormatError, match=r"unknown op 'os\.system'"):
        decode_graph(doc, [], 0)
    doc = {
        "schema": 1,
        "nodes": [["in", "x"], ["call", "r", "relu", [{"%": 5}], {}, None], ["out", {"%": 1}]],
    }
    with pytest.raises(SqcFormatError, match="not defined before use"):
        decode_graph(doc, [], 0)


def test_save_is_atomic_and_never_overwrites(tmp_path: Path, firenet):
    ir = compressed(firenet, PIPELINES[1], (1, 3, 16, 16))
    target = tmp_path / "m.sqc"
    target.write_bytes(b"precious")
    with pytest.raises(SqcError, match="already exists"):
        container.save(ir, target)
    assert target.read_bytes() == b"precious"
    size = container.save(ir, target, force=True)
    assert target.stat().st_size == size
    assert [p.name for p in tmp_path.iterdir()] == ["m.sqc"]  # no temp file left behind
    with pytest.raises(SqcError, match="no such directory"):
        container.save(ir, tmp_path / "missing" / "m.sqc")


def test_header_and_graph_stay_small(mlp):
    ir = compressed(mlp, "prune,share,huffman", (1, 64))
    layout = container.read_layout(container.serialize(ir))
    # the whole graph of a 2-layer MLP with the canonical pipeline text, zlib'd JSON
    assert layout.sections[0].length < 450
