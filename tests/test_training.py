"""Data contracts, training under constraints, the finetune pass and the agp schedule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from sqc_blobs import Net, blobs  # tests/models_pkg, on the path (conftest.py)

import sqc
from sqc.compiler.pipeline import Pipeline
from sqc.frontend.trace import trace
from sqc.runtime.data import DataError, Dataset, load_data, top1
from sqc.runtime.training import Constraints


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return Net().eval()


def test_finetune_keeps_masks_and_codebooks_exactly(net):
    data = blobs()
    artifact = sqc.compress(
        net, [(1, 64)], "prune{sparsity=0.8},share{bits=3},finetune{epochs=3 lr=0.05}", data=data
    )
    model = artifact.model
    shared = sqc.compress(net, [(1, 64)], "prune{sparsity=0.8},share{bits=3}")
    for state in model.weights():
        reference = shared.model.tensors[state.name]
        assert torch.equal(state.mask, reference.mask)  # the same weights are pruned
        assert torch.equal(state.codes, reference.codes)  # the same cluster assignments
        assert not torch.equal(state.codebook, reference.codebook)  # the centroids were trained
        values = state.decode()
        assert bool((values[~state.mask] == 0).all())
        assert len(torch.unique(values[state.mask])) <= 8
    model.verify()
    stats = model.report[-1].stats
    assert stats["metric_after"] >= stats["metric_before"]


def test_constraints_hold_against_a_users_own_loop(net):
    ir = trace(net, [(1, 64)])
    Pipeline.parse("prune{sparsity=0.7},share{bits=2}").run(ir, sqc.compiler.pass_base.PassContext())
    before = {s.name: (s.mask.clone(), s.codes.clone()) for s in ir.weights()}
    data = blobs()
    with Constraints(ir):
        module = ir.graph_module
        optimiser = torch.optim.Adam(module.parameters(), lr=0.05, weight_decay=0.1)
        for _ in range(5):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(module(data.x_train), data.y_train).backward()
            optimiser.step()
            for name, (mask, _codes) in before.items():  # after every step, not only at the end
                weight = module.get_parameter(name).detach()
                assert bool((weight[~mask] == 0).all())
                assert len(torch.unique(weight[mask])) <= 4
    for state in ir.weights():
        mask, codes = before[state.name]
        assert torch.equal(state.mask, mask) and torch.equal(state.codes, codes)
    ir.verify()


def test_quantized_weights_are_requantized_after_training(net):
    data = blobs()
    artifact = sqc.compress(net, [(1, 64)], "quant{bits=6},finetune{epochs=1}", data=data)
    for state in artifact.model.weights():
        assert state.kind == "fixed" and state.fmt.bits == 6
    artifact.model.verify()


def test_dsd_lifts_the_masks(net):
    artifact = sqc.compress(
        net, [(1, 64)], "prune{sparsity=0.5},finetune{epochs=1 schedule=dsd}", data=blobs()
    )
    assert all(state.mask is None for state in artifact.model.weights())
    with pytest.raises(sqc.SqcError, match="schedule=dsd retrains dense float weights"):
        sqc.compress(net, [(1, 64)], "quant,finetune{schedule=dsd}", data=blobs())


def test_agp_reaches_the_target_in_stages(net):
    artifact = sqc.compress(net, [(1, 64)], "prune{sparsity=0.9 schedule=agp steps=3 epochs=1}", data=blobs())
    weights = list(artifact.model.weights())  # the default global ranking: the pool reaches the target
    assert sum(s.kept for s in weights) / sum(s.numel for s in weights) == pytest.approx(0.1, abs=0.02)
    assert artifact.report[0].stats["stages"] == 3
    per_layer = sqc.compress(
        net, [(1, 64)], "prune{sparsity=0.9 scope=layer schedule=agp steps=3 epochs=1}", data=blobs()
    )
    for state in per_layer.model.weights():
        assert state.density == pytest.approx(0.1, abs=0.02)


def test_training_passes_need_data_before_anything_runs(net):
    with pytest.raises(sqc.SqcError, match="needs training"):
        sqc.compress(net, [(1, 64)], "prune,finetune")
    with pytest.raises(sqc.SqcError, match="needs training"):
        sqc.compress(net, [(1, 64)], "prune{schedule=agp}")
    only_val = blobs()
    only_val.x_train = only_val.y_train = None
    with pytest.raises(sqc.SqcError, match="needs training"):
        sqc.compress(net, [(1, 64)], "finetune", data=only_val)


def test_user_callables_are_called_as_documented(net):
    calls = []

    def evaluate(model: nn.Module) -> float:
        calls.append("eval")
        return 0.5

    def finetune(model: nn.Module, epochs: int) -> None:
        calls.append(("finetune", epochs))
        optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
        optimiser.zero_grad()
        model(torch.randn(8, 64)).sum().backward()
        optimiser.step()

    artifact = sqc.compress(
        net, [(1, 64)], "prune{sparsity=0.6},finetune{epochs=4}", evaluate=evaluate, finetune=finetune
    )
    assert calls == ["eval", ("finetune", 4), "eval"]
    for state in artifact.model.weights():
        assert bool((state.decode()[~state.mask] == 0).all())


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_data_file_round_trip(tmp_path: Path):
    data = blobs()
    path = write_npz(
        tmp_path / "d.npz",
        x_val=data.x_val.numpy(),
        y_val=data.y_val.numpy(),
        x_train=data.x_train.numpy(),
        y_train=data.y_train.numpy(),
    )
    loaded = load_data(path)
    assert torch.equal(loaded.x_val, data.x_val) and torch.equal(loaded.y_train, data.y_train)
    pt = tmp_path / "d.pt"
    torch.save({"x_val": data.x_val, "y_val": data.y_val}, pt)
    assert load_data(pt).x_train is None


def test_uint8_images_are_scaled(tmp_path: Path):
    path = write_npz(
        tmp_path / "u.npz", x_val=np.full((3, 1, 2, 2), 255, np.uint8), y_val=np.zeros(3, np.int64)
    )
    assert float(load_data(path).x_val.max()) == 1.0


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"x_val": np.zeros((4, 3), np.float32)}, "missing y_val"),
        (
            {"x_val": np.zeros((4, 3), np.float32), "y_val": np.zeros(5, np.int64)},
            "4 samples but y_val has 5",
        ),
        ({"x_val": np.zeros((4, 3), np.float32), "y_val": np.zeros((4, 2), np.int64)}, "1-D integer label"),
        ({"x_val": np.zeros((4, 3), np.float32), "y_val": -np.ones(4, np.int64)}, "negative label"),
        ({"x_val": np.zeros(4, np.float32), "y_val": np.zeros(4, np.int64)}, "expected (samples, ...)"),
        (
            {
                "x_val": np.zeros((4, 3), np.float32),
                "y_val": np.zeros(4, np.int64),
                "x_train": np.zeros((2, 3)),
            },
            "x_train and y_train must be given together",
        ),
        ({"x_val": np.full((2, 3), np.nan, np.float32), "y_val": np.zeros(2, np.int64)}, "NaN or Inf"),
    ],
)
def test_bad_data_files(tmp_path: Path, arrays, fragment):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_data(path)
    assert fragment in str(info.value) and "bad.npz" in str(info.value)


def test_pickled_data_is_refused(tmp_path: Path):
    path = tmp_path / "obj.npz"
    np.savez(path, x_val=np.array([{"a": 1}], dtype=object), y_val=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="not a plain array file"):
        load_data(path)


def test_labels_beyond_the_model_outputs(tmp_path: Path, net):
    path = write_npz(tmp_path / "d.npz", x_val=np.zeros((2, 64), np.float32), y_val=np.array([0, 9]))
    with pytest.raises(DataError, match="labels go up to 9 but the model has 4 outputs"):
        sqc.compress(net, [(1, 64)], "prune,finetune", data=path)


def test_top1_is_a_fraction(net):
    data = blobs()
    assert 0.0 <= top1(data)(net) <= 1.0


def write_net_files(tmp_path: Path, net: nn.Module, module: str) -> None:
    """An importable module ``module`` defining ``Net`` (for --arch) and its state_dict ``net.pt``."""
    (tmp_path / f"{module}.py").write_text(
        "import torch.nn as nn, torch\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.fc1 = nn.Linear(64, 32); self.fc2 = nn.Linear(32, 4)\n"
        "    def forward(self, x):\n"
        "        return self.fc2(torch.relu(self.fc1(x)))\n"
    )
    torch.save(net.state_dict(), tmp_path / "net.pt")


def write_data_file(tmp_path: Path) -> Dataset:
    """``d.npz`` holding :func:`blobs` with a training split; returns the same data."""
    data = blobs()
    np.savez(
        tmp_path / "d.npz",
        x_val=data.x_val.numpy(),
        y_val=data.y_val.numpy(),
        x_train=data.x_train.numpy(),
        y_train=data.y_train.numpy(),
    )
    return data


def test_cli_with_data_eval_and_finetune_plugins(cli, tmp_path: Path, monkeypatch, net):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "hooks_mod.py").write_text(
        "import json, torch\n"
        "def evaluate(model):\n"
        "    open('calls.log', 'a').write('eval\\n'); return 0.25\n"
        "def finetune(model, epochs):\n"
        "    open('calls.log', 'a').write(f'finetune {epochs}\\n')\n"
    )
    write_net_files(tmp_path, net, "net_mod")
    result = cli(
        "compress",
        "net.pt",
        "--arch",
        "net_mod:Net",
        "-p",
        "prune,finetune{epochs=2},quant,huffman",
        "--eval",
        "hooks_mod:evaluate",
        "--finetune",
        "hooks_mod:finetune",
        "-o",
        "n.sqc",
        "--json",
    )
    assert result.code == 0, result.err
    assert (tmp_path / "calls.log").read_text().split("\n")[:3] == ["eval", "finetune 2", "eval"]
    summary = json.loads(result.out)
    assert summary["passes"][1]["metric_after"] == 0.25
    write_data_file(tmp_path)
    result = cli(
        "compress",
        "net.pt",
        "--arch",
        "net_mod:Net",
        "-p",
        "prune{sparsity=0.5},finetune",
        "--data",
        "d.npz",
        "-o",
        "d.sqc",
    )
    assert result.code == 0, result.err
    assert re.search(r"\[2/2\] finetune: metric_before=[0-9.]+, metric_after=[0-9.]+", result.err)
    bad = cli(
        "compress",
        "net.pt",
        "--arch",
        "net_mod:Net",
        "-p",
        "finetune",
        "--data",
        "missing.npz",
        "-o",
        "x.sqc",
    )
    assert bad.code == 1 and "missing.npz: no such data file" in bad.err
    bad = cli(
        "compress",
        "net.pt",
        "--arch",
        "net_mod:Net",
        "-p",
        "finetune",
        "--eval",
        "hooks_mod:nope",
        "-o",
        "x.sqc",
    )
    assert bad.code == 1 and "--eval" in bad.err


@pytest.mark.parametrize("name", ["empty.npz", "empty.pt"])
def test_empty_data_file(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DataError, match=name.replace(".", r"\.") + ": cannot read data"):
        load_data(path)


def test_distillation_pulls_the_student_towards_the_teacher(net):
    """With distill=1 the loss is only the KL to the teacher's softened logits: training a fresh
    student must bring its outputs towards the teacher's, which labels alone do not ask for."""
    from sqc.runtime.data import cross_entropy_finetuner, teacher_logits

    data = blobs()
    teacher = teacher_logits(net, data)
    assert teacher.shape == (data.x_train.shape[0], 4)
    torch.manual_seed(1)
    student = Net()

    def gap() -> float:
        with torch.no_grad():
            return float(
                torch.nn.functional.kl_div(
                    torch.log_softmax(student(data.x_train), -1),
                    torch.log_softmax(teacher, -1),
                    reduction="batchmean",
                    log_target=True,
                )
            )

    before = gap()
    cross_entropy_finetuner(data, lr=0.05, teacher=teacher, distill=1.0)(student, 5)
    assert gap() < 0.5 * before


