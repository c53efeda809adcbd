"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import fx

from sqc.errors import SqcError
from sqc.frontend import trace
from sqc.ir import CompressedModel, PassRecord
from sqc.loading import load_model
from sqc.pass_base import Pass, PassContext, PassResult
from sqc.pipeline import Pipeline

DEFAULT_PIPELINE = "prune,quant,huffman"


@dataclass
class Artifact:
    """A compressed model in memory: the IR after the pipeline ran."""

    model: CompressedModel

    @property
    def report(self) -> list[PassRecord]:
        return self.model.report

    @property
    def pipeline(self) -> str:
        return self.model.pipeline

    def to_bytes(self) -> bytes:
        from sqc.formats.container import serialize

        return serialize(self.model)

    def save(self, path: str | Path, *, force: bool = False) -> int:
        """Write the ``.sqc`` file atomically; returns its size in bytes."""
        from sqc.formats.container import save

        return save(self.model, Path(path), force=force)

    def module(self) -> fx.GraphModule:
        """The runnable compressed model (weights are the decoded values)."""
        return self.model.graph_module


def _shapes(example_inputs: Any) -> list[tuple[int, ...]] | None:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    shapes = []
    for item in example_inputs:
        if isinstance(item, torch.Tensor):
            shapes.append(tuple(item.shape))
        elif isinstance(item, Sequence) and all(isinstance(d, int) for d in item):
            shapes.append(tuple(item))
        else:
            raise SqcError(f"example input of type {type(item).__name__}: give tensors or shapes")
    return shapes


def compress(
    model: nn.Module | str | Path,
    example_inputs: Any = None,
    pipeline: str | Pipeline = DEFAULT_PIPELINE,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
    verify: bool = True,
    progress: Callable[[str], None] | None = None,
    on_pass: Callable[[int, Pass, PassResult, float], None] | None = None,
) -> Artifact:
    """Trace ``model`` (a module or a model file), run the pipeline, return the :class:`Artifact`.

    ``example_inputs`` are tensors or shapes (one per forward tensor argument); a ``.pt2`` file
    carries its own. ``pipeline`` is pipeline text or a :class:`Pipeline`.
    """
    passes = pipeline if isinstance(pipeline, Pipeline) else Pipeline.parse(pipeline)
    shapes = _shapes(example_inputs)
    if isinstance(model, (str, Path)):  # loaded here: nobody else holds it, so the IR may take its weights
        loaded = load_model(Path(model), arch, trust_pickle=trust_pickle)
        ir = trace(loaded.module, shapes or loaded.input_shapes, copy_weights=False)
        del loaded
        gc.collect()  # the traced module sits in reference cycles; free its weights before passes run
    else:
        ir = trace(model, shapes)
    ctx = PassContext(progress=progress)
    passes.run(ir, ctx, verify=verify, on_pass=on_pass)
    return Artifact(ir)


def read(path: str | Path) -> CompressedModel:
    """The IR stored in a ``.sqc`` file."""
    from sqc.formats.container import read as read_container

    return read_container(Path(path))


def load(path: str | Path) -> fx.GraphModule:
    """A runnable ``nn.Module`` (an fx GraphModule) rebuilt from a ``.sqc`` file — no user code needed."""
    module = read(path).graph_module
    module.eval()
    return module


def inspect(target: str | Path | Artifact, **model_options: Any) -> dict[str, Any]:
    """Where every byte goes (``.sqc``), or parameters, bytes and FLOPs per layer (a model file)."""
    from sqc.inspection import inspect_container, inspect_model

    if isinstance(target, Artifact):
        return inspect_container(target.to_bytes(), "<in memory>")
    path = Path(target)
    if path.suffix == ".sqc" or _has_magic(path):
        return inspect_container(path.read_bytes(), str(path))
    return inspect_model(path, **model_options)


def _has_magic(path: Path) -> bool:
    from sqc.formats.container import MAGIC

    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
