"""Reading a ``torch.export`` archive (``.pt2``) without running anything from it.

``torch.export.load`` is not safe on a file from someone else, in four ways (torch 2.13):

* a weight or constant marked ``use_pickle`` is unpickled with ``weights_only=False``, and the
  sample-inputs member is retried with ``weights_only=False`` whenever the safe load fails;
* every ``expr_str`` of the program's JSON (symbolic sizes) goes to ``sympy.sympify``, which calls
  ``eval`` on it: a size of ``__import__('os').system(...)`` runs with no pickle in the file at all;
* strings of the JSON are pasted into Python source that torch.fx ``exec``s: keyword names of
  higher-order ops, ``forward_arg_names``, keyword names inside ``in_spec``, and parameter and buffer
  names (quoted into ``getattr(self, "...")``);
* ``guards_code`` is Python source, ``exec``'d by ``ExportedProgram.module()``.

So sqc opens the zip itself. It checks the member count and the sizes every member declares
against the size of the file before anything is inflated; checks the input shapes the program
declares against :data:`MAX_INPUT_ELEMENTS` before any tensor exists; builds weights and constants
from their raw bytes (views of one storage where the archive shares one, so tied weights stay tied);
refuses any member flagged ``use_pickle`` and any pickled sample input that ``weights_only`` loading
refuses; checks every string that torch would evaluate or paste into code against a strict grammar,
and every call target against ATen, prims, higher-order and symbolic-size operators; drops
``guards_code`` (sqc traces with concrete shapes and checks them itself). Only then is the JSON
handed to torch's own deserializer, with the tensors built here, so nothing in it is unpickled.
"""

from __future__ import annotations

import ast
import io
import json
import math
import operator
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch

from sqc.errors import ModelLoadError
from sqc.ir.records import MAX_INPUT_ELEMENTS  # sqc builds inputs of the declared shapes to trace

MAX_MEMBERS = 1 << 17
"""Members in one archive; a model with 100,000 distinct tensors still fits."""

MAX_JSON_BYTES = 1 << 28
"""The program's JSON and each payload config (256 MiB; a ResNet-50 program is about 1 MB)."""

INFLATE_FACTOR = 4
INFLATE_SLACK = 64 << 20
"""All members together may declare at most ``4 x`` the file's size plus 64 MiB. ``torch.export.save``
stores members uncompressed (1x); a re-zipped archive of float weights stays near 1x; a zip bomb
declares thousands of times its size and is refused before one byte is inflated."""


MAX_EXPR_CHARS = 10_000
MAX_EXPR_NODES = 2_000
MAX_UNBACKED_DIGITS = 7
"""An unbacked symbol's index is counted up to one by one by the deserializer: ``u99999999999999``
would loop for days."""

# torch's archive layout (torch/csrc/export/pt2_archive_constants.h), the only model torch loads
MODEL = "model"
PROGRAM = f"models/{MODEL}.json"
WEIGHTS_CONFIG = f"data/weights/{MODEL}_weights_config.json"
CONSTANTS_CONFIG = f"data/constants/{MODEL}_constants_config.json"
SAMPLE_INPUTS = f"data/sample_inputs/{MODEL}.pt"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FQN_PART = re.compile(r"[A-Za-z0-9_]+")
_MODULE_FQN = re.compile(r"[A-Za-z0-9_.@]*")
_SPEC_TEXT = re.compile(r"[A-Za-z0-9_.]*")
_SYMBOL = re.compile(r"[a-z]+[0-9]+")

_OP_NAMESPACES = frozenset({"aten", "prims", "higher_order"})
_DENIED_OPS = frozenset({("aten", "save"), ("aten", "from_file")})  # they write and read local files

# The functions torch's deserializer gives sympify, and the sympy classes an expression is printed with:
# torch 2.13 writes srepr form (``Mul(Integer(4), Symbol('s77', positive=True, integer=True))``),
# older versions str form (``4*s77``); both are read.
_SYM_FUNCTIONS = frozenset(
    {
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
        "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
        "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
        "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
        "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "floor",
        "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
        "LessThan", "StrictGreaterThan", "GreaterThan", "And", "Or", "Not",
    }
)  # fmt: skip
_SYM_CONSTANTS = frozenset({"true", "false", "oo"})
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift"})
_ASSUMPTIONS = frozenset(
    {"integer", "real", "positive", "negative", "nonnegative", "nonpositive", "nonzero", "finite"}
)
_FLOAT_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[-+]?[0-9]{1,4})?")
_EXPR_NODES = (
    ast.Expression, ast.Load, ast.Name, ast.Constant, ast.Call, ast.keyword, ast.BinOp, ast.UnaryOp,
    ast.Compare, ast.BoolOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd,
    ast.BitOr, ast.USub, ast.UAdd, ast.Not, ast.Invert, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.And, ast.Or,
)  # fmt: skip


