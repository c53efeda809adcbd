"""What a pass is: a small frozen dataclass whose fields are its typed options.

Modelled on xDSL's ``ModulePass`` and MLIR's pass options: the class-level ``name`` is the short name
used in pipeline text, every dataclass field is an option (type from the annotation, default from
the field, help from ``field(metadata={"help": ...})``), ``__post_init__`` validates, and ``run``
returns a :class:`PassResult`. A pass keeps no mutable state, so one instance can run twice.

Passes also declare the IR properties they need and establish (``requires``/``establishes``) and the
ones that must not hold yet (``conflicts``), so that the pass manager rejects an impossible order such
as ``huffman,share`` before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args, get_origin

import torch

from sqc.errors import PipelineError
from sqc.ir.records import CompressedModel
from sqc.runtime.devices import on_device, resolve_device
from sqc.runtime.executors import DEFAULT_EXECUTOR, Executor
from sqc.runtime.progress import emit
from sqc.runtime.training import TrainFn, train_with_retries

Stat = float | int | str

# A per-layer override table written ``fc1:0.92;fc3:0.74`` in pipeline text (glob -> value).
LayerMap = tuple[tuple[str, float], ...]


class OptionError(PipelineError):
    """An option value is invalid; the parser adds where it was written."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"option {option}: {message}")


@dataclass
class PassResult:
    """What a pass did: whether it changed the IR, declared statistics, per-layer stats, diagnostics."""

    changed: bool
    stats: dict[str, Stat] = field(default_factory=dict)
    layers: dict[str, dict[str, Stat]] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)


