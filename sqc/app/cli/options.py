"""Options and arguments shared by the commands, and the parsing of their values (one line naming the
option for a bad one)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from sqc.errors import SqcError


def parse_shape(text: str) -> Any:
    """``--input-shape 1,3,224,224`` or ``1,16:int64`` -> an input spec the API takes."""
    from sqc.frontend.trace import parse_input_spec

    return parse_input_spec(text)


def examples(input_shape: list[str] | None, example_inputs: Path | None) -> Any:
    """The example inputs of ``--input-shape`` (repeated) or ``--example-inputs FILE``."""
    if input_shape and example_inputs is not None:
        raise SqcError("give either --input-shape or --example-inputs, not both")
    if example_inputs is not None:
        from sqc.frontend.trace import read_example_inputs

        return read_example_inputs(example_inputs)
    return parse_shapes(input_shape)


def parse_shapes(texts: list[str] | None) -> list[Any] | None:
    """Every ``--input-shape``, together at most ``MAX_INPUT_ELEMENTS`` elements (checked before a
    random example of that shape is allocated)."""
    from sqc.ir.records import MAX_INPUT_ELEMENTS

    if not texts:
        return None
    specs = [parse_shape(text) for text in texts]
    total = sum(math.prod(spec.shape) for spec in specs)
    if total > MAX_INPUT_ELEMENTS:
        given = " ".join(texts)
        raise SqcError(
            f"--input-shape {given}: {total:,} elements, more than the {MAX_INPUT_ELEMENTS:,} an example "
            "input may have"
        )
    return specs


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


def resolve_device(text: str) -> Any:
    """``--device``, checked to exist before any work (one line naming the option otherwise)."""
    from sqc.runtime.devices import resolve_device

    return resolve_device(text, "--device")


def resolve_loaders(spec: str | None) -> Any:
    """``--loaders pkg.module:fn`` resolved and called, its problems named after the option."""
    from sqc.runtime.loaders import resolve_loaders

    return resolve_loaders(spec, "--loaders") if spec is not None else None


ForceOpt = Annotated[bool, typer.Option("--force", help="replace the output file if it exists")]
