"""The ONNX target: ONNX Runtime computes what ``sqc.load`` computes, from the file's own integer weights.

Every model is compressed, saved, lowered with ``sqc lower --target onnx`` and run by ONNX Runtime on
real inputs (the MNIST images for the LeNets, random ones elsewhere, at a batch size other than the
traced one); the outputs must match the module ``sqc.load`` rebuilds from the same ``.sqc`` to float
rounding (the weights are the same bits: only the order of float additions differs), and the weights
ONNX Runtime dequantizes must equal the records' decoded values exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqc
from sqc.ir.records import CODE_DTYPE, FixedPoint, TensorState, index_dtype

onnx = pytest.importorskip("onnx", reason="the onnx target needs onnx (pip install 'sqc[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx target's tests run models in onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "examples" / "mnist_test_1k.npz"


def lenet(name: str) -> nn.Module:
    """The trained MNIST LeNets of ``examples/`` (``sqc.models`` has the same layer names)."""
    from sqc.models import get_model

    model = get_model(name.lower())
    model.load_state_dict(torch.load(ROOT / "examples" / f"{name.lower()}.pt", weights_only=True))
    return model.eval()


def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(MNIST) as data:
        return torch.from_numpy(data["x_val"]), torch.from_numpy(data["y_val"])


def lower(cli, source: Path, output: Path, *options: str) -> dict:
    extra = [a for o in options for a in ("--option", o)]
    result = cli("lower", source, "--target", "onnx", "-o", output, *extra, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


FLOAT_MATMUL = ("session.qdq_matmulnbits_accuracy_level", "1")
"""ONNX Runtime fuses an int8/int4 ``DequantizeLinear -> MatMul`` into ``MatMulNBits``, which by default
(accuracy level 4) quantizes the activations to int8 as well; level 1 keeps the fused kernel in fp32."""


def session(path: Path, exact: bool = True):
    options = ort.SessionOptions()
    if exact:
        options.add_session_config_entry(*FLOAT_MATMUL)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, *inputs: torch.Tensor, exact: bool = True) -> list[np.ndarray]:
    sess = session(path, exact)
    feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs, strict=True)}
    return sess.run(None, feeds)


def reference(path: Path, *inputs: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = sqc.load(path)(*inputs)
    outs = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, tuple) else [out]
    return [o.numpy() for o in outs]


def assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, float(np.abs(w).max()))
        assert float(np.abs(g - w).max()) <= 1e-5 * scale


def decoded_weights(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The weights as ONNX Runtime computes them: each named value made a graph output."""
    model = onnx.load(str(path))
    for name in names:
        model.graph.node.append(onnx.helper.make_node("Identity", [name], [f"probe:{name}"]))
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(f"probe:{name}"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.zeros([1 if isinstance(d, str) or d is None else d for d in i.shape], np.float32)
        for i in sess.get_inputs()
    }
    outputs = sess.run([f"probe:{n}" for n in names], feeds)
    return dict(zip(names, outputs, strict=True))


LENET_CASES = [
    ("LeNet300", "prune{sparsity=0.92},share{bits=5},huffman"),
    ("LeNet300", "prune{sparsity=0.9},quant{bits=8 params=8},rans"),
    ("LeNet5", "prune{sparsity=0.9},share{bits=4},quant{bits=8},huffman"),
    ("LeNet5", "prune{sparsity=0.8},quant{bits=4 granularity=channel},huffman"),
    ("LeNet5", "quant{bits=12},rans"),
]


@pytest.mark.parametrize(("arch", "pipeline"), LENET_CASES)
def test_lenets_match_sqc_load_on_mnist(cli, tmp_path: Path, arch: str, pipeline: str):
    source, output = tmp_path / "m.sqc", tmp_path / "m.onnx"
    artifact = sqc.compress(lenet(arch), [(1, 1, 28, 28)], pipeline)
    artifact.save(source)
    report = lower(cli, source, output)
    x, y = mnist()
    got, want = run_onnx(output, x), reference(source, x)
    assert_close(got, want)
    assert (got[0].argmax(1) == want[0].argmax(1)).all()  # the same prediction on all 1,000 images
    # ONNX Runtime's defaults may compute fused int8 matmuls on int8 activations: close, not exact
    fast = run_onnx(output, x, exact=False)[0]
    assert float(np.abs(fast - want[0]).max()) <= 0.01 * float(np.abs(want[0]).max())
    assert (fast.argmax(1) == want[0].argmax(1)).mean() >= 0.99
    accuracy = float((torch.from_numpy(got[0]).argmax(1) == y).float().mean())
    assert accuracy > 0.9  # a working classifier, not a constant
    # the weights ONNX Runtime multiplies with are the records' values, bit for bit
    weights = [s for s in artifact.model.tensors.values()]
    runtime = decoded_weights(output, [s.name for s in weights])
    for state in weights:
        assert np.array_equal(runtime[state.name], state.decode().numpy()), state.name
    assert report["bytes"] == output.stat().st_size and report["sqc_bytes"] == source.stat().st_size


