"""Loading a user's model file safely: state_dict + architecture, trusted pickle, or torch.export program.

Loading a pickle runs code from the file, so whole pickled modules are refused unless the user says
``--trust-pickle``; everything else goes through ``torch.load(weights_only=True)``, which only
rebuilds tensors and plain containers. A ``.pt2`` export needs no Python code at all.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sqc.errors import ModelLoadError
from sqc.formats.container import MAGIC


@dataclass
class LoadedModel:
    """A model ready to trace, and the input shapes its file declared (a ``.pt2`` declares them)."""

    module: nn.Module
    input_shapes: list[tuple[int, ...]] | None
    source: str


def resolve_factory(spec: str) -> Any:
    """``pkg.module:attr`` -> the object; the current directory is importable, as for ``python -m``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelLoadError(f"--arch {spec!r}: expected pkg.module:factory")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"--arch {spec!r}: cannot import {module_name} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(f"--arch {spec!r}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError(f"--arch {spec!r}: {attr} is not callable")
    return obj


def _is_export_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(
            name.endswith("serialized_exported_program.json") or "/models/" in name
            for name in archive.namelist()
        )


def _state_dict_of(obj: Any) -> Mapping[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return inner
        # An empty mapping is the state_dict of a model without parameters or buffers.
        if all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    return None


def _check_file(path: Path) -> None:
    """Refuse, in one clear line, what is plainly not a model file: nothing, a directory, an empty file,
    or a .sqc file (already compressed)."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not a model file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read ({exc.strerror})") from None
    if not head:
        raise ModelLoadError(f"{path}: is empty (0 bytes), not a model file")
    if head == MAGIC:
        raise ModelLoadError(
            f"{path}: is a .sqc file (already compressed); use sqc inspect or sqc decompress on it"
        )


def _fit(
    path: Path, arch: str, model: nn.Module, state: Mapping[str, torch.Tensor], *, assign: bool = False
) -> None:
    """load_state_dict, with the first mismatch as one line instead of torch's multi-line report.

    ``assign`` takes the checkpoint's tensors over instead of copying them into the module's (which
    are then on the meta device); a tensor stored in another dtype is converted to the module's.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")
        raise ModelLoadError(f"{path}: state_dict does not fit --arch {arch}: {'; '.join(parts)}")
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise ModelLoadError(
                f"{path}: state_dict does not fit --arch {arch}: {key} has shape {tuple(value.shape)}, "
                f"the architecture expects {tuple(own[key].shape)}"
            )
    if assign:
        state = {
            key: value if value.dtype == own[key].dtype else value.to(own[key].dtype)
            for key, value in state.items()
        }
    ties = _ties(model)
    model.load_state_dict(state, strict=True, assign=assign)
    for alias, name in ties.items():  # assign gives each key its own Parameter: tie them again
        owner, _, leaf = alias.rpartition(".")
        setattr(model.get_submodule(owner), leaf, model.get_parameter(name))


def _ties(model: nn.Module) -> dict[str, str]:
    """Tied parameters (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``): alias -> first name."""
    first: dict[int, str] = {}
    ties: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        ties.update({name: first[id(param)]} if id(param) in first else {})
        first.setdefault(id(param), name)
    return ties


def load_model(path: Path, arch: str | None = None, *, trust_pickle: bool = False) -> LoadedModel:
    """Load ``path`` as a state_dict (with ``arch``), a torch.export program, or a trusted pickle.

    Nothing in the file runs unless ``trust_pickle``: ``torch.load`` is called with
    ``weights_only=True``, which rebuilds tensors and plain containers only and refuses any other
    pickled object (the file's own code is never imported or called).
    """
    _check_file(path)
    if _is_export_archive(path):
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: not a loadable torch.export program ({_first_line(exc)})"
            ) from None
        shapes = [
            tuple(n.meta["val"].shape)
            for n in program.graph.nodes
            if n.op == "placeholder" and n.name in _user_inputs(program)
        ]
        return LoadedModel(program.module(), shapes, f"{path} (torch.export)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise ModelLoadError(
                f"{path}: holds pickled Python objects, and loading them would run code from the file; "
                "pass --trust-pickle if you trust its origin, or save a state_dict or a torch.export program"
            ) from None
        obj = _load_trusted(path, exc)
    except Exception as exc:  # torch.load fails in many ways on bytes that are not a checkpoint
        raise ModelLoadError(f"{path}: not a PyTorch model file ({_first_line(exc)})") from None
    if isinstance(obj, nn.Module):
        return LoadedModel(obj, None, f"{path} (pickled module)")
    state = _state_dict_of(obj)
    if state is None:
        raise ModelLoadError(
            f"{path}: holds an object of type {type(obj).__name__}, "
            "not a state_dict, module or export program"
        )
    if arch is None:
        raise ModelLoadError(
            f"{path}: is a state_dict; say which architecture it fits with --arch pkg.module:factory"
        )
    factory = resolve_factory(arch)
    model = _build_on_meta(factory)
    if model is not None:
        _check_type(arch, model)
        _fit(path, arch, model, state, assign=True)
        if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            return LoadedModel(model, None, f"{path} (state_dict + {arch})")
    model = factory()  # the factory needs real tensors, or keeps tensors the state_dict does not hold
    _check_type(arch, model)
    _fit(path, arch, model, state)
    return LoadedModel(model, None, f"{path} (state_dict + {arch})")


def _build_on_meta(factory: Any) -> Any:
    """The architecture built on the meta device, or None if the factory cannot be built there.

    A real build initialises every weight only for ``load_state_dict`` to overwrite it, and holds a
    second copy of the model while it does: on VGG-16 that is 553 MB and seconds of random init.
    On the meta device the build allocates nothing and the checkpoint's tensors are taken over
    (``assign=True``). A factory that computes with its tensors while building fails there and is
    built for real instead.
    """
    try:
        with torch.device("meta"):
            return factory()
    except Exception:
        return None


def _check_type(arch: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--arch {arch}: returned a {type(model).__name__}, not an nn.Module")


def _load_trusted(path: Path, first_error: Exception) -> Any:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot unpickle ({_first_line(exc)})") from None
    if not isinstance(obj, nn.Module) and _state_dict_of(obj) is None:
        raise ModelLoadError(
            f"{path}: the pickle holds an object of type {type(obj).__name__}, not an nn.Module"
        )
    return obj


def _user_inputs(program: torch.export.ExportedProgram) -> set[str]:
    return set(program.graph_signature.user_inputs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
