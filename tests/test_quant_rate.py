"""The rate-controlled quantizer: free steps (scaled fixed point), RDO, their container round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sqc
from sqc.errors import PipelineError, SqcError
from sqc.formats import container
from sqc.formats.tensor_codec import decode_tensor, encode_tensor
from sqc.ir.records import MAX_STEP_MULT, FixedPoint, TensorState
from sqc.passes import _rate
from sqc.passes._rate import rd_cost, rdo_levels, tree_costs
from sqc.passes.quant import qp_step, quant_record, quantize_step


@given(st.floats(min_value=2.0**-50, max_value=2.0**10, allow_nan=False, allow_infinity=False))
def test_scaled_step_keeps_eight_significant_bits(step: float) -> None:
    fmt = FixedPoint.scaled(8, step)
    (exact,) = fmt.steps
    assert abs(exact - step) <= step / 256  # the multiplier is 8 bits: 128..255 before reduction
    assert all(m % 2 == 1 and 1 <= m <= MAX_STEP_MULT for m in fmt.mult)  # canonical: odd or absent
    assert exact == math.ldexp(float(fmt.multipliers[0]), -fmt.frac[0])


@given(
    st.integers(min_value=2, max_value=16),
    st.integers(min_value=1, max_value=MAX_STEP_MULT),
    st.integers(min_value=-20, max_value=40),
    st.lists(st.integers(min_value=-(1 << 15), max_value=(1 << 15) - 1), min_size=1, max_size=64),
)
def test_scaled_dequantize_is_exact_and_quantize_inverts_it(
    bits: int, mult: int, frac: int, raw: list[int]
) -> None:
    """``value = code * mult * 2**-frac`` exactly in float32, and quantizing the value gives the code back:
    the fixed-point meaning the integer targets rely on."""
    fmt = FixedPoint(bits, (frac,), (mult,))
    codes = torch.tensor(raw, dtype=torch.int32).clamp(fmt.qmin, fmt.qmax)
    values = fmt.dequantize(codes)
    want = [math.ldexp(float(c * mult), -frac) for c in codes.tolist()]
    assert values.tolist() == want
    assert torch.equal(fmt.quantize(values), codes)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=-30, max_value=-8),
    st.sampled_from([0.0, 0.1, 1.0]),
    st.booleans(),
)
def test_qp_record_prunes_its_zero_levels_and_fits_its_step(
    seed: int, qp: int, rdo: float, pruned: bool
) -> None:
    """After ``quant{qp}`` a record decodes to ``code * step`` exactly; a pruned record's mask keeps only
    its non-zero levels, an unpruned one gets that mask when at least half the levels are zero; and with
    ``fit=mse`` the stored step (the least-squares fit when closer) never has more error than the qp step
    itself."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(16, 30, generator=gen) * 0.1
    mask = torch.rand(16, 30, generator=gen) > 0.8 if pruned else None
    state = TensorState("w", (16, 30), "weight", dense=values.clone())  # type: ignore[arg-type]
    state.set_mask(mask)
    quant_record(state, qp, rdo, "mse")
    assert state.codes is not None and state.fmt is not None
    nonzero = state.codes != 0
    if mask is not None:
        assert state.mask is not None and torch.equal(state.mask, mask & nonzero)
    elif int(nonzero.sum()) <= 0.5 * nonzero.numel():
        assert state.mask is not None and torch.equal(state.mask, nonzero)
    else:
        assert state.mask is None
    step = state.fmt.steps[0]
    decoded = state.decode().to(torch.float64)
    assert torch.equal(decoded, state.codes.to(torch.float64) * step)
    kept = torch.ones_like(values, dtype=torch.bool) if mask is None else mask
    at_qp = FixedPoint.scaled(2, qp_step(qp)).steps[0]
    reference = values.to(torch.float64)[kept]
    fitted_error = float(((decoded[kept] - reference) ** 2).sum())
    qp_error = float(((state.codes.to(torch.float64)[kept] * at_qp - reference) ** 2).sum())
    assert fitted_error <= qp_error + 1e-15


