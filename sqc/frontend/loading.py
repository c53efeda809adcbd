"""Loading a user's model file safely: a state_dict + architecture, a trusted pickle, or an export program.

Loading a pickle runs code from the file, so whole pickled modules are refused unless the user says
``--trust-pickle``; everything else goes through ``torch.load(weights_only=True)``, which only
rebuilds tensors and plain containers, or through the ``safetensors`` library, which holds no pickle
at all. A ``.pt2`` export needs no Python code, and :mod:`sqc.frontend.pt2` reads it without unpickling or
evaluating anything in it.

Checkpoints come as people save them: weights under a key next to optimizer state (``--state-key``,
or found when exactly one candidate exists), names prefixed by DataParallel or ``torch.compile``,
keys the architecture does not have (``--no-strict``). What sqc decided on the way is returned as
:attr:`LoadedModel.notes`, one line each, for the caller to show as warnings.
"""

from __future__ import annotations

import importlib
import pickle
import re
import struct
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sqc.errors import ModelLoadError
from sqc.formats.container import MAGIC
from sqc.frontend.pt2 import clean, is_export_archive, read_program
from sqc.inputs import require_regular

SEARCH_DEPTH = 3
"""How deep nested mappings are searched for a state_dict (``trainer.ema.model`` is depth 3)."""

PREFIXES = (
    ("module.", "saved from DataParallel/DistributedDataParallel"),
    ("_orig_mod.", "saved from a torch.compile'd model"),
)


@dataclass
class LoadedModel:
    """A model ready to trace, the input shapes its file declared (a ``.pt2`` declares them), and
    one-line notes on what loading decided (a key picked, a prefix removed, keys skipped)."""

    module: nn.Module
    input_shapes: list[Any] | None
    """Shapes, or input specs with dtypes (a ``.pt2`` declares both)."""
    source: str
    notes: list[str] = field(default_factory=list)


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


def load_model(
    path: Path,
    arch: str | None = None,
    *,
    trust_pickle: bool = False,
    state_key: str | None = None,
    strict: bool = True,
) -> LoadedModel:
    """Load ``path`` as a state_dict (with ``arch``), a torch.export program, or a trusted pickle.

    Nothing in the file runs unless ``trust_pickle``: ``torch.load`` is called with
    ``weights_only=True``, which rebuilds tensors and plain containers only and refuses any other
    pickled object (the file's own code is never imported or called); ``.safetensors`` files are read
    by the safetensors library; ``.pt2`` archives by :func:`sqc.frontend.pt2.read_program`.

    ``state_key`` names where the state_dict sits in a checkpoint (dotted for nesting:
    ``trainer.model``). ``strict=False`` loads a state_dict with keys missing or left over, and says
    which in one note; a tensor of the wrong shape is an error either way.
    """
    _check_file(path)
    if is_export_archive(path):
        _no_state_key(path, state_key, "a torch.export program")
        program, shapes = read_program(path)
        # check_guards=False: no guard function is generated from the program (sqc checks shapes)
        return LoadedModel(
            program.module(check_guards=False), _typed(program, shapes), f"{path} (torch.export)"
        )
    notes: list[str] = []
    if _is_safetensors(path):
        _no_state_key(path, state_key, "a .safetensors file (one flat state_dict)")
        state: Mapping[str, Any] = _read_safetensors(path)
        kind = "safetensors"
    else:
        obj = _torch_load(path, trust_pickle)
        if isinstance(obj, nn.Module) and state_key is None:
            return LoadedModel(obj, None, f"{path} (pickled module)")
        picked = _pick(path, obj, state_key, notes)
        if isinstance(picked, nn.Module):
            return LoadedModel(picked, None, f"{path} (pickled module)", notes)
        state = picked
        kind = "state_dict"
    if arch is None:
        raise ModelLoadError(
            f"{path}: is a {kind}; say which architecture it fits with --arch pkg.module:factory"
        )
    return _build(path, arch, state, strict, notes)


def _no_state_key(path: Path, state_key: str | None, what: str) -> None:
    if state_key is not None:
        raise ModelLoadError(f"{path}: --state-key {state_key} does not apply: the file is {what}")


def _check_file(path: Path) -> None:
    """Refuse, in one clear line, what is plainly not a model file: nothing, a directory, an empty file,
    or a .sqc file (already compressed)."""
    require_regular(path, ModelLoadError, "model file")
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


# ----------------------------------------------------------------------------------------------------
# Reading the file


