"""Plugins end to end: the example package in ``tests/plugin_example`` registers the ``clip`` pass
through the ``sqc.passes`` entry-point group, and the installed ``sqc`` command finds and runs it.

The registry rules are tested with a fake ``entry_points``: a name offered twice is an error naming
both packages, a plugin that cannot be imported is an error naming its package, and listing the
registry imports no pass module.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import sqc
import sqc.compiler.registry
from sqc.errors import PipelineError, SqcError

PLUGIN_DIST = "sqc-plugin-example"
ARCH = "sqc_plugins_tinynet:Factory"
LIMIT = 0.05

TINYNET = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.nn.functional.relu(self.fc1(x)))


def Factory():
    return TinyNet()
"""


# ---------------------------------------------------------------------------------------------------
# helpers


def sqc_command() -> list[str]:
    """The installed ``sqc`` console script next to this interpreter (else ``python -m sqc``)."""
    script = Path(sys.executable).with_name("sqc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sqc"]


def run_sqc(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sqc_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def plugin_installed() -> None:
    try:
        importlib.metadata.distribution(PLUGIN_DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            f"{PLUGIN_DIST} is not installed: run `make install` (pip install ./tests/plugin_example)"
        )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A directory holding ``sqc_plugins_tinynet.py`` (the architecture) and ``model.pt`` (its weights)."""
    source = tmp_path / "sqc_plugins_tinynet.py"
    source.write_text(TINYNET, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("sqc_plugins_tinynet", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = module.Factory()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    return tmp_path


def model_env(model_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(model_dir)}


def compress_args(passes: str, out: Path, model: str = "model.pt") -> list[str]:
    return ["compress", model, "--arch", ARCH, "--input-shape", "1,16", "--passes", passes, "-o", str(out)]


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Drop the registry cache around a test that fakes the entry points."""
    sqc.compiler.registry.entries.cache_clear()
    yield
    sqc.compiler.registry.entries.cache_clear()


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, offers: list[tuple[str, str, str]]) -> None:
    """Make ``sqc.compiler.registry`` see exactly ``offers`` (name, module:attr, distribution) in
    ``sqc.passes``."""
    points = [
        SimpleNamespace(name=name, value=value, group="sqc.passes", dist=SimpleNamespace(name=dist))
        for name, value, dist in offers
    ]

    def entry_points(*, group: str) -> list[SimpleNamespace]:
        return points if group == "sqc.passes" else []

    monkeypatch.setattr(sqc.compiler.registry, "entry_points", entry_points)


# ---------------------------------------------------------------------------------------------------
# (a) discovery through the installed command


