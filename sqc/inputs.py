"""Reading an input file without being stalled or misled by what sits at its path.

``open()`` on a FIFO waits for a writer, and one on a character device reads forever: ``sqc inspect
fifo.sqc`` or ``--recipe /dev/zero`` would hang instead of failing. Every file sqc reads is therefore
opened without blocking and checked to be a regular file (following symlinks: reading through one is
harmless) before a byte is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqc.errors import SqcError


def require_regular(
    path: Path, error: type[SqcError] = SqcError, what: str = "file", missing: str = "no such file"
) -> None:
    """Raise ``error`` in one line unless ``path`` is a regular file (a symlink to one is fine)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is not a regular file (a pipe, socket or device), not a {what}")


def read_regular(
    path: Path,
    limit: int | None = None,
    error: type[SqcError] = SqcError,
    what: str = "file",
    missing: str = "no such file",
) -> bytes:
    """The bytes of a regular file (at most ``limit + 1`` when a limit is given, so the caller can tell
    it was larger), opened with ``O_NONBLOCK`` and checked with ``fstat`` before reading."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise error(f"{path}: is a directory, not a {what}")
        raise error(f"{path}: is not a regular file (a pipe, socket or device), not a {what}")
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read() if limit is None else handle.read(limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror})") from None
