"""Printing text that came from a file, safely.

A ``.sqc`` file, a recipe or a model carries text sqc prints: the pipeline, pass specs, layer names in
the report, diagnostics, error messages quoting a value. Printed raw, that text could carry terminal
escape sequences (colours, cursor moves, OSC 8 hyperlinks, a rewritten title) or, with rich's markup on,
``[link=…]`` tags and a ``MarkupError`` crash on ``[/x]``. So the CLI prints through
:class:`SafeConsole` (markup, emoji codes and highlighting off; every string's control characters
escaped) and passes file-supplied values through :func:`shown`, which also escapes line breaks, so that
a value stays on its line and an error stays one line.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
"""C0 and C1 controls (ESC, BEL, CR, ...), invisible format characters (bidi overrides and isolates,
zero-width ones, line and paragraph separators) and lone surrogates (which a JSON string may hold and
no terminal encoding can print)."""
_CONTROL_NO_NEWLINE = re.compile(_CONTROL.pattern.replace("\x00-\x1f", "\x00-\x09\x0b-\x1f"))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: object) -> str:
    """``text`` as one printable line: control and invisible characters become ``\\xNN``/``\\uNNNN``."""
    return _CONTROL.sub(_escape, str(text))


class SafeConsole(Console):
    """A rich console that never interprets what it prints: no markup, no emoji codes, no
    highlighting, and control characters escaped in every string (line breaks kept), including table
    cells and titles, which rich renders through :meth:`render_str`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(_CONTROL_NO_NEWLINE.sub(_escape, text), **options)
