"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from torch import fx

from sqc.compiler.instrument import PassInstrument
from sqc.compiler.pass_base import Pass, PassContext, PassResult
from sqc.compiler.pipeline import Pipeline
from sqc.errors import SqcError
from sqc.frontend.loading import load_model
from sqc.frontend.trace import trace
from sqc.inputs import read_regular
from sqc.ir.records import CompressedModel, PassRecord
from sqc.runtime.data import (
    Dataset,
    Evaluator,
    FineTuner,
    check_labels,
    cross_entropy_finetuner,
    load_data,
    teacher_logits,
    top1,
)
from sqc.runtime.devices import CPU, on_device, resolve_device
from sqc.runtime.executors import DEFAULT_EXECUTOR, Executor
from sqc.runtime.loaders import (
    Loaders,
    LoadersSpec,
    StreamTop1,
    check_loaders,
    resolve_loaders,
    stream_finetuner,
    teacher_of,
)
from sqc.runtime.training import TrainFn

if TYPE_CHECKING:
    from sqc.targets.calib import CalibSource
    from sqc.targets.integer import IntProgram
    from sqc.targets.sim import Simulation

DEFAULT_PIPELINE = "prune,quant,huffman"


@dataclass
class Artifact:
    """A compressed model in memory: the IR after the pipeline ran."""

    model: CompressedModel

    @property
    def report(self) -> list[PassRecord]:
        return self.model.report

    @property
    def pipeline(self) -> str:
        return self.model.pipeline

    def to_bytes(self) -> bytes:
        from sqc.formats.container import serialize

        return serialize(self.model)

    def save(self, path: str | Path, *, force: bool = False) -> int:
        """Write the ``.sqc`` file atomically; returns its size in bytes."""
        from sqc.formats.container import save

        return save(self.model, Path(path), force=force)

    def module(self) -> fx.GraphModule:
        """The runnable compressed model (weights are the decoded values)."""
        return self.model.graph_module


