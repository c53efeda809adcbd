"""Loading models three ways, tracing real model shapes, and the errors when it cannot be done."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sqc.errors import ModelLoadError, TraceError
from sqc.frontend.loading import load_model
from sqc.frontend.trace import trace
from sqc.ir.ops import FUNCTIONS


def test_firenet_traces_to_the_vocabulary_and_computes_the_same(firenet):
    ir = trace(firenet, [(2, 3, 16, 16)])
    for node in ir.graph_module.graph.nodes:
        if node.op == "call_function":
            assert node.target in FUNCTIONS.values(), node
        assert node.op != "call_module"
    x = torch.randn(5, 3, 16, 16)  # another batch size than traced with
    assert torch.equal(ir.forward(x), firenet(x))
    ops = {n.target.__name__ for n in ir.graph_module.graph.nodes if n.op == "call_function"}
    assert {"conv2d", "conv1d", "batch_norm", "prelu", "cat", "add", "pad", "linear", "softmax"} <= ops
    assert "dropout" not in str(ir.graph_module.code)
    assert {s.role for s in ir.tensors.values()} == {"weight", "param", "buffer"}
    assert "bn1.num_batches_tracked" not in ir.tensors  # unused by inference: not stored


def test_concrete_args_are_specialised(firenet):
    ir = trace(firenet, [(1, 3, 16, 16)])
    placeholders = [n.name for n in ir.graph_module.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["x"]


def test_shapes_are_propagated(firenet):
    ir = trace(firenet, [(1, 3, 16, 16)])
    shapes = {n.name: n.meta.get("shape") for n in ir.graph_module.graph.nodes}
    assert shapes["conv1"] == (1, 16, 16, 16)
    assert shapes["fc"] == (1, 10)


def test_input_shape_guessed_from_first_linear():
    sys.path.insert(0, str(Path(__file__).parent / "models_pkg"))
    from sqc_test_models import Small

    ir = trace(Small().eval())
    assert ir.inputs[0].shape == (1, 16)


def test_cannot_guess_input_shape_of_a_cnn(firenet):
    with pytest.raises(ModelLoadError, match="--input-shape"):
        trace(firenet)


def test_wrong_input_shape_names_the_node(mlp):
    with pytest.raises(ModelLoadError, match="does not fit node fc1"):
        trace(mlp, [(1, 65)])


def test_trace_failure_names_module_line_and_reason():
    from sqc_test_models import DataDependent

    with pytest.raises(TraceError) as info:
        trace(DataDependent(), [(1, 16)])
    message = str(info.value)
    assert "DataDependent" in message and "sqc_test_models.py" in message
    assert "if x.sum() > 0" in message


@torch.library.custom_op("sqctest::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_twice.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def test_custom_operator_is_refused_with_node_and_line():
    """The open op set is ATen: an operator registered by the user's own library cannot be stored."""

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _twice(self.fc(x))

    with pytest.raises(TraceError) as info:
        trace(Custom(), [(1, 4)])
    message = str(info.value)
    assert "node twice" in message and "sqctest.twice" in message and "test_frontend.py" in message
    assert "\n" not in message


def test_ops_outside_the_vocabulary_are_kept_as_aten():
    """LayerNorm and cumsum stopped tracing once; now the model is captured with torch.export and
    the operators the vocabulary lacks stay ATen operators of the graph."""
    from sqc_test_models import UsesUnsupported

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(self.fc(x), 1)

    for model, shape in ((UsesUnsupported().eval(), (2, 16)), (Odd().eval(), (2, 4))):
        ir = trace(model, [shape])
        targets = {str(n.target) for n in ir.graph_module.graph.nodes if n.op == "call_function"}
        assert targets & {"aten.layer_norm.default", "aten.cumsum.default"}
        x = torch.randn(shape)
        assert torch.equal(ir.forward(x), model(x))


def test_nan_weights_are_refused(mlp):
    with torch.no_grad():
        mlp.fc2.weight[0, 0] = float("nan")
    with pytest.raises(ModelLoadError, match=r"fc2\.weight contains NaN or Inf"):
        trace(mlp, [(1, 64)])


# --- the three ways to load a model file ----------------------------------------------------------


@pytest.fixture
def small_state(tmp_path: Path, models_dir: Path, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(models_dir))
    from sqc_test_models import Small

    torch.manual_seed(0)
    path = tmp_path / "small.pt"
    torch.save(Small().state_dict(), path)
    return path


def test_state_dict_with_arch(small_state: Path):
    loaded = load_model(small_state, "sqc_test_models:Small")
    assert isinstance(loaded.module, nn.Module) and loaded.input_shapes is None


