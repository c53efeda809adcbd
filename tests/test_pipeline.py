"""Pipeline text: parsing, canonical printing, errors with columns, ordering checks, recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqc.compiler.pipeline import Pipeline, tokenize
from sqc.errors import PipelineError


def test_defaults_print_every_option():
    text = str(Pipeline.parse("prune,quant,huffman"))
    assert text == (
        'prune{sparsity=0.9 scope=global per_layer="" layers=* schedule=oneshot steps=4 epochs=1 lr=0.01 '
        "target=fixed budget=none},"
        'quant{bits=8 granularity=tensor per_layer="" layers=* params=16},huffman{layers=*}'
    )


def test_options_that_switch_a_feature_on_are_spelt_out_only_when_used():
    """Quiet options (qp, rdo, budget of quant; rdo of share; qps of sensitivity) keep existing pipelines'
    text, and so the files they write, as they were; once set they are spelt out, rdo with its qp."""
    assert "rdo" not in str(Pipeline.parse("share,quant"))
    shared, stepped = str(Pipeline.parse("share{rdo=0.5}")), str(Pipeline.parse("quant{qp=-20}"))
    assert "rdo=0.5" in shared and "qp=-20 rdo=0.1" in stepped and "budget" not in stepped
    assert Pipeline.parse(stepped) == Pipeline.parse("quant{qp=-20}")


def test_canonical_text_round_trips():
    first = Pipeline.parse(
        "prune{sparsity=0.8, scope=global per_layer=fc1:0.92;fc3:0.5},share{bits=4},huffman"
    )
    again = Pipeline.parse(str(first))
    assert again == first
    assert str(again) == str(first)
    assert first.passes[0].per_layer == (("fc1", 0.92), ("fc3", 0.5))


@given(
    sparsity=st.floats(min_value=0.0, max_value=0.9999, allow_nan=False),
    bits=st.integers(min_value=1, max_value=16),
    scope=st.sampled_from(["layer", "global"]),
    layers=st.sampled_from(["*", "fc*", "conv1.weight"]),
)
def test_round_trip_property(sparsity, bits, scope, layers):
    text = f"prune{{sparsity={sparsity!r} scope={scope} layers={layers}}},share{{bits={bits}}},huffman"
    pipeline = Pipeline.parse(text)
    assert Pipeline.parse(str(pipeline)) == pipeline
    assert pipeline.passes[0].sparsity == sparsity


def test_tokenize_keeps_columns():
    (p,) = tokenize("  prune{ sparsity = 0.5 }")
    assert p.name == "prune" and p.column == 2 and p.options == {"sparsity": "0.5"}
    assert p.option_columns["sparsity"] == 9


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty pipeline"),
        ("prune,", "column 7: expected a pass name"),
        ("prune{sparsity}", "column 15: expected '=' after option sparsity"),
        ("prune{sparsity=0.5", "column 19"),
        ("prune quant", "expected ',' between passes"),
        ('prune{layers="fc1}', "unterminated quoted value"),
        ("prune{sparsity=0.5 sparsity=0.6}", "given twice"),
    ],
)
def test_syntax_errors_point_at_the_column(text, fragment):
    with pytest.raises(PipelineError, match=r"column|empty") as info:
        Pipeline.parse(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_pass_lists_the_known_ones():
    with pytest.raises(PipelineError) as info:
        Pipeline.parse("prune,squeeze")
    message = str(info.value)
    assert "column 7" in message and "unknown pass 'squeeze'" in message
    for name in ("prune", "share", "quant", "huffman"):
        assert name in message


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(PipelineError) as info:
        Pipeline.parse("prune{sparsty=0.5}")
    assert "column 7" in str(info.value)
    assert "sparsity, scope, per_layer, layers, schedule" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("prune{sparsity=1.5}", "sparsity: 1.5 is outside [0.0, 0.9999]"),
        ("prune{sparsity=abc}", "'abc' is not a number"),
        ("prune{sparsity=nan}", "not a finite number"),
        ("prune{scope=everything}", "not one of layer, global"),
        ("share{bits=0}", "bits: 0 is outside"),
        ("share{bits=4.5}", "'4.5' is not an integer"),
        ("quant{bits=1}", "bits: 1 is outside"),
        ("prune{per_layer=fc1}", "'fc1' is not layer:value"),
        ("prune{per_layer=fc1:2}", "outside"),
        ("share{per_layer=fc1:4.5}", "not a whole number of bits"),
    ],
)
def test_bad_option_values(text, fragment):
    with pytest.raises(PipelineError) as info:
        Pipeline.parse(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("huffman", "huffman needs codes"),
        ("prune,huffman", "put share or quant before it"),
        ("quant,share", "share clusters float weights: run it before quant"),
        ("quant,huffman,prune", "huffman or rans must come after every pass that changes weights"),
    ],
)
def test_impossible_orders_are_refused_before_running(text, fragment):
    with pytest.raises(PipelineError) as info:
        Pipeline.parse(text)
    assert fragment in str(info.value)


def test_share_then_quant_is_allowed():
    assert [p.name for p in Pipeline.parse("prune,share,quant{bits=6},huffman").passes] == [
        "prune",
        "share",
        "quant",
        "huffman",
    ]


def test_recipe_gives_the_same_pipeline(tmp_path: Path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        '[[pass]]\nname = "prune"\nsparsity = 0.9\nper_layer = { fc1 = 0.92, fc3 = 0.74 }\n'
        '[[pass]]\nname = "share"\nbits = 6\n'
        '[[pass]]\nname = "huffman"\n'
    )
    assert Pipeline.from_recipe(recipe) == Pipeline.parse(
        "prune{sparsity=0.9 per_layer=fc1:0.92;fc3:0.74},share{bits=6},huffman"
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("name = 'prune'", "needs one or more [[pass]] tables"),
        ("[[pass]]\nsparsity = 0.5", "#1 has no name"),
        ("[[pass]]\nname = 'nope'", "unknown pass 'nope'"),
        ("[[pass]]\nname = 'prune'\nsparsity = 2.0", "outside"),
        ("[[pass]\nname = 'prune'", "not a valid TOML recipe"),
        ("[[pass]]\nname = 'huffman'", "huffman needs codes"),
    ],
)
def test_recipe_errors_name_the_file(tmp_path: Path, body, fragment):
    recipe = tmp_path / "r.toml"
    recipe.write_text(body)
    with pytest.raises(PipelineError) as info:
        Pipeline.from_recipe(recipe)
    assert str(recipe) in str(info.value) and fragment in str(info.value)


def test_recipe_settings_are_typed(tmp_path: Path):
    from sqc.compiler.pipeline import recipe_settings

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        "[compress]\ndistill = 0.5\nseed = 3\ntolerance = 0.001\nweight_decay = 1e-4\n"
        "[[pass]]\nname = 'prune'\n"
    )
    assert recipe_settings(recipe) == {"distill": 0.5, "seed": 3, "tolerance": 0.001, "weight_decay": 1e-4}
    recipe.write_text("[compress]\nseed = 0.5\n[[pass]]\nname = 'prune'\n")
    with pytest.raises(PipelineError, match=r"\[compress\] seed = 0.5: expected int"):
        recipe_settings(recipe)
    recipe.write_text("[[pass]]\nname = 'prune'\n")
    assert recipe_settings(recipe) == {}