def is_export_archive(path: Path) -> bool:
    """A zip laid out as a ``torch.export`` archive (any file name: the contents decide)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                rest = name.partition("/")[2]
                if rest in ("archive_format", "serialized_exported_program.json") or (
                    rest.startswith("models/") and rest.endswith(".json")
                ):
                    return True
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False
    return False


def read_program(path: Path) -> tuple[torch.export.ExportedProgram, list[tuple[int, ...]]]:
    """The exported program in ``path`` and the shapes of its tensor inputs, or a one-line refusal.

    Nothing from the file is unpickled (the sample inputs go through ``torch.load(weights_only=True)``,
    which rebuilds tensors and containers only) and nothing from it is evaluated.
    """
    try:
        with zipfile.ZipFile(path) as handle:
            archive = _Archive(path, handle)
            return _read(archive)
    except ModelLoadError:
        raise
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path}: not a readable .pt2 archive ({_first_line(exc)})") from None


class _Archive:
    """The members of one archive, under its single top-level folder, with their sizes checked."""

    def __init__(self, path: Path, handle: zipfile.ZipFile) -> None:
        self.path = path
        self.handle = handle
        infos = handle.infolist()
        if len(infos) > MAX_MEMBERS:
            self.refuse(f"has {len(infos):,} members (at most {MAX_MEMBERS:,})")
        self.members: dict[str, zipfile.ZipInfo] = {}
        root = None
        for info in infos:
            if info.is_dir():
                continue
            head, _, rest = info.filename.partition("/")
            if not rest:
                self.refuse(f"member {_show(info.filename)} is not under the archive's folder")
            if root is None:
                root = head
            elif head != root:
                self.refuse(f"has members under two top-level folders, {_show(root)} and {_show(head)}")
            if rest in self.members:
                self.refuse(f"has two members named {_show(info.filename)}")
            self.members[rest] = info
        declared = sum(info.file_size for info in infos)
        size = path.stat().st_size
        if declared > INFLATE_FACTOR * size + INFLATE_SLACK:
            self.refuse(
                f"its members declare {declared:,} bytes in a file of {size:,} bytes "
                f"(at most {INFLATE_FACTOR}x + {INFLATE_SLACK >> 20} MiB; a zip bomb?)"
            )

    def refuse(self, message: str, member: str | None = None) -> NoReturn:
        where = f"{self.path}: {member}" if member else str(self.path)
        raise ModelLoadError(f"{where}: {message}")

    def has(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, cap: int | None = None) -> bytearray:
        """The member's bytes; its declared size is checked against ``cap`` before it is inflated
        (every size was already checked, all together, against the file's)."""
        info = self.members.get(name)
        if info is None:
            self.refuse(f"has no member {_show(name)} (not written by torch.export.save?)")
        if cap is not None and info.file_size > cap:
            self.refuse(f"declares {info.file_size:,} bytes (at most {cap:,})", name)
        data = bytearray(info.file_size)
        try:
            with self.handle.open(info) as member:
                got = member.readinto(data)
                extra = member.read(1)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
            self.refuse(f"cannot be read ({_first_line(exc)})", name)
        if got != info.file_size or extra:
            self.refuse(f"holds other than the {info.file_size:,} bytes it declares", name)
        return data

    def json(self, name: str) -> Any:
        data = self.read(name, MAX_JSON_BYTES)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self.refuse(f"is not valid JSON ({_first_line(exc)})", name)


def _read(archive: _Archive) -> tuple[torch.export.ExportedProgram, list[tuple[int, ...]]]:
    if archive.has("serialized_exported_program.json") and not archive.has("archive_format"):
        archive.refuse(
            "uses the torch.export layout of torch 2.4 and older; re-save it with torch.export.save"
        )
    if bytes(archive.read("archive_format", 64)) != b"pt2":
        archive.refuse("is not a torch.export archive (archive_format is not 'pt2')")
    version = bytes(archive.read("archive_version", 64)) if archive.has("archive_version") else b"0"
    if version != b"0":
        archive.refuse(f"has archive version {_show(version.decode('latin-1'))}; this torch reads version 0")
    if archive.has("byteorder") and bytes(archive.read("byteorder", 64)) != b"little":
        archive.refuse("stores big-endian tensors; re-save it on a little-endian machine")
    if not archive.has(PROGRAM):
        models = sorted(m for m in archive.members if m.startswith("models/"))
        found = f" (it has {', '.join(_show(m) for m in models[:5])})" if models else ""
        archive.refuse(f"has no exported program {PROGRAM}{found}")
    for legacy in (f"data/weights/{MODEL}.pt", f"data/constants/{MODEL}.pt"):
        if archive.has(legacy):
            archive.refuse(
                "is in torch's legacy layout (pickled weights); re-save it with torch.export.save", legacy
            )

    program = archive.json(PROGRAM)
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        archive.refuse("is not a serialized exported program", PROGRAM)
    _check_program(archive, program)
    program["guards_code"] = []  # Python source, exec'd by module(); sqc checks input shapes itself
    shapes = _input_shapes(archive, program)

    state_dict = _payload(archive, WEIGHTS_CONFIG, "data/weights/", "weight_", params=True)
    constants = _payload(archive, CONSTANTS_CONFIG, "data/constants/", "tensor_", params=False)
    example_inputs = _sample_inputs(archive)

    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            serialized = _dict_to_dataclass(schema.ExportedProgram, program)
            exported = ExportedProgramDeserializer().deserialize(
                serialized, state_dict, constants, example_inputs
            )
    except Exception as exc:  # torch's deserializer fails in many ways on a program it cannot read
        archive.refuse(f"is not a loadable exported program ({_first_line(exc)})", PROGRAM)
    return exported, shapes


# ----------------------------------------------------------------------------------------------------
# The program's JSON: every string torch evaluates or pastes into code, every call target


def _check_program(archive: _Archive, program: dict[str, Any]) -> None:
    """Walk the whole JSON once (iteratively: nesting depth is the file's choice) and refuse what
    torch would evaluate or paste into generated code unless it is plainly a name or a size."""

    def refuse(message: str) -> NoReturn:
        archive.refuse(message, PROGRAM)

    ranges = program.get("range_constraints")
    if isinstance(ranges, dict):
        for key in ranges:
            _check_expr(key, refuse)
            for prefix in ("u", "zuf"):  # unbacked symbols, counted up to one by one
                if key.startswith(prefix) and not re.fullmatch(
                    f"[0-9]{{1,{MAX_UNBACKED_DIGITS}}}", key[len(prefix) :]
                ):
                    refuse(f"range constraint on {_show(key)}, which is not a size symbol")
    stack: list[Any] = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if isinstance(value, (dict, list)) and key != "metadata":
                stack.append(value)
        if "expr_str" in item:
            _check_expr(item["expr_str"], refuse)
        if "target" in item and "inputs" in item:
            _check_target(item["target"], item.get("name"), refuse)
        if "as_operator" in item:
            _check_target(item["as_operator"], None, refuse)
        for key in ("name", "as_name", "user_input_name"):
            if item.get(key) not in (None, ""):  # a higher-order op's positional inputs are named ""
                _check_name(item[key], key, refuse)
        for key in ("parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name"):
            if key in item:
                _check_fqn(item[key], refuse)
        if isinstance(item.get("fqn"), str) and not _MODULE_FQN.fullmatch(item["fqn"]):
            refuse(f"module path {_show(item['fqn'])} is not a dotted name")
        names = item.get("forward_arg_names")
        if isinstance(names, list):
            for name in names:
                _check_name(name, "forward argument", refuse)
        if isinstance(item.get("in_spec"), str):
            _check_in_spec(item["in_spec"], refuse)


def _check_name(name: Any, what: str, refuse: Any) -> None:
    if not isinstance(name, str) or len(name) > 1000 or not _IDENT.fullmatch(name):
        refuse(f"{what} {_show(name)} is not a plain identifier")


def _check_fqn(name: Any, refuse: Any) -> None:
    """Parameter and buffer names become attribute paths (``getattr(self, "0")`` in generated code)."""
    if not isinstance(name, str) or not name or len(name) > 1000:
        refuse(f"tensor name {_show(name)} is not a dotted name")
    for part in name.split("."):
        if not _FQN_PART.fullmatch(part) or (part.startswith("__") and part.endswith("__")):
            refuse(f"tensor name {_show(name)} is not a dotted name of ASCII identifiers (no dunders)")


def _check_target(target: Any, node: Any, refuse: Any) -> None:
    """ATen/prims operators, higher-order operators and the symbolic-size operators torch writes;
    any other callable would run when the model runs (``torch.os.system`` resolves, for one)."""
    where = f"node {_show(node)} calls" if isinstance(node, str) else "operator argument"
    if not isinstance(target, str) or len(target) > 300:
        refuse(f"{where} {_show(target)}, which is not an operator name")
    parts = target.split(".")
    if all(_IDENT.fullmatch(p) and not p.startswith("__") for p in parts):
        from torch._export.serde.serialize import _SYM_OPS

        if parts[:2] == ["torch", "ops"] and len(parts) in (4, 5) and parts[2] in _OP_NAMESPACES:
            if (parts[2], parts[3]) not in _DENIED_OPS:
                obj: Any = torch.ops
                try:
                    for part in parts[2:]:
                        obj = getattr(obj, part)
                except Exception:
                    obj = None
                if isinstance(obj, torch._ops.OpOverload | torch._ops.HigherOrderOperator):
                    return
        elif len(parts) == 2 and parts[0] in ("_operator", "math", "torch"):
            module = {"_operator": operator, "math": math, "torch": torch}[parts[0]]
            obj = getattr(module, parts[1], None)
            if obj is operator.getitem or any(obj is op for op in _SYM_OPS):
                return
    refuse(f"{where} {_show(target)}, which is not an ATen, prims or higher-order operator")


def _check_expr(text: Any, refuse: Any) -> None:
    """A symbolic size as torch prints one: symbols, integers, arithmetic, comparisons and the sympy
    functions torch uses, with strings only as a symbol's name or a float's digits. sympify would
    ``eval`` anything else. Powers and shifts take a literal exponent of at most 64 and do not nest:
    a few characters must not make an integer of gigabytes."""
    if not isinstance(text, str) or not text.isascii() or len(text) > MAX_EXPR_CHARS:
        refuse(f"symbolic size {_show(text)} is not an expression sqc reads")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        refuse(f"symbolic size {_show(text)} is not an expression")
    strings: set[int] = set()  # the string constants allowed where they are (ast.walk is breadth-first)
    for count, node in enumerate(ast.walk(tree)):
        ok = count < MAX_EXPR_NODES and isinstance(node, _EXPR_NODES)
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else ""
            ok = ok and name in _SYM_FUNCTIONS and _call_ok(name, node, strings)
        elif isinstance(node, ast.Name):
            ok = ok and (
                node.id in _SYM_FUNCTIONS or node.id in _SYM_CONSTANTS or bool(_SYMBOL.fullmatch(node.id))
            )
        elif isinstance(node, ast.Constant):
            value = node.value
            ok = ok and (
                id(node) in strings
                or isinstance(value, bool | float)
                or (isinstance(value, int) and abs(value) < 1 << 64)
            )
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            ok = ok and _power_ok(node.left, node.right)
        if not ok:
            refuse(f"symbolic size {_show(text)} is not an expression sqc reads")


def _call_ok(name: str, node: ast.Call, strings: set[int]) -> bool:
    args, keywords = node.args, node.keywords
    if name == "Symbol":
        return (
            len(args) == 1
            and isinstance(args[0], ast.Constant)
            and isinstance(args[0].value, str)
            and bool(_SYMBOL.fullmatch(args[0].value))
            and strings.add(id(args[0])) is None
            and all(
                k.arg in _ASSUMPTIONS and isinstance(k.value, ast.Constant) and type(k.value.value) is bool
                for k in keywords
            )
        )
    if name == "Float":  # Float('1.5', precision=53)
        if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            if not _FLOAT_TEXT.fullmatch(args[0].value):
                return False
            strings.add(id(args[0]))
        return len(args) == 1 and all(
            k.arg == "precision"
            and isinstance(k.value, ast.Constant)
            and type(k.value.value) is int
            and 1 <= k.value.value <= 1024
            for k in keywords
        )
    if keywords:
        return False
    return name not in _POWERS or (len(args) == 2 and _power_ok(args[0], args[1]))


def _power_ok(base: ast.expr, exponent: ast.expr) -> bool:
    """``x**k`` for a literal ``|k| <= 64`` (``s0*s0`` prints as ``s0**2``), with no power inside ``x``."""
    literal = exponent
    if isinstance(literal, ast.Call) and isinstance(literal.func, ast.Name) and literal.func.id == "Integer":
        literal = literal.args[0] if len(literal.args) == 1 and not literal.keywords else literal
    if isinstance(literal, ast.UnaryOp) and isinstance(literal.op, ast.USub):
        literal = literal.operand
    if not (isinstance(literal, ast.Constant) and type(literal.value) is int and abs(literal.value) <= 64):
        return False
    return not any(
        (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow))
        or (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _POWERS)
        for n in ast.walk(base)
    )


