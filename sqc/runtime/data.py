"""Data and evaluation contracts: a validation set (and optionally a training set) from a file, the
built-in top-1 evaluator and cross-entropy fine-tuner, and user-supplied callables.

A data file is a ``.npz`` (read with ``allow_pickle=False``) or a ``.pt`` (read with
``weights_only=True``) holding ``x_val``/``y_val`` and optionally ``x_train``/``y_train``; loading it
never executes code from it. A user's evaluation is ``fn(model) -> float`` (higher is better, in the
metric's own units); a user's fine-tuner is ``fn(model, epochs)`` and trains in place.
"""

from __future__ import annotations

import contextlib
import io
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sqc.errors import SqcError
from sqc.inputs import require_regular
from sqc.runtime.devices import module_device
from sqc.runtime.progress import Listener, emit
from sqc.runtime.training import DivergenceGuard

Evaluator = Callable[[nn.Module], float]
FineTuner = Callable[[nn.Module, int], None]

DATA_BASE, DATA_RATIO = 64 << 20, 32
"""A data file of ``n`` bytes may hold at most ``DATA_BASE + DATA_RATIO * n`` bytes of arrays, as its
zip directory declares them (checked before anything is inflated). ``np.savez_compressed`` of real
data compresses 2-12x (MNIST as float32: 12x); a deflate bomb ~1000x (584 KB that became 7-10 GB)."""
LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
"""Label dtypes torch can compare and index with (it lacks min/max for uint16/32/64)."""


class DataError(SqcError):
    """A data file is missing, unreadable, or does not hold what the contract says."""


@dataclass
class Dataset:
    """Tensors of a data file: float inputs and int64 class labels."""

    x_val: torch.Tensor
    y_val: torch.Tensor
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None
    source: str = ""
    """The file the tensors came from, for messages ("" when built in memory)."""

    @property
    def classes(self) -> int:
        labels = [self.y_val] + ([self.y_train] if self.y_train is not None else [])
        return int(max(int(y.max()) for y in labels)) + 1 if self.y_val.numel() else 0


def load_data(path: Path) -> Dataset:
    """Read and validate a data file; every problem is a :class:`DataError` naming the file and key."""
    path = Path(path)
    return _validate(path, read_arrays(path))


