"""``prune-channels`` on today's architectures: MobileNetV3/EfficientNet, ConvNeXt and transformers.

Each family is built small here and pruned at ``ratio=0.5`` (per channel space and ``scope=global``).
The oracle is the one of ``test_prune_channels.py``: the original model with the chosen groups'
producing slices zeroed (filter rows, biases, norm and layer-scale entries, whole attention heads of q,
k and v) computes what the pruned model computes, because a zeroed channel reaches its consumers as
zeros and their removed columns would only have multiplied zeros. The one exception is a layer norm
over the pruned channels: it takes its statistics over the channels that remain, so there the
reference normalises over the kept channels only (``KeptNorm``) — a network built that narrow.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sqc
from sqc.errors import SqcError
from sqc.frontend.trace import trace
from sqc.passes.prune_channels import Group, PruneChannels


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):  # statistics and affine far from identity
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            if type(module).__name__ == "Conv1D":  # GPT-2 starts its biases at zero: make them count
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


# ---------------------------------------------------------------------------------------------- models


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.silu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.expand(gate))  # the gate broadcasts over H, W


class MobileNetV3ish(nn.Module):
    """timm-style: an input assert, conv-BN-hardswish, inverted residual with depthwise 3x3 and SE."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.expand = nn.Conv2d(16, 32, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.se = SqueezeExcite(32, 8)
        self.project = nn.Conv2d(32, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, "expected NCHW")
        x = F.hardswish(self.bn0(self.stem(x)))
        y = F.hardswish(self.bn1(self.expand(x)))
        y = self.se(F.hardswish(self.bn2(self.dw(y))))
        x = x + self.bn3(self.project(y))
        return self.head(x.mean((2, 3)))


class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first norm, written out: mean and variance over dim 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels).uniform_(0.5, 1.5))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-0.2, 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtish(nn.Module):
    """Patchify stem, a block (depthwise 7x7, LayerNorm on channels-last, MLP 4x, layer scale), a
    residual, and a channels-first norm before the head."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 4, stride=4)
        self.dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Linear(channels, 4 * channels)
        self.pw2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.empty(channels).uniform_(0.5, 1.5))
        self.head_norm = LayerNorm2d(channels)
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(F.gelu(self.pw1(self.norm(y))))
        x = x + y.permute(0, 3, 1, 2)
        return self.head(self.head_norm(x).mean((2, 3)))


class SelfAttention(nn.Module):
    """BERT/ViT-style: separate q, k, v projections, heads by view + transpose, explicit softmax."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, c)
        return self.o(y)


class Bertish(nn.Module):
    """Token and position embeddings, one post-norm encoder layer, a pooler on the first token."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, tokens: int = 8) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(tokens, dim)
        self.register_buffer("position_ids", torch.arange(tokens).unsqueeze(0))
        self.attention = SelfAttention(dim, heads)
        self.ln1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.pooler = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.words(ids) + self.positions(self.position_ids)
        x = self.ln1(x + self.attention(x))
        x = self.ln2(x + self.fc2(F.gelu(self.fc1(x))))
        return torch.tanh(self.pooler(x[:, 0]))


class GPT2ish(nn.Module):
    """GPT-2's block: packed q/k/v split three ways, causal SDPA, tanh-GELU MLP, pre-norm residuals."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.mlp_proj = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class TracedAttention(nn.Module):
    """Only vocabulary ops, so ``symbolic_trace`` keeps it (dynamic batch): the view widths are computed
    from ``x.size()`` at run time, and the merged width must become -1 when heads go."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size(0), x.size(1), x.size(2)
        q, k, v = (
            p(x).view(b, t, self.heads, c // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v)
        )
        scores = torch.softmax(torch.matmul(q, k.transpose(2, 3)) / 4.0, -1)
        x = x + self.o(torch.matmul(scores, v).transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.relu(self.fc1(x)))


def transformer_encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def gpt2_conv1d() -> nn.Module:
    """The zoo's GPT-2: ``Conv1D`` layers (weight stored (in, out), ``addmm``), a causal ``masked_fill``."""
    from sqc_zoo_models import GPT2Like

    return GPT2Like(vocab=100)