def test_scaled_format_limits() -> None:
    with pytest.raises(ValueError, match="multipliers"):
        FixedPoint(8, (3,), (256,))
    with pytest.raises(ValueError, match="at most 16"):
        FixedPoint(17, (3,), (3,))
    with pytest.raises(ValueError, match="step multipliers for"):
        FixedPoint(8, (3, 4), (3,))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=-40, max_value=-8),
    st.sampled_from([0.0, 0.1, 0.5]),
    st.booleans(),
    st.sampled_from(["raw", "huffman", "rans"]),
    st.booleans(),
)
def test_scaled_tensor_round_trips_through_the_codec(
    seed: int, qp: int, rdo: float, pruned: bool, coder: str, per_channel: bool
) -> None:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(12, 20, generator=gen) * 0.1
    mask = torch.rand(12, 20, generator=gen) > 0.7 if pruned else None
    fmt, codes = quantize_step(values, qp_step(qp), mask, rdo, "w", per_channel=per_channel)
    assert fmt.per_channel == per_channel
    state = TensorState("w", (12, 20), "weight", codes=codes, fmt=fmt, coder=coder)  # type: ignore[arg-type]
    state.set_mask(mask)
    codec, payload, _ = encode_tensor(state)
    restored, _ = decode_tensor(codec, payload, "w", (12, 20), "weight")
    assert restored.fmt == fmt
    assert torch.equal(restored.decode(), state.decode())


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1), st.sampled_from([0.05, 0.2, 1.0]))
def test_rdo_never_costs_more_than_rounding(seed: int, rdo: float) -> None:
    """Under the rate table the choice was made with, every weight's ``D + lambda R`` is at most that of
    plain rounding (and so is the sum)."""
    gen = torch.Generator().manual_seed(seed)
    scaled = torch.randn(2000, generator=gen, dtype=torch.float64) * 6
    qmax = 63
    # one RDO iteration from rounding: the table it used is the rounding's own
    levels, _ = rdo_levels(scaled, -qmax - 1, qmax, rdo, iterations=1)
    rounded = torch.round(scaled).clamp(-qmax - 1, qmax)
    table = tree_costs(np.bincount((rounded + qmax + 1).long().numpy(), minlength=128), 7)
    cost = torch.from_numpy(table)
    j_rdo = rd_cost(scaled, levels, cost, -qmax - 1, rdo)
    j_round = rd_cost(scaled, rounded, cost, -qmax - 1, rdo)
    assert bool((j_rdo <= j_round + 1e-12).all())
    assert float(j_rdo.sum()) < float(j_round.sum())  # and it finds something on Gaussian weights


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.sampled_from([0.03, 0.1, 1.0]),
    st.integers(min_value=0, max_value=50_000),
    st.sampled_from([1, 3, 63]),
)
def test_rdo_native_and_numpy_choose_the_same_levels(seed: int, rdo: float, pruned: int, qmax: int) -> None:
    """The C core's ``rdo_pick`` and the numpy path make the same choice for every weight, saturated
    ones included (weights far outside the level range), with and without pruned positions."""
    if _rate._native is None:
        pytest.skip("the C core is not built")
    gen = torch.Generator().manual_seed(seed)
    scaled = torch.randn(3000, generator=gen, dtype=torch.float64) * (qmax / 2 + 1)
    scaled[:10] *= 40  # beyond the range on both sides
    native, native_table = rdo_levels(scaled, -qmax - 1, qmax, rdo, pruned=pruned)
    saved, _rate._native = _rate._native, None
    try:
        numpy_levels, numpy_table = rdo_levels(scaled, -qmax - 1, qmax, rdo, pruned=pruned)
    finally:
        _rate._native = saved
    assert torch.equal(native, numpy_levels)
    assert np.array_equal(native_table, numpy_table)