def _check_in_spec(text: str, refuse: Any) -> None:
    """The input treespec: its dict keys are pasted, quoted, into the generated ``forward``."""
    try:
        spec = json.loads(text) if len(text) <= MAX_JSON_BYTES else None
    except (ValueError, RecursionError):
        spec = None
    if spec is None:
        refuse("in_spec is not a JSON treespec")
    for context in _values_of(spec, "context"):
        if context is None:
            continue
        try:
            parsed = json.loads(context) if isinstance(context, str) else None
        except (ValueError, RecursionError):
            parsed = None
        if parsed is None and context != "null":
            refuse(f"in_spec context {_show(context)} is not JSON")
        for text_value in _strings(parsed):
            if not _SPEC_TEXT.fullmatch(text_value):
                refuse(f"input name {_show(text_value)} in in_spec is not a plain identifier")


def _values_of(tree: Any, key: str) -> Iterator[Any]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                yield item[key]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _strings(tree: Any) -> Iterator[str]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _input_shapes(archive: _Archive, program: dict[str, Any]) -> list[tuple[int, ...]]:
    """The shapes of the tensor inputs, from the JSON, checked against the cap before anything is
    built from them (a symbolic size counts at the example value it was exported with)."""
    graph_module = program["graph_module"]
    try:
        specs = graph_module["signature"]["input_specs"]
        values = graph_module["graph"]["tensor_values"]
        names = [
            spec["user_input"]["arg"]["as_tensor"]["name"]
            for spec in specs
            if "user_input" in spec and "as_tensor" in spec["user_input"]["arg"]
        ]
        sizes = [values[name]["sizes"] for name in names]
    except (KeyError, TypeError):
        archive.refuse("has no readable input signature", PROGRAM)
    shapes = []
    total = 0
    for name, dims in zip(names, sizes, strict=True):
        shape = []
        for dim in dims if isinstance(dims, list) else [None]:
            value = None
            if isinstance(dim, dict) and "as_int" in dim:
                value = dim["as_int"]
            elif isinstance(dim, dict) and isinstance(dim.get("as_expr"), dict):
                hint = dim["as_expr"].get("hint")
                value = hint.get("as_int") if isinstance(hint, dict) else None
            if type(value) is not int or value < 0:
                archive.refuse(f"input {_show(name)} has a size without a value: {_show(dim)}", PROGRAM)
            shape.append(value)
        elements = math.prod(shape)
        total += elements
        if total > MAX_INPUT_ELEMENTS:
            archive.refuse(
                f"input {_show(name)} declares shape {tuple(shape)} ({elements:,} elements); sqc "
                f"traces with inputs of at most {MAX_INPUT_ELEMENTS:,} elements in all",
                PROGRAM,
            )
        shapes.append(tuple(shape))
    return shapes


