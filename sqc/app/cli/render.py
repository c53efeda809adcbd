"""How the command line prints: tables drawn with rich on a terminal and plain otherwise, sizes and
counts as people read them. Nothing printed is read as markup, and control characters are escaped:
much of what sqc prints comes from files."""

from __future__ import annotations

import re
import sys

from rich import box
from rich.table import Table

from sqc.display import SafeConsole, shown

# Off a terminal, print plain text at a width that never truncates a column. Nothing printed is read
# as markup, and control characters are escaped: much of what sqc prints comes from files.
SETTING_FLAGS = {
    "seed": "--seed",
    "distill": "--distill",
    "weight_decay": "--weight-decay",
    "tolerance": "--tolerance",
    "executor": "--executor",
    "workers": "--workers",
    "data": "--data",
    "evaluate": "--eval",
    "finetune": "--finetune",
    "loaders": "--loaders",
    "pipeline": "--passes",
}
"""The API's keywords that the core's messages name, and the options the command line gives them as."""
_SETTING = re.compile(r"(?<![\w.=\-])(" + "|".join(SETTING_FLAGS) + r")=(?=(\S?))")


def cli_wording(message: str) -> str:
    """A core message as the command line says it: ``seed=5: ...`` -> ``--seed 5: ...``, ``give data=
    or evaluate=`` -> ``give --data or --eval``. The core names settings by the API's keywords (it does
    not assume a command line); this edge translates them."""

    def flag(match: re.Match[str]) -> str:
        following = match.group(2)
        joined = following and (following.isalnum() or following in "'\"-.[(")
        return SETTING_FLAGS[match.group(1)] + (" " if joined else "")

    return _SETTING.sub(flag, message)


out = SafeConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err = SafeConsole(stderr=True, soft_wrap=True)


def table(title: str, columns: list[str]) -> Table:
    interactive = out.is_terminal
    table = Table(
        title=title if interactive else None,
        box=box.SIMPLE_HEAVY if interactive else None,
        show_edge=interactive,
        pad_edge=False,
        title_justify="left",
    )
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def print_table(table: Table, title: str) -> None:
    if not out.is_terminal:
        out.print(title)
    out.print(table)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def amount(n: float) -> str:
    """A count as people read it: 61,706 -> 61.7K, 1,234,567 -> 1.23M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def print_caret(source: str, column: int) -> None:
    """Show the pipeline text with a caret under the faulty column (after the one-line error)."""
    if "\n" in source or len(source) > 400 or shown(source) != source:
        return
    err.print(f"  {source}", markup=False, highlight=False, soft_wrap=True)
    err.print(f"  {' ' * column}^", markup=False, highlight=False, soft_wrap=True)
