"""Which default loses least: prune's scope, share's init and quant's granularity, measured (issue 16).

On both reference LeNets (``examples/lenet300.pt``, ``examples/lenet5.pt``), without retraining, each
choice is run over a grid of its rate setting and measured as top-1 on the full MNIST test set
(10,000 images, in-memory compressed model, which ``sqc.load`` reproduces exactly: ``bench_lenet.py``
checks that) against the whole ``.sqc`` file's bytes:

* ``prune{sparsity=s scope=layer|global|lamp},share{bits=5},huffman``, s from 0.70 to 0.98 (12 points);
* ``prune{sparsity=0.9 scope=global},share{bits=b init=linear|density},huffman``, b from 2 to 8, and
  ``share{bits=b rdo=r}`` points to show where the entropy-constrained option lands;
* ``quant{bits=b granularity=tensor|channel},huffman``, b from 3 to 10, on the dense model and after
  ``prune{sparsity=0.9 scope=global}``;
* ``prune{sparsity=0.9 scope=global},quant{bits=b params=0|16},huffman``, b from 3 to 10: float32 or
  16-bit fixed-point biases.

The choices reach different sizes at the same nominal setting (global pruning empties the big layers,
whose index is cheap; density-initialised centroids are used more evenly, so Huffman saves less), so
they are compared **at equal size**: each choice's top-1 is interpolated (linearly in log bytes) on its
own curve at reference sizes, the geometric mean of the choices' sizes at the named settings (sparsity
0.8, 0.9, 0.95; bits 3-6; bits 4, 6, 8). The rule (:func:`pick`): at equal size the higher top-1 wins,
by more than 0.1 points or it is a tie; the default is the choice that wins more often than it loses
against every other, else the old default stays. A reference size outside a choice's curve counts as no
measurement. ``params`` is a different question (:func:`pick_saving`): 16-bit biases change outputs by
~2^-16 and only save bytes, which an equal-size duel cannot see on models whose biases are a few
percent of the file, so the smaller choice wins when it is smaller at every setting and never loses more
than the margin.

Run: ``python benchmarks/bench_defaults.py [--write]``; ``--write`` also replaces the generated tables
in ``benchmarks/defaults.md`` (between ``<!-- defaults:begin -->`` and ``<!-- defaults:end -->``);
``--tables-only`` renders them from the JSON without measuring.
Writes ``benchmarks/results/defaults.json``. About 5 minutes on a quiet 2-core machine (15 under load).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sqc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
README = HERE / "defaults.md"
BEGIN, END = "<!-- defaults:begin -->", "<!-- defaults:end -->"
sys.path.append(str(REPO))  # for examples.lenet; appended so the installed sqc stays first

from mnist import load_mnist  # noqa: E402  (benchmarks/mnist.py)
from provenance import git_state  # noqa: E402  (benchmarks/provenance.py)

from examples.lenet import LeNet5, LeNet300  # noqa: E402

MODELS: dict[str, tuple[Callable[[], torch.nn.Module], Path]] = {
    "LeNet-300-100": (LeNet300, REPO / "examples" / "lenet300.pt"),
    "LeNet-5": (LeNet5, REPO / "examples" / "lenet5.pt"),
}
PRUNE_GRID = [0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98]
PRUNE_NAMED = [0.8, 0.9, 0.95]
SHARE_GRID = [2, 3, 4, 5, 6, 7, 8]
SHARE_NAMED = [3, 4, 5, 6]
SHARE_RDO = [(5, 0.5), (6, 0.5), (6, 1.0), (7, 1.0), (7, 2.0)]
QUANT_GRID = [3, 4, 5, 6, 7, 8, 9, 10]
QUANT_NAMED = [4, 6, 8]
BASE_PRUNE = "prune{sparsity=0.9 scope=global}"
MARGIN = 0.1
"""Top-1 points (10 of the 10,000 test images) below which an equal-size difference is a tie."""

Point = dict[str, Any]


def top1(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent, in batches of 1,000."""
    right = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], 1000):
            right += int((module(x[start : start + 1000]).argmax(1) == y[start : start + 1000]).sum())
    return 100.0 * right / x.shape[0]


def measure(model: torch.nn.Module, pipeline: str, x: torch.Tensor, y: torch.Tensor) -> Point:
    """Compress, then the file's bytes and the compressed model's top-1."""
    artifact = sqc.compress(model, [(1, 1, 28, 28)], pipeline)
    return {"pipeline": pipeline, "bytes": len(artifact.to_bytes()), "top1": top1(artifact.module(), x, y)}


