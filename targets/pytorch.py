"""The PyTorch target: a runnable module rebuilt from the ``.sqc`` file alone.

Three forms: ``module`` (``torch.save`` of the fx GraphModule: loading it needs torch only, through
``torch.load(weights_only=False)`` because the module's code is generated Python), ``state_dict``
(decoded tensors, loadable with ``weights_only=True``), and ``export`` (a ``torch.export`` program,
``.pt2``, that needs no Python code at all). All three hold exactly the decoded weights.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from sqc.compiler.target import LowerReport, LowerRequest
from sqc.errors import SqcError
from sqc.formats.container import read
from sqc.frontend.trace import example_inputs
from sqc.outputs import check_output, write_atomic

KINDS = ("module", "state_dict", "export")


def write_model(source: Path, output: Path, kind: str = "module", *, force: bool = False) -> int:
    """Decode ``source`` and write it as ``kind`` to ``output`` atomically; returns the byte count."""
    if kind not in KINDS:
        raise SqcError(f"--format {kind!r}: expected one of {', '.join(KINDS)}")
    check_output(output, force=force, inputs=[source])  # before any work: no symlink, no input, no device
    model = read(source)
    module = model.graph_module.eval()
    buffer = io.BytesIO()
    if kind == "module":
        torch.save(module, buffer)
    elif kind == "state_dict":
        torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, buffer)
    else:
        # torch.export.save writes every named parameter as its own file and torch.export.load gives
        # each its own storage: a tie would come back as two tensors. Without its aliases the module
        # uses the one tensor wherever the graph reads it, so the program holds it once, still shared.
        for alias in model.aliases:
            owner, _, leaf = alias.rpartition(".")
            delattr(module.get_submodule(owner) if owner else module, leaf)
        try:
            program = torch.export.export(module, example_inputs(model.inputs))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SqcError(f"{source}: torch.export failed on the restored graph ({first})") from None
        torch.export.save(program, buffer)
    data = buffer.getvalue()
    write_atomic(output, data, force=force, inputs=[source])
    return len(data)


class PyTorchTarget:
    """Registered as target ``pytorch``: lowering writes a runnable module (``.pt2``: a torch.export
    program; otherwise a pickled ``fx.GraphModule``)."""

    name = "pytorch"
    takes_calib = False
    takes_options = False

    def lower(self, request: LowerRequest) -> LowerReport:
        output = Path(request.output)
        size = write_model(
            request.source, output, "export" if output.suffix == ".pt2" else "module", force=request.force
        )
        return LowerReport("pytorch", str(output), size, [f"wrote {output}: {size:,} bytes (target pytorch)"])
