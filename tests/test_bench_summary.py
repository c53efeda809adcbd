"""The generated summary table of benchmarks/README.md (``benchmarks/summary.py``, issue 8).

Fake results shaped like the real JSON files (trimmed to the keys the table reads, real values), one
malformed and one missing: the table must say so in those rows and still render the others, and
``--write`` must touch nothing outside its markers. The script is a benchmark tool, run here as
``make bench`` runs it (its command line, in a process of its own), not imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "summary.py"


def summary(*args: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/summary.py ARGS`` (standard library only: it starts in a fraction of a second)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
    )


def render(results: Path) -> str:
    """The section the script prints for ``results`` (what ``--write`` puts between the markers)."""
    run = summary("--results", str(results))
    assert run.returncode == 0, run.stderr
    return run.stdout


GIT = {"commit": "e5494e5", "tree_sources_modified": False, "sqc_imported_from": "/tmp/sqc-pin2/sqc"}
MACHINE = {"cores": 2, "platform": "Linux-x86_64", "python": "3.11.7", "torch": "2.13.0+cpu"}


def lenet_model(fp32: int, file: int, xz: int, zstd: int) -> dict[str, Any]:
    return {
        "fp32_bytes": fp32,
        "variants": [
            {"name": "prune+share+huffman", "file_bytes": file},
            {"name": "prune only (fp32 sparse)", "file_bytes": 105710},
        ],
        "baselines": {
            "byte_map": [
                {"coder": "none (raw byte map)", "total_bytes": 268608},
                {"coder": "xz -9e", "total_bytes": xz},
                {"coder": "zstd -19", "total_bytes": zstd},
            ]
        },
    }


def whole_files(huffman: int, rans: int, xz: int, zstd: int) -> dict[str, int]:
    return {
        "sqc huffman": huffman,
        "sqc rans": rans,
        "byte map xz -9e + fp32 codebooks and biases": xz,
        "byte map zstd -19 + fp32 codebooks and biases": zstd,
    }


RESULTS: dict[str, Any] = {
    "lenet.json": {
        "date": "2026-11-22 01:34 UTC",
        "machine": MACHINE,
        "git": GIT,
        "loadavg_1min_at_end": 3.91455078125,
        "models": {
            "LeNet-300-100": lenet_model(1066440, 25721, 25488, 27875),
            "LeNet-5": lenet_model(1724320, 44068, 47132, 51377),
        },
    },
    "coding.json": {
        "date": "2026-11-22 03:24 UTC",
        "machine": {"cores": 2, "platform": "Linux-x86_64", "python": "3.11.7"},
        "git": {"commit": "ea4d9c1", "tree_sources_modified": True},
        "loadavg_1min_at_end": 4.33,
        "models": {
            "LeNet-300-100": {
                "tensors": [{"huffman_vs_h0": 1.0218}, {"huffman_vs_h0": 1.0583}, {"huffman_vs_h0": 1.1429}],
                "whole_file_bytes": whole_files(25259, 23424, 25488, 27875),
            },
            "LeNet-5": {
                "tensors": [{"huffman_vs_h0": 1.0193}],
                "whole_file_bytes": whole_files(43594, 41755, 47132, 51377),
            },
        },
        "totals_whole_file_bytes": whole_files(68853, 65179, 72620, 79252),
        "totals_streams": {"huffman": 60113, "rans": 57324, "h0": 58597.8},
    },
    "scale.json": {
        "date": "2026-11-22 06:35 UTC",
        "machine": {"cores": 2, "platform": "Linux-x86_64", "python": "3.11.7"},
        "model": {"shape": "VGG-16", "params": 138357544, "fp32_bytes": 553430176},
        "git": {"commit": "2c2eac6", "tree_sources_modified": False},
        "pipeline": "prune,share,huffman",
        "summary": {
            "file_bytes": 12840731,
            "load_s": 4.547480559998803,
            "loadavg_1min_at_end_of_compress_runs": [3.1015625, 3.3193359375, 3.326171875],
            "cli_wall_s": 18.67391241599762,
            "cli_peak_rss_mb": 1463.0,
        },
        "cli_runs": [{"wall_s": 19.7}, {"wall_s": 18.6}, {"wall_s": 18.7}],
    },
    "executors.json": {
        "date": "2026-11-22T04:31:39+00:00",
        "machine": {"platform": "Linux-x86_64", "cpus": 2, "torch": "2.13.0+cpu", "torch_threads": 2},
        "provenance": {"commit": "8924048", "tree_sources_modified": False},
        "model": "LeNet-5 (examples/lenet5.pt)",
        "data": "examples/mnist_test_1k.npz, 1000 images",
        "evaluations": 53,
        "executors": {
            name: {"median_s": t, "runs_s": [t, t, t], "curves_identical_to_serial": True}
            for name, t in (("serial", 22.093), ("serial 1 thread", 13.418), ("process x2", 15.916))
        },
    },
    "deep_compression_mnist_auto.json": {
        "date": "2026-12-07T16:00:00+00:00",
        "evaluation": "MNIST test set",
        "machine": MACHINE,
        "git": {"commit": "17d710b", "tree_sources_modified": False},
        "per_recipe": [
            {"recipe": "lenet300", "runs": 3, "mean_ratio": 40.0, "mean_delta_points": 0.1},
            {"recipe": "lenet300_auto", "runs": 3, "mean_ratio": 38.0, "mean_delta_points": 0.08},
            {"recipe": "lenet5_auto", "runs": 3, "mean_ratio": 47.0, "mean_delta_points": 0.18},
        ],
    },
    "crepe.json": {
        "date": "2026-12-07T16:00:00+00:00",
        "git": {"commit": "17d710b", "tree_sources_modified": False},
        "decision_tones": 50,
        "report_tones": 400,
        "tolerance_points": 1.0,
        "target": {"ratio": 25.0, "rpa": 99.0},
        "met": True,
        "runs": [
            {"name": "auto (eval only)", "ratio": 30.0, "rpa_report": 99.5},
            {"name": "uniform 70 % + 5 bits", "ratio": 20.0, "rpa_report": 99.75},
        ],
    },
    "deep_compression_mnist.json": {
        "date": "2026-11-22T07:04:27+00:00",
        "evaluation": "MNIST test set",
        "machine": MACHINE,
        "git": {"commit": "1e13726", "tree_sources_modified": False},
        "results": [
            {
                "recipe": "lenet300",
                "network": "LeNet-300-100",
                "fp32_error_pct": 1.39,
                "error_pct": 1.54,
                "delta_points": 0.15,
                "ratio": 43.21,
                "paper": {"ratio": 40},
            },
            {
                "recipe": "lenet5",
                "network": "LeNet-5",
                "fp32_error_pct": 0.67,
                "error_pct": 0.77,
                "delta_points": 0.1,  # exactly at the target: met
                "ratio": 54.84,
                "paper": {"ratio": 39},
            },
        ],
    },
    "channels.json": {
        "date": "2026-11-22T03:25:47+00:00",
        "machine": {"platform": "Linux-x86_64", "cpus": 2, "torch": "2.13.0+cpu"},
        "load_average": [3.8251953125, 3.8056640625, 3.02001953125],
        "git": {"commit": "9b77165", "tree_sources_modified": False},
        "imagenet": [
            {
                "model": "resnet18",
                "before": {"params": 11699112, "macs": 1814073344},
                "after": {"params": 3060680, "macs": 483149824},
                "latency": {
                    "restored": {"median_us": 65543.3, "runs": 60},
                    "restored_channels": {"median_us": 24529.7, "runs": 60},
                },
            }
        ],
        "mnist_lenet5": {
            "fp32": {"error_pct": 0.67, "bytes": 1724320},
            "variants": {
                "channels": {"error_pct": 0.86, "file_bytes": 22296},
                "unstructured": {"error_pct": 0.76, "file_bytes": 42848},
            },
        },
    },
    # c_target.json: missing
    "hls.json": '{"machine": "Linux", "lenet300": {"sqc": ',  # malformed: cut short
    "bench_zoo.json": {
        "date": "2026-12-07T11:30:00+00:00",
        "git": GIT,
        "machine": {"platform": "Linux-x86_64", "cpus": 2, "torch": "2.13.0+cpu"},
        "load_average": [2.0, 1.5, 1.0],
        "families": [
            {
                "family": "bert_mini",
                "route": "export",
                "params": 11170560,
                "fp32_bytes": 44682240,
                "variants": {
                    "quant8": {
                        "status": "ok",
                        "file_bytes": 9039375,
                        "ratio_vs_fp32": 4.943,
                        "compress_s": 2.5,
                        "params_after": 11170560,
                        "load_equals_ir": True,
                        "output_rel_l2": 0.0149,
                    },
                    "prune": {
                        "status": "ok",
                        "file_bytes": 5703651,
                        "ratio_vs_fp32": 7.834,
                        "compress_s": 3.3,
                        "params_after": 11170560,
                        "load_equals_ir": True,
                        "output_rel_l2": 0.2885,
                    },
                    "channels": {
                        "status": "ok",
                        "file_bytes": 9039562,
                        "ratio_vs_fp32": 4.943,
                        "compress_s": 1.9,
                        "params_after": 11170560,
                        "load_equals_ir": True,
                        "output_rel_l2": 0.0149,
                    },
                },
            },
            {
                "family": "convnext_like",
                "route": "export",
                "params": 1101304,
                "fp32_bytes": 4405216,
                "variants": {
                    "quant8": {
                        "status": "ok",
                        "file_bytes": 1042479,
                        "ratio_vs_fp32": 4.226,
                        "compress_s": 0.7,
                        "params_after": 1101304,
                        "load_equals_ir": True,
                        "output_rel_l2": 0.0109,
                    },
                    "prune": {
                        "status": "ok",
                        "file_bytes": 609368,
                        "ratio_vs_fp32": 7.229,
                        "compress_s": 0.5,
                        "params_after": 1101304,
                        "load_equals_ir": True,
                        "output_rel_l2": 0.5709,
                    },
                    "channels": {"status": "refused: node permute (permute) moves the channel dimension"},
                },
            },
        ],
    },
}


RESULTS["int_models.json"] = {
    "rows": [
        {
            "model": "CREPE-tiny",
            "act_bits": 8,
            "samples": 200,
            "c_outputs_differing": 0,
            "hls_samples": 4,
            "hls_outputs_differing": 0,
            "rpa_float": 99.5,
            "rpa_sqc_load": 99.0,
            "rpa_int": 98.5,
            "bin_agreement_int": 0.785,
            "bin_within1_int": 0.995,
        },
        {
            "model": "MobileNetV3-like",
            "act_bits": 8,
            "samples": 200,
            "c_outputs_differing": 0,
            "hls_samples": 0,
            "hls_outputs_differing": None,
            "top1_agreement_int": 0.96,
        },
    ],
    "git": GIT,
}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    out.mkdir()
    for name, content in RESULTS.items():
        (out / name).write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    return out


def rows(section: str) -> dict[str, list[str]]:
    """The table's rows by benchmark name, each as its cells."""
    table = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in table[1:]]
    return {c[0]: c for c in cells}


