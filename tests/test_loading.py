"""Model files as people have them, and .pt2 archives read without running anything from them.

Checkpoints: weights under a key (``--state-key``, or the one candidate found), DataParallel and
torch.compile prefixes, ``--no-strict``, tied names, ``.safetensors``. Archives: every member kind that
torch.export.load unpickles gets a malicious pickle (a ``__reduce__`` that creates a marker file), built
by rewriting an archive torch.export.save wrote; sqc refuses each in one line and the marker never
appears, while torch's own loader does run the payload (so the test's payload is live).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file, save_model

import sqc
from sqc.errors import ModelLoadError
from sqc.frontend.loading import load_model
from sqc.frontend.pt2 import MAX_INPUT_ELEMENTS, read_program

ARCHES = '''
import torch, torch.nn as nn, torch.nn.functional as F

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))

class Tied(nn.Module):
    """Two layers that are one weight, as GPT-2's wte and lm_head."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.head = nn.Linear(8, 8, bias=False)
        self.tail = nn.Linear(8, 8, bias=False)
        self.tail.weight = self.head.weight

    def forward(self, x):
        return self.tail(torch.relu(self.head(self.fc(x))))
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "loading_arches.py").write_text(ARCHES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def small(seed: int = 0) -> nn.Module:
    import loading_arches

    torch.manual_seed(seed)
    return loading_arches.Small().eval()


SMALL = "loading_arches:Small"
X = torch.randn(3, 16)


def same(module: nn.Module, reference: nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(module(X), reference(X))


def one_line_error(result: Any, *fragments: str) -> str:
    assert result.code == 1, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sqc: error:"), result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def optimizer_state(model: nn.Module) -> dict[str, Any]:
    """A real SGD-with-momentum state: per-parameter tensors under string keys, and param groups."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(X).sum().backward()
    opt.step()
    return opt.state_dict()


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def test_training_checkpoint_with_state_key(workdir: Path):
    model = small()
    ckpt = {"step": 1200, "model_state": model.state_dict(), "optimizer_state": optimizer_state(small(1))}
    torch.save(ckpt, workdir / "ckpt.pt")
    loaded = load_model(workdir / "ckpt.pt", SMALL, state_key="model_state")
    assert same(loaded.module, model) and loaded.notes == []


def test_the_one_state_dict_is_picked_and_named(workdir: Path, cli):
    model = small()
    torch.save(
        {"step": 3, "model_state": model.state_dict(), "optimizer_state": optimizer_state(small(1))},
        workdir / "ckpt.pt",
    )
    loaded = load_model(workdir / "ckpt.pt", SMALL)
    assert same(loaded.module, model)
    assert len(loaded.notes) == 1 and "'model_state'" in loaded.notes[0]

    result = cli(
        "compress", "ckpt.pt", "--arch", SMALL, "-p", "prune{sparsity=0.5},quant,huffman", "-o", "c.sqc"
    )
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "model_state" in warnings[0]


def test_several_state_dicts_are_listed(workdir: Path, cli):
    model, ema = small(0), small(1)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "epoch": 7}, workdir / "ckpt.pt")
    with pytest.raises(
        ModelLoadError, match=r"2 state_dicts, under the keys model, ema; choose one with --state-key"
    ):
        load_model(workdir / "ckpt.pt", SMALL)
    one_line_error(cli("inspect", "ckpt.pt", "--arch", SMALL), "model, ema", "--state-key")
    assert same(load_model(workdir / "ckpt.pt", SMALL, state_key="ema").module, ema)
    result = cli("inspect", "ckpt.pt", "--arch", SMALL, "--state-key", "ema")
    assert result.code == 0 and "warning" not in result.err, result.err


def test_nested_state_key(workdir: Path):
    model = small()
    torch.save({"trainer": {"model": model.state_dict(), "step": 4}, "version": "1.2"}, workdir / "n.pt")
    assert same(load_model(workdir / "n.pt", SMALL, state_key="trainer.model").module, model)
    auto = load_model(workdir / "n.pt", SMALL)
    assert same(auto.module, model) and "'trainer.model'" in auto.notes[0]


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("model", "--state-key model: no key 'model'; there is a dict with the keys step, model_state"),
        ("model_state.fc9", "no key 'fc9' under 'model_state'"),
        ("optimizer_state", "--state-key optimizer_state holds a dict with the keys state, param_groups"),
        ("step", "holds an object of type int, not a state_dict (state_dicts are under: model_state)"),
    ],
)
def test_wrong_state_key_is_one_line(workdir: Path, cli, key: str, fragment: str):
    torch.save(
        {"step": 1, "model_state": small().state_dict(), "optimizer_state": optimizer_state(small(1))},
        workdir / "ckpt.pt",
    )
    one_line_error(cli("compress", "ckpt.pt", "--arch", SMALL, "--state-key", key, "-o", "x.sqc"), fragment)


def test_pickled_module_under_a_key_needs_trust(workdir: Path):
    model = small()
    torch.save({"model": model, "epoch": 5}, workdir / "whole.pt")  # as YOLOv5 checkpoints are
    with pytest.raises(ModelLoadError, match=r"holds pickled Python objects \(loading_arches.Small\)"):
        load_model(workdir / "whole.pt")
    loaded = load_model(workdir / "whole.pt", trust_pickle=True)
    assert same(loaded.module, model) and "'model'" in loaded.notes[0]
    assert same(load_model(workdir / "whole.pt", trust_pickle=True, state_key="model").module, model)


def test_checkpoint_without_state_dict_lists_its_keys(workdir: Path):
    torch.save({"step": 1, "optimizer_state": optimizer_state(small(1)), "note": "hi"}, workdir / "o.pt")
    with pytest.raises(ModelLoadError, match="keys step, optimizer_state, note and no state_dict"):
        load_model(workdir / "o.pt", SMALL)


def test_weights_next_to_other_values_at_the_top_level(workdir: Path):
    model = small()
    torch.save({**model.state_dict(), "epoch": 3, "best_acc": 0.91, "args": {"lr": 0.1}}, workdir / "m.pt")
    loaded = load_model(workdir / "m.pt", SMALL)
    assert same(loaded.module, model)
    assert "left out the other entries (epoch, best_acc, args)" in loaded.notes[0]


@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        (nn.DataParallel, "module."),
        (torch.compile, "_orig_mod."),
        (lambda m: nn.DataParallel(torch.compile(m)), "module."),
    ],
)
def test_wrapper_prefixes_are_removed(workdir: Path, wrap: Callable[[nn.Module], nn.Module], prefix: str):
    model = small()
    state = wrap(model).state_dict()
    assert all(k.startswith(prefix) for k in state)
    torch.save({"state_dict": state, "epoch": 1}, workdir / "w.pt")
    loaded = load_model(workdir / "w.pt", SMALL)
    assert same(loaded.module, model)
    removed = [n for n in loaded.notes if "removed the prefix" in n]
    assert removed and f"'{prefix}'" in removed[0]


def test_no_strict_lists_missing_and_unexpected_in_one_note(workdir: Path, cli):
    model = small()
    state = model.state_dict()
    del state["fc2.bias"]
    state["fc3.weight"] = torch.zeros(2, 2)
    torch.save(state, workdir / "partial.pt")
    with pytest.raises(
        ModelLoadError, match=r"1 missing \(fc2.bias\); 1 unexpected \(fc3.weight\) \(--no-strict"
    ):
        load_model(workdir / "partial.pt", SMALL)
    loaded = load_model(workdir / "partial.pt", SMALL, strict=False)
    assert torch.equal(loaded.module.fc1.weight, model.fc1.weight)
    assert not loaded.module.fc2.bias.is_meta  # kept the architecture's initial value
    assert loaded.notes == [
        f"{workdir / 'partial.pt'}: --no-strict: 1 missing (fc2.bias); 1 unexpected (fc3.weight); "
        "missing tensors keep the architecture's initial values"
    ]
    result = cli("inspect", "partial.pt", "--arch", SMALL, "--no-strict")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: " + loaded.notes[0].replace(str(workdir / "partial.pt"), "partial.pt")]


def test_no_strict_still_refuses_a_wrong_shape(workdir: Path, cli):
    state = small().state_dict()
    state["fc1.weight"] = torch.zeros(32, 15)
    torch.save(state, workdir / "bad.pt")
    one_line_error(
        cli("compress", "bad.pt", "--arch", SMALL, "--no-strict", "-o", "x.sqc"),
        "fc1.weight has shape (32, 15), the architecture expects (32, 16)",
    )


def test_tied_weights_stay_tied(workdir: Path):
    import loading_arches

    torch.manual_seed(0)
    model = loading_arches.Tied().eval()
    torch.save(model.state_dict(), workdir / "tied.pt")
    loaded = load_model(workdir / "tied.pt", "loading_arches:Tied").module
    assert loaded.head.weight is loaded.tail.weight
    assert same(loaded, model)


def test_safetensors_state_dict(workdir: Path, cli):
    model = small()
    save_file(model.state_dict(), str(workdir / "m.safetensors"))
    assert same(load_model(workdir / "m.safetensors", SMALL).module, model)
    one_line_error(cli("inspect", "m.safetensors"), "is a safetensors; say which architecture", "--arch")
    one_line_error(cli("inspect", "m.safetensors", "--arch", SMALL, "--state-key", "x"), "does not apply")
    result = cli("compress", "m.safetensors", "--arch", SMALL, "-p", "prune,quant,huffman", "-o", "m.sqc")
    assert result.code == 0, result.err


def test_safetensors_without_the_tied_copy(workdir: Path):
    """save_model stores a tied weight once, as GPT-2's safetensors do: the other name is not missing."""
    import loading_arches

    torch.manual_seed(0)
    model = loading_arches.Tied().eval()
    save_model(model, str(workdir / "t.safetensors"))
    loaded = load_model(workdir / "t.safetensors", "loading_arches:Tied")
    assert loaded.module.head.weight is loaded.module.tail.weight and same(loaded.module, model)


@pytest.mark.parametrize(
    "content",
    [
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}",
        (1 << 40).to_bytes(8, "little") + b'{"a": 1}',
        b'\x40\x00\x00\x00\x00\x00\x00\x00{"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}',
        b"",
    ],
)
def test_malformed_safetensors_is_one_line(workdir: Path, cli, content: bytes):
    (workdir / "bad.safetensors").write_bytes(content or b"\x00" * 3)
    one_line_error(cli("inspect", "bad.safetensors", "--arch", SMALL), "bad.safetensors")


def test_api_takes_state_key_and_reports_notes(workdir: Path):
    torch.save({"net": small().state_dict(), "epoch": 2}, workdir / "c.pt")
    notes: list[str] = []
    sqc.compress(workdir / "c.pt", None, "quant", arch=SMALL, on_note=notes.append)
    assert len(notes) == 1 and "'net'" in notes[0]
    with pytest.warns(UserWarning, match="'net'"):
        sqc.compress(workdir / "c.pt", None, "quant", arch=SMALL)
    assert sqc.inspect(workdir / "c.pt", arch=SMALL, state_key="net")["notes"] == []


# ----------------------------------------------------------------------------------------------------
# .pt2 archives


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Program(nn.Module):
    """Buffers (BatchNorm statistics, an int64 index), an int64 constant and two tied layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("idx", torch.tensor([2, 0, 1]))
        self.head = nn.Linear(3, 3, bias=False)
        self.tail = nn.Linear(3, 3, bias=False)
        self.tail.weight = self.head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.fc(x)) + torch.tensor([1, 2, 3])
        return self.tail(self.head(y))[:, self.idx]


@pytest.fixture
def program(tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = Program().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
    path = tmp_path / "program.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 4),)), str(path))
    return model, path


def rewrite(source: Path, target: Path, edit: Callable[[str, bytes], bytes | None], extra=()) -> Path:
    """Copy an archive member by member; ``edit(name under the root, data)`` replaces or drops one."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        root = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            data = edit(info.filename.partition("/")[2], src.read(info))
            if data is not None:
                out.writestr(info, data)
        for name, data in extra:
            out.writestr(f"{root}/{name}", data)
    return target


def edit_json(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[str, bytes], bytes]:
    def edit(member: str, data: bytes) -> bytes:
        if member != name:
            return data
        document = json.loads(data)
        change(document)
        return json.dumps(document).encode()

    return edit


def saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_ordinary_program_loads_with_buffers_constants_and_ties(program):
    model, path = program
    exported, shapes = read_program(path)
    assert shapes == [(2, 4)]
    module = exported.module(check_guards=False)
    x = torch.randn(2, 4)
    assert torch.equal(module(x), model(x))
    assert module.idx.dtype == torch.int64 and torch.equal(module.idx, model.idx)
    assert torch.equal(module.bn.running_mean, model.bn.running_mean)
    assert next(iter(exported.constants.values())).dtype == torch.int64
    assert module.head.weight.data_ptr() == module.tail.weight.data_ptr()  # one storage, as torch loads it


def test_cli_compresses_and_inspects_a_pt2(tmp_path: Path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 16),)), "seq.pt2")
    assert cli("inspect", "seq.pt2").code == 0
    result = cli("compress", "seq.pt2", "-p", "prune{sparsity=0.5},quant,huffman", "-o", "seq.sqc")
    assert result.code == 0, result.err
    assert load_model(tmp_path / "seq.pt2").source.endswith("(torch.export)")


