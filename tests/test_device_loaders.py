"""Any device, any dataset, progress on long work (issue 16, items 4-6).

Runs on the CPU: accelerator cases skip with their reason where none exists, and the checks that a
device exists are exercised with ``torch.accelerator`` monkeypatched. Loader tests count the batches a
loader yields, to show that sqc streamed them rather than collecting the dataset.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from sqc_blobs import Net  # tests/models_pkg, on the path (conftest.py)
from sqc_blobs import blobs as shared_blobs

import sqc
from sqc.errors import SqcError
from sqc.frontend.trace import trace
from sqc.runtime.data import Dataset, top1
from sqc.runtime.devices import on_device, resolve_device
from sqc.runtime.loaders import LoaderError, StreamTop1, resolve_loaders
from sqc.runtime.progress import Note, ProgressView

PIPELINE = "prune{target=auto},finetune{epochs=1 lr=0.05},share{bits=3},finetune{epochs=1 lr=0.01},huffman"


def blobs(n: int = 512, seed: int = 0, spread: float = 3.0) -> Dataset:
    return shared_blobs(n, seed, spread)


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return Net().eval()


class Counting:
    """A re-iterable loader over tensors that counts the batches it hands out (``sized=False``: no
    ``len``, like an iterable dataset of unknown length)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int = 32, *, sized: bool = True) -> None:
        self.x, self.y, self.batch, self.sized = x, y, batch, sized
        self.yielded = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.x.shape[0], self.batch):
            self.yielded += 1
            yield self.x[start : start + self.batch], self.y[start : start + self.batch]

    def __len__(self) -> int:
        if not self.sized:
            raise TypeError("no length")
        return (self.x.shape[0] + self.batch - 1) // self.batch


def loaders_of(data: Dataset, batch: int = 32, *, sized: bool = True) -> tuple[Counting, Counting]:
    assert data.x_train is not None and data.y_train is not None
    return Counting(data.x_train, data.y_train, batch, sized=sized), Counting(data.x_val, data.y_val, 64)


# -- any device --------------------------------------------------------------------------------------