def _is_safetensors(path: Path) -> bool:
    """By name, or by content: an 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 2 <= length <= path.stat().st_size - 8


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: not a valid safetensors file ({_first_line(exc)})") from None


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
            what = f" ({found.group(1)})" if found else ""
            raise ModelLoadError(
                f"{path}: holds pickled Python objects{what}, and loading them would run code from the "
                "file; pass --trust-pickle if you trust its origin, or save a state_dict, a .safetensors "
                "file or a torch.export program"
            ) from None
        return _load_trusted(path)
    except Exception as exc:  # torch.load fails in many ways on bytes that are not a checkpoint
        raise ModelLoadError(f"{path}: not a PyTorch model file ({_first_line(exc)})") from None


def _load_trusted(path: Path) -> Any:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot unpickle ({_first_line(exc)})") from None
    if not isinstance(obj, nn.Module | Mapping):
        raise ModelLoadError(
            f"{path}: the pickle holds an object of type {type(obj).__name__}, not an nn.Module"
        )
    return obj


# ----------------------------------------------------------------------------------------------------
# Finding the state_dict in a checkpoint


def _is_state_dict(obj: Any) -> bool:
    """Tensors under string keys (a module's ``_extra_state`` may be any object)."""
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith("_extra_state"))
        for k, v in obj.items()
    )


def _looks_like_weights(obj: Any) -> bool:
    """A state_dict worth picking unasked: not empty, and named like parameters (``fc.weight``), which
    sets it apart from the per-parameter tensors of optimizer state (``exp_avg``) or a grad scaler."""
    return (
        _is_state_dict(obj) and len(obj) > 0 and any("." in k or k.endswith(("weight", "bias")) for k in obj)
    )


def _candidates(obj: Any) -> list[tuple[str, Any]]:
    """(dotted key, value) of every state_dict or module in nested mappings, ``SEARCH_DEPTH`` deep.

    Optimizer state (``state`` + ``param_groups``) is not searched: its per-parameter dicts are
    tensors under string keys too.
    """
    found: list[tuple[str, Any]] = []
    level = [("", obj)]
    for _ in range(SEARCH_DEPTH):
        below = []
        for prefix, mapping in level:
            for key, value in mapping.items():
                if not isinstance(key, str):
                    continue
                where = f"{prefix}.{key}" if prefix else key
                if _looks_like_weights(value) or isinstance(value, nn.Module):
                    found.append((where, value))
                elif isinstance(value, Mapping) and not {"state", "param_groups"} <= value.keys():
                    below.append((where, value))
        level = below[:1000]
    return found


def _pick(path: Path, obj: Any, state_key: str | None, notes: list[str]) -> Any:
    """The state_dict (or, from a trusted pickle, the module) the user means."""
    if state_key is not None:
        value = _lookup(path, obj, state_key)
        if _is_state_dict(value) or isinstance(value, nn.Module):
            return value
        raise ModelLoadError(
            f"{path}: --state-key {state_key} holds {_describe(value)}, not a state_dict{_hint(obj)}"
        )
    if _is_state_dict(obj):
        return obj
    if not isinstance(obj, Mapping):
        raise ModelLoadError(
            f"{path}: holds an object of type {type(obj).__name__}, "
            "not a state_dict, module or export program"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if _looks_like_weights(tensors):  # weights at the top level, next to an epoch count or such
        others = [clean(str(k), 40) for k in obj if k not in tensors]
        notes.append(
            f"{path}: loaded the {len(tensors)} tensors at the top level and left out the other entries "
            f"({', '.join(others[:5])}{' …' if len(others) > 5 else ''})"
        )
        return tensors
    found = _candidates(obj)
    if len(found) == 1:
        key = found[0][0]
        notes.append(
            f"{path}: loaded the state_dict under the key '{clean(key)}', the only one in the file "
            "(--state-key chooses another)"
        )
        return found[0][1]
    if found:
        keys = ", ".join(clean(k) for k, _ in found[:8]) + (" …" if len(found) > 8 else "")
        raise ModelLoadError(
            f"{path}: holds {len(found)} state_dicts, under the keys {keys}; choose one with --state-key KEY"
        )
    raise ModelLoadError(
        f"{path}: holds {_describe(obj)} and no state_dict sqc recognises; if the weights are under one "
        "of those keys, name it with --state-key KEY (dotted for nesting)"
    )


def _lookup(path: Path, obj: Any, state_key: str) -> Any:
    """``a.b.c`` in nested mappings (an exact key with dots in it wins); list items by index."""
    if isinstance(obj, Mapping) and state_key in obj:
        return obj[state_key]
    node = obj
    walked: list[str] = []
    for part in state_key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Mapping) and part.isdigit() and int(part) in node:
            node = node[int(part)]
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            under = f" under '{clean('.'.join(walked))}'" if walked else ""
            raise ModelLoadError(
                f"{path}: --state-key {state_key}: no key '{clean(part)}'{under}; there is {_describe(node)}"
            )
        walked.append(part)
    return node


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [clean(str(k), 40) for k in list(obj.keys())[:8]]
        more = " …" if len(obj) > 8 else ""
        return f"a dict with the keys {', '.join(keys)}{more}" if keys else "an empty dict"
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"an object of type {type(obj).__name__}"


def _hint(obj: Any) -> str:
    found = _candidates(obj) if isinstance(obj, Mapping) else []
    return f" (state_dicts are under: {', '.join(clean(k) for k, _ in found[:8])})" if found else ""


