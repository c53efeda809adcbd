"""Hostile inputs, round two (issue 15): names that cannot alias, every error one line, outputs that
never clobber.

Every file here is built by the test, through sqc's own writer (``container.assemble`` via
``tests/fuzz/crafted.py``) or torch/numpy, with valid checksums: the attacks go through structure, not
through bytes the CRCs would catch.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import resource
import select
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import sqc
from sqc.compiler.pass_base import PassContext
from sqc.compiler.pipeline import Pipeline
from sqc.display import SafeConsole, shown
from sqc.errors import SqcError, SqcFormatError
from sqc.formats import container
from sqc.frontend.trace import trace
from sqc.ir import names as name_rule
from sqc.ir.records import MAX_INPUT_ELEMENTS
from sqc.outputs import write_atomic, write_files

TESTS = Path(__file__).parent
ROOT = TESTS.parent
MNIST = ROOT / "examples" / "mnist_test_1k.npz"
sys.path.insert(0, str(TESTS / "fuzz"))

from crafted import aliased_names  # noqa: E402
from mutate import deflate, inflate, join, split  # noqa: E402


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def tiny_ir(pipeline: str = "prune{sparsity=0.5},quant{bits=4},huffman"):
    torch.manual_seed(0)
    ir = trace(Tiny().eval(), [(1, 8)])
    Pipeline.parse(pipeline).run(ir, PassContext())
    return ir


def with_names(tensor_names: list[str]) -> bytes:
    """A valid file whose graph adds up one stored scalar per name: only the names are hostile."""
    return aliased_names(tensor_names)


def load(data: bytes):
    model = container.model_from_layout(container.read_layout(data), "test")
    model.verify()
    return model


def refused(data: bytes, match: str) -> SqcFormatError:
    with pytest.raises(SqcFormatError, match=match) as info:
        load(data)
    assert info.value.offset is not None, str(info.value)
    with pytest.raises(SqcFormatError):  # sqc.load's path (no IR records) refuses it as well
        container.module_from_bytes(data, "test")
    return info.value


# --------------------------------------------------------------------------- 1. names that cannot alias


REFUSED_NAMES = {
    "nfkc-ligature": ("\ufb01.weight", "not an ASCII identifier"),  # Python reads ﬁ as fi
    "fullwidth": ("\uff46c1.weight", "not an ASCII identifier"),
    "hyphen": ("a-b.weight", "not an ASCII identifier"),
    "space": ("a b.weight", "not an ASCII identifier"),
    "dunder": ("__class__.weight", "starts with '__'"),
    "dunder-leaf": ("fc.__dict__", "starts with '__'"),
    "mangled": ("__w", "starts with '__'"),
    "keyword": ("class.weight", "Python keyword"),
    "method": ("forward", "attribute of torch's nn.Module"),
    "nested-method": ("fc.register_buffer", "attribute of torch's nn.Module"),
    "module-state": ("fc._parameters", "attribute of torch's nn.Module"),
    "training-flag": ("training", "attribute of torch's nn.Module"),
    "graphmodule": ("graph.weight", "attribute of torch's fx.GraphModule"),
    "graphmodule-code": ("code", "attribute of torch's fx.GraphModule"),
    "empty-part": ("a..b", "empty part"),
    "leading-digit": ("1a.weight", "not an ASCII identifier"),
    "too-long": ("w" * 1025, "length"),
    "too-deep": (".".join(["m"] * 65), "more than 64 parts"),
}


@pytest.mark.parametrize("label", list(REFUSED_NAMES))
def test_reader_refuses_a_name_that_could_alias(label):
    name, reason = REFUSED_NAMES[label]
    error = refused(with_names([name]), "tensor name")
    assert reason in str(error)


@pytest.mark.parametrize(
    "names",
    [["layers.0.weight", "layers.1.weight"], ["0.weight"], ["m.graph", "m.code.meta"], ["_w", "fc1.weight"]],
    ids=["sequential", "sequential-root", "graphmodule-words-below-the-root", "underscore"],
)
def test_names_real_models_use_are_kept(names):
    model = load(with_names(names))
    assert list(model.tensors) == names
    assert [name for name, _ in model.graph_module.named_parameters()] == names


@pytest.mark.parametrize(
    "names, fragment",
    [
        (["a.b_c", "a_b.c"], "becomes the identifier 'a_b_c', as 'a.b_c' does"),
        (["a_b.weight", "a.b_weight"], "becomes the identifier 'a_b_weight'"),
        (["fc", "fc.weight"], "it is a tensor and also holds 'fc.weight'"),
    ],
    ids=["c-identifier", "c-identifier-2", "tensor-and-module"],
)
def test_names_that_meet_after_a_targets_mapping_are_refused(names, fragment):
    error = refused(with_names(names), "tensor name")
    assert fragment in str(error)


def test_the_nfkc_pair_cannot_run_as_one_weight():
    """The attack of the issue: ``ﬁ.weight`` and ``fi.weight`` are two tensors to inspect and the
    verifier, but Python's source reads both as ``fi``: the model would compute with other weights."""
    names = ["\ufb01.weight", "fi.weight"]
    assert eval("(lambda fi: \ufb01)(7)") == 7  # what fx-generated source would do
    refused(with_names(names), "not an ASCII identifier")


