"""`make demo`: compress the embedded LeNet-300-100 with sqc and show what happened.

Runs the same commands a user types (through the CLI entry point, in-process), then checks top-1
accuracy on the shipped MNIST test subset before and after, and the ratio of the real file size.
No retraining happens here: that is what the accuracy-aware passes add.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # for examples.lenet; appended: sqc is the installed package

import sqc  # noqa: E402
from examples.lenet import LeNet300  # noqa: E402
from sqc.app.cli import main as sqc_main  # noqa: E402

PIPELINE = "prune{sparsity=0.9 scope=global},quant{bits=6},huffman"


def run(*argv: str) -> None:
    print(f"\n$ sqc {shlex.join(argv)}", flush=True)
    code = sqc_main(list(argv))
    if code:
        raise SystemExit(code)


def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    checkpoint = ROOT / "examples" / "lenet300.pt"
    target = out / "lenet300.sqc"
    restored = out / "lenet300_restored.pt"
    run(
        "compress",
        str(checkpoint.relative_to(ROOT)),
        "--arch",
        "examples.lenet:LeNet300",
        "--passes",
        PIPELINE,
        "-o",
        str(target.relative_to(ROOT)),
        "--force",
    )
    run("inspect", str(target.relative_to(ROOT)))
    run("decompress", str(target.relative_to(ROOT)), "-o", str(restored.relative_to(ROOT)), "--force")

    data = np.load(ROOT / "examples" / "mnist_test_1k.npz", allow_pickle=False)
    x, y = torch.from_numpy(data["x_val"]), torch.from_numpy(data["y_val"])
    original = LeNet300()
    original.load_state_dict(torch.load(checkpoint, weights_only=True))
    original.eval()
    compressed = sqc.load(target)
    fp32 = 4 * sum(p.numel() for p in original.parameters())
    size = target.stat().st_size
    print("\nMNIST test subset (1,000 images), top-1 accuracy:")
    print(f"  float32 model           {top1(original, x, y):.1%}   {fp32:>9,} bytes of weights")
    print(f"  compressed (.sqc)       {top1(compressed, x, y):.1%}   {size:>9,} bytes, whole file")
    print(f"  compression ratio       {fp32 / size:.1f}x   (no retraining)")


if __name__ == "__main__":
    main()
