"""The package's version: ``pyproject.toml``'s ``version`` is the one place it is written. ``sqc
--version`` prints it, and every ``.sqc`` file names its writer with it (:data:`PRODUCER`), so neither
can drift from the release.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _declared() -> str:
    """The installed package's version; in a checkout imported without installing, the one its
    ``pyproject.toml`` declares (so that a file written from the checkout has the same bytes)."""
    try:
        return version("sqc")
    except PackageNotFoundError:
        pass
    try:
        pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
        return str(pyproject["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "0+unknown"


__version__ = _declared()

PRODUCER = "sqc " + ".".join(__version__.split(".")[:2])
"""The graph section's ``producer``: ``sqc`` and the major.minor of the writing package (``sqc 0.1`` for
0.1.x). Readers ignore it, but it is in the file's bytes: a patch release writes the same files."""
