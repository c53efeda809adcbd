"""The ``sqc`` command line: a thin typer layer over :mod:`sqc.app.api`.

Expected failures (:class:`~sqc.errors.SqcError`, bad usage) become one line on stderr and exit code 1,
never a traceback. Tables are drawn with rich on a terminal and printed plain otherwise
(:mod:`~sqc.app.cli.render`); every command that prints a table can print ``--json`` instead. Each
command lives in its own module and is mounted on :data:`app` here; the options several commands
share are declared once (:mod:`~sqc.app.cli.options`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sqc.app.cli import catalog, compress, inspect, lower, sensitivity
from sqc.app.cli.render import cli_wording, err, out, print_caret
from sqc.display import shown
from sqc.errors import PipelineError, SqcError

app = typer.Typer(
    name="sqc",
    help="sqc — compress PyTorch models into a compact .sqc bitstream, inspect it, and lower it.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


app.command()(compress.compress)
app.command()(inspect.inspect)
app.command()(lower.decompress)
app.command()(lower.lower)
app.command("passes")(catalog.list_passes)
app.command("zoo")(catalog.zoo)
sensitivity.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; turn expected errors into one line and exit code 1."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv if argv is not None else sys.argv[1:], prog_name="sqc", standalone_mode=False)
    except SqcError as exc:
        err.print(f"sqc: error: {shown(cli_wording(' '.join(str(exc).split())))}", soft_wrap=True)
        if isinstance(exc, PipelineError) and exc.source is not None and exc.column is not None:
            print_caret(exc.source, exc.column)
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
