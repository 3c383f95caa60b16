"""Run the benchmarks and write BENCHMARKS.md: `python -m load_tests [--only NAME ...] [--bootstrap HOST:PORT]`.

Without ``--bootstrap`` each benchmark that needs Kafka starts a local broker of its own; with it they run against
that cluster (to size a deployment on one's own brokers: each creates topics under a fresh prefix).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from driftline.streams.kafka.local_broker import LocalBroker, free_port
from load_tests import (
    bench_cardinality,
    bench_detectors,
    bench_false_alarms,
    bench_memory,
    bench_merge,
    bench_pipeline,
    bench_profile,
    bench_scaling,
    bench_sequential,
    bench_serving,
    bench_summarize,
)

ROOT = Path(__file__).resolve().parent.parent
MARK = "<!-- bench:"


Benchmark = Callable[[str | None], str]  # given the --bootstrap cluster, if any


def _with_broker(run: Callable[[str, str], str]) -> Benchmark:
    """A benchmark on the given cluster, or else on a local broker started for it."""
    def go(bootstrap: str | None) -> str:
        with tempfile.TemporaryDirectory() as home:
            if bootstrap:
                return run(bootstrap, home)
            broker = LocalBroker(Path(home), port=free_port(), heap="1g")
            broker.up()
            try:
                return run(broker.bootstrap, home)
            finally:
                broker.down()
    return go


BENCHMARKS: dict[str, Benchmark] = {
    "summarize": _with_broker(bench_summarize.run),
    "detectors": lambda _bootstrap: bench_detectors.run(),
    "serving": _with_broker(bench_serving.run),
    "sequential": _with_broker(bench_sequential.run),
    "false_alarms": _with_broker(bench_false_alarms.run),
    "cardinality": _with_broker(bench_cardinality.run),
    "merge": lambda _bootstrap: bench_merge.run(),
    "pipeline": _with_broker(bench_pipeline.run),
    "profile": _with_broker(bench_profile.run),
    "scaling": _with_broker(bench_scaling.run),
    "memory": _with_broker(bench_memory.run),
}


def _previous_sections(path: Path) -> dict[str, str]:
    """Sections of an earlier run, so re-running one benchmark keeps the others' results."""
    if not path.exists():
        return {}
    found: dict[str, str] = {}
    for chunk in path.read_text().split(MARK)[1:]:
        name, _, body = chunk.partition(" -->\n")
        found[name.strip()] = body.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--bootstrap", help="run against this Kafka cluster instead of a local broker")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="the results file (default BENCHMARKS.md; point it elsewhere for your own cluster)")
    args = parser.parse_args()
    path = args.output
    sections = _previous_sections(path)
    for name in args.only or list(BENCHMARKS):
        print(f"running {name} ...", flush=True)
        sections[name] = BENCHMARKS[name](args.bootstrap).strip() + (
            f"\n\n_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
            f"numpy {np.__version__}._")
        print(sections[name], flush=True)
    header = ["# Benchmarks", "", "Written by `python -m load_tests` (one section per benchmark; "
              "`--only NAME` re-runs one and keeps the others). Numbers are from one run on the machine named.", ""]
    # a section no benchmark writes (notes kept by hand, e.g. what was tried) stays, after the measured ones
    names = [name for name in BENCHMARKS if name in sections] + [name for name in sections if name not in BENCHMARKS]
    body = [f"{MARK}{name} -->\n{sections[name]}\n" for name in names]
    path.write_text("\n".join(header + body))


if __name__ == "__main__":
    main()
