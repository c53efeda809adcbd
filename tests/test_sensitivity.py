"""Sensitivity curves, budget allocation, prune{target=auto} / share{bits=auto}, and `sqc sensitivity`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sqc
from sqc.compiler.allocation import Choice, allocate, envelope, solve, step_back
from sqc.compiler.pass_base import PassContext
from sqc.compiler.pipeline import Pipeline
from sqc.compiler.sensitivity import Analysis, cached_analysis, load_analysis
from sqc.errors import PipelineError
from sqc.frontend.trace import trace
from sqc.runtime.data import Dataset, top1

CLASSES = 16


class Gated(nn.Module):
    """A net whose accuracy provably never rises as its weights are pruned by magnitude.

    Inputs are one-hot over the first 16 of 64 features. fc1's diagonal (0.5..1.5) carries the class
    into the hidden unit of the same index; its other weights on live inputs are tiny and negative (the
    ReLU zeroes them), and its weights on the 48 always-zero inputs (|w| < 0.4) never matter. fc2's
    diagonal passes the class on; an extra 17th "reject" output has bias 0.1. A class is recognised
    exactly while both of its diagonal weights survive, so the accuracy is the fraction of classes
    whose two diagonal weights are kept — and magnitude masks are nested, so it only falls.
    The diagonals are each layer's largest weights: fc1 loses nothing up to 1 - 16/1024 sparsity, fc2
    nothing up to 1 - 16/272 (0.941), then one class per diagonal weight removed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, CLASSES)
        self.fc2 = nn.Linear(CLASSES, CLASSES + 1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            w1 = -(0.001 + 0.001 * torch.rand(CLASSES, 64, generator=g))
            w1[:, CLASSES:] = (torch.rand(CLASSES, 64 - CLASSES, generator=g) - 0.5) * 0.8
            w1[range(CLASSES), range(CLASSES)] = torch.linspace(0.5, 1.5, CLASSES)
            w2 = -(0.001 + 0.001 * torch.rand(CLASSES + 1, CLASSES, generator=g))
            w2[range(CLASSES), range(CLASSES)] = torch.linspace(1.5, 0.5, CLASSES)
            self.fc1.weight.copy_(w1)
            self.fc1.bias.zero_()
            self.fc2.weight.copy_(w2)
            self.fc2.bias.zero_()
            self.fc2.bias[CLASSES] = 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def gated_data(copies: int = 2) -> Dataset:
    y = torch.arange(CLASSES).repeat(copies)
    x = torch.zeros(y.numel(), 64)
    x[torch.arange(y.numel()), y] = 1.0
    return Dataset(x, y)


SHAPE = [(1, 64)]


def fresh_ir():
    return trace(Gated(), SHAPE)


def context(
    data: Dataset | None = None, tolerance: float = 0.0, calls: list[int] | None = None
) -> PassContext:
    data = data or gated_data()
    evaluate = top1(data)

    def counted(module: nn.Module) -> float:
        if calls is not None:
            calls.append(1)
        return evaluate(module)

    return PassContext(evaluate=counted, evaluate_subset=lambda n: top1(data, n), tolerance=tolerance)


def run(text: str, ctx: PassContext, ir=None):
    ir = ir if ir is not None else fresh_ir()
    Pipeline.parse(text).run(ir, ctx)
    return ir


# -- the analysis ------------------------------------------------------------------------------------


def test_curves_are_monotone_and_the_model_is_left_exactly_as_it_was():
    ir = fresh_ir()
    before = {name: s.decode().clone() for name, s in ir.tensors.items()}
    ctx = context()
    run("sensitivity{sparsities=0.5;0.8;0.9;0.95;0.97;0.99 bits=8;5;3;2;1}", ctx, ir)
    analysis = cached_analysis(ctx)
    assert analysis.metric == 1.0
    for name in ("fc1.weight", "fc2.weight"):
        prune = analysis.prune[name]
        assert [p.value for p in prune] == [0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.99]
        metrics = [p.metric for p in prune]
        assert metrics == sorted(metrics, reverse=True), f"{name}: metric rose with sparsity"
        # once sparse, more sparsity is fewer bytes (going sparse at all may cost: a small layer's
        # index can outweigh what half its codes save — the curve says so, and the allocator sees it)
        sizes = [p.bytes for p in prune[1:]]
        assert all(a > b for a, b in itertools.pairwise(sizes)), f"{name}: bytes did not fall: {sizes}"
        assert prune[-1].bytes < prune[0].bytes / 4
        share = analysis.share[name]
        assert [p.value for p in share] == [8, 5, 3, 2, 1]
        assert all(a > b for a, b in itertools.pairwise(p.bytes for p in share))
    fc2 = {p.value: p.metric for p in analysis.prune["fc2.weight"]}
    assert fc2[0.9] == 1.0 and fc2[0.95] == pytest.approx(1 - 2 / CLASSES)  # 14 of 272 kept
    assert {p.value: p.metric for p in analysis.prune["fc1.weight"]}[0.97] == 1.0
    for name, state in ir.tensors.items():  # restored exactly: values, no mask, no codes
        assert torch.equal(state.decode(), before[name])
        assert state.mask is None and state.codes is None
    ir.verify()
    record = ir.report[-1]
    assert not record.changed
    assert record.layers["fc2.weight"]["metric@s0.95"] == pytest.approx(1 - 2 / CLASSES)
    assert record.layers["fc1.weight"]["bytes@b3"] == analysis.share["fc1.weight"][2].bytes


def test_samples_evaluates_on_a_subset():
    calls: list[int] = []
    ctx = context(calls=calls)
    run('sensitivity{samples=8 bits=""}', ctx)
    assert not calls  # every sweep evaluation went to the subset evaluator
    assert cached_analysis(ctx).samples == 8


def test_sweep_starts_at_the_current_sparsity():
    ctx = context()
    ir = run('prune{sparsity=0.6 scope=layer},sensitivity{sparsities=0.5;0.6;0.8 bits=""}', ctx)
    prune = cached_analysis(ctx).prune["fc1.weight"]
    assert [p.value for p in prune] == [0.599609, 0.8]  # 614 of 1024 pruned: 0.5, 0.6 are reached
    assert ir.tensors["fc1.weight"].density == pytest.approx(0.4, abs=1e-3)


# -- the allocator (pure) ----------------------------------------------------------------------------


def curve(*points: tuple[float, float, int]) -> list[Choice]:
    return [Choice(v, d, b) for v, d, b in points]


def test_solve_finds_the_knapsack_optimum_where_greedy_does_not():
    curves = {
        # a: its first step is poor value, the second very good (a non-convex curve)
        "a": curve((0.0, 0.0, 100), (0.5, 0.01, 90), (0.9, 0.04, 0)),
        "b": curve((0.0, 0.0, 100), (0.5, 0.04, 50)),
    }
    # greedy on the best next ratio takes b (1250 B/unit) and is stuck at 150 bytes
    assert solve(curves, 0.04) == {"a": 2, "b": 0}  # 100 bytes
    assert solve(curves, 0.0) == {"a": 0, "b": 0}
    assert solve(curves, 1.0) == {"a": 2, "b": 1}


def test_envelope_treats_a_measured_gain_as_no_gain_and_never_undoes_a_loss():
    points = envelope(curve((0, 0.0, 9), (1, -0.01, 8), (2, 0.02, 7), (3, 0.01, 6)))
    assert [p.drop for p in points] == [0.0, 0.0, 0.02, 0.02]


small_curves = st.dictionaries(
    st.sampled_from("abcd"),
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 400)), min_size=1, max_size=4),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(raw=small_curves, budget=st.integers(0, 12))
def test_solve_matches_brute_force(raw, budget):
    curves = {name: curve(*((i, d / 100, b) for i, (d, b) in enumerate(pts))) for name, pts in raw.items()}
    prepared = {name: envelope(points) for name, points in curves.items()}
    limit = budget / 100
    choice = solve(curves, limit)
    drop = sum(prepared[n][i].drop for n, i in choice.items())
    size = sum(prepared[n][i].bytes for n, i in choice.items())
    names = sorted(prepared)
    feasible = [
        sum(prepared[n][i].bytes for n, i in zip(names, combo, strict=True))
        for combo in itertools.product(*(range(len(prepared[n])) for n in names))
        if sum(prepared[n][i].drop for n, i in zip(names, combo, strict=True)) <= limit + 1e-12
    ]
    if feasible:
        assert drop <= limit + 1e-12
        assert size == min(feasible)
    else:
        assert choice == dict.fromkeys(names, 0)


