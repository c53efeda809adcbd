"""The ``sqc`` command line: a thin typer layer over :mod:`sqc.api`.

Expected failures (:class:`~sqc.errors.SqcError`, bad usage) become one line on stderr and exit code 1,
never a traceback. Tables are drawn with rich on a terminal and printed plain otherwise; every command
that prints a table can print ``--json`` instead.
"""

from __future__ import annotations

import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from sqc.display import SafeConsole, shown
from sqc.errors import PipelineError, SqcError
from sqc.outputs import check_output, refuse_input
from sqc.sensitivity_cli import register as register_sensitivity

app = typer.Typer(
    name="sqc",
    help="sqc — compress PyTorch models into a compact .sqc bitstream, inspect it, and lower it.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Off a terminal, print plain text at a width that never truncates a column. Nothing printed is read
# as markup, and control characters are escaped: much of what sqc prints comes from files.
out = SafeConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err = SafeConsole(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        import torch

        from sqc import __version__
        from sqc.formats.container import VERSION

        out.print(
            f"sqc {__version__} (writes .sqc format {VERSION[0]}.{VERSION[1]}; torch {torch.__version__})"
        )
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True),
    ] = False,
) -> None:
    """sqc — compress PyTorch models into a compact .sqc bitstream, inspect it, and lower it."""


def _parse_shape(text: str) -> Any:
    """``--input-shape 1,3,224,224`` or ``1,16:int64`` -> an input spec the API takes."""
    from sqc.frontend import parse_input_spec

    return parse_input_spec(text)


def _examples(input_shape: list[str] | None, example_inputs: Path | None) -> Any:
    """The example inputs of ``--input-shape`` (repeated) or ``--example-inputs FILE``."""
    if input_shape and example_inputs is not None:
        raise SqcError("give either --input-shape or --example-inputs, not both")
    if example_inputs is not None:
        from sqc.frontend import read_example_inputs

        return read_example_inputs(example_inputs)
    return _parse_shapes(input_shape)


def _parse_shapes(texts: list[str] | None) -> list[Any] | None:
    """Every ``--input-shape``, together at most ``MAX_INPUT_ELEMENTS`` elements (checked before a
    random example of that shape is allocated)."""
    from sqc.ir import MAX_INPUT_ELEMENTS

    if not texts:
        return None
    specs = [_parse_shape(text) for text in texts]
    total = sum(math.prod(spec.shape) for spec in specs)
    if total > MAX_INPUT_ELEMENTS:
        given = " ".join(texts)
        raise SqcError(
            f"--input-shape {given}: {total:,} elements, more than the {MAX_INPUT_ELEMENTS:,} an example "
            "input may have"
        )
    return specs


