"""Budget allocation: one operating point per layer from measured rate-distortion curves.

Each layer offers a few measured points (its sensitivity curve): apply *this* sparsity or number of
bits and the layer takes *so many* coded bytes while the metric drops by *so much*, with every other
layer untouched. Allocation picks one point per layer to minimise the total bytes subject to the
predicted drop — the sum of the per-layer drops, which treats them as additive — staying within the
budget. That is a multiple-choice knapsack; :func:`solve` solves it exactly by merging Pareto
frontiers of (drop, bytes) layer by layer.

Additivity is a prediction, so :func:`allocate` then measures the combination and, while the measured
drop exceeds the budget, steps back one point the layer whose last step bought the fewest bytes per
unit of predicted drop. Everything here is deterministic: ties are broken by layer name and point
order, never by hash order.

This module knows nothing of models: a curve is a list of :class:`Choice`, and measuring is a
callback, so the algorithm is tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

EPS = 1e-12
"""Slack on budget comparisons, so that a drop equal to the budget in decimal is not refused in binary."""

MAX_FRONTIER = 4096
"""Beyond this many (drop, bytes) states, keep the cheapest state per drop bucket: the answer stays
feasible and is then near-optimal rather than exact (only for many layers with real-valued drops)."""


@dataclass(frozen=True)
class Choice:
    """One measured point of one layer: apply ``value``; the metric drops by ``drop``; ``bytes`` coded."""

    value: float
    drop: float
    bytes: int


Curves = Mapping[str, Sequence[Choice]]
"""Layer name -> its points in sweep order, least aggressive first (index 0 is the safest point)."""

Assignment = dict[str, int]
"""Layer name -> index of its chosen point."""


def envelope(points: Sequence[Choice]) -> list[Choice]:
    """The points with a monotone, non-negative drop: going further along the sweep never counts as
    better than a point before it (a measured improvement is noise, not a promise)."""
    out = []
    worst = 0.0
    for point in points:
        worst = max(worst, point.drop)
        out.append(Choice(point.value, worst, point.bytes))
    return out


def _prepared(curves: Curves) -> dict[str, list[Choice]]:
    for name, points in curves.items():
        if not points:
            raise ValueError(f"layer {name} has no measured points")
    return {name: envelope(curves[name]) for name in sorted(curves)}


def predicted_drop(curves: Curves, choice: Mapping[str, int]) -> float:
    prepared = _prepared(curves)
    return sum(prepared[name][index].drop for name, index in choice.items())


def total_bytes(curves: Curves, choice: Mapping[str, int]) -> int:
    return sum(curves[name][index].bytes for name, index in choice.items())


def solve(curves: Curves, budget: float) -> Assignment:
    """The assignment with the fewest total bytes whose predicted drop is within ``budget``.

    Exact (up to :data:`MAX_FRONTIER`): a dynamic programme over the Pareto frontier of partial
    assignments, one layer at a time in name order. When even the safest point of every layer
    exceeds the budget, the safest points are returned (the caller measures and reports it).
    Among assignments of equal bytes the one with the smaller drop wins, then the earlier points.
    """
    prepared = _prepared(curves)
    safest = {name: 0 for name in prepared}
    if sum(points[0].drop for points in prepared.values()) > budget + EPS:
        return safest
    # states: (drop, bytes, indices); kept sorted by drop with strictly decreasing bytes
    frontier: list[tuple[float, int, tuple[int, ...]]] = [(0.0, 0, ())]
    for points in prepared.values():
        merged = [
            (drop + point.drop, size + point.bytes, (*indices, index))
            for drop, size, indices in frontier
            for index, point in enumerate(points)
            if drop + point.drop <= budget + EPS
        ]
        frontier = _pareto(merged, budget)
    _, _, indices = min(frontier, key=lambda state: (state[1], state[0], state[2]))
    return dict(zip(prepared, indices, strict=True))


def _pareto(
    states: list[tuple[float, int, tuple[int, ...]]], budget: float
) -> list[tuple[float, int, tuple[int, ...]]]:
    states.sort(key=lambda state: (state[0], state[1], state[2]))
    kept = []
    for state in states:
        if not kept or state[1] < kept[-1][1]:
            kept.append(state)
    if len(kept) <= MAX_FRONTIER:
        return kept
    width = max(budget, EPS) / MAX_FRONTIER
    buckets: dict[int, tuple[float, int, tuple[int, ...]]] = {}
    for state in kept:  # later states in a bucket have fewer bytes: keep the last (real drop kept)
        buckets[int(state[0] / width)] = state
    return [buckets[key] for key in sorted(buckets)]


def step_back(curves: Curves, choice: Mapping[str, int]) -> Assignment | None:
    """``choice`` with one layer moved one point back: the one whose last step saved the fewest bytes
    per unit of predicted drop (a step predicted free goes back last; then the fewest bytes saved,
    then by name). ``None`` when every layer already sits at its safest point."""
    prepared = _prepared(curves)
    best: tuple[float, int, str] | None = None
    for name in sorted(choice):
        index = choice[name]
        if index == 0:
            continue
        here, before = prepared[name][index], prepared[name][index - 1]
        saved = before.bytes - here.bytes
        cost = here.drop - before.drop
        ratio = saved / cost if cost > EPS else float("inf")
        key = (ratio, saved, name)
        if best is None or key < best:
            best = key
    if best is None:
        return None
    out = dict(choice)
    out[best[2]] -= 1
    return out


@dataclass
class Allocation:
    """What :func:`allocate` settled on, with the prediction and the measurement behind it."""

    choice: Assignment
    values: dict[str, float]
    predicted: dict[str, float]
    """Per-layer predicted drop (monotone envelope of the measured curve)."""
    predicted_drop: float
    measured_drop: float
    bytes: int
    backoffs: int
    within: bool
    """Whether the measured drop is within the budget (False only if even the safest points fail)."""


def allocate(curves: Curves, budget: float, measure: Callable[[Assignment], float]) -> Allocation:
    """Solve, then verify with ``measure(choice) -> measured drop`` and back off until within budget.

    ``measure`` is called last on the returned choice, so a caller that applies the choice while
    measuring is left holding it.
    """
    prepared = _prepared(curves)
    choice = solve(prepared, budget)
    backoffs = 0
    while True:
        measured = measure(choice)
        if measured <= budget + EPS:
            break
        back = step_back(prepared, choice)
        if back is None:
            break
        choice = back
        backoffs += 1
    predicted = {name: prepared[name][index].drop for name, index in choice.items()}
    return Allocation(
        choice=choice,
        values={name: prepared[name][index].value for name, index in choice.items()},
        predicted=predicted,
        predicted_drop=sum(predicted.values()),
        measured_drop=measured,
        bytes=total_bytes(prepared, choice),
        backoffs=backoffs,
        within=measured <= budget + EPS,
    )
