"""Reading a worker's Prometheus ``/metrics``: the one scrape the benchmarks and the test suite's workers use."""

from __future__ import annotations

import urllib.request


def scrape_metric(port: int, name: str) -> float:
    """Sum of the samples of metric ``name`` (every label set) on ``127.0.0.1:port``; 0 while it is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))