def hf_gpt2() -> nn.Module:
    """Hugging Face's ``GPT2LMHeadModel``, small: its ``Conv1D`` layers, SDPA, tied ``lm_head``."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except Exception as exc:  # not installed, or broken against this torch
        pytest.skip(f"transformers does not import ({type(exc).__name__}: {exc})")
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


CASES = {
    "mobilenetv3": (MobileNetV3ish, lambda: torch.randn(2, 3, 16, 16)),
    "convnext": (ConvNeXtish, lambda: torch.randn(2, 3, 32, 32)),
    "bert": (Bertish, lambda: torch.randint(0, 50, (2, 8))),
    "transformer_encoder": (transformer_encoder, lambda: torch.randn(2, 6, 32)),
    "gpt2": (GPT2ish, lambda: torch.randn(2, 8, 32)),
    "traced_attention": (TracedAttention, lambda: torch.randn(2, 5, 32)),
    "gpt2_conv1d": (gpt2_conv1d, lambda: torch.randint(0, 100, (2, 8))),
    "hf_gpt2": (hf_gpt2, lambda: torch.randint(0, 100, (2, 8))),
}


# ---------------------------------------------------------------------------------------------- oracle


class KeptNorm(nn.Module):
    """A layer norm over the kept channels only (``dim``), zero on the removed ones."""

    def __init__(self, norm: nn.Module, keep: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.norm, self.keep, self.dim = norm, keep, dim
        self.eps = getattr(norm, "eps", 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(self.dim, -1)
        out = torch.zeros_like(x)
        w, b = self.norm.weight[self.keep], self.norm.bias[self.keep]
        out[..., self.keep] = F.layer_norm(x[..., self.keep], (int(self.keep.numel()),), w, b, self.eps)
        return out.movedim(-1, self.dim)


def removed(groups: list[Group]) -> dict[tuple[str, int], set[int]]:
    out: dict[tuple[str, int], set[int]] = defaultdict(set)
    for group in groups:
        for s in group.slices:
            out[(s.tensor, s.axis)].update(range(s.start, s.stop))
    return out


def reference(model: nn.Module, groups: list[Group]) -> nn.Module:
    """The original model with the producing slices of ``groups`` zeroed (consumers untouched), and
    every layer norm over pruned channels taking its statistics over the kept ones."""
    zeroed = copy.deepcopy(model)
    params = dict(zeroed.named_parameters())
    with torch.no_grad():
        for group in groups:
            for s in group.slices:
                if s.role != "in" and s.tensor in params:
                    params[s.tensor].narrow(s.axis, s.start, s.stop - s.start).zero_()
    gone = removed(groups)
    for name, module in list(zeroed.named_modules()):
        if isinstance(module, (nn.LayerNorm, LayerNorm2d)) and gone.get((f"{name}.weight", 0)):
            width = module.weight.shape[0]
            keep = torch.tensor([i for i in range(width) if i not in gone[(f"{name}.weight", 0)]])
            parent = zeroed.get_submodule(name.rpartition(".")[0]) if "." in name else zeroed
            dim = 1 if isinstance(module, LayerNorm2d) else -1
            setattr(parent, name.rpartition(".")[2], KeptNorm(module, keep, dim))
    return zeroed


def prune(
    case: str, options: str, tmp_path
) -> tuple[nn.Module, sqc.app.api.Artifact, list[Group], torch.Tensor]:
    """Prune ``case``; check the pruned model against the oracle and the saved file against the IR."""
    factory, example = CASES[case]
    model = seeded(factory())
    x = example()
    pass_ = sqc.compiler.pipeline.Pipeline.parse(f"prune-channels{{{options}}}").passes[0]
    assert isinstance(pass_, PruneChannels)
    _, groups, _ = pass_.plan(trace(model, [x]))
    assert groups, "the pass must find something to remove"
    artifact = sqc.compress(model, [x], f"prune-channels{{{options}}}")

    x64 = x if not x.is_floating_point() else x.double()
    expected = logits(reference(model, groups).double()(x64))
    got = logits(copy.deepcopy(artifact.module()).double()(x64))
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=1e-9), (got - expected).abs().max()
    original = logits(model.double()(x64))
    assert not torch.allclose(original, expected, atol=1e-6)  # the oracle did remove something

    path = tmp_path / f"{case}.sqc"
    artifact.save(path)
    x32 = x if not x.is_floating_point() else x.float()
    assert torch.equal(logits(sqc.load(path)(x32)), logits(artifact.module()(x32)))
    stats = artifact.report[0].stats
    assert stats["params_after"] < stats["params_before"] and stats["flops_after"] < stats["flops_before"]
    assert stats["macs_after"] < stats["macs_before"]  # addmm (GPT-2's Conv1D) counts too
    return model, artifact, groups, x


def logits(output: Any) -> torch.Tensor:
    """The tensor a model computes: itself, or a Hugging Face output's (or its captured dict's) logits."""
    if isinstance(output, torch.Tensor):
        return output
    return output["logits"] if isinstance(output, dict) else output.logits


def shapes(artifact: sqc.app.api.Artifact) -> dict[str, tuple[int, ...]]:
    return {name: tuple(state.shape) for name, state in artifact.model.tensors.items()}


def attention_heads(artifact: sqc.app.api.Artifact) -> list[int]:
    """The head count each attention computes with, read from the pruned graph's shapes."""
    out = []
    for node in artifact.module().graph.nodes:
        if node.op == "call_function" and "scaled_dot_product_attention" in str(node.target):
            out.append(node.meta["shape"][1])
        elif node.op == "call_function" and node.target is torch.matmul and len(node.meta["shape"]) == 4:
            out.append(node.meta["shape"][1])
    return out


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_removing_equals_zeroing(case, scope, tmp_path):
    prune(case, f"ratio=0.5 scope={scope}", tmp_path)


