"""Pipeline text, recipes and the pass manager.

Grammar (MLIR's textual form; separators inside braces may be spaces or commas)::

    pipeline := pass ("," pass)*
    pass     := NAME ["{" [option (sep option)*] "}"]
    option   := KEY "=" value
    value    := '"' any-but-quote '"' | bare      (bare: no space, comma, brace, quote or '=')

``str(pipeline)`` prints the canonical form with every option spelt out; parsing that text gives an
equal pipeline, and it is what every ``.sqc`` file stores. Passes run in the order written — never
reordered, never looped — after the manager has checked every pass's ``requires``/``conflicts``.
"""

from __future__ import annotations

import difflib
import re
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqc.compiler.instrument import PassInstrument
from sqc.compiler.pass_base import OptionError, Pass, PassContext, PassResult, Stat
from sqc.compiler.registry import entries, load_pass
from sqc.errors import PipelineError, SqcError
from sqc.inputs import read_regular
from sqc.ir.records import CompressedModel, PassRecord

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_BARE = re.compile(r'[^\s,{}"=]+')


@dataclass(frozen=True)
class PassText:
    """One pass as written: name, raw option texts, and the columns for error messages."""

    name: str
    options: dict[str, str]
    column: int
    option_columns: dict[str, int]


def _error(text: str, column: int, message: str) -> PipelineError:
    return PipelineError(f"pipeline column {column + 1}: {message} (in {text!r})", text, column)


def tokenize(text: str) -> list[PassText]:
    """Split pipeline text into passes and raw options, reporting the column of any syntax error."""
    passes: list[PassText] = []
    i, n = 0, len(text)

    def skip_ws(j: int) -> int:
        while j < n and text[j].isspace():
            j += 1
        return j

    i = skip_ws(i)
    if i == n:
        raise _error(text, 0, "empty pipeline")
    while True:
        i = skip_ws(i)
        m = _NAME.match(text, i)
        if not m:
            raise _error(text, i, "expected a pass name")
        name, column = m.group(), i
        i = skip_ws(m.end())
        options: dict[str, str] = {}
        columns: dict[str, int] = {}
        if i < n and text[i] == "{":
            i += 1
            while True:
                while i < n and (text[i].isspace() or text[i] == ","):
                    i += 1
                if i < n and text[i] == "}":
                    i += 1
                    break
                km = _NAME.match(text, i)
                if not km:
                    raise _error(text, i, f"expected an option name or '}}' in {name}{{...}}")
                key, kcol = km.group(), i
                i = skip_ws(km.end())
                if i >= n or text[i] != "=":
                    raise _error(text, i, f"expected '=' after option {key}")
                i = skip_ws(i + 1)
                if i < n and text[i] == '"':
                    end = text.find('"', i + 1)
                    if end < 0:
                        raise _error(text, i, "unterminated quoted value")
                    value, i = text[i + 1 : end], end + 1
                else:
                    vm = _BARE.match(text, i)
                    if not vm:
                        raise _error(text, i, f"expected a value for option {key}")
                    value, i = vm.group(), vm.end()
                if key in options:
                    raise _error(text, kcol, f"option {key} given twice")
                options[key], columns[key] = value, kcol
                if i < n and not (text[i].isspace() or text[i] in ",}"):
                    raise _error(text, i, "expected ',', ' ' or '}' after a value")
            i = skip_ws(i)
        passes.append(PassText(name, options, column, columns))
        if i == n:
            return passes
        if text[i] != ",":
            raise _error(text, i, "expected ',' between passes")
        i += 1


RECIPE_SETTINGS: dict[str, type] = {"distill": float, "weight_decay": float, "tolerance": float, "seed": int}
"""Run settings a recipe may fix in its ``[compress]`` table (the CLI options of the same names)."""


MAX_RECIPE = 1 << 20
"""A recipe is a few hundred bytes; a larger file is not one (and is not read into memory whole)."""


def read_recipe(path: Path) -> dict[str, Any]:
    """The TOML document of a recipe file; every problem (missing, a directory, unreadable, too large,
    not UTF-8 or not TOML) is one :class:`PipelineError` naming the file."""
    raw = read_regular(path, MAX_RECIPE, PipelineError, "recipe file", "recipe file not found")
    if len(raw) > MAX_RECIPE:
        raise PipelineError(f"{path}: larger than {MAX_RECIPE} bytes: not a recipe")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PipelineError(f"{path}: not a valid TOML recipe: {exc}") from None


def recipe_settings(path: Path) -> dict[str, Any]:
    """The ``[compress]`` table of a TOML recipe: settings of the run that belong with its passes
    (``distill``, ``weight_decay``, ``tolerance``, ``seed``), so a recipe file reproduces a result alone."""
    data = read_recipe(Path(path))
    table = data.get("compress", {})
    if not isinstance(table, dict):
        raise PipelineError(f"{path}: [compress] must be a table")
    settings: dict[str, Any] = {}
    for key, value in table.items():
        kind = RECIPE_SETTINGS.get(key)
        if kind is None:
            raise PipelineError(
                f"{path}: [compress] has unknown key {key!r} (known: {', '.join(RECIPE_SETTINGS)})"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not isinstance(value, int))
        ):
            raise PipelineError(f"{path}: [compress] {key} = {value!r}: expected {kind.__name__}")
        settings[key] = kind(value)
    return settings


