"""The open op set: ATen operators, every argument kind, typed buffers and tied tensors through the IR
and the container — and what a file may not name."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx

import sqc
from sqc.errors import SqcFormatError
from sqc.formats import container
from sqc.formats.graph_codec import decode_graph, graph_nodes
from sqc.formats.tensor_codec import RAW_TYPED, TYPED_DTYPES, decode_tensor, encode_tensor
from sqc.frontend.trace import as_examples, parse_input_spec, trace
from sqc.ir.ops import aten_name, resolve_aten
from sqc.ir.records import TensorState

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
aten = torch.ops.aten


class Hard(nn.Module):
    """Ops outside the vocabulary (hardswish, layer_norm, cumsum) and factory ops with dtype/device."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.register_buffer("steps", torch.arange(8, dtype=torch.int64))
        self.register_buffer("keep", torch.tensor([True, False] * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.hardswish(self.norm(self.fc(x)))
        h = h * self.keep + torch.cumsum(h, -1) / (self.steps + 1)
        return h + torch.ones(h.shape[-1], dtype=torch.float32, device=x.device)


def test_aten_operators_round_trip_through_the_file(tmp_path):
    model = Hard().eval()
    artifact = sqc.compress(model, [(2, 8)], "quant{bits=8},huffman")
    names = {aten_name(n.target) for n in artifact.module().graph.nodes if n.op == "call_function"}
    assert {"aten::hardswish", "aten::layer_norm", "aten::cumsum"} <= names
    path = tmp_path / "hard.sqc"
    artifact.save(path)
    assert container.read_layout(path.read_bytes()).version == (1, 3)
    x = torch.randn(5, 8)  # another batch size than traced: the captured batch stays symbolic
    restored = sqc.load(path)
    assert torch.equal(restored(x), artifact.module()(x))
    assert restored.get_buffer("steps").dtype == torch.int64
    assert torch.equal(restored.get_buffer("steps"), model.steps)
    assert torch.equal(restored.get_buffer("keep"), model.keep)
    with torch.no_grad():
        assert float((restored(x) - model(x)).norm() / model(x).norm()) < 0.05


def test_classic_models_still_write_format_1_2(mlp):
    data = sqc.compress(mlp, [(1, 64)], "prune,quant,huffman").to_bytes()
    assert container.read_layout(data).version == (1, 2)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.wte(ids)))


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    model = Tied().eval()
    artifact = sqc.compress(model, ["1,6:int64"], "quant{bits=8},huffman")
    assert artifact.model.aliases == {"head.weight": "wte.weight"}
    assert list(artifact.model.tensors) == ["wte.weight"]
    path = tmp_path / "tied.sqc"
    artifact.save(path)
    restored = sqc.load(path)
    assert restored.get_parameter("head.weight") is restored.get_parameter("wte.weight")
    assert set(restored.state_dict()) == {"wte.weight", "head.weight"}
    ids = torch.randint(0, 50, (3, 6))
    assert torch.equal(restored(ids), artifact.module()(ids))
    # the state_dict loads into the original architecture
    fresh = Tied()
    fresh.load_state_dict(restored.state_dict())
    assert torch.equal(fresh(ids), restored(ids))


def test_input_specs_carry_dtypes():
    assert parse_input_spec("1,16:int64").dtype == "int64"
    assert parse_input_spec("1x3x8x8").shape == (1, 3, 8, 8)
    ids, x = as_examples(["2,4:int64", (1, 3)])
    assert ids.dtype == torch.int64 and not ids.any() and x.dtype == torch.float32
    with pytest.raises(sqc.SqcError, match="dtype 'int65'"):
        parse_input_spec("1,2:int65")
    ir = trace(Tied(), [torch.randint(0, 50, (1, 6))])
    assert ir.inputs[0].dtype == "int64"


# --- the graph codec ----------------------------------------------------------------------------

