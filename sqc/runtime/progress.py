"""Progress of long work: the notes passes send, and how the command line shows them.

There is one mechanism: a pass calls :meth:`sqc.compiler.pass_base.PassContext.note`, and the run's listener
(``sqc.compress(progress=fn)``) receives the text. Work that can be counted — fine-tuning steps,
the points of a sensitivity sweep, the rounds of an allocation — says how far it is: the note is then
a :class:`Note`, a ``str`` that also carries ``done`` and ``total``. A listener that only wants text
(``print``, ``list.append``) is unaffected; :class:`ProgressView` draws a bar with an estimate of the
time left on a terminal, and plain lines (a few per counted activity) when stderr is a file or pipe.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

Listener = Callable[[str], None]

PLAIN_STEPS = 10
"""Off a terminal, a counted activity prints its first step, its last, and one line per tenth."""


class Note(str):
    """A progress message that may say how far counted work is (``done`` of ``total``; ``total`` is
    ``None`` when unknown)."""

    done: int | None
    total: int | None

    def __new__(cls, text: str, done: int | None = None, total: int | None = None) -> Note:
        note = super().__new__(cls, text)
        note.done, note.total = done, total
        return note


def emit(listener: Listener | None, text: str, done: int | None = None, total: int | None = None) -> None:
    """Send a note to ``listener`` (nothing happens without one)."""
    if listener is not None:
        listener(Note(text, done, total))


class ProgressView:
    """The command line's listener: a rich progress bar on a terminal, plain lines otherwise.

    On a terminal, a note replaces the description; a counted note also moves the bar and the
    estimate (an activity whose total changes, or whose count goes back, starts a fresh estimate).
    Off a terminal, only counted work is printed — at its first step, every tenth and its last — so a
    log shows long work moving without a line per batch, and a run that fails before any (a bad
    option, a pass that cannot apply) still prints its error as the one line on stderr. ``quiet``
    shows nothing (``--json``).
    """

    def __init__(self, console: Any, *, quiet: bool = False, first: str = "working…") -> None:
        self.console = console
        self.quiet = quiet
        self.first = first
        self.live: Any = None
        self.task: Any = None
        self._plain: tuple[int | None, int] | None = None  # (total, tenth last printed)
        self._counted: tuple[int | None, int] | None = None  # (total, done) on the bar

    def __enter__(self) -> ProgressView:
        if not self.quiet and self.console.is_terminal:
            self.live = _bar(self.console)
            self.live.start()
            self.task = self.live.add_task(self.first, total=None)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def __call__(self, text: str) -> None:
        if self.quiet:
            return
        done, total = getattr(text, "done", None), getattr(text, "total", None)
        if self.live is not None:
            self._draw(str(text), done, total)
        else:
            self._line(str(text), done, total)

    def _draw(self, text: str, done: int | None, total: int | None) -> None:
        from sqc.display import shown

        description = shown(text)
        previous = self._counted
        if done is None:
            self._counted = None
            if previous is None:
                self.live.update(self.task, description=description)
            else:
                self._restart(description, None, 0)
            return
        if previous is None or previous[0] != total or done < previous[1]:
            self._restart(description, total, done)
        else:
            self.live.update(self.task, completed=done, description=description)
        self._counted = (total, done)

    def _restart(self, description: str, total: int | None, done: int) -> None:
        """A new task row: a new activity gets its own estimate (rich keeps a task's speed samples)."""
        self.live.remove_task(self.task)
        self.task = self.live.add_task(description, total=total, completed=done)

    def _line(self, text: str, done: int | None, total: int | None) -> None:
        from sqc.display import shown

        if done is None:  # what a pass is doing now: the bar's caption, not worth a line in a log
            self._plain = None
            return
        tenth = done * PLAIN_STEPS // total if total else 0
        last = self._plain
        fresh = last is None or last[0] != total or tenth < last[1]
        if total is None or fresh or tenth > last[1] or done >= total:  # type: ignore[index]
            self._plain = (total, tenth)
            count = f"{done}/{total}" if total else f"{done}"
            self.console.print(f"{shown(text)} ({count})")


def _bar(console: Any) -> Any:
    """A transient one-line rich progress display: spinner, text, and — for counted work — a bar,
    ``done/total`` and the estimated time left."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Counted(ProgressColumn):
        """Shows ``column`` only for a task with a known total (a note with nothing to count gets none)."""

        def __init__(self, column: ProgressColumn) -> None:
            super().__init__()
            self.column = column

        def render(self, task: Any) -> Any:
            return self.column.render(task) if task.total is not None else Text("")

    return Progress(
        SpinnerColumn("dots"),
        TextColumn("{task.description}", markup=False),
        Counted(BarColumn()),
        Counted(MofNCompleteColumn()),
        Counted(TimeRemainingColumn()),
        console=console,
        transient=True,
    )