def test_allocate_backs_off_the_worst_ratio_until_the_measurement_fits():
    curves = {
        "a": curve((0.0, 0.0, 1000), (0.5, 0.01, 500), (0.9, 0.02, 100)),
        "b": curve((0.0, 0.0, 1000), (0.5, 0.01, 900)),
    }
    seen = []

    def measure(choice):  # the layers interact: together they lose more than predicted
        seen.append(dict(choice))
        predicted = sum(envelope(curves[n])[i].drop for n, i in choice.items())
        return predicted * (2 if all(choice.values()) else 1)

    result = allocate(curves, 0.03, measure)
    assert seen[0] == {"a": 2, "b": 1}  # predicted 0.03, measured 0.06
    assert step_back(curves, seen[0]) == {"a": 2, "b": 0}  # b saved 100 B per 0.01, a 400
    assert result.choice == {"a": 2, "b": 0} and result.backoffs == 1
    assert result.within and result.measured_drop == pytest.approx(0.02)
    assert result.values == {"a": 0.9, "b": 0.0} and result.bytes == 1100
    assert seen[-1] == result.choice  # the last measurement is the answer


def test_allocate_reports_a_budget_it_cannot_meet():
    curves = {"a": curve((8, 0.0, 100), (4, 0.1, 50))}
    result = allocate(curves, 0.01, lambda choice: 0.05)
    assert result.choice == {"a": 0} and not result.within