def test_writer_refuses_what_the_reader_refuses(tmp_path):
    ir = tiny_ir()
    state = ir.tensors.pop("fc1.weight")
    ir.tensors["fc1-x.weight"] = state  # behind the IR's back: the writer checks again
    with pytest.raises(SqcError, match="cannot be stored: part 'fc1-x' is not an ASCII identifier"):
        container.serialize(ir)
    ir.tensors.pop("fc1-x.weight")
    ir.tensors["fc2_bias"] = state  # fc2.bias is already there: one C identifier for two tensors
    with pytest.raises(SqcError, match="becomes the identifier 'fc2_bias'"):
        container.save(ir, tmp_path / "x.sqc")
    assert not (tmp_path / "x.sqc").exists()


class Ligature(nn.Module):
    """Two distinct submodules, ``ﬁ`` and ``fi``: legal in PyTorch (``add_module`` takes any string),
    one attribute once Python reads the generated source."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("\ufb01", nn.Linear(8, 4))
        self.fi = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "\ufb01")(x) + self.fi(x)  # noqa: B009 (self.ﬁ would read self.fi)


def test_the_ir_refuses_a_model_whose_names_could_alias(tmp_path):
    with pytest.raises(SqcError, match=r"tensor name '\\ufb01.weight': part 'ﬁ' is not an ASCII identifier"):
        sqc.compress(Ligature(), [(1, 8)], "quant")
    ir = tiny_ir()
    with pytest.raises(SqcError, match="not an ASCII identifier"):  # the check is the IR's, at construction
        sqc.ir.records.CompressedModel(
            ir.graph_module, {"\u00fcber.weight": ir.tensors["fc1.weight"]}, ir.inputs
        )


def test_c_and_hls_identifiers_come_from_the_shared_mapping():
    from sqc.targets import c, hls

    assert (
        c._ident("layers.0.weight") == "t_" + name_rule.identifier("layers.0.weight") == "t_layers_0_weight"
    )
    assert hls._ident("conv1") == name_rule.identifier("conv1") == "conv1"
    assert name_rule.identifier("a-b.c") == name_rule.identifier("a_b.c")  # why the clash check exists


def test_targets_refuse_to_emit_names_that_clash(tmp_path):
    """A program built behind the reader's back (two weights, one C identifier) is refused before any
    file is written: the C project would not compile while ``lower`` reported success."""
    from sqc.targets import c, hls
    from sqc.targets.legalize import LowerOptions, legalize

    calib = tmp_path / "calib.npz"
    np.savez(calib, x_val=np.random.default_rng(0).random((20, 8), dtype=np.float32), y_val=np.zeros(20, int))
    program = legalize(tiny_ir(), calib, LowerOptions(calib_samples=20))
    first, second = program.weights
    first.name, second.name = "a.b_weight", "a_b.weight"
    with pytest.raises(
        SqcError, match=re.escape("target c: tensor name 'a_b.weight': it becomes the identifier")
    ):
        c.write_project(program, tmp_path / "c")
    with pytest.raises(SqcError, match=re.escape("target hls: tensor name 'a_b.weight'")):
        hls.write_project(program, tmp_path / "hls")
    assert not (tmp_path / "c").exists() and not (tmp_path / "hls").exists()


def test_c_emitter_refuses_two_objects_with_one_identifier():
    from sqc.targets.c import _unique_declarations

    _unique_declarations(["static const int8_t t_a_book[1] = {0};", "static const int8_t t_b_book[1] = {0};"])
    with pytest.raises(SqcError, match="both be named t_a_book"):
        _unique_declarations(["static const int8_t t_a_book[1] = {0};", "static const int16_t t_a_book[1];"])


def test_reserved_attribute_lists_cover_the_installed_torch():
    """The lists are fixed (a file's validity must not depend on the torch installed); this fails when
    a torch upgrade adds an attribute that a tensor name could then shadow."""
    module = {n for n in set(dir(nn.Module)) | set(vars(nn.Module())) if not n.startswith("__")}
    root = set(dir(fx.GraphModule)) | set(vars(fx.GraphModule(nn.Module(), fx.Graph())))
    root = {n for n in root if not n.startswith("__")} - module
    assert module <= name_rule.MODULE_ATTRIBUTES, sorted(module - name_rule.MODULE_ATTRIBUTES)
    assert root <= name_rule.ROOT_ATTRIBUTES | name_rule.MODULE_ATTRIBUTES, sorted(
        root - name_rule.ROOT_ATTRIBUTES
    )


# --------------------------------------------------------------------------- 2. every error one line


ARCH = ("--arch", "sqc_test_models:Small")


def one_line_error(result, fragment: str) -> str:
    assert result.code == 1, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sqc: error:"), result.err
    assert "Traceback" not in result.err + result.out and "\x1b" not in result.err
    assert fragment in lines[0], lines[0]
    return lines[0]


RECIPES = {
    "bits-inf": ('[[pass]]\nname = "quant"\nbits = inf\n', "option bits: inf is not an integer"),
    "bits-nan": ('[[pass]]\nname = "quant"\nbits = nan\n', "option bits: nan is not an integer"),
    "bits-list": ('[[pass]]\nname = "quant"\nbits = [1]\n', "option bits: [1] is not an integer"),
    "bits-fraction": ('[[pass]]\nname = "quant"\nbits = 4.5\n', "option bits: 4.5 is not an integer"),
    "bits-date": ('[[pass]]\nname = "quant"\nbits = 1979-05-27\n', "is not an integer"),
    "sparsity-bool": ('[[pass]]\nname = "prune"\nsparsity = true\n', "option sparsity: True is not a number"),
    "sparsity-table": ('[[pass]]\nname = "prune"\nsparsity = {a = 1}\n', "is not a number"),
    "per-layer-list": ('[[pass]]\nname = "share"\nper_layer = {fc1 = [1]}\n', "[1] for layer fc1 is not a"),
    "per-layer-inf": ('[[pass]]\nname = "prune"\nper_layer = {fc1 = inf}\n', "not a finite number"),
    "per-layer-array": ('[[pass]]\nname = "prune"\nper_layer = [1, 2]\n', "is not a layer:value table"),
    "layers-list": ('[[pass]]\nname = "prune"\nlayers = ["fc1"]\n', "option layers: ['fc1'] is not text"),
    "pass-not-a-table": ("pass = [1, 2]\n", "pass #1 is not a table"),
    "pass-a-string": ('pass = "prune"\n', "needs one or more [[pass]] tables"),
    "not-utf8": (b"\xff\xfe[[pass]]", "not a valid TOML recipe"),
    "compress-table": ('compress = 3\n[[pass]]\nname = "prune"\n', "[compress] must be a table"),
}


@pytest.mark.parametrize("label", list(RECIPES))
def test_recipe_type_confusions_are_one_line(cli, workdir, label):
    text, fragment = RECIPES[label]
    recipe = workdir / "r.toml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    one_line_error(cli("compress", "small.pt", *ARCH, "--recipe", "r.toml", "-o", "x.sqc"), fragment)
    assert not (workdir / "x.sqc").exists()


def test_a_directory_where_a_file_belongs(cli, workdir):
    (workdir / "recipe.toml").mkdir()
    (workdir / "d.sqc").mkdir()
    one_line_error(
        cli("compress", "small.pt", *ARCH, "--recipe", "recipe.toml", "-o", "x.sqc"), "is a directory"
    )
    one_line_error(cli("inspect", "d.sqc"), "d.sqc: is a directory")
    one_line_error(cli("compress", "small.pt", *ARCH, "-o", "d.sqc"), "d.sqc: is a directory")
    with pytest.raises(SqcError, match="is a directory"):
        sqc.inspect(workdir / "d.sqc")


def edit_file(data: bytes, *, graph=None, report=None) -> bytes:
    """``data`` with its graph and/or report JSON changed by the given functions (CRCs fixed)."""
    parsed = split(data)
    assert parsed is not None
    for index, edit in ((0, graph), (-1, report)):
        if edit is not None:
            doc = inflate(parsed.sections[index][3])
            edit(doc)
            parsed.sections[index][3] = deflate(doc, parsed.sections[index][1])
    return join(parsed)


HOSTILE_TEXT = (
    "[/x] [link=https://example.com]click[/link] :thumbs_up: "
    "\x1b[2J\x1b]8;;https://e.com\x07x\x1b]8;;\x07 \ud800"
)


def test_file_text_is_printed_without_markup_or_escape_sequences(cli, workdir):
    """A pipeline, a layer name and a value in the report that carry rich markup, terminal escape
    sequences (clear screen, an OSC 8 hyperlink) and a lone surrogate: printed literally, escaped."""
    ir = tiny_ir()

    def report(doc):
        doc[0]["stats"]["metric_reference"] = HOSTILE_TEXT  # text where inspect formats a number
        doc[0]["stats"]["budget"] = [1][0]
        doc[0]["layers"][HOSTILE_TEXT] = {"target": HOSTILE_TEXT, "predicted_drop": 0.5, "bytes_after": 1e308}
        doc[0]["diagnostics"] = [HOSTILE_TEXT]

    def graph(doc):
        doc["pipeline"] = HOSTILE_TEXT

    (workdir / "h.sqc").write_bytes(edit_file(container.serialize(ir), graph=graph, report=report))
    result = cli("inspect", "h.sqc")
    assert result.code == 0, result.err
    for raw in ("\x1b", "\x07", "\ud800", "\U0001f44d"):
        assert raw not in result.out + result.err
    assert "pipeline: [/x] [link=https://example.com]click[/link] :thumbs_up: \\x1b[2J\\x1b]8;;" in result.out
    assert "\\ud800" in result.out and "allocation within budget 1" in result.out
    assert cli("inspect", "h.sqc", "--json").code == 0


def test_an_error_quoting_input_stays_one_line_and_escaped(cli, workdir):
    """An error message quoting text from a file (here an option name in a recipe, printed as it is)
    stays one line and carries no escape sequence: the CLI escapes every error line it prints."""
    (workdir / "r.toml").write_text('[[pass]]\nname = "prune"\n"\\u001b]0;owned\\u0007x\\nline" = 1\n')
    line = one_line_error(
        cli("compress", "small.pt", *ARCH, "--recipe", "r.toml", "-o", "x.sqc"),
        "unknown option of pass prune",
    )
    assert "option \\x1b]0;owned\\x07x line:" in line  # the line break became a space
    one_line_error(cli("compress", "small.pt", *ARCH, "-p", "\x1b[31mprune\nx", "-o", "x.sqc"), "pass name")
    assert shown("a\x1b[31m\nb\u202e") == "a\\x1b[31m\\x0ab\\u202e"


def test_safe_console_never_reads_markup(capsys):
    from rich.table import Table

    console = SafeConsole(width=200)
    table = Table(title="[/bad] title")
    table.add_column("[/col]")
    table.add_row("[link=x]cell[/link] \x1b[31m")
    console.print(table)
    console.print("[bold]not bold[/] :smile:")
    out = capsys.readouterr().out
    assert "[/bad] title" in out and "[link=x]cell[/link] \\x1b[31m" in out
    assert "[bold]not bold[/] :smile:" in out and "\x1b" not in out


@pytest.mark.parametrize(
    "label, value, fragment",
    [
        ("list", [1, 2], "stats entry 'sparsity' = [1, 2]"),
        ("object", {"a": 1}, "stats entry 'sparsity' = {'a': 1}"),
        ("huge", 10**30, "stats entry 'sparsity' = 1000000000000000000000000000000"),
        ("long-text", "x" * 5000, "is not a number or short text"),
        ("null", None, "stats entry 'sparsity' = None"),
    ],
)
def test_wrongly_typed_report_values_are_refused(cli, workdir, label, value, fragment):
    def report(doc):
        doc[0]["stats"]["sparsity"] = value

    data = edit_file(container.serialize(tiny_ir()), report=report)
    error = refused(data, "report section is malformed")
    assert fragment in str(error)
    (workdir / "r.sqc").write_bytes(data)
    one_line_error(cli("inspect", "r.sqc"), fragment)


def test_report_layers_are_checked_like_stats():
    def report(doc):
        doc[0]["layers"]["fc1.weight"]["density"] = {"nested": [1]}

    refused(edit_file(container.serialize(tiny_ir()), report=report), "layer 'fc1.weight': 'density'")


def test_a_pass_reporting_a_list_cannot_write_a_file():
    ir = tiny_ir()
    ir.report[0].stats["curve"] = [0.1, 0.2]  # type: ignore[assignment]
    with pytest.raises(SqcError, match="reported what a file cannot hold: stats entry 'curve'"):
        container.serialize(ir)


def small_data(**arrays) -> dict[str, object]:
    rng = np.random.default_rng(0)
    base = {"x_val": rng.random((20, 16), dtype=np.float32), "y_val": rng.integers(0, 4, 20)}
    return {**base, **arrays}


def bomb_npz(path: Path, megabytes: int) -> None:
    """An .npz whose x_val inflates to ``megabytes`` MiB of zeros (~1000:1), streamed: no big buffer."""
    rows = (megabytes << 20) // (16 * 4)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_val.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": (rows, 16)}
            )
            for _ in range(megabytes):
                member.write(bytes(1 << 20))
        labels = zipfile.ZipInfo("y_val.npy")
        import io

        buffer = io.BytesIO()
        np.save(buffer, np.zeros(rows, dtype=np.int64)[:1])
        archive.writestr(labels, buffer.getvalue())


def lying_npz(path: Path) -> None:
    """An .npz whose x_val header declares 2^40 rows over 64 bytes of data: numpy would allocate the
    header's shape before reading."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40, 16)}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_val.npy", header.getvalue() + bytes(64))
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(1, dtype=np.int64))
        archive.writestr("y_val.npy", buffer.getvalue())