def compress(
    model: nn.Module | str | Path,
    example_inputs: Any = None,
    pipeline: str | Pipeline = DEFAULT_PIPELINE,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
    state_key: str | None = None,
    strict: bool = True,
    on_note: Callable[[str], None] | None = None,
    verify: bool = True,
    progress: Callable[[str], None] | None = None,
    on_pass: Callable[[int, Pass, PassResult, float], None] | None = None,
    instruments: Sequence[PassInstrument] = (),
    data: str | Path | Dataset | None = None,
    evaluate: Evaluator | None = None,
    finetune: FineTuner | None = None,
    tolerance: float = 0.0,
    seed: int = 0,
    distill: float = 0.0,
    weight_decay: float = 0.0,
    executor: str = "process",
    workers: int = 0,
    device: str | torch.device | None = None,
    loaders: LoadersSpec | None = None,
) -> Artifact:
    """Trace ``model`` (a module or a model file), run the pipeline, return the :class:`Artifact`.

    ``example_inputs`` are tensors, shapes or ``"1,16:int64"`` texts (one per forward tensor argument;
    token ids are int64); a ``.pt2`` file carries its own. ``pipeline`` is pipeline text or a
    :class:`Pipeline`.

    Accuracy-aware passes use ``data`` (a data file or :class:`~sqc.runtime.data.Dataset`: top-1 accuracy and
    cross-entropy training), or ``evaluate(model) -> float`` (higher is better) and
    ``finetune(model, epochs)``, which take precedence; ``tolerance`` is the metric drop they may spend.

    ``seed`` seeds everything random in the run — the built-in fine-tuner's batch order and torch's
    global generator (dropout, a user's training loop) — and is stored in the file: the same model,
    pipeline and seed give a byte-identical ``.sqc``. The caller's global RNG state is restored after.

    ``distill`` (α in [0, 1]) makes the built-in fine-tuner learn from the uncompressed model's logits
    as well as the labels (knowledge distillation; see :func:`sqc.runtime.data.cross_entropy_finetuner`);
    ``weight_decay`` is its L2 penalty (use the one the model was trained with).

    ``loaders`` streams a dataset of any size instead of ``data`` (not both): ``"pkg.module:fn"`` or a
    function returning ``(train_loader, val_loader)``, or that pair — any re-iterable of ``(x, y)``
    batches, such as ``torch.utils.data.DataLoader``; ``train_loader`` may be ``None``. The built-in
    top-1 evaluator, fine-tuner, distillation and divergence guard then take batches one at a time
    (see :mod:`sqc.runtime.loaders`).

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; default the CPU) is where evaluation,
    sensitivity sweeps in this process and fine-tuning run: the module is moved there for them, the
    records and the file stay device-independent, so every device writes the same file up to the
    floating-point non-determinism of training. A user's ``evaluate``/``finetune`` receives the
    module on that device and must put its inputs there. A device that does not exist here is an
    error before anything runs.

    ``executor`` (``process``, ``serial`` or ``ray``) and ``workers`` say where the points of a
    sensitivity sweep run (``prune{target=auto}``, ``share{bits=auto}``, ``sensitivity``); every
    executor gives the serial result exactly. Pool and Ray workers evaluate on their CPUs; with a
    ``device`` other than the CPU and ``workers=0``, a ``process`` sweep runs in this process on the
    device instead.

    ``progress`` hears what long work is doing, one note at a time: a ``str``, and for counted work
    (fine-tuning steps, sweep points, allocation rounds) a :class:`sqc.runtime.progress.Note` that also says
    ``done`` of ``total``; :class:`sqc.runtime.progress.ProgressView` draws them as the command line does.

    ``instruments`` (:mod:`sqc.compiler.instrument`: :class:`~sqc.compiler.instrument.PassTimer`,
    :class:`~sqc.compiler.instrument.PrintIR`, or your own) see the IR before the first pass and around every
    pass; ``on_pass`` hears each pass's result.

    A model file is read by :func:`sqc.frontend.loading.load_model` (``state_key``, ``strict``); what loading
    decided (a checkpoint key picked, a prefix removed, keys skipped) goes to ``on_note``, one line
    each, or is issued as a warning.
    """
    if not 0 <= seed < 2**63:
        raise SqcError(f"seed={seed}: must be in [0, 2^63)")
    run_on = Executor.from_options(executor, workers)
    where = resolve_device(device)
    if data is not None and loaders is not None:
        raise SqcError("give data or loaders, not both: loaders stream what a data file holds in memory")
    streamed = resolve_loaders(loaders) if loaders is not None else None
    passes = pipeline if isinstance(pipeline, Pipeline) else Pipeline.parse(pipeline)
    if isinstance(model, (str, Path)):  # loaded here: nobody else holds it, so the IR may take its weights
        loaded = load_model(Path(model), arch, trust_pickle=trust_pickle, state_key=state_key, strict=strict)
        for note in loaded.notes:
            if on_note is not None:
                on_note(note)
            else:
                warnings.warn(note, stacklevel=2)
        ir = trace(loaded.module, example_inputs or loaded.input_shapes, copy_weights=False)
        del loaded
        gc.collect()  # the traced module sits in reference cycles; free its weights before passes run
    else:
        ir = trace(model, example_inputs)
    ir.seed = seed
    ctx = make_context(
        ir,
        data,
        evaluate,
        finetune,
        tolerance,
        progress,
        seed,
        distill,
        weight_decay,
        loaders=streamed,
        device=where,
        executor=run_on,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        passes.run(ir, ctx, verify=verify, on_pass=on_pass, instruments=instruments)
    return Artifact(ir)


def make_context(
    ir: CompressedModel,
    data: str | Path | Dataset | None,
    evaluate: Evaluator | None,
    finetune: FineTuner | None,
    tolerance: float,
    progress: Callable[[str], None] | None,
    seed: int = 0,
    distill: float = 0.0,
    weight_decay: float = 0.0,
    *,
    loaders: Loaders | None = None,
    device: torch.device | None = None,
    executor: Executor = DEFAULT_EXECUTOR,
) -> PassContext:
    """The pass context: built-in evaluator/fine-tuner from ``data`` or ``loaders`` unless the user
    gave callables; sweeps run on ``executor``."""
    dataset = load_data(Path(data)) if isinstance(data, (str, Path)) else data
    if dataset is not None:
        check_labels(dataset, ir.graph_module)
    if loaders is not None:
        check_loaders(loaders, ir.graph_module)
    if not 0.0 <= distill <= 1.0:
        raise SqcError(f"distill={distill}: must be in [0, 1]")
    if not 0.0 <= weight_decay < 1.0:
        raise SqcError(f"weight_decay={weight_decay}: must be in [0, 1)")
    built_in_only = [
        f"{name}=" for name, value in (("distill", distill), ("weight_decay", weight_decay)) if value
    ]
    if built_in_only and finetune is not None:
        raise SqcError(
            f"{built_in_only[0]} is for the built-in fine-tuner; a finetune= function trains its own way"
        )
    trainer: TrainFn | None = None
    if finetune is not None:
        user = finetune
        trainer = lambda module, epochs, lr: user(module, epochs)  # noqa: E731 - the user's loop has its own lr
    elif dataset is not None and dataset.x_train is not None:
        trainer = _data_trainer(ir, dataset, device, seed, distill, weight_decay, progress)
    elif loaders is not None and loaders.train is not None:
        trainer = _loader_trainer(ir, loaders, distill, weight_decay, progress)
    elif built_in_only:
        raise SqcError(
            f"{built_in_only[0]} needs the built-in fine-tuner: a data= file with x_train/y_train "
            "(or loaders= with a train loader)"
        )

    if not math.isfinite(tolerance) or tolerance < 0:
        raise SqcError(f"tolerance={tolerance}: must be a finite, non-negative number")
    built_in: Evaluator | None = None
    subset: Callable[[int], Evaluator] | None = None
    if dataset is not None:
        built_in, subset = top1(dataset), (lambda n: top1(dataset, n))
    elif loaders is not None:
        val, source = loaders.val, loaders.source
        built_in, subset = StreamTop1(val, source), (lambda n: StreamTop1(val, source, n))
    return PassContext(
        evaluation_split=evaluation_split(dataset, loaders, evaluate is not None, finetune is not None),
        progress=progress,
        seed=seed,
        evaluate=evaluate or built_in,
        finetune=trainer,
        tolerance=tolerance,
        evaluate_subset=subset if evaluate is None else None,
        device=device,
        executor=executor,
    )


def evaluation_split(
    dataset: Dataset | None, loaders: Loaders | None, own_evaluate: bool, own_finetune: bool
) -> str:
    """Which data the built-in metric reads, and whether training sees it too (for the report)."""
    if own_evaluate:
        return "the evaluation function's data"
    if loaders is not None:
        return "the validation loader's batches"
    if dataset is None:
        return "the evaluation function's data"
    where = f"x_val/y_val of {Path(dataset.source).name}" if dataset.source else "x_val/y_val"
    if dataset.x_train is None and not own_finetune:
        return f"{where} (also the fine-tuning data: no x_train)"
    return f"{where} (held out from training)"


def _data_trainer(
    ir: CompressedModel,
    dataset: Dataset,
    device: torch.device | None,
    seed: int,
    distill: float,
    weight_decay: float,
    progress: Callable[[str], None] | None,
) -> TrainFn:
    """The built-in fine-tuner over a data file; distillation's teacher logits are computed now, before
    any pass runs (on the run's device)."""
    teacher = None
    if distill:
        with on_device(ir.graph_module, device or CPU) as module:
            teacher = teacher_logits(module, dataset)

    def trainer(module: nn.Module, epochs: int, lr: float) -> None:
        tune = cross_entropy_finetuner(
            dataset,
            lr=lr,
            seed=seed,
            teacher=teacher,
            distill=distill,
            weight_decay=weight_decay,
            progress=progress,
        )
        tune(module, epochs)

    return trainer


def _loader_trainer(
    ir: CompressedModel,
    loaders: Loaders,
    distill: float,
    weight_decay: float,
    progress: Callable[[str], None] | None,
) -> TrainFn:
    """The built-in fine-tuner over the training loader; distillation keeps a frozen copy of the
    uncompressed model, taken now, as the teacher of every streamed batch."""
    teacher = teacher_of(ir.graph_module) if distill else None

    def trainer(module: nn.Module, epochs: int, lr: float) -> None:
        tune = stream_finetuner(
            loaders, lr=lr, weight_decay=weight_decay, teacher=teacher, distill=distill, progress=progress
        )
        tune(module, epochs)

    return trainer


def read(path: str | Path) -> CompressedModel:
    """The IR stored in a ``.sqc`` file."""
    from sqc.formats.container import read as read_container

    return read_container(Path(path))


def ir_text(target: str | Path | Artifact | CompressedModel, **model_options: Any) -> str:
    """The IR's stable text form (:mod:`sqc.ir.text`): of a ``.sqc`` file, an artifact, or a model file
    as captured (``model_options``: ``arch``, ``input_shapes``, ``trust_pickle``, ``state_key``,
    ``strict``, as :func:`inspect` takes them)."""
    from sqc.ir.text import ir_text as render

    if isinstance(target, Artifact):
        return render(target.model)
    if isinstance(target, CompressedModel):
        return render(target)
    path = Path(target)
    if _is_container(path):
        return render(read(path))
    shapes = model_options.pop("input_shapes", None)
    loaded = load_model(path, model_options.pop("arch", None), **model_options)
    return render(trace(loaded.module, shapes or loaded.input_shapes, copy_weights=False))


def load(path: str | Path) -> fx.GraphModule:
    """A runnable ``nn.Module`` (an fx GraphModule) rebuilt from a ``.sqc`` file — no user code needed."""
    from sqc.formats.container import read_module

    module = read_module(Path(path))
    module.eval()
    return module


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The decoded tensors of a ``.sqc`` file by name, without building a module: for a model whose
    architecture the user has (``model.load_state_dict(sqc.load_state_dict("m.sqc"))``). Tied names
    map to one tensor. The file is validated as by :func:`load`, except its graph, which is not read."""
    from sqc.formats.container import read_state_dict

    return read_state_dict(Path(path))


def inspect(target: str | Path | Artifact, **model_options: Any) -> dict[str, Any]:
    """Where every byte goes (``.sqc``), or parameters, bytes and FLOPs per layer (a model file)."""
    from sqc.app.inspection import inspect_container, inspect_model

    if isinstance(target, Artifact):
        return inspect_container(target.to_bytes(), "<in memory>")
    path = Path(target)
    if _is_container(path):
        return inspect_container(read_regular(path), str(path))
    return inspect_model(path, **model_options)


def _is_container(path: Path) -> bool:
    """A ``.sqc`` by its name or its magic bytes (read first: a FIFO or a device would block or never
    end, and is refused before anything else)."""
    from sqc.formats.container import MAGIC

    head = read_regular(path, len(MAGIC))
    return path.suffix == ".sqc" or head.startswith(MAGIC)


def simulate(
    model: str | Path | Artifact | CompressedModel | IntProgram,
    x: CalibSource,
    *,
    calib: CalibSource | None = None,
    options: list[str] | dict[str, object] | None = None,
) -> Simulation:
    """The integer outputs the C and HLS targets will compute for inputs ``x``, without building them.

    ``model``: a ``.sqc`` file, an :class:`Artifact` or its IR, legalized on ``calib`` with ``options``
    exactly as ``sqc lower --target c|hls --calib ... --option ...`` does; or the ``program`` of an
    earlier result (already calibrated). ``calib`` and ``x``: a data file (``x_val``/``x``, labels
    optional), a tensor or array of inputs, or a loader of ``x`` or ``(x, y)`` batches (the labels of
    ``x``, if any, come back as ``labels``). ``options``: the legalization options (``act_bits``,
    ``weight_bits``, ``sparse``, ``calib_samples``) as ``["act_bits=16"]`` or ``{"act_bits": 16}``.

    The result's ``codes`` equal the C target's output codes bit for bit (and HLS C simulation's);
    ``values`` are them as real numbers, e.g. ``(sim.values.argmax(-1) == y).float().mean()`` is the
    deployed top-1 accuracy.
    """
    from sqc.targets.sim import simulate_model

    if isinstance(model, Artifact):
        model = model.model
    elif isinstance(model, (str, Path)):
        model = read(model)
    pairs = [f"{k}={v}" for k, v in options.items()] if isinstance(options, dict) else options
    return simulate_model(model, x, calib, pairs)
