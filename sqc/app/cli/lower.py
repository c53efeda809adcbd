"""``sqc decompress`` and ``sqc lower``: a ``.sqc`` back to a runnable model, or to a target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sqc.app.cli import options
from sqc.app.cli.options import (
    ForceOpt,
    JsonOpt,
)
from sqc.app.cli.render import out
from sqc.display import shown
from sqc.errors import SqcError
from sqc.outputs import check_output, refuse_input


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
    from sqc.compiler.registry import entries, lookup
    from sqc.compiler.target import LowerRequest, Target

    entry = lookup("sqc.targets", target)
    if entry is None:
        raise SqcError(f"unknown target {target!r} (known: {', '.join(entries('sqc.targets'))})")
    made = entry.load()
    lowering = made() if isinstance(made, type) else made
    if not isinstance(lowering, Target):
        raise SqcError(
            f"{entry.ref} from {entry.package} is not an sqc target (see sqc.compiler.target.Target)"
        )
    refuse_input(output, [path, calib])  # whatever the target writes there, never over an input
    if calib is not None and loaders is not None:
        raise SqcError("give either --calib or --loaders, not both")
    if (calib is not None or loaders is not None) and not lowering.takes_calib:
        raise SqcError(f"target {target} takes no --calib or --loaders: it needs no calibration")
    if option and not lowering.takes_options:
        raise SqcError(f"target {target} takes no --option")
    request = LowerRequest(
        path,
        output,
        force=force,
        calib=calib if loaders is None else options.resolve_loaders(loaders),
        options=tuple(option or ()),
    )
    report = lowering.lower(request)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    for line in report.summary:
        out.print(shown(line))
