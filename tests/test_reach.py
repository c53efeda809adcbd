"""Reach (issue 14): today's architecture families compress and come back exactly.

Every family is built here or in ``models_pkg/sqc_zoo_models.py`` (no download): a timm-like CNN
(``torch._assert``, SE, hardswish, depthwise), a ConvNeXt-like network, a ViT-like encoder, BERT- and
GPT-2-like models with tied embeddings, the real Hugging Face ``BertModel`` and ``GPT2LMHeadModel`` from
small configs (where ``transformers`` imports), LSTM and GRU models, ``nn.TransformerEncoder`` and a
``forward(x, mask=None)``. For each, through the API and the CLI: the outputs of ``sqc.load`` and of the
decompressed ``.pt2`` equal the compressed IR's own, bit for bit; 8-bit weights alone stay within a few
percent of the original; ``inspect`` reads the file. Tied weights stay tied and are stored once; integer
and bool buffers come back exactly.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from sqc_zoo_models import FAMILIES, BertLike, TupleInput

import sqc
from sqc.frontend.trace import parse_input_spec, trace

PRUNE_QUANT = "prune{sparsity=0.5},quant{bits=8},huffman"
PRUNE_SHARE = "prune{sparsity=0.5},share{bits=5},huffman"
# per layer: with the default global ranking, a second copy of the embedding would move every layer's
# threshold, and the tied-vs-untied size comparison would measure that instead of the copy
PRUNE_SHARE_PER_LAYER = "prune{sparsity=0.5 scope=layer},share{bits=5},huffman"
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
NO_TRANSFORMERS = (
    "transformers is not installed (pip install transformers); the Hugging Face classes are not tested"
)


def family_params() -> list[Any]:
    params = []
    for name in FAMILIES:
        if name == "tuple_input":
            continue  # test_tuple_input_forward below
        marks = (
            [pytest.mark.skipif(not HAS_TRANSFORMERS, reason=NO_TRANSFORMERS)]
            if name.startswith("hf_")
            else []
        )
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = FAMILIES[name][0]().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def inputs_for(name: str, seed: int = 1) -> list[torch.Tensor]:
    """Random inputs of the family's declared shapes: normal floats, token ids in [1, 100)."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for text in FAMILIES[name][1]:
        spec = parse_input_spec(text)
        if spec.dtype == "int64":
            made.append(torch.randint(1, 100, spec.shape, generator=generator))
        else:
            made.append(torch.randn(spec.shape, generator=generator))
    return made


def outputs(y: Any) -> dict[str, torch.Tensor]:
    """A model's outputs by name: a tensor is ``out``, a dict (or ``ModelOutput``) its tensor items."""
    if isinstance(y, torch.Tensor):
        return {"out": y}
    if isinstance(y, dict):
        return {str(k): v for k, v in y.items() if isinstance(v, torch.Tensor)}
    return {str(i): v for i, v in enumerate(y) if isinstance(v, torch.Tensor)}


def assert_equal_outputs(got: Any, want: Any) -> None:
    got, want = outputs(got), outputs(want)
    assert list(got) == list(want)  # same keys, same order
    for key in want:
        assert torch.equal(got[key], want[key]), key


@torch.no_grad()
def run(model: Any, x: list[torch.Tensor]) -> Any:
    return model(*x)