ARGUMENTS = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**62), 2**62),
        st.floats(allow_nan=False),
        st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=8),
        st.sampled_from(
            [
                *(torch.float32, torch.int64, torch.bool, torch.bfloat16, torch.uint8, torch.strided),
                *(torch.channels_last, torch.contiguous_format, torch.device("cpu"), torch.device("cuda:1")),
            ]
        ),
    ),
    lambda inner: st.lists(inner, max_size=4).map(tuple),
    max_leaves=12,
)


@SETTINGS
@given(
    ARGUMENTS, st.dictionaries(st.sampled_from(["dim", "dtype", "device", "alpha"]), ARGUMENTS, max_size=3)
)
def test_every_argument_kind_round_trips(args, kwargs):
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(aten.add.Tensor, (x, args), kwargs))
    features: set[str] = set()
    doc = {"schema": 1, "nodes": graph_nodes(fx.GraphModule(nn.Module(), graph), {}, features)}
    rebuilt = decode_graph(doc, [], 0)
    call = next(n for n in rebuilt.nodes if n.op == "call_function")
    assert call.target is aten.add.Tensor
    assert call.args[1] == args and call.kwargs == kwargs
    assert "aten" in features


def _one_call(op: str) -> dict:
    return {"schema": 1, "nodes": [["in", "x"], ["call", "y", op, [{"%": 0}], {}, None], ["out", {"%": 1}]]}


@pytest.mark.parametrize(
    ("op", "why"),
    [
        ("aten::__class__", "no ATen operator"),
        ("aten::from_file", "may not appear"),
        ("aten::_print", "may not appear"),
        ("aten::relu.nope", "no overload"),
        ("prims::add", "unknown op"),
        ("aten::relu;import os", "not an ATen schema name"),
        ("torch.ops.aten.relu", "unknown op"),
    ],
)
def test_a_file_cannot_name_other_operators(op, why):
    with pytest.raises(SqcFormatError, match=why):
        decode_graph(_one_call(op), [], 0)


def test_storable_aten_names_resolve_to_themselves():
    for op in (
        aten.silu_.default,
        aten.add.Tensor,
        aten.lstm.input,
        aten.scaled_dot_product_attention.default,
    ):
        name = aten_name(op)
        assert name is not None and resolve_aten(name) is op
    assert aten_name(aten.from_file.default) is None


def test_device_arguments_are_checked():
    doc = {
        "schema": 1,
        "nodes": [
            ["in", "x"],
            ["call", "y", "aten::to.device", [{"%": 0}, {"device": "gpu0"}, {"dtype": "float32"}], {}, None],
            ["out", {"%": 1}],
        ],
    }
    with pytest.raises(SqcFormatError, match="malformed argument"):
        decode_graph(doc, [], 0)


# --- typed buffers and aliases in the container ------------------------------------------------


@SETTINGS
@given(
    st.sampled_from(sorted(TYPED_DTYPES)), st.lists(st.integers(1, 5), min_size=0, max_size=3), st.integers()
)
def test_typed_buffers_round_trip(number, shape, seed):
    dtype = TYPED_DTYPES[number]
    generator = torch.Generator().manual_seed(seed % 2**32)
    if dtype == torch.bool:
        values = torch.rand(shape, generator=generator) > 0.5
    elif dtype.is_floating_point:
        values = torch.randn(shape, generator=generator).to(dtype)
    else:
        info = torch.iinfo(dtype)
        values = torch.randint(max(info.min, -(2**40)), min(info.max, 2**40), shape, generator=generator).to(
            dtype
        )
    state = TensorState("b", tuple(shape), "buffer")
    state.dense = values
    codec, payload, _ = encode_tensor(state)
    assert codec == RAW_TYPED
    back, _ = decode_tensor(codec, payload, "b", tuple(shape), "buffer")
    assert back.dense.dtype == dtype and torch.equal(back.dense, values)
    for cut in range(len(payload)):
        with pytest.raises(SqcFormatError):
            decode_tensor(codec, payload[:cut], "b", tuple(shape), "buffer")


