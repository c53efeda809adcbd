"""``inspect``: where every byte of a ``.sqc`` goes, or what an uncompressed model costs.

Both produce plain data (JSON-ready dicts); the CLI renders them as tables or prints the JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqc.errors import SqcError, SqcFormatError
from sqc.formats.container import ENTRY_SIZE, HEADER_SIZE, Layout, read_layout, without_cycle_collection
from sqc.formats.graph_codec import BYTES_PER_NODE, NODE_BASE, decode_graph
from sqc.formats.tensor_codec import CODEC_NAMES
from sqc.ir.cost import compute
from sqc.ir.records import CompressedModel


def _container_compute(layout: Layout, where: str) -> dict[str, tuple[int, int]]:
    """FLOPs and MACs per layer of a container's graph (decoded and checked as ``read`` does)."""
    names = [entry[0] for entry in layout.meta["tensors"]]
    shapes = {entry[0]: tuple(entry[1]) for entry in layout.meta["tensors"]}
    graph_section = layout.sections[0]
    try:
        graph = decode_graph(
            layout.meta, names, graph_section.offset, NODE_BASE + graph_section.length // BYTES_PER_NODE
        )
    except SqcFormatError as exc:
        raise SqcFormatError(f"{where}: {exc}") from None
    return compute(graph, shapes.__getitem__)


def inspect_container(data: bytes, where: str) -> dict[str, Any]:
    """Per-layer and per-component byte accounting of a ``.sqc`` file."""
    try:
        with without_cycle_collection():
            layout = read_layout(data)
    except SqcFormatError as exc:
        raise SqcFormatError(f"{where}: {exc}") from None
    size = layout.size
    sections = layout.sections
    tensors = []
    for name, (state, info, section) in layout.tensors.items():
        numel = state.numel
        if info.layout == "sparse":
            kept = info.kept
        else:  # a dense layout stores every value; for a kernel, density still counts the non-zeros
            kept = int((state.decode() != 0).sum()) if state.role == "weight" else numel
        tensors.append(
            {
                "tensor": name,
                "layer": state.layer,
                "role": state.role,
                "shape": list(state.shape),
                "params": numel,
                "kept": kept,
                "density": kept / numel if numel else 1.0,
                "codec": CODEC_NAMES[section.codec],
                "layout": info.layout,
                "streams": info.streams,
                "values_bytes": info.values,
                "index_bytes": info.index,
                "codebook_bytes": info.codebook,
                "header_bytes": info.header + ENTRY_SIZE,
                "total_bytes": section.length + ENTRY_SIZE,
                "bits_per_weight": 8 * info.values / max(1, kept if info.layout == "sparse" else numel),
                "index_bits_per_weight": 8 * info.index / max(1, kept) if info.layout == "sparse" else 0.0,
                "centroids": int(state.codebook.numel()) if state.codebook is not None else None,
                "fixed_point": {"bits": state.fmt.bits, "frac": list(state.fmt.frac)} if state.fmt else None,
            }
        )
    counted = _container_compute(layout, where)
    by_layer: dict[str, list[dict[str, Any]]] = {}
    for row in tensors:
        by_layer.setdefault(row["layer"], []).append(row)
    layers = []
    for layer_name, rows in by_layer.items():
        # bits per weight describe the layer's kernel; a layer without one (a BatchNorm) by all its tensors
        kernels = [r for r in rows if r["role"] == "weight"] or rows
        kept = sum(r["kept"] for r in kernels)
        sums = {
            key: sum(r[key] for r in rows)
            for key in (
                "params",
                "values_bytes",
                "index_bytes",
                "codebook_bytes",
                "header_bytes",
                "total_bytes",
            )
        }
        layers.append(
            {
                "layer": layer_name,
                **sums,
                "weights": sum(r["params"] for r in kernels),
                "kept": kept,
                "density": kept / max(1, sum(r["params"] for r in kernels)),
                "bits_per_weight": 8 * sum(r["values_bytes"] for r in kernels) / max(1, kept),
                "index_bits_per_weight": 8 * sum(r["index_bytes"] for r in kernels) / max(1, kept),
                "share": sums["total_bytes"] / size,
                "ratio_vs_fp32": 4 * sums["params"] / max(1, sums["total_bytes"]),
                "flops": counted.get(layer_name, (0, 0))[0],
                "macs": counted.get(layer_name, (0, 0))[1],
            }
        )
    components = {
        "file_header": HEADER_SIZE,
        "section_table_graph_report": 2 * ENTRY_SIZE,
        "graph": sections[0].length,
        "report": sections[-1].length,
        "tensors": sum(t["total_bytes"] for t in tensors),
    }
    params = sum(t["params"] for t in tensors)
    return {
        "kind": "sqc",
        "file": where,
        "version": "{}.{}".format(*layout.version),
        "size": size,
        "pipeline": layout.meta["pipeline"],
        "inputs": layout.meta["inputs"],
        "layers": layers,
        "tensors": tensors,
        "components": components,
        "totals": {
            "params": params,
            "fp32_bytes": 4 * params,
            "file_bytes": size,
            "ratio_vs_fp32": 4 * params / size,
            "bits_per_param": 8 * size / max(1, params),
            "flops": sum(c[0] for c in counted.values()),
            "macs": sum(c[1] for c in counted.values()),
        },
        "passes": [r.to_json() for r in layout.report],
    }


def inspect_model(
    path: Path,
    arch: str | None = None,
    input_shapes: list[tuple[int, ...]] | None = None,
    trust_pickle: bool = False,
    state_key: str | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Parameters, fp32 bytes and FLOPs per layer of an uncompressed model file; ``notes`` holds what
    loading decided (see :func:`sqc.frontend.loading.load_model`)."""
    from sqc.frontend.loading import load_model
    from sqc.frontend.trace import trace

    loaded = load_model(path, arch, trust_pickle=trust_pickle, state_key=state_key, strict=strict)
    ir = trace(loaded.module, input_shapes or loaded.input_shapes)
    return {**describe_ir(ir, str(path)), "notes": loaded.notes}


def describe_ir(ir: CompressedModel, where: str) -> dict[str, Any]:
    gm = ir.graph_module
    counted = compute(gm.graph, lambda name: gm.get_parameter(name).shape)
    layers: dict[str, dict[str, Any]] = {}

    def row(name: str) -> dict[str, Any]:
        return layers.setdefault(name, {"layer": name, "params": 0, "bytes": 0, "flops": 0, "macs": 0})

    for state in ir.tensors.values():
        row(state.layer)["params"] += state.numel
        row(state.layer)["bytes"] += 4 * state.numel
    for layer_name, (count, macs) in counted.items():
        row(layer_name)["flops"] += count
        row(layer_name)["macs"] += macs
    params = sum(s.numel for s in ir.tensors.values())
    if params == 0:
        raise SqcError(f"{where}: the model has no parameters")
    return {
        "kind": "model",
        "file": where,
        "inputs": [[s.name, list(s.shape), s.dtype] for s in ir.inputs],
        "layers": list(layers.values()),
        "totals": {
            "params": params,
            "bytes": 4 * params,
            "flops": sum(c[0] for c in counted.values()),
            "macs": sum(c[1] for c in counted.values()),
        },
    }