def relative_l2(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@functools.cache
def compressed(name: str, pipeline: str) -> sqc.Artifact:
    """The family compressed through the API (example tensors), shared by the API and CLI tests."""
    return sqc.compress(build(name), inputs_for(name), pipeline)


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.mark.parametrize("name", family_params())
def test_api_round_trip(name: str, zoo_dir: Path) -> None:
    """API, both pipelines: ``sqc.load`` of the saved file gives the compressed IR's outputs exactly (dict
    outputs keep their keys and order); ``quant{bits=8}`` alone is within a few percent of the original."""
    model, x = build(name), inputs_for(name)
    original = outputs(run(model, x))
    for pipeline in (PRUNE_QUANT, PRUNE_SHARE):
        artifact = compressed(name, pipeline)
        path = zoo_dir / f"{name}_api_{pipeline[20:25]}.sqc"
        artifact.save(path, force=True)
        want = run(artifact.module(), x)
        assert_equal_outputs(run(sqc.load(path), x), want)
        assert set(outputs(want)) <= set(original)  # a ModelOutput comes back as a dict of its tensors
    quantized = outputs(run(sqc.compress(model, x, "quant{bits=8}").module(), x))
    for key, value in quantized.items():
        if value.is_floating_point():
            assert relative_l2(value, original[key]) < 0.05, key


@pytest.mark.parametrize("name", family_params())
def test_cli_round_trip(
    name: str, zoo_dir: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Any]
) -> None:
    """CLI, state_dict + ``--arch``: the file is byte for byte the API's; ``decompress -o .pt2`` gives a
    program whose outputs equal the compressed IR's; ``inspect --json`` reads it."""
    monkeypatch.syspath_prepend(str(models_dir))
    monkeypatch.chdir(zoo_dir)
    model, x = build(name), inputs_for(name)
    torch.save(model.state_dict(), f"{name}.pt")
    shapes = [arg for text in FAMILIES[name][1] for arg in ("--input-shape", text)]
    # each family through the CLI with one of the two pipelines (alternating; both run through the API)
    pipeline = (PRUNE_QUANT, PRUNE_SHARE)[list(FAMILIES).index(name) % 2]
    out = f"{name}_cli.sqc"
    made = cli("compress", f"{name}.pt", "--arch", f"sqc_zoo_models:{FAMILIES[name][0].__name__}",
               *shapes, "-p", pipeline, "-o", out, "--force")  # fmt: skip
    assert made.code == 0, made.err
    artifact = compressed(name, pipeline)
    assert (zoo_dir / out).read_bytes() == artifact.to_bytes()
    shown = cli("inspect", out, "--json")
    assert shown.code == 0, shown.err
    info = json.loads(shown.out)
    assert info["size"] == (zoo_dir / out).stat().st_size
    done = cli("decompress", out, "-o", f"{name}.pt2", "--force")
    assert done.code == 0, done.err
    program = torch.export.load(zoo_dir / f"{name}.pt2").module()
    assert_equal_outputs(run(program, x), run(artifact.module(), x))


def untied(model: nn.Module, alias: str, name: str) -> nn.Module:
    """The same model with ``alias`` an independent copy of ``name``."""
    *path, leaf = alias.split(".")
    owner = model.get_submodule(".".join(path))
    setattr(owner, leaf, nn.Parameter(model.get_parameter(name).detach().clone()))
    return model


def tied_cases() -> list[Any]:
    hf = pytest.mark.skipif(not HAS_TRANSFORMERS, reason=NO_TRANSFORMERS)
    return [
        pytest.param("gpt2", "lm_head.weight", "wte.weight", id="gpt2"),
        pytest.param("bert", "decoder.weight", "word_embeddings.weight", id="bert"),
        pytest.param("hf_gpt2", "lm_head.weight", "transformer.wte.weight", id="hf_gpt2", marks=hf),
    ]