def test_mobilenetv3_se_gate_couples_the_expand_filters_with_the_block(tmp_path):
    _, artifact, groups, _ = prune("mobilenetv3", "ratio=0.5", tmp_path)
    spaces = {g.space for g in groups}
    # the SE's expand conv makes one gate per block channel: its filters go with expand/dw/BN
    assert ("expand", "se.expand") in spaces
    assert ("project", "stem") in spaces  # the residual stream, through hardswish and the add
    s = shapes(artifact)
    assert s["expand.weight"][0] == s["dw.weight"][0] == s["se.expand.weight"][0] == 16
    assert s["se.reduce.weight"][1] == s["project.weight"][1] == 16 and s["bn2.running_var"] == (16,)
    assert s["se.reduce.weight"][0] == 4 and s["stem.weight"][0] == s["head.weight"][1] == 8
    graph = artifact.module().graph
    assert next(n for n in graph.nodes if n.name == "dw").args[6] == 16  # depthwise groups rewritten


def test_convnext_layer_norm_and_layer_scale_go_with_the_channel(tmp_path):
    _, artifact, _, _ = prune("convnext", "ratio=0.5", tmp_path)
    s = shapes(artifact)
    assert s["pw1.weight"] == (32, 8) and s["pw2.weight"] == (8, 32)  # hidden 64 -> 32, stream 16 -> 8
    assert s["norm.weight"] == s["gamma"] == s["head_norm.weight"] == s["dw.bias"] == (8,)
    assert s["dw.weight"] == (8, 1, 7, 7) and s["head.weight"] == (10, 8)