def test_rows_carry_the_figure_the_same_run_baseline_the_ratio_and_the_target(results: Path) -> None:
    table = rows(render(results))
    assert list(table) == [
        "huffman",
        "lenet",
        "coding",
        "scale",
        "executors",
        "mnist",
        "mnist auto",
        "crepe",
        "channels",
        "c",
        "hls",
        "onnx",
        "int_models",
        "zoo",
        "nncodec",
    ]
    assert all(len(cells) == 8 for cells in table.values())

    int_models = table["int_models"]
    assert "CREPE-tiny (8-bit): RPA 98.5 %, C 200/200, HLS 4/4" in int_models[2]
    assert "MobileNetV3-like (8-bit): C 200/200, HLS skipped" in int_models[2]
    assert "CREPE-tiny (8-bit): RPA 99.5 % (`sqc.load` 99.0 %)" in int_models[3]
    assert "pitch bin 78.5%, ±1 bin 99.5%" in int_models[4]
    assert int_models[5].endswith("**met**")

    lenet = table["lenet"]
    assert "LeNet-300-100: 25,721 B (41.5× vs fp32)" in lenet[2]
    assert "LeNet-5: xz -9e 47,132 B, zstd -19 51,377 B" in lenet[3]
    assert "LeNet-300-100: +0.9 % vs xz, −7.7 % vs zstd" in lenet[4]
    assert "LeNet-300-100: **missed**<br>LeNet-5: **met**" in lenet[5]
    assert lenet[6:] == [
        "2026-11-22 01:34 UTC<br>e5494e5 (sqc from `/tmp/sqc-pin2/sqc`)<br>load 3.9",
        "`lenet.json`",
    ]

    coding = table["coding"]
    assert "huffman 1.026 × H0, rans 0.978 × H0" in coding[4]
    assert "rans files −10.2 % vs xz, −17.8 % vs zstd" in coding[4]
    assert "huffman ≤ 1.02 × H0: **missed** (1 of 4 tensors within)" in coding[5]
    assert "rans < H0: **met**" in coding[5] and "10 % below xz summed: **met**" in coding[5]
    assert "ea4d9c1 (modified tree)" in coding[6]

    scale = table["scale"]
    assert "18.7 s, peak 1.53 GB" in scale[2] and "load 4.5 s" in scale[2] and "median of 3" in scale[1]
    assert scale[4] == "43.1× smaller"
    assert scale[5] == "≤ 30 s: **met**<br>≤ 2 GB: **met**<br>load ≤ 5 s: **met**"
    assert scale[6].endswith("load 3.1–3.3")

    executors = table["executors"]
    assert executors[2] == "process x2 15.9 s"
    assert executors[4] == "process x2: 1.39× vs serial, 0.84× vs 1 thread"
    assert executors[6] == "2026-11-22 04:31 UTC<br>8924048<br>load not recorded"

    mnist = table["mnist"]
    assert "lenet300: 43.2×, 1.54 % (+0.15)" in mnist[2]
    assert "lenet5: 1.41× the paper's ratio" in mnist[4]
    assert "lenet300: **missed**<br>lenet5: **met**" in mnist[5]

    auto = table["mnist auto"]
    assert "lenet300_auto (3 runs): 38.0× at +0.08" in auto[2] and "lenet300: 40.0× at +0.10" in auto[3]
    assert "lenet300_auto: 0.95× the hand ratio" in auto[4]
    assert "lenet300_auto: **met**<br>lenet5_auto: **missed**" in auto[5]  # no hand recipe beside it
    assert "lenet5_auto: no hand recipe in this run" in auto[3]

    crepe = table["crepe"]
    assert crepe[2] == "auto (eval only): 30.0×, RPA 99.50"
    assert crepe[4] == "1.50× uniform 70 % + 5 bits" and crepe[5].endswith("**met**")

    channels = table["channels"]
    assert "resnet18: params 3.8×, MACs 3.8×, latency 2.7× (medians of 60)" in channels[4]
    assert "LeNet-5: 77.3× vs fp32, 1.92× smaller than unstructured" in channels[4]
    assert channels[6].endswith("load 3.8")  # the 1-minute figure of os.getloadavg()

    zoo = table["zoo"]
    assert "bert_mini (export): prune 5,703,651 B, err 0.288; quant8 err 0.015" in zoo[2]
    assert "bert_mini: prune 7.8× (3.3 s), quant8 4.9×" in zoo[4]
    assert "sqc.load` = the IR bit for bit: **met**" in zoo[5]
    assert "bert_mini: ran, removed nothing" in zoo[5]
    assert "convnext_like: refused: node permute (permute) moves the channel dimension" in zoo[5]

    assert "writes no JSON" in table["huffman"][1]
    assert table["c"][1] == "**no result**: `results/c_target.json` not found"
    assert table["hls"][1].startswith("**unreadable** `results/hls.json`: JSONDecodeError")
    assert table["hls"][7] == "`hls.json`"


