"""Built-in passes on small traced models: what each does to the IR records, and what it reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sqc.compiler.pass_base import PassContext
from sqc.compiler.pipeline import Pipeline
from sqc.errors import PipelineError, SqcError
from sqc.frontend.trace import trace
from sqc.ir.records import FixedPoint, TensorState, all_finite, best_format
from sqc.passes import prune as prune_module
from sqc.passes.prune import lamp_scores
from sqc.passes.share import kmeans_1d


def run(model, text, shape=(1, 64)):
    ir = trace(model, [shape])
    Pipeline.parse(text).run(ir, PassContext())
    return ir


def test_prune_per_layer_hits_the_target(mlp):
    ir = run(mlp, "prune{sparsity=0.75 scope=layer}")
    for state in ir.weights():
        assert state.mask is not None
        assert state.density == pytest.approx(0.25, abs=1 / state.numel)
        kept = state.decode()[state.mask].abs()
        dropped = state.decode()  # pruned weights are exact zeros ...
        assert bool((dropped[~state.mask] == 0).all())
        original = dict(mlp.named_parameters())[state.name].detach().abs()
        assert original[~state.mask].max() <= original[state.mask].min()  # ... and were the smallest
        assert torch.equal(kept, original[state.mask])
    ir.verify()


def test_prune_global_ranks_all_layers_together(mlp):
    ir = run(mlp, "prune{sparsity=0.5 scope=global}")
    weights = list(ir.weights())
    kept = sum(s.kept for s in weights)
    total = sum(s.numel for s in weights)
    assert kept / total == pytest.approx(0.5, abs=2 / total)
    threshold = max(
        float(dict(mlp.named_parameters())[s.name].detach().abs()[~s.mask].max()) for s in weights
    )
    for s in weights:
        original = dict(mlp.named_parameters())[s.name].detach().abs()
        assert float(original[s.mask].min()) >= threshold


def lamp_reference(magnitudes: np.ndarray) -> np.ndarray:
    """LAMP scores straight from the definition, sorted ascending: w_u^2 over the squares of every
    weight of the layer at least as large."""
    ordered = np.sort(np.abs(magnitudes).astype(np.float64))
    out = [v * v / (ordered[ordered >= v] ** 2).sum() if v else 0.0 for v in ordered]
    return np.array(out)


def test_lamp_scores_by_hand():
    # squares 1, 4, 9: 1/(1+4+9), 4/(4+9), 9/9 -- every layer's largest weight scores 1
    assert lamp_scores(np.float32([3, 1, 2])).tolist() == pytest.approx([1 / 14, 4 / 13, 1.0])
    # equal magnitudes share the score of the first of them (4 / (4 + 4)): a tie is never split
    assert lamp_scores(np.float32([2, 1, 2])).tolist() == pytest.approx([1 / 9, 0.5, 0.5])
    # weights already pruned are zeros and score 0, an all-zero layer too
    assert lamp_scores(np.float32([0, 0, 3])).tolist() == [0.0, 0.0, 1.0]
    assert lamp_scores(np.float32([0, 0])).tolist() == [0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=80),
    chunk=st.sampled_from([1, 2, 3, 7, 1 << 20]),
)
def test_lamp_scores_in_chunks_follow_the_definition(values, chunk):
    """Many ties and tiny chunks: tie groups that cross chunk edges, and groups larger than a chunk."""
    magnitudes = np.float32(values) / 4
    saved = prune_module.LAMP_CHUNK
    prune_module.LAMP_CHUNK = chunk
    try:
        scores = lamp_scores(magnitudes.copy())
    finally:
        prune_module.LAMP_CHUNK = saved
    assert scores == pytest.approx(lamp_reference(magnitudes), rel=1e-6)


def test_prune_lamp_prunes_the_lowest_scores_of_all_layers(mlp):
    ir = run(mlp, "prune{sparsity=0.7 scope=lamp}")
    weights = list(ir.weights())
    original = {s.name: dict(mlp.named_parameters())[s.name].detach().flatten().numpy() for s in weights}
    pruned, kept = [], []
    for s in weights:
        values = original[s.name]
        mask = s.mask.flatten().numpy()
        ordered = np.sort(np.abs(values))
        scores = lamp_reference(values)
        score_of = dict(zip(ordered.tolist(), scores.tolist(), strict=True))  # random weights: no ties
        pruned += [score_of[abs(float(v))] for v in values[~mask]]
        kept += [score_of[abs(float(v))] for v in values[mask]]
    total = sum(s.numel for s in weights)
    assert len(pruned) == round(0.7 * total)
    assert max(pruned) <= min(kept)
    # the layers end at different densities: the score, not one magnitude, decides
    densities = [s.density for s in weights]
    assert max(densities) - min(densities) > 0.01


def tiny_last_layer(mlp):
    """``mlp`` with fc2's weights 1000x smaller than fc1's: a global magnitude threshold empties fc2."""
    with torch.no_grad():
        mlp.fc2.weight.mul_(1e-3)
    return mlp


@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_prune_lamp_never_empties_a_layer_where_global_does(mlp, sparsity):
    model = tiny_last_layer(mlp)
    flat = {s.layer: s.kept for s in run(model, f"prune{{sparsity={sparsity} scope=global}}").weights()}
    assert flat["fc2"] == 0  # the network is cut: every logit is a constant
    ir = run(model, f"prune{{sparsity={sparsity} scope=lamp}}")
    states = {s.layer: s for s in ir.weights()}
    assert states["fc2"].kept > 0 and states["fc1"].kept > 0
    # every layer keeps its largest weight (score 1)
    for s in ir.weights():
        original = dict(model.named_parameters())[s.name].detach().abs()
        assert bool(s.mask.flatten()[original.flatten().argmax()])
    total = sum(s.numel for s in ir.weights())
    assert 1 - sum(s.kept for s in ir.weights()) / total == pytest.approx(sparsity, abs=1 / total)


def test_prune_lamp_is_cumulative_and_honours_overrides_and_layers(mlp):
    first = run(mlp, "prune{sparsity=0.5 scope=layer}")
    both = run(mlp, "prune{sparsity=0.5 scope=layer},prune{sparsity=0.8 scope=lamp}")
    for a, b in zip(first.weights(), both.weights(), strict=True):
        assert not bool((b.mask & ~a.mask).any())  # weights already pruned stay pruned
    total = sum(s.numel for s in both.weights())
    assert 1 - sum(s.kept for s in both.weights()) / total == pytest.approx(0.8, abs=1 / total)
    assert not run(mlp, "prune{sparsity=0.5 scope=lamp},prune{sparsity=0.5 scope=lamp}").report[1].changed

    ir = run(mlp, "prune{sparsity=0.8 scope=lamp per_layer=fc2:0.5}")
    densities = {s.layer: s.density for s in ir.weights()}
    assert densities["fc2"] == pytest.approx(0.5, abs=1 / 480)
    assert densities["fc1"] == pytest.approx(0.2, abs=1 / 3072)  # a pool of one layer: its own sparsity

    ir = run(mlp, "prune{sparsity=0.8 scope=lamp layers=fc1}")
    masks = {s.layer: s.mask for s in ir.weights()}
    assert masks["fc2"] is None and masks["fc1"] is not None


def test_prune_target_auto_takes_no_pooled_scope():
    for scope in ("global", "lamp"):
        with pytest.raises(PipelineError, match=f"scope={scope} does not apply"):
            Pipeline.parse(f"prune{{target=auto scope={scope}}}")


def test_prune_defaults_to_global_magnitude(mlp):
    """The default that measured best at equal size (benchmarks/bench_defaults.py): one magnitude
    threshold for all layers, so the layers end at different densities; scope=layer stays an option."""
    from sqc.passes.prune import Prune

    assert Pipeline.parse("prune").passes[0].scope == "global" == Prune().scope
    default = {s.name: s.mask for s in run(mlp, "prune{sparsity=0.8}").weights()}
    pooled = {s.name: s.mask for s in run(mlp, "prune{sparsity=0.8 scope=global}").weights()}
    assert all(torch.equal(default[name], pooled[name]) for name in default)
    layer = {s.layer: s.density for s in run(mlp, "prune{sparsity=0.8 scope=layer}").weights()}
    assert layer["fc1"] == pytest.approx(layer["fc2"], abs=0.01)
    densities = [float(m.float().mean()) for m in default.values()]
    assert abs(densities[0] - densities[1]) > 0.01
    # target=auto allocates per layer: the default pooled scope gives way, and says so in the text
    auto = Pipeline.parse("prune{target=auto}")
    assert auto.passes[0].scope == "layer" == Prune(target="auto").scope
    assert "scope=layer" in str(auto) and Pipeline.parse(str(auto)) == auto


def test_prune_overrides_and_cumulative(mlp):
    ir = run(mlp, "prune{sparsity=0.5 per_layer=fc2:0.9},prune{sparsity=0.3}")
    densities = {s.layer: s.density for s in ir.weights()}
    assert densities["fc1"] == pytest.approx(0.5, abs=0.01)  # already past 30%: unchanged
    assert densities["fc2"] == pytest.approx(0.1, abs=0.01)
    record = ir.report[0]
    assert record.stats["sparsity"] == pytest.approx(
        1 - (0.5 * 64 * 48 + 0.1 * 480) / (64 * 48 + 480), abs=0.01
    )
    assert record.layers["fc1.weight"]["bytes_after"] < record.layers["fc1.weight"]["bytes_before"]
    assert not ir.report[1].changed


def test_prune_warns_about_unused_override(mlp):
    ir = run(mlp, "prune{per_layer=fc9:0.5}")
    assert any("fc9" in d for d in ir.report[0].diagnostics)


def test_layer_pattern_matching_nothing_is_an_error(mlp):
    with pytest.raises(SqcError, match="matches no weight tensor"):
        run(mlp, "prune{layers=conv*}")


def test_share_limits_distinct_values_and_keeps_pruned_zeros(mlp):
    ir = run(mlp, "prune{sparsity=0.8},share{bits=3}")
    for state in ir.weights():
        values = state.decode()
        assert state.codebook is not None and state.codebook.numel() <= 8
        assert len(torch.unique(values[state.mask])) <= 8
        assert bool((values[~state.mask] == 0).all())
        assert bool((state.codes[~state.mask] == 0).all())
        # every kept weight sits on its nearest centroid
        original = dict(mlp.named_parameters())[state.name].detach()[state.mask]
        distances = (original.unsqueeze(1) - state.codebook.unsqueeze(0)).abs()
        nearest = state.codebook[distances.argmin(1)]
        assert torch.allclose((original - values[state.mask]).abs(), (original - nearest).abs(), atol=1e-7)
    ir.verify()


def test_share_per_layer_bits(mlp):
    ir = run(mlp, "share{bits=2 per_layer=fc1:5}")
    sizes = {s.layer: s.codebook.numel() for s in ir.weights()}
    assert sizes == {"fc1": 32, "fc2": 4}


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=20, max_size=300),
    bits=st.integers(1, 4),
)
def test_kmeans_1d_converges_to_a_lloyd_fixed_point(data, bits):
    """What exact Lloyd iterations guarantee: every value sits on its nearest centroid, and every
    non-empty cluster's centroid is the mean of its values (up to float32 rounding of the codebook).
    Which local optimum is reached depends on tie-breaking, so no other implementation is the oracle."""
    values = torch.tensor(data, dtype=torch.float64)
    k = 1 << bits
    codebook, codes = kmeans_1d(values, k, "linear", iterations=500)
    assert codes.min() >= 0 and codes.max() < codebook.numel() <= k
    assert bool((codebook[1:] > codebook[:-1]).all())
    book = codebook.to(torch.float64)
    if torch.unique(values).numel() <= k:
        assert torch.equal(book[codes.long()], values.to(torch.float32).to(torch.float64))
        return
    nearest = (values.unsqueeze(1) - book.unsqueeze(0)).abs().min(1).values
    assert torch.allclose((book[codes.long()] - values).abs(), nearest, atol=1e-12)
    for cluster in torch.unique(codes):
        members = values[codes == cluster]
        assert float(book[cluster]) == pytest.approx(float(members.mean()), rel=1e-6, abs=1e-6)


def test_kmeans_linear_init_keeps_the_extremes():
    values = torch.cat([torch.randn(10_000) * 0.01, torch.tensor([1.0, -1.0])])
    codebook, _ = kmeans_1d(values, 16, "linear")
    assert float(codebook.max()) == pytest.approx(1.0, abs=0.05)
    assert float(codebook.min()) == pytest.approx(-1.0, abs=0.05)


def test_quant_codes_and_error_bound(mlp):
    ir = run(mlp, "quant{bits=6}")
    for state in ir.weights():
        assert state.kind == "fixed" and state.fmt is not None and state.fmt.bits == 6
        assert int(state.codes.min()) >= -32 and int(state.codes.max()) <= 31
        original = dict(mlp.named_parameters())[state.name].detach()
        step = 2.0 ** -state.fmt.frac[0]
        inside = original.abs() <= 31 * step
        assert float((state.decode() - original)[inside].abs().max()) <= step / 2 + 1e-9
        stats = ir.report[0].layers[state.name]
        # the report keeps 6 significant digits
        worst = float((state.decode() - original).abs().max())
        assert stats["max_abs_error"] == pytest.approx(worst, rel=1e-5)


def test_quant_per_channel_formats(mlp):
    with torch.no_grad():
        mlp.fc1.weight[0] *= 100  # one loud channel must not coarsen the others
    ir = run(mlp, "quant{bits=8 granularity=channel}")
    state = ir.tensors["fc1.weight"]
    assert state.fmt.per_channel and len(state.fmt.frac) == 48
    assert state.fmt.frac[0] < state.fmt.frac[1]
    ir.verify()


def test_quant_after_share_rounds_the_codebook(mlp):
    shared = run(mlp, "prune{sparsity=0.5},share{bits=4}")
    before = {s.name: s.decode().clone() for s in shared.weights()}
    Pipeline.parse("quant{bits=4}").run(shared, PassContext())
    for state in shared.weights():
        assert state.kind == "shared" and state.fmt is not None
        assert torch.equal(state.fmt.dequantize(state.fmt.quantize(state.codebook)), state.codebook)
        # the reported error (from the centroid moves) is the largest change of any weight
        moved = float((state.decode() - before[state.name]).abs().max())
        assert shared.report[-1].layers[state.name]["max_abs_error"] == pytest.approx(moved, rel=1e-5)
    shared.verify()


def test_quant_params_stores_biases_in_fixed_point(mlp, tmp_path):
    import sqc

    floats = sqc.compress(mlp, [(1, 64)], "prune{sparsity=0.5},share{bits=4},quant{bits=12 params=0},huffman")
    fixed = sqc.compress(mlp, [(1, 64)], "prune{sparsity=0.5},share{bits=4},quant{bits=12 params=10},huffman")
    default = sqc.compress(mlp, [(1, 64)], "prune{sparsity=0.5},share{bits=4},quant{bits=12},huffman")
    assert default.model.tensors["fc1.bias"].fmt.bits == 16  # the default: 16-bit biases
    bias = fixed.model.tensors["fc1.bias"]
    assert bias.kind == "fixed" and bias.fmt is not None and bias.fmt.bits == 10
    assert floats.model.tensors["fc1.bias"].kind == "dense"
    true = mlp.fc1.bias.detach()
    step = 2.0 ** -bias.fmt.frac[0]
    assert float((bias.decode() - true).abs().max()) <= step / 2 + 1e-12  # rounding only, no clipping
    tensor_bytes = [sqc.inspect(a)["components"]["tensors"] for a in (floats, fixed)]
    assert tensor_bytes[1] <= tensor_bytes[0] - (48 + 10) * 2  # 32 -> 10 bits per bias, less headers
    x = torch.randn(8, 64)
    assert torch.allclose(fixed.model.forward(x), floats.model.forward(x), atol=0.05)
    fixed.save(tmp_path / "f.sqc")
    restored = sqc.load(tmp_path / "f.sqc")
    assert torch.equal(restored.get_parameter("fc1.bias"), bias.decode())
    assert torch.equal(restored(x), fixed.model.forward(x))
    with pytest.raises(PipelineError, match="params"):
        Pipeline.parse("quant{params=40}")


def test_best_format_prefers_least_error():
    values = torch.tensor([0.1, -0.2, 0.3, 5.0])
    fmt = best_format(values, 8, per_channel=False)
    error = ((fmt.dequantize(fmt.quantize(values)) - values) ** 2).sum()
    for frac in range(-2, 12):
        other = FixedPoint(8, (frac,))
        assert float(error) <= float(((other.dequantize(other.quantize(values)) - values) ** 2).sum()) + 1e-12


def test_fixed_point_rounding_rule_is_half_to_even_then_saturate():
    fmt = FixedPoint(4, (1,))  # step 0.5, codes -8..7
    values = torch.tensor([0.25, 0.75, -0.25, 100.0, -100.0])
    assert fmt.quantize(values).tolist() == [0, 2, 0, 7, -8]


def test_huffman_changes_bytes_not_values(mlp):
    plain = run(mlp, "prune{sparsity=0.9},share{bits=5}")
    coded = run(mlp, "prune{sparsity=0.9},share{bits=5},huffman")
    for name, state in coded.tensors.items():
        assert torch.equal(state.decode(), plain.tensors[name].decode())
    stats = coded.report[-1].stats
    assert stats["bytes_after"] <= stats["bytes_before"]
    assert all(s.coder == "huffman" for s in coded.weights())


def test_compressed_module_computes_with_the_records(mlp):
    ir = run(mlp, "prune{sparsity=0.5},quant{bits=8}")
    x = torch.randn(3, 64)
    expected = torch.nn.functional.linear(
        torch.relu(
            torch.nn.functional.linear(x, ir.tensors["fc1.weight"].decode(), ir.tensors["fc1.bias"].decode())
        ),
        ir.tensors["fc2.weight"].decode(),
        ir.tensors["fc2.bias"].decode(),
    )
    assert torch.equal(ir.forward(x), expected)


def test_passes_are_reusable_and_frozen():
    pipeline = Pipeline.parse("prune{sparsity=0.5}")
    with pytest.raises(AttributeError):
        pipeline.passes[0].sparsity = 0.1  # type: ignore[misc]
    assert math.isclose(pipeline.passes[0].sparsity, 0.5)


def test_failing_pass_names_itself_and_the_reproducer(mlp):
    with pytest.raises(SqcError) as info:
        run(mlp, "prune,share{layers=nothing*}")
    assert "pass share failed" in str(info.value)
    assert "pipeline='prune{sparsity=0.9" in str(info.value)


def test_verifier_catches_a_bad_record(mlp):
    ir = run(mlp, "share{bits=2}")
    ir.tensors["fc1.weight"].codes[0, 0] = 99
    with pytest.raises(SqcError, match="codes outside the codebook"):
        ir.verify()
    with pytest.raises(PipelineError):
        Pipeline.parse("huffman,prune")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=64),
    st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_all_finite_agrees_with_isfinite(values, dtype):
    tensor = torch.tensor(values, dtype=torch.float32).to(dtype)
    assert all_finite(tensor) == bool(torch.isfinite(tensor).all())


def test_verifier_catches_non_finite_values_anywhere(mlp):
    ir = run(mlp, "prune{sparsity=0.5}")
    for bad in (float("nan"), float("inf"), float("-inf")):
        ir.tensors["fc1.bias"].dense[-1] = bad
        with pytest.raises(SqcError, match="NaN or Inf"):
            ir.verify()


def test_verifier_catches_every_way_module_and_records_part(mlp):
    """verify() skips re-decoding records that are unchanged since sync; each way of changing one side
    without the other must still be caught."""

    def broken(change):
        ir = run(mlp, "prune{sparsity=0.5},share{bits=3}")
        ir.verify()
        change(ir, ir.tensors["fc1.weight"], ir.graph_module.get_parameter("fc1.weight"))
        with pytest.raises(SqcError, match="differs from the record"):
            ir.verify()

    def in_place_on_param(ir, state, held):
        with torch.no_grad():
            held.add_(0.5)  # what an optimiser step does

    broken(in_place_on_param)
    broken(lambda ir, state, held: setattr(held, "data", held.detach() * 2))  # rebound to other values
    broken(lambda ir, state, held: state.codebook.mul_(2))  # record written in place, no sync
    broken(lambda ir, state, held: setattr(state, "codebook", state.codebook + 1))  # record replaced, no sync
    # a sync makes it consistent again
    ir = run(mlp, "prune{sparsity=0.5},share{bits=3}")
    ir.tensors["fc1.weight"].codebook = ir.tensors["fc1.weight"].codebook + 1
    ir.sync(["fc1.weight"])
    ir.verify()


def test_verifier_does_not_decode_records_unchanged_since_sync(mlp, monkeypatch):
    ir = run(mlp, "prune{sparsity=0.5},share{bits=3},huffman")
    calls = []
    original = TensorState.decode
    monkeypatch.setattr(TensorState, "decode", lambda self: calls.append(self.name) or original(self))
    ir.verify()
    assert [n for n in calls if n.endswith(".weight")] == []  # dense biases decode to themselves: free
    calls.clear()
    ir.tensors["fc2.weight"].codebook = ir.tensors["fc2.weight"].codebook * 0.5
    with pytest.raises(SqcError, match=r"fc2\.weight"):
        ir.verify()
    assert [n for n in calls if n.endswith(".weight")] == ["fc2.weight"]


def test_kept_count_follows_the_mask(mlp):
    ir = run(mlp, "prune{sparsity=0.5}")
    state = ir.tensors["fc1.weight"]
    kept = state.kept
    assert kept == int(state.mask.sum())
    state.mask[tuple(state.mask.nonzero()[0].tolist())] = False  # in place: the count must follow
    assert state.kept == kept - 1
    state.set_mask(torch.ones(state.shape, dtype=torch.bool))
    assert state.kept == state.numel


def test_options_built_in_python_are_validated_too():
    from sqc.passes.prune import Prune

    with pytest.raises(PipelineError, match="sparsity"):
        Prune(sparsity=float("nan"))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=3000),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_kth_smallest_is_the_order_statistic_with_the_zeros_set_aside(
    size: int, zero_share: float, drop_share: float, seed: int
) -> None:
    """The pruning threshold takes the zeros (earlier pruning) out before selecting: the same value as
    sorting, whether the zeros alone reach the count or not, also across chunk boundaries."""
    rng = np.random.default_rng(seed)
    magnitudes = np.abs(rng.standard_normal(size)).astype(np.float32)
    magnitudes[rng.random(size) < zero_share] = 0.0
    magnitudes[rng.random(size) < 0.1] = 0.5  # ties away from zero too
    drop = round(drop_share * size)
    expected = -1.0 if drop == 0 else float(np.sort(magnitudes)[drop - 1])
    saved = prune_module.SELECT_CHUNK
    prune_module.SELECT_CHUNK = 97  # many chunks on small arrays
    try:
        assert prune_module._kth_smallest(magnitudes.copy(), drop) == expected
    finally:
        prune_module.SELECT_CHUNK = saved