def _table(title: str, columns: list[str]) -> Table:
    interactive = out.is_terminal
    table = Table(
        title=title if interactive else None,
        box=box.SIMPLE_HEAVY if interactive else None,
        show_edge=interactive,
        pad_edge=False,
        title_justify="left",
    )
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _print_table(table: Table, title: str) -> None:
    if not out.is_terminal:
        out.print(title)
    out.print(table)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def _amount(n: float) -> str:
    """A count as people read it: 61,706 -> 61.7K, 1,234,567 -> 1.23M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


ModelArg = Annotated[
    Path, typer.Argument(help="model file: state_dict (.pt) with --arch, pickled module, or .pt2")
]
ArchOpt = Annotated[
    str | None, typer.Option("--arch", help="pkg.module:factory that builds the architecture")
]
ShapeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input-shape",
        help="example input shape and dtype, e.g. 1,1,28,28 or 1,16:int64 (repeat for several inputs)",
    ),
]
ExamplesOpt = Annotated[
    Path | None,
    typer.Option(
        "--example-inputs",
        help="a .pt file of example input tensors (a tensor, a list or a dict; read with weights_only=True)",
    ),
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-pickle", help="allow loading a pickled module (runs code from the file)")
]
StateKeyOpt = Annotated[
    str | None,
    typer.Option("--state-key", help="key of the state_dict in a checkpoint: model_state, trainer.model"),
]
NoStrictOpt = Annotated[
    bool, typer.Option("--no-strict", help="load a state_dict with missing or unexpected keys (listed)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="where evaluation, sweeps and fine-tuning run: cpu, cuda, cuda:N or mps (the file is the same)",
    ),
]
LoadersOpt = Annotated[
    str | None,
    typer.Option(
        "--loaders",
        help="pkg.module:fn returning (train_loader, val_loader) of (x, y) batches: a dataset streamed "
        "in batches, instead of --data",
    ),
]


def _device(text: str) -> Any:
    """``--device``, checked to exist before any work (one line naming the option otherwise)."""
    from sqc.devices import resolve_device

    return resolve_device(text, "--device")


def _loaders(spec: str | None) -> Any:
    """``--loaders pkg.module:fn`` resolved and called, its problems named after the option."""
    from sqc.loaders import resolve_loaders

    return resolve_loaders(spec, "--loaders") if spec is not None else None


ForceOpt = Annotated[bool, typer.Option("--force", help="replace the output file if it exists")]


@app.command()
def compress(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="the .sqc file to write")],
    passes: Annotated[
        str | None,
        typer.Option(
            "--passes", "-p", help="pipeline text, e.g. 'prune{sparsity=0.9},share{bits=5},huffman'"
        ),
    ] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="TOML recipe with [[pass]] tables")] = None,
    arch: ArchOpt = None,
    input_shape: ShapeOpt = None,
    example_inputs: ExamplesOpt = None,
    trust_pickle: TrustOpt = False,
    state_key: StateKeyOpt = None,
    no_strict: NoStrictOpt = False,
    force: ForceOpt = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="skip the IR verifier between passes")
    ] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help=".npz/.pt with x_val, y_val (and x_train, y_train)")
    ] = None,
    eval_fn: Annotated[
        str | None, typer.Option("--eval", help="pkg.module:fn, fn(model) -> float, higher is better")
    ] = None,
    finetune_fn: Annotated[
        str | None, typer.Option("--finetune", help="pkg.module:fn, fn(model, epochs) trains in place")
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            help="metric drop accuracy-aware passes may spend (0.001 = 0.1 pt) [default: 0]",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            min=0,
            max=2**63 - 1,
            help="seeds fine-tuning and sampling; stored in the file [default: 0]",
            show_default=False,
        ),
    ] = None,
    distill: Annotated[
        float | None,
        typer.Option(
            "--distill",
            help="weight of the fp32 model's logits in built-in fine-tuning (distillation) [default: 0]",
            show_default=False,
        ),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            "--weight-decay", help="L2 penalty of the built-in fine-tuner [default: 0]", show_default=False
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="where sensitivity sweep points run (target=auto, bits=auto, sensitivity): process "
            "(local pool), serial, or ray (RAY_ADDRESS, else a local instance)",
        ),
    ] = "process",
    workers: Annotated[
        int,
        typer.Option("--workers", help="parallel sweep workers (0: every CPU, or the Ray cluster's)", min=0),
    ] = 0,
    device: DeviceOpt = "cpu",
    loaders: LoadersOpt = None,
    time_passes: Annotated[
        bool,
        typer.Option(
            "--time-passes", help="after the run, a table of wall and CPU seconds per pass (stderr)"
        ),
    ] = False,
    print_ir_after: Annotated[
        str | None,
        typer.Option(
            "--print-ir-after",
            help="print the IR's text form to stderr after these passes: pass names, 'capture' or "
            "'all' (comma-separated)",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Trace MODEL, run the pass pipeline, and write a .sqc file."""
    from sqc.api import DEFAULT_PIPELINE
    from sqc.api import compress as run
    from sqc.data import resolve_callable
    from sqc.pipeline import Pipeline, recipe_settings
    from sqc.progress import ProgressView

    if passes is not None and recipe is not None:
        raise SqcError("give either --passes or --recipe, not both")
    where = _device(device)
    if data is not None and loaders is not None:
        raise SqcError("give either --data or --loaders, not both")
    pipeline = (
        Pipeline.from_recipe(recipe) if recipe is not None else Pipeline.parse(passes or DEFAULT_PIPELINE)
    )
    # a recipe's [compress] table sets the run's settings; an option given on the command line wins
    given = {"tolerance": tolerance, "seed": seed, "distill": distill, "weight_decay": weight_decay}
    settings = {**(recipe_settings(recipe) if recipe is not None else {})}
    settings.update({k: v for k, v in given.items() if v is not None})
    check_output(output, force=force, inputs=[model, data, recipe])
    shapes = _examples(input_shape, example_inputs)
    rows: list[dict[str, Any]] = []
    timer, instruments = _instruments(pipeline, time_passes, print_ir_after)

    def on_pass(index: int, pass_: Any, result: Any, seconds: float) -> None:
        rows.append(
            {"pass": pass_.name, "changed": result.changed, "seconds": round(seconds, 3), **result.stats}
        )
        if not as_json:
            err.print(
                f"[{index + 1}/{len(pipeline.passes)}] {pass_.name}: "
                f"{_summary(result.stats)} ({seconds:.2f} s)"
            )
            for line in result.diagnostics:
                err.print(f"  warning: {shown(line)}")

    with ProgressView(err, quiet=as_json, first="compressing…") as view:
        artifact = run(
            model,
            shapes,
            pipeline,
            arch=arch,
            trust_pickle=trust_pickle,
            state_key=state_key,
            strict=not no_strict,
            on_note=lambda note: err.print(f"warning: {note}", markup=False),
            verify=not no_verify,
            progress=view,
            on_pass=on_pass,
            instruments=instruments,
            data=data,
            loaders=_loaders(loaders),
            device=where,
            evaluate=resolve_callable(eval_fn, "--eval") if eval_fn else None,  # type: ignore[arg-type]
            finetune=resolve_callable(finetune_fn, "--finetune") if finetune_fn else None,  # type: ignore[arg-type]
            executor=executor,
            workers=workers,
            **settings,
        )
        size = artifact.save(output, force=force)
    # against the model as given: a pass that removes parameters (prune-channels) records the count
    # it started from, and the first such record is the original's
    params = sum(s.numel for s in artifact.model.tensors.values())
    params = next(
        (int(r.stats["params_before"]) for r in artifact.report if "params_before" in r.stats), params
    )
    fp32 = 4 * params
    summary = {
        "output": str(output),
        "bytes": size,
        "fp32_bytes": fp32,
        "ratio_vs_fp32": fp32 / size,
        "pipeline": artifact.pipeline,
        "passes": rows,
    }
    if timer is not None:
        summary["timings"] = timer.rows()
        if not as_json:
            _print_timings(timer.rows())
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        out.print(
            f"wrote {output}: {size:,} bytes ({_human(size)}), "
            f"{fp32 / size:.1f}x smaller than fp32 ({_human(fp32)})"
        )
        out.print(f"pipeline: {shown(artifact.pipeline)}")