class Pipeline:
    """An ordered list of configured passes."""

    def __init__(self, passes: list[Pass]) -> None:
        if not passes:
            raise PipelineError("empty pipeline")
        self.passes = passes
        check_order(passes)

    @classmethod
    def parse(cls, text: str) -> Pipeline:
        built: list[Pass] = []
        for item in tokenize(text):
            if item.name not in entries("sqc.passes"):
                known = list(entries("sqc.passes"))
                close = difflib.get_close_matches(item.name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                message = f"unknown pass {item.name!r} ({hint}known: {', '.join(known)})"
                raise _error(text, item.column, message)
            pass_cls = load_pass(item.name)
            try:
                built.append(pass_cls.from_options(item.options))
            except OptionError as exc:
                raise _error(
                    text, item.option_columns.get(exc.option, item.column), f"{item.name}: {exc}"
                ) from None
            except PipelineError as exc:
                raise _error(text, item.column, str(exc)) from None
        try:
            return cls(built)
        except PipelineError as exc:
            raise PipelineError(f"{exc} (in {text!r})") from None

    @classmethod
    def from_recipe(cls, path: Path) -> Pipeline:
        """A TOML recipe: ``[[pass]]`` tables with ``name`` and options, in order."""
        data = read_recipe(Path(path))
        tables = data.get("pass")
        if not isinstance(tables, list) or not tables:
            raise PipelineError(f"{path}: a recipe needs one or more [[pass]] tables")
        built: list[Pass] = []
        for index, table in enumerate(tables, 1):
            if not isinstance(table, dict):
                raise PipelineError(f"{path}: pass #{index} is not a table (write it as [[pass]])")
            options: dict[str, Any] = dict(table)
            name = options.pop("name", None)
            if not isinstance(name, str):
                raise PipelineError(f"{path}: [[pass]] #{index} has no name")
            if name not in entries("sqc.passes"):
                known = ", ".join(entries("sqc.passes"))
                raise PipelineError(f"{path}: [[pass]] #{index}: unknown pass {name!r} (known: {known})")
            try:
                built.append(load_pass(name).from_options(options))
            except PipelineError as exc:
                raise PipelineError(f"{path}: [[pass]] #{index} ({name}): {exc}") from None
        try:
            return cls(built)
        except PipelineError as exc:
            raise PipelineError(f"{path}: {exc}") from None

    def __str__(self) -> str:
        return ",".join(p.spec() for p in self.passes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.passes == other.passes

    def __hash__(self) -> int:
        return hash(tuple(self.passes))

    def run(
        self,
        model: CompressedModel,
        ctx: PassContext,
        *,
        verify: bool = True,
        on_pass: Callable[[int, Pass, PassResult, float], None] | None = None,
        instruments: Sequence[PassInstrument] = (),
    ) -> CompressedModel:
        """Run every pass in order; verify the IR after each unless told not to.

        ``instruments`` (:mod:`sqc.compiler.instrument`) see every pass before it runs, in the order
        given, and
        after it ran and the IR was verified, in reverse order.

        A failing pass stops the pipeline; its error names the pass and gives the reproducer (the
        canonical pipeline text up to and including the failing pass).
        """
        for index, pass_ in enumerate(self.passes, 1):
            needs = pass_.context_needs()
            if "evaluate" in needs and not ctx.can_evaluate:
                raise PipelineError(
                    f"pass #{index} {pass_.name} needs an evaluation: give data= or evaluate= (or loaders=)"
                )
            if "finetune" in needs and not ctx.can_finetune:
                hint = "give data= with x_train/y_train, or finetune= (or loaders= with a train loader)"
                raise PipelineError(f"pass #{index} {pass_.name} needs training: {hint}")
        if verify:
            model.verify()
        for instrument in instruments:
            instrument.before_pipeline(model)
        for index, pass_ in enumerate(self.passes):
            started = time.perf_counter()
            ctx.note(f"[{index + 1}/{len(self.passes)}] {pass_.name}…")
            for instrument in instruments:
                instrument.before_pass(index + 1, pass_, model)
            try:
                result = pass_.run(model, ctx)
                if result.changed:
                    ctx.invalidate(pass_.preserves)
                if verify:
                    model.verify()
            except SqcError as exc:
                prefix = ",".join(p.spec() for p in self.passes[: index + 1])
                raise SqcError(
                    f"pass {pass_.name} failed: {exc} [reproduce with pipeline='{prefix}']"
                ) from None
            elapsed = time.perf_counter() - started
            layers = {name: _rounded(stats) for name, stats in result.layers.items()}
            model.report.append(
                PassRecord(pass_.spec(), result.changed, _rounded(result.stats), layers, result.diagnostics)
            )
            for instrument in reversed(instruments):
                instrument.after_pass(index + 1, pass_, model, result, elapsed)
            if on_pass is not None:
                on_pass(index, pass_, result, elapsed)
        model.pipeline = ",".join(filter(None, [model.pipeline, str(self)]))
        return model


def _rounded(stats: dict[str, Stat]) -> dict[str, Stat]:
    """Statistics as stored in every file: floats to 6 significant digits (the rest is noise, and bytes)."""
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in stats.items()}


def check_order(passes: list[Pass]) -> None:
    """Simulate the IR properties along the pipeline; refuse an order that cannot work."""
    state: set[str] = set()
    for index, pass_ in enumerate(passes, 1):
        for prop, hint in pass_.requires.items():
            if prop not in state:
                raise PipelineError(f"pass #{index} {pass_.name} needs {prop}: {hint}")
        for prop, why in pass_.conflicts.items():
            if prop in state:
                raise PipelineError(f"pass #{index} {pass_.name} cannot run here: {why}")
        state |= pass_.establishes
