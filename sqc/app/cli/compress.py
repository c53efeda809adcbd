"""``sqc compress``: trace a model, run the pipeline, write a ``.sqc`` (with pass instrumentation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sqc.app.cli import options, render
from sqc.app.cli.options import (
    ArchOpt,
    DeviceOpt,
    ExamplesOpt,
    ForceOpt,
    JsonOpt,
    LoadersOpt,
    ModelArg,
    NoStrictOpt,
    ShapeOpt,
    StateKeyOpt,
    TrustOpt,
)
from sqc.app.cli.render import err, out
from sqc.display import shown
from sqc.errors import SqcError
from sqc.outputs import check_output


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
    from sqc.app.api import DEFAULT_PIPELINE
    from sqc.app.api import compress as run
    from sqc.compiler.pipeline import Pipeline, recipe_settings
    from sqc.runtime.data import resolve_callable
    from sqc.runtime.progress import ProgressView

    if passes is not None and recipe is not None:
        raise SqcError("give either --passes or --recipe, not both")
    where = options.resolve_device(device)
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
    shapes = options.examples(input_shape, example_inputs)
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
                err.print(f"  warning: {shown(render.cli_wording(line))}")

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
            loaders=options.resolve_loaders(loaders),
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
            f"wrote {output}: {size:,} bytes ({render.human(size)}), "
            f"{fp32 / size:.1f}x smaller than fp32 ({render.human(fp32)})"
        )
        out.print(f"pipeline: {shown(artifact.pipeline)}")


def _instruments(pipeline: Any, time_passes: bool, print_ir_after: str | None) -> tuple[Any, list[Any]]:
    """The pass instruments ``--time-passes`` and ``--print-ir-after`` ask for (the timer innermost,
    so that it does not time the printing)."""
    from sqc.compiler.instrument import PassTimer, PrintIR, parse_print_selector

    instruments: list[Any] = []
    if print_ir_after is not None:
        chosen = parse_print_selector(print_ir_after, [p.name for p in pipeline.passes])
        instruments.append(PrintIR(chosen, lambda text: err.print(text, markup=False, highlight=False)))
    timer = PassTimer() if time_passes else None
    if timer is not None:
        instruments.append(timer)
    return timer, instruments


def _print_timings(rows: list[dict[str, Any]]) -> None:
    table = render.table("pass execution timing", ["#", "pass", "wall s", "cpu s", "share"])
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
        parts.append(f"params {render.amount(before)} -> {render.amount(after)}{change}")
        if "macs_before" in stats and "macs_after" in stats:
            parts.append(
                f"MACs {render.amount(stats['macs_before'])} -> {render.amount(stats['macs_after'])}"
            )
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