def save_pt(**tensors: torch.Tensor):
    return lambda path: torch.save(tensors, path)


def save_npz(**arrays: np.ndarray):
    return lambda path: np.savez(path, **small_data(**arrays))


LABELS = torch.zeros(20, dtype=torch.int64)
DATA_CASES = {
    "feature-width": (
        ".npz",
        save_npz(x_val=np.zeros((20, 10), np.float32)),
        "cannot take x_val samples of shape (10,)",
    ),
    "train-width": (
        ".npz",
        save_npz(x_train=np.zeros((5, 12), np.float32), y_train=np.zeros(5, np.int64)),
        "x_train samples have shape (12,) but x_val samples (16,)",
    ),
    "uint64-labels": (
        ".npz",
        save_npz(y_val=np.arange(20, dtype=np.uint64)),
        "y_val has dtype uint64, expected",
    ),
    "uint32-labels": (
        ".pt",
        save_pt(x_val=torch.rand(20, 16), y_val=LABELS.to(torch.uint32)),
        "dtype uint32",
    ),
    "sparse": (".pt", save_pt(x_val=torch.zeros(20, 16).to_sparse(), y_val=LABELS), "a sparse_coo tensor"),
    "meta": (
        ".pt",
        save_pt(x_val=torch.empty(20, 16, device="meta"), y_val=LABELS),
        "a meta tensor (no data)",
    ),
    "stride-0": (
        ".pt",
        save_pt(x_val=torch.zeros(1).expand(1 << 24, 16), y_val=LABELS[:1].expand(1 << 24)),
        "x_val is a view of shape (16777216, 16) over 4 bytes (strides (0, 0))",
    ),
    "overlapping": (
        ".pt",
        save_pt(
            x_val=torch.zeros((1 << 16) + 15).as_strided((1 << 16, 16), (1, 1)),
            y_val=LABELS[:1].expand(1 << 16),
        ),
        "it would expand to 4,194,304 bytes",
    ),
    "deflate-bomb": (".npz", lambda path: bomb_npz(path, 128), "a decompression bomb?"),
    "lying-header": (".npz", lying_npz, "x_val declares shape (1099511627776, 16) of float32"),
}