def sweep(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    choices: list[str],
    grid: list[Any],
    pipeline: Callable[[str, Any], str],
) -> dict[str, list[Point]]:
    """``{choice: [point per grid setting]}``, each point tagged with its ``setting``."""
    out: dict[str, list[Point]] = {}
    for choice in choices:
        out[choice] = [{"setting": s, **measure(model, pipeline(choice, s), x, y)} for s in grid]
    return out


def at_size(points: list[Point], size: float) -> float | None:
    """Top-1 of a curve at ``size`` bytes, linear in log bytes between its two nearest points (None
    outside the curve). Where the curve is not monotone in size, points are taken in size order."""
    ordered = sorted(points, key=lambda p: p["bytes"])
    sizes = np.log([p["bytes"] for p in ordered])
    if not sizes[0] - 1e-12 <= math.log(size) <= sizes[-1] + 1e-12:
        return None
    return float(np.interp(math.log(size), sizes, [p["top1"] for p in ordered]))


def equal_size(curves: dict[str, list[Point]], named: list[Any]) -> list[dict[str, Any]]:
    """Per named setting: the reference size (geometric mean of the choices' sizes there) and each
    choice's top-1 interpolated there, and the winner."""
    rows = []
    for setting in named:
        sizes = [p["bytes"] for c in curves.values() for p in c if p["setting"] == setting]
        size = math.exp(sum(map(math.log, sizes)) / len(sizes))
        accuracy = {choice: at_size(points, size) for choice, points in curves.items()}
        measured = {c: a for c, a in accuracy.items() if a is not None}
        winner = max(measured, key=lambda c: measured[c]) if measured else None
        rows.append({"setting": setting, "bytes": round(size), "top1": accuracy, "winner": winner})
    return rows


def pick(tables: list[list[dict[str, Any]]], choices: list[str], incumbent: str) -> dict[str, Any]:
    """The rule, a round robin at equal size. At a reference size where both were measured, choice A
    beats B when its top-1 is higher by more than :data:`MARGIN` points (less is a tie: 10 of the
    10,000 test images); A beats B overall when it beats B at more sizes than B beats A. The default is
    the choice that beats every other overall; when none does, the ``incumbent`` (the old default)
    stays: a change of default has to be measured, not drawn."""
    points = [row["top1"] for table in tables for row in table]
    duels: dict[str, dict[str, list[int]]] = {a: {} for a in choices}
    for a in choices:
        for b in choices:
            if a == b:
                continue
            both = [(p[a], p[b]) for p in points if p[a] is not None and p[b] is not None]
            duels[a][b] = [sum(x - y > MARGIN for x, y in both), sum(y - x > MARGIN for x, y in both)]
    beats_all = [a for a in choices if all(w > lost for w, lost in duels[a].values())]
    return {"duels": duels, "default": beats_all[0] if beats_all else incumbent, "incumbent": incumbent}


