"""The reference model zoo: published parameter counts, the SqueezeNet design space, loading by name.

Big models are built on the meta device (no weights are allocated), so these tests stay fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sqc.errors import SqcError
from sqc.frontend.loading import load_model
from sqc.frontend.trace import trace
from sqc.models import ZOO, Fire, SqueezeNet, get_model, param_count, squeezenet, zoo_table

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

PUBLISHED = {
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "lenet300": 266_610,
    "lenet5": 431_080,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_equal_the_published_ones(name):
    assert param_count(name) == PUBLISHED[name]


def test_every_model_declares_its_input_shape():
    for name in ZOO:
        with torch.device("meta"):
            model = get_model(name)
        assert len(model.example_input_shape) == 4


def test_squeezenet_generator_follows_the_paper_formula():
    base_e, incr_e, freq, pct, sr = 64, 32, 3, 0.25, 0.5
    net = squeezenet(base_e=base_e, incr_e=incr_e, freq=freq, pct_3x3=pct, squeeze_ratio=sr, pools=(0, 4))
    fires = [m for m in net.features if isinstance(m, Fire)]
    assert len(fires) == 8
    for i, fire in enumerate(fires):
        e = base_e + incr_e * (i // freq)
        assert fire.expand3x3.out_channels == round(pct * e)
        assert fire.expand1x1.out_channels + fire.expand3x3.out_channels == e
        assert fire.squeeze.out_channels == round(sr * e)
    pools = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [2, 7]  # after conv1+relu, and before the fifth Fire module
    # the default metaparameters are SqueezeNet v1.0 exactly
    assert param_count("squeezenet") == PUBLISHED["squeezenet1_0"]


def test_squeezenet_bypass_variants():
    simple = squeezenet(bypass="simple")
    kinds = [m.shortcut for m in simple.features if isinstance(m, Fire)]
    assert kinds == ["none", "simple"] * 4  # fire3, 5, 7, 9 as in the paper
    assert param_count("squeezenet", bypass="simple") == PUBLISHED["squeezenet1_0"]  # identity: free
    complex_ = squeezenet(bypass="complex")
    projected = [m for m in complex_.features if isinstance(m, Fire) and m.bypass is not None]
    assert len(projected) == 4
    extra = sum(m.bypass.weight.numel() + m.bypass.bias.numel() for m in projected)
    assert param_count("squeezenet", bypass="complex") == PUBLISHED["squeezenet1_0"] + extra
    x = torch.randn(1, 3, 64, 64)
    assert complex_.eval()(x).shape == (1, 1000)
    with pytest.raises(SqcError, match="simple bypass needs equal widths"):
        Fire(96, 16, 64, 64, "simple")


def test_bad_generator_options_are_one_line_errors():
    with pytest.raises(SqcError, match="pct_3x3"):
        SqueezeNet(pct_3x3=1.0)
    with pytest.raises(SqcError, match="unknown model 'resnet50'"):
        get_model("resnet50")
    with pytest.raises(SqcError, match="model squeezenet1_1"):
        get_model("squeezenet1_1", base_e=3)


@pytest.mark.parametrize("name", ["lenet5", "squeezenet1_1"])
def test_zoo_models_trace_and_run(name):
    model = get_model(name).eval()
    ir = trace(model)  # the declared input shape is enough
    x = torch.randn(ir.inputs[0].shape)
    assert torch.allclose(ir.forward(x), model(x), atol=1e-5)


def test_shipped_checkpoints_load_into_the_zoo_by_arch():
    for name in ("lenet300", "lenet5"):
        loaded = load_model(EXAMPLES / f"{name}.pt", f"sqc.models:{name}")
        assert sum(p.numel() for p in loaded.module.parameters()) == PUBLISHED[name]


def test_zoo_table_lists_every_model():
    rows = {row["name"]: row for row in zoo_table()}
    assert set(rows) == set(ZOO)
    assert rows["vgg16"]["fp32_mb"] == pytest.approx(553.43, abs=0.01)