# ----------------------------------------------------------------------------------------------------
# Fitting a state_dict to the architecture


def _build(path: Path, arch: str, state: Mapping[str, Any], strict: bool, notes: list[str]) -> LoadedModel:
    factory = resolve_factory(arch)
    source = f"{path} (state_dict + {arch})"
    model = _build_on_meta(factory)
    if model is not None:
        _check_type(arch, model)
        fitted = _fit(path, arch, model, state, strict, notes)
        _load(model, fitted, assign=True)
        if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            return LoadedModel(model, None, source, notes)
    else:
        fitted = None
    model = factory()  # the factory needs real tensors, or keeps tensors the state_dict does not hold
    _check_type(arch, model)
    if fitted is None:
        fitted = _fit(path, arch, model, state, strict, notes)
    _load(model, fitted, assign=False)
    return LoadedModel(model, None, source, notes)


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


def _typed(program: Any, shapes: list[tuple[int, ...]]) -> list[Any]:
    """The program's input shapes with their dtypes (token ids are int64), as input specs."""
    from sqc.ir.records import InputSpec

    user = set(program.graph_signature.user_inputs)
    values = [n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    if len(values) != len(shapes) or not all(isinstance(v, torch.Tensor) for v in values):
        return list(shapes)
    return [
        InputSpec("", shape, str(v.dtype).removeprefix("torch."))
        for shape, v in zip(shapes, values, strict=True)
    ]


def _check_type(arch: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--arch {arch}: returned a {type(model).__name__}, not an nn.Module")


def _fit(
    path: Path, arch: str, model: nn.Module, state: Mapping[str, Any], strict: bool, notes: list[str]
) -> dict[str, Any]:
    """The state_dict renamed and filtered to the architecture's keys, or a one-line error.

    A prefix every key has and no key of the architecture has (``module.``, ``_orig_mod.``) is removed;
    a name tied to another in the architecture (GPT-2's ``lm_head.weight``) may be absent, as
    safetensors files leave it out; other missing or extra keys are an error unless ``strict`` is off,
    and a wrong shape is always one.
    """
    own = model.state_dict()
    fitted = dict(state)
    removed = True
    while removed and fitted:
        removed = False
        for prefix, why in PREFIXES:
            if all(k.startswith(prefix) for k in fitted) and not any(k.startswith(prefix) for k in own):
                fitted = {k[len(prefix) :]: v for k, v in fitted.items()}
                notes.append(f"{path}: removed the prefix '{prefix}' from every key ({why})")
                removed = True
    for group in _tied(model):
        present = [name for name in group if name in fitted]
        for name in group if present else ():
            fitted.setdefault(name, fitted[present[0]])
    missing = [k for k in own if k not in fitted]
    unexpected = [k for k in fitted if k not in own]
    if missing or unexpected:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                shown = ", ".join(clean(k, 60) for k in keys[:3])
                parts.append(f"{len(keys)} {label} ({shown}{' …' if len(keys) > 3 else ''})")
        if strict:
            raise ModelLoadError(
                f"{path}: state_dict does not fit --arch {arch}: {'; '.join(parts)} "
                "(--no-strict loads it anyway)"
            )
        notes.append(
            f"{path}: --no-strict: {'; '.join(parts)}"
            + ("; missing tensors keep the architecture's initial values" if missing else "")
        )
        fitted = {k: v for k, v in fitted.items() if k in own}
    for key, value in fitted.items():
        expected = own[key]
        if (
            isinstance(value, torch.Tensor)
            and isinstance(expected, torch.Tensor)
            and (tuple(expected.shape) != tuple(value.shape))
        ):
            raise ModelLoadError(
                f"{path}: state_dict does not fit --arch {arch}: {clean(key)} has shape "
                f"{tuple(value.shape)}, the architecture expects {tuple(expected.shape)}"
            )
    return fitted


def _load(model: nn.Module, state: dict[str, Any], *, assign: bool) -> None:
    """load_state_dict; with ``assign`` the checkpoint's tensors are taken over (converted to the
    module's dtype where they differ) and ties are restored, since assigning gives each name its own
    Parameter."""
    groups = _tied(model)
    if assign:
        own = model.state_dict()
        state = {
            key: value.to(own[key].dtype)
            if isinstance(value, torch.Tensor)
            and isinstance(own[key], torch.Tensor)
            and value.dtype != own[key].dtype
            else value
            for key, value in state.items()
        }
    model.load_state_dict(state, strict=False, assign=assign)
    for group in groups if assign else ():
        module, _, leaf = group[0].rpartition(".")
        shared = getattr(model.get_submodule(module), leaf)
        for name in group[1:]:
            module, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(module), leaf, shared)


def _tied(model: nn.Module) -> list[list[str]]:
    """Names that are one tensor in the architecture (tied weights), as groups."""
    groups: dict[int, list[str]] = {}
    for name, tensor in (
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ):
        groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return clean(text.splitlines()[0], 200) if text else type(exc).__name__