# ----------------------------------------------------------------------------------------------------
# Weights, constants and sample inputs, without unpickling


def _payload(
    archive: _Archive, config_name: str, directory: str, prefix: str, *, params: bool
) -> dict[str, torch.Tensor]:
    """Tensors from their raw bytes, as torch's own loader builds them: one flat storage per file and
    a strided view per name, so names that share a file (tied weights) share storage."""
    from torch._export.serde.schema import Layout, ScalarType
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    if not archive.has(config_name):
        archive.refuse(f"has no member {config_name} (not written by torch.export.save?)")
    config = archive.json(config_name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        archive.refuse("is not a payload config", config_name)
    storages: dict[str, torch.Tensor] = {}
    tensors: dict[str, torch.Tensor] = {}
    for fqn, meta in entries.items():
        _check_fqn(fqn, lambda message: archive.refuse(message, config_name))
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            archive.refuse(f"entry {_show(fqn)} has no path_name", config_name)
        member = directory + meta["path_name"]
        if meta.get("use_pickle") is not False:
            archive.refuse(
                f"holds {_show(fqn)} as a pickle; unpickling runs code from the file, and sqc reads "
                "no pickles from a .pt2",
                member,
            )
        if not re.fullmatch(re.escape(prefix) + r"[0-9]{1,9}", meta["path_name"]):
            archive.refuse(f"entry {_show(fqn)} names {_show(member)}, not a raw tensor file", config_name)
        tm = meta.get("tensor_meta")
        try:
            dtype = _SERIALIZE_TO_TORCH_DTYPE[ScalarType(tm["dtype"])]
            layout = Layout(tm["layout"])
            sizes = [_int(d) for d in tm["sizes"]]
            strides = [_int(d) for d in tm["strides"]]
            offset = _int(tm["storage_offset"])
        except (KeyError, TypeError, ValueError):
            archive.refuse(f"entry {_show(fqn)} has no readable dtype, layout, sizes or strides", config_name)
        if layout != Layout.Strided or len(sizes) != len(strides) or len(sizes) > 64:
            archive.refuse(f"entry {_show(fqn)} is not a dense strided tensor", config_name)
        storage = storages.get(member)
        if storage is None:
            data = archive.read(member)
            if len(data) % dtype.itemsize:
                archive.refuse(f"holds {len(data):,} bytes, not a whole number of {dtype}", member)
            storage = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            storages[member] = storage
        elif storage.dtype != dtype:
            archive.refuse(f"is read as {storage.dtype} and as {dtype}", member)
        numel = math.prod(sizes)
        extent = offset + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True)) + 1
        if numel > storage.numel() or (numel and extent > storage.numel()) or offset > storage.numel():
            archive.refuse(
                f"{_show(fqn)} of shape {tuple(sizes)} does not fit the {storage.numel():,} elements "
                "of its file",
                config_name,
            )
        tensor = torch.as_strided(storage, sizes, strides, offset)
        grad = bool(tm.get("requires_grad")) and (dtype.is_floating_point or dtype.is_complex)
        if params and meta.get("is_param"):
            tensor = torch.nn.Parameter(tensor, requires_grad=grad)
        tensors[fqn] = tensor
    return tensors