def test_passes_lists_the_plugin_with_its_package_and_options(plugin_installed: None, tmp_path: Path) -> None:
    result = run_sqc(["passes", "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"prune", "share", "quant", "huffman", "clip"} <= set(rows)
    assert all(rows[name]["package"] == "sqc" for name in ("prune", "share", "quant", "huffman"))
    clip = rows["clip"]
    assert clip["package"] == PLUGIN_DIST
    assert clip["options"] == [
        {"name": "limit", "type": "float", "default": "0.1"},
        {"name": "layers", "type": "str", "default": "*"},
    ]
    assert clip["default_spec"] == "clip{limit=0.1 layers=*}"
    assert clip["summary"]


# ---------------------------------------------------------------------------------------------------
# (b) the plugin pass runs inside a pipeline given on the command line


def test_compress_runs_the_plugin_pass(plugin_installed: None, model_dir: Path) -> None:
    out = model_dir / "out.sqc"
    original = torch.load(model_dir / "model.pt", weights_only=True)
    assert max(float(original[k].abs().max()) for k in ("fc1.weight", "fc2.weight")) > 2 * LIMIT

    pipeline_text = f"clip{{limit={LIMIT}}},quant{{bits=8}},huffman"
    result = run_sqc([*compress_args(pipeline_text, out), "--json"], cwd=model_dir, env=model_env(model_dir))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    clip_row = summary["passes"][0]
    assert clip_row["pass"] == "clip" and clip_row["changed"] is True
    expected = sum(int((original[k].abs() > LIMIT).sum()) for k in ("fc1.weight", "fc2.weight"))
    assert clip_row["clipped"] == expected > 0
    assert clip_row["max_abs_error"] > 0

    # 8-bit fixed point over ±LIMIT: one step is below 2 * LIMIT / 127, rounding moves by half a step
    bound = LIMIT + 2 * LIMIT / 127
    restored = sqc.load(out)
    weights = {name: p.detach() for name, p in restored.named_parameters() if name.endswith("weight")}
    assert set(weights) == {"fc1.weight", "fc2.weight"}
    for name, value in weights.items():
        assert float(value.abs().max()) <= bound, name
        assert float(value.abs().max()) >= LIMIT - 2 * LIMIT / 127, name  # the clipped weights survive

    inspected = run_sqc(["inspect", str(out), "--json"], cwd=model_dir)
    assert inspected.returncode == 0, inspected.stderr
    pipeline = json.loads(inspected.stdout)["pipeline"]
    assert pipeline.startswith(f"clip{{limit={LIMIT} layers=*}},quant{{bits=8 ")
    assert pipeline.endswith(",huffman{layers=*}")

    # the order check cannot see a model that already holds codes; the pass itself refuses it
    from sqc.app.api import read
    from sqc.compiler.pass_base import PassContext
    from sqc.compiler.pipeline import Pipeline

    with pytest.raises(SqcError, match=r"pass clip failed: .*integer codes"):
        Pipeline.parse("clip").run(read(out), PassContext())


# ---------------------------------------------------------------------------------------------------
# (c) ordering is checked before anything runs


@pytest.mark.parametrize("passes", ["quant,clip", "share{bits=4},clip", "quant,huffman,clip{limit=0.2}"])
def test_clip_after_codes_is_refused_before_running(
    plugin_installed: None, model_dir: Path, passes: str
) -> None:
    out = model_dir / "refused.sqc"
    result = run_sqc(compress_args(passes, out), cwd=model_dir, env=model_env(model_dir))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sqc: error:")
    assert "clip cannot run here" in lines[0]
    assert not out.exists()
    assert result.stdout == ""


def test_order_is_checked_before_the_model_is_even_loaded(plugin_installed: None, tmp_path: Path) -> None:
    out = tmp_path / "refused.sqc"
    result = run_sqc(compress_args("quant,clip", out, model="no-such-model.pt"), cwd=tmp_path)
    assert result.returncode == 1
    assert "clip cannot run here" in result.stderr and "no-such-model" not in result.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------
# the pass itself, in process (the plugin is an ordinary importable package)


@pytest.fixture
def tiny(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """The same network and weights, in process."""
    monkeypatch.syspath_prepend(str(model_dir))
    monkeypatch.delitem(sys.modules, "sqc_plugins_tinynet", raising=False)
    net = importlib.import_module("sqc_plugins_tinynet").Factory()
    net.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
    return net


def test_clip_keeps_the_pruning_mask_and_reports_per_layer(
    plugin_installed: None, tiny: torch.nn.Module
) -> None:
    artifact = sqc.compress(tiny, [(1, 16)], "prune{sparsity=0.5 scope=layer},clip{limit=0.05}")
    report = artifact.report[-1]
    assert report.spec == "clip{limit=0.05 layers=*}"
    for name in ("fc1.weight", "fc2.weight"):
        state = artifact.model.tensors[name]
        assert state.kind == "dense" and state.mask is not None
        assert abs(state.density - 0.5) < 0.05
        value = state.decode()
        assert bool((value.abs() <= torch.tensor(0.05)).all())  # the float32 limit
        assert bool((value[~state.mask] == 0).all())
        assert report.layers[name]["clipped"] == int((tiny.state_dict()[name].abs() > 0.05)[state.mask].sum())
    assert report.stats["clipped"] == sum(int(v["clipped"]) for v in report.layers.values())
    assert artifact.model.tensors["fc1.bias"].decode().equal(tiny.fc1.bias.detach())  # biases untouched


def test_clip_selects_layers_and_is_a_no_op_above_the_peak(
    plugin_installed: None, tiny: torch.nn.Module
) -> None:
    only_fc2 = sqc.compress(tiny, [(1, 16)], "clip{limit=0.01 layers=fc2}")
    assert set(only_fc2.report[0].layers) == {"fc2.weight"}
    assert only_fc2.model.tensors["fc1.weight"].decode().equal(tiny.fc1.weight.detach())
    assert bool((only_fc2.model.tensors["fc2.weight"].decode().abs() <= torch.tensor(0.01)).all())

    untouched = sqc.compress(tiny, [(1, 16)], "clip{limit=10}")
    assert untouched.report[0].changed is False
    assert untouched.report[0].stats["clipped"] == 0

    with pytest.raises(SqcError, match="matches no weight tensor"):
        sqc.compress(tiny, [(1, 16)], "clip{layers=conv*}")


@pytest.mark.parametrize("text", ["clip{limit=0}", "clip{limit=-0.5}", "clip{limit=nan}", "clip{limit=x}"])
def test_clip_rejects_a_bad_limit(plugin_installed: None, text: str) -> None:
    from sqc.compiler.pipeline import Pipeline

    with pytest.raises(PipelineError, match="option limit"):
        Pipeline.parse(text)


# ---------------------------------------------------------------------------------------------------
# (d) a name offered twice is an error naming both packages


def test_duplicate_of_a_builtin_names_both_packages(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    fake_entry_points(monkeypatch, [("prune", "sqc_fake_dup.prune:Prune", "sqc-fake-dup")])
    with pytest.raises(SqcError) as caught:
        sqc.compiler.registry.entries("sqc.passes")
    message = str(caught.value)
    assert "'prune'" in message
    assert "by sqc (sqc.passes.prune:Prune)" in message
    assert "sqc-fake-dup" in message


def test_duplicate_between_plugins_names_both(monkeypatch: pytest.MonkeyPatch, fresh_registry: None) -> None:
    fake_entry_points(
        monkeypatch, [("dedup", "pkg_a:Dedup", "sqc-plugin-a"), ("dedup", "pkg_b:Dedup", "sqc-plugin-b")]
    )
    with pytest.raises(SqcError, match=r"sqc-plugin-a.*sqc-plugin-b"):
        sqc.compiler.registry.entries("sqc.passes")


def test_same_distribution_seen_twice_is_not_a_duplicate(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    offer = ("dedup", "pkg_a:Dedup", "sqc-plugin-a")
    fake_entry_points(monkeypatch, [offer, offer])
    table = sqc.compiler.registry.entries("sqc.passes")
    assert table["dedup"].package == "sqc-plugin-a"
    assert table["prune"].package == "sqc"


# ---------------------------------------------------------------------------------------------------
# (e) a plugin that cannot be imported is an error naming its package


def test_plugin_that_fails_to_import_names_its_package(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None, tmp_path: Path
) -> None:
    (tmp_path / "sqc_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_entry_points(
        monkeypatch,
        [
            ("broken", "sqc_broken_plugin:Broken", "sqc-broken-plugin"),
            ("missing", "sqc_no_such_module_anywhere:Missing", "sqc-missing-plugin"),
        ],
    )
    table = sqc.compiler.registry.entries("sqc.passes")  # listing imports nothing, so it still succeeds
    assert table["broken"].package == "sqc-broken-plugin"

    with pytest.raises(SqcError) as caught:
        sqc.compiler.registry.load_pass("broken")
    assert "sqc-broken-plugin" in str(caught.value) and "boom at import" in str(caught.value)

    with pytest.raises(SqcError, match="sqc-missing-plugin"):
        sqc.compiler.registry.load_pass("missing")

    from sqc.compiler.pipeline import Pipeline

    with pytest.raises(SqcError, match="sqc-broken-plugin"):
        Pipeline.parse("prune,broken")


def test_plugin_object_that_is_not_a_pass_is_refused(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    fake_entry_points(monkeypatch, [("notapass", "json:dumps", "sqc-odd-plugin")])
    with pytest.raises(SqcError, match=r"sqc-odd-plugin.*not an sqc Pass"):
        sqc.compiler.registry.load_pass("notapass")


# ---------------------------------------------------------------------------------------------------
# (f) listing the registry is lazy


def test_listing_the_registry_imports_no_pass(plugin_installed: None, tmp_path: Path) -> None:
    probe = (
        "import json, sys\n"
        "import sqc.compiler.registry\n"
        "table = sqc.compiler.registry.entries('sqc.passes')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('sqc.passes', 'sqc_plugin_example')))\n"
        "print(json.dumps({'names': sorted(table), 'loaded': loaded}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert {"prune", "share", "quant", "huffman", "clip"} <= set(found["names"])
    assert found["loaded"] == []
