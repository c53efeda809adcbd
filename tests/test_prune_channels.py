"""``prune-channels``: removing a channel group gives exactly what zeroing it in the original gives.

The oracle: for the groups the pass chooses, zero the producing filters (weight rows, biases) and the
per-channel parameters (BatchNorm affine, depthwise filters) in a copy of the *original* model; a
zeroed channel is then zero everywhere downstream (every op on the way maps 0 to 0), so its consumers
see nothing from it. The pass instead deletes those slices and the consumers' columns. Both models must
compute the same function — in float64 up to summation order, in float32 within 1e-5.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sqc
import sqc.runtime.data
from sqc.app.inspection import describe_ir
from sqc.compiler.pass_base import PassContext
from sqc.compiler.pipeline import Pipeline
from sqc.errors import SqcError
from sqc.frontend.trace import trace
from sqc.models import LeNet5, ResNet, SqueezeNet
from sqc.passes.prune_channels import PruneChannels


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):  # statistics and affine far from identity
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


class BnFlatten(nn.Module):
    """conv + BN + ReLU + pool, flatten into a Linear (one channel = 16 features), BN1d, a hard-coded
    view width, and a PReLU with one slope per channel."""

    example_input_shape = (2, 3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.act = nn.PReLU(12)
        self.conv2 = nn.Conv2d(12, 10, 3, padding=1)
        self.fc1 = nn.Linear(10 * 4 * 4, 24)
        self.bn2 = nn.BatchNorm1d(24)
        self.fc2 = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.act(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.conv2(x))
        x = x.view(-1, 160)  # hard-coded width: the pass must rewrite it
        return self.fc2(F.relu(self.bn2(self.fc1(x))))


class Depthwise(nn.Module):
    """A MobileNet-style pair: depthwise 3x3 (groups = channels) + pointwise 1x1, with BN."""

    example_input_shape = (1, 3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.pw(F.relu(self.bn(self.dw(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ChannelSlice(nn.Module):
    """A channel consumed by ``x[:, :4]``, which the pass does not follow."""

    example_input_shape = (1, 3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(3, 8, 3)
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv1(x))
        b = F.relu(self.conv2(x))
        return self.head(torch.cat([a[:, :4], b], 1))


def small_resnet() -> nn.Module:
    return ResNet(blocks=(2, 1), widths=(8, 16), num_classes=10)  # identity and projection shortcuts


def small_squeezenet() -> nn.Module:  # Fire concats, simple and complex bypass
    return SqueezeNet(
        base_e=16, incr_e=16, num_fire=4, pools=(0, 2), conv1=(16, 3), bypass="complex", num_classes=6
    )


CASES = {
    "resnet": (small_resnet, (2, 3, 32, 32)),
    "fire": (small_squeezenet, (2, 3, 32, 32)),
    "bn_flatten": (BnFlatten, (2, 3, 8, 8)),
    "depthwise": (Depthwise, (1, 3, 16, 16)),
    "lenet5": (LeNet5, (2, 1, 28, 28)),
}


def zero_groups(model: nn.Module, groups) -> nn.Module:
    """The original model with the producing side of each group zeroed (consumers untouched)."""
    zeroed = copy.deepcopy(model)
    params = dict(zeroed.named_parameters())
    with torch.no_grad():
        for group in groups:
            for s in group.slices:
                if s.role != "in" and s.tensor in params:
                    params[s.tensor].narrow(s.axis, s.start, s.stop - s.start).zero_()
    return zeroed


@pytest.mark.parametrize("case", sorted(CASES))
def test_removing_equals_zeroing(case):
    factory, shape = CASES[case]
    model = seeded(factory())
    ir = trace(model, [shape])
    prune = PruneChannels(ratio=0.5)
    _, groups, _ = prune.plan(trace(model, [shape]))
    assert groups, "the pass must find something to remove"
    Pipeline([prune]).run(ir, PassContext())  # re-plans the same groups, removes, verifies

    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    zeroed = zero_groups(model, groups)
    expected = zeroed.double()(x.double())
    got = copy.deepcopy(ir.graph_module).double()(x.double())
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=1e-10)
    assert torch.allclose(ir.forward(x), zeroed.float()(x), rtol=0, atol=1e-5)
    original = model.double()(x.double())
    assert not torch.allclose(original, expected, atol=1e-6)  # the oracle did remove something

    record = ir.report[-1]
    assert record.stats["params_after"] < record.stats["params_before"]
    assert record.stats["flops_after"] < record.stats["flops_before"]


def test_groups_follow_residuals_concats_and_flatten():
    resnet = PruneChannels().plan(trace(seeded(small_resnet()), [(1, 3, 32, 32)]))[0].groups()
    spaces = {g.space for g in resnet}
    # the stem and both stage-1 blocks add into one residual stream: its channels go together
    assert ("conv1", "layer1.0.conv2", "layer1.1.conv2") in spaces
    assert ("layer2.0.conv2", "layer2.0.downsample.0") in spaces
    stem = next(g for g in resnet if g.space == ("conv1", "layer1.0.conv2", "layer1.1.conv2"))
    touched = {s.tensor for s in stem.slices}
    assert {
        "bn1.weight",
        "layer1.0.bn2.running_var",
        "layer1.1.conv1.weight",
        "layer2.0.conv1.weight",
    } <= touched

    lenet = PruneChannels().plan(trace(LeNet5(), [(1, 1, 28, 28)]))[0].groups()
    conv2 = next(g for g in lenet if g.space == ("conv2",))
    columns = [s for s in conv2.slices if s.tensor == "fc1.weight"]
    assert [(s.axis, s.stop - s.start) for s in columns] == [(1, 16)]  # one channel = a 4x4 block

    fire = PruneChannels().plan(trace(seeded(small_squeezenet()), [(1, 3, 32, 32)]))[0].groups()
    # fire 0 has an identity bypass: the 3x3 half of its concat (channels 8..15) is added to conv1's
    # channels 8..15, and so is the 3x3 half of fire 1; the next squeeze loses the same column
    e3 = [g for g in fire if g.space == ("features.0", "features.3.expand3x3", "features.4.expand3x3")]
    assert len(e3) == 8
    for index, group in enumerate(e3):
        rows = {(s.tensor, s.start) for s in group.slices if s.role == "out"}
        assert {("features.0.weight", 8 + index), ("features.3.expand3x3.weight", index)} <= rows
        columns = {(s.tensor, s.start) for s in group.slices if s.role == "in"}
        assert ("features.4.squeeze.weight", 8 + index) in columns


def test_outputs_and_inputs_keep_their_channels():
    ir = trace(seeded(small_resnet()), [(1, 3, 32, 32)])
    Pipeline.parse("prune-channels{ratio=0.9}").run(ir, PassContext())
    assert ir.tensors["fc.weight"].shape[0] == 10
    assert ir.tensors["conv1.weight"].shape[1] == 3
    assert all(s.shape[0] >= 1 for s in ir.weights())


def test_per_layer_global_and_layers_options():
    shape = [(1, 1, 28, 28)]
    ir = trace(LeNet5(), shape)
    Pipeline.parse("prune-channels{ratio=0.5 per_layer=conv1:0.25 layers=conv*}").run(ir, PassContext())
    assert ir.tensors["conv1.weight"].shape[0] == 15
    assert ir.tensors["conv2.weight"].shape[0] == 25
    assert ir.tensors["fc1.weight"].shape[0] == 500  # not selected by layers=conv*

    ir = trace(seeded(LeNet5()), shape)
    Pipeline.parse("prune-channels{ratio=0.5 scope=global criterion=l2}").run(ir, PassContext())
    removed = sum(int(v["channels_before"]) - int(v["channels_after"]) for v in ir.report[-1].layers.values())
    assert removed == (20 + 50 + 500) // 2


def test_unknown_consumer_is_refused_naming_the_node():
    with pytest.raises(SqcError, match=r"node getitem \(getitem\).*conv1") as info:
        sqc.compress(seeded(ChannelSlice()), None, "prune-channels")
    assert "\n" not in str(info.value)
    artifact = sqc.compress(seeded(ChannelSlice()), None, "prune-channels{unknown=keep}")
    assert artifact.model.tensors["conv1.weight"].shape[0] == 8  # kept
    assert artifact.model.tensors["conv2.weight"].shape[0] == 4  # pruned
    assert any("getitem" in d for d in artifact.report[0].diagnostics)


def test_grouped_conv_keeps_its_channels():
    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.g = nn.Conv2d(8, 8, 3, groups=2)
            self.b = nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.g(self.a(x)))

    ir = trace(Grouped(), [(1, 3, 8, 8)])
    Pipeline.parse("prune-channels").run(ir, PassContext())
    assert ir.tensors["a.weight"].shape[0] == 8 and ir.tensors["g.weight"].shape[0] == 8
    assert any("grouped conv" in d for d in ir.report[0].diagnostics)


def test_after_share_is_an_ordering_error():
    with pytest.raises(SqcError, match="prune-channels cannot run here"):
        Pipeline.parse("share,prune-channels")


def test_compressible_and_round_trips_with_inspect_showing_the_drop(tmp_path):
    model = seeded(small_squeezenet())
    plain = sqc.compress(model, [(1, 3, 32, 32)], "share{bits=5},huffman")
    artifact = sqc.compress(model, [(1, 3, 32, 32)], "prune-channels{ratio=0.5},share{bits=5},huffman")
    path = tmp_path / "fire.sqc"
    size = artifact.save(path)
    restored = sqc.load(path)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(restored(x), artifact.module()(x))
    before, after = sqc.inspect(plain)["totals"], sqc.inspect(path)["totals"]
    assert after["params"] < 0.5 * before["params"]
    assert after["macs"] < 0.5 * before["macs"] and after["flops"] < before["flops"]
    assert size < before["file_bytes"]
    described = describe_ir(trace(model, [(1, 3, 32, 32)]), "model")["totals"]
    assert described["macs"] == before["macs"]  # the container and the model agree on the count


def test_target_auto_keeps_the_metric_within_the_budget():
    from sqc.models import lenet5

    examples = Path(__file__).resolve().parent.parent / "examples"
    model = lenet5()
    model.load_state_dict(torch.load(examples / "lenet5.pt", weights_only=True))
    full = sqc.runtime.data.load_data(examples / "mnist_test_1k.npz")
    data = sqc.runtime.data.Dataset(full.x_val[:250], full.y_val[:250])  # a few evaluations of 250 images
    pipeline = "prune-channels{target=auto budget=0.01 sweep=0.5;0.75}"
    artifact = sqc.compress(model, None, pipeline, data=data)
    stats = artifact.report[0].stats
    assert stats["metric_before"] - stats["metric_after"] <= 0.01 + 1e-9
    assert stats["params_after"] < stats["params_before"]
    # the metric measured by zeroing is the metric of the model with the channels removed
    assert sqc.runtime.data.top1(data)(artifact.module()) == pytest.approx(stats["metric_after"], abs=1e-9)
    with pytest.raises(SqcError, match="needs an evaluation"):
        sqc.compress(model, None, "prune-channels{target=auto}")
    with pytest.raises(SqcError, match="budget"):
        Pipeline.parse("prune-channels{budget=0.1}")


def test_conftest_firenet_prunes_what_it_can_follow(firenet):
    """Grouped conv, sigmoid gating, PReLU, a channel softmax, a 1-d conv over flattened maps."""
    ir = trace(firenet, [(2, 3, 16, 16)])
    prune = PruneChannels()
    _, groups, _ = prune.plan(trace(firenet, [(2, 3, 16, 16)]))
    Pipeline([prune]).run(ir, PassContext())
    assert {g.space for g in groups} == {("squeeze",), ("seq",)}
    x = torch.randn(2, 3, 16, 16)
    expected = zero_groups(firenet, groups).double()(x.double())
    assert torch.allclose(copy.deepcopy(ir.graph_module).double()(x.double()), expected, rtol=0, atol=1e-10)
