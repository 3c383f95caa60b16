"""Throughput of the summary hot paths (run by hand: `.venv/bin/python -m load_tests.bench_summaries`).

Not a test: timings depend on the machine. Single-threaded numpy; reports the best of 3 runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np

from driftline.detectors.binning import binner
from driftline.detectors.feature_summaries import NumericSummary
from driftline.detectors.reference import quantile_edges

N = 10_000_000


def _best(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _searchsorted_counts(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)


def _numeric_add(edges: np.ndarray, x: np.ndarray) -> None:
    NumericSummary.empty(edges).add(x)


def main() -> None:
    rng = np.random.default_rng(0)
    samplers = {
        "normal": lambda n: rng.normal(size=n),
        "lognormal(0,2)": lambda n: rng.lognormal(0.0, 2.0, n),
        "exponential": lambda n: rng.exponential(size=n),
        "integers 0..4": lambda n: rng.integers(0, 5, n).astype(np.float64),
        "two far clusters": lambda n: np.where(rng.random(n) < 0.5, rng.normal(0, 1e-6, n), rng.normal(1e6, 1, n)),
    }
    print(f"{'data':18} {'edges':>5} {'binner M/s':>11} {'searchsorted M/s':>17} {'NumericSummary.add M/s':>23}")
    for name, draw in samplers.items():
        edges = quantile_edges(draw(100_000), 50)
        x = draw(N)
        b = binner(edges)
        reference = _searchsorted_counts(edges, x)
        assert np.array_equal(b.counts(x), reference)
        fast = _best(partial(b.counts, x))
        slow = _best(partial(_searchsorted_counts, edges, x), 1)
        full = _best(partial(_numeric_add, edges, x))
        print(f"{name:18} {edges.size:5d} {N / fast / 1e6:11.0f} {N / slow / 1e6:17.0f} {N / full / 1e6:23.0f}")


if __name__ == "__main__":
    main()