# -- prune{target=auto}, share{bits=auto} ------------------------------------------------------------


def test_prune_auto_chooses_the_known_optimum_within_tolerance():
    ctx = context(tolerance=0.1)
    ir = run("prune{target=auto}", ctx)
    record = ir.report[-1]
    targets = {name: layer["target"] for name, layer in record.layers.items()}
    # fc1 loses nothing even at the sweep's end; fc2 at 0.95 would lose 2 of 16 classes (0.125)
    assert targets == {"fc1.weight": 0.97, "fc2.weight": 0.9}
    assert record.stats["metric_after"] == top1(gated_data())(ir.graph_module) == 1.0
    assert record.stats["metric_reference"] - record.stats["metric_after"] <= 0.1
    assert ir.tensors["fc2.weight"].density == pytest.approx(0.1, abs=0.01)
    ir.verify()


def test_prune_auto_spends_a_larger_budget_and_the_measured_drop_stays_inside():
    ctx = context(tolerance=0.2)
    ir = run("prune{target=auto}", ctx)
    record = ir.report[-1]
    assert record.layers["fc2.weight"]["target"] == 0.95
    measured = 1.0 - top1(gated_data())(ir.graph_module)
    assert measured == pytest.approx(2 / CLASSES) and measured <= 0.2
    assert record.stats["metric_after"] == pytest.approx(1 - measured)


def test_tolerance_is_counted_from_the_first_accuracy_aware_pass():
    # prune spends its own budget; share may only spend what is left of --tolerance
    ctx = context(tolerance=0.2)
    ir = run("prune{target=auto budget=0.13},share{bits=auto},huffman", ctx)
    prune, share = ir.report[0], ir.report[1]
    assert prune.stats["metric_after"] == pytest.approx(1 - 2 / CLASSES)
    assert share.stats["metric_reference"] == 1.0
    assert share.stats["budget"] == pytest.approx(0.2 - 2 / CLASSES)
    assert 1.0 - share.stats["metric_after"] <= 0.2 + 1e-9
    assert all(s.codes is not None and s.codebook is not None for s in ir.weights())
    assert {layer["target"] for layer in share.layers.values()} <= {8, 6, 5, 4, 3, 2}
    ir.verify()


