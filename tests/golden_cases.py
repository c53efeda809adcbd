"""The golden-file cases: a model, a pipeline, and the text they must give.

Each case runs its pipeline with ``--print-ir-after all`` semantics (the IR as captured, then after
every pass, in the stable text form of :mod:`sqc.ir.text`) and ends with the SHA-256 of the written
``.sqc`` and of the ``inspect`` JSON. The golden files in ``tests/golden/`` are what the test compares
against; ``make goldens`` (``python tests/update_goldens.py``) rewrites them after an intended change,
as LLVM's ``update_test_checks.py`` does, so that the diff is reviewed in git.

Only passes whose stored bits come from exact or elementwise arithmetic are pinned here (magnitude
pruning, fixed-point quantization, the entropy coders, channel pruning): k-means centroids are means,
whose last bit can depend on the CPU's vector width, and a golden file must hold on any x86-64 machine.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import seeded

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


def _lenet300() -> nn.Module:
    """``examples/lenet.py``'s network, loaded from its file (sys.path stays as it is)."""
    spec = importlib.util.spec_from_file_location("sqc_golden_lenet", ROOT / "examples" / "lenet.py")
    assert spec is not None and spec.loader is not None
    lenet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lenet)
    model = lenet.LeNet300()
    model.load_state_dict(torch.load(ROOT / "examples" / "lenet300.pt", weights_only=True))
    return model.eval()


def _lenet5() -> nn.Module:
    from sqc.models import lenet5

    model = lenet5()
    model.load_state_dict(torch.load(ROOT / "examples" / "lenet5.pt", weights_only=True))
    return model.eval()


class TinyGPT(nn.Module):
    """Embeddings with a tied head, LayerNorm and attention: the torch.export route, ATen ops, aliases."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(64, 16)
        self.wpe = nn.Embedding(8, 16)
        self.ln = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 64, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(self.ln(h + a))


class SmallCNN(nn.Module):
    """BatchNorm, depthwise conv, hardswish, a squeeze-excitation gate: today's CNN ops, fx route."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.se = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.bn(self.stem(x)))
        x = F.hardswish(self.dw(x))
        x = x * torch.sigmoid(self.se(x.mean((2, 3), keepdim=True)))
        return self.fc(x.mean((2, 3)))


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``factory``'s model seeded as the suite seeds its models (:func:`conftest.seeded`)."""
    return lambda: seeded(factory)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: list[object]
    pipeline: str


def _demo_pipeline() -> str:
    """``make demo``'s pipeline, read from ``examples/demo.py`` without importing it (importing runs its
    module-level set-up)."""
    tree = ast.parse((ROOT / "examples" / "demo.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PIPELINE" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise LookupError("examples/demo.py defines no PIPELINE")


CASES = [
    Case("demo_lenet300", _lenet300, [(1, 1, 28, 28)], _demo_pipeline()),
    Case(
        "lenet300_layer_channel_rans",
        _lenet300,
        [(1, 1, 28, 28)],
        "prune{sparsity=0.95 scope=layer},quant{bits=5 granularity=channel},rans",
    ),
    Case(
        "lenet5_lamp_qp_rans", _lenet5, [(1, 1, 28, 28)], "prune{sparsity=0.9 scope=lamp},quant{qp=-18},rans"
    ),
    Case("lenet5_channels", _lenet5, [(1, 1, 28, 28)], "prune-channels{ratio=0.5},quant{bits=8},huffman"),
    Case(
        "small_cnn",
        _seeded(SmallCNN),
        [(1, 3, 16, 16)],
        "prune{sparsity=0.5},quant{bits=8 params=12},huffman",
    ),
    Case("tiny_gpt", _seeded(TinyGPT), ["1,8:int64"], "prune{sparsity=0.5},quant{bits=8},rans"),
]


def render(case: Case, workdir: Path) -> str:
    """What the golden file of ``case`` holds: every IR text, then the file's and inspect's SHA-256."""
    import sqc
    from sqc.compiler.instrument import ALL, PrintIR

    texts: list[str] = []
    artifact = sqc.compress(
        case.build(), case.inputs, case.pipeline, instruments=[PrintIR(frozenset({ALL}), texts.append)]
    )
    path = workdir / f"{case.name}.sqc"
    artifact.save(path, force=True)
    data = path.read_bytes()
    inspected = json.dumps(sqc.inspect(artifact), sort_keys=True)
    lines = [
        f"; golden case {case.name}: {case.pipeline}",
        *texts,
        f"; file {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}",
        f"; inspect json sha256 {hashlib.sha256(inspected.encode()).hexdigest()}",
    ]
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def golden_path(case: Case) -> Path:
    return GOLDEN / f"{case.name}.ir"


README = ROOT / "README.md"
PASSES_BEGIN = "<!-- passes:begin (generated by `sqc passes --markdown`; `make goldens` rewrites it) -->\n"
PASSES_END = "<!-- passes:end -->"


def readme_pass_table() -> tuple[str, str, str]:
    """The README split around its generated pass table: (before, table, after)."""
    text = README.read_text(encoding="utf-8")
    head, _, rest = text.partition(PASSES_BEGIN)
    table, _, tail = rest.partition(PASSES_END)
    return head, table, tail
