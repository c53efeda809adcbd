"""Pass instrumentation and the IR's text form: hooks around passes, --time-passes, --print-ir-after,
inspect --ir, and the CLI conventions (-h, --version, zoo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import sqc
from sqc.compiler.instrument import PassInstrument, PassTimer, PrintIR, parse_print_selector
from sqc.errors import SqcError
from sqc.ir.text import ir_text

ARCH = ("--arch", "sqc_test_models:Small")


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids))


@pytest.mark.parametrize(
    "pipeline",
    [
        "prune{sparsity=0.7},share{bits=4},huffman",
        "prune{sparsity=0.5 scope=layer},quant{bits=6 granularity=channel},rans",
        "quant{qp=-16},rans",
        "prune-channels{ratio=0.5},quant{bits=8}",
    ],
)
def test_a_file_read_back_has_the_text_of_the_ir_that_wrote_it(firenet, tmp_path: Path, pipeline: str):
    artifact = sqc.compress(firenet, [(1, 3, 16, 16)], pipeline)
    artifact.save(tmp_path / "m.sqc")
    assert sqc.app.api.ir_text(tmp_path / "m.sqc") == ir_text(artifact.model)


def test_tied_weights_show_as_an_alias_and_survive_the_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    artifact = sqc.compress(Tied().eval(), ["1,5:int64"], "quant{bits=8},huffman")
    text = ir_text(artifact.model)
    assert "alias head.weight = emb.weight" in text
    assert sum(line.startswith("tensor ") for line in text.splitlines()) == 1
    artifact.save(tmp_path / "t.sqc")
    assert sqc.app.api.ir_text(tmp_path / "t.sqc") == text


def test_changing_one_weight_changes_one_line(mlp) -> None:
    model = sqc.compress(mlp, [(1, 64)], "prune{sparsity=0.5},quant{bits=8}").model
    before = ir_text(model).splitlines()
    state = model.tensors["fc2.weight"]
    codes = state.codes.clone()
    codes[0, 0] += 1 if codes[0, 0] < state.fmt.qmax else -1
    state.codes = codes
    after = ir_text(model).splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("tensor fc2.weight:")


def test_the_text_names_representation_density_and_coder(mlp) -> None:
    model = sqc.compress(mlp, [(1, 64)], "prune{sparsity=0.5 scope=layer},share{bits=3},huffman").model
    line = next(x for x in ir_text(model).splitlines() if x.startswith("tensor fc1.weight:"))
    assert line.startswith("tensor fc1.weight: weight [48, 64] shared<8> kept 1536/3072 huffman crc=")
    assert "%fc1 = linear(%flatten, @fc1.weight, @fc1.bias) : [1, 48]" in ir_text(model)


class Recorder(PassInstrument):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def before_pipeline(self, model) -> None:
        self.log.append(f"{self.name} start {len(model.tensors)}")

    def before_pass(self, index, pass_, model) -> None:
        self.log.append(f"{self.name} before {index} {pass_.name}")

    def after_pass(self, index, pass_, model, result, seconds) -> None:
        self.log.append(f"{self.name} after {index} {pass_.name} {result.changed}")


def test_instruments_wrap_every_pass_before_in_order_after_in_reverse(mlp) -> None:
    log: list[str] = []
    sqc.compress(mlp, [(1, 64)], "prune,quant", instruments=[Recorder("a", log), Recorder("b", log)])
    assert log == [
        "a start 4",
        "b start 4",
        "a before 1 prune",
        "b before 1 prune",
        "b after 1 prune True",
        "a after 1 prune True",
        "a before 2 quant",
        "b before 2 quant",
        "b after 2 quant True",
        "a after 2 quant True",
    ]


def test_instruments_observe_without_changing_the_file(mlp) -> None:
    plain = sqc.compress(mlp, [(1, 64)], "prune,quant,huffman").to_bytes()
    texts: list[str] = []
    timer = PassTimer()
    watched = sqc.compress(
        mlp, [(1, 64)], "prune,quant,huffman", instruments=[PrintIR(frozenset({"all"}), texts.append), timer]
    )
    assert watched.to_bytes() == plain
    assert len(texts) == 4 and texts[0].startswith("; IR after capture") and "#3 huffman" in texts[3]
    rows = timer.rows()
    assert [r["pass"] for r in rows] == ["prune", "quant", "huffman", "total"]
    assert all(r["wall_s"] >= 0 and r["cpu_s"] >= 0 for r in rows)
    assert sum(r["share"] for r in rows[:-1]) == pytest.approx(1.0, abs=1e-3)


def test_print_selector_refuses_a_pass_the_pipeline_lacks() -> None:
    assert parse_print_selector("prune, capture", ["prune", "quant"]) == frozenset({"prune", "capture"})
    with pytest.raises(SqcError, match=r"--print-ir-after: shar is not a pass of this pipeline \(choose"):
        parse_print_selector("shar", ["prune", "share"])
    with pytest.raises(SqcError, match="give a pass name"):
        parse_print_selector(" , ", ["prune"])


def test_cli_time_passes_and_print_ir_after(cli, workdir: Path) -> None:
    result = cli(
        "compress", "small.pt", *ARCH, "-p", "prune,quant,huffman", "-o", "s.sqc", "--time-passes",
        "--print-ir-after", "quant",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.err.count("; IR after") == 1 and "; IR after pass #2 quant{" in result.err
    assert "pass execution timing" in result.err
    table = result.err.split("pass execution timing")[1].splitlines()
    firsts = [line.split()[0] for line in table if line.strip()]
    assert firsts == ["#", "1", "2", "3", "total"], table
    block = result.err.split("; IR after pass #2 ")[1]
    assert "fixed<8 frac=" in block

    timed = ("--time-passes", "--json")
    as_json = cli("compress", "small.pt", *ARCH, "-p", "prune,quant", "-o", "j.sqc", *timed)
    assert as_json.code == 0, as_json.err
    summary = json.loads(as_json.out)
    assert [row["pass"] for row in summary["timings"]] == ["prune", "quant", "total"]
    assert "pass execution timing" not in as_json.err

    wrong = cli("compress", "small.pt", *ARCH, "-p", "prune", "-o", "w.sqc", "--print-ir-after", "share")
    assert wrong.code == 1 and wrong.err.startswith("sqc: error: --print-ir-after: share is not a pass")
    assert not (workdir / "w.sqc").exists()


def test_cli_inspect_ir_of_a_file_and_of_a_model(cli, workdir: Path) -> None:
    assert cli("compress", "small.pt", *ARCH, "-p", "prune,quant,rans", "-o", "s.sqc").code == 0
    shown = cli("inspect", "s.sqc", "--ir")
    assert shown.code == 0, shown.err
    assert shown.out == sqc.app.api.ir_text(workdir / "s.sqc")
    assert shown.out.startswith("; sqc ir 1\n; pipeline prune{") and " rans crc=" in shown.out

    captured = cli("inspect", "small.pt", *ARCH, "--ir")
    assert captured.code == 0, captured.err
    assert "; pipeline" not in captured.out and " float32 crc=" in captured.out

    both = cli("inspect", "s.sqc", "--ir", "--json")
    assert both.code == 1 and "--ir or --json" in both.err


def test_cli_version_help_and_zoo(cli) -> None:
    version = cli("--version")
    assert version.code == 0 and version.out.startswith(f"sqc {sqc.__version__} (writes .sqc format 1.")
    assert sqc.__version__ not in ("", "0+unknown")

    assert cli("-h").code == 0 and "compress" in cli("-h").out
    assert cli("compress", "-h").code == 0 and "--print-ir-after" in cli("compress", "-h").out

    zoo = cli("zoo", "--json")
    assert zoo.code == 0
    rows = {row["name"]: row for row in json.loads(zoo.out)}
    assert rows["lenet300"]["params"] == 266_610 and rows["vgg16"]["params"] == 138_357_544
    assert rows["resnet18"]["input"] == [1, 3, 224, 224]
    table = cli("zoo")
    assert table.code == 0 and "squeezenet1_1" in table.out and "1,235,496" in table.out

    from sqc.app.cli.catalog import builtin_markdown

    markdown = cli("passes", "--markdown")
    assert markdown.code == 0 and markdown.out == builtin_markdown()
    assert markdown.out.startswith("| pass | options (defaults) | what it does |\n|---|---|---|\n| `prune` |")
    assert "`clip`" not in markdown.out  # the README documents sqc's own passes, not installed plugins


def test_files_name_their_writer_by_the_package_version() -> None:
    """One version string: the ``producer`` a file records is the major.minor of the package's own
    version (pyproject.toml), and the format's preset dictionary does not follow it."""
    from sqc.formats.container import PRESET_DICTIONARY, read_layout, serialize
    from sqc.ir.records import CompressedModel

    major_minor = ".".join(sqc.__version__.split(".")[:2])
    ir: CompressedModel = sqc.compress(nn.Linear(4, 2), [(1, 4)], "quant{bits=8}").model
    assert read_layout(serialize(ir)).meta["producer"] == f"sqc {major_minor}"
    assert b'"producer":"sqc 0.1"' in PRESET_DICTIONARY  # fixed bytes of format 1.2
