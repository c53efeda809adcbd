"""sqc: a compiler for neural-network compression.

The Python API (the CLI is a thin layer over it)::

    import sqc
    artifact = sqc.compress(model, example_inputs, pipeline="prune,quant,huffman")
    artifact.save("model.sqc")
    restored = sqc.load("model.sqc")     # a runnable torch.fx.GraphModule
    weights = sqc.load_state_dict("model.sqc")  # or only its tensors, for a model you have
    table = sqc.inspect("model.sqc")     # where every byte goes
    sim = sqc.simulate("model.sqc", x, calib="data.npz")  # the C/HLS targets' integer outputs
"""


def _map_checkout_subpackages() -> None:
    """In a source checkout, make ``sqc.passes``, ``sqc.formats`` and ``sqc.targets`` the top-level
    folders ``pyproject.toml``'s ``package-dir`` maps them from (an installed sqc has them inside).

    Exactly those three, and only in a source checkout (a ``pyproject.toml`` beside ``sqc/``; an
    installed sqc has none there): Python started in the checkout,
    or a Ray worker that inherits the driver's ``sys.path``, then imports the same package an install
    gives (without the compiled rANS core: its numpy twin writes the same bytes), and no other folder
    of the repository becomes part of ``sqc``.
    """
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    root = here.parent
    if not (root / "pyproject.toml").is_file():
        return
    for name in ("passes", "formats", "targets"):
        folder = root / name
        if (here / name).is_dir() or not (folder / "__init__.py").is_file() or f"sqc.{name}" in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(
            f"sqc.{name}", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        globals()[name] = module


_map_checkout_subpackages()

from sqc.app.api import Artifact, compress, inspect, load, load_state_dict, simulate  # noqa: E402
from sqc.errors import SqcError, SqcFormatError  # noqa: E402
from sqc.version import __version__ as __version__  # noqa: E402

__all__ = [
    "Artifact",
    "SqcError",
    "SqcFormatError",
    "compress",
    "inspect",
    "load",
    "load_state_dict",
    "simulate",
]
