"""Soak the fault tests (issue #14): `python -m load_tests.soak_faults [--only store|kills|webhook ...]`.

Runs ``tests/integration/test_faults.py`` at soak size through its ``FAULTS_*`` variables, so the soak and
CI check one set of assertions: 200,000 events, SIGKILLs of two summarize workers and the merge worker at
10 seeded random moments, the ClickHouse store refusing writes for 60 s, the webhook receiver down for
5 minutes with the route's default retry settings. Prints each test's outcome, wall time and the numbers
it reports (the result is recorded by hand in BENCHMARKS.md, "Faults").
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOAK = {"FAULTS_EVENTS": "200000", "FAULTS_KILLS": "10", "FAULTS_STORE_OUTAGE_S": "60",
        "FAULTS_WEBHOOK_OUTAGE_S": "300", "FAULTS_SOAK": "1"}
TESTS = {"store": "store_outage", "kills": "killed_at_random", "webhook": "webhook_down"}
REPORTED = re.compile(r"^(?:store down|uninterrupted run|webhook down) .*$", re.MULTILINE)


def run(name: str) -> bool:
    """One fault test at soak size; True when it passed."""
    started = time.monotonic()
    # its own base directory: the workers' logs and stores stay there for a look after a failure
    basetemp = Path(tempfile.gettempdir()) / f"soak-faults-{name}"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           f"--basetemp={basetemp}", "tests/integration/test_faults.py", "-k", TESTS[name]],
                          env={**os.environ, **SOAK}, cwd=ROOT, capture_output=True, text=True, check=False)
    passed = done.returncode == 0
    print(f"{name}: {'passed' if passed else 'FAILED'} in {time.monotonic() - started:.0f} s", flush=True)
    for line in REPORTED.findall(done.stdout):
        print(f"  {line}", flush=True)
    if not passed:
        print(done.stdout[-6000:], done.stderr[-2000:], f"logs and stores: {basetemp}", sep="\n", flush=True)
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(TESTS), default=list(TESTS))
    args = parser.parse_args()
    print(", ".join(f"{k}={v}" for k, v in SOAK.items()), flush=True)
    results = [run(name) for name in args.only]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
