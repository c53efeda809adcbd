"""The command line: the whole flow, and one clean line with exit code 1 for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sqc

ARCH = ("--arch", "sqc_test_models:Small")


def test_compress_inspect_decompress(cli, workdir: Path):
    result = cli(
        "compress",
        "small.pt",
        *ARCH,
        "--passes",
        "prune{sparsity=0.5 scope=layer},share{bits=4},huffman",
        "-o",
        "s.sqc",
    )
    assert result.code == 0, result.err
    assert "wrote s.sqc" in result.out and "smaller than fp32" in result.out
    assert "[1/3] prune" in result.err and "[3/3] huffman" in result.err

    shown = cli("inspect", "s.sqc")
    assert shown.code == 0
    for column in (
        "layer",
        "density",
        "bits/w",
        "index bits/w",
        "codebook B",
        "header B",
        "total B",
        "vs fp32",
    ):
        assert column in shown.out
    assert "fc1" in shown.out and "(graph)" in shown.out and "pipeline: prune{sparsity=0.5" in shown.out

    info = json.loads(cli("inspect", "s.sqc", "--json").out)
    assert info["size"] == (workdir / "s.sqc").stat().st_size
    accounted = sum(c for c in info["components"].values())
    assert accounted == info["size"]  # every byte is attributed
    assert sum(layer["total_bytes"] for layer in info["layers"]) == info["components"]["tensors"]
    fc1 = next(layer for layer in info["layers"] if layer["layer"] == "fc1")
    assert fc1["density"] == pytest.approx(0.5, abs=0.01)

    restored = cli("decompress", "s.sqc", "-o", "restored.pt")
    assert restored.code == 0, restored.err
    module = torch.load(workdir / "restored.pt", weights_only=False)
    x = torch.randn(3, 16)
    assert torch.equal(module(x), sqc.load(workdir / "s.sqc")(x))


def test_inspect_uncompressed_model(cli, workdir: Path):
    result = cli("inspect", "small.pt", *ARCH, "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["totals"]["params"] == 16 * 32 + 32 + 32 * 4 + 4
    fc1 = next(layer for layer in info["layers"] if layer["layer"] == "fc1")
    assert fc1["flops"] == 2 * 16 * 32 and fc1["bytes"] == 4 * (16 * 32 + 32)
    assert "FLOPs" in cli("inspect", "small.pt", *ARCH).out


def test_recipe_and_json_output(cli, workdir: Path):
    (workdir / "r.toml").write_text('[[pass]]\nname = "quant"\nbits = 6\n[[pass]]\nname = "huffman"\n')
    result = cli("compress", "small.pt", *ARCH, "--recipe", "r.toml", "-o", "r.sqc", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert (
        summary["pipeline"].startswith("quant{bits=6")
        and summary["bytes"] == (workdir / "r.sqc").stat().st_size
    )
    assert [p["pass"] for p in summary["passes"]] == ["quant", "huffman"]


def test_passes_lists_builtins_with_options(cli):
    listing = json.loads(cli("passes", "--json").out)
    by_name = {p["name"]: p for p in listing}
    assert {"prune", "share", "quant", "huffman"} <= set(by_name)
    assert {o["name"] for o in by_name["prune"]["options"]} == {
        "sparsity",
        "scope",
        "per_layer",
        "layers",
        "schedule",
        "steps",
        "epochs",
        "lr",
        "target",
        "budget",
    }
    assert by_name["huffman"]["requires"] == ["codes"]
    assert "sparsity=0.9" in cli("passes").out


def test_same_input_gives_byte_identical_files(cli, workdir: Path):
    for name in ("a.sqc", "b.sqc"):
        assert cli("compress", "small.pt", *ARCH, "-p", "prune,share,huffman", "-o", name).code == 0
    assert (workdir / "a.sqc").read_bytes() == (workdir / "b.sqc").read_bytes()


def _bad(cli, *argv, fragment: str):
    result = cli(*argv)
    assert result.code == 1, (result.out, result.err)
    lines = result.err.rstrip().splitlines()
    assert lines[0].startswith("sqc: error:"), result.err
    assert "Traceback" not in result.err
    assert fragment in lines[0], lines[0]
    # one line of error; a pipeline error may add the pipeline text with a caret under the column
    assert len(lines) == 1 or (len(lines) == 3 and lines[2].strip() == "^"), result.err
    return lines[0]


def test_pipeline_typo_draws_a_caret_under_the_column(cli, workdir):
    text = "prune{sparsity=0.5},shrae{bits=4},huffman"
    result = cli("compress", "small.pt", *ARCH, "-p", text, "-o", "x.sqc")
    assert result.code == 1 and "Traceback" not in result.err
    error, shown, caret = result.err.rstrip("\n").splitlines()
    assert "column 21" in error and "unknown pass 'shrae'" in error and "did you mean 'share'?" in error
    assert shown == f"  {text}"
    assert caret.index("^") == shown.index("shrae")
    assert not (workdir / "x.sqc").exists()

    bad_value = cli("compress", "small.pt", *ARCH, "-p", "prune{sparsity=1.5}", "-o", "x.sqc")
    _, shown, caret = bad_value.err.rstrip("\n").splitlines()
    assert caret.index("^") == shown.index("sparsity")  # the option at fault


def test_missing_file(cli, workdir):
    _bad(cli, "compress", "nope.pt", *ARCH, "-o", "x.sqc", fragment="nope.pt: no such file")
    _bad(cli, "inspect", "nope.sqc", fragment="nope.sqc: no such file")
    assert not (workdir / "x.sqc").exists()


def test_not_a_model(cli, workdir):
    (workdir / "notes.txt").write_text("hello")
    _bad(cli, "compress", "notes.txt", "-o", "x.sqc", fragment="notes.txt: not a PyTorch model file")


def test_state_dict_that_does_not_fit_arch(cli, workdir):
    _bad(
        cli,
        "compress",
        "small.pt",
        "--arch",
        "sqc_test_models:Wider",
        "-o",
        "x.sqc",
        fragment="does not fit --arch sqc_test_models:Wider: fc1.weight has shape (32, 16)",
    )


def test_untrusted_pickle(cli, workdir):
    from sqc_test_models import Small

    torch.save(Small(), workdir / "whole.pt")
    _bad(cli, "compress", "whole.pt", "-o", "x.sqc", fragment="--trust-pickle")
    assert cli("compress", "whole.pt", "--trust-pickle", "-o", "x.sqc").code == 0


def test_unknown_pass(cli, workdir):
    _bad(cli, "compress", "small.pt", *ARCH, "-p", "prune,zip", "-o", "x.sqc", fragment="unknown pass 'zip'")


def test_bad_option_value(cli, workdir):
    line = _bad(
        cli,
        "compress",
        "small.pt",
        *ARCH,
        "-p",
        "prune{sparsity=1.5}",
        "-o",
        "x.sqc",
        fragment="sparsity: 1.5 is outside",
    )
    assert "column 7" in line


def test_impossible_order(cli, workdir):
    _bad(
        cli,
        "compress",
        "small.pt",
        *ARCH,
        "-p",
        "huffman,quant",
        "-o",
        "x.sqc",
        fragment="huffman needs codes",
    )
    assert not (workdir / "x.sqc").exists()


def test_nan_weights(cli, workdir):
    state = torch.load(workdir / "small.pt")
    state["fc2.weight"][0, 0] = float("inf")
    torch.save(state, workdir / "broken.pt")
    _bad(cli, "compress", "broken.pt", *ARCH, "-o", "x.sqc", fragment="fc2.weight contains NaN or Inf")


def test_corrupt_and_truncated_sqc(cli, workdir):
    assert cli("compress", "small.pt", *ARCH, "-o", "good.sqc").code == 0
    data = (workdir / "good.sqc").read_bytes()
    (workdir / "cut.sqc").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    (workdir / "flip.sqc").write_bytes(bytes(flipped))
    _bad(cli, "inspect", "cut.sqc", fragment="cut.sqc: file is")
    _bad(cli, "decompress", "flip.sqc", "-o", "r.pt", fragment="checksum mismatch")
    assert not (workdir / "r.pt").exists()


def test_existing_output_is_kept(cli, workdir):
    (workdir / "taken.sqc").write_bytes(b"mine")
    _bad(cli, "compress", "small.pt", *ARCH, "-o", "taken.sqc", fragment="taken.sqc: already exists")
    assert (workdir / "taken.sqc").read_bytes() == b"mine"
    assert cli("compress", "small.pt", *ARCH, "-o", "good.sqc").code == 0
    (workdir / "taken.pt").write_bytes(b"mine")
    _bad(cli, "decompress", "good.sqc", "-o", "taken.pt", fragment="already exists")
    assert (workdir / "taken.pt").read_bytes() == b"mine"
    assert cli("compress", "small.pt", *ARCH, "-o", "taken.sqc", "--force").code == 0


def test_bad_input_shape_and_usage(cli, workdir):
    _bad(cli, "compress", "small.pt", *ARCH, "--input-shape", "1,x", "-o", "x.sqc", fragment="--input-shape")
    _bad(
        cli,
        "compress",
        "small.pt",
        *ARCH,
        "--input-shape",
        "1,17",
        "-o",
        "x.sqc",
        fragment="does not fit node fc1",
    )
    _bad(cli, "compress", "small.pt", "--bogus", fragment="No such option")
    _bad(
        cli,
        "compress",
        "small.pt",
        *ARCH,
        "-p",
        "prune",
        "--recipe",
        "r.toml",
        "-o",
        "x.sqc",
        fragment="either --passes or --recipe",
    )


def test_trace_failure_is_one_line(cli, workdir):
    from sqc_test_models import DataDependent

    torch.save(DataDependent().state_dict(), workdir / "dd.pt")
    _bad(
        cli,
        "compress",
        "dd.pt",
        "--arch",
        "sqc_test_models:DataDependent",
        "-o",
        "x.sqc",
        fragment="cannot trace module DataDependent",
    )


def test_lower_to_the_pytorch_target(cli, workdir):
    assert cli("compress", "small.pt", *ARCH, "-o", "s.sqc").code == 0
    result = cli("lower", "s.sqc", "--target", "pytorch", "-o", "s.pt2")
    assert result.code == 0, result.err
    program = torch.export.load(str(workdir / "s.pt2"))
    x = torch.randn(1, 16)
    assert torch.equal(program.module()(x), sqc.load(workdir / "s.sqc")(x))
    _bad(
        cli,
        "lower",
        "s.sqc",
        "--target",
        "fpga9000",
        "-o",
        "x",
        fragment="unknown target 'fpga9000' (known: pytorch",
    )


def test_no_verify_skips_the_verifier(cli, workdir, monkeypatch):
    from sqc.ir.records import CompressedModel

    calls = []
    original = CompressedModel.verify
    monkeypatch.setattr(CompressedModel, "verify", lambda self: calls.append(1) or original(self))
    assert cli("compress", "small.pt", *ARCH, "-p", "prune,quant", "-o", "v.sqc").code == 0
    assert len(calls) == 3  # before the first pass and after each
    calls.clear()
    assert cli("compress", "small.pt", *ARCH, "-p", "prune,quant", "-o", "n.sqc", "--no-verify").code == 0
    assert calls == []
    assert (workdir / "v.sqc").read_bytes() == (workdir / "n.sqc").read_bytes()


def test_inspect_draws_the_largest_layers_and_sums_the_rest(cli, tmp_path: Path, monkeypatch):
    """A table row costs ~1 ms to draw: a file of thousands of layers shows the largest 200 in file order
    and one row for the rest (bytes still add up); ``--all`` and ``--json`` give every layer."""
    from torch import nn

    from sqc.app.cli.inspect import TABLE_LAYERS

    monkeypatch.chdir(tmp_path)
    layers = [nn.Linear(4, 4) for _ in range(TABLE_LAYERS + 5)] + [nn.Linear(4, 64), nn.Linear(64, 4)]
    sqc.compress(nn.Sequential(*layers), [(1, 4)], "quant{bits=4},huffman").save(tmp_path / "m.sqc")
    shown = cli("inspect", "m.sqc")
    assert shown.code == 0, shown.err
    assert (
        "smaller layers: --all" in shown.out
        and f"{TABLE_LAYERS + 5 + 2 - TABLE_LAYERS:,} smaller" in shown.out
    )
    everything = cli("inspect", "m.sqc", "--all")
    assert "smaller layers" not in everything.out and len(everything.out) > len(shown.out)
    info = json.loads(cli("inspect", "m.sqc", "--json").out)
    assert len(info["layers"]) == TABLE_LAYERS + 7


def test_the_core_names_api_keywords_and_the_command_line_its_options(cli, workdir, mlp):
    """The core's messages name settings as the API does (``tolerance=-1.0``); the command line says
    the same thing with its options (``--tolerance -1.0``)."""
    from sqc.app.cli.render import cli_wording

    with pytest.raises(sqc.SqcError, match=r"^tolerance=-1.0: must be a finite, non-negative number$"):
        sqc.compress(mlp, [(1, 64)], "prune", tolerance=-1.0)
    result = cli("compress", "small.pt", *ARCH, "-p", "prune", "-o", "t.sqc", "--tolerance", "-1")
    assert result.code == 1
    assert result.err.strip() == "sqc: error: --tolerance -1.0: must be a finite, non-negative number"
    assert cli_wording("seed=5: must be in [0, 2^63)") == "--seed 5: must be in [0, 2^63)"
    assert cli_wording("give data= or evaluate= (or loaders=)") == "give --data or --eval (or --loaders)"
    assert cli_wording("weight_decay= needs it; a finetune= function") == (
        "--weight-decay needs it; a --finetune function"
    )
    assert cli_wording("failed [reproduce with pipeline='prune{sparsity=0.9}']") == (
        "failed [reproduce with --passes 'prune{sparsity=0.9}']"
    )
    assert cli_wording("prune{budget=none samples=0} x_data=1") == "prune{budget=none samples=0} x_data=1"