def run(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Every sweep on both models; the equal-size tables and the picks."""
    experiments: dict[str, Any] = {
        "prune": {},
        "share": {},
        "share_rdo": {},
        "quant_dense": {},
        "quant_pruned": {},
        "quant_params": {},
    }
    for name, (factory, checkpoint) in MODELS.items():
        model = factory()
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        model.eval()
        fp32 = {"bytes": 4 * sum(p.numel() for p in model.parameters()), "top1": top1(model, x, y)}
        started = time.perf_counter()
        prune = sweep(
            model,
            x,
            y,
            ["layer", "global", "lamp"],
            PRUNE_GRID,
            lambda c, s: f"prune{{sparsity={s} scope={c}}},share{{bits=5}},huffman",
        )
        share = sweep(
            model,
            x,
            y,
            ["linear", "density"],
            SHARE_GRID,
            lambda c, b: f"{BASE_PRUNE},share{{bits={b} init={c}}},huffman",
        )
        rdo = [
            {"setting": f"bits={b} rdo={r}", **measure(model, f"{BASE_PRUNE},{share},huffman", x, y)}
            for b, r in SHARE_RDO
            for share in [f"share{{bits={b} rdo={r}}}"]
        ]
        quant_dense = sweep(
            model,
            x,
            y,
            ["tensor", "channel"],
            QUANT_GRID,
            lambda c, b: f"quant{{bits={b} granularity={c}}},huffman",
        )
        quant_pruned = sweep(
            model,
            x,
            y,
            ["tensor", "channel"],
            QUANT_GRID,
            lambda c, b: f"{BASE_PRUNE},quant{{bits={b} granularity={c}}},huffman",
        )
        quant_params = sweep(
            model,
            x,
            y,
            ["0", "16"],
            QUANT_GRID,
            lambda c, b: f"{BASE_PRUNE},quant{{bits={b} params={c}}},huffman",
        )
        print(f"{name}: swept in {time.perf_counter() - started:.0f} s", flush=True)
        experiments["prune"][name] = {
            "fp32": fp32,
            "curves": prune,
            "equal_size": equal_size(prune, PRUNE_NAMED),
        }
        experiments["share"][name] = {"curves": share, "equal_size": equal_size(share, SHARE_NAMED)}
        experiments["share_rdo"][name] = rdo
        experiments["quant_dense"][name] = {
            "curves": quant_dense,
            "equal_size": equal_size(quant_dense, QUANT_NAMED),
        }
        experiments["quant_pruned"][name] = {
            "curves": quant_pruned,
            "equal_size": equal_size(quant_pruned, QUANT_NAMED),
        }
        experiments["quant_params"][name] = {"curves": quant_params}
    picks = {
        "prune.scope": pick(
            [v["equal_size"] for v in experiments["prune"].values()], ["layer", "global", "lamp"], "layer"
        ),
        "share.init": pick(
            [v["equal_size"] for v in experiments["share"].values()], ["linear", "density"], "linear"
        ),
        "quant.granularity": pick(
            [v["equal_size"] for k in ("quant_dense", "quant_pruned") for v in experiments[k].values()],
            ["tensor", "channel"],
            "tensor",
        ),
        "quant.params": pick_saving([v["curves"] for v in experiments["quant_params"].values()], "16", "0"),
    }
    return {"experiments": experiments, "picks": picks}


def pick_saving(curves: list[dict[str, list[Point]]], saver: str, incumbent: str) -> dict[str, Any]:
    """For an option that only saves bytes: ``saver`` becomes the default when, at every setting of
    every model, its file is smaller than the ``incumbent``'s and its top-1 is not lower by more than
    :data:`MARGIN` points; else the incumbent stays. Also the largest top-1 loss and the byte savings."""
    pairs = [(s, i) for c in curves for s, i in zip(c[saver], c[incumbent], strict=True)]
    worst = max(i["top1"] - s["top1"] for s, i in pairs)
    smaller = all(s["bytes"] < i["bytes"] for s, i in pairs)
    saved = [i["bytes"] - s["bytes"] for s, i in pairs]
    wins = smaller and worst <= MARGIN
    return {
        "default": saver if wins else incumbent,
        "incumbent": incumbent,
        "worst_top1_loss": round(worst, 2),
        "bytes_saved": [min(saved), max(saved)],
    }


# ------------------------------------------------------------------------------------------ tables


def _acc(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _named_point(curve: list[Point], setting: Any) -> Point:
    return next(p for p in curve if p["setting"] == setting)


def nominal_table(
    section: dict[str, Any], choices: list[str], named: list[Any], label: str, fmt: Callable[[Any], str]
) -> list[str]:
    """Per model and named setting: each choice's bytes and top-1 at the same nominal setting."""
    head = " | ".join(f"{c}: bytes, top-1 %" for c in choices)
    lines = [f"| model | {label} | {head} |", "|---|---:|" + "---:|" * len(choices)]
    for model, data in section.items():
        for setting in named:
            cells = []
            for choice in choices:
                point = _named_point(data["curves"][choice], setting)
                cells.append(f"{point['bytes']:,} B, {point['top1']:.2f}")
            lines.append(f"| {model} | {fmt(setting)} | {' | '.join(cells)} |")
    return lines


def equal_table(
    section: dict[str, Any], choices: list[str], label: str, fmt: Callable[[Any], str]
) -> list[str]:
    """Per model and reference size: each choice's interpolated top-1, the winner in bold."""
    lines = [
        f"| model | size (at {label}) | " + " | ".join(f"{c} top-1 %" for c in choices) + " |",
        "|---|---:|" + "---:|" * len(choices),
    ]
    for model, data in section.items():
        for row in data["equal_size"]:
            cells = []
            for choice in choices:
                text = _acc(row["top1"][choice])
                cells.append(f"**{text}**" if choice == row["winner"] else text)
            lines.append(f"| {model} | {row['bytes']:,} B ({fmt(row['setting'])}) | {' | '.join(cells)} |")
    return lines


def pick_line(pick_: dict[str, Any], option: str) -> str:
    """The round robin's outcome in a sentence."""
    duels = []
    for a, row in pick_["duels"].items():
        for b, (won, lost) in row.items():
            if a < b:  # each pair once
                duels.append(f"{a} vs {b} {won}–{lost}")
    outcome = (
        f"**Default: `{option}={pick_['default']}`**"
        + (" (unchanged)" if pick_["default"] == pick_["incumbent"] else f" (was `{pick_['incumbent']}`)")
        + "."
    )
    return f"Equal-size wins by more than {MARGIN} points: {'; '.join(duels)}. {outcome}"


def render(result: dict[str, Any]) -> str:
    """The README section's generated part: the tables and the picks."""
    ex, picks = result["experiments"], result["picks"]
    scopes, inits, grains = ["layer", "global", "lamp"], ["linear", "density"], ["tensor", "channel"]
    sparsity = lambda s: f"sparsity {s}"  # noqa: E731
    bits = lambda b: f"{b} bits"  # noqa: E731
    out = [
        f"Run {result['date']}, sqc {result['git']['commit']}, {result['machine']['cpus']} cores, "
        f"load {result['load_average']}. Top-1 on the 10,000 MNIST test images, no retraining; bytes are "
        "the whole `.sqc` file. In the equal-size tables the higher top-1 is in bold; within 0.1 points "
        "it is a tie under the rule.",
        "",
        "**`prune{sparsity=s scope=…},share{bits=5},huffman`**, same sparsity "
        + ", ".join(f"{m} fp32 {d['fp32']['top1']:.2f} %" for m, d in ex["prune"].items())
        + ":",
        "",
        *nominal_table(ex["prune"], scopes, PRUNE_NAMED, "sparsity", str),
        "",
        "At equal size (each scope's sparsity curve 0.70–0.98 interpolated):",
        "",
        *equal_table(ex["prune"], scopes, "sparsity", sparsity),
        "",
        pick_line(picks["prune.scope"], "scope"),
        "",
        f"**`{BASE_PRUNE},share{{bits=b init=…}},huffman`**:",
        "",
        *nominal_table(ex["share"], inits, SHARE_NAMED, "bits", str),
        "",
        "At equal size (bits 2–8 interpolated):",
        "",
        *equal_table(ex["share"], inits, "bits", bits),
        "",
        pick_line(picks["share.init"], "init"),
        "",
        "`share{rdo=r}` (linear init) on the same 90 % pruned models, with the plain curve's top-1 at the "
        "same size:",
        "",
        "| model | share | bytes | top-1 % | plain linear at that size |",
        "|---|---|---:|---:|---:|",
    ]
    for model, points in ex["share_rdo"].items():
        linear = ex["share"][model]["curves"]["linear"]
        for p in points:
            plain = _acc(at_size(linear, p["bytes"]))
            out.append(f"| {model} | {p['setting']} | {p['bytes']:,} | {p['top1']:.2f} | {plain} |")
    for key, what in (("quant_dense", "dense"), ("quant_pruned", f"after `{BASE_PRUNE}`")):
        out += [
            "",
            f"**`quant{{bits=b granularity=…}},huffman`**, {what}:",
            "",
            *nominal_table(ex[key], grains, QUANT_NAMED, "bits", str),
            "",
            "At equal size (bits 3–10 interpolated):",
            "",
            *equal_table(ex[key], grains, "bits", bits),
        ]
    out += ["", "Dense and pruned counted together: " + pick_line(picks["quant.granularity"], "granularity")]
    saving = picks["quant.params"]
    was = saving["incumbent"]
    out += [
        "",
        f"**`{BASE_PRUNE},quant{{bits=b params=…}},huffman`** (biases float32 or 16-bit fixed point):",
        "",
        *nominal_table(ex["quant_params"], ["0", "16"], QUANT_NAMED, "bits", str),
        "",
        f"At every width 3–10 on both models, `params=16` saves {saving['bytes_saved'][0]:,}–"
        f"{saving['bytes_saved'][1]:,} B and loses at most {saving['worst_top1_loss']:.2f} top-1 points. "
        f"**Default: `params={saving['default']}`**"
        + (" (unchanged)." if saving["default"] == saving["incumbent"] else f" (was `{was}`)."),
    ]
    return "\n".join(out) + "\n"


def write_readme(section: str) -> None:
    """Replace the generated part of the README's defaults section, leaving every other byte alone."""
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README.name} has no {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{section}{END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="also update benchmarks/defaults.md")
    parser.add_argument(
        "--tables-only", action="store_true", help="measure nothing: render results/defaults.json's tables"
    )
    args = parser.parse_args()
    if args.tables_only:
        section = render(json.loads((RESULTS / "defaults.json").read_text(encoding="utf-8")))
        print(section)
        if args.write:
            write_readme(section)
        return
    torch.set_num_threads(1)  # LeNets are small; one thread is steadier on a shared 2-core machine
    x, y = load_mnist("test")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "defaults",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_defaults.py" + (" --write" if args.write else ""),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "git": git_state(),
        "load_average": round(os.getloadavg()[0], 1),
        **run(x, y),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "defaults.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    section = render(result)
    print(section)
    if args.write:
        write_readme(section)


if __name__ == "__main__":
    main()
