"""``sqc sensitivity``: a model's per-layer sensitivity curves as a table, JSON, and a PNG.

The command runs the ``sensitivity`` pass on the traced model: for each layer alone, the metric and
the bytes the coder writes at each sparsity (and each number of bits), like Deep Compression's
Figure 5 but with the rate beside the accuracy. ``--json`` prints what ``sensitivity{reuse=FILE}``
reads back, so a later ``compress`` can allocate from it without measuring again.

Registered on the main app by :func:`register`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sqc.app.cli import options, render
from sqc.app.cli.render import err, out
from sqc.display import shown
from sqc.errors import SqcError
from sqc.outputs import write_atomic

if TYPE_CHECKING:
    from sqc.compiler.sensitivity import Analysis

EXTRA_HINT = "pip install 'sqc[plot]' (or pip install matplotlib)"


def sensitivity_command(
    model: Annotated[
        Path, typer.Argument(help="model file: state_dict (.pt) with --arch, pickled module, or .pt2")
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help=".npz/.pt with x_val, y_val: top-1 accuracy is measured")
    ] = None,
    eval_fn: Annotated[
        str | None, typer.Option("--eval", help="pkg.module:fn, fn(model) -> float, higher is better")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="pkg.module:factory that builds the architecture")
    ] = None,
    input_shape: Annotated[
        list[str] | None,
        typer.Option("--input-shape", help="example input shape, e.g. 1,1,28,28 (repeat for several inputs)"),
    ] = None,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="allow loading a pickled module (runs code from the file)")
    ] = False,
    samples: Annotated[
        int, typer.Option("--samples", help="evaluate on the first N validation samples (0: all)", min=0)
    ] = 0,
    sparsities: Annotated[
        str, typer.Option("--sparsities", help="sparsities to sweep, e.g. 0.5,0.8,0.9 (empty: none)")
    ] = "0.5,0.6,0.7,0.8,0.9,0.95,0.97",
    bits: Annotated[str, typer.Option("--bits", help="bit widths to sweep, e.g. 8,5,3 (empty: none)")] = (
        "8,6,5,4,3,2"
    ),
    rate_bits: Annotated[
        int,
        typer.Option(
            "--rate-bits", help="count pruning points as shared to this many bits (0: float)", min=0
        ),
    ] = 5,
    layers: Annotated[str, typer.Option("--layers", help="glob of the layers to analyse")] = "*",
    png: Annotated[
        Path | None, typer.Option("--png", help="where to draw the curves (default: MODEL.sensitivity.png)")
    ] = None,
    no_png: Annotated[bool, typer.Option("--no-png", help="draw no picture")] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="print JSON (what sensitivity{reuse=FILE} reads) instead of a table"),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="where sweep points run: process (local pool), serial, or ray (RAY_ADDRESS, else local)",
        ),
    ] = "process",
    workers: Annotated[
        int,
        typer.Option(
            "--workers", help="parallel workers (0: every CPU, or every CPU of the Ray cluster)", min=0
        ),
    ] = 0,
    device: Annotated[
        str, typer.Option("--device", help="where the evaluations run: cpu, cuda, cuda:N or mps")
    ] = "cpu",
    loaders: Annotated[
        str | None,
        typer.Option(
            "--loaders", help="pkg.module:fn returning (train_loader, val_loader): a streamed --data"
        ),
    ] = None,
) -> None:
    """Per-layer metric and coded bytes vs sparsity and bits, each layer alone (a table and a PNG)."""
    from importlib.util import find_spec

    from sqc.outputs import check_output

    picture = None if no_png else (png or Path(f"{model.stem}.sensitivity.png"))
    if picture is not None and png is None and find_spec("matplotlib") is None:
        err.print(f"no picture drawn: matplotlib is not installed ({EXTRA_HINT})")
        picture = None
    inputs = [model, data]
    if picture is not None:  # it replaces an earlier picture, never a link, a device or an input
        check_output(picture, force=True, inputs=inputs)
    analysis = measure(
        model,
        data=data,
        eval_fn=eval_fn,
        arch=arch,
        shapes=options.parse_shapes(input_shape),
        trust_pickle=trust_pickle,
        samples=samples,
        sparsities=sparsities,
        bits=bits,
        rate_bits=rate_bits,
        layers=layers,
        quiet=as_json,
        executor=executor,
        workers=workers,
        device=device,
        loaders=loaders,
    )
    if picture is not None:
        write_png(analysis, picture, title=model.name, inputs=inputs)
    if as_json:
        print(json.dumps({**analysis.to_json(), "model": str(model)}, indent=2))
        return
    render_curves(analysis, str(model))
    if picture is not None:
        out.print(f"wrote {picture}")


def measure(
    model_path: Path,
    *,
    data: Path | None,
    eval_fn: str | None,
    arch: str | None,
    shapes: list[tuple[int, ...]] | None,
    trust_pickle: bool,
    samples: int,
    sparsities: str,
    bits: str,
    rate_bits: int,
    layers: str,
    quiet: bool,
    executor: str = "process",
    workers: int = 0,
    device: str = "cpu",
    loaders: str | None = None,
) -> Analysis:
    """Load and trace the model, build the evaluation, run the ``sensitivity`` pass; the curves."""
    import gc

    from sqc.compiler.pass_base import PassContext
    from sqc.compiler.sensitivity import cached_analysis
    from sqc.frontend.loading import load_model
    from sqc.frontend.trace import trace
    from sqc.passes.sensitivity import Sensitivity
    from sqc.runtime.data import check_labels, load_data, resolve_callable, top1
    from sqc.runtime.devices import resolve_device
    from sqc.runtime.executors import Executor
    from sqc.runtime.loaders import StreamTop1, check_loaders, resolve_loaders
    from sqc.runtime.progress import ProgressView

    run_on = Executor.from_options(executor, workers)
    where = resolve_device(device, "--device")
    if data is not None and loaders is not None:
        raise SqcError("give either --data or --loaders, not both")
    if data is None and eval_fn is None and loaders is None:
        raise SqcError(
            "sqc sensitivity measures a metric: give --data or --loaders (or --eval pkg.module:fn)"
        )
    streamed = resolve_loaders(loaders, "--loaders") if loaders is not None else None
    if samples and eval_fn is not None:
        raise SqcError(
            "--samples subsets the built-in evaluator's --data; an --eval function uses its own data"
        )
    sensitivity = Sensitivity(
        sparsities=sparsities.replace(",", ";"),
        bits=bits.replace(",", ";"),
        samples=samples,
        rate_bits=rate_bits,
        layers=layers,
    )
    loaded = load_model(model_path, arch, trust_pickle=trust_pickle)
    for note in loaded.notes:
        err.print(f"warning: {note}", markup=False)
    ir = trace(loaded.module, shapes or loaded.input_shapes, copy_weights=False)
    del loaded
    gc.collect()
    if eval_fn is not None:
        evaluate = resolve_callable(eval_fn, "--eval")
        subset = None
    elif streamed is not None:
        check_loaders(streamed, ir.graph_module)
        evaluate = StreamTop1(streamed.val, streamed.source)
        subset = lambda n: StreamTop1(streamed.val, streamed.source, n)  # noqa: E731
    else:
        assert data is not None
        dataset = load_data(data)
        check_labels(dataset, ir.graph_module)
        evaluate = top1(dataset)
        subset = lambda n: top1(dataset, n)  # noqa: E731
    with ProgressView(err, quiet=quiet, first="measuring…") as view:
        ctx = PassContext(
            progress=view,
            evaluate=evaluate,  # type: ignore[arg-type]
            evaluate_subset=subset,
            executor=run_on,
            device=where,
        )
        result = sensitivity.run(ir, ctx)
    for line in result.diagnostics:
        err.print(f"warning: {shown(render.cli_wording(line))}")
    return cached_analysis(ctx)


def render_curves(analysis: Analysis, where: str) -> None:
    """Two tables: metric and coded bytes at each sparsity, then at each number of bits."""

    subset = f", first {analysis.samples} samples" if analysis.samples else ""
    base = f"{where}: baseline metric {analysis.metric:.6g}{subset}"
    for kind, points_of, label in (
        ("prune", analysis.prune, "sparsity"),
        ("share", analysis.share, "bits"),
    ):
        if not points_of:
            continue
        values = sorted({p.value for points in points_of.values() for p in points}, reverse=kind == "share")
        heads = [f"{v:g}" if kind == "prune" else f"{int(v)} bits" for v in values]
        rate = f" (bytes after share{{bits={analysis.rate_bits}}},huffman)" if kind == "prune" else ""
        title = f"{base} — metric / coded bytes vs {label}{rate}"
        table = render.table(title, ["layer", "params", *heads])
        for name in sorted(points_of):
            at = {p.value: p for p in points_of[name]}
            cells = [f"{at[v].metric:.4g} / {at[v].bytes:,}" if v in at else "" for v in values]
            table.add_row(name, f"{analysis.numel.get(name, 0):,}", *cells)
        render.print_table(table, title)


def allocations(passes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The automatic allocations recorded in a report (``inspect``'s ``passes``): for every
    ``prune{target=auto}`` / ``share{bits=auto}`` record, its metrics and per-layer choices.

    The report comes from a file: a value of the wrong kind (text where a number belongs) is shown as
    it is rather than formatted as a number."""
    found = []
    for record in passes:
        stats = record.get("stats", {})
        if "metric_reference" not in stats:
            continue
        layers = [
            {
                "layer": name,
                "target": row["target"],
                "predicted_drop": row.get("predicted_drop"),
                "bytes_after": row.get("bytes_after"),
            }
            for name, row in record.get("layers", {}).items()
            if "target" in row
        ]
        found.append({"pass": str(record.get("spec", "")).split("{")[0], "stats": stats, "layers": layers})
    return found