class PassContext:
    """State that lives for one pipeline run: example inputs, the evaluation and fine-tuning
    callables, the accuracy budget, cached analyses, progress reporting, and the device evaluation
    and training run on (``device``; passes never name one: they go through :meth:`evaluate` and
    :meth:`finetune`, which move the module there and back). The run's services come in from the
    runtime: the executor sweeps use, and the training loop, whose divergence policy is
    :func:`~sqc.runtime.training.train_with_retries`'s.

    Analyses are computed on first request and dropped whenever a pass reports ``changed``, unless that
    pass lists the analysis in its ``preserves``.
    """

    def __init__(
        self,
        example_inputs: tuple[torch.Tensor, ...] = (),
        progress: Callable[[str], None] | None = None,
        seed: int = 0,
        *,
        evaluate: Callable[[torch.nn.Module], float] | None = None,
        finetune: TrainFn | None = None,
        tolerance: float = 0.0,
        evaluate_subset: Callable[[int], Callable[[torch.nn.Module], float]] | None = None,
        executor: Executor = DEFAULT_EXECUTOR,
        evaluation_split: str = "the evaluation function's data",
        device: str | torch.device | None = None,
    ) -> None:
        self.example_inputs = example_inputs
        self.evaluation_split = evaluation_split
        """What the metric is measured on, for reports of passes that decide by it."""
        self.device = resolve_device(device)
        """Where evaluations and training run (the records stay on the CPU; see
        :mod:`sqc.runtime.devices`)."""
        self.executor = executor
        """Where independent evaluations (sensitivity sweep points) run; never changes a result."""
        self.seed = seed
        self.tolerance = tolerance
        self._evaluate = evaluate
        self._evaluate_subset = evaluate_subset
        self._subsets: dict[int, Callable[[torch.nn.Module], float]] = {}
        self._finetune = finetune
        self._progress = progress
        self._analyses: dict[str, Any] = {}

    @property
    def can_evaluate(self) -> bool:
        return self._evaluate is not None

    @property
    def can_finetune(self) -> bool:
        return self._finetune is not None

    @property
    def can_evaluate_subset(self) -> bool:
        """Whether ``evaluate(model, samples=n)`` can use fewer samples (the built-in evaluator can)."""
        return self._evaluate_subset is not None

    def evaluate(self, model: CompressedModel, samples: int | None = None) -> float:
        """The metric (higher is better) of the model as the records say it is; with ``samples`` (and
        an evaluator that supports it) on the first ``samples`` validation samples only. It runs on
        the context's device, with the module moved there for the call and back after."""
        evaluator = self.evaluator(samples)
        with on_device(model.graph_module, self.device) as module:
            return float(evaluator(module))

    def evaluator(self, samples: int | None = None) -> Callable[[torch.nn.Module], float]:
        """The callable :meth:`evaluate` uses for ``samples`` (what an executor ships to its workers)."""
        if self._evaluate is None:
            raise PipelineError("this pass needs an evaluation: give data= or evaluate= (or loaders=)")
        if samples and self._evaluate_subset is not None:
            if samples not in self._subsets:
                self._subsets[samples] = self._evaluate_subset(samples)
            return self._subsets[samples]
        return self._evaluate

    def finetune(self, model: CompressedModel, epochs: int, lr: float) -> float:
        """Train the model in place while its masks and shared weights stay intact; returns the
        learning rate that was used (lower than ``lr`` when training diverged and was retried, see
        :func:`~sqc.runtime.training.train_with_retries`; each retry is said in a note)."""
        if self._finetune is None:
            raise PipelineError(
                "this pass needs training: give data= with x_train/y_train or finetune= (or loaders=)"
            )
        return train_with_retries(self._finetune, model, epochs, lr, self.device, self.note)

    def note(self, message: str, done: int | None = None, total: int | None = None) -> None:
        """Report progress of long work to the user (a no-op when nobody listens); counted work says
        how far it is (``done`` of ``total``, ``None`` if unknown), so a terminal can draw a bar."""
        emit(self._progress, message, done, total)

    def analysis(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._analyses:
            self._analyses[key] = compute()
        return self._analyses[key]

    def invalidate(self, keep: frozenset[str] = frozenset()) -> None:
        self._analyses = {k: v for k, v in self._analyses.items() if k in keep}


QUIET = {"quiet": True}
"""Field metadata of an option left out of the canonical text while it holds its default (see
:meth:`Pass.spec`)."""


@dataclass(frozen=True)
class Pass:
    """Base class of every pass. Subclasses are ``@dataclass(frozen=True)`` with typed option fields."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    requires: ClassVar[dict[str, str]] = {}
    """IR property -> hint shown when it does not hold (``{"codes": "put share or quant before it"}``)."""
    conflicts: ClassVar[dict[str, str]] = {}
    """IR property -> why this pass cannot run once it holds."""
    establishes: ClassVar[frozenset[str]] = frozenset()
    preserves: ClassVar[frozenset[str]] = frozenset()
    needs: ClassVar[frozenset[str]] = frozenset()
    """What the run must provide: ``evaluate`` (--data or --eval) and/or ``finetune``; checked up front."""

    def run(self, model: CompressedModel, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def context_needs(self) -> frozenset[str]:
        """What this configured pass needs from the run (options may add to the class's ``needs``)."""
        return self.needs

    @classmethod
    def options(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in cls.options()}

    @classmethod
    def from_options(cls, raw: dict[str, Any]) -> Pass:
        """Build the pass from ``{option: text-or-value}``; unknown names and bad values are errors."""
        types_ = cls.option_types()
        unknown = sorted(set(raw) - set(types_))
        if unknown:
            valid = ", ".join(types_) or "none"
            raise OptionError(unknown[0], f"unknown option of pass {cls.name} (valid: {valid})")
        values = {key: coerce(types_[key], value, key) for key, value in raw.items()}
        try:
            return cls(**values)
        except OptionError:
            raise
        except (ValueError, TypeError) as exc:
            raise PipelineError(f"pass {cls.name}: {exc}") from None

    def spec(self) -> str:
        """The canonical text of this pass with every option spelt out; parses back to an equal pass.

        An option declared ``quiet`` (``field(default=..., metadata=QUIET)``: one that switches a later
        feature on) is left out while it holds its default, so that adding such an option to a pass
        changes neither the text of existing pipelines nor the files they write (the text is stored in
        every file, twice)."""
        opts = [f for f in self.options() if not (f.metadata.get("quiet") and self.is_default(f))]
        if not opts:
            return self.name
        body = " ".join(f"{f.name}={format_value(getattr(self, f.name))}" for f in opts)
        return f"{self.name}{{{body}}}"

    def is_default(self, option: dataclasses.Field[Any]) -> bool:
        """Whether ``option`` holds its default value (what a quiet option's omission means)."""
        return bool(getattr(self, option.name) == option.default)

    def __str__(self) -> str:
        return self.spec()


def coerce(annotation: Any, value: Any, option: str) -> Any:
    """Turn pipeline text (or a TOML value) into the option's declared type."""
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        text = str(value)
        if text not in choices:
            raise OptionError(option, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return text
    if origin in (types.UnionType, typing.Union):
        # ``int | Literal["auto"]``, ``float | None``: the first member that accepts the value wins
        args = get_args(annotation)
        members = [a for a in args if a is not type(None)]
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("none", ""))
        ):
            return None
        failures = []
        for member in members:
            try:
                return coerce(member, value, option)
            except OptionError as exc:
                failures.append(str(exc).removeprefix(f"option {option}: "))
        raise OptionError(option, " and ".join(dict.fromkeys(failures)))
    if annotation == LayerMap:
        return parse_layer_map(value, option)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise OptionError(option, f"{value!r} is not a boolean (true/false)")
    # Values come from pipeline text (str) or a TOML recipe (any TOML type): anything but the
    # scalars an option can be (a list, a table, a date, inf where an integer goes) is refused here,
    # naming the option, instead of reaching int()/float() and escaping as a traceback.
    if annotation is int:
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                raise OptionError(option, f"{_shown(value)} is not an integer") from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if type(value) is not int:
            raise OptionError(option, f"{_shown(value)} is not an integer")
        return value
    if annotation is float:
        return _number(value, option)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise OptionError(option, f"{_shown(value)} is not text")
        return str(value)
    raise OptionError(option, f"unsupported option type {annotation!r}")


def _number(value: Any, option: str, what: str = "") -> float:
    """A finite float from text or a TOML number (not a boolean, list or table)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise OptionError(option, f"{_shown(value)}{what} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise OptionError(option, f"{_shown(value)}{what} is not a number") from None
    if not math.isfinite(number):
        raise OptionError(option, f"{_shown(value)}{what} is not a finite number")
    return number


def _shown(value: Any) -> str:
    """An option value for a message: its repr, cut short (a recipe may hold anything)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_layer_map(value: Any, option: str) -> LayerMap:
    """``fc1:0.92;fc3:0.74`` (or a TOML table) -> ``(("fc1", 0.92), ("fc3", 0.74))``."""
    if isinstance(value, dict):
        items = list(value.items())
    elif not isinstance(value, str):
        raise OptionError(option, f"{_shown(value)} is not a layer:value table")
    else:
        items = []
        for part in filter(None, (p.strip() for p in str(value).split(";"))):
            key, sep, number = part.rpartition(":")
            if not sep or not key:
                raise OptionError(option, f"{part!r} is not layer:value")
            items.append((key.strip(), number))
    return tuple((str(key), _number(number, option, f" for layer {key}")) for key, number in items)


def format_value(value: Any) -> str:
    """Print an option value so that :func:`coerce` reads it back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        text = ";".join(f"{k}:{int(v) if float(v).is_integer() else repr(v)}" for k, v in value)
        return text if text else '""'
    text = str(value)
    if text == "" or any(c in text for c in ' ,{}"='):
        return '"' + text.replace('"', "") + '"'
    return text


def check_range(option: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    """Validate a numeric option in ``__post_init__`` with a message naming the option."""
    if not low <= value <= high or (low_open and value == low):  # written so that NaN fails too
        bracket = "(" if low_open else "["
        raise OptionError(option, f"{value} is outside {bracket}{low}, {high}]")