def test_tree_costs_are_the_order_zero_code_lengths() -> None:
    """With one context set the binary tree is an order-0 model: costs follow -log2 of the frequency."""
    hist = np.array([800, 100, 50, 50, 0, 0, 0, 0], dtype=np.float64)
    costs = tree_costs(hist, 3)
    assert costs[0] < costs[1] < costs[4]
    assert abs(costs[0] - -math.log2(800 / 1000)) < 0.01
    assert np.isfinite(costs).all()


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 48)
        self.fc2 = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_qp_pipeline_is_smaller_than_bits_at_equal_error_and_writes_format_1_4(tmp_path) -> None:
    torch.manual_seed(0)
    model = Mlp()
    with torch.no_grad():  # trained weights are heavy-tailed: a few large ones set a power-of-two range
        for layer in (model.fc1, model.fc2):
            w = torch.distributions.Laplace(0.0, 0.02).sample(layer.weight.shape)
            w.view(-1)[::97] *= 8
            layer.weight.copy_(w)
    weights = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if "weight" in n])

    def run(pipeline: str) -> tuple[int, float, object]:
        artifact = sqc.compress(model, [(1, 64)], pipeline)
        path = tmp_path / "m.sqc"
        artifact.save(path, force=True)
        loaded = sqc.load(path)
        got = torch.cat([p.detach().reshape(-1) for n, p in loaded.named_parameters() if "weight" in n])
        layout = container.read_layout(path.read_bytes())
        return path.stat().st_size, float(((got - weights) ** 2).mean()), layout.version

    size_bits, mse_bits, version_bits = run("quant{bits=6},rans")
    size_qp, mse_qp, version_qp = run("quant{qp=-26},rans")
    # 1.4 only when a scaled step is stored (1.5 when a context-coded mask also uses mask model 1)
    assert version_bits == (1, 2) and version_qp in ((1, 4), (1, 5))
    assert mse_qp < mse_bits and size_qp < size_bits


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=-30, max_value=-10),
    st.sampled_from([0.0, 0.1, 1.0]),
    st.booleans(),
    st.booleans(),
)
def test_gain_fit_keeps_each_slice_s_projection_on_the_original(
    seed: int, qp: int, rdo: float, pruned: bool, per_channel: bool
) -> None:
    """``fit=gain`` changes only the step, never the codes, and scales them so that the quantized
    weights' projection on the original weights is the original (to the 8 significant bits of a
    scaled step): per tensor, or per output channel with ``per_channel``."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.distributions.Laplace(0.0, 0.05).sample((16, 40))
    values = values * (torch.rand(16, 1, generator=gen) + 0.2)  # channels of different scales
    mask = torch.rand(16, 40, generator=gen) > 0.6 if pruned else None
    if mask is not None:
        values = values * mask
    fmt, codes = quantize_step(values, qp_step(qp), mask, rdo, "w", "gain", per_channel)
    _, mse_codes = quantize_step(values, qp_step(qp), mask, rdo, "w", "mse", per_channel)
    assert torch.equal(codes, mse_codes)
    decoded = fmt.dequantize(codes).to(torch.float64)
    w = values.to(torch.float64)
    slices = [(decoded, w)] if not per_channel else list(zip(decoded, w, strict=True))
    for got, want in slices:
        if bool(got.any()):
            assert float((got * want).sum() / (want * want).sum()) == pytest.approx(1.0, abs=2**-7)


def test_gain_fit_keeps_a_network_s_output_scale_where_least_squares_shrinks_it() -> None:
    """Rounding most small weights to zero takes their share out of every layer's output; with the
    least-squares step a stack of layers passes that loss on, layer after layer, and with ``fit=gain``
    it does not (the mechanism that cost CREPE-full its pitch accuracy at qp -1, where frozen batch-norm
    statistics and fixed biases turn an attenuated signal into wrong activations)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(3):
        layer = nn.Linear(128, 128, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.distributions.Laplace(0.0, 0.125).sample((128, 128)))
        layers += [layer, nn.ReLU()]
    model = nn.Sequential(*layers).eval()
    x = torch.randn(512, 128)
    with torch.no_grad():
        reference = model(x)

    def output_scale(fit: str) -> float:
        quantized = sqc.compress(model, [(1, 128)], f"quant{{qp=-8 rdo=0 fit={fit}}},rans").module()
        with torch.no_grad():
            got = quantized(x)
        return float((got * reference).sum() / (reference * reference).sum())

    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert float((weights.abs() < qp_step(-8) / 2).float().mean()) > 0.6  # most weights round to zero
    assert output_scale("mse") < 0.7  # the least-squares step attenuates the output by a third
    assert output_scale("gain") == pytest.approx(1.0, abs=0.05)