@pytest.mark.parametrize("label", list(DATA_CASES))
def test_hostile_data_files_are_one_line(cli, workdir, label):
    suffix, make, fragment = DATA_CASES[label]
    path = workdir / f"d{suffix}"
    make(path)
    assert path.stat().st_size < 1 << 20
    started = time.monotonic()
    one_line_error(
        cli("compress", "small.pt", *ARCH, "--data", path.name, "-p", "prune", "-o", "x.sqc"), fragment
    )
    assert time.monotonic() - started < 10 and not (workdir / "x.sqc").exists()


def test_stride_zero_file_is_small_and_would_be_huge(workdir):
    torch.save({"x_val": torch.zeros(1).expand(1 << 24, 64)}, workdir / "s.pt")
    assert (workdir / "s.pt").stat().st_size < 2048  # 1.9 KB standing for 4 GiB of float32


@pytest.mark.parametrize("shape", ["100000,100000,100000", "1,70000000000", "1,268435457"])
def test_a_huge_input_shape_is_one_line(cli, workdir, shape):
    one_line_error(
        cli("compress", "small.pt", *ARCH, "--input-shape", shape, "-o", "x.sqc"),
        f"more than {MAX_INPUT_ELEMENTS:,}",
    )
    one_line_error(
        cli("inspect", "small.pt", *ARCH, "--input-shape", shape), f"more than {MAX_INPUT_ELEMENTS:,}"
    )
    # several inputs count together
    half = f"1,{MAX_INPUT_ELEMENTS // 2 + 1}"
    one_line_error(
        cli("inspect", "small.pt", *ARCH, "--input-shape", half, "--input-shape", half), "elements"
    )


