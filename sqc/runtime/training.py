"""Training a compressed model without undoing its compression.

:class:`Constraints` wraps any training loop — sqc's built-in fine-tuner or a user's ``--finetune``
function — around the IR's GraphModule:

* gradients of pruned weights are zeroed, and for k-means-shared layers each weight's gradient is
  replaced by the sum of the gradients of its cluster (Deep Compression's trained quantization: the
  centroid gradient is that sum), so every optimiser moves a cluster as one;
* after every optimiser step (a hook on all optimisers), masks are re-applied and shared weights are
  snapped to their cluster's mean, so no optimiser quirk (weight decay, Adam's epsilon) can drift them;
* on exit, the trained values go back into the records: dense weights as they are (masked), the new
  centroids into the codebook (re-rounded to its fixed-point format when it has one), fixed-point
  weights re-quantized in their format; codes, masks and formats never change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from sqc.errors import PipelineError
from sqc.ir.records import CompressedModel, TensorState
from sqc.runtime.devices import CPU, constants_on

TrainFn = Callable[[torch.nn.Module, int, float], None]
"""``fn(module, epochs, lr)``: trains in place (a user's ``fn(model, epochs)`` ignores ``lr``)."""

DIVERGENCE_RETRIES = 3
"""Fine-tuning attempts, each at a tenth of the previous learning rate, before a pass gives up."""


class TrainingDiverged(Exception):
    """Raised by a fine-tuning loop whose loss ran away; :func:`train_with_retries` restores the
    records and retries at a tenth of the learning rate."""


class DivergenceGuard:
    """Watches a training loss and raises :class:`TrainingDiverged` when it runs away.

    Why: trained quantization moves each centroid by the *sum* of its cluster's gradients (Deep
    Compression), so its step grows with the cluster size — 3-bit codebooks over 30,000 weights turn a
    learning rate that is safe for single weights into one that sends the network to chance in a few
    hundred steps. The reference is the loss of the first batch (before any update could spoil it);
    the watched value is the mean loss of the steps so far, then a moving average over ``window``
    steps. Non-finite, or above ``3 x first + 1``, is divergence: a well-behaved run stays near or
    below its first loss, while a diverging one ends far past chance (ln(10) = 2.3 for ten classes)
    with logits that keep growing.
    """

    def __init__(self, window: int = 50) -> None:
        self.window = max(1, window)
        self.steps = 0
        self.first = 0.0
        self.average = 0.0

    def update(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {self.steps + 1}")
        self.steps += 1
        if self.steps == 1:
            self.first = loss
        self.average += (loss - self.average) / min(self.steps, self.window)
        if self.steps >= min(self.window, 10) and self.average > 3.0 * self.first + 1.0:
            raise TrainingDiverged(
                f"the loss rose from {self.first:.4g} to {self.average:.4g} (moving average) by step "
                f"{self.steps}"
            )


@dataclass
class _Tied:
    """One constrained parameter: its record, and the flat kept codes for cluster arithmetic."""

    state: TensorState
    param: torch.nn.Parameter
    keep: torch.Tensor | None  # bool mask, flat
    codes: torch.Tensor | None  # int64 codes of kept weights (shared layers)
    clusters: int


def _cluster_sum(values: torch.Tensor, codes: torch.Tensor, clusters: int) -> torch.Tensor:
    return torch.zeros(clusters, dtype=values.dtype, device=values.device).index_add_(0, codes, values)


class Constraints:
    """Context manager keeping masks and weight sharing intact while ``model.graph_module`` trains.

    ``device``: where the training copies live (see :mod:`sqc.runtime.devices`). Masks and codes go there with
    them; the records stay on the CPU, and the trained values come back to it on exit.
    """

    def __init__(self, model: CompressedModel, device: torch.device | None = None) -> None:
        self.model = model
        self.device = device if device is not None else CPU
        self.tied: list[_Tied] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._constants = constants_on(model.graph_module, self.device)

    def __enter__(self) -> Constraints:
        gm = self.model.graph_module
        params = dict(gm.named_parameters())
        buffers = dict(gm.named_buffers())
        self._constants.__enter__()
        for name, state in self.model.tensors.items():
            # train copies (BatchNorm statistics included): the records change only on a clean exit
            copy = state.decode().clone().to(self.device)
            self.model.release(name)  # drops the sync stamp too, which would keep the old value alive
            (params[name] if name in params else buffers[name]).data = copy
            if name not in params:
                continue
            param = params[name]
            param.requires_grad_(True)
            keep = state.mask.flatten().to(self.device) if state.mask is not None else None
            codes = None
            clusters = 0
            if state.codebook is not None and state.codes is not None:
                flat = state.codes.flatten().long().to(self.device)
                codes = flat[keep] if keep is not None else flat
                clusters = state.codebook.numel()
            if keep is None and codes is None:
                continue
            tied = _Tied(state, param, keep, codes, clusters)
            self.tied.append(tied)
            self._handles.append(param.register_hook(lambda grad, t=tied: self._project_grad(t, grad)))
        owned = {id(t.param) for t in self.tied}
        self._handles.append(
            register_optimizer_step_post_hook(
                lambda optimiser, args, kwargs: self._after_step(optimiser, owned)
            )
        )
        return self

    def _project_grad(self, tied: _Tied, grad: torch.Tensor) -> torch.Tensor:
        flat = grad.flatten().clone()
        if tied.codes is not None:
            kept = flat[tied.keep] if tied.keep is not None else flat
            summed = _cluster_sum(kept, tied.codes, tied.clusters)[tied.codes]
            if tied.keep is not None:
                flat.zero_()
                flat[tied.keep] = summed
            else:
                flat = summed
        elif tied.keep is not None:
            flat.masked_fill_(~tied.keep, 0.0)
        return flat.reshape(grad.shape)

    def _after_step(self, optimiser: torch.optim.Optimizer, owned: set[int]) -> None:
        touched = {id(p) for group in optimiser.param_groups for p in group["params"]}
        if touched & owned:
            self.enforce()

    def centroids(self, tied: _Tied) -> torch.Tensor:
        """Each cluster's mean of the current weights (an empty cluster keeps its centroid)."""
        assert tied.codes is not None and tied.state.codebook is not None
        flat = tied.param.detach().flatten()
        kept = flat[tied.keep] if tied.keep is not None else flat
        sums = _cluster_sum(kept.double(), tied.codes, tied.clusters)
        counts = torch.bincount(tied.codes, minlength=tied.clusters).double()
        book = tied.state.codebook.double().to(flat.device)
        return torch.where(counts > 0, sums / counts.clamp(min=1), book).float()

    def enforce(self) -> None:
        """Snap every constrained parameter back onto its mask and codebook."""
        with torch.no_grad():
            for tied in self.tied:
                flat = tied.param.data.view(-1)
                if tied.codes is not None:
                    book = self.centroids(tied)
                    if tied.keep is not None:
                        flat.zero_()
                        flat[tied.keep] = book[tied.codes]
                    else:
                        flat.copy_(book[tied.codes])
                elif tied.keep is not None:
                    flat.masked_fill_(~tied.keep, 0.0)

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        try:
            if exc[0] is not None:  # a failed training run leaves the records as they were
                self.model.sync()
                return
            self.enforce()
            self.write_back()
        finally:
            self._constants.__exit__(None, None, None)
            if self.device != CPU:  # gradients on the device would keep its memory for nothing
                for param in self.model.graph_module.parameters():
                    param.grad = None

    def write_back(self) -> None:
        """Trained module values -> records (codes, masks and formats unchanged)."""
        gm = self.model.graph_module
        params = dict(gm.named_parameters())
        buffers = dict(gm.named_buffers())
        tied = {t.state.name: t for t in self.tied}
        for name, state in self.model.tensors.items():
            value = (params.get(name) if name in params else buffers.get(name)).detach().to(CPU)
            if name in tied and tied[name].codes is not None:
                book = self.centroids(tied[name]).to(CPU)
                if state.fmt is not None:
                    book = state.fmt.dequantize(state.fmt.quantize(book))
                state.codebook = book
            elif state.codes is not None and state.fmt is not None:
                state.codes = state.fmt.quantize(value)
                if state.mask is not None:
                    state.set_mask(state.mask)
            else:
                state.set_dense(value.clone())
        self.model.sync()


@contextmanager
def training(model: CompressedModel, device: str | torch.device | None = None) -> Iterator[torch.nn.Module]:
    """``with training(ir) as module: user_loop(module)`` — compression survives the loop.

    With ``device`` (``"cuda"``, ``"mps"``) the module trains there — move your batches to it — and
    the trained values return to the CPU records when the block ends."""
    from sqc.runtime.devices import resolve_device

    with Constraints(model, resolve_device(device)):
        yield model.graph_module


def train_with_retries(
    train: TrainFn,
    model: CompressedModel,
    epochs: int,
    lr: float,
    device: torch.device | None = None,
    note: Callable[[str], None] | None = None,
) -> float:
    """Run ``train`` on the model's module in place while its masks and shared weights stay intact
    (:class:`Constraints`); returns the learning rate that was used.

    A training loop that reports divergence (:class:`TrainingDiverged`, raised by the built-in
    fine-tuner) leaves the records as they were; the run is retried at a tenth of the learning rate,
    ``DIVERGENCE_RETRIES`` attempts in all, and each failed attempt is said through ``note``. (A user's
    ``--finetune`` loop chooses its own rate, so sqc does not watch it.)"""
    for attempt in range(1, DIVERGENCE_RETRIES + 1):
        try:
            with Constraints(model, device):
                train(model.graph_module, epochs, lr)
            return lr
        except TrainingDiverged as diverged:
            then = f"retrying at lr {lr / 10:g}" if attempt < DIVERGENCE_RETRIES else "giving up"
            if note is not None:
                note(f"fine-tuning diverged at lr {lr:g} ({diverged}); weights restored, {then}")
            if attempt < DIVERGENCE_RETRIES:
                lr /= 10
    raise PipelineError(f"fine-tuning diverged at every learning rate down to {lr:g}; lower the pass's lr")
