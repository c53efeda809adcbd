"""A user's dataset, streamed: ``fn() -> (train_loader, val_loader)``.

A data file (:mod:`sqc.runtime.data`) holds the whole dataset in memory, which suits MNIST and not ImageNet.
A loader is anything iterable, again and again, that yields ``(x, y)`` batches — typically a
``torch.utils.data.DataLoader`` over an image folder — so the built-in evaluator (top-1), fine-tuner,
distillation and divergence guard can run on a dataset of any size: batches are taken one at a time
and never collected. ``train_loader`` may be ``None`` (evaluation only).

Shuffling and augmentation are the loader's own; a ``DataLoader`` with ``shuffle=True`` draws its
order from torch's global generator, which ``sqc.compress(seed=…)`` seeds, so a run is repeatable.

Every message names where the loaders came from (``--loaders pkg.module:fn`` on the command line,
``loaders=…`` in the API): the caller gives that label.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from sqc.runtime.data import Batch, DataError, FineTuner, SGDRecipe, train_epochs
from sqc.runtime.devices import labelled, module_device
from sqc.runtime.progress import Listener


class LoaderError(DataError):
    """The loaders cannot be had, or do not yield what the contract says."""


@dataclass
class Loaders:
    """The two loaders and the label messages name them by."""

    train: Iterable[Any] | None
    val: Iterable[Any]
    source: str = "loaders"
    outputs: int | None = None
    """The model's number of outputs (set by :func:`check_loaders`): training labels must be below it."""


LoadersSpec = str | Callable[[], Any] | tuple[Any, Any] | list[Any] | Loaders


def resolve_loaders(spec: LoadersSpec, option: str = "loaders") -> Loaders:
    """The loaders of ``pkg.module:fn``, of a function returning them, or of the pair itself; every
    problem is one :class:`LoaderError` naming ``option`` (module or function missing, the function
    failing or returning something else than two re-iterable loaders)."""
    if isinstance(spec, Loaders):
        return spec
    if isinstance(spec, str):
        where = labelled(option, spec)
        fn = _resolve(spec, option)
    elif callable(spec):
        name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', type(spec).__name__)}"
        where, fn = labelled(option, name), spec
    else:
        return _checked(spec, labelled(option, type(spec).__name__))
    try:
        pair = fn()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LoaderError(
            f"{where}: calling it raised {type(exc).__name__}{': ' if first else ''}{first}"
        ) from None
    return _checked(pair, where)


def _resolve(spec: str, option: str) -> Callable[[], Any]:
    from sqc.errors import ModelLoadError
    from sqc.frontend.loading import resolve_factory

    try:
        return resolve_factory(spec)  # type: ignore[no-any-return]
    except ModelLoadError as exc:
        message = str(exc).replace(f"--arch {spec!r}", labelled(option, spec)).replace("factory", "fn")
        raise LoaderError(message) from None


def _is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def _kind(value: Any) -> str:
    """What a value that should have been a pair is, for the error: ``a 3-item tuple``, ``Tensor``."""
    if isinstance(value, (tuple, list)):
        return f"a {len(value)}-item {type(value).__name__}"
    return type(value).__name__


def _checked(pair: Any, where: str) -> Loaders:
    if not _is_pair(pair):
        raise LoaderError(f"{where}: returned {_kind(pair)}, expected (train_loader, val_loader)")
    train, val = pair
    if val is None:
        raise LoaderError(f"{where}: val_loader is None; evaluation needs one (train_loader may be None)")
    for role, loader in (("train_loader", train), ("val_loader", val)):
        if loader is None:
            continue
        if not isinstance(loader, Iterable):
            raise LoaderError(
                f"{where}: {role} is a {type(loader).__name__}, not an iterable of (x, y) batches"
            )
        if isinstance(loader, Iterator):  # a generator: it would be empty after one pass
            raise LoaderError(
                f"{where}: {role} is a one-shot iterator ({type(loader).__name__}); give something that "
                "can be iterated again each epoch, such as a DataLoader or a list"
            )
    return Loaders(train, val, where)


