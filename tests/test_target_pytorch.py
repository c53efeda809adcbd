"""The PyTorch target: what comes back out of a .sqc file equals the compressed model exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sqc
from sqc.targets.pytorch import write_model

PIPELINE = "prune{sparsity=0.8},share{bits=5},quant{bits=8},huffman"


@pytest.fixture
def artifact(firenet):
    return sqc.compress(firenet, [(1, 3, 16, 16)], PIPELINE)


@pytest.fixture
def saved(tmp_path: Path, artifact) -> Path:
    path = tmp_path / "fire.sqc"
    artifact.save(path)
    return path


def test_load_gives_decoded_weights_exactly(saved: Path, artifact):
    restored = sqc.load(saved)
    params = dict(restored.named_parameters()) | dict(restored.named_buffers())
    assert set(params) == set(artifact.model.tensors)
    for name, state in artifact.model.tensors.items():
        assert torch.equal(params[name].detach(), state.decode()), name


def test_outputs_equal_the_in_memory_model(saved: Path, artifact, firenet):
    restored = sqc.load(saved)
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(restored(x), artifact.module()(x))
        # and compression really changed the model (it is not the original)
        assert not torch.equal(restored(x), firenet(x))


def test_module_file_loads_without_sqc(tmp_path: Path, saved: Path, artifact):
    output = tmp_path / "restored.pt"
    write_model(saved, output, "module")
    x = torch.rand(2, 3, 16, 16)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = artifact.module()(x)
    torch.save(expected, tmp_path / "expected.pt")
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'sqc' or name.startswith('sqc.'): raise ImportError('sqc is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        f"m = torch.load({str(output)!r}, weights_only=False)\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"assert torch.equal(m(x), torch.load({str(tmp_path / 'expected.pt')!r}))\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_state_dict_form_is_weights_only(tmp_path: Path, saved: Path, artifact):
    output = tmp_path / "weights.pt"
    write_model(saved, output, "state_dict")
    state = torch.load(output, weights_only=True)
    for name, record in artifact.model.tensors.items():
        assert torch.equal(state[name], record.decode())


def test_export_form_needs_no_python_code(tmp_path: Path, saved: Path, artifact):
    output = tmp_path / "fire.pt2"
    write_model(saved, output, "export")
    program = torch.export.load(str(output))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(program.module()(x), artifact.module()(x))


def test_artifact_bytes_equal_the_saved_file(saved: Path, artifact):
    assert saved.read_bytes() == artifact.to_bytes()
    report = sqc.inspect(saved)
    assert report["pipeline"] == artifact.pipeline
    assert [p["spec"] for p in report["passes"]] == [r.spec for r in artifact.report]