def test_auto_with_agp_reaches_the_chosen_sparsities_in_stages():
    data = gated_data()
    data.x_train, data.y_train = data.x_val, data.y_val
    artifact = sqc.compress(
        Gated(), SHAPE, "prune{target=auto schedule=agp steps=2 epochs=1 lr=0.001}", data=data, tolerance=0.1
    )
    record = artifact.report[0]
    assert record.stats["stages"] == 2
    for state in artifact.model.weights():
        assert 1 - state.density == pytest.approx(record.layers[state.name]["target"], abs=2 / state.numel)
    assert record.stats["metric_after"] == top1(data)(artifact.module())


def test_auto_keeps_per_layer_overrides():
    ctx = context(tolerance=0.1)
    ir = run("prune{target=auto per_layer=fc2:0.5}", ctx)
    assert ir.report[-1].layers["fc2.weight"]["target"] == 0.5
    assert ir.tensors["fc2.weight"].density == pytest.approx(0.5, abs=0.01)
    assert ir.report[-1].layers["fc1.weight"]["target"] == 0.97


def test_auto_pipeline_text_round_trips():
    text = "sensitivity{samples=8},prune{target=auto budget=0.01},share{bits=auto},huffman"
    pipeline = Pipeline.parse(text)
    canonical = str(pipeline)
    assert "target=auto budget=0.01" in canonical and "share{bits=auto " in canonical
    assert "budget=none" in canonical  # share's default
    assert Pipeline.parse(canonical) == pipeline and str(Pipeline.parse(canonical)) == canonical
    assert Pipeline.parse("share{bits=4}").passes[0].bits == 4


def test_auto_option_errors_are_clear():
    with pytest.raises(PipelineError, match="bits: 'many' is not an integer and 'many' is not one of auto"):
        Pipeline.parse("share{bits=many}")
    with pytest.raises(PipelineError, match="budget: only applies with target=auto"):
        Pipeline.parse("prune{budget=0.1}")
    with pytest.raises(PipelineError, match="scope=global does not apply"):
        Pipeline.parse("prune{target=auto scope=global}")
    with pytest.raises(PipelineError, match=r"sparsities: 1\.5 is outside"):
        Pipeline.parse("sensitivity{sparsities=0.5;1.5}")


def test_recipe_accepts_auto(tmp_path: Path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[pass]]\nname = "prune"\ntarget = "auto"\n[[pass]]\nname = "share"\nbits = "auto"\n')
    assert Pipeline.from_recipe(recipe) == Pipeline.parse("prune{target=auto},share{bits=auto}")


def test_auto_without_data_is_refused_before_anything_runs():
    ir = fresh_ir()
    for text in ("prune{target=auto}", "prune{sparsity=0.5},share{bits=auto}", "sensitivity"):
        with pytest.raises(PipelineError, match="needs an evaluation: give data= or evaluate="):
            Pipeline.parse(text).run(ir, PassContext())
    assert not ir.report and all(s.mask is None and s.codes is None for s in ir.tensors.values())
    with pytest.raises(sqc.SqcError, match="prune needs an evaluation"):
        sqc.compress(Gated(), SHAPE, "prune{target=auto},quant,huffman")


def test_compress_api_with_data():
    artifact = sqc.compress(
        Gated(), SHAPE, "prune{target=auto},quant,huffman", data=gated_data(), tolerance=0.1
    )
    assert artifact.report[0].layers["fc2.weight"]["target"] == 0.9
    assert top1(gated_data())(artifact.module()) == 1.0


def test_the_allocation_is_in_the_file_for_inspect(tmp_path: Path, capsys):
    from sqc.app.cli.sensitivity import allocations, render_allocations

    path = tmp_path / "m.sqc"
    sqc.compress(
        Gated(), SHAPE, "prune{target=auto},share{bits=auto},huffman", data=gated_data(), tolerance=0.1
    ).save(path)
    passes = sqc.inspect(path)["passes"]
    found = allocations(passes)
    assert [f["pass"] for f in found] == ["prune", "share"]
    assert {row["layer"]: row["target"] for row in found[0]["layers"]} == {
        "fc1.weight": 0.97,
        "fc2.weight": 0.9,
    }
    assert found[1]["stats"]["metric_after"] >= 0.9
    render_allocations(passes)
    shown = capsys.readouterr().out
    assert "prune: allocation within budget 0.1" in shown and "fc2.weight" in shown