def batches(loader: Iterable[Any], source: str, role: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(x, y)`` batches of ``loader``, each checked: two tensors, integer labels, one per sample.
    A loader that fails while producing a batch is reported like a bad batch, in one line."""
    for number, batch in raw_batches(loader, source, role):
        yield check_batch(batch, source, role, number)


def raw_batches(loader: Iterable[Any], source: str, role: str) -> Iterator[tuple[int, Any]]:
    """``(number, batch)`` of ``loader``, unchecked (from 1); a loader that fails is one line."""
    iterator: Iterator[Any] | None = None
    number = 0
    while True:
        number += 1
        try:
            if iterator is None:
                iterator = iter(loader)
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            detail = f"{type(exc).__name__}{': ' if first else ''}{' '.join(first.split())[:200]}"
            raise LoaderError(f"{source}: the {role} loader failed at batch {number} ({detail})") from None
        yield number, batch


def check_batch(batch: Any, source: str, role: str, number: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch against the contract: an ``(x, y)`` pair of tensors, ``y`` non-negative integer labels,
    one per row of ``x``."""
    where = f"{source}: batch {number} of the {role} loader"
    if not _is_pair(batch):
        raise LoaderError(f"{where} is {_kind(batch)}, expected an (x, y) pair")
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LoaderError(f"{where} holds ({type(x).__name__}, {type(y).__name__}), expected two tensors")
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise LoaderError(f"{where}: y is {y.dtype} {tuple(y.shape)}, expected a 1-D integer label vector")
    if x.dim() < 1 or x.shape[0] != y.shape[0]:
        raise LoaderError(f"{where}: x has shape {tuple(x.shape)} but y holds {y.shape[0]} labels")
    if y.numel() and int(y.min()) < 0:
        raise LoaderError(f"{where} holds a negative label ({int(y.min())})")
    return x, y.long()


def check_labels(logits: torch.Tensor, y: torch.Tensor, where: str) -> None:
    """Labels must index the model's outputs (a larger one would crash cross-entropy, or on a GPU
    trip a device-side assert that poisons the process)."""
    if y.numel() and int(y.max()) >= logits.shape[-1]:
        raise LoaderError(f"{where}: a label is {int(y.max())} but the model has {logits.shape[-1]} outputs")


def check_loaders(loaders: Loaders, model: nn.Module) -> None:
    """Before any pass runs: the first validation batch goes through the model, and its labels fit the
    outputs (later batches are checked as they come)."""
    for x, y in batches(loaders.val, loaders.source, "validation"):
        try:
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                logits = model(x)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LoaderError(
                f"{loaders.source}: the model cannot take batches of shape {tuple(x.shape)} from the "
                f"validation loader ({' '.join(first.split())[:200]})"
            ) from None
        check_labels(logits, y, loaders.source)
        loaders.outputs = int(logits.shape[-1])
        return
    raise LoaderError(f"{loaders.source}: the validation loader yielded no batches")


@dataclass
class StreamTop1:
    """Top-1 accuracy in [0, 1] over a loader's batches (or its first ``samples`` samples), on the
    device the module is on. Picklable when the loader is, so a sweep can ship it to workers."""

    loader: Iterable[Any]
    source: str
    samples: int | None = None

    def __call__(self, model: nn.Module) -> float:
        model.eval()
        device = module_device(model)
        correct = seen = 0
        with torch.no_grad():
            for x, y in batches(self.loader, self.source, "validation"):
                if self.samples is not None:
                    x, y = x[: self.samples - seen], y[: self.samples - seen]
                logits = model(x.to(device))
                check_labels(logits, y, self.source)
                correct += int((logits.argmax(-1).cpu() == y).sum())
                seen += y.shape[0]
                if self.samples is not None and seen >= self.samples:
                    break
        if not seen:
            raise LoaderError(f"{self.source}: the validation loader yielded no samples")
        return correct / seen


def stream_finetuner(
    loaders: Loaders,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    teacher: nn.Module | None = None,
    distill: float = 0.0,
    temperature: float = 4.0,
    progress: Listener | None = None,
) -> FineTuner:
    """The built-in fine-tuner (:func:`sqc.runtime.data.train_epochs`) over the training loader's batches.

    Distillation needs the uncompressed model's outputs for batches that only exist while they are
    streamed (shuffled, augmented), so ``teacher`` is a frozen copy of that model (:func:`teacher_of`)
    run beside the student on the same device — one more copy of the weights, where a data file gets
    away with a table of logits.
    """
    train = loaders.train
    if train is None:
        raise LoaderError(f"{loaders.source}: train_loader is None, so nothing can be fine-tuned")
    try:
        per_epoch: int | None = len(train)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = None
    recipe = SGDRecipe(lr, momentum, weight_decay, distill if teacher is not None else 0.0, temperature)

    def finetune(model: nn.Module, epochs: int) -> None:
        device = module_device(model)
        guide = _teacher_on(teacher, device)

        def epoch() -> Iterator[Batch]:
            for x, y in batches(train, loaders.source, "training"):
                if loaders.outputs is not None and y.numel() and int(y.max()) >= loaders.outputs:
                    raise LoaderError(
                        f"{loaders.source}: a training label is {int(y.max())} but the model has "
                        f"{loaders.outputs} outputs"
                    )
                inputs, labels = x.to(device), y.to(device)
                soft = None
                if guide is not None:
                    with torch.no_grad():
                        soft = F.log_softmax(guide(inputs).float() / temperature, dim=-1)
                yield inputs, labels, soft

        train_epochs(model, epochs, epoch, per_epoch, recipe, progress)

    return finetune


def _teacher_on(teacher: nn.Module | None, device: torch.device) -> nn.Module | None:
    """The teacher on the student's device (it is sqc's own copy, so it may simply be moved)."""
    if teacher is None:
        return None
    return teacher.to(device).eval() if module_device(teacher) != device else teacher.eval()


def teacher_of(model: nn.Module) -> nn.Module:
    """A frozen copy of the uncompressed model, taken before any pass runs (for distillation)."""
    frozen = copy.deepcopy(model).eval()
    for param in frozen.parameters():
        param.requires_grad_(False)
    return frozen
