"""The package's version, read once from its metadata: ``pyproject.toml``'s ``version`` is the one place
it is written. ``sqc --version`` prints it, and every ``.sqc`` file names its writer with it
(:data:`PRODUCER`), so neither can drift from the release.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed() -> str:
    try:
        return version("sqc")
    except PackageNotFoundError:  # a checkout imported without installing
        return "0+unknown"


__version__ = _installed()

PRODUCER = "sqc " + ".".join(__version__.split(".")[:2])
"""The graph section's ``producer``: ``sqc`` and the major.minor of the writing package (``sqc 0.1`` for
0.1.x). Readers ignore it, but it is in the file's bytes: a patch release writes the same files."""
