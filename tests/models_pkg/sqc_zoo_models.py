"""Small models of today's architecture families, written with torch alone (issue 14).

Each class builds with no arguments at a size the test suite can afford (``--arch sqc_zoo_models:GPT2Like``
works), and takes keyword arguments for the larger, still CPU-friendly sizes ``benchmarks/bench_zoo.py``
measures. ``hf_bert`` and ``hf_gpt2`` build the real Hugging Face classes from small configs (they need
``transformers``; nothing is downloaded). ``FAMILIES`` maps a family name to its factory and its example
inputs as ``--input-shape`` texts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# CNNs


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d``: a shape assert (which symbolic tracing cannot follow), BN, then an act."""

    def __init__(self, channels: int, act: str = "hardswish") -> None:
        super().__init__(channels)
        self.act = nn.Hardswish() if act == "hardswish" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excitation: global mean, reduce, ReLU, expand, hardsigmoid gate."""

    def __init__(self, channels: int, reduce: int = 4) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, channels // reduce, 1)
        self.conv_expand = nn.Conv2d(channels // reduce, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.conv_expand(F.relu(self.conv_reduce(s))))


class InvertedResidual(nn.Module):
    """Expand 1x1, depthwise 3x3, SE, project 1x1, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid)
        self.se = SqueezeExcite(mid)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv_pwl(self.se(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))))
        return x + y if self.residual else y