def test_distill_through_compress_and_its_errors(net):
    data = blobs()
    pipeline = "prune{sparsity=0.8},finetune{epochs=1 lr=0.05},share{bits=3},huffman"
    plain = sqc.compress(net, [(1, 64)], pipeline, data=data).to_bytes()
    distilled = sqc.compress(net, [(1, 64)], pipeline, data=data, distill=0.5).to_bytes()
    assert plain != distilled  # the loss changed, so the trained centroids did
    with pytest.raises(sqc.SqcError, match=r"distill=1.5: must be in \[0, 1\]"):
        sqc.compress(net, [(1, 64)], pipeline, data=data, distill=1.5)
    with pytest.raises(sqc.SqcError, match="distill= needs the built-in fine-tuner"):
        sqc.compress(net, [(1, 64)], "prune", evaluate=lambda m: 1.0, distill=0.5)
    with pytest.raises(sqc.SqcError, match="a finetune= function trains its own way"):
        sqc.compress(net, [(1, 64)], pipeline, data=data, finetune=lambda m, e: None, distill=0.5)
    with pytest.raises(sqc.SqcError, match="weight_decay= needs the built-in fine-tuner"):
        sqc.compress(net, [(1, 64)], "prune", evaluate=lambda m: 1.0, weight_decay=1e-4)
    with pytest.raises(sqc.SqcError, match=r"weight_decay=1.0: must be in \[0, 1\)"):
        sqc.compress(net, [(1, 64)], pipeline, data=data, weight_decay=1.0)