def run_sqc(*argv: str, cwd: Path, file_limit: int | None = None) -> subprocess.CompletedProcess:
    """The installed CLI in a subprocess, optionally with RLIMIT_FSIZE (a write past it fails with
    EFBIG: a full disk without filling one)."""

    def limit() -> None:
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "sqc", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(TESTS / "models_pkg")},
    )


def test_a_full_disk_is_one_line_and_leaves_the_old_file(workdir):
    (workdir / "x.sqc").write_bytes(b"old contents")
    result = run_sqc("compress", "small.pt", *ARCH, "-o", "x.sqc", "--force", cwd=workdir, file_limit=64)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "sqc: error: x.sqc: cannot write it (File too large); it is left as it was", (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert (workdir / "x.sqc").read_bytes() == b"old contents"
    assert not [p for p in workdir.iterdir() if p.name.startswith(".x.sqc.")]  # no temporary file left


def test_enospc_while_writing(tmp_path, monkeypatch):
    target = tmp_path / "m.sqc"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SqcError, match=r"m.sqc: cannot write it \(No space left on device\)"):
        write_atomic(target, b"new", force=True)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.sqc"]


# --------------------------------------------------------------------------- 3. outputs that never clobber


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_equal_to_an_input_is_refused(cli, workdir):
    before = sha(workdir / "small.pt")
    one_line_error(cli("compress", "small.pt", *ARCH, "-o", "small.pt", "--force"), "is also an input")
    os.link(workdir / "small.pt", workdir / "hard.pt")
    one_line_error(cli("compress", "small.pt", *ARCH, "-o", "hard.pt", "--force"), "is also an input")
    assert sha(workdir / "small.pt") == before
    np.savez(workdir / "data.npz", **small_data())
    one_line_error(
        cli("compress", "small.pt", *ARCH, "--data", "data.npz", "-p", "prune", "-o", "data.npz", "--force"),
        "data.npz: is also an input",
    )
    assert cli("compress", "small.pt", *ARCH, "-o", "s.sqc").code == 0
    sqc_before = sha(workdir / "s.sqc")
    one_line_error(cli("decompress", "s.sqc", "-o", "s.sqc", "--force"), "is also an input")
    one_line_error(cli("lower", "s.sqc", "--target", "pytorch", "-o", "s.sqc", "--force"), "is also an input")
    assert sha(workdir / "s.sqc") == sqc_before