def test_weights_stay_integer(cli, tmp_path: Path):
    """Quantized weights are integer initializers (4-bit packed where the codes fit), shared weights a
    float codebook and narrow indices: no float copy of a compressed weight is in the file."""
    tp = onnx.TensorProto

    def initializers(pipeline: str, arch: str = "LeNet5") -> dict:
        source, output = tmp_path / "m.sqc", tmp_path / "m.onnx"
        sqc.compress(lenet(arch), [(1, 1, 28, 28)], pipeline).save(source, force=True)
        result = cli("lower", source, "--target", "onnx", "-o", output, "--force")
        assert result.code == 0, result.err
        return {i.name: i for i in onnx.load(str(output)).graph.initializer}

    dense = initializers("quant{bits=4},huffman")
    assert dense["fc1.weight.codes"].data_type == tp.INT4 and dense["conv1.weight.codes"].data_type == tp.INT4
    assert not any(
        i.data_type == tp.FLOAT and i.name.startswith("fc1.weight") and "scale" not in i.name
        for i in dense.values()
    )

    shared = initializers("share{bits=4},huffman", "LeNet300")
    assert shared["fc1.weight.codes"].data_type == tp.UINT4
    assert list(shared["fc1.weight.codebook"].dims) == [16]

    # pruned: the kept codes and their 4/8/16-bit position gaps, never every position
    sparse = initializers("prune{sparsity=0.9},quant{bits=4},huffman")
    assert sparse["fc1.weight.kept"].data_type == tp.INT4
    assert sparse["fc1.weight.gaps"].data_type in (tp.UINT4, tp.UINT8, tp.UINT16)
    assert "fc1.weight.codes" not in sparse
    assert sparse["fc1.weight.kept"].dims[0] < 0.2 * 500 * 800  # 10 % kept, and a few filler entries


def test_size_is_reported_next_to_the_sqc(cli, tmp_path: Path):
    source, output = tmp_path / "lenet.sqc", tmp_path / "lenet.onnx"
    sqc.compress(lenet("LeNet300"), [(1, 1, 28, 28)], "prune{sparsity=0.9},share{bits=5},huffman").save(
        source
    )
    result = cli("lower", source, "--target", "onnx", "-o", output)
    assert result.code == 0, result.err
    onnx_bytes, sqc_bytes = output.stat().st_size, source.stat().st_size
    assert f"{onnx_bytes:,} bytes" in result.out and f"lenet.sqc: {sqc_bytes:,} bytes" in result.out
    dense = lower(cli, source, tmp_path / "dense.onnx", "weights=float")
    assert dense["weights"] == "float" and dense["bytes"] > 3 * onnx_bytes  # fp32 vs 1-byte indices
    x = mnist()[0][:64]
    assert_close(run_onnx(tmp_path / "dense.onnx", x), run_onnx(output, x))