def test_recipe_compress_table_sets_the_run(cli, tmp_path: Path, monkeypatch, net):
    """A recipe's [compress] table (seed, distill, tolerance) applies; a command-line option wins."""
    from sqc.formats.container import read_layout

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_net_files(tmp_path, net, "net_mod2")
    data = write_data_file(tmp_path)
    (tmp_path / "r.toml").write_text(
        "[compress]\nseed = 5\ndistill = 0.5\n\n"
        "[[pass]]\nname = 'prune'\nsparsity = 0.8\n\n"
        "[[pass]]\nname = 'finetune'\nepochs = 1\nlr = 0.05\n\n"
        "[[pass]]\nname = 'share'\nbits = 3\n"
    )
    base = ("compress", "net.pt", "--arch", "net_mod2:Net", "--recipe", "r.toml", "--data", "d.npz")
    assert cli(*base, "-o", "a.sqc").code == 0
    assert cli(*base, "-o", "b.sqc", "--seed", "9").code == 0
    assert read_layout((tmp_path / "a.sqc").read_bytes()).seed == 5
    assert read_layout((tmp_path / "b.sqc").read_bytes()).seed == 9
    api = sqc.compress(
        net, [(1, 64)], Pipeline.from_recipe(tmp_path / "r.toml"), data=data, seed=5, distill=0.5
    )
    assert api.to_bytes() == (tmp_path / "a.sqc").read_bytes()  # the recipe alone reproduces the run
    (tmp_path / "bad.toml").write_text("[compress]\nseeds = 1\n[[pass]]\nname = 'prune'\n")
    result = cli("compress", "net.pt", "--arch", "net_mod2:Net", "--recipe", "bad.toml", "-o", "c.sqc")
    assert result.code == 1 and "[compress] has unknown key 'seeds'" in result.err


