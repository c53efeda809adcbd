"""Where evaluation and training run: a device for the module copy, never for the IR.

The records of the IR (:class:`~sqc.ir.records.TensorState`) are CPU tensors, always: they are what the
container encodes, and a file must not depend on the machine that wrote it. What runs on a device is
the GraphModule's *view* of those records while an evaluation or a training loop uses it: its
parameters, buffers and tensor constants are moved there for the duration and put back afterwards
(:func:`on_device`; training moves its own copies, see :class:`sqc.runtime.training.Constraints`). Inputs
follow the module (:func:`module_device`), so the built-in evaluators and fine-tuners need no device
of their own and stay picklable for the workers of a sensitivity sweep.

On the CPU nothing is moved at all, so ``device="cpu"`` is the default run, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from sqc.errors import SqcError

CPU = torch.device("cpu")
DEVICE_HINT = "give cpu, cuda, cuda:N or mps"


def labelled(option: str, value: object) -> str:
    """How a message names a setting: ``--device cuda`` for a command-line option (``--…``), else the
    API's keyword, ``device=cuda``. The caller says which, so the core never assumes the CLI."""
    return f"{option} {value}" if option.startswith("--") else f"{option}={value}"


def resolve_device(spec: str | torch.device | None, option: str = "device") -> torch.device:
    """The device ``spec`` names, checked to exist here; ``None`` is the CPU.

    Why up front: a run that asks for ``cuda`` on a machine without it should fail in one line before
    any tracing or sweeping, not deep inside the first evaluation. ``meta`` is refused (it holds no
    values: nothing can be measured there); an accelerator must be the one this torch was built for
    (``torch.accelerator``: CUDA/ROCm, MPS, XPU) and its index must exist.
    """
    if spec is None:
        return CPU
    where = labelled(option, spec)
    try:
        device = spec if isinstance(spec, torch.device) else torch.device(str(spec).strip())
    except (RuntimeError, ValueError, TypeError):
        raise SqcError(f"{where}: not a device ({DEVICE_HINT})") from None
    if device.type == "cpu":
        return CPU
    if device.type == "meta":
        raise SqcError(f"{where}: the meta device holds no values, so nothing can be evaluated there")
    available = torch.accelerator.is_available()
    accelerator = torch.accelerator.current_accelerator() if available else None
    if accelerator is None or accelerator.type != device.type:
        have = (
            f"its accelerator is {accelerator.type}" if accelerator is not None else "it has no accelerator"
        )
        raise SqcError(f"{where}: {device.type} is not available to this torch {torch.__version__} ({have})")
    count = torch.accelerator.device_count()
    if device.index is not None and device.index >= count:
        raise SqcError(f"{where}: there is no such device ({count} {device.type} device(s): 0..{count - 1})")
    return device


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: the device of its first parameter or buffer (the CPU if it has none).
    Evaluators and fine-tuners move each batch there, so they work wherever the caller put the module."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return CPU


def _constants(module: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """Plain tensor attributes (fx's ``_tensor_constant0``): neither parameters nor buffers, so
    ``Module.to`` would leave them behind on the CPU."""
    found = []
    for sub in module.modules():
        for name, value in vars(sub).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                found.append((sub, name, value))
    return found


@contextmanager
def constants_on(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Move ``module``'s tensor constants to ``device`` for the block; the originals come back after."""
    moved = [] if device == CPU else _constants(module)
    for sub, name, value in moved:
        setattr(sub, name, value.to(device))
    try:
        yield
    finally:
        for sub, name, value in moved:
            setattr(sub, name, value)


@contextmanager
def on_device(
    module: nn.Module,
    device: torch.device,
    move: Callable[[torch.Tensor, torch.device], torch.Tensor] | None = None,
) -> Iterator[nn.Module]:
    """Run the block with ``module``'s parameters, buffers and constants on ``device``.

    Each tensor's ``.data`` is rebound to a copy on the device and, on exit (normal or not), to the
    very tensor it held before. That matters: the IR stamps which storage each parameter was bound to
    at its last sync (:meth:`sqc.ir.records.CompressedModel.sync`), and putting back the same object keeps the
    stamp valid, so the verifier need not decode and compare every record afterwards. Whatever the
    block did to the device copies (a user's evaluation that updates BatchNorm statistics) is
    discarded, as an evaluation must not change the model. On the CPU nothing happens.

    ``move`` is how a tensor is copied (``Tensor.to`` by default; tests substitute a copy on the CPU).
    """
    if device == CPU and move is None:
        yield module
        return
    copy = move or (lambda tensor, to: tensor.to(to))
    held = [(t, t.data) for t in (*module.parameters(), *module.buffers())]
    constants = _constants(module)
    try:
        for tensor, data in held:
            tensor.data = copy(data, device)
        for sub, name, value in constants:
            setattr(sub, name, copy(value, device))
        yield module
    finally:
        for tensor, data in held:
            tensor.data = data
        for sub, name, value in constants:
            setattr(sub, name, value)
