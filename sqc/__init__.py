"""sqc: a compiler for neural-network compression.

The Python API (the CLI is a thin layer over it)::

    import sqc
    artifact = sqc.compress(model, example_inputs, pipeline="prune,quant,huffman")
    artifact.save("model.sqc")
    restored = sqc.load("model.sqc")     # a runnable torch.fx.GraphModule
    table = sqc.inspect("model.sqc")     # where every byte goes
"""

from sqc.api import Artifact, compress, inspect, load
from sqc.errors import SqcError, SqcFormatError

__all__ = ["Artifact", "SqcError", "SqcFormatError", "compress", "inspect", "load"]
__version__ = "0.1.0"