def test_state_dict_is_taken_over_not_copied(small_state: Path):
    """The architecture is built on the meta device and the checkpoint's tensors become its own."""
    loaded = load_model(small_state, "sqc_test_models:Small")
    expected = torch.load(small_state)
    for name, value in loaded.module.state_dict().items():
        assert not value.is_meta and torch.equal(value, expected[name])
    torch.manual_seed(1)
    x = torch.randn(3, 16)
    from sqc_test_models import Small

    reference = Small()
    reference.load_state_dict(expected)
    assert torch.equal(loaded.module(x), reference(x))


FALLBACK_ARCHES = """
import torch
from torch import nn


class NeedsRealTensors(nn.Module):  # computes with a weight while it is built
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.norm = float(self.fc.weight.abs().sum().item())

    def forward(self, x):
        return self.fc(x)


class KeepsABuffer(nn.Module):  # a non-persistent buffer is not in the state_dict
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.register_buffer("offset", torch.full((4,), 2.0), persistent=False)

    def forward(self, x):
        return self.fc(x) + self.offset
"""


@pytest.mark.parametrize("name", ["NeedsRealTensors", "KeepsABuffer"])
def test_arch_that_cannot_be_built_on_meta_is_built_for_real(tmp_path: Path, monkeypatch, name: str):
    (tmp_path / "fallback_arches.py").write_text(FALLBACK_ARCHES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fallback_arches

    torch.manual_seed(0)
    original = getattr(fallback_arches, name)()
    torch.save(original.state_dict(), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", f"fallback_arches:{name}").module
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    x = torch.randn(2, 16)
    assert torch.equal(loaded(x), original(x))


def test_state_dict_in_a_checkpoint_dict(tmp_path: Path, small_state: Path):
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"state_dict": torch.load(small_state), "epoch": 3}, wrapped)
    assert load_model(wrapped, "sqc_test_models:Small").module is not None


def test_state_dict_that_does_not_fit(small_state: Path):
    with pytest.raises(
        ModelLoadError, match=r"fc1.weight has shape \(32, 16\), the architecture expects \(64, 16\)"
    ):
        load_model(small_state, "sqc_test_models:Wider")


def test_state_dict_without_arch(small_state: Path):
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(small_state)


@pytest.mark.parametrize(
    ("arch", "fragment"),
    [
        ("nocolon", "expected pkg.module:factory"),
        ("no_such_mod:X", "cannot import"),
        ("sqc_test_models:Nope", "no attribute"),
    ],
)
def test_bad_arch(small_state: Path, arch: str, fragment: str):
    with pytest.raises(ModelLoadError, match=fragment):
        load_model(small_state, arch)


def test_pickled_module_needs_trust(tmp_path: Path, mlp):
    path = tmp_path / "whole.pt"
    torch.save(mlp, path)
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        load_model(path)
    loaded = load_model(path, trust_pickle=True)
    x = torch.randn(2, 64)
    assert torch.equal(trace(loaded.module, [(1, 64)]).forward(x), mlp(x))


def test_export_program_needs_no_code(tmp_path: Path, firenet):
    path = tmp_path / "fire.pt2"
    x = torch.randn(1, 3, 16, 16)
    torch.export.save(torch.export.export(firenet, (x,)), str(path))
    loaded = load_model(path)
    assert [(s.shape, s.dtype) for s in loaded.input_shapes] == [((1, 3, 16, 16), "float32")]
    ir = trace(loaded.module, loaded.input_shapes)
    assert torch.allclose(ir.forward(x), firenet(x), atol=1e-6)
    ops = {n.target.__name__ for n in ir.graph_module.graph.nodes if n.op == "call_function"}
    assert {"conv2d", "batch_norm", "cat", "prelu", "linear"} <= ops


@pytest.mark.parametrize("content", [b"", b"hello, not a model", b"PK\x03\x04garbage"])
def test_not_a_model_file(tmp_path: Path, content: bytes):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"junk\.pt"):
        load_model(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "absent.pt")


def test_functional_and_method_forms_collapse():
    class Forms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.fc(x)) + F.relu(x).sigmoid()
            y = y.view(y.size(0), 2, 4).permute(0, 2, 1).reshape(-1, 8).contiguous()
            return torch.add(y, x).mean(dim=1, keepdim=True)

    model = Forms().eval()
    ir = trace(model, [(3, 8)])
    x = torch.randn(6, 8)
    assert torch.equal(ir.forward(x), model(x))
    assert {n.target for n in ir.graph_module.graph.nodes if n.op == "call_method"} == {"size"}