def test_typed_sections_are_buffers_with_sane_bytes():
    state = TensorState("b", (3,), "buffer")
    state.dense = torch.tensor([True, False, True])
    codec, payload, _ = encode_tensor(state)
    with pytest.raises(SqcFormatError, match="only buffers"):
        decode_tensor(codec, payload, "b", (3,), "param")
    bad = bytearray(payload)
    bad[-1] = 7
    with pytest.raises(SqcFormatError, match="other than 0 or 1"):
        decode_tensor(codec, bytes(bad), "b", (3,), "buffer")
    with pytest.raises(SqcFormatError, match="unknown dtype number"):
        decode_tensor(codec, bytes([42]) + payload[1:], "b", (3,), "buffer")


@pytest.mark.parametrize(
    "aliases",
    [
        [["t0", "t0"]],  # an alias may not be a tensor's own name
        [["a.b", "nope"]],  # ... nor point at a tensor that is not there
        [["a.b", "t0"], ["a.b", "t0"]],  # ... nor appear twice
        [['x"', "t0"]],  # ... nor hold a quote (names reach generated source)
        "t0",
    ],
)
def test_malformed_aliases_are_refused(aliases):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    from crafted import craft, raw_tensor

    data = craft([["t0", [2], "param"]], [raw_tensor([1.0, 2.0])], aliases=aliases)
    with pytest.raises(SqcFormatError, match="alias"):
        container.read_layout(data)


def test_integer_targets_refuse_aten_operators_naming_the_node(tmp_path):
    import numpy as np

    from sqc.targets.legalize import LowerError, legalize

    artifact = sqc.compress(Hard().eval(), [(1, 8)], "quant{bits=8}")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x_val=np.zeros((4, 8), np.float32), y_val=np.zeros(4, np.int64))
    with pytest.raises(LowerError, match=r"node \w+ \(aten::\w+.*no kernel for this operator"):
        legalize(artifact.model, calib)


def test_declared_sizes_still_bound_the_reader(tmp_path):
    """A typed buffer counts against the element budget like any tensor."""
    artifact = sqc.compress(Hard().eval(), [(1, 8)], "quant{bits=8}")
    data = artifact.to_bytes()
    layout = container.read_layout(data)
    elements = sum(math.prod(s.shape) for s, _, _ in layout.tensors.values())
    assert elements <= container.element_budget(len(data))


