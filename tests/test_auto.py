"""The ``auto`` pass: closed-loop allocation that plans for the retraining after it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sqc
from sqc.errors import PipelineError

PAIRS = 12


def redundant_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear layer over duplicated features: every input appears twice, and the trained weights split
    each true weight 0.65 / 0.35 between the two copies. Pruning the smaller copy of every pair (50 %)
    hurts at once but retraining gives its share back to the larger copy exactly; pruning past 50 %
    removes whole pairs, which nothing can win back. The right sparsity after retraining is 0.5, where
    a one-shot allocation on the network as it is stops much earlier."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, PAIRS, generator=g)
    x = torch.cat([z, z], dim=1)
    true = torch.randn(6, PAIRS, generator=g).sign() * (1 + torch.rand(6, PAIRS, generator=g))
    layer = nn.Linear(2 * PAIRS, 6, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.cat([0.65 * true, 0.35 * true], dim=1))
        target = layer(x)
    return nn.Sequential(layer), x, target


def test_auto_prunes_as_far_as_retraining_wins_back_and_stays_within_the_tolerance() -> None:
    model, x, target = redundant_problem()

    def negative_error(module: nn.Module) -> float:
        with torch.no_grad():
            return -float(((module(x) - target) ** 2).mean())

    def refit(module: nn.Module, epochs: int) -> None:  # least-squares steps; sqc holds masks and codebooks
        optimiser = torch.optim.Adam(module.parameters(), lr=0.05)
        for _ in range(60 * epochs):
            optimiser.zero_grad()
            ((module(x) - target) ** 2).mean().backward()
            optimiser.step()

    tolerance = 0.01
    pipeline = "auto{sparsities=0.2;0.35;0.5;0.65;0.8 bits=8;6;5;4 rounds=5 share_rounds=3},rans"
    artifact = sqc.compress(
        model, [(1, 2 * PAIRS)], pipeline, evaluate=negative_error, finetune=refit, tolerance=tolerance
    )
    record = artifact.report[0]
    layer = record.layers["0.weight"]
    assert layer["target"] == 0.5  # exactly the redundancy retraining can recover
    assert artifact.model.tensors["0.weight"].density == pytest.approx(0.5)
    assert -negative_error(artifact.module()) <= tolerance + 1e-9
    assert record.stats["metric_after"] >= record.stats["metric_reference"] - tolerance - 1e-9
    assert len(record.stats["prune_probes"].split(";")) >= 2  # it measured, pushed and backed off
    assert record.stats["decided_on"] == "the evaluation function's data"

    # the one-shot allocation, which does not know a fine-tuning follows, prunes less
    one_shot = sqc.compress(
        model,
        [(1, 2 * PAIRS)],
        'sensitivity{sparsities=0.2;0.35;0.5;0.65;0.8 bits=""},prune{target=auto},finetune{epochs=1}',
        evaluate=negative_error,
        finetune=refit,
        tolerance=tolerance,
    )
    assert one_shot.model.tensors["0.weight"].density > 0.5


def test_auto_needs_an_evaluation_and_float_weights() -> None:
    model, _, _ = redundant_problem()
    with pytest.raises(PipelineError, match=r"needs an evaluation"):
        sqc.compress(model, [(1, 2 * PAIRS)], "auto")
    with pytest.raises(PipelineError, match=r"before share|codes"):
        sqc.compress(
            model, [(1, 2 * PAIRS)], "share,auto", evaluate=lambda m: 0.0, finetune=lambda m, e: None
        )


def exact_problem() -> tuple[nn.Module, torch.Tensor]:
    """Two layers whose weights are exactly zero at a known share (a half, and 51 of 64) and otherwise
    take few distinct values (4, and 8): pruning up to that share and sharing with that many centroids
    changes nothing; one step further changes every output. The right answer is known exactly."""
    g = torch.Generator().manual_seed(0)

    def weights(rows: int, cols: int, zeros: int, levels: list[float]) -> torch.Tensor:
        count = rows * cols
        values = torch.tensor(levels)[torch.arange(count - zeros) % len(levels)]
        flat = torch.zeros(count)
        flat[torch.randperm(count, generator=g)[: count - zeros]] = values
        return flat.reshape(rows, cols)

    first, second = nn.Linear(16, 16, bias=False), nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        first.weight.copy_(weights(16, 16, 128, [-2.0, -1.0, 1.0, 2.0]))
        second.weight.copy_(weights(4, 16, 51, [-4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0]))
    return nn.Sequential(first, second), torch.randn(200, 16, generator=g)


class Unchanged:
    """Share of inputs whose output is the original one (to 1e-4): per example, 1 where unchanged."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        self.x = x
        with torch.no_grad():
            self.reference = model(x)

    def outcomes(self, module: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return ((module(self.x) - self.reference).abs().amax(dim=1) <= 1e-4).double()

    def __call__(self, module: nn.Module) -> float:
        return float(self.outcomes(module).mean())


def test_eval_only_auto_finds_the_largest_exact_compression() -> None:
    """Without training (an evaluation only), auto measures each probe as compressed: it prunes every
    zero and shares each layer to exactly its number of distinct values, and no further."""
    model, x = exact_problem()
    evaluate = Unchanged(model, x)
    pipeline = "auto{sparsities=0.3;0.5;0.65;0.8;0.9 bits=6;4;3;2;1},rans"
    artifact = sqc.compress(model, [(1, 16)], pipeline, evaluate=evaluate, tolerance=0.02, executor="serial")
    record = artifact.report[0]
    first, second = (record.layers[name] for name in ("0.weight", "1.weight"))
    # every zero pruned (a sparsity of the sweep at or below the zeros' share prunes all of them: ties
    # go together) and nothing else; each layer's codebook exactly its distinct values
    assert first["density"] == 0.5 and second["density"] == pytest.approx(13 / 64)
    assert first["bits_per_weight"] == 2 and second["bits_per_weight"] == 3
    assert evaluate(artifact.module()) == 1.0
    assert record.stats["margin"] == 1.0  # the evaluation gives per-example outcomes
    assert record.stats["prune_allocation"] == "curves"  # no training: the sensitivity allocation
    # it measured beyond the answer, and refused it
    drops = [float(p.split(":")[1]) for p in str(record.stats["prune_probes"]).split(";")]
    assert max(drops) > 0.02 and record.stats["metric_after"] == 1.0


def test_with_training_auto_searches_one_global_sparsity() -> None:
    """With training, a pruning probe ranks all layers' weights together (global magnitude) at one
    sparsity of the sweep, found by a binary search: on the exact problem (179 of 320 weights zero, 56 %)
    the sweep's 0.3 and 0.5 prune every zero (ties go together) and lose nothing, 0.65 changes every
    output. The per-layer sparsities come from the ranking: the zeros' shares, 0.5 and 51/64."""
    model, x = exact_problem()
    evaluate = Unchanged(model, x)
    artifact = sqc.compress(
        model,
        [(1, 16)],
        "auto{sparsities=0.3;0.5;0.65;0.8;0.9 bits=6;4;3;2;1}",
        evaluate=evaluate,
        finetune=lambda module, epochs: None,  # retraining offered (it wins nothing back here)
        tolerance=0.02,
        executor="serial",
    )
    record = artifact.report[0]
    assert record.stats["prune_allocation"] == "global"
    probes = [p.split(":") for p in str(record.stats["prune_probes"]).split(";")]
    assert [float(p[0]) for p in probes] == [0.65, 0.3, 0.5]  # the middle, then halving the interval
    assert float(probes[0][1]) > 0.02 and float(probes[1][1]) == float(probes[2][1]) == 0.0
    first, second = (record.layers[name] for name in ("0.weight", "1.weight"))
    assert first["target"] == 0.5 and second["target"] == pytest.approx(51 / 64, abs=1e-6)
    assert first["density"] == 0.5 and second["density"] == pytest.approx(13 / 64)
    assert evaluate(artifact.module()) == 1.0

    # LAMP scores rank the zeros first too; the sensitivity allocation stays available by name
    for allocation in ("lamp", "curves"):
        forced = sqc.compress(
            model,
            [(1, 16)],
            f"auto{{allocation={allocation} sparsities=0.3;0.5;0.65;0.8;0.9 bits=6;4;3;2;1}}",
            evaluate=evaluate,
            finetune=lambda module, epochs: None,
            tolerance=0.02,
            executor="serial",
        )
        assert forced.report[0].stats["prune_allocation"] == allocation
        assert forced.model.tensors["1.weight"].density == pytest.approx(13 / 64)
        assert evaluate(forced.module()) == 1.0


def test_monotone_drops_pool_a_lucky_measurement_with_the_larger_probes() -> None:
    from sqc.passes.auto import Probe, monotone_drops

    def probe(size: int, drop: float) -> Probe:
        return Probe(1.0, (), size, drop, {})

    # 300 B measured luckier (0.0005) than 400 B (0.0015): pooled, both are 0.001
    probes = [probe(500, 0.0), probe(400, 0.0015), probe(300, 0.0005), probe(200, 0.003)]
    assert monotone_drops(probes) == pytest.approx([0.0, 0.001, 0.001, 0.003])
    assert monotone_drops([probe(100, 0.2)]) == [0.2]


def test_the_chosen_probe_is_restored_exactly_biases_included() -> None:
    """The metric after the pass is the one the chosen probes measured: every record a probe trained
    (biases too, not only the weights it prunes and shares) comes back with it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(200, 8)
    y = torch.randint(0, 3, (200,))

    def accuracy(module: nn.Module) -> float:
        with torch.no_grad():
            return float((module(x).argmax(1) == y).float().mean())

    def train(module: nn.Module, epochs: int) -> None:
        optimiser = torch.optim.SGD(module.parameters(), lr=0.1)
        for _ in range(20 * epochs):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(module(x), y).backward()
            optimiser.step()

    artifact = sqc.compress(
        model,
        [(1, 8)],
        "auto{sparsities=0.3;0.6;0.8 bits=6;4;2 rounds=3 share_rounds=3}",
        evaluate=accuracy,
        finetune=train,
        tolerance=0.05,
    )
    record = artifact.report[0]
    drops = {float(p.split(":")[1]) for p in str(record.stats["share_probes"]).split(";")}
    measured = record.stats["metric_reference"] - record.stats["metric_after"]
    assert any(abs(measured - d) < 1e-3 for d in drops)  # one of the probes, reproduced
    assert accuracy(artifact.module()) == pytest.approx(record.stats["metric_after"])


class Jittery:
    """An evaluation made up from the model's sparsity ``s`` (its share of zero weights), where the right
    answer is known: 4,000 examples, nothing truly lost up to ``s = 0.6`` and 1 point per 0.02 beyond
    (examples the model gets right with certainty become wrong with certainty). But any change of the
    model flips 120 borderline predictions, half each way: top-1 is unchanged on average, yet its paired
    standard error (0.27 points) is above the tolerance, while those examples' probabilities of the
    right label move by 0.02."""

    examples, borderline = 4000, 120

    def __init__(self) -> None:
        self.right = torch.ones(self.examples, dtype=torch.float64)  # most examples: right, certainly
        self.right[: self.borderline] = 0.0  # the borderline ones: half right (0.51), half wrong (0.49)
        self.right[: self.borderline // 2] = 1.0
        self.confidence = self.right.clone()
        self.confidence[: self.borderline] = torch.where(self.right[: self.borderline] > 0, 0.51, 0.49)

    @staticmethod
    def sparsity(module: nn.Module) -> float:
        weights = [p for n, p in module.named_parameters() if n.endswith("weight")]
        return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)

    def _state(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sparsity(module)
        right, confidence = self.right.clone(), self.confidence.clone()
        if s > 0:  # the borderline examples all flip: as many become right as wrong
            right[: self.borderline] = 1 - right[: self.borderline]
            confidence[: self.borderline] = 1 - confidence[: self.borderline]
        lost = round(max(0.0, s - 0.6) / 0.02 * 0.01 * self.examples)
        right[self.examples - lost :] = 0.0
        confidence[self.examples - lost :] = 0.0
        return right, confidence

    def outcomes(self, module: nn.Module) -> torch.Tensor:
        return self._state(module)[0]

    def confidences(self, module: nn.Module) -> torch.Tensor:
        return self._state(module)[1]

    def __call__(self, module: nn.Module) -> float:
        return float(self.outcomes(module).mean())


def test_auto_certifies_the_tolerance_on_confidences_where_top1_flips_are_noise() -> None:
    """Decided on the probabilities of the right label (what the built-in top-1 gives as
    ``confidences``), auto prunes exactly as far as nothing is truly lost (0.6); decided on the top-1
    outcomes, the borderline flips' standard error alone is beyond the tolerance at every sparsity, so
    no probe can be certified: that was LeNet-5 backing off to sparsity 0.7."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10, bias=False))
    with torch.no_grad():  # distinct magnitudes: a global sparsity prunes exactly its share
        model[0].weight.copy_((torch.randperm(200).float() + 1).reshape(10, 20) / 200)
    options = "sparsities=0.3;0.45;0.6;0.7;0.8 bits=8;6 rounds=4 share_rounds=1"
    runs = {}
    for statistic in ("auto", "outcomes"):
        artifact = sqc.compress(
            model,
            [(1, 20)],
            f"auto{{{options} statistic={statistic}}}",
            evaluate=Jittery(),
            finetune=lambda module, epochs: None,
            tolerance=0.002,
            executor="serial",
        )
        runs[statistic] = artifact.report[0]
    decided = runs["auto"]
    assert decided.stats["decided_by"] == "confidences"
    assert decided.layers["0.weight"]["target"] == 0.6  # as far as nothing is lost, and no further
    probes = [p.split(":") for p in str(decided.stats["prune_probes"]).split(";")]
    # where nothing is lost, the confidences' margins are far below the budget
    assert all(float(p[3]) < 0.0002 for p in probes if float(p[0]) <= 0.6)
    assert any(float(p[0]) == 0.7 and float(p[1]) > 0.002 for p in probes)  # measured beyond, refused

    on_top1 = runs["outcomes"]
    assert on_top1.stats["decided_by"] == "outcomes"
    margins = [float(p.split(":")[3]) for p in str(on_top1.stats["prune_probes"]).split(";")]
    assert min(margins) > 0.0025  # sqrt(120) / 4000: one standard error is more than the tolerance
    assert any("no prune probe stayed within" in d for d in on_top1.diagnostics)


class Blind:
    """Top-1 outcomes on 50 examples that no pruning changes: the evaluation sees nothing, and 50
    examples cannot tell a rate of 1 % from 0 (one example is 2 %)."""

    def outcomes(self, module: nn.Module) -> torch.Tensor:
        return torch.ones(50, dtype=torch.float64)

    def __call__(self, module: nn.Module) -> float:
        return 1.0


def test_outcomes_that_never_change_do_not_certify_a_tolerance_below_one_example() -> None:
    """With no example changed the paired error is not 0 but that of one (1/50 here): a tolerance of
    1 % on 50 examples is never certified, and the report says so instead of pruning to the end of
    the sweep as if nothing could be lost."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10, bias=False))
    artifact = sqc.compress(
        model,
        [(1, 20)],
        "auto{sparsities=0.3;0.6;0.9 bits=8;6 rounds=3 share_rounds=1 statistic=outcomes}",
        evaluate=Blind(),
        finetune=lambda module, epochs: None,
        tolerance=0.01,
        executor="serial",
    )
    record = artifact.report[0]
    margins = [float(p.split(":")[3]) for p in str(record.stats["prune_probes"]).split(";")]
    assert all(m == pytest.approx(1 / 50, rel=0.02) for m in margins)  # sqrt(1 / 49) / sqrt(50)
    assert any("no prune probe stayed within" in d for d in record.diagnostics)