def test_sensitivity_picture_is_an_output_like_any_other(cli, workdir):
    """``sqc sensitivity`` replaces its own earlier picture, but never an input, a link or a FIFO, and
    it says so before measuring anything."""
    np.savez(workdir / "d.npz", **small_data())
    run = ("sensitivity", "small.pt", *ARCH, "--data", "d.npz", "--sparsities", "0.5", "--bits", "4")
    before = sha(workdir / "small.pt")
    one_line_error(cli(*run, "--png", "small.pt"), "small.pt: is also an input")
    one_line_error(cli(*run, "--png", "d.npz"), "d.npz: is also an input")
    (workdir / "link.png").symlink_to(workdir / "small.pt")
    one_line_error(cli(*run, "--png", "link.png"), "link.png: is a symbolic link")
    assert sha(workdir / "small.pt") == before


def test_symlinks_are_never_written_through(cli, workdir):
    outside = workdir / "outside.txt"
    outside.write_text("precious")
    (workdir / "link.sqc").symlink_to(outside)
    (workdir / "dangling.sqc").symlink_to(workdir / "nowhere.sqc")
    for name in ("link.sqc", "dangling.sqc"):
        one_line_error(
            cli("compress", "small.pt", *ARCH, "-o", name), "is a symbolic link, not a regular file"
        )
        one_line_error(cli("compress", "small.pt", *ARCH, "-o", name, "--force"), "is a symbolic link")
        assert (workdir / name).is_symlink()
    assert outside.read_text() == "precious" and not (workdir / "nowhere.sqc").exists()


