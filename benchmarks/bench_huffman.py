"""Throughput of ``sqc.formats.huffman`` on skewed symbol streams.

Codebook indices after k-means are far from uniform, and layers reach tens of millions of weights, so the
encoder and decoder must sustain tens of millions of symbols per second. This script reports the median
of several runs of encode (``encode`` + ``serialize``) and decode (``deserialize``) in symbols/s for a
geometric-like distribution over 32, 64 and 256 symbols.

Run: ``python benchmarks/bench_huffman.py [--count N] [--runs R]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from sqc.formats import huffman


def skewed_symbols(alphabet: int, count: int, seed: int = 0) -> np.ndarray:
    """A Zipf-like stream: p(s) proportional to 1 / (s + 1), the shape of sorted k-means cluster sizes."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, alphabet + 1)
    return rng.choice(alphabet, size=count, p=p / p.sum())


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000_000, help="symbols per stream")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median reported)")
    args = parser.parse_args()

    print(f"{'alphabet':>8} {'bits/sym':>9} {'encode Msym/s':>14} {'decode Msym/s':>14}")
    for alphabet in (32, 64, 256):
        symbols = skewed_symbols(alphabet, args.count)
        blob = huffman.serialize(huffman.encode(symbols, alphabet))
        if not np.array_equal(huffman.deserialize(blob, alphabet, symbols.size), symbols):
            raise SystemExit(f"round trip failed for alphabet {alphabet}")
        enc = median_seconds(lambda s=symbols, a=alphabet: huffman.serialize(huffman.encode(s, a)), args.runs)
        dec = median_seconds(
            lambda b=blob, a=alphabet, n=symbols.size: huffman.deserialize(b, a, n), args.runs
        )
        bits_per_symbol = 8 * len(blob) / symbols.size
        print(
            f"{alphabet:>8} {bits_per_symbol:>9.3f} {symbols.size / enc / 1e6:>14.1f} "
            f"{symbols.size / dec / 1e6:>14.1f}"
        )


if __name__ == "__main__":
    main()