class Pair(nn.Module):
    """A tuple argument and a dict output whose keys are not in sorted order."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(5, 3)

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = pair
        return {"sum": self.a(x) + self.b(y), "diff": self.a(x) - self.b(y)}


def test_tuple_arguments_and_ordered_dict_outputs(tmp_path):
    model = Pair().eval()
    artifact = sqc.compress(model, [(torch.randn(1, 4), torch.randn(1, 5))], "quant{bits=8}")
    assert [s.shape for s in artifact.model.inputs] == [(1, 4), (1, 5)]
    path = tmp_path / "pair.sqc"
    artifact.save(path)
    restored = sqc.load(path)
    x, y = torch.randn(3, 4), torch.randn(3, 5)
    out = restored(x, y)
    assert list(out) == ["sum", "diff"]
    reference = model((x, y))
    assert all(float((out[k] - reference[k]).norm() / reference[k].norm()) < 0.05 for k in out)


def test_declared_input_sizes_are_capped_before_anything_is_built():
    import sys
    from pathlib import Path

    from sqc.ir.records import MAX_INPUT_ELEMENTS

    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    from crafted import craft, raw_tensor

    data = craft(
        [["t0", [2], "param"]], [raw_tensor([1.0, 2.0])], inputs=[["x", [1, 700_000_000], "float32"]]
    )
    with pytest.raises(SqcFormatError, match="inputs declare more than"):
        container.read_layout(data)
    with pytest.raises(sqc.SqcError, match="more than"):
        parse_input_spec(f"1,{MAX_INPUT_ELEMENTS + 1}")
    with pytest.raises(sqc.SqcError, match="more than"):
        as_examples([(1, MAX_INPUT_ELEMENTS + 1)])


def test_wide_argument_lists_are_refused_by_size():
    from sqc.formats.graph_codec import VALUES_BASE

    wide = list(range(VALUES_BASE * 2))
    doc = {
        "schema": 1,
        "nodes": [["in", "x"], ["call", "y", "reshape", [{"%": 0}, wide], {}, None], ["out", {"%": 1}]],
    }
    with pytest.raises(SqcFormatError, match="more argument values"):
        decode_graph(doc, [], 0, max_values=VALUES_BASE + 4 * 100)


def test_tied_weights_stay_one_tensor_in_a_decompressed_pt2(tmp_path):
    """torch.export.save writes every named parameter apart; without the alias the program holds the
    tied tensor once, and a .pt2 read back (by torch or by sqc) uses it for both."""
    from sqc.targets.pytorch import write_model

    path = tmp_path / "tied.sqc"
    sqc.compress(Tied().eval(), ["1,6:int64"], "quant{bits=8}").save(path)
    program_path = tmp_path / "tied.pt2"
    write_model(path, program_path, "export")
    program = torch.export.load(str(program_path))
    assert list(program.state_dict) == ["wte.weight"]
    ids = torch.randint(0, 50, (1, 6))
    assert torch.equal(program.module()(ids), sqc.load(path)(ids))
    again = sqc.compress(program_path, None, "quant{bits=8}")
    assert list(again.model.tensors) == ["wte.weight"]


def test_cli_takes_example_inputs_from_a_file(tmp_path, cli, models_dir, monkeypatch):
    """--example-inputs: tensors (int64 ids here) read with weights_only=True; a pickle is refused."""
    monkeypatch.syspath_prepend(str(models_dir))
    from sqc_zoo_models import GPT2Like

    torch.manual_seed(0)
    model = GPT2Like().eval()
    state = tmp_path / "gpt.pt"
    torch.save(model.state_dict(), state)
    ids = torch.randint(0, 100, (1, 12))
    examples = tmp_path / "inputs.pt"
    torch.save({"ids": ids}, examples)
    out = tmp_path / "gpt.sqc"
    result = cli(
        "compress", state, "--arch", "sqc_zoo_models:GPT2Like", "--example-inputs", examples, "-o", out
    )
    assert result.code == 0, result.err
    layout = container.read_layout(out.read_bytes())
    assert layout.meta["inputs"][0][1:] == [[1, 12], "int64"]

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    evil = tmp_path / "evil.pt"
    torch.save([Evil()], evil)
    result = cli(
        "compress", state, "--arch", "sqc_zoo_models:GPT2Like", "--example-inputs", evil, "-o", out, "--force"
    )
    assert result.code == 1 and "--example-inputs" in result.err and len(result.err.strip().splitlines()) == 1
    both = cli(
        "compress",
        state,
        "--arch",
        "x:y",
        "--example-inputs",
        examples,
        "--input-shape",
        "1,2",
        "-o",
        tmp_path / "b",
    )
    assert both.code == 1 and "not both" in both.err


def test_a_model_that_checks_its_batch_size_is_captured_as_given():
    """Captured on a doubled batch the check fails; the capture is redone on the example as given."""

    class BatchOne(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] != 1:
                raise ValueError("one sample at a time")
            return self.norm(x)

    model = BatchOne().eval()
    ir = trace(model, [(1, 8)])
    x = torch.randn(1, 8)
    assert torch.equal(ir.forward(x), model(x))


def test_an_infinite_tolerance_is_refused(mlp):
    with pytest.raises(sqc.SqcError, match="finite, non-negative"):
        sqc.compress(mlp, [(1, 64)], "prune", tolerance=float("inf"))
