"""Run the benchmarks and write BENCHMARKS.md: `python -m load_tests [--only NAME ...]`."""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from load_tests import bench_stage1
from streams.kafka_local import LocalBroker, free_port

ROOT = Path(__file__).resolve().parent.parent


def _with_broker(run: Callable[[str, str], str]) -> Callable[[], str]:
    def go() -> str:
        with tempfile.TemporaryDirectory() as home:
            broker = LocalBroker(Path(home), port=free_port(), heap="1g")
            broker.up()
            try:
                return run(broker.bootstrap, home)
            finally:
                broker.down()
    return go


BENCHMARKS: dict[str, Callable[[], str]] = {
    "stage1": _with_broker(bench_stage1.run),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS)
    sections = []
    for name in names:
        print(f"running {name} ...", flush=True)
        sections.append(BENCHMARKS[name]())
        print(sections[-1], flush=True)
    header = [
        "# Benchmarks",
        "",
        f"Written by `python -m load_tests` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()},"
        f" {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}.",
        "Re-run it to refresh; numbers are from one run on the machine named above.",
        "",
    ]
    (ROOT / "BENCHMARKS.md").write_text("\n".join([*header, "\n\n".join(sections), ""]))


if __name__ == "__main__":
    main()