def render_allocations(passes: list[dict[str, Any]]) -> None:
    """Print what ``prune{target=auto}`` / ``share{bits=auto}`` chose (for ``sqc inspect``)."""

    for found in allocations(passes):
        s = found["stats"]
        what = "sparsity" if found["pass"] == "prune" else "bits"
        title = (
            f"{shown(found['pass'])}: allocation within budget {_g(s.get('budget', 0))} — metric "
            f"{_g(s.get('metric_before', 0))} → predicted {_g(s.get('metric_predicted', 0))}, "
            f"measured {_g(s.get('metric_after', 0))} (reference {_g(s['metric_reference'])}, "
            f"{shown(s.get('backoffs', 0))} backoff(s))"
        )
        table = render.table(title, ["layer", what, "predicted drop", "bytes after"])
        for row in found["layers"]:
            drop = row["predicted_drop"]
            after = row["bytes_after"]
            table.add_row(
                shown(row["layer"]),
                _g(row["target"], "g"),
                "fixed" if drop is None else _g(drop),
                "" if after is None else _g(after, ","),
            )
        render.print_table(table, title)


def _g(value: Any, spec: str = ".6g") -> str:
    """A report number formatted with ``spec``; anything else (a file may hold text there) as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except (ValueError, OverflowError):
            pass
    return shown(value)


def write_png(analysis: Analysis, path: Path, *, title: str = "", inputs: Iterable[Path | None] = ()) -> None:
    """Draw the curves: metric and coded bytes vs sparsity (and vs bits), one line per layer. The file
    is written like every output (:func:`sqc.outputs.write_atomic`), replacing an earlier picture."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SqcError(f"--png needs matplotlib: {EXTRA_HINT}") from None
    rows = [
        (kind, curves) for kind, curves in (("prune", analysis.prune), ("share", analysis.share)) if curves
    ]
    if not rows:
        raise SqcError("no curves to draw: both sweeps are empty")
    figure = Figure(figsize=(11, 4 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), 2, squeeze=False)
    for (kind, curves), (left, right) in zip(rows, axes, strict=True):
        label = "sparsity (fraction of weights pruned)" if kind == "prune" else "bits per weight (shared)"
        for name in sorted(curves):
            points = sorted(curves[name], key=lambda p: p.value)
            xs = [p.value for p in points]
            left.plot(xs, [p.metric for p in points], marker="o", markersize=3, label=name)
            right.plot(xs, [p.bytes for p in points], marker="o", markersize=3, label=name)
        if analysis.metric is not None:
            left.axhline(analysis.metric, color="grey", linewidth=0.8, linestyle="--")
        left.set_xlabel(label)
        left.set_ylabel("metric (each layer alone)")
        right.set_xlabel(label)
        right.set_ylabel("coded bytes of the layer")
        right.set_yscale("log")
        if kind == "share":
            left.invert_xaxis()
            right.invert_xaxis()
        for axis in (left, right):
            axis.grid(True, alpha=0.3)
        left.legend(fontsize="small")
    if title:
        figure.suptitle(f"sensitivity of {title}")
    picture = io.BytesIO()
    figure.savefig(picture, format="png", dpi=110, metadata={"Software": None})
    write_atomic(path, picture.getvalue(), force=True, inputs=inputs)


def register(app: typer.Typer) -> None:
    """Add ``sqc sensitivity`` to the command-line app."""
    app.command("sensitivity")(sensitivity_command)