def test_fifos_and_devices_are_never_replaced(cli, workdir):
    fifo = workdir / "pipe.sqc"
    os.mkfifo(fifo)
    one_line_error(
        cli("compress", "small.pt", *ARCH, "-o", "pipe.sqc", "--force"), "is a FIFO, not a regular file"
    )
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert cli("compress", "small.pt", *ARCH, "-o", "s.sqc").code == 0
    one_line_error(cli("decompress", "s.sqc", "-o", "pipe.sqc", "--force"), "is a FIFO")
    with pytest.raises(SqcError, match="is a character device"):
        write_atomic(Path(os.devnull), b"x", force=True)  # refused on the lstat, before any write


def test_written_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.bin", b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o644  # not mkstemp's 0600
        (tmp_path / "kept.bin").write_bytes(b"old")
        os.chmod(tmp_path / "kept.bin", 0o640)
        write_atomic(tmp_path / "kept.bin", b"new", force=True)
        assert stat.S_IMODE(os.stat(tmp_path / "kept.bin").st_mode) == 0o640
    finally:
        os.umask(old)


PROJECT = {"model.c": b"new model.c\n" * 1000, "model.h": b"new model.h\n", "Makefile": b"new Makefile\n"}


def test_project_files_are_checked_before_any_is_written(tmp_path):
    out = tmp_path / "proj"
    out.mkdir()
    outside = tmp_path / "outside.c"
    outside.write_text("precious")
    (out / "model.h").write_text("old header")
    (out / "model.c").symlink_to(outside)
    with pytest.raises(SqcError, match=re.escape("proj/model.c: is a symbolic link")):
        write_files(out, PROJECT, force=True)
    assert outside.read_text() == "precious" and (out / "model.h").read_text() == "old header"
    assert not (out / "Makefile").exists()