def test_divergence_guard_tells_runaway_from_noisy_training():
    from sqc.runtime.training import DivergenceGuard, TrainingDiverged

    calm = DivergenceGuard(window=10)
    for step in range(500):  # a decreasing loss with spikes of 3x is training, not divergence
        calm.update(0.5 / (1 + step / 50) * (3.0 if step % 37 == 0 else 1.0))
    rising = DivergenceGuard(window=10)
    with pytest.raises(TrainingDiverged, match="rose from"):
        for step in range(500):
            rising.update(0.05 * 1.02**step)
    with pytest.raises(TrainingDiverged, match="nan"):
        DivergenceGuard().update(float("nan"))


def overlapping_blobs(n: int = 4096, seed: int = 0) -> Dataset:
    """Four blobs that overlap: the loss stays well above zero, so gradients stay large."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.randn(4, 64, generator=g)[y] + torch.randn(n, 64, generator=g)
    return Dataset(x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :])


def test_finetune_retries_a_diverged_run_at_a_lower_rate(net):
    """Trained quantization at a rate far too high for 2-bit clusters of ~500 weights: the built-in
    fine-tuner's loss runs away, the pass restores the weights and retries at lr/10."""
    notes: list[str] = []
    artifact = sqc.compress(
        net,
        [(1, 64)],
        "finetune{epochs=3 lr=0.05},share{bits=2},finetune{epochs=2 lr=5}",
        data=overlapping_blobs(),
        progress=notes.append,
    )
    stats = artifact.model.report[-1].stats
    assert stats["lr_used"] == pytest.approx(0.05)
    assert artifact.model.report[-1].diagnostics == ["training diverged at lr 5 and was redone at lr 0.05"]
    assert [note.split(" (")[0] for note in notes if "diverged" in note] == [
        "fine-tuning diverged at lr 5",
        "fine-tuning diverged at lr 0.5",
    ]
    assert stats["metric_after"] >= stats["metric_before"] - 0.02  # not handed on at chance (0.25)
    calm = sqc.compress(
        net,
        [(1, 64)],
        "finetune{epochs=3 lr=0.05},share{bits=2},finetune{epochs=2 lr=0.01}",
        data=overlapping_blobs(),
    )
    assert "lr_used" not in calm.model.report[-1].stats  # a sound rate is left alone