def _instruments(pipeline: Any, time_passes: bool, print_ir_after: str | None) -> tuple[Any, list[Any]]:
    """The pass instruments ``--time-passes`` and ``--print-ir-after`` ask for (the timer innermost,
    so that it does not time the printing)."""
    from sqc.instrument import PassTimer, PrintIR, parse_print_selector

    instruments: list[Any] = []
    if print_ir_after is not None:
        chosen = parse_print_selector(print_ir_after, [p.name for p in pipeline.passes])
        instruments.append(PrintIR(chosen, lambda text: err.print(text, markup=False, highlight=False)))
    timer = PassTimer() if time_passes else None
    if timer is not None:
        instruments.append(timer)
    return timer, instruments


def _print_timings(rows: list[dict[str, Any]]) -> None:
    table = _table("pass execution timing", ["#", "pass", "wall s", "cpu s", "share"])
    for row in rows:
        table.add_row(
            "" if row["index"] is None else str(row["index"]),
            str(row["pass"]),
            f"{row['wall_s']:.3f}",
            f"{row['cpu_s']:.3f}",
            f"{row['share']:.1%}",
        )
    table.columns[1].justify = "left"
    if not err.is_terminal:
        err.print("pass execution timing")
    err.print(table)


def _summary(stats: dict[str, Any]) -> str:
    parts = []
    if "params_before" in stats and "params_after" in stats:  # a pass that removes parameters
        before, after = stats["params_before"], stats["params_after"]
        change = f" ({100 * (after - before) / before:+.0f}%)" if before else ""
        parts.append(f"params {_amount(before)} -> {_amount(after)}{change}")
        if "macs_before" in stats and "macs_after" in stats:
            parts.append(f"MACs {_amount(stats['macs_before'])} -> {_amount(stats['macs_after'])}")
    for key in (
        "sparsity",
        "bits",
        "bytes_before",
        "bytes_after",
        "max_abs_error",
        "metric_before",
        "metric_after",
    ):
        if key in stats:
            value = stats[key]
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts) or "done"