def test_attention_heads_go_whole_with_q_k_v_and_the_output_columns(tmp_path):
    _, bert, groups, _ = prune("bert", "ratio=0.5", tmp_path)
    s = shapes(bert)
    heads = [g for g in groups if g.space == ("attention.k", "attention.q", "attention.v")]
    assert len(heads) == 2  # 4 heads, half removed
    for group in heads:
        rows = {(sl.tensor, sl.start) for sl in group.slices if sl.role == "out" and "weight" in sl.tensor}
        (start,) = {start for _, start in rows} - {start + 1 for _, start in rows}
        assert rows == {(f"attention.{p}.weight", start + i) for p in "qkv" for i in range(8)}  # a whole head
        columns = [(sl.axis, sl.start, sl.stop) for sl in group.slices if sl.tensor == "attention.o.weight"]
        assert columns == [(1, start, start + 8)]
    assert s["attention.q.weight"] == s["attention.k.weight"] == s["attention.v.weight"] == (16, 32)
    assert s["attention.o.weight"] == (32, 16) and s["fc1.weight"] == (64, 32) and s["fc2.weight"] == (32, 64)
    assert attention_heads(bert) == [2, 2]
    assert s["words.weight"] == (50, 32)  # the embedding stream feeds residuals and the output: kept


def test_multihead_attention_prunes_heads_in_the_packed_projection(tmp_path):
    _, artifact, groups, _ = prune("transformer_encoder", "ratio=0.5", tmp_path)
    s = shapes(artifact)
    for layer in (0, 1):
        p = f"layers.{layer}"
        assert s[f"{p}.self_attn.in_proj_weight"] == (48, 32) and s[f"{p}.self_attn.in_proj_bias"] == (48,)
        assert s[f"{p}.self_attn.out_proj.weight"] == (32, 16)
        assert s[f"{p}.linear1.weight"] == (32, 32) and s[f"{p}.linear2.weight"] == (32, 32)
    assert attention_heads(artifact) == [2, 2]
    head = next(g for g in groups if g.space == ("layers.0.self_attn",))
    rows = sorted(sl.start for sl in head.slices if sl.tensor == "layers.0.self_attn.in_proj_weight")
    h = rows[0] // 8
    assert rows == [*range(8 * h, 8 * h + 8), *range(32 + 8 * h, 40 + 8 * h), *range(64 + 8 * h, 72 + 8 * h)]


def test_gpt2_split_qkv_heads_and_mlp(tmp_path):
    _, artifact, _, _ = prune("gpt2", "ratio=0.5", tmp_path)
    s = shapes(artifact)
    assert s["c_attn.weight"] == (48, 32) and s["c_proj.weight"] == (32, 16)
    assert s["c_fc.weight"] == (64, 32) and s["mlp_proj.weight"] == (32, 64)
    assert attention_heads(artifact) == [2]
    split = next(n for n in artifact.module().graph.nodes if "split" in str(n.target))
    assert split.args[1] == 16


def test_symbolic_trace_route_keeps_a_dynamic_batch(tmp_path):
    _, artifact, _, _ = prune("traced_attention", "ratio=0.5", tmp_path)
    assert shapes(artifact)["q.weight"] == (16, 32) and shapes(artifact)["fc1.weight"] == (32, 32)
    merged = next(n for n in artifact.module().graph.nodes if n.name == "reshape")
    assert merged.args[1][2] == -1  # was x.size(2): computed from the (kept) input width
    assert artifact.module()(torch.randn(3, 7, 32)).shape == (3, 7, 32)