def test_qp_with_channel_granularity_stores_a_step_per_channel(tmp_path) -> None:
    model = Mlp()
    artifact = sqc.compress(model, [(1, 64)], "quant{qp=-20 granularity=channel},rans")
    state = artifact.model.tensors["fc1.weight"]
    assert state.fmt is not None and len(state.fmt.steps) == state.shape[0] and state.fmt.per_channel
    path = tmp_path / "m.sqc"
    artifact.save(path)
    x = torch.randn(8, 64)
    with torch.no_grad():
        assert torch.equal(sqc.load(path)(x), artifact.module()(x))
    assert "granularity=channel" in artifact.report[0].spec
    layer = artifact.report[0].layers["fc1.weight"]
    assert layer["step"] == pytest.approx(min(state.fmt.steps), rel=1e-5)  # the report keeps 6 digits
    assert layer["step_max"] == pytest.approx(max(state.fmt.steps), rel=1e-5)


def test_qp_options_are_checked() -> None:
    with pytest.raises(PipelineError, match="fit"):
        sqc.compress(Mlp(), [(1, 64)], "quant{qp=-20 fit=median}")
    with pytest.raises(PipelineError, match="qp"):
        sqc.compress(Mlp(), [(1, 64)], "quant{qp=99}")
    with pytest.raises(SqcError, match="raise qp"):
        sqc.compress(Mlp(), [(1, 64)], "quant{qp=-120}")
    with pytest.raises(SqcError, match="shared"):
        sqc.compress(Mlp(), [(1, 64)], "share{bits=4},quant{qp=-20}")


class TwoHeads(nn.Module):
    """Two independent linear heads; the second's output is amplified 30x, so its weights matter 900x more
    to the output error: a per-layer allocation must give it the finer step."""

    def __init__(self) -> None:
        super().__init__()
        self.quiet = nn.Linear(32, 8)
        self.loud = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.quiet(x), 30 * self.loud(x)], dim=1)


def test_qp_auto_gives_the_sensitive_layer_the_finer_step_within_the_tolerance(tmp_path) -> None:
    torch.manual_seed(0)
    model = TwoHeads().eval()
    x = torch.randn(256, 32)
    with torch.no_grad():
        reference = model(x)

    def negative_error(module: nn.Module) -> float:
        with torch.no_grad():
            return -float(((module(x) - reference) ** 2).mean())

    tolerance = 0.05
    artifact = sqc.compress(
        model, [(1, 32)], "quant{qp=auto},rans", evaluate=negative_error, tolerance=tolerance
    )
    record = artifact.report[0]
    steps = {name: layer["step"] for name, layer in record.layers.items()}
    assert steps["loud.weight"] < steps["quiet.weight"] / 4  # same weight scale, very different cost
    assert -negative_error(artifact.module()) <= tolerance + 1e-9  # the budget holds, measured
    assert record.stats["qp"] == "auto" and record.stats["verifications"] >= 1
    path = tmp_path / "m.sqc"
    artifact.save(path)
    restored = sqc.load(path)
    assert -negative_error(restored) == pytest.approx(-negative_error(artifact.module()))


