"""sqc: a compiler for neural-network compression.

The Python API (the CLI is a thin layer over it)::

    import sqc
    artifact = sqc.compress(model, example_inputs, pipeline="prune,quant,huffman")
    artifact.save("model.sqc")
    restored = sqc.load("model.sqc")     # a runnable torch.fx.GraphModule
    table = sqc.inspect("model.sqc")     # where every byte goes
    sim = sqc.simulate("model.sqc", x, calib="data.npz")  # the C/HLS targets' integer outputs
"""

import os as _os

# In a source checkout the subpackages sqc.passes, sqc.formats and sqc.targets live beside this
# directory (the repository's top-level passes/, formats/, targets/; the installed wheel maps them
# inside sqc/). Let `python` started from the repository root import the checkout the same way.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "formats")) and _os.path.isdir(
    _os.path.join(_here, "..", "formats")
):
    __path__.append(_os.path.normpath(_os.path.join(_here, "..")))

from sqc.api import Artifact, compress, inspect, load, simulate  # noqa: E402
from sqc.errors import SqcError, SqcFormatError  # noqa: E402

__all__ = ["Artifact", "SqcError", "SqcFormatError", "compress", "inspect", "load", "simulate"]


def _version_of_installed() -> str:
    """The version pyproject.toml declares (the one place it is written), as installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sqc")
    except PackageNotFoundError:  # a checkout imported without installing
        return "0+unknown"


__version__ = _version_of_installed()
