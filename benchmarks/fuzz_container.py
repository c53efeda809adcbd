"""Fuzz the ``.sqc`` reader: any outcome but a valid model or a located SqcFormatError is a bug.

The target is what a user's ``sqc inspect`` / ``sqc.load`` does with a file's bytes:
``read_layout`` (header, table, CRCs, JSON sections, every tensor decoded) then ``model_from_layout``
(the fx graph and the module), then the IR verifier and ``inspect --json`` on the result. It must
either return a model that verifies or raise :class:`SqcFormatError` with a byte offset; another
exception, a hang (libFuzzer ``-timeout``) or a blow-up in memory (``-rss_limit_mb``) is a bug.

Two engines share the target and the structure-aware mutator of ``tests/fuzz/mutate.py`` (which fixes
up CRCs and lengths after changing a field, so the mutations reach the decoders behind the checksums):

* ``--engine atheris`` (default): coverage-guided (libFuzzer) over the instrumented ``sqc`` package;
* ``--engine random``: the same mutator driven by ``random`` (no coverage feedback, no atheris needed);
  it keeps going after a failure and groups failures by where they were raised.

Seeds are small valid files written by sqc itself (every codec, layout and stream coder), plus the
regression corpus ``tests/fuzz/corpus/``; the suite replays that corpus (``tests/test_reliability.py``).

    python benchmarks/fuzz_container.py --time 600                # 10 minutes, atheris
    python benchmarks/fuzz_container.py --engine random --runs 200000 --seed 1
    python benchmarks/fuzz_container.py --replay crash-*          # re-run saved inputs
    python benchmarks/fuzz_container.py --exhaustive              # every bit flip / cut of the valid corpus
    python benchmarks/fuzz_container.py --bounds                  # memory and time on crafted hostile inputs
    python benchmarks/fuzz_container.py --select-corpus DIR       # refresh tests/fuzz/corpus/cov-*
    python benchmarks/fuzz_container.py --write-seeds DIR         # just the seed files
    python benchmarks/fuzz_container.py --runs 3000 --mem-every 250  # memory every 250 inputs (stderr)

The target, the atheris leak plug and the memory log are the harness in ``tests/fuzz/harness.py``,
which the suite tests too; this script is the campaigns around it.

Memory under atheris: atheris 3.0.0 leaks the result of every comparison in instrumented code (see
``harness.plug_trace_cmp_leak``); numpy comparisons in the rANS decoder made RSS grow ~40 KB per input,
so the harness plugs the leak once fuzzing starts (``--keep-atheris-leak`` to measure it). What still
grows is torch.fx's cache of generated ``forward`` sources (~5 KB per model the reader builds, kept for
tracebacks: ``fx_sources`` in the ``--mem-every`` lines), a few percent of inputs build one.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

from harness import (  # noqa: E402  (tests/fuzz/harness.py: the target the suite shares)
    CORPUS,
    make_target,
    plug_trace_cmp_leak,
    prepare_corpus,
    with_memory_log,
)


def _load_engine(engine: str) -> Callable[[], None]:
    """Import sqc (instrumented under atheris) and return nothing; must run before sqc is imported."""
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["sqc"]):
            import sqc.formats.container
            import sqc.ir.records  # noqa: F401
    return lambda: None


def run_atheris(args: argparse.Namespace, workdir: Path) -> None:
    import atheris
    from mutate import mutate

    corpus = prepare_corpus(workdir)
    inner = make_target()
    plugged: list[bool] = []

    def target(data: bytes) -> None:
        if not plugged and not args.keep_atheris_leak:  # atheris.Fuzz() has installed its hooks now
            plugged.append(plug_trace_cmp_leak())
            print(f"atheris comparison-result leak: {'plugged' if plugged[0] else 'not present'}", flush=True)
        inner(data)

    if args.mem_every:
        target = with_memory_log(target, args.mem_every, args.tracemalloc)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        return mutate(data, random.Random(seed), atheris.Mutate, max_size)

    flags = [
        sys.argv[0],
        str(corpus),
        f"-rss_limit_mb={args.rss_mb}",
        f"-timeout={args.timeout}",
        f"-artifact_prefix={workdir}/",
        "-max_len=65536",
        "-print_final_stats=1",
        f"-seed={args.seed}",
    ]
    if args.time:
        flags.append(f"-max_total_time={args.time}")
    if args.runs:
        flags.append(f"-runs={args.runs}")
    print(f"atheris: corpus {corpus}, artifacts in {workdir}", flush=True)
    atheris.Setup(flags, target, custom_mutator=mutator)
    atheris.Fuzz()


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}" if last else type(exc).__name__


def run_random(args: argparse.Namespace, workdir: Path) -> int:
    from mutate import mutate, random_bytes_mutation

    corpus = prepare_corpus(workdir)
    pool = [path.read_bytes() for path in sorted(corpus.glob("*"))]
    target = make_target()
    if args.mem_every:
        target = with_memory_log(target, args.mem_every, args.tracemalloc)
    rng = random.Random(args.seed)
    failures: dict[str, tuple[int, Path]] = {}
    start = time.perf_counter()
    slowest = (0.0, b"")
    runs = 0
    deadline = start + args.time if args.time else None
    while (not args.runs or runs < args.runs) and (deadline is None or time.perf_counter() < deadline):
        data = rng.choice(pool)
        for _ in range(rng.choice((1, 1, 2, 3))):
            data = mutate(data, rng, lambda blob, size: random_bytes_mutation(blob, size, rng))
        t0 = time.perf_counter()
        try:
            target(data)
        except Exception as exc:
            key = _where(exc)
            count, path = failures.get(key, (0, workdir / f"crash-{len(failures):03d}.sqc"))
            if not count:
                path.write_bytes(data)
                print(f"NEW FAILURE {key}: {exc!s:.200} -> {path}", flush=True)
            failures[key] = (count + 1, path)
        elapsed = time.perf_counter() - t0
        if elapsed > slowest[0]:
            slowest = (elapsed, data)
        runs += 1
        if runs % 20000 == 0:
            rate = runs / (time.perf_counter() - start)
            print(f"#{runs} {rate:.0f} exec/s, {len(failures)} distinct failures", flush=True)
    seconds = time.perf_counter() - start
    (workdir / "slowest.sqc").write_bytes(slowest[1])
    print(
        f"done: {runs} runs in {seconds:.0f} s ({runs / seconds:.0f} exec/s), "
        f"{len(failures)} distinct failures, slowest input {slowest[0] * 1e3:.1f} ms "
        f"({len(slowest[1])} bytes, saved as slowest.sqc)"
    )
    for key, (count, path) in failures.items():
        print(f"  {count:6d} x {key} (first: {path})")
    return 1 if failures else 0


def replay(paths: list[str]) -> int:
    target = make_target()
    bad = 0
    for name in paths:
        data = Path(name).read_bytes()
        t0 = time.perf_counter()
        try:
            target(data)
            outcome = "ok"
        except Exception as exc:
            bad += 1
            outcome = f"FAIL {_where(exc)}: {exc!s:.300}"
        print(f"{name}: {outcome} ({(time.perf_counter() - t0) * 1e3:.1f} ms)")
    return 1 if bad else 0


def outcome(data: bytes) -> str:
    """A label for what reading ``data`` does: "valid", or the error with its numbers blanked."""
    import re

    from sqc.errors import SqcFormatError
    from sqc.formats import container

    try:
        container.model_from_layout(container.read_layout(data), "fuzz").verify()
    except SqcFormatError as exc:
        text = str(exc).split(" (at byte offset")[0].split(" (")[0].removeprefix("fuzz: ")
        text = re.sub(r"^tensor \S+?( index)?:", r"tensor #\1:", text)
        return re.sub(r"'[^']*'|\"[^\"]*\"|\[.*\]|\d+", "#", text)[:80]
    return "valid"


# Deeper checks first: a corpus that keeps the tensor and graph decoders busy, not only the header.
_DEPTH = ("valid", "tensor", "values", "sparse", "Huffman", "graph section: node", "graph section")


def select_corpus(campaign: Path, max_files: int, max_size: int = 4096) -> int:
    """The smallest input per distinct outcome (error message shape), as ``cov-*.sqc`` regression
    files: a few dozen small files that together reach the reader's checks the campaign reached."""
    best: dict[str, bytes] = {}
    for path in sorted(campaign.glob("*")):
        data = path.read_bytes()
        if len(data) > max_size:
            continue
        label = outcome(data)
        if label not in best or len(data) < len(best[label]):
            best[label] = data

    groups: dict[int, list[tuple[str, bytes]]] = {}
    for label, data in sorted(best.items(), key=lambda item: len(item[1])):
        depth = next((i for i, word in enumerate(_DEPTH) if label.startswith(word)), len(_DEPTH))
        groups.setdefault(depth, []).append((label, data))
    chosen: list[tuple[str, bytes]] = []
    while len(chosen) < max_files and any(groups.values()):  # round robin, deepest stage first
        for depth in sorted(groups):
            if groups[depth] and len(chosen) < max_files:
                chosen.append(groups[depth].pop(0))
    for old in CORPUS.glob("cov-*.sqc"):
        old.unlink()
    for number, (label, data) in enumerate(sorted(chosen)):
        (CORPUS / f"cov-{number:03d}.sqc").write_bytes(data)
        print(f"cov-{number:03d}.sqc {len(data):5d} B  {label}")
    print(f"{len(best)} distinct outcomes in {campaign}; kept {len(chosen)}")
    return 0