@pytest.mark.skipif(not MNIST.exists(), reason="needs examples/mnist_test_1k.npz")
def test_lower_never_follows_a_symlink_inside_the_output_directory(cli, workdir):
    """The issue's case: ``lower --force`` wrote through ``out/model.c -> ../outside.c``."""
    torch.manual_seed(0)
    ir = trace(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval(), [(1, 1, 28, 28)])
    Pipeline.parse("quant{bits=8}").run(ir, PassContext())
    container.save(ir, workdir / "m.sqc")
    out = workdir / "out"
    assert cli("lower", "m.sqc", "--target", "c", "-o", "out", "--calib", str(MNIST)).code == 0
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    outside = workdir / "outside.c"
    outside.write_text("precious")
    (out / "model.c").unlink()
    (out / "model.c").symlink_to(outside)
    one_line_error(
        cli("lower", "m.sqc", "--target", "c", "-o", "out", "--calib", str(MNIST), "--force"),
        "out/model.c: is a symbolic link",
    )
    assert outside.read_text() == "precious"
    (out / "model.c").unlink()
    (out / "model.h").unlink()
    os.mkfifo(out / "model.h")  # both targets write a model.h
    one_line_error(
        cli("lower", "m.sqc", "--target", "hls", "-o", "out", "--calib", str(MNIST), "--force"), "is a FIFO"
    )
    assert {p.name for p in out.iterdir()} == set(good) - {"model.c"}  # nothing of the HLS project written
    (out / "model.h").unlink()
    assert cli("lower", "m.sqc", "--target", "c", "-o", "out", "--calib", str(MNIST), "--force").code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == good  # rewritten whole, same bytes
    one_line_error(
        cli("lower", "m.sqc", "--target", "c", "-o", "m.sqc", "--calib", str(MNIST)), "is also an input"
    )


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the write is killed in a forked child")


@needs_fork
def test_sigkill_mid_project_leaves_every_file_whole(tmp_path):
    """A project rewritten with ``--force`` and killed in the middle of its second file: every file is
    the old one or the new one, whole (``lower --force`` used to truncate ``model.c`` in place)."""
    out = tmp_path / "proj"
    out.mkdir()
    old = {name: f"old {name}\n".encode() for name in PROJECT}
    for name, data in old.items():
        (out / name).write_bytes(data)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)
            real_fdopen, opened = os.fdopen, []

            class HalfThenStop:
                def __init__(self, handle):
                    self.handle = handle

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return self.handle.__exit__(*exc)

                def write(self, blob):
                    self.handle.write(blob[: len(blob) // 2])
                    self.handle.flush()
                    os.fsync(self.handle.fileno())
                    os.write(ready_w, b"ready")
                    time.sleep(120)

                def __getattr__(self, name):
                    return getattr(self.handle, name)

            def fdopen(fd, mode):
                opened.append(fd)
                handle = real_fdopen(fd, mode)
                return HalfThenStop(handle) if len(opened) == 2 else handle

            os.fdopen = fdopen
            write_files(out, PROJECT, force=True)
        finally:
            os._exit(3)
    os.close(ready_w)
    try:
        ready, _, _ = select.select([ready_r], [], [], 60)
        assert ready and os.read(ready_r, 5) == b"ready", "the child never reached the second file"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
    names = list(PROJECT)
    assert (out / names[0]).read_bytes() == PROJECT[names[0]]  # written before the kill: new, whole
    for name in names[1:]:
        assert (out / name).read_bytes() == old[name]  # not reached, or caught mid-write: old, whole
    temps = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len(temps) == 1 and temps[0].startswith(f".{names[1]}.")  # all a crash can leave behind


def test_a_fifo_or_device_as_input_is_refused_without_waiting(cli, tmp_path):
    """open() on a FIFO waits for a writer and a device reads forever: inputs are checked first."""
    fifo = tmp_path / "model.sqc"
    os.mkfifo(fifo)
    started = time.monotonic()
    for argv in (
        ("inspect", fifo),
        ("decompress", fifo, "-o", tmp_path / "x.pt"),
        ("compress", fifo, "-o", tmp_path / "y.sqc"),
        ("compress", "nope.pt", "--recipe", fifo, "-o", tmp_path / "z.sqc"),
        ("compress", "nope.pt", "--recipe", "/dev/zero", "-o", tmp_path / "z.sqc"),
    ):
        result = cli(*argv)
        assert result.code == 1, argv
        assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err, result.err
    assert time.monotonic() - started < 30