def test_a_json_of_the_wrong_shape_gives_its_row_not_an_exception(results: Path) -> None:
    (results / "scale.json").write_text(json.dumps({"summary": {"cli_wall_s": "fast"}}))
    (results / "lenet.json").write_text("[1, 2]")
    table = rows(render(results))
    assert table["scale"][1].startswith("**unreadable** `results/scale.json`: KeyError")
    assert table["lenet"][1].startswith("**unreadable** `results/lenet.json`: TypeError: top level is list")
    assert "**met**" in table["coding"][5]  # the others still render


def test_machines_are_listed_once_each_with_their_benchmarks(results: Path) -> None:
    section = render(results)
    assert "- Linux-x86_64, 2 cores, Python 3.11.7, torch 2.13.0+cpu: lenet, mnist" in section
    assert "- Linux-x86_64, 2 cores, torch 2.13.0+cpu: executors, channels" in section


README = """# sqc benchmarks

## How to run

text\r\nwith odd bytes \xe2\x80\x94 kept as they are

## What each script measures

| script | what |
|---|---|

## Results: 2026-11-22, sqc at commit e5494e5

the hand-written tables
"""


def test_write_inserts_the_markers_once_and_leaves_every_other_byte(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    original = README.encode("latin-1")
    readme.write_bytes(original)
    readme.chmod(0o644)
    args = ["--results", str(results), "--readme", str(readme), "--write"]

    assert summary(*args).returncode == 0
    first = readme.read_bytes()
    head, rest = first.split(b"<!-- summary:begin -->\n")
    section, tail = rest.split(b"<!-- summary:end -->\n")
    anchor = original.index(b"## Results:")
    assert head + tail == original[:anchor] + b"\n" + original[anchor:]
    assert head.endswith(b"|---|---|\n\n") and tail.startswith(b"\n## Results:")
    assert section.decode() == render(results)
    assert readme.stat().st_mode & 0o777 == 0o644  # the rename kept the mode, not mkstemp's 0600

    assert summary(*args).returncode == 0  # idempotent
    assert readme.read_bytes() == first

    # new results: only the section between the markers changes
    (results / "c_target.json").write_text((results / "lenet.json").read_text())
    assert summary(*args).returncode == 0
    second = readme.read_bytes()
    assert second != first
    head2, rest2 = second.split(b"<!-- summary:begin -->\n")
    assert head2 == head and rest2.split(b"<!-- summary:end -->\n")[1] == tail
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "results"]  # no temp file left


def test_write_refuses_a_readme_without_markers_or_anchor(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    for text in (
        "# no anchor here\n",
        "x\n<!-- summary:end -->\n## Results: 2026-11-22, sqc at commit e5494e5\n",
    ):
        readme.write_text(text)
        refused = summary("--results", str(results), "--readme", str(readme), "--write")
        assert refused.returncode == 1 and "not updated" in refused.stderr
        assert readme.read_text() == text