def test_explicit_cpu_device_writes_the_default_file(net):
    """``device="cpu"`` (or a ``torch.device``) is the default run, byte for byte: evaluation, the
    sweep and fine-tuning ran the same code on the same tensors."""
    data = blobs()
    files = [
        sqc.compress(net, [(1, 64)], PIPELINE, data=data, tolerance=0.02, **device).to_bytes()
        for device in ({}, {"device": "cpu"}, {"device": torch.device("cpu")}, {"device": "cpu:0"})
    ]
    assert files[0] == files[1] == files[2] == files[3]


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("meta", "device=meta: the meta device holds no values"),
        ("foo", "device=foo: not a device (give cpu, cuda, cuda:N or mps)"),
        ("cuda:x", "device=cuda:x: not a device"),
    ],
)
def test_bad_devices_are_refused_naming_the_option(net, device: str, message: str):
    with pytest.raises(SqcError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sqc.compress(net, [(1, 64)], "prune", device=device)


def test_a_missing_accelerator_is_refused_before_any_work(net, monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    with pytest.raises(SqcError, match=r"device=cuda: cuda is not available to this torch .* no accelerator"):
        sqc.compress(net, [(1, 64)], "prune", device="cuda")


def test_device_check_against_a_fake_accelerator(monkeypatch):
    """With one CUDA device present (faked), ``cuda`` and ``cuda:0`` are taken, ``cuda:1`` and ``mps``
    are not; the message names the option as the caller spells it."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0", "--device") == torch.device("cuda", 0)
    with pytest.raises(
        SqcError, match=r"^--device cuda:1: there is no such device \(1 cuda device\(s\): 0..0\)"
    ):
        resolve_device("cuda:1", "--device")
    with pytest.raises(SqcError, match=r"device=mps: mps is not available .*its accelerator is cuda"):
        resolve_device("mps")


def test_on_device_moves_the_module_and_puts_back_the_very_tensors(net):
    """The module copy is moved for the block (here to copies on the CPU, standing in for a device)
    and, afterwards, holds the exact tensors it held before: the IR's sync stamps still hold, so the
    records need no re-decoding, and nothing the block did to the copies survives."""
    from sqc.ir.records import _still_synced

    ir = trace(net, [(1, 64)])
    ir.sync()  # as after any pass: every tensor stamped with the storage it was bound to
    module = ir.graph_module
    before = {name: t.data for name, t in module.named_parameters()}
    x = torch.randn(5, 64)
    expected = module(x)
    with on_device(module, torch.device("cpu"), move=lambda t, _: t.clone()) as moved:
        inside = dict(moved.named_parameters())
        assert all(inside[n].data_ptr() != before[n].data_ptr() for n in before)  # copies, not the records
        assert torch.equal(moved(x), expected)
        inside["fc1.bias"].data.add_(1.0)  # an evaluation that writes into the module: discarded
    after = dict(module.named_parameters())
    assert all(after[n].data_ptr() == before[n].data_ptr() for n in before)
    assert all(_still_synced(ir.tensors[n], after[n]) for n in before)
    assert torch.equal(module(x), expected)
    ir.verify()


def test_a_sweep_on_an_accelerator_stays_in_this_process(net):
    """With a non-CPU device and ``workers=0``, a process-pool sweep runs here, on the device (a pool
    of CPU processes would each open their own context on it); a given number of workers is honoured,
    and they evaluate on their CPUs, which a note says."""
    from sqc.compiler.pass_base import PassContext
    from sqc.compiler.sensitivity import Analysis, Sweeper
    from sqc.runtime.executors import Executor

    ir = trace(net, [(1, 64)])
    notes: list[str] = []
    ctx = PassContext(evaluate=top1(blobs()), progress=notes.append, executor=Executor("process", 0))
    ctx.device = torch.device("cuda")  # as resolve_device would give on a machine with CUDA
    assert Sweeper(ir, ctx, Analysis())._choose(20).kind == "serial"
    assert notes[-1] == "sensitivity: sweeping on cuda in this process"
    ctx.executor = Executor("process", 2)
    assert Sweeper(ir, ctx, Analysis())._choose(20).kind == "process"
    assert notes[-1] == "sensitivity: the process workers evaluate on their CPUs, not on cuda"


ACCELERATORS = [
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(),
            reason="no CUDA device here: the cuda run is compared with the CPU's",
        ),
    ),
    pytest.param(
        "mps",
        marks=pytest.mark.skipif(
            not torch.backends.mps.is_available(),
            reason="no MPS device here: the mps run is compared with the CPU's",
        ),
    ),
]


@pytest.mark.parametrize("device", ACCELERATORS)
def test_an_accelerator_writes_the_cpu_file(net, device: str):
    """Without training, the decisions are the same on an accelerator (top-1 on separable blobs does
    not flip with the order of float additions), so the file is the CPU's byte for byte; with
    training, the masks and codes are the same and the metric agrees to floating-point noise."""
    data = blobs()
    plain = "prune{target=auto},share{bits=auto},huffman"
    cpu = sqc.compress(net, [(1, 64)], plain, data=data, tolerance=0.02)
    on = sqc.compress(net, [(1, 64)], plain, data=data, tolerance=0.02, device=device)
    assert on.to_bytes() == cpu.to_bytes()
    cpu = sqc.compress(net, [(1, 64)], PIPELINE, data=data, tolerance=0.02)
    on = sqc.compress(net, [(1, 64)], PIPELINE, data=data, tolerance=0.02, device=device)
    for state in on.model.weights():
        assert state.dense is None or state.dense.device.type == "cpu"  # records stay on the CPU
        assert torch.equal(state.mask, cpu.model.tensors[state.name].mask)
    assert on.report[-2].stats["metric_after"] == pytest.approx(
        cpu.report[-2].stats["metric_after"], abs=0.02
    )
    loaders = loaders_of(data)
    streamed = sqc.compress(net, [(1, 64)], PIPELINE, loaders=loaders, tolerance=0.02, device=device)
    assert streamed.report[-2].stats["metric_after"] > 0.5


# -- any dataset -------------------------------------------------------------------------------------


def test_loader_fine_tune_streams_batches_and_learns():
    """A fresh network on overlapping blobs: the built-in fine-tuner over a training loader raises the
    accuracy, and the loaders handed out exactly the batches of the epochs and evaluations — one at a
    time, nothing collected up front."""
    torch.manual_seed(3)
    fresh = Net().eval()
    data = blobs(n=1024, spread=1.0)
    train, val = loaders_of(data)
    artifact = sqc.compress(fresh, [(1, 64)], "finetune{epochs=3 lr=0.05}", loaders=(train, val))
    stats = artifact.report[0].stats
    assert stats["metric_after"] > stats["metric_before"] + 0.2
    assert train.yielded == 3 * len(train)  # three epochs of 16 batches
    assert val.yielded == 1 + 2 * len(val)  # the up-front check, then before and after


def test_a_loader_evaluates_like_the_data_file(net):
    data = blobs()
    _, val = loaders_of(data)
    assert StreamTop1(val, "val")(net) == top1(data)(net)
    assert StreamTop1(val, "val", samples=70)(net) == top1(data, 70)(net)


def test_a_loader_without_len_counts_epochs(net):
    """A loader with no ``len`` trains with the schedule and the progress counted in epochs."""
    data = blobs()
    train, val = loaders_of(data, sized=False)
    notes: list[str] = []
    sqc.compress(net, [(1, 64)], "finetune{epochs=2}", loaders=(train, val), progress=notes.append)
    counted = [(str(n), n.done, n.total) for n in notes if isinstance(n, Note) and n.total is not None]
    assert counted == [("finetune: epoch 1/2", 1, 2), ("finetune: epoch 2/2", 2, 2)]
    assert train.yielded == 2 * 8  # two epochs of 256 samples in batches of 32


def test_distillation_over_loaders(net):
    data = blobs()
    pipeline = "prune{sparsity=0.8},finetune{epochs=1 lr=0.05},share{bits=3},huffman"
    plain = sqc.compress(net, [(1, 64)], pipeline, loaders=loaders_of(data)).to_bytes()
    distilled = sqc.compress(net, [(1, 64)], pipeline, loaders=loaders_of(data), distill=0.5).to_bytes()
    assert plain != distilled
    with pytest.raises(SqcError, match="distill= needs the built-in fine-tuner"):
        sqc.compress(net, [(1, 64)], "prune", loaders=(None, loaders_of(data)[1]), distill=0.5)


def test_loaders_need_a_train_loader_to_fine_tune(net):
    _, val = loaders_of(blobs())
    with pytest.raises(SqcError, match="needs training"):
        sqc.compress(net, [(1, 64)], "finetune", loaders=(None, val))
    pruned = sqc.compress(
        net, [(1, 64)], "prune{target=auto}", loaders=(None, val), tolerance=0.01, executor="serial"
    )
    assert pruned.report[0].stats["metric_after"] >= pruned.report[0].stats["metric_before"] - 0.01


def _generator() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield torch.zeros(2, 64), torch.zeros(2, dtype=torch.long)


@pytest.mark.parametrize(
    ("loaders", "message"),
    [
        ("no_such_module_xyz:fn", r"loaders=no_such_module_xyz:fn: cannot import no_such_module_xyz"),
        ("sqc.models:no_such_fn", r"loaders=sqc.models:no_such_fn: sqc.models has no attribute no_such_fn"),
        ("nocolon", r"loaders=nocolon: expected pkg.module:fn"),
        (lambda: 7, r"loaders=.*<lambda>: returned int, expected \(train_loader, val_loader\)"),
        (lambda: (1, 2, 3), r"returned a 3-item tuple, expected \(train_loader, val_loader\)"),
        (lambda: 1 / 0, r"<lambda>: calling it raised ZeroDivisionError: division by zero"),
        ((None, None), r"val_loader is None"),
        ((None, 5), r"val_loader is a int, not an iterable of \(x, y\) batches"),
        ((None, _generator()), r"val_loader is a one-shot iterator \(generator\)"),
        ((None, [{"x": 1}]), r"batch 1 of the validation loader is dict, expected an \(x, y\) pair"),
        ((None, [(torch.zeros(2, 64),) * 3]), r"batch 1 of the validation loader is a 3-item tuple"),
        (
            (None, [(torch.zeros(2, 64), torch.zeros(2))]),
            r"y is torch.float32 \(2,\), expected a 1-D integer",
        ),
        (
            (None, [(torch.zeros(2, 64), torch.zeros(3, dtype=torch.long))]),
            r"x has shape \(2, 64\) but y holds 3",
        ),
        ((None, [(torch.zeros(2, 64), torch.tensor([0, 9]))]), r"a label is 9 but the model has 4 outputs"),
        (
            (None, [(torch.zeros(2, 7), torch.tensor([0, 1]))]),
            r"the model cannot take batches of shape \(2, 7\)",
        ),
        ((None, []), r"the validation loader yielded no batches"),
    ],
)
def test_bad_loaders_are_one_line_errors_naming_the_option(net, loaders, message: str):
    with pytest.raises(LoaderError, match=message) as caught:
        sqc.compress(net, [(1, 64)], "prune", loaders=loaders)
    assert "\n" not in str(caught.value) and "loaders=" in str(caught.value)


def test_a_bad_training_batch_fails_the_pass_in_one_line(net):
    _, val = loaders_of(blobs())
    train = [(torch.zeros(2, 64), torch.tensor([0, 1])), (torch.zeros(2, 64), torch.tensor([0, 6]))]
    with pytest.raises(
        SqcError, match=r"finetune failed: .*a training label is 6 but the model has 4 outputs"
    ):
        sqc.compress(net, [(1, 64)], "finetune", loaders=(train, val))

    class Broken:
        def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            raise OSError("image folder gone")

    with pytest.raises(
        SqcError, match=r"the training loader failed at batch 1 \(OSError: image folder gone\)"
    ):
        sqc.compress(net, [(1, 64)], "finetune", loaders=(Broken(), val))


def test_data_and_loaders_are_exclusive(net):
    data = blobs()
    with pytest.raises(SqcError, match="give data or loaders, not both"):
        sqc.compress(net, [(1, 64)], "prune", data=data, loaders=loaders_of(data))


def test_resolve_loaders_takes_a_function_or_the_pair():
    data = blobs()
    pair = loaders_of(data)
    assert resolve_loaders(lambda: pair).val is pair[1]
    assert resolve_loaders(list(pair), "--loaders").train is pair[0]


# -- the command line --------------------------------------------------------------------------------

LOADERS_MODULE = """
import torch

def _blobs(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 64, generator=g) * 3
    y = torch.randint(0, 4, (n,), generator=g)
    x = centres[y] + torch.randn(n, 64, generator=g)
    return x, y

def good():
    x, y = _blobs()
    data = torch.utils.data.TensorDataset(x[:256], y[:256])
    val = torch.utils.data.TensorDataset(x[256:], y[256:])
    return (torch.utils.data.DataLoader(data, batch_size=32, shuffle=True),
            torch.utils.data.DataLoader(val, batch_size=64))

def one():
    return good()[0]

def dicts():
    return None, [{"image": torch.zeros(2, 64), "label": torch.zeros(2, dtype=torch.long)}]

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def cli_net(tmp_path: Path, monkeypatch, net) -> Path:
    """``net.pt`` (``--arch netmod_dev:Net``) and ``loadmod_dev`` (``--loaders loadmod_dev:good``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "netmod_dev.py").write_text(
        "import torch.nn as nn, torch\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.fc1 = nn.Linear(64, 32); self.fc2 = nn.Linear(32, 4)\n"
        "    def forward(self, x):\n"
        "        return self.fc2(torch.relu(self.fc1(x)))\n"
    )
    (tmp_path / "loadmod_dev.py").write_text(LOADERS_MODULE)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    return tmp_path


BASE = ("compress", "net.pt", "--arch", "netmod_dev:Net", "--input-shape", "1,64")


def test_cli_loaders_fine_tune_with_plain_progress(cli, cli_net: Path):
    """Off a terminal, progress is plain lines on stderr — counted work a few times, not per batch —
    with no terminal control codes; ``--json`` keeps stderr free of them."""
    passes = "prune{sparsity=0.5},finetune{epochs=2 lr=0.05},share{bits=4},huffman"
    result = cli(*BASE, "--loaders", "loadmod_dev:good", "--passes", passes, "--device", "cpu", "-o", "a.sqc")
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    epochs = [line for line in lines if line.startswith("finetune: epoch")]
    assert epochs[0] == "finetune: epoch 1/2 (1/16)" and epochs[-1] == "finetune: epoch 2/2 (16/16)"
    assert len(epochs) <= 11  # the first step, every tenth, the last
    assert "[2/4] finetune…" not in lines and "\x1b[" not in result.err  # captions are for the bar
    quiet = cli(*BASE, "--loaders", "loadmod_dev:good", "--passes", passes, "--json", "-o", "b.sqc")
    assert quiet.code == 0 and "finetune: epoch" not in quiet.err


def test_cli_device_cpu_is_the_default_file(cli, cli_net: Path):
    passes = "prune{sparsity=0.5},finetune{epochs=1},share{bits=4},huffman"
    assert cli(*BASE, "--loaders", "loadmod_dev:good", "--passes", passes, "-o", "a.sqc").code == 0
    assert (
        cli(*BASE, "--loaders", "loadmod_dev:good", "--passes", passes, "-o", "b.sqc", "--device", "cpu").code
        == 0
    )
    assert (cli_net / "a.sqc").read_bytes() == (cli_net / "b.sqc").read_bytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--device", "foo"), "--device foo: not a device (give cpu, cuda, cuda:N or mps)"),
        (("--device", "meta"), "--device meta: the meta device holds no values"),
        (("--device", "cuda"), "--device cuda: cuda is not available to this torch"),
        (("--loaders", "no_such_mod_q:fn"), "--loaders no_such_mod_q:fn: cannot import no_such_mod_q"),
        (
            ("--loaders", "loadmod_dev:missing"),
            "--loaders loadmod_dev:missing: loadmod_dev has no attribute missing",
        ),
        (
            ("--loaders", "loadmod_dev:NOT_A_FUNCTION"),
            "--loaders loadmod_dev:NOT_A_FUNCTION: NOT_A_FUNCTION is not callable",
        ),
        (
            ("--loaders", "loadmod_dev:one"),
            "--loaders loadmod_dev:one: returned DataLoader, expected (train_loader, val_loader)",
        ),
        (
            ("--loaders", "loadmod_dev:dicts"),
            "--loaders loadmod_dev:dicts: batch 1 of the validation loader is dict",
        ),
        (("--loaders", "loadmod_dev:good", "--data", "d.npz"), "give either --data or --loaders, not both"),
    ],
)
def test_cli_bad_device_or_loaders_is_one_line(cli, cli_net: Path, monkeypatch, options, message: str):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)  # also on a machine with CUDA
    (cli_net / "d.npz").write_bytes(b"")
    result = cli(*BASE, *options, "--passes", "prune", "-o", "x.sqc")
    lines = result.err.splitlines()
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith(f"sqc: error: {message}"), result.err
    assert not (cli_net / "x.sqc").exists()


def test_cli_sensitivity_takes_loaders_and_device(cli, cli_net: Path):
    import json

    result = cli(
        "sensitivity", "net.pt", "--arch", "netmod_dev:Net", "--input-shape", "1,64", "--loaders",
        "loadmod_dev:good", "--device", "cpu", "--sparsities", "0.5,0.9", "--bits", "", "--no-png",
        "--json", "--executor", "serial",
    )  # fmt: skip
    assert result.code == 0, result.err
    curves = json.loads(result.out)
    assert set(curves["layers"]) == {"fc1.weight", "fc2.weight"} and 0 <= curves["metric"] <= 1
    bad = cli("sensitivity", "net.pt", "--arch", "netmod_dev:Net", "--input-shape", "1,64", "--device", "foo")
    assert bad.code == 1 and "--device foo: not a device" in bad.err


# -- progress ----------------------------------------------------------------------------------------


class Recorder:
    """A console stand-in: what was printed, and whether it is a terminal."""

    def __init__(self, terminal: bool) -> None:
        self.is_terminal = terminal
        self.lines: list[str] = []

    def print(self, text: str) -> None:
        self.lines.append(text)


def test_plain_progress_prints_a_few_lines_per_counted_activity():
    console = Recorder(terminal=False)
    view = ProgressView(console)
    with view:
        view("[1/2] sensitivity…")
        for done in range(1, 101):
            view(Note("sensitivity: fc1 sparsity 0.5", done, 100))
        for done in range(1, 4):
            view(Note("prune: verifying allocation", done, None))  # unknown total: every step
        view(Note("finetune: epoch 1/1", 1, 2))  # a new activity starts a fresh count
    assert "[1/2] sensitivity…" not in console.lines  # an uncounted note is the bar's caption only
    counted = [line for line in console.lines if line.startswith("sensitivity: fc1")]
    assert [line.rsplit(" ", 1)[1] for line in counted] == [f"({n}/100)" for n in (1, *range(10, 101, 10))]
    assert console.lines[-4:] == [
        "prune: verifying allocation (1)",
        "prune: verifying allocation (2)",
        "prune: verifying allocation (3)",
        "finetune: epoch 1/1 (1/2)",
    ]
    quiet = Recorder(terminal=False)
    with ProgressView(quiet, quiet=True) as view:
        view(Note("x", 1, 2))
    assert quiet.lines == []


def test_terminal_progress_draws_a_bar_per_activity():
    """On a terminal the notes drive one rich task: counted notes set its total and completion, a new
    activity (another total, or a count that goes back) gets a fresh task and so a fresh estimate."""
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with ProgressView(console) as view:
        view("compressing…")
        assert view.live.tasks[0].total is None
        for done in range(1, 41):
            view(Note("sensitivity: point", done, 40))
        task = view.live.tasks[0]
        assert (task.total, task.completed, task.description) == (40, 40, "sensitivity: point")
        view(Note("finetune: epoch 1/2", 1, 16))
        assert len(view.live.tasks) == 1 and view.live.tasks[0].total == 16
        assert view.live.tasks[0].id != task.id
        view("share: fc1")
        assert view.live.tasks[0].total is None and view.live.tasks[0].description == "share: fc1"
    assert view.live is None


def test_notes_are_strings_that_may_count(net):
    """A listener that wants text gets text (``Note`` is a ``str``); sweep points carry their count."""
    notes: list[str] = []
    sqc.compress(
        net, [(1, 64)], 'sensitivity{bits=""}', data=blobs(), progress=notes.append, executor="serial"
    )
    assert all(isinstance(n, str) for n in notes)
    points = [n for n in notes if n.startswith("sensitivity: fc")]
    assert [(n.done, n.total) for n in points] == [(i, len(points)) for i in range(1, len(points) + 1)]


def test_training_context_takes_a_device(net):
    """``sqc.runtime.training.training(ir, device=…)`` checks the device like every entry point; on the CPU
    the module trains in place and the records take the result."""
    from sqc.runtime.training import training

    ir = trace(net, [(1, 64)])
    with pytest.raises(SqcError, match="device=foo: not a device"), training(ir, device="foo"):
        pass
    before = ir.tensors["fc1.weight"].decode().clone()
    with training(ir, device="cpu") as module:
        torch.optim.SGD(module.parameters(), lr=0.1).zero_grad()
        module(torch.randn(4, 64)).sum().backward()
        for param in module.parameters():
            param.data -= 0.1 * param.grad
    assert not torch.equal(ir.tensors["fc1.weight"].decode(), before)
    ir.verify()


def test_agp_retraining_and_the_divergence_guard_over_loaders(net):
    """``prune{schedule=agp}`` retrains each stage over the training loader, and a run whose loss runs
    away over streamed batches is undone and redone at a tenth of the rate, as over a data file."""
    data = blobs(n=4096, spread=0.3)
    train, val = loaders_of(data, batch=64)
    agp = sqc.compress(
        net, [(1, 64)], "prune{sparsity=0.8 schedule=agp steps=2 epochs=1}", loaders=(train, val)
    )
    assert agp.report[0].stats["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert train.yielded == 2 * len(train)  # one epoch after each of the two stages
    pipeline = "finetune{epochs=3 lr=0.05},share{bits=2},finetune{epochs=2 lr=5}"
    artifact = sqc.compress(net, [(1, 64)], pipeline, loaders=loaders_of(data, batch=64))
    assert artifact.report[-1].stats["lr_used"] < 5
    assert artifact.report[-1].diagnostics[0].startswith("training diverged at lr 5 and was redone")
