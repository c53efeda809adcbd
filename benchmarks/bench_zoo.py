"""Reach (issue 14): one row per architecture family people compress today.

The families are the test suite's (``tests/models_pkg/sqc_zoo_models.py``) at realistic but CPU-friendly
sizes, with seeded random weights (sizes, times and the route do not depend on the values; the output
error does, so it is a relative figure for untrained weights, not an accuracy): a MobileNetV3-like CNN
(timm's ``torch._assert``, SE, hardswish, depthwise), a ConvNeXt-like network, a ViT-like encoder,
Hugging Face ``BertModel`` in a BERT-mini configuration and ``GPT2LMHeadModel`` with 2 layers of 128 dims
(tied ``lm_head``; when ``transformers`` is missing the suite's own BERT-/GPT-2-like classes stand in and
the row says so), a 3-layer LSTM, a 2-layer GRU over token embeddings and an ``nn.TransformerEncoder``.

Per family: the capture route (``fx``: ``torch.fx.symbolic_trace`` follows the model; ``export``: sqc
captured it with ``torch.export``), unique parameters (tied weights once) and their fp32 bytes, and for
each pipeline the ``.sqc`` file size, its ratio to fp32, the ``sqc.compress`` wall time, whether
``sqc.load`` of the file gives the compressed IR's outputs bit for bit, and the output error (relative L2
of the first floating output, on one random input) against the original model. Pipelines:

* ``quant8``: ``quant{bits=8},huffman``;
* ``prune``: ``prune{sparsity=0.5},quant{bits=8},huffman``;
* ``channels``: ``prune-channels{ratio=0.5},quant{bits=8},huffman`` — a family the pass cannot follow yet
  is recorded as ``refused: <reason>``. Without fine-tuning, removing half the channels of random
  weights changes the outputs a lot: the point of this row is whether the pass runs and what it saves.

Run: ``python benchmarks/bench_zoo.py [--only bert,lstm] [--out FILE]``; writes
``benchmarks/results/bench_zoo.json``. One thread; a few minutes on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests" / "models_pkg"))

import sqc_zoo_models as zoo  # noqa: E402
from provenance import git_state  # noqa: E402

import sqc  # noqa: E402
from sqc.errors import SqcError  # noqa: E402
from sqc.frontend.trace import as_examples, build_ir, parse_input_spec, symbolic_trace  # noqa: E402

PIPELINES = {
    "quant8": "quant{bits=8},huffman",
    "prune": "prune{sparsity=0.5},quant{bits=8},huffman",
    "channels": "prune-channels{ratio=0.5},quant{bits=8},huffman",
}


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def families() -> dict[str, tuple[str, Callable[[], nn.Module], list[str]]]:
    """name: (what it is, factory, example inputs as --input-shape texts)."""
    hf = _has_transformers()
    bert = dict(vocab=30522, dim=256, depth=4, heads=4, mlp=1024, max_len=512)
    gpt2 = dict(vocab=50257, dim=128, depth=2, heads=4, max_len=1024)
    return {
        "mobilenetv3_like": (
            "timm-style inverted residuals, SE, hardswish, torch._assert; 96x96",
            lambda: zoo.TimmLikeCNN(width=16, stages=(2, 3, 3), num_classes=1000),
            ["1,3,96,96"],
        ),
        "convnext_like": (
            "ConvNeXt blocks (dw 7x7, channels-last LayerNorm, GELU MLP, layer scale), depths 2-2-2; 64x64",
            lambda: zoo.ConvNeXtLike(dims=(48, 96, 192), depths=(2, 2, 2), classes=1000),
            ["1,3,64,64"],
        ),
        "vit_like": (
            "ViT: patch 8, dim 192, 4 blocks of 3 heads, q/k/v separate; 64x64",
            lambda: zoo.ViTLike(image=64, patch=8, dim=192, depth=4, heads=3, classes=1000),
            ["1,3,64,64"],
        ),
        "bert_mini": (
            ("Hugging Face BertModel" if hf else "BertLike (transformers missing)")
            + ", BERT-mini config (4 layers, 256 dims, vocab 30522); 128 tokens",
            (lambda: zoo.hf_bert(**bert)) if hf else (lambda: zoo.BertLike(**bert)),
            ["1,128:int64"],
        ),
        "gpt2_2x128": (
            ("Hugging Face GPT2LMHeadModel" if hf else "GPT2Like (transformers missing)")
            + ", 2 layers of 128 dims, vocab 50257, tied lm_head; 128 tokens",
            (lambda: zoo.hf_gpt2(**gpt2)) if hf else (lambda: zoo.GPT2Like(**gpt2)),
            ["1,128:int64"],
        ),
        "lstm": (
            "nn.LSTM, 3 layers of 256, 40 features (speaker-encoder-like); 100 frames",
            lambda: zoo.LSTMModel(features=40, hidden=256, layers=3, classes=256),
            ["1,100,40"],
        ),
        "gru": (
            "nn.GRU, 2 layers of 256 over 128-dim token embeddings (vocab 10000); 64 tokens",
            lambda: zoo.GRUModel(vocab=10000, dim=128, hidden=256, layers=2, classes=10),
            ["1,64:int64"],
        ),
        "transformer_encoder": (
            "nn.TransformerEncoder, 4 layers, 256 dims, 4 heads, MLP 1024; 64 tokens",
            lambda: zoo.Encoder(dim=256, heads=4, mlp=1024, depth=4, classes=10),
            ["1,64,256"],
        ),
    }


def example(specs: list[str], seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    made = []
    for text in specs:
        spec = parse_input_spec(text)
        if spec.dtype == "int64":
            made.append(torch.randint(1, 1000, spec.shape, generator=generator))
        else:
            made.append(torch.randn(spec.shape, generator=generator))
    return made


def first_float(y: Any) -> torch.Tensor:
    """The first floating output: the tensor, or a dict's / tuple's first floating entry."""
    items = [y] if isinstance(y, torch.Tensor) else list(y.values()) if isinstance(y, dict) else list(y)
    return next(t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point())


def outputs_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(outputs_equal(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(outputs_equal(u, v) for u, v in zip(a, b, strict=True))


def route(model: nn.Module, specs: list[str]) -> str:
    """``fx`` if symbolic tracing follows the model into the IR, else ``export`` (what
    sqc.frontend.trace.trace
    does, step by step, to say which one it took)."""
    try:
        source, _ = symbolic_trace(model)
        build_ir(source, as_examples(specs))
    except SqcError:
        return "export"
    return "fx"


def unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once


@torch.no_grad()
def measure(
    name: str, what: str, factory: Callable[[], nn.Module], specs: list[str], tmp: Path
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = factory().eval()
    x = example(specs)
    reference = first_float(model(*x))
    params = unique_params(model)
    row: dict[str, Any] = {
        "family": name,
        "model": what,
        "inputs": specs,
        "route": route(model, specs),
        "params": params,
        "fp32_bytes": 4 * params,
        "variants": {},
    }
    for label, pipeline in PIPELINES.items():
        start = time.perf_counter()
        try:
            artifact = sqc.compress(model, specs, pipeline)
        except SqcError as exc:
            reason = " ".join(str(exc).split()).split(" [reproduce with")[0]
            reason = reason.removeprefix("pass prune-channels failed: ").removeprefix("prune-channels: ")
            row["variants"][label] = {"pipeline": pipeline, "status": f"refused: {reason}"}
            print(f"{name:20s} {label:8s} refused: {reason[:150]}", flush=True)
            continue
        seconds = time.perf_counter() - start
        path = tmp / f"{name}_{label}.sqc"
        size = artifact.save(path, force=True)
        want = artifact.module()(*x)
        exact = outputs_equal(sqc.load(path)(*x), want)
        error = float((first_float(want) - reference).norm() / reference.norm())
        kept = sum(t.numel() for t in artifact.module().parameters())
        row["variants"][label] = {
            "pipeline": pipeline,
            "status": "ok",
            "file_bytes": size,
            "ratio_vs_fp32": 4 * params / size,
            "compress_s": round(seconds, 3),
            "params_after": kept,
            "load_equals_ir": exact,
            "output_rel_l2": error,
        }
        print(
            f"{name:20s} {label:8s} {row['route']:6s} {params:>10,} params {size:>10,} B "
            f"{4 * params / size:6.1f}x {seconds:6.1f} s err {error:.4f} exact {exact}",
            flush=True,
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated families (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_zoo.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = families()
    chosen = [f for f in args.only.split(",") if f] or list(table)
    unknown = [f for f in chosen if f not in table]
    if unknown:
        parser.error(f"unknown families {', '.join(unknown)}; known: {', '.join(table)}")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            what, factory, specs = table[name]
            rows.append(measure(name, what, factory, specs, Path(tmp)))
    doc = {
        "benchmark": "zoo",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_zoo.py" + (f" --only {args.only}" if args.only else ""),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": _transformers_version(),
        },
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "git": git_state(),
        "seconds": round(time.perf_counter() - started, 1),
        "pipelines": PIPELINES,
        "families": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return str(transformers.__version__)


if __name__ == "__main__":
    sys.exit(main())