class Flipped(nn.Module):
    """An MLP whose hidden units are reversed by ``torch.flip``, which the pass does not follow."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.other1 = nn.Linear(8, 16)
        self.other2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flip(F.hardswish(self.fc1(x)), [-1])
        return torch.cat([self.fc2(h), self.other2(F.silu(self.other1(x)))], -1)


def test_unfollowable_op_is_refused_naming_the_node_or_kept():
    model = seeded(Flipped())
    with pytest.raises(SqcError, match=r"node flip \(aten::flip\).*fc1") as info:
        sqc.compress(model, [(2, 5, 8)], "prune-channels")
    assert "\n" not in str(info.value)
    artifact = sqc.compress(model, [(2, 5, 8)], "prune-channels{unknown=keep}")
    assert artifact.model.tensors["fc1.weight"].shape == (16, 8)  # kept
    assert artifact.model.tensors["other1.weight"].shape == (8, 8)  # pruned
    assert any("flip" in d for d in artifact.report[0].diagnostics)


def test_cli_summary_shows_what_went_and_the_ratio_against_the_original(
    cli, models_dir, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(models_dir))
    monkeypatch.chdir(tmp_path)
    from sqc_test_models import Small  # fc1 16 -> 32, fc2 32 -> 4: 676 parameters, 640 MACs

    torch.manual_seed(0)
    torch.save(Small().state_dict(), tmp_path / "small.pt")
    arch = ("--arch", "sqc_test_models:Small")
    result = cli("compress", "small.pt", *arch, "--passes", "prune-channels{ratio=0.5},quant", "-o", "p.sqc")
    assert result.code == 0, result.err
    assert "[1/2] prune-channels: params 676 -> 340 (-50%), MACs 640 -> 320" in result.err
    size = (tmp_path / "p.sqc").stat().st_size
    assert f"{4 * 676 / size:.1f}x smaller than fp32 (2.7 KB)" in result.out  # the original, not the pruned

    summary = json.loads(
        cli("compress", "small.pt", *arch, "--passes", "prune-channels", "-o", "q.sqc", "--json").out
    )
    assert summary["fp32_bytes"] == 4 * 676
    assert summary["passes"][0]["macs_before"] == 640 and summary["passes"][0]["params_after"] == 340


def conv1d_head(group: Group, layer: str, head: int = 8, width: int = 32) -> int:
    """The head a ``Conv1D`` attention group removes, after checking it is whole: the c_attn columns of
    that head in q, k and v (with their bias entries) and the same rows of c_proj."""
    columns = sorted(sl.start for sl in group.slices if sl.tensor == f"{layer}.c_attn.weight")
    h = columns[0] // head
    expected = [*range(head * h, head * h + head)]
    assert columns == [i + k * width for k in range(3) for i in expected]
    assert {sl.axis for sl in group.slices if sl.tensor == f"{layer}.c_attn.weight"} == {1}
    biases = sorted(sl.start for sl in group.slices if sl.tensor == f"{layer}.c_attn.bias")
    assert biases == columns
    rows = [
        (sl.axis, sl.start, sl.stop, sl.role) for sl in group.slices if sl.tensor == f"{layer}.c_proj.weight"
    ]
    assert rows == [(0, head * h, head * h + head, "in")]
    return h


def widths(artifact: sqc.app.api.Artifact) -> dict[str, list[Any]]:
    """The shape argument of every reshape/view next to an ``addmm``, by the addmm it feeds or follows."""
    out: dict[str, list[Any]] = {}
    for node in artifact.module().graph.nodes:
        if node.op == "call_function" and "addmm" in str(node.target):
            before, after = node.args[1], next(iter(node.users))
            out[f"{node.name}.in"] = list(before.args[1])
            out[f"{node.name}.out"] = [a if isinstance(a, int) else "n" for a in after.args[1]]
    return out


def test_gpt2_conv1d_prunes_heads_by_columns_and_mlp_units(tmp_path):
    _, artifact, groups, _ = prune("gpt2_conv1d", "ratio=0.5", tmp_path)
    s = shapes(artifact)
    for layer in ("h.0", "h.1"):
        assert s[f"{layer}.c_attn.weight"] == (32, 48) and s[f"{layer}.c_attn.bias"] == (48,)
        assert s[f"{layer}.c_proj.weight"] == (16, 32) and s[f"{layer}.c_proj.bias"] == (32,)
        assert s[f"{layer}.c_fc.weight"] == (32, 64) and s[f"{layer}.c_fc.bias"] == (64,)
        assert s[f"{layer}.mlp_proj.weight"] == (64, 32) and s[f"{layer}.ln_2.weight"] == (32,)
        heads = [g for g in groups if g.space == (f"{layer}.c_attn",)]
        assert len(heads) == 2 and len({conv1d_head(g, layer) for g in heads}) == 2
        units = [g for g in groups if g.space == (f"{layer}.c_fc",)]
        assert len(units) == 64  # hidden units go one by one: a c_fc column, its bias, a mlp_proj row
        for group in units:
            (column,) = [sl for sl in group.slices if sl.tensor == f"{layer}.c_fc.weight"]
            (row,) = [sl for sl in group.slices if sl.tensor == f"{layer}.mlp_proj.weight"]
            assert (column.axis, column.stop - column.start, row.axis, row.start) == (1, 1, 0, column.start)
    assert s["wte.weight"] == (100, 32) and s["wpe.weight"] == (64, 32)  # the residual stream stays whole
    assert attention_heads(artifact) == [2, 2, 2, 2]  # scores and scores @ v of both blocks
    w = widths(artifact)
    assert w["h_0_c_attn.in"] == [-1, 32] and w["h_0_c_attn.out"] == ["n", 8, 48]
    assert w["h_0_c_proj.in"] == [-1, 16] and w["h_0_c_fc.out"] == ["n", 8, 64]
    assert w["h_1_mlp_proj.in"] == [-1, 64] and w["h_1_mlp_proj.out"] == ["n", 8, 32]
    layers = artifact.report[0].layers  # a Conv1D's filters are its columns
    assert layers["h.0.c_attn.weight"] == {"channels_before": 96, "channels_after": 48}
    assert layers["h.1.c_fc.weight"] == {"channels_before": 128, "channels_after": 64}
    assert "h.0.c_proj.weight" not in layers  # lost input rows, not filters


def test_hf_gpt2_lm_head_model_loses_heads_and_mlp_units(tmp_path):
    _, artifact, groups, x = prune("hf_gpt2", "ratio=0.5", tmp_path)
    s = shapes(artifact)
    for layer in ("transformer.h.0", "transformer.h.1"):
        assert s[f"{layer}.attn.c_attn.weight"] == (32, 48) and s[f"{layer}.attn.c_attn.bias"] == (48,)
        assert s[f"{layer}.attn.c_proj.weight"] == (16, 32)
        assert s[f"{layer}.mlp.c_fc.weight"] == (32, 64) and s[f"{layer}.mlp.c_fc.bias"] == (64,)
        assert s[f"{layer}.mlp.c_proj.weight"] == (64, 32)
        heads = [g for g in groups if g.space == (f"{layer}.attn.c_attn",)]
        assert len(heads) == 2 and len({conv1d_head(g, f"{layer}.attn") for g in heads}) == 2
    assert s["transformer.wte.weight"] == (100, 32) and s["transformer.wpe.weight"] == (32, 32)
    assert artifact.model.aliases == {"lm_head.weight": "transformer.wte.weight"}  # still tied
    assert attention_heads(artifact) == [2, 2]
    assert logits(artifact.module()(x)).shape == (2, 8, 100)


def test_conv1d_filters_are_ranked_by_column_norm():
    """The weakest MLP units of a Conv1D are its columns with the smallest norm, not its rows."""
    model = seeded(gpt2_conv1d())
    with torch.no_grad():
        model.h[0].c_fc.weight[:, 5].mul_(1e-3)  # one tiny column: the first hidden unit to go
        model.h[0].c_fc.weight[3].mul_(1e-3)  # a tiny row is an input feature, not a filter
    x = torch.randint(0, 100, (2, 8))
    pass_ = sqc.compiler.pipeline.Pipeline.parse("prune-channels{ratio=0.01}").passes[0]
    assert isinstance(pass_, PruneChannels)
    _, chosen, _ = pass_.plan(trace(model, [x]))
    assert [g.sources for g in chosen if g.space == ("h.0.c_fc",)] == [[("h.0.c_fc.weight", 5)]]
