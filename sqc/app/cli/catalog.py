"""``sqc passes`` and ``sqc zoo``: what passes (built in and plugins) and reference models there are."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any

import typer

from sqc.app.cli import render
from sqc.app.cli.options import (
    JsonOpt,
)


def list_passes(
    as_json: JsonOpt = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="the built-in passes as the README's Markdown table")
    ] = False,
) -> None:
    """List built-in and plugin passes with their options."""
    rows = pass_rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if markdown:
        print(builtin_markdown(), end="")
        return
    table = render.table("passes", ["pass", "from", "options (defaults)", "what it does"])
    for row in rows:
        opts = " ".join(f"{o['name']}={o['default']}" for o in row["options"]) or "-"
        table.add_row(row["name"], row["package"], opts, row["summary"])
    for column in table.columns[2:]:
        column.no_wrap = False
        column.justify = "left"
    render.print_table(table, "passes")


def pass_rows() -> list[dict[str, Any]]:
    """Every registered pass (built in first, then plugins): name, package, summary, options with their
    types and defaults, what it requires, and its canonical text with every default."""
    from sqc.compiler.registry import entries, load_pass

    rows = []
    for name, entry in entries("sqc.passes").items():
        cls = load_pass(name)
        options = []
        for f, annotation in zip(cls.options(), cls.option_types().values(), strict=True):
            options.append({"name": f.name, "type": _type_name(annotation), "default": _default(f)})
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append(
            {
                "name": name,
                "package": entry.package,
                "summary": cls.summary or (doc[0] if doc else ""),
                "options": options,
                "requires": sorted(cls.requires),
                "default_spec": cls().spec(),
            }
        )
    return rows


def builtin_markdown() -> str:
    """``sqc passes --markdown``: the README's table of sqc's own passes."""
    return markdown_table([row for row in pass_rows() if row["package"] == "sqc"])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's pass table: one row per pass, its options with their defaults, its summary."""
    lines = ["| pass | options (defaults) | what it does |", "|---|---|---|"]
    for row in rows:
        opts = " ".join(f"{o['name']}={o['default']}" for o in row["options"]) or "-"
        lines.append(f"| `{row['name']}` | `{opts}` | {row['summary']} |")
    return "\n".join(lines) + "\n"


def _type_name(annotation: Any) -> str:
    from sqc.compiler.pass_base import LayerMap

    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return "|".join("none" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    if annotation == LayerMap:
        return "layer:value;…"
    args = getattr(annotation, "__args__", None)
    if args and all(isinstance(a, str) for a in args):
        return "|".join(args)
    return getattr(annotation, "__name__", str(annotation))


def _default(f: Any) -> str:
    from dataclasses import MISSING

    from sqc.compiler.pass_base import format_value

    return format_value(f.default) if f.default is not MISSING else "required"


def zoo(as_json: JsonOpt = False) -> None:
    """List the reference models (sqc.models) with parameters, fp32 size and input shape."""
    from sqc.models import zoo_table

    rows = zoo_table()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = render.table("reference models", ["model", "params", "fp32", "input"])
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['params']:,}",
            render.human(4 * row["params"]),
            "x".join(map(str, row["input"])),
        )
    render.print_table(table, "reference models (use one with --arch sqc.models:NAME)")
