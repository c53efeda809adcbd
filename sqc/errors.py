"""The one error family of sqc.

Every expected failure (bad input, bad option, corrupt file) is raised as a subclass of
:class:`SqcError`; the CLI turns it into a single line on stderr and exit code 1. Anything else
escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class SqcError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class SqcFormatError(SqcError):
    """A ``.sqc`` file (or a section of one) is corrupt, truncated or of an unknown version.

    ``offset`` is the byte offset in the file where the problem was found, when known.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(f"{message} (at byte offset {offset})" if offset is not None else message)


class PipelineError(SqcError):
    """The pipeline text or recipe is malformed, names an unknown pass/option, or orders passes impossibly.

    ``source`` and ``column`` (0-based), when set, locate the fault in the pipeline text: the CLI prints
    the one-line message and then the text with a caret under that column.
    """

    def __init__(self, message: str, source: str | None = None, column: int | None = None) -> None:
        self.source = source
        self.column = column
        super().__init__(message)


class ModelLoadError(SqcError):
    """A model file cannot be loaded, or does not fit the architecture it was given."""


class TraceError(SqcError):
    """torch.fx could not trace the model, or the graph uses an op sqc does not support."""


class VerifyError(SqcError):
    """The IR verifier found an inconsistency after a pass (a bug in that pass or a plugin)."""