# -- reuse -------------------------------------------------------------------------------------------


def test_reuse_from_json_and_from_a_sqc_file(tmp_path: Path):
    ctx = context()
    run("sensitivity{sparsities=0.5;0.9;0.95 bits=5;3}", ctx)
    measured = cached_analysis(ctx)
    path = tmp_path / "curves.json"
    path.write_text(json.dumps(measured.to_json()))

    # no evaluation needed to read curves back
    offline = PassContext()
    run(f"sensitivity{{reuse={path}}}", offline)
    again = cached_analysis(offline)
    assert again.prune == measured.prune and again.share == measured.share
    assert again.metric == measured.metric and again.source == str(path)

    # allocate from the file: only verification evaluates
    calls: list[int] = []
    ir = run(f"sensitivity{{reuse={path}}},prune{{target=auto}}", context(tolerance=0.1, calls=calls))
    assert ir.report[-1].layers["fc2.weight"]["target"] == 0.9
    assert len(calls) == 2  # the metric on entry, and one verification
    assert any("reused from" in d for d in ir.report[-1].diagnostics)

    artifact = sqc.compress(
        Gated(), SHAPE, "sensitivity{sparsities=0.5;0.9;0.95 bits=5;3},quant", data=gated_data()
    )
    sqc_file = tmp_path / "m.sqc"
    artifact.save(sqc_file)
    from_file = load_analysis(sqc_file)
    assert from_file.prune == measured.prune and from_file.share == measured.share


def test_reuse_refuses_another_models_curves(tmp_path: Path):
    analysis = Analysis(metric=1.0, numel={"fc1.weight": 5})
    analysis.prune["fc1.weight"] = []
    path = tmp_path / "other.json"
    path.write_text(json.dumps(analysis.to_json()))
    with pytest.raises(sqc.SqcError, match="measured on another model"):
        run(f"sensitivity{{reuse={path}}}", PassContext())
    plain = tmp_path / "plain.sqc"
    sqc.compress(Gated(), SHAPE, "quant").save(plain)
    with pytest.raises(sqc.SqcError, match="holds no sensitivity record"):
        run(f"sensitivity{{reuse={plain}}}", PassContext())
    with pytest.raises(sqc.SqcError, match="no such file"):
        run(f"sensitivity{{reuse={tmp_path / 'none.json'}}}", PassContext())


# -- sqc sensitivity ---------------------------------------------------------------------------------


@pytest.fixture
def app() -> typer.Typer:
    from sqc.app.cli.sensitivity import register

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command keeps its name
    register(app)
    return app


def test_cli_prints_table_json_and_png(app, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    from sqc_test_models import Small

    torch.save(Small().state_dict(), "small.pt")
    g = np.random.default_rng(0)
    np.savez("d.npz", x_val=g.normal(size=(40, 16)).astype(np.float32), y_val=g.integers(0, 4, 40))
    common = ["sensitivity", "small.pt", "--arch", "sqc_test_models:Small", "--data", "d.npz"]
    common += ["--sparsities", "0.5,0.9", "--bits", "4,2"]
    runner = CliRunner()
    result = runner.invoke(app, [*common, "--samples", "20", "--no-png"])
    assert result.exit_code == 0, result.output
    assert "fc1.weight" in result.output and "first 20 samples" in result.output and "4 bits" in result.output
    result = runner.invoke(app, [*common, "--json", "--no-png"])
    doc = json.loads(result.stdout)
    assert set(doc["layers"]) == {"fc1.weight", "fc2.weight"}
    assert [p["sparsity"] for p in doc["layers"]["fc1.weight"]["prune"]] == [0.0, 0.5, 0.9]
    Path("c.json").write_text(result.stdout)
    assert load_analysis(Path("c.json")).share["fc2.weight"][1].value == 2
    pytest.importorskip("matplotlib")
    result = runner.invoke(app, [*common, "--png", "curves.png"])
    assert result.exit_code == 0, result.output
    assert Path("curves.png").read_bytes().startswith(b"\x89PNG")
