"""Every file sqc writes goes through here, so that no command can clobber what it should not.

A file is written to a temporary file in its own directory, fsynced and renamed over the path: a
reader (or a crash) sees the old file or the new one, never half of either. What is at the path is
looked at with ``lstat`` and never followed: a symbolic link (dangling or not), a directory, a device
node, a FIFO or a socket is refused whatever ``--force`` says, because renaming over it would replace
something that is not an output (``--force`` replaces regular files only). A path that is one of the
command's inputs (same device and inode: a hard link or a symlink to it counts) is refused too, so
``-o model.pt --force`` cannot destroy the model. A write that fails (a full disk: ENOSPC, EFBIG) is
one line, removes its temporary file and leaves the path as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from sqc.errors import SqcError

Inputs = Iterable[str | os.PathLike[str] | None]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def same_file(st: os.stat_result, other: str | os.PathLike[str]) -> bool:
    """Whether ``other`` (followed, as a command reads it) is the file ``st`` describes."""
    try:
        theirs = os.stat(other)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (theirs.st_dev, theirs.st_ino)


def refuse_input(path: Path, inputs: Inputs) -> None:
    """Refuse an output path that is one of the command's inputs (whatever else it is)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    for source in inputs:
        if source is not None and same_file(st, source):
            raise SqcError(f"{path}: is also an input of this command ({source}); choose another output")


def check_output(path: Path, *, force: bool = False, inputs: Inputs = ()) -> os.stat_result | None:
    """Refuse what :func:`write_atomic` would refuse, before any work is done; returns the ``lstat``
    of the regular file that will be replaced, or None when the path is free."""
    path = Path(path)
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SqcError(f"{path}: cannot check the output path ({exc.strerror})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise SqcError(f"{path}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            kind = _kind(st.st_mode)
            raise SqcError(f"{path}: is a {kind}, not a regular file; sqc never writes through one")
        refuse_input(path, inputs)
        if not force:
            raise SqcError(f"{path}: already exists (use --force to replace it)")
    if not path.parent.is_dir():
        raise SqcError(f"{path.parent}: no such directory")
    return st


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes, *, force: bool = False, inputs: Inputs = ()) -> None:
    """Temp file beside ``path``, fsync, then rename: a reader never sees half a file.

    A new file gets the usual permissions (``0o666`` less the umask); a replaced one keeps its own.
    """
    path = Path(path)
    inputs = list(inputs)
    old = check_output(path, force=force, inputs=inputs)
    mode = stat.S_IMODE(old.st_mode) if old is not None else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise SqcError(f"{path.parent}: cannot create a file there ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        check_output(path, force=force, inputs=inputs)  # again: something may have appeared meanwhile
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
            raise SqcError(f"{path}: cannot write it ({reason}); it is left as it was") from None
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_files(out_dir: Path, files: dict[str, bytes], *, force: bool = False, inputs: Inputs = ()) -> int:
    """Write a project (``{file name: bytes}``) into ``out_dir``, each file through :func:`write_atomic`.

    Every path is checked before the first is written, so a refusal (a symlink or a FIFO where
    ``model.c`` goes, an input file) leaves the directory untouched; an interrupted run leaves every
    file whole, old or new. Returns the bytes written.
    """
    out_dir = Path(out_dir)
    inputs = list(inputs)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SqcError(f"{out_dir}: cannot create the output directory ({exc.strerror})") from None
    for name in files:
        check_output(out_dir / name, force=force, inputs=inputs)
    for name, data in files.items():
        write_atomic(out_dir / name, data, force=force, inputs=inputs)
    return sum(len(data) for data in files.values())