def test_quant_curves_round_trip_through_json_and_the_report() -> None:
    from sqc.compiler.sensitivity import Analysis, Point
    from sqc.ir.records import PassRecord

    analysis = Analysis(metric=0.9, samples=10, rate_bits=5)
    analysis.quant["fc1.weight"] = [Point(-30.0, 0.9, 900), Point(-20.0, 0.85, 400)]
    analysis.numel["fc1.weight"] = 100
    again = Analysis.from_json(analysis.to_json(), "x")
    assert again.quant == analysis.quant
    record = PassRecord("sensitivity", False, analysis.report_stats(), analysis.report_layers(["fc1.weight"]))
    assert Analysis.from_report(record, "x").quant == analysis.quant


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1), st.sampled_from([0.3, 1.0, 3.0]))
def test_ecsq_regions_are_intervals_and_each_value_takes_its_cheapest_centroid(seed: int, rdo: float) -> None:
    """Entropy-constrained k-means: sorted codebook, contiguous regions, and each value's centroid the
    argmin of ``(x - c)**2 + lambda * bits(c)`` under the rates of the final assignment's neighbours."""
    from sqc.passes._rate import entropy_costs
    from sqc.passes.share import kmeans_1d

    torch.manual_seed(seed)
    values = torch.distributions.Laplace(0.0, 0.05).sample((3000,))
    book, codes = kmeans_1d(values, 32, rdo=rdo)
    assert bool((book[1:] > book[:-1]).all())
    order = torch.argsort(values)
    assert bool((codes[order][1:] >= codes[order][:-1]).all())  # intervals, in codebook order
    plain_book, plain_codes = kmeans_1d(values, 32)
    hist = np.bincount(codes.numpy(), minlength=book.numel())
    plain_hist = np.bincount(plain_codes.numpy(), minlength=plain_book.numel())
    rate = float((hist * entropy_costs(hist)).sum())
    plain_rate = float((plain_hist * entropy_costs(plain_hist)).sum())
    assert book.numel() <= plain_book.numel() and rate < plain_rate  # fewer bits for the indices


def test_ecsq_is_smaller_than_plain_sharing_at_equal_error() -> None:
    """On Laplacian weights, ``share{rdo}`` at 5 bits codes smaller than plain sharing at the bit width
    whose error is no lower (the rANS-coded size, the container's own encoder)."""
    from sqc.formats.tensor_codec import encoded_size
    from sqc.passes.share import share_record

    torch.manual_seed(3)
    values = torch.distributions.Laplace(0.0, 0.05).sample((64, 256))

    def coded(bits: int, rdo: float) -> tuple[int, float]:
        state = TensorState("w", (64, 256), "weight", dense=values.clone(), coder="rans")
        share_record(state, bits, rdo=rdo)
        return encoded_size(state), float(((state.decode() - values) ** 2).mean())

    size_ecsq, mse_ecsq = coded(6, 1.0)
    plain = [coded(bits, 0.0) for bits in (6, 5, 4, 3)]
    size_plain = min(size for size, mse in plain if mse <= mse_ecsq)
    assert size_ecsq < size_plain


def test_sensitivity_measures_quant_curves_that_qp_auto_reuses() -> None:
    torch.manual_seed(1)
    model = TwoHeads().eval()
    x = torch.randn(64, 32)
    with torch.no_grad():
        reference = model(x)
    calls = []

    def negative_error(module: nn.Module) -> float:
        calls.append(1)
        with torch.no_grad():
            return -float(((module(x) - reference) ** 2).mean())

    pipeline = 'sensitivity{sparsities="" bits="" qps=-20;-12;-6},quant{qp=auto},rans'
    artifact = sqc.compress(model, [(1, 32)], pipeline, evaluate=negative_error, tolerance=0.02)
    sweep, quant = artifact.report[0], artifact.report[1]
    for name, layer in quant.layers.items():
        measured = {float(k.removeprefix("bytes@q")) for k in sweep.layers[name] if k.startswith("bytes@q")}
        assert len(measured) == 3 and layer["qp"] in measured  # chosen among the swept points
    assert "verifications" in quant.stats
