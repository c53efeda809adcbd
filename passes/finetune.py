"""``finetune``: retraining that keeps the compression (Deep Compression's retraining step)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqc.compiler.pass_base import Pass, PassContext, PassResult, check_range
from sqc.errors import PipelineError
from sqc.ir.records import CompressedModel


@dataclass(frozen=True)
class Finetune(Pass):
    """Train the compressed model with its masks and codebooks held.

    After ``prune`` this is masked retraining; after ``share`` it is trained quantization (each
    centroid moves by the sum of its weights' gradients, codes stay). With ``--data`` (or a training
    loader from ``--loaders``) sqc trains with cross-entropy (SGD, momentum 0.9, cosine schedule from
    ``lr``) on the run's ``--device``; with ``--finetune pkg.module:fn`` your ``fn(model, epochs)``
    trains instead, and sqc re-applies masks and sharing after every optimiser step.
    ``schedule=dsd`` is SqueezeNet's dense-sparse-dense: a masked phase, then the masks are lifted
    and the dense model trains at ``lr/10`` (float weights only; prune again afterwards to compress).
    The metric before and after is reported when an evaluation is available.

    Trained quantization steps each centroid by its cluster's *summed* gradient, so big clusters
    (few bits, many weights) need small rates. When the built-in fine-tuner's loss runs away, the
    weights are restored and the run is retried at a tenth of the rate (up to twice; the rate used is
    the ``lr_used`` stat) instead of handing on a network at chance.
    """

    name = "finetune"
    summary = "retrain with masks and shared weights held (trained quantization after share); dsd schedule"
    needs = frozenset({"finetune"})
    conflicts = {"entropy-coded": "huffman or rans must come after every pass that changes weights"}
    preserves = frozenset()

    epochs: int = 2
    lr: float = 0.01
    schedule: Literal["masked", "dsd"] = "masked"

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1, 10_000)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        before = ctx.evaluate(model) if ctx.can_evaluate else None
        ctx.note(f"finetune: {self.epochs} epoch(s) at lr {self.lr}")
        used = ctx.finetune(model, self.epochs, self.lr)
        if self.schedule == "dsd":
            coded = [s.name for s in model.weights() if s.codes is not None]
            if coded:
                raise PipelineError(f"schedule=dsd retrains dense float weights, but {coded[0]} holds codes")
            for state in model.weights():
                state.mask = None  # lift the masks: pruned weights restart from zero
            model.sync()
            ctx.note(f"finetune: dense phase, {self.epochs} epoch(s) at lr {self.lr / 10}")
            ctx.finetune(model, self.epochs, used / 10)
        stats: dict[str, float | int | str] = {"epochs": self.epochs, "schedule": self.schedule}
        diagnostics = []
        if used != self.lr:  # the loss diverged at the asked rate (see PassContext.finetune)
            stats["lr_used"] = used
            diagnostics.append(f"training diverged at lr {self.lr:g} and was redone at lr {used:g}")
        if before is not None:
            stats["metric_before"] = before
            stats["metric_after"] = ctx.evaluate(model)
        return PassResult(True, stats, diagnostics=diagnostics)