def _int(value: Any) -> int:
    """A concrete size, stride or offset ({"as_int": n}); a stored tensor has no symbolic sizes."""
    number = value["as_int"]
    if type(number) is not int or not 0 <= number < 1 << 62:
        raise ValueError(f"not a size: {value!r}")
    return number


def _sample_inputs(archive: _Archive) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The example inputs, through ``torch.load(weights_only=True)`` (tensors and containers only)
    after the nested zip's sizes are checked; a pickle that needs more is refused, never retried."""
    if not archive.has(SAMPLE_INPUTS):
        return None
    data = archive.read(SAMPLE_INPUTS, MAX_JSON_BYTES)
    if not data:
        return None
    blob = bytes(data)
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as nested:
            infos = nested.infolist()
            if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > len(blob):
                archive.refuse("declares more bytes than it holds", SAMPLE_INPUTS)
    except zipfile.BadZipFile:
        archive.refuse("is not in torch's zip format", SAMPLE_INPUTS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:
        archive.refuse(
            f"holds pickled objects that weights_only loading refuses ({_unsupported(exc)}); "
            "sqc reads no other pickles from a .pt2",
            SAMPLE_INPUTS,
        )
    if not (
        isinstance(loaded, tuple)
        and len(loaded) == 2
        and isinstance(loaded[0], tuple)
        and isinstance(loaded[1], dict)
    ):
        archive.refuse("does not hold (args, kwargs)", SAMPLE_INPUTS)
    from torch.utils._pytree import tree_leaves

    leaves = tree_leaves(loaded)
    if sum(t.numel() for t in leaves if isinstance(t, torch.Tensor)) > MAX_INPUT_ELEMENTS:
        archive.refuse(f"holds more than {MAX_INPUT_ELEMENTS:,} elements", SAMPLE_INPUTS)
    return loaded


def _unsupported(exc: BaseException) -> str:
    """The global weights_only refused, from torch's long message, or its first line."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f"global {found.group(1)}" if found else _first_line(exc)


def clean(text: str, limit: int = 80) -> str:
    """File-supplied text fit for a one-line message: control characters escaped, shortened."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text[:limit] + ("…" if len(text) > limit else "")


def _show(value: Any) -> str:
    return f"'{clean(value)}'" if isinstance(value, str) else clean(repr(value))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return clean(text.splitlines()[0], 200) if text else type(exc).__name__