def test_finetune_gives_up_after_its_retries(net):
    from sqc.compiler.pass_base import PassContext
    from sqc.runtime.training import DIVERGENCE_RETRIES, TrainingDiverged

    rates: list[float] = []

    def always_diverges(module: nn.Module, epochs: int, lr: float) -> None:
        rates.append(lr)
        with torch.no_grad():
            module.get_parameter("fc1.weight").add_(1.0)  # damage the module, as a diverged run does
        raise TrainingDiverged("the loss became nan at step 3")

    ir = trace(net, [(1, 64)])
    Pipeline.parse("prune{sparsity=0.5}").run(ir, sqc.compiler.pass_base.PassContext())
    before = {name: state.decode().clone() for name, state in ir.tensors.items()}
    ctx = PassContext(finetune=always_diverges)
    with pytest.raises(
        sqc.errors.SqcError,
        match=r"finetune failed: fine-tuning diverged at every learning rate down to 0\.0001",
    ):
        Pipeline.parse("finetune{epochs=1 lr=0.01}").run(ir, ctx)
    assert rates == pytest.approx([0.01 * 10**-i for i in range(DIVERGENCE_RETRIES)])
    for name, state in ir.tensors.items():  # records and module are as they were before the pass
        assert torch.equal(state.decode(), before[name])
        assert torch.equal(ir.graph_module.get_parameter(name).detach(), before[name])


def test_agp_stages_report_a_lowered_rate(net):
    """The agp schedule's fine-tuning goes through the same retry; the stages that needed it are named."""
    artifact = sqc.compress(
        net,
        [(1, 64)],
        "finetune{epochs=3 lr=0.05},prune{sparsity=0.5 schedule=agp steps=2 epochs=1 lr=2}",
        data=overlapping_blobs(),
    )
    stats = artifact.model.report[-1].stats
    assert stats["stages"] == 2
    stages = dict(entry.split(":") for entry in stats["lr_used"].split(";"))
    assert set(stages) == {"1", "2"} and all(float(lr) < 2 for lr in stages.values())
    assert "agp fine-tuning diverged at lr 2" in artifact.model.report[-1].diagnostics[-1]