def plant_sample_inputs(marker: Path) -> Callable[[str, bytes], bytes]:
    return lambda name, data: saved(((Evil(marker),), {})) if name == "data/sample_inputs/model.pt" else data


def plant_weight(marker: Path) -> Callable[[str, bytes], bytes]:
    """fc.weight's raw file replaced by a pickle and flagged use_pickle, as torch writes a tensor subclass."""

    def edit(name: str, data: bytes) -> bytes:
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            config["config"]["fc.weight"]["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/weights/weight_0":
            return saved(Evil(marker))
        return data

    return edit


def plant_constant(marker: Path) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if name == "data/constants/model_constants_config.json":
            config = json.loads(data)
            config["config"]["lifted_tensor_0"]["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/constants/tensor_0":
            return saved(Evil(marker))
        return data

    return edit


def plant_opaque(marker: Path) -> Callable[[str, bytes], bytes]:
    """A script object / opaque constant: torch unpickles it with plain pickle.loads."""

    def edit(name: str, data: bytes) -> bytes:
        if name == "data/constants/model_constants_config.json":
            config = json.loads(data)
            entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
            config["config"]["evil_obj"] = entry
            return json.dumps(config).encode()
        return data

    return edit


PLANTS = {
    "sample inputs": (plant_sample_inputs, "data/sample_inputs/model.pt: holds pickled objects"),
    "use_pickle weight": (plant_weight, "data/weights/weight_0: holds 'fc.weight' as a pickle"),
    "use_pickle constant": (plant_constant, "data/constants/tensor_0: holds 'lifted_tensor_0' as a pickle"),
    "opaque constant": (plant_opaque, "data/constants/opaque_obj_0: holds 'evil_obj' as a pickle"),
}


@pytest.mark.parametrize("kind", list(PLANTS))
@pytest.mark.parametrize("name", ["evil.pt2", "evil.pt"])
def test_malicious_pickle_in_a_pt2_never_runs(
    program, tmp_path: Path, cli, monkeypatch, kind: str, name: str
):
    monkeypatch.chdir(tmp_path)
    _, clean = program
    marker = tmp_path / "pwned"
    plant, fragment = PLANTS[kind]
    extra = [("data/constants/opaque_obj_0", pickle.dumps(Evil(marker)))] if kind == "opaque constant" else []
    evil = rewrite(clean, tmp_path / name, plant(marker), extra)
    for argv in (("inspect", name), ("compress", name, "-o", "x.sqc"), ("inspect", name, "--trust-pickle")):
        one_line_error(cli(*argv), f"{name}: {fragment}")
        assert not marker.exists(), argv
    assert not (tmp_path / "x.sqc").exists()
    # the payload is live: torch's own loader runs it (and then fails, or not, in a way of its own)
    with contextlib.suppress(Exception):
        torch.export.load(str(evil)).module()(torch.randn(2, 4))
    assert marker.exists()


def test_code_in_a_symbolic_size_never_runs(program, tmp_path: Path):
    """sympify evals an expr_str: torch.export.load runs code from a JSON edit, no pickle involved."""
    _, clean = program
    marker = tmp_path / "pwned"

    def change(document: dict[str, Any]) -> None:
        expr = f"Symbol(__import__('os').system('touch {marker}') and 's0')"
        sizes = document["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        sizes[0] = {"as_expr": {"expr_str": expr, "hint": {"as_int": 2}}}

    evil = rewrite(clean, tmp_path / "sym.pt2", edit_json("models/model.json", change))
    with pytest.raises(ModelLoadError, match=r"models/model\.json: symbolic size 'Symbol"):
        load_model(evil)
    assert not marker.exists()
    with contextlib.suppress(Exception):
        torch.export.load(str(evil))
    assert marker.exists()


def test_guards_code_is_never_run(program, tmp_path: Path):
    """module() exec's guards_code, Python source from the JSON; sqc drops it and checks shapes itself."""
    model, clean = program
    marker = tmp_path / "pwned"
    change = lambda d: d.__setitem__("guards_code", [f"__import__('os').system('touch {marker}') == 0"])  # noqa: E731
    evil = rewrite(clean, tmp_path / "guards.pt2", edit_json("models/model.json", change))
    x = torch.randn(2, 4)
    assert torch.equal(load_model(evil).module(x), model(x))
    assert not marker.exists()
    torch.export.load(str(evil)).module()(x)
    assert marker.exists()


def _set_node(document: dict[str, Any], **fields: Any) -> None:
    document["graph_module"]["graph"]["nodes"][0].update(fields)


def _set_input_spec(document: dict[str, Any], key: str, value: Any) -> None:
    document["graph_module"]["signature"]["input_specs"][0]["parameter"][key] = value


def _set_call_signature(document: dict[str, Any], key: str, value: Any) -> None:
    document["graph_module"]["module_call_graph"][0]["signature"][key] = value


IN_SPEC = (
    '[1, {"type": "builtins.tuple", "context": "null", "children_spec": [{"type": "builtins.tuple", '
    '"context": "null", "children_spec": []}, {"type": "builtins.dict", "context": "[\\"a\'] or x #\\"]", '
    '"children_spec": [{"type": null, "context": null, "children_spec": []}]}]}]'
)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: _set_node(d, target="torch.os.system"), "calls 'torch.os.system', which is not an ATen"),
        (lambda d: _set_node(d, target="torch.ops.aten.save.default"), "'torch.ops.aten.save.default'"),
        (lambda d: _set_node(d, target="#triton.kernel"), "calls '#triton.kernel'"),
        (
            lambda d: _set_input_spec(d, "parameter_name", 'fc")+__import__("os").system("x'),
            "is not a dotted name",
        ),
        (lambda d: _set_input_spec(d, "parameter_name", "fc.__class__"), "(no dunders)"),
        (lambda d: _set_call_signature(d, "forward_arg_names", ["x):\n import os #"]), "forward argument"),
        (lambda d: _set_call_signature(d, "in_spec", IN_SPEC), "in in_spec is not a plain identifier"),
        (
            lambda d: d.__setitem__("range_constraints", {"u99999999999": {"min_val": 0, "max_val": 2}}),
            "range",
        ),
    ],
)
def test_program_strings_torch_would_run_are_refused(program, tmp_path: Path, cli, change, fragment: str):
    _, clean = program
    rewrite(clean, tmp_path / "bad.pt2", edit_json("models/model.json", change))
    one_line_error(cli("inspect", tmp_path / "bad.pt2"), "bad.pt2: models/model.json: ", fragment)