@app.command()
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
    from sqc.api import inspect as run

    if not path.exists():
        raise SqcError(f"{path}: no such file")
    model_options = {
        "arch": arch,
        "input_shapes": _examples(input_shape, example_inputs),
        "trust_pickle": trust_pickle,
        "state_key": state_key,
        "strict": not no_strict,
    }
    if as_ir:
        if as_json:
            raise SqcError("give either --ir or --json, not both")
        from sqc.api import ir_text

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
    table = _table(f"{info['file']}", ["layer", "params", "bytes (fp32)", "FLOPs", "share"])
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
    _print_table(table, f"{info['file']}: uncompressed model, input {info['inputs']}")


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
    table = _table(f"{info['file']} — {info['size']:,} bytes", columns)
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
    _print_table(table, f"{info['file']}: {info['size']:,} bytes, format {info['version']}")
    out.print(f"pipeline: {shown(info['pipeline'])}")
    from sqc.sensitivity_cli import render_allocations

    render_allocations(info["passes"])


@app.command()
def decompress(
    path: Annotated[Path, typer.Argument(help="the .sqc file")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="restored model: .pt (module) or .pt2 (export)")
    ],
    fmt: Annotated[
        str | None, typer.Option("--format", help="module | state_dict | export (default: from the suffix)")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Rebuild a runnable PyTorch model from a .sqc file — no original Python code needed."""
    from sqc.targets.pytorch import write_model

    kind = fmt or ("export" if output.suffix == ".pt2" else "module")
    check_output(output, force=force, inputs=[path])
    size = write_model(path, output, kind, force=force)
    out.print(f"wrote {output}: {size:,} bytes ({kind})")


@app.command()
def lower(
    path: Annotated[Path, typer.Argument(help="the .sqc file")],
    target: Annotated[
        str, typer.Option("--target", "-t", help="a target: pytorch, c, hls, sim, onnx, a plugin's")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="where the target writes")],
    force: ForceOpt = False,
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help="calibration inputs for integer targets: .npz/.pt with x_val (y_val optional: adds top-1), "
            "or a .pt tensor",
        ),
    ] = None,
    loaders: Annotated[
        str | None,
        typer.Option(
            "--loaders",
            help="pkg.module:fn returning (train_loader, val_loader): calibrate on val_loader's x or (x, y) "
            "batches, instead of --calib",
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="target option key=value (repeatable), e.g. act_bits=16"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Lower a .sqc file for a target (built in: pytorch, c, hls, sim, onnx; plugins add theirs)."""
    from sqc.registry import entries, lookup

    entry = lookup("sqc.targets", target)
    if entry is None:
        raise SqcError(f"unknown target {target!r} (known: {', '.join(entries('sqc.targets'))})")
    lowering = entry.load()
    refuse_input(output, [path, calib])  # whatever the target writes there, never over an input
    extra: dict[str, Any] = {}
    if calib is not None and loaders is not None:
        raise SqcError("give either --calib or --loaders, not both")
    if calib is not None or loaders is not None or option:
        if not getattr(lowering, "takes_options", False):
            raise SqcError(f"target {target} takes no --calib, --loaders or --option")
        extra = {"calib": calib if loaders is None else _loaders(loaders), "options": option or []}
    result = lowering.lower(path, output, force=force, **extra)
    if not isinstance(result, dict):
        result = {"output": str(output), "bytes": result}
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if "summary" in result:  # a target that renders its own report (hls, sim)
        for line in result["summary"]:
            out.print(shown(line))
        return
    if "rom_bytes" not in result:
        out.print(f"wrote {output}: {result['bytes']:,} bytes (target {target})")
        return
    ram = ", ".join(f"{k} {v:,}" for k, v in result["ram"].items())
    out.print(f"wrote {output}/ (target {target})")
    rom = f"ROM {result['rom_bytes']:,} bytes (weights {result['rom_weight_bytes']:,})"
    out.print(f"{rom}; RAM {result['ram_bytes']:,} bytes ({ram})")
    for line in result.get("notes", []):
        out.print(f"note: {shown(line)}")
    from sqc.targets.simulate import accuracy_lines

    for line in accuracy_lines(result.get("accuracy")):
        out.print(line)


@app.command("passes")
def list_passes(as_json: JsonOpt = False) -> None:
    """List built-in and plugin passes with their options."""
    from sqc.registry import entries, load_pass

    rows = []
    for name, entry in entries("sqc.passes").items():
        cls = load_pass(name)
        options = []
        for f, annotation in zip(cls.options(), cls.option_types().values(), strict=True):
            options.append({"name": f.name, "type": _type_name(annotation), "default": _default(f)})
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append(
            {
                "name": name,
                "package": entry.package,
                "summary": cls.summary or (doc[0] if doc else ""),
                "options": options,
                "requires": sorted(cls.requires),
                "default_spec": cls().spec(),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = _table("passes", ["pass", "from", "options (defaults)", "what it does"])
    for row in rows:
        opts = " ".join(f"{o['name']}={o['default']}" for o in row["options"]) or "-"
        table.add_row(row["name"], row["package"], opts, row["summary"])
    for column in table.columns[2:]:
        column.no_wrap = False
        column.justify = "left"
    _print_table(table, "passes")


def _type_name(annotation: Any) -> str:
    from sqc.pass_base import LayerMap

    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return "|".join("none" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    if annotation == LayerMap:
        return "layer:value;…"
    args = getattr(annotation, "__args__", None)
    if args and all(isinstance(a, str) for a in args):
        return "|".join(args)
    return getattr(annotation, "__name__", str(annotation))


def _default(f: Any) -> str:
    from dataclasses import MISSING

    from sqc.pass_base import format_value

    return format_value(f.default) if f.default is not MISSING else "required"


@app.command("zoo")
def zoo(as_json: JsonOpt = False) -> None:
    """List the reference models (sqc.models) with parameters, fp32 size and input shape."""
    from sqc.models import zoo_table

    rows = zoo_table()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = _table("reference models", ["model", "params", "fp32", "input"])
    for row in rows:
        table.add_row(
            row["name"], f"{row['params']:,}", _human(4 * row["params"]), "x".join(map(str, row["input"]))
        )
    _print_table(table, "reference models (use one with --arch sqc.models:NAME)")


register_sensitivity(app)


def _print_caret(source: str, column: int) -> None:
    """Show the pipeline text with a caret under the faulty column (after the one-line error)."""
    if "\n" in source or len(source) > 400 or shown(source) != source:
        return
    err.print(f"  {source}", markup=False, highlight=False, soft_wrap=True)
    err.print(f"  {' ' * column}^", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; turn expected errors into one line and exit code 1."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv if argv is not None else sys.argv[1:], prog_name="sqc", standalone_mode=False)
    except SqcError as exc:
        err.print(f"sqc: error: {shown(' '.join(str(exc).split()))}", soft_wrap=True)
        if isinstance(exc, PipelineError) and exc.source is not None and exc.column is not None:
            _print_caret(exc.source, exc.column)
        return 1
    except KeyboardInterrupt:
        err.print("sqc: interrupted", markup=False)
        return 130
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click/typer usage errors
            message = shown(" ".join(str(exc.format_message()).split()))
            err.print(f"sqc: error: {message}", soft_wrap=True)
            return 1 if exc.exit_code else 0
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
