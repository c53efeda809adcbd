"""A stable text form of the IR, for people and for golden-file tests.

LLVM and MLIR print their IR between passes (``-print-after``) and test passes against checked-in text
(``update_test_checks.py`` refreshes it). sqc does the same: :func:`ir_text` renders a
:class:`~sqc.ir.records.CompressedModel` as lines that depend only on what the model *is* — the graph in the
op names the container stores, and for every tensor its role, shape, representation (float, shared,
fixed point), density, coder and a CRC-32 of its exact values — never on addresses, dict order of the
process, timings or the device. Two runs that give the same ``.sqc`` give the same text, and a pass that
changes one weight changes one line.

The form (version 1)::

    ; sqc ir 1
    input x: float32[1, 1, 28, 28]
    tensor fc1.weight: weight [300, 784] fixed<8 frac=9> kept 23520/235200 huffman crc=1a2b3c4d
    alias lm_head.weight = transformer.wte.weight
    %x = input
    %fc1 = linear(%x, @fc1.weight, @fc1.bias) : [1, 300]
    return %fc1

``@name`` is a stored tensor (a ``get_attr`` node); ``%name`` a node's value. Floats print with
``repr`` (shortest round-trip form), so the text is exact. Lists and tuples both print as ``[...]``:
the container stores them alike, and a model read back from a file has the same text as the IR that
wrote it.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import fx

from sqc.ir.ops import stored_name
from sqc.ir.records import CompressedModel, TensorState

TEXT_VERSION = 1


def ir_text(model: CompressedModel) -> str:
    """The whole model as text (see the module docstring); ends with a newline."""
    lines = [f"; sqc ir {TEXT_VERSION}"]
    if model.pipeline:
        lines.append(f"; pipeline {model.pipeline}")
    lines += [f"input {s.name}: {s.dtype}{list(s.shape)}" for s in model.inputs]
    lines += [f"tensor {name}: {tensor_line(state)}" for name, state in model.tensors.items()]
    lines += [f"alias {alias} = {model.aliases[alias]}" for alias in sorted(model.aliases)]
    lines += graph_lines(model.graph_module)
    return "\n".join(lines) + "\n"


def tensor_line(state: TensorState) -> str:
    """``role [shape] representation [kept k/n] coder crc=…`` for one record."""
    parts = [state.role, str(list(state.shape)), _representation(state)]
    if state.mask is not None:
        parts.append(f"kept {state.kept}/{state.numel}")
    if state.coder != "raw":
        parts.append(state.coder)
    parts.append(f"crc={values_crc(state):08x}")
    return " ".join(parts)


def _representation(state: TensorState) -> str:
    fmt = state.fmt
    fixed = ""
    if fmt is not None:
        frac = fmt.frac[0] if len(fmt.frac) == 1 else list(fmt.frac)
        mult = "" if not fmt.mult else f" mult={fmt.mult[0] if len(fmt.mult) == 1 else list(fmt.mult)}"
        fixed = f"fixed<{fmt.bits} frac={frac}{mult}>"
    if state.codebook is not None:
        entries = int(state.codebook.numel())
        return f"shared<{entries}>" + (f" codebook {fixed}" if fixed else "")
    if state.codes is not None:
        return fixed
    dense = state.dense
    return str(dense.dtype).removeprefix("torch.") if dense is not None else "empty"


def values_crc(state: TensorState) -> int:
    """CRC-32 of the record's exact value tensors (dense, mask, codes, codebook), in that order; each
    contributes its dtype name, shape and bytes, so a change of representation changes the CRC too."""
    crc = 0
    for tensor in state.value_tensors():
        if tensor is None:
            crc = zlib.crc32(b"-", crc)
            continue
        t = tensor.detach().to("cpu").contiguous()
        crc = zlib.crc32(f"{t.dtype}{list(t.shape)}".encode(), crc)
        crc = zlib.crc32(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"", crc)
    return crc


def graph_lines(gm: fx.GraphModule) -> list[str]:
    """One line per node, in execution order; ``get_attr`` nodes are folded into ``@name`` operands."""
    lines: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            lines.append(f"%{node.name} = input")
        elif node.op == "get_attr":
            continue
        elif node.op in ("call_function", "call_method"):
            op = _op_name(node)
            keywords = sorted(node.kwargs.items())  # the container stores them sorted by name
            args = [_arg(a) for a in node.args] + [f"{k}={_arg(v)}" for k, v in keywords]
            shape = node.meta.get("shape")
            suffix = f" : {list(shape)}" if shape is not None else ""
            lines.append(f"%{node.name} = {op}({', '.join(args)}){suffix}")
        elif node.op == "output":
            lines.append(f"return {_arg(node.args[0])}")
        else:  # call_module never survives capture; say so rather than hide it
            lines.append(f"%{node.name} = <{node.op} {node.target}>")
    return lines


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f".{node.target}"
    return stored_name(node.target) or str(node.target)


def _arg(value: Any) -> str:
    if isinstance(value, fx.Node):
        return f"@{value.target}" if value.op == "get_attr" else f"%{value.name}"
    if isinstance(value, (list, tuple)):  # one form for both, as the container stores them
        return "[" + ", ".join(_arg(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_arg(v)}" for k, v in value.items()) + "}"
    if isinstance(value, slice):
        return f"slice({_arg(value.start)}, {_arg(value.stop)}, {_arg(value.step)})"
    if value is Ellipsis:
        return "..."
    if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
        return str(value)
    if isinstance(value, torch.device):
        return f"device({str(value)!r})"
    return repr(value)