def test_huge_declared_input_is_refused_fast_and_small(program, tmp_path: Path, cli):
    _, clean = program

    def change(document: dict[str, Any]) -> None:
        document["graph_module"]["graph"]["tensor_values"]["x"]["sizes"] = [
            {"as_int": 1},
            {"as_int": 1 << 40},
        ]

    huge = rewrite(clean, tmp_path / "huge.pt2", edit_json("models/model.json", change))
    assert huge.stat().st_size < 64 << 10
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    line = one_line_error(
        cli("compress", huge, "-o", tmp_path / "x.sqc"), "declares shape (1, 1099511627776)"
    )
    assert f"at most {MAX_INPUT_ELEMENTS:,} elements" in line
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 << 10  # KiB: < 200 MB more


def test_zip_bomb_is_refused_before_inflating(program, tmp_path: Path, cli):
    _, clean = program
    bomb = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(bomb, "w") as out:
        for info in src.infolist():
            out.writestr(info, src.read(info))
        out.writestr(
            f"{src.namelist()[0].split('/')[0]}/extra/pad", b"\0" * (128 << 20), zipfile.ZIP_DEFLATED
        )
    assert bomb.stat().st_size < 1 << 20
    one_line_error(cli("inspect", bomb), "a zip bomb?")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda n, d: b"[1, 2" if n == "models/model.json" else d, "models/model.json: is not valid JSON"),
        (lambda n, d: None if n == "models/model.json" else d, "has no exported program models/model.json"),
        (lambda n, d: d[:7] if n == "data/weights/weight_0" else d, "holds 7 bytes, not a whole number"),
        (
            lambda n, d: d[:8] if n == "data/weights/weight_0" else d,
            "does not fit the 2 elements of its file",
        ),
        (lambda n, d: b"2" if n == "archive_version" else d, "archive version '2'"),
    ],
)
def test_damaged_archive_is_one_line(program, tmp_path: Path, cli, edit, fragment: str):
    _, clean = program
    rewrite(clean, tmp_path / "d.pt2", edit)
    one_line_error(cli("inspect", tmp_path / "d.pt2"), fragment)


