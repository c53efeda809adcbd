"""``sqc inspect``: where every byte of a ``.sqc`` goes, a model's size and FLOPs, or the IR as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sqc.app.cli import options, render
from sqc.app.cli.options import (
    ArchOpt,
    ExamplesOpt,
    JsonOpt,
    NoStrictOpt,
    ShapeOpt,
    StateKeyOpt,
    TrustOpt,
)
from sqc.app.cli.render import err, out
from sqc.display import shown
from sqc.errors import SqcError


def inspect(
    path: Annotated[Path, typer.Argument(help="a .sqc file, or a model file (with --arch for a state_dict)")],
    arch: ArchOpt = None,
    input_shape: ShapeOpt = None,
    example_inputs: ExamplesOpt = None,
    trust_pickle: TrustOpt = False,
    state_key: StateKeyOpt = None,
    no_strict: NoStrictOpt = False,
    as_json: JsonOpt = False,
    show_all: Annotated[
        bool, typer.Option("--all", help=f"every layer in the table (default: the {TABLE_LAYERS} largest)")
    ] = False,
    as_ir: Annotated[
        bool, typer.Option("--ir", help="print the IR's text form (graph and tensor records) instead")
    ] = False,
) -> None:
    """Show where every byte goes (per layer and component), or a model's params, bytes and FLOPs."""
    from sqc.app.api import inspect as run

    if not path.exists():
        raise SqcError(f"{path}: no such file")
    model_options = {
        "arch": arch,
        "input_shapes": options.examples(input_shape, example_inputs),
        "trust_pickle": trust_pickle,
        "state_key": state_key,
        "strict": not no_strict,
    }
    if as_ir:
        if as_json:
            raise SqcError("give either --ir or --json, not both")
        from sqc.app.api import ir_text

        out.print(ir_text(path, **model_options), end="", markup=False, highlight=False)
        return
    info = run(path, **model_options)
    for note in info.get("notes", []):
        err.print(f"warning: {note}", markup=False)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    if info["kind"] == "model":
        _render_model(info)
    else:
        _render_container(info, None if show_all else TABLE_LAYERS)


def _render_model(info: dict[str, Any]) -> None:
    table = render.table(f"{info['file']}", ["layer", "params", "bytes (fp32)", "FLOPs", "share"])
    total = info["totals"]
    for row in info["layers"]:
        table.add_row(
            shown(row["layer"]),
            f"{row['params']:,}",
            f"{row['bytes']:,}",
            f"{row['flops']:,}",
            f"{row['bytes'] / total['bytes']:.1%}",
        )
    table.add_row(
        "total", f"{total['params']:,}", f"{total['bytes']:,}", f"{total['flops']:,}", "100.0%", style="bold"
    )
    render.print_table(table, f"{info['file']}: uncompressed model, input {info['inputs']}")


TABLE_LAYERS = 200
"""Layers ``inspect`` draws by default: the largest, in file order, the rest summed in one row. A table
row costs about a millisecond to draw, so a file of 16,000 tiny tensors took 16 s to show; ``--all``
and ``--json`` give every layer."""


def _shown_layers(layers: list[dict[str, Any]], limit: int | None) -> tuple[list[dict[str, Any]], int, int]:
    """``(rows to draw, layers left out, their bytes)``: the ``limit`` largest by total bytes, in order."""
    if limit is None or len(layers) <= limit:
        return layers, 0, 0
    largest = sorted(range(len(layers)), key=lambda i: -layers[i]["total_bytes"])[:limit]
    keep = set(largest)
    rest = [row for i, row in enumerate(layers) if i not in keep]
    return [layers[i] for i in sorted(keep)], len(rest), sum(row["total_bytes"] for row in rest)


def _render_container(info: dict[str, Any], limit: int | None = None) -> None:
    columns = [
        "layer",
        "params",
        "MACs",
        "density",
        "bits/w",
        "index bits/w",
        "codebook B",
        "header B",
        "total B",
        "share",
        "vs fp32",
    ]
    table = render.table(f"{info['file']} — {info['size']:,} bytes", columns)
    rows, left_out, left_bytes = _shown_layers(info["layers"], limit)
    for row in rows:
        table.add_row(
            shown(row["layer"]),
            f"{row['params']:,}",
            f"{row['macs']:,}" if "macs" in row else "",
            f"{row['density']:.1%}",
            f"{row['bits_per_weight']:.2f}",
            f"{row['index_bits_per_weight']:.2f}",
            f"{row['codebook_bytes']:,}",
            f"{row['header_bytes']:,}",
            f"{row['total_bytes']:,}",
            f"{row['share']:.1%}",
            f"{row['ratio_vs_fp32']:.1f}x",
        )
    if left_out:
        table.add_row(
            f"({left_out:,} smaller layers: --all)",
            *[""] * 7,
            f"{left_bytes:,}",
            f"{left_bytes / info['size']:.1%}",
            "",
        )
    comps = info["components"]
    for label, key in (
        ("(file header)", "file_header"),
        ("(graph)", "graph"),
        ("(pass report)", "report"),
        ("(section table: graph, report)", "section_table_graph_report"),
    ):
        table.add_row(
            label,
            "",
            "",
            "",
            "",
            "",
            "",
            f"{comps[key]:,}",
            f"{comps[key]:,}",
            f"{comps[key] / info['size']:.1%}",
            "",
        )
    totals = info["totals"]
    table.add_row(
        "total",
        f"{totals['params']:,}",
        f"{totals['macs']:,}" if "macs" in totals else "",
        "",
        f"{totals['bits_per_param']:.2f}",
        "",
        "",
        "",
        f"{totals['file_bytes']:,}",
        "100.0%",
        f"{totals['ratio_vs_fp32']:.1f}x",
        style="bold",
    )
    render.print_table(table, f"{info['file']}: {info['size']:,} bytes, format {info['version']}")
    out.print(f"pipeline: {shown(info['pipeline'])}")
    from sqc.app.cli.sensitivity import render_allocations

    render_allocations(info["passes"])