def read_arrays(path: Path, bare: str | None = None) -> dict[str, torch.Tensor]:
    """The checked tensors of a ``.npz`` or ``.pt`` data file by key, without code execution. A ``.pt``
    holding one bare tensor is accepted as key ``bare`` when given (inputs-only files)."""
    path = Path(path)
    require_regular(path, DataError, "data file", "no such data file")
    arrays: dict[str, torch.Tensor] = {}
    try:
        check_archive(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                for key in archive.files:
                    arrays[key] = torch.from_numpy(np.ascontiguousarray(archive[key]))
        else:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            if bare is not None and isinstance(loaded, torch.Tensor):
                loaded = {bare: loaded}
            if not isinstance(loaded, dict):
                expected = "a tensor or a dict of tensors" if bare is not None else "a dict of tensors"
                raise DataError(f"{path}: holds a {type(loaded).__name__}, expected {expected}")
            for key, value in loaded.items():
                if not isinstance(value, torch.Tensor):
                    raise DataError(f"{path}: {key} is a {type(value).__name__}, expected a tensor")
                arrays[str(key)] = value
    except DataError:
        raise
    except ValueError as exc:  # numpy refuses object arrays (pickles) with allow_pickle=False
        raise DataError(f"{path}: not a plain array file ({str(exc).splitlines()[0]})") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read data ({first})") from None
    for key, value in arrays.items():
        _check_tensor(path, key, value)
    return arrays


def check_archive(path: Path) -> None:
    """Refuse a zip (``.npz``, or the zip inside a ``.pt``) that would inflate past its allowance
    (:data:`DATA_BASE`, :data:`DATA_RATIO`), and an ``.npy`` member whose header declares another size
    than the member has, before anything is inflated or allocated (numpy allocates the header's shape
    first). A file that is not a zip is left to the loader."""
    if not zipfile.is_zipfile(path):
        return
    limit = DATA_BASE + DATA_RATIO * path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if declared > limit:
                raise DataError(
                    f"{path}: its arrays would inflate to {declared:,} bytes, more than a file of "
                    f"{path.stat().st_size:,} bytes may ({limit:,}): a decompression bomb?"
                )
            if path.suffix == ".npz":
                for member in members:
                    if member.filename.endswith(".npy"):
                        _check_npy_header(path, archive, member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise DataError(f"{path}: not a readable zip archive ({exc})") from None


def _check_npy_header(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    """The ``.npy`` header of one member (a few bytes inflated) against the member's declared size."""
    fmt = np.lib.format
    key = member.filename.removesuffix(".npy")
    try:
        with archive.open(member) as stream:
            version = fmt.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            header = stream.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a plain array file ({key}: {first})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: not a plain array file ({key} holds Python objects: a pickle)")
    need = math.prod(shape) * dtype.itemsize
    if header + need != member.file_size:
        raise DataError(
            f"{path}: {key} declares shape {tuple(shape)} of {dtype} ({need:,} bytes) but holds "
            f"{max(0, member.file_size - header):,} bytes"
        )


def _check_tensor(path: Path, key: str, value: torch.Tensor) -> None:
    """A loaded tensor must be ordinary data: dense, on the CPU, and no larger than the bytes behind
    it. A stride-0 view (``torch.zeros(1).expand(2**24, 64)``: 1.9 KB in a ``.pt``) would otherwise
    become gigabytes the moment it is converted to float32."""
    if value.layout != torch.strided or value.is_nested:
        layout = str(value.layout).removeprefix("torch.")
        raise DataError(f"{path}: {key} is a {layout} tensor, expected a dense one")
    if value.device.type != "cpu":
        raise DataError(f"{path}: {key} is a {value.device.type} tensor (no data), expected one on the CPU")
    if value.is_quantized:
        raise DataError(f"{path}: {key} is a quantized tensor, expected plain numbers")
    logical = value.numel() * value.element_size()
    behind = value.untyped_storage().nbytes() - value.storage_offset() * value.element_size()
    if logical > behind or any(st == 0 and n > 1 for st, n in zip(value.stride(), value.shape, strict=True)):
        raise DataError(
            f"{path}: {key} is a view of shape {tuple(value.shape)} over {max(0, behind):,} bytes "
            f"(strides {tuple(value.stride())}): it would expand to {logical:,} bytes"
        )


def _validate(path: Path, arrays: dict[str, torch.Tensor]) -> Dataset:
    for key in ("x_val", "y_val"):
        if key not in arrays:
            raise DataError(f"{path}: missing {key} (found: {', '.join(sorted(arrays)) or 'nothing'})")
    pairs = [("x_val", "y_val")]
    if "x_train" in arrays or "y_train" in arrays:
        if "x_train" not in arrays or "y_train" not in arrays:
            raise DataError(f"{path}: x_train and y_train must be given together")
        pairs.append(("x_train", "y_train"))
    out: dict[str, torch.Tensor] = {}
    for xk, yk in pairs:
        x, y = arrays[xk], arrays[yk]
        xf = float_inputs(path, xk, x)
        if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            got = f"{y.dtype} {tuple(y.shape)}"
            raise DataError(f"{path}: {yk} must be a 1-D integer label vector, got {got}")
        if y.dtype not in LABEL_DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in LABEL_DTYPES)
            dtype = str(y.dtype).removeprefix("torch.")
            raise DataError(f"{path}: {yk} has dtype {dtype}, expected one of {names}")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{path}: {xk} has {x.shape[0]} samples but {yk} has {y.shape[0]}")
        if int(y.min()) < 0:
            raise DataError(f"{path}: {yk} holds a negative label ({int(y.min())})")
        out[xk], out[yk] = xf, y.to(torch.int64)
    if "x_train" in out and out["x_train"].shape[1:] != out["x_val"].shape[1:]:
        train, val = tuple(out["x_train"].shape[1:]), tuple(out["x_val"].shape[1:])
        raise DataError(f"{path}: x_train samples have shape {train} but x_val samples {val}")
    return Dataset(out["x_val"], out["y_val"], out.get("x_train"), out.get("y_train"), str(path))


def float_inputs(path: Path | str, key: str, x: torch.Tensor) -> torch.Tensor:
    """Inputs of a data file as float32 ``(samples, ...)``: floating point, or uint8 read as ``/255``;
    finite, and at least one sample."""
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise DataError(f"{path}: {key} has dtype {x.dtype}, expected floating point")
    if x.dim() < 2 or x.shape[0] == 0:
        shape = tuple(x.shape)
        raise DataError(f"{path}: {key} has shape {shape}, expected (samples, ...) with samples > 0")
    xf = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
    if not bool(torch.isfinite(xf).all()):
        raise DataError(f"{path}: {key} contains NaN or Inf")
    return xf


def check_labels(data: Dataset, model: nn.Module) -> None:
    """Labels must index the model's outputs: a label >= the number of classes is an error."""
    sample = data.x_val[:1]
    try:
        # fx prints the generated source around a failing line to stderr itself: the message is enough
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            width = model(sample).shape[-1]
    except Exception as exc:  # the data meets the model here first: say which shape it could not take
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"{data.source}: " if data.source else ""
        raise DataError(
            f"{where}the model cannot take x_val samples of shape {tuple(sample.shape[1:])} "
            f"({' '.join(first.split())[:200]})"
        ) from None
    if data.classes > width:
        raise DataError(f"labels go up to {data.classes - 1} but the model has {width} outputs")


@dataclass
class Top1:
    """Top-1 accuracy in [0, 1] on fixed inputs and labels. A class rather than a closure so that it
    pickles: executors ship it, validation data included, to the workers of a sensitivity sweep."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int = 1000

    def __call__(self, model: nn.Module) -> float:
        return int(self.outcomes(model).sum()) / self.x.shape[0]

    def outcomes(self, model: nn.Module) -> torch.Tensor:
        """Per sample, 1.0 where the model is right (the metric is their mean): what a paired
        comparison of two models needs (``auto``'s confidence margin)."""
        return self._per_sample(model, lambda logits, labels: (logits.argmax(-1) == labels).double())

    def confidences(self, model: nn.Module) -> torch.Tensor:
        """Per sample, the probability the model gives the right label (softmax of its outputs): a
        smooth stand-in for :meth:`outcomes` whose paired changes are far less noisy (a network that
        moves a borderline sample across the decision boundary changes it by a fraction, not by 1),
        which is what ``auto`` decides on (see ``sqc.passes.auto.paired``)."""
        return self._per_sample(
            model, lambda logits, labels: logits.double().softmax(-1).gather(-1, labels[:, None])[:, 0]
        )

    def _per_sample(
        self, model: nn.Module, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``score(logits, labels)`` of every sample, in float64 on the CPU, in batches."""
        model.eval()
        device = module_device(model)  # batches follow the module (see sqc.runtime.devices)
        parts = []
        with torch.no_grad():
            for start in range(0, self.x.shape[0], self.batch_size):
                logits = model(self.x[start : start + self.batch_size].to(device))
                labels = self.y[start : start + self.batch_size].to(device)
                parts.append(score(logits, labels).cpu().to(torch.float64))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def top1(data: Dataset, samples: int | None = None, batch_size: int = 1000) -> Evaluator:
    """The built-in evaluator: top-1 accuracy in [0, 1] on the validation set (or its first ``samples``)."""
    x, y = data.x_val, data.y_val
    if samples is not None:
        x, y = x[:samples].clone(), y[:samples].clone()  # a slice would pickle its whole base
    return Top1(x, y, batch_size)


def cross_entropy_finetuner(
    data: Dataset,
    lr: float = 0.01,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    teacher: torch.Tensor | None = None,
    distill: float = 0.0,
    temperature: float = 4.0,
    progress: Listener | None = None,
) -> FineTuner:
    """The built-in fine-tuner: SGD with momentum on cross-entropy over the training set (or, when the
    file has none, the validation set — say so, because that overfits the metric).

    With ``teacher`` logits (one row per training sample, from the uncompressed model; see
    :func:`teacher_logits`) and ``distill`` = α > 0, the loss is knowledge distillation (Hinton et al.
    2015): ``(1 - α) · CE(labels) + α · T² · KL(softmax(teacher / T) ‖ softmax(student / T))``. The
    compressed network then learns the fp32 network's whole output distribution, not only its top-1.

    Batches go to the device the module is on; ``progress`` hears every step (see
    :mod:`sqc.runtime.progress`).
    """
    x, y = training_split(data)
    if not 0.0 <= distill <= 1.0:
        raise SqcError(f"distill={distill}: must be in [0, 1]")
    if distill and (teacher is None or teacher.shape[0] != x.shape[0]):
        raise SqcError("distillation needs the teacher's logits for every training sample")
    soft = F.log_softmax(teacher / temperature, dim=-1) if distill and teacher is not None else None
    per_epoch = (x.shape[0] + batch_size - 1) // batch_size
    recipe = SGDRecipe(lr, momentum, weight_decay, distill, temperature)

    def finetune(model: nn.Module, epochs: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        device = module_device(model)

        def epoch() -> Iterator[Batch]:
            order = torch.randperm(x.shape[0], generator=generator)
            for start in range(0, x.shape[0], batch_size):
                index = order[start : start + batch_size]
                target = soft[index].to(device) if soft is not None else None
                yield x[index].to(device), y[index].to(device), target

        train_epochs(model, epochs, epoch, per_epoch, recipe, progress)

    return finetune


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""``(inputs, labels, teacher log-probabilities or None)``, on the module's device."""


@dataclass(frozen=True)
class SGDRecipe:
    """How the built-in fine-tuners train, whatever feeds them (a data file or a user's loader)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    distill: float = 0.0
    temperature: float = 4.0

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy, mixed with the teacher's distribution when there is one (distillation)."""
        hard = F.cross_entropy(logits, labels)
        if soft is None:
            return hard
        student = F.log_softmax(logits / self.temperature, dim=-1)
        kl = F.kl_div(student, soft, reduction="batchmean", log_target=True)
        return (1.0 - self.distill) * hard + self.distill * self.temperature**2 * kl


def train_epochs(
    model: nn.Module,
    epochs: int,
    epoch: Callable[[], Iterable[Batch]],
    per_epoch: int | None,
    recipe: SGDRecipe,
    progress: Listener | None = None,
) -> None:
    """The training loop both built-in fine-tuners share: SGD with momentum, a cosine schedule and the
    divergence guard, ``epoch()`` giving each epoch's batches.

    With ``per_epoch`` (batches an epoch has) the schedule and the progress count steps; without it (a
    loader with no ``len``) they count epochs, since the number of steps is known only afterwards.
    """
    params = [p for p in model.parameters() if p.requires_grad and p.numel()]
    optimiser = torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    steps = max(1, epochs * per_epoch) if per_epoch is not None else max(1, epochs)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    guard = DivergenceGuard(window=min(50, steps // 8) if per_epoch is not None else 50)  # >= 1
    model.train()
    done = 0
    for number in range(1, epochs + 1):
        what = f"finetune: epoch {number}/{epochs}"
        for inputs, labels, soft in epoch():
            optimiser.zero_grad(set_to_none=True)
            loss = recipe.loss(model(inputs), labels, soft)
            guard.update(float(loss.detach()))
            loss.backward()
            optimiser.step()
            if per_epoch is not None:
                schedule.step()
                done += 1
                emit(progress, what, done, steps)
        if per_epoch is None:
            schedule.step()
            emit(progress, what, number, epochs)
    model.eval()


def training_split(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """What the built-in fine-tuner trains on: the training set, else the validation set."""
    if data.x_train is not None and data.y_train is not None:
        return data.x_train, data.y_train
    return data.x_val, data.y_val


def teacher_logits(model: nn.Module, data: Dataset, batch_size: int = 1000) -> torch.Tensor:
    """The uncompressed model's logits on the training split, computed once before any pass runs
    (a few MB even for ImageNet-sized label sets at MNIST scale; no second copy of the model)."""
    x, _ = training_split(data)
    was_training = model.training
    model.eval()
    device = module_device(model)
    with torch.no_grad():
        out = torch.cat(
            [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        )
    model.train(was_training)
    return out


def resolve_callable(spec: str, what: str) -> Callable[..., object]:
    """``pkg.module:fn`` for ``--eval``/``--finetune`` (the current directory is importable)."""
    from sqc.errors import ModelLoadError
    from sqc.frontend.loading import resolve_factory

    try:
        return resolve_factory(spec)
    except ModelLoadError as exc:
        raise SqcError(str(exc).replace("--arch", what)) from None
