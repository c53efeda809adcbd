"""One table of built-in passes (lazy imports), extended by plugins through entry points.

Like LLVM's ``PassRegistry.def`` and xDSL's lazy pass table: the built-ins are listed here by short
name and import path, so listing them costs no import; third-party packages add theirs through the
``sqc.passes`` entry-point group (``sqc.targets`` and ``sqc.formats`` work the same way). A name
offered twice is an error naming both packages, and a plugin that fails to load is an error, never a
silent omission.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from sqc.errors import SqcError

BUILTIN_PASSES: dict[str, str] = {
    "prune": "sqc.passes.prune:Prune",
    "share": "sqc.passes.share:Share",
    "quant": "sqc.passes.quant:Quant",
    "huffman": "sqc.passes.huffman:Huffman",
    "rans": "sqc.passes.rans:Rans",
    "finetune": "sqc.passes.finetune:Finetune",
    "sensitivity": "sqc.passes.sensitivity:Sensitivity",
    "prune-channels": "sqc.passes.prune_channels:PruneChannels",
    "auto": "sqc.passes.auto:Auto",
}

BUILTIN_TARGETS: dict[str, str] = {
    "pytorch": "sqc.targets.pytorch:PyTorchTarget",
    "c": "sqc.targets.c:CTarget",
    "hls": "sqc.targets.hls:HlsTarget",
    "sim": "sqc.targets.sim:SimTarget",
    "onnx": "sqc.targets.onnx:OnnxTarget",
}

BUILTIN_FORMATS: dict[str, str] = {
    "sqc": "sqc.formats.container:SqcFormat",
}

LAYER_TRANSFORMS: dict[str, str] = {
    "prune": "sqc.passes.prune:prune_layer",
    "share": "sqc.passes.share:share_record",
    "quant": "sqc.passes.quant:quant_record",
}
"""What a sensitivity sweep does to one layer at one point of each kind of curve (a sparsity, a number of
bits, a quantization step): the passes' own per-layer functions, by name, so that the compiler's sweeper
(:mod:`sqc.compiler.sensitivity`) runs exactly what the passes do without importing the passes built on
it."""

_BUILTINS = {"sqc.passes": BUILTIN_PASSES, "sqc.targets": BUILTIN_TARGETS, "sqc.formats": BUILTIN_FORMATS}


@dataclass(frozen=True)
class Entry:
    """One registered name: where it comes from and how to import it."""

    name: str
    ref: str
    package: str

    def load(self) -> Any:
        module_name, _, attr = self.ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # a broken plugin must stop the run, with its name
            raise SqcError(
                f"cannot load {self.name!r} from package {self.package} ({self.ref}): {exc}"
            ) from None
        return obj


@cache
def entries(group: str) -> dict[str, Entry]:
    """Every name in ``group``: built-ins first, then plugins; duplicates are an error."""
    table = {name: Entry(name, ref, "sqc") for name, ref in _BUILTINS.get(group, {}).items()}
    for ep in sorted(entry_points(group=group), key=lambda e: (e.name, e.value)):
        package = ep.dist.name if ep.dist is not None else "an unknown package"
        if ep.name in table:
            first = table[ep.name]
            if first.ref == ep.value and first.package == package:
                continue  # the same distribution seen twice on sys.path
            raise SqcError(
                f"{group} name {ep.name!r} is registered twice: by {first.package} ({first.ref}) "
                f"and by {package} ({ep.value})"
            )
        table[ep.name] = Entry(ep.name, ep.value, package)
    return table


def lookup(group: str, name: str) -> Entry | None:
    return entries(group).get(name)


@cache
def layer_transform(kind: str) -> Any:
    """The function ``fn(record, value)`` that :data:`LAYER_TRANSFORMS` names for ``kind``."""
    ref = LAYER_TRANSFORMS.get(kind)
    if ref is None:
        raise SqcError(f"no layer transform for {kind!r} (known: {', '.join(LAYER_TRANSFORMS)})")
    return Entry(kind, ref, "sqc").load()


def load_pass(name: str) -> type:
    """The pass class registered as ``name``; unknown names raise with the list of valid ones."""
    from sqc.compiler.pass_base import Pass

    entry = lookup("sqc.passes", name)
    if entry is None:
        raise SqcError(f"unknown pass {name!r} (known: {', '.join(entries('sqc.passes'))})")
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Pass)) or getattr(cls, "name", None) != name:
        raise SqcError(f"{entry.ref} from {entry.package} is not an sqc Pass named {name!r}")
    return cls