@pytest.mark.parametrize(("name", "alias", "weight"), tied_cases())
def test_tied_weights_stay_tied_and_are_stored_once(
    name: str, alias: str, weight: str, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    model, x = build(name), inputs_for(name)
    assert model.get_parameter(alias) is model.get_parameter(weight)
    artifact = compressed(name, PRUNE_SHARE_PER_LAYER)
    assert artifact.model.aliases == {alias: weight}
    artifact.save(tmp_path / "tied.sqc")
    restored = sqc.load(tmp_path / "tied.sqc")
    assert restored.get_parameter(alias) is restored.get_parameter(weight)
    assert cli("decompress", tmp_path / "tied.sqc", "-o", tmp_path / "tied.pt").code == 0
    pickled = torch.load(tmp_path / "tied.pt", weights_only=False)
    assert pickled.get_parameter(alias) is pickled.get_parameter(weight)
    assert_equal_outputs(run(pickled, x), run(artifact.module(), x))
    # stored once: the untied model's file holds the embedding twice
    separate = sqc.compress(untied(build(name), alias, weight), x, PRUNE_SHARE_PER_LAYER)
    assert separate.model.aliases == {}
    embedding = model.get_parameter(weight).numel()
    assert len(separate.to_bytes()) - len(artifact.to_bytes()) > embedding * 5 / 8 * 0.5  # ~ 5-bit codes


def test_integer_and_bool_buffers_come_back_exactly(tmp_path: Path) -> None:
    """BERT's int64 ``position_ids``/``token_type_ids`` and GPT-2's bool causal mask are not weights:
    stored exactly, in their dtype, through every pipeline."""
    for model, x, buffers in (
        (build("bert"), inputs_for("bert"), ("position_ids", "token_type_ids")),
        (build("gpt2"), inputs_for("gpt2"), ("causal",)),
    ):
        artifact = sqc.compress(model, x, PRUNE_QUANT)
        artifact.save(tmp_path / "b.sqc", force=True)
        restored = sqc.load(tmp_path / "b.sqc")
        for buffer in buffers:
            want = model.get_buffer(buffer)
            assert artifact.model.tensors[buffer].role == "buffer"
            got = restored.get_buffer(buffer)
            assert got.dtype == want.dtype and torch.equal(got, want), buffer


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason=NO_TRANSFORMERS)
def test_hf_bert_position_ids_and_dict_output(tmp_path: Path) -> None:
    """The real ``BertModel``: its int64 ``position_ids`` come back exactly; the ``ModelOutput`` comes back
    as a dict with the same keys in the same order."""
    model, x = build("hf_bert"), inputs_for("hf_bert")
    artifact = sqc.compress(model, x, PRUNE_QUANT)
    artifact.save(tmp_path / "bert.sqc")
    restored = sqc.load(tmp_path / "bert.sqc")
    ids = restored.get_buffer("embeddings.position_ids")
    assert ids.dtype == torch.int64 and torch.equal(ids, model.get_buffer("embeddings.position_ids"))
    got = run(restored, x)
    assert isinstance(got, dict) and list(got) == ["last_hidden_state", "pooler_output"]


def test_dict_output_keeps_its_order_through_the_file(tmp_path: Path) -> None:
    """A dict output in unsorted key order (as a ``ModelOutput`` is) is written as ordered pairs."""
    model, x = BertLike().eval(), [torch.randint(1, 100, (1, 8))]
    artifact = sqc.compress(model, x, "quant{bits=8}")
    assert list(run(artifact.module(), x)) == ["last_hidden_state", "pooler_output", "logits"]
    artifact.save(tmp_path / "d.sqc")
    assert list(run(sqc.load(tmp_path / "d.sqc"), x)) == ["last_hidden_state", "pooler_output", "logits"]


def test_keyword_flag_specialised_by_export_is_not_an_input() -> None:
    """A forward taking ``use_cache`` (as Hugging Face models do) and ``**kwargs`` is captured with
    ``use_cache=False``; that bool is a constant of the graph, not a tensor input."""

    class Cached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor, use_cache: bool = True, **kwargs: Any) -> dict[str, Any]:
            return {"logits": self.fc(x), "cache": (x,) if use_cache else None}

    model, x = Cached().eval(), torch.randn(2, 8)
    ir = trace(model, [x])
    assert [s.name for s in ir.inputs] == ["x"]
    with torch.no_grad():
        assert torch.equal(ir.graph_module(x)["logits"], model(x, use_cache=False)["logits"])


def test_tuple_input_forward(tmp_path: Path) -> None:
    """A forward taking a tuple is captured with torch.export; like export, the IR opens the tuple, so
    the restored model takes its tensors one by one."""
    model, x = TupleInput().eval(), inputs_for("tuple_input")
    artifact = sqc.compress(model, [tuple(x)], PRUNE_QUANT)
    assert len(artifact.model.inputs) == len(x)
    artifact.save(tmp_path / "t.sqc")
    assert_equal_outputs(run(sqc.load(tmp_path / "t.sqc"), list(x)), run(artifact.module(), list(x)))


def test_timm_models_when_timm_imports(tmp_path: Path) -> None:
    timm = pytest.importorskip(
        "timm",
        reason="timm is not installed: it requires torchvision, whose PyPI wheel is CUDA-linked and does not "
        "load with the CPU torch build",
    )
    for arch in ("mobilenetv3_small_050", "convnext_atto", "vit_tiny_patch16_224"):
        model = timm.create_model(arch, pretrained=False, num_classes=10).eval()
        x = [torch.randn(1, 3, 224, 224)]
        artifact = sqc.compress(model, x, PRUNE_QUANT)
        artifact.save(tmp_path / f"{arch}.sqc")
        assert_equal_outputs(run(sqc.load(tmp_path / f"{arch}.sqc"), x), run(artifact.module(), x))