class Dynamic(nn.Module):
    """A dynamic batch (a derived dim), a keyword input, torch.cond, .item() with checks, no_grad."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, *, n: torch.Tensor) -> torch.Tensor:
        k = n.max().item()
        torch._check(k >= 1)
        torch._check(k <= 8)
        with torch.no_grad():
            z = self.fc(x)
        h = torch.cond(z.sum() > 0, lambda t: t * 2, lambda t: t - 1, (z,))
        return h[:, :k].sum(1) * (x.shape[0] // 2) + x.mean() ** 2


def test_dynamic_program_with_symbols_and_subgraphs_loads(tmp_path: Path):
    torch.manual_seed(0)
    model = Dynamic().eval()
    batch = torch.export.Dim("batch", min=2, max=64)
    args, kwargs = (torch.randn(4, 8),), {"n": torch.tensor([3, 4])}
    exported = torch.export.export(model, args, kwargs, dynamic_shapes={"x": {0: 2 * batch}, "n": None})
    torch.export.save(exported, str(tmp_path / "dyn.pt2"))
    program, shapes = read_program(tmp_path / "dyn.pt2")
    assert shapes == [(4, 8), (2,)]
    x, n = torch.randn(6, 8), torch.tensor([5, 1])
    assert torch.allclose(program.module(check_guards=False)(x, n=n), model(x, n=n))


@pytest.mark.parametrize(
    "expr",
    [
        "s0",
        "4*s77",
        "Mul(Integer(4), Symbol('s77', positive=True, integer=True))",
        "GreaterThan(Symbol('u0', integer=True), Integer(1))",
        "s0**2 + Max(s1, 2) - FloorDiv(s1, 2)",
        "Pow(Symbol('s0', integer=True), Integer(-1))",
        "Float('1.5', precision=53)*s0",
        "(s0 >= 2) & Eq(Mod(s0, 2), 0)",
    ],
)
def test_symbolic_sizes_torch_writes_are_read(expr: str):
    from sqc.frontend.pt2 import _check_expr

    def refuse(message: str) -> None:
        raise AssertionError(message)

    _check_expr(expr, refuse)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "Symbol('s0').__class__",
        "Symbol('s0', **{'positive': True})",
        "Symbol('__import__')",
        "Integer('5')",
        "eval('1')",
        "[s0][0]",
        "s0 if s1 else s2",
        "2**2**64",
        "(2**64)**64",
        "Pow(Pow(Integer(2), Integer(64)), Integer(64))",
        "LShift(Integer(1), Integer(1000000))",
        "PowByNatural(Integer(2), s0)",
        "s0 ^ 9999999",
        "99999999999999999999999*s0",
        "Float('1e99999999')",
        "\uff530",  # a fullwidth s0: Python folds it to s0, sympy does not
        "s0" + "+s0" * 5000,
    ],
)
def test_symbolic_sizes_sympify_would_run_are_refused(expr: str):
    from sqc.frontend.pt2 import _check_expr

    def refuse(message: str) -> None:
        raise ModelLoadError(message)

    with pytest.raises(ModelLoadError, match="symbolic size"):
        _check_expr(expr, refuse)
