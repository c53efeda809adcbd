"""Capturing a module with ``torch.export`` when ``torch.fx.symbolic_trace`` cannot.

Symbolic tracing stops at the first thing it cannot follow: control flow on tensor values, a
``**kwargs`` forward (Hugging Face), an ``nn.LSTM``, a function outside sqc's vocabulary. ``torch.export``
(non-strict: the forward runs as Python on fake tensors) follows all of these and gives an ATen graph,
which :mod:`sqc.frontend.trace` canonicalises like a ``.pt2`` program. What this module adds around it:

* examples: a tensor per forward argument, in the dtype the user declared (token ids are int64);
* inference settings: a forward taking ``use_cache`` is captured with ``use_cache=False`` (a key/value
  cache is an output for generation loops, not part of the model's function);
* outputs: ``export`` flattens them; :func:`output_structure` rebuilds dicts (``ModelOutput``), tuples
  and lists so that the IR returns what the model returned (a ``ModelOutput`` comes back as a dict);
* names: nodes are named after the layer whose weights they use (``encoder_layer_0_linear1``), as a
  symbolically traced graph names them, instead of ``linear_7``.
"""

from __future__ import annotations

import inspect
import os
import traceback
import warnings
from typing import Any

import torch
import torch.nn as nn
from torch import fx
from torch.utils import _pytree as pytree

from sqc.errors import TraceError

INTERNAL_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(__file__))
"""Frames in these directories are torch's or sqc's: errors point at the user's line instead."""

INFERENCE_KWARGS = {"use_cache": False}
"""Forward keyword arguments set when the forward takes them: what inference means for the model."""


def _first_line(exc: BaseException) -> str:
    """The reason, on one line: export's messages run to pages (graph dumps, advice, links)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    reason = " ".join(text.splitlines()[0].split())
    for cut in (" (Size-like", " consider using", " For more information"):
        reason = reason.split(cut)[0]
    return reason[:240]


def user_frame(exc: BaseException) -> str:
    """``at file:line `source``` of the deepest frame outside torch and sqc, or '' when there is none."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(INTERNAL_DIRS)]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {frame.filename}:{frame.lineno} `{(frame.line or '').strip()}`"


def inference_kwargs(module: nn.Module) -> dict[str, Any]:
    """The :data:`INFERENCE_KWARGS` the module's forward accepts."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in INFERENCE_KWARGS.items() if k in parameters}


def export_module(
    module: nn.Module, examples: tuple[torch.Tensor, ...], *, dynamic_batch: bool = True
) -> fx.GraphModule:
    """``torch.export`` (non-strict) of ``module`` on ``examples``, as an unlifted GraphModule whose
    parameters and buffers are ``get_attr`` nodes named as in the module's ``state_dict``.

    With ``dynamic_batch`` the first dimension of every input is left to export to keep symbolic
    (``Dim.AUTO``), so the graph runs on any batch size, as a symbolically traced one does: evaluation
    and calibration feed batches. Export specialises a dimension of size 1, so the capture runs on the
    examples repeated to a batch of 2. Where the model fixes its batch size, export specialises it and
    the capture is redone on the examples as given (a graph for that batch size only).
    """
    kwargs = inference_kwargs(module)
    leaves = pytree.tree_leaves(examples)
    if dynamic_batch and all(isinstance(x, torch.Tensor) and x.dim() > 0 for x in leaves):
        doubled = pytree.tree_map(lambda x: torch.cat([x, x]) if x.shape[0] == 1 else x, examples)
        names = _positional_names(module, len(examples))
        if names is not None:
            shapes: dict[str, Any] = {
                name: pytree.tree_map(lambda _: {0: torch.export.Dim.AUTO}, x)
                for name, x in zip(names, examples, strict=True)
            }
            shapes.update({key: None for key in kwargs})
            try:
                graph = _export(module, doubled, kwargs, shapes)
            except TraceError:  # e.g. the model checks its batch size: captured as given below
                graph = None
            if graph is not None and _batch_is_symbolic(graph):
                return graph
    return _export(module, examples, kwargs, None)


def _export(
    module: nn.Module, examples: tuple[torch.Tensor, ...], kwargs: dict[str, Any], shapes: Any
) -> fx.GraphModule:
    try:
        with warnings.catch_warnings():  # e.g. nn.LSTM's "_flat_weights were assigned during export"
            warnings.simplefilter("ignore")
            program = torch.export.export(
                module, examples, kwargs or None, dynamic_shapes=shapes, strict=False
            )
            graph = program.module()
    except Exception as exc:
        raise TraceError(
            f"torch.export cannot capture {type(module).__name__}{user_frame(exc)}: {_first_line(exc)}"
        ) from None
    user = set(program.graph_signature.user_inputs)
    graph.meta["sqc_symbolic_batch"] = all(
        isinstance(p.meta["val"].shape[0], torch.SymInt)
        for p in program.graph.nodes
        if p.op == "placeholder" and p.name in user and isinstance(p.meta.get("val"), torch.Tensor)
    )
    return graph


def _batch_is_symbolic(graph: fx.GraphModule) -> bool:
    return bool(graph.meta.get("sqc_symbolic_batch"))


def _positional_names(module: nn.Module, count: int) -> list[str] | None:
    """The names of the forward's first ``count`` parameters (dynamic shapes are given by name)."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [p.name for p in positional[:count]] if len(positional) >= count else None


def output_structure(source: fx.GraphModule, flat: Any) -> Any:
    """The model's output rebuilt from an exported graph's flat output list: a dict for a dict or
    ``ModelOutput``, a tuple for a tuple, list or other container, the tensor itself for a tensor."""
    spec = getattr(source, "_out_spec", None)
    if spec is None or not isinstance(flat, (tuple, list)):
        return flat
    values = iter(flat)

    def build(node: pytree.TreeSpec) -> Any:
        if node.is_leaf():
            return next(values)
        children = [build(child) for child in node.children()]
        kind = node.type
        if kind is not None and isinstance(kind, type) and issubclass(kind, dict):
            keys = node.context if isinstance(node.context, (list, tuple)) else list(node.context or [])
            return {str(k): v for k, v in zip(keys, children, strict=True)}
        return tuple(children)

    try:
        result = build(spec)
    except (StopIteration, ValueError, TypeError):
        return flat
    return result


def readable_names(source: fx.GraphModule) -> dict[fx.Node, str]:
    """A name for each call node of an exported graph that is the first to use a layer's parameters:
    the layer's path with ``_`` for ``.`` (``fc1``, ``enc_layers_0_linear1``)."""
    params = {name for name, _ in source.named_parameters(remove_duplicate=False)}
    named: dict[fx.Node, str] = {}
    taken: set[str] = set()
    for node in source.graph.nodes:
        if node.op != "call_function":
            continue
        for arg in node.all_input_nodes:
            if arg.op == "get_attr" and str(arg.target) in params:
                layer = str(arg.target).rpartition(".")[0]
                if layer and layer not in taken:
                    taken.add(layer)
                    named[node] = layer.replace(".", "_")
                break
    return named