class TimmLikeCNN(nn.Module):
    """A MobileNetV3-like network as timm writes it: ``torch._assert``, SE, hardswish, depthwise."""

    def __init__(self, width: int = 8, stages: tuple[int, ...] = (1, 1), num_classes: int = 10) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(width)
        blocks: list[nn.Module] = []
        cin = width
        for i, repeats in enumerate(stages):
            cout = width * 2 ** (i + 1)
            for r in range(repeats):
                blocks.append(InvertedResidual(cin, cout, 4, 2 if r == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = nn.Conv2d(cin, 4 * cin, 1)
        self.classifier = nn.Linear(4 * cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = F.hardswish(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1)
        return self.classifier(x)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm over channels (channels-last through permute), GELU MLP, layer scale."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    """Patchify stem, ConvNeXt blocks with a downsampling layer between stages, LayerNorm head."""

    def __init__(self, dims: tuple[int, ...] = (16, 32), depths: tuple[int, ...] = (1, 1), classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, dims[0], 4, 4)
        self.stages = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            self.downsample.append(nn.Conv2d(dims[i - 1], dim, 2, 2) if i else nn.Identity())
            self.stages.append(nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth))))
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for down, stage in zip(self.downsample, self.stages, strict=True):
            x = stage(down(x))
        return self.head(self.norm(x.mean((2, 3))))


# ---------------------------------------------------------------------------------------------
# transformers


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (ViT, BERT)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // h)
        if bias is not None:
            scores = scores + bias
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block (ViT, GPT-2) or post-norm (BERT)."""

    def __init__(self, dim: int, heads: int, mlp: int, pre_norm: bool = True) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x), bias)
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        x = self.norm1(x + self.attn(x, bias))
        return self.norm2(x + self.fc2(F.gelu(self.fc1(x))))


class ViTLike(nn.Module):
    """Patch embedding conv, class token, learned position embedding, pre-norm blocks, head on the token."""

    def __init__(
        self,
        image: int = 16,
        patch: int = 4,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        classes: int = 10,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, 4 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.example_input_shape = (1, 3, image, image)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class BertLike(nn.Module):
    """BERT with a masked-LM head whose decoder is tied to the word embeddings; int64 ``position_ids`` and
    ``token_type_ids`` buffers; returns a dict (as a ``ModelOutput`` does)."""

    def __init__(
        self,
        vocab: int = 200,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        mlp: int = 64,
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(max_len, dim)
        self.token_type_embeddings = nn.Embedding(2, dim)
        self.register_buffer("position_ids", torch.arange(max_len).unsqueeze(0))
        self.register_buffer("token_type_ids", torch.zeros(1, max_len, dtype=torch.long))
        self.emb_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(Block(dim, heads, mlp, pre_norm=False) for _ in range(depth))
        self.pooler = nn.Linear(dim, dim)
        self.transform = nn.Linear(dim, dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.word_embeddings.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, Any]:
        n = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :n])
        x = self.emb_norm(x + self.token_type_embeddings(self.token_type_ids[:, :n]))
        bias = None
        if attention_mask is not None:
            bias = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
        for layer in self.layers:
            x = layer(x, bias)
        logits = self.decoder(F.gelu(self.transform(x)))
        return {"last_hidden_state": x, "pooler_output": torch.tanh(self.pooler(x[:, 0])), "logits": logits}


class Conv1D(nn.Module):
    """GPT-2's ``Conv1D``: a linear layer with the weight stored (in, out), applied with ``addmm``."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], self.weight.shape[1])
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


class GPT2Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.c_attn = Conv1D(3 * dim, dim)
        self.c_proj = Conv1D(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.c_fc = Conv1D(4 * dim, dim)
        self.mlp_proj = Conv1D(dim, 4 * dim)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~causal[:n, :n], torch.finfo(scores.dtype).min)
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.c_proj(a)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2Like(nn.Module):
    """GPT-2: token and position embeddings, Conv1D blocks, a bool causal-mask buffer, tied ``lm_head``."""

    def __init__(
        self, vocab: int = 200, dim: int = 32, depth: int = 2, heads: int = 4, max_len: int = 64
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(max_len, dim)
        self.register_buffer("causal", torch.ones(max_len, max_len, dtype=torch.bool).tril())
        self.h = nn.ModuleList(GPT2Block(dim, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        x = self.wte(input_ids) + self.wpe(torch.arange(n, device=input_ids.device))
        for block in self.h:
            x = block(x, self.causal)
        return self.lm_head(self.ln_f(x))


class Encoder(nn.Module):
    """``nn.TransformerEncoder`` (fused attention, ``batch_first``) with a classification head."""

    def __init__(
        self, dim: int = 32, heads: int = 4, mlp: int = 64, depth: int = 2, classes: int = 5
    ) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


# ---------------------------------------------------------------------------------------------
# recurrent models and forward signatures


class LSTMModel(nn.Module):
    """A multi-layer ``batch_first`` LSTM over feature frames, classified from the last step."""

    def __init__(self, features: int = 16, hidden: int = 32, layers: int = 2, classes: int = 8) -> None:
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


class GRUModel(nn.Module):
    """A multi-layer ``batch_first`` GRU over token embeddings (int64 ids in)."""

    def __init__(self, vocab: int = 100, dim: int = 16, hidden: int = 32, layers: int = 2, classes: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.embed(ids))
        return self.fc(y[:, -1])


class Masked(nn.Module):
    """``forward(x, mask=None)``: the mask check is specialised away, the mask-free path compressed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 40)
        self.fc2 = nn.Linear(40, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = F.gelu(self.fc1(x))
        if mask is not None:
            h = h * mask
        return self.fc2(h)


class TupleInput(nn.Module):
    """``forward(inputs)`` with a tuple of two tensors (an image and side features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.side = nn.Linear(6, 8)
        self.fc = nn.Linear(16, 4)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, side = inputs
        return self.fc(torch.cat([F.relu(self.conv(image)).mean((2, 3)), F.relu(self.side(side))], 1))


# ---------------------------------------------------------------------------------------------
# Hugging Face, from small configs (no download)


def hf_bert(
    vocab: int = 200, dim: int = 32, depth: int = 2, heads: int = 4, mlp: int = 64, max_len: int = 64
) -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=mlp,
        max_position_embeddings=max_len,
    )
    return BertModel(config)


def hf_gpt2(vocab: int = 200, dim: int = 32, depth: int = 2, heads: int = 4, max_len: int = 64) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_embd=dim, n_layer=depth, n_head=heads, n_positions=max_len)
    return GPT2LMHeadModel(config)


FAMILIES: dict[str, tuple[Any, list[str]]] = {
    "timm_cnn": (TimmLikeCNN, ["1,3,16,16"]),
    "convnext": (ConvNeXtLike, ["1,3,16,16"]),
    "vit": (ViTLike, ["1,3,16,16"]),
    "bert": (BertLike, ["1,16:int64"]),
    "gpt2": (GPT2Like, ["1,16:int64"]),
    "hf_bert": (hf_bert, ["1,16:int64"]),
    "hf_gpt2": (hf_gpt2, ["1,16:int64"]),
    "lstm": (LSTMModel, ["1,12,16"]),
    "gru": (GRUModel, ["1,12:int64"]),
    "transformer_encoder": (Encoder, ["1,10,32"]),
    "masked": (Masked, ["1,20"]),
    "tuple_input": (TupleInput, ["1,3,16,16", "1,6"]),
}
"""family: (factory, example inputs as ``--input-shape`` texts)."""