class BiRNN(nn.Module):
    """Two bidirectional layers: ONNX's direction=bidirectional, the reverse weights' gates reordered."""

    def __init__(self, kind: str = "LSTM") -> None:
        super().__init__()
        self.rnn = getattr(nn, kind)(8, 12, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


def _zoo(name: str):
    import sqc_zoo_models as zoo

    return {
        "bilstm": (BiRNN, "1,6,8"),
        "bigru": (lambda: BiRNN("GRU"), "1,6,8"),
        "encoder": (zoo.Encoder, "1,10,32"),
        "lstm": (zoo.LSTMModel, "1,12,16"),
        "gru": (zoo.GRUModel, "1,12:int64"),
    }[name]


@pytest.mark.parametrize(
    ("model", "pipeline"),
    [
        ("firenet", "prune{sparsity=0.8},share{bits=5},quant{bits=8},huffman"),
        ("firenet", "quant{bits=8 granularity=channel params=8},rans"),
        ("encoder", "prune{sparsity=0.5},quant{bits=8},huffman"),
        ("lstm", "prune{sparsity=0.5},share{bits=4},rans"),
        ("gru", "quant{bits=6},huffman"),
        ("bilstm", "prune{sparsity=0.5},quant{bits=8},huffman"),
        ("bigru", "share{bits=3},rans"),
    ],
)
def test_models_match_sqc_load(cli, tmp_path: Path, firenet, model: str, pipeline: str):
    from sqc.frontend.trace import parse_input_spec

    if model == "firenet":
        net, spec = firenet, parse_input_spec("1,3,16,16")
    else:
        factory, text = _zoo(model)
        torch.manual_seed(0)
        net, spec = factory().eval(), parse_input_spec(text)
    source, output = tmp_path / "m.sqc", tmp_path / "m.onnx"
    sqc.compress(net, [spec], pipeline).save(source)
    lower(cli, source, output)
    generator = torch.Generator().manual_seed(3)
    shape = (5, *spec.shape[1:])  # another batch size than the traced one: the batch is symbolic
    if spec.dtype == "int64":
        x = torch.randint(0, 100, shape, generator=generator)
    else:
        x = torch.randn(shape, generator=generator)
    assert_close(run_onnx(output, x), reference(source, x))


class Flips(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(self.fc(x), [1])


def test_an_op_without_onnx_form_is_refused_by_node(cli, tmp_path: Path):
    source, output = tmp_path / "flip.sqc", tmp_path / "flip.onnx"
    sqc.compress(Flips().eval(), [(1, 16)], "quant{bits=8}").save(source)
    result = cli("lower", source, "--target", "onnx", "-o", output)
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.count("\n") == 1
    assert "target onnx: node flip (aten::flip)" in result.err and "no ONNX form" in result.err
    assert not output.exists()


def test_options_and_missing_onnx(cli, tmp_path: Path, monkeypatch):
    source = tmp_path / "m.sqc"
    sqc.compress(lenet("LeNet300"), [(1, 1, 28, 28)], "quant{bits=8}").save(source)
    out = tmp_path / "m.onnx"
    bad = cli("lower", source, "--target", "onnx", "-o", out, "--option", "weights=half")
    assert bad.code == 1 and "weights=half" in bad.err
    calib = cli("lower", source, "--target", "onnx", "-o", out, "--calib", MNIST)
    assert calib.code == 1 and "no --calib" in calib.err
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    missing = cli("lower", source, "--target", "onnx", "-o", out)
    assert missing.code == 1 and "pip install 'sqc[onnx]'" in missing.err
    assert not out.exists()


@st.composite
def records(draw) -> TensorState:
    """A pruned/shared/fixed-point record: any density, runs of pruned weights longer than every gap
    width (16-bit gaps need filler entries past 65,535), codebooks with and without a +0.0 entry."""
    rows = draw(st.integers(1, 6))
    cols = draw(st.sampled_from([1, 7, 300, 20_000]))
    shape = (rows, cols)
    numel = rows * cols
    seed = draw(st.integers(0, 2**31))
    generator = torch.Generator().manual_seed(seed)
    density = draw(st.sampled_from([0.0, 0.001, 0.05, 0.5, 1.0]))
    mask = torch.rand(shape, generator=generator) < density
    if draw(st.booleans()):
        mask = None
    kind = draw(st.sampled_from(["fixed", "channel", "shared"]))
    state = TensorState("layer.weight", shape, "weight")
    if kind == "shared":
        entries = draw(st.sampled_from([2, 15, 16, 17, 256, 300]))
        book = torch.randn(entries, generator=generator)
        if draw(st.booleans()):
            book[entries // 2] = 0.0
        state.codebook = book
        state.codes = torch.randint(0, entries, shape, generator=generator).to(index_dtype(entries))
    else:
        bits = draw(st.sampled_from([2, 4, 5, 8, 12, 16, 20]))
        frac = (3,) * rows if kind == "channel" else (5,)
        mult = (3,) * len(frac) if bits <= 16 and draw(st.booleans()) else ()
        state.fmt = FixedPoint(bits, frac, mult)
        low, high = state.fmt.qmin, state.fmt.qmax
        state.codes = torch.randint(low, high + 1, shape, generator=generator).to(CODE_DTYPE)
    state.set_mask(mask)
    assert numel == state.numel
    return state


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_weight_layouts_decode_exactly(state: TensorState):
    """Every layout the target chooses (dense or kept+gaps, with fillers, a codebook's zero entry
    appended or its own) gives back in ONNX Runtime exactly the value the record decodes to."""
    check_layout(state)


def test_a_codebook_whose_zero_entry_has_a_small_index_keeps_wide_codes():
    """17 centroids need 5-bit codes even when the +0.0 entry a pruned position reads is entry 8 (a
    hypothesis find: the codes were packed at the filler's 4 bits, so code 16 read entry 0)."""
    book = torch.randn(17, generator=torch.Generator().manual_seed(0))
    book[8] = 0.0
    state = TensorState("layer.weight", (1, 7), "weight")
    state.codebook = book
    state.codes = torch.tensor([[7, 0, 5, 4, 16, 0, 0]], dtype=torch.uint8)
    state.set_mask(torch.tensor([[True, False, True, True, True, False, True]]))
    check_layout(state)


def check_layout(state: TensorState) -> None:
    from sqc.targets.onnx_graph import Converter

    state.verify()
    converter = Converter(None)  # type: ignore[arg-type]  # only the weight emitters are used
    name = converter._fixed(state) if state.kind == "fixed" else converter._shared(state)
    helper = onnx.helper
    out = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(state.shape))
    graph = helper.make_graph(converter.nodes, "w", [], [out], initializer=converter.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    want = state.decode().numpy()
    assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))
