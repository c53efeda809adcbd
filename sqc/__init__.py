"""sqc: a compiler for neural-network compression.

The Python API (the CLI is a thin layer over it)::

    import sqc
    artifact = sqc.compress(model, example_inputs, pipeline="prune,quant,huffman")
    artifact.save("model.sqc")
    restored = sqc.load("model.sqc")     # a runnable torch.fx.GraphModule
    table = sqc.inspect("model.sqc")     # where every byte goes
    sim = sqc.simulate("model.sqc", x, calib="data.npz")  # the C/HLS targets' integer outputs
"""

from sqc.app.api import Artifact, compress, inspect, load, simulate
from sqc.errors import SqcError, SqcFormatError

__all__ = ["Artifact", "SqcError", "SqcFormatError", "compress", "inspect", "load", "simulate"]


def _version_of_installed() -> str:
    """The version pyproject.toml declares (the one place it is written), as installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sqc")
    except PackageNotFoundError:  # a checkout imported without installing
        return "0+unknown"


__version__ = _version_of_installed()