def exhaustive(paths: list[Path]) -> int:
    """Every single-bit flip and every truncation of each (valid) file: how many are detected."""
    from sqc.errors import SqcFormatError
    from sqc.formats import container

    flips = caught = cuts = cut_caught = 0
    start = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        container.read_layout(data)  # the file itself must be valid
        for bit in range(8 * len(data)):
            damaged = bytearray(data)
            damaged[bit // 8] ^= 1 << (bit % 8)
            flips += 1
            try:
                container.read_layout(bytes(damaged))
            except SqcFormatError as exc:
                caught += exc.offset is not None
        for cut in range(len(data)):
            cuts += 1
            try:
                container.read_layout(data[:cut])
            except SqcFormatError as exc:
                cut_caught += exc.offset is not None
    seconds = time.perf_counter() - start
    print(
        f"{len(paths)} files, {sum(p.stat().st_size for p in paths)} bytes: "
        f"bit flips detected {caught}/{flips} ({100 * caught / flips:.2f} %), "
        f"truncations detected {cut_caught}/{cuts} ({100 * cut_caught / cuts:.2f} %), {seconds:.1f} s"
    )
    return 0 if caught == flips and cut_caught == cuts else 1


def bounds() -> int:
    """Crafted hostile inputs: outcome, file size, peak traced (Python + numpy) memory, time.

    Each input is read twice: timed without tracing, then under tracemalloc for the peak (tracing every
    allocation slows the decision-by-decision rANS decoder ~70x, which would swamp its time)."""
    import tracemalloc

    from crafted import craft, huffman_huge_table, quadratic_names, rans_busy, single_symbol_values, zip_bomb

    from sqc.errors import SqcFormatError
    from sqc.formats import container

    cases = {path.name: path.read_bytes() for path in sorted(CORPUS.glob("bug-*.sqc"))}
    cases["huffman table of 2^24 symbols (2 MB)"] = huffman_huge_table(24)
    cases["zip bomb: 256 MB of JSON"] = craft([], [], graph_bytes=zip_bomb(256))
    cases["24k crafted node names"] = quadratic_names(8000)
    cases["rANS: 2^18 decisions from a 20-byte stream (over the cap)"] = rans_busy(1)
    budget = container.MAX_ELEMENTS_BASE // 2
    cases[f"{budget:,} elements from 0.3 KB (within the budget)"] = craft(
        [["t0", [budget], "weight"]], [single_symbol_values()]
    )

    def read(data: bytes) -> str:
        try:
            container.model_from_layout(container.read_layout(data), "bounds").verify()
        except SqcFormatError as exc:
            return str(exc).split(" (at byte offset")[0][:70]
        return "read"

    print(f"{'input':48} {'bytes':>9} {'peak MB':>8} {'x file':>7} {'ms':>7}  outcome")
    for label, data in cases.items():
        t0 = time.perf_counter()
        result = read(data)
        ms = (time.perf_counter() - t0) * 1e3
        tracemalloc.start()
        read(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{label[:48]:48} {len(data):9,} {peak / 1e6:8.2f} {peak / len(data):7.1f} {ms:7.1f}  {result}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--engine", choices=("atheris", "random"), default="atheris")
    parser.add_argument("--time", type=int, default=0, help="seconds to fuzz (0: no limit)")
    parser.add_argument("--runs", type=int, default=0, help="executions (0: no limit)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sqc-fuzz")
    parser.add_argument("--rss-mb", type=int, default=2048, help="atheris: memory limit per input")
    parser.add_argument("--timeout", type=int, default=10, help="atheris: seconds per input")
    parser.add_argument("--mem-every", type=int, default=0, metavar="N", help="log memory every N inputs")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES", help="with --mem-every")
    parser.add_argument(
        "--keep-atheris-leak",
        action="store_true",
        help="atheris: do not plug its comparison leak (to measure it)",
    )
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs and report")
    parser.add_argument("--write-seeds", type=Path, metavar="DIR", help="write the seed files and exit")
    parser.add_argument(
        "--select-corpus",
        type=Path,
        metavar="DIR",
        help="pick the smallest input per distinct outcome from a campaign's corpus into tests/fuzz/corpus",
    )
    parser.add_argument("--max-files", type=int, default=30, help="--select-corpus: at most this many")
    parser.add_argument(
        "--exhaustive",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="flip every bit, cut at every offset of these valid files (default: the corpus's valid-*)",
    )
    parser.add_argument("--bounds", action="store_true", help="memory and time on crafted hostile inputs")
    args = parser.parse_args()
    if args.exhaustive is not None:
        return exhaustive(args.exhaustive or sorted(CORPUS.glob("valid-*.sqc")))
    if args.bounds:
        return bounds()
    if not any((args.time, args.runs, args.replay, args.write_seeds, args.select_corpus)):
        args.time = 60
    fuzzing = args.engine == "atheris" and not (args.replay or args.select_corpus or args.write_seeds)
    _load_engine("atheris" if fuzzing else "none")
    if args.replay:
        return replay(args.replay)
    if args.select_corpus:
        return select_corpus(args.select_corpus, args.max_files)
    if args.write_seeds:
        from crafted import seed_files

        args.write_seeds.mkdir(parents=True, exist_ok=True)
        for name, data in seed_files().items():
            (args.write_seeds / name).write_bytes(data)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.engine == "atheris":
        run_atheris(args, args.workdir)
        return 0
    return run_random(args, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
