"""The demo's child processes (worker, reference service): started with their own environment and log, stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from driftline.errors import DriftlineError


class DemoFailed(DriftlineError):
    """A step of the demo did not happen in time; the message says which and where to look."""


class Child:
    """``python -m driftline.streams <args>`` with ``env``, its output in ``log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "driftline.streams", *args], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise DemoFailed(f"the {self.name} exited with code {self.proc.returncode}; see {self.log}")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the worker and the service flush and commit), SIGKILL if it does not end in time."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def wait_healthy(url: str, child: Child, timeout: float) -> dict[str, object]:
    """Poll ``url`` until it answers 200; return its JSON. Fails early when the child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check()
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                answer: dict[str, object] = response.json()
                return answer
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise DemoFailed(f"the {child.name} did not answer {url} within {timeout:.0f} s; see {child.log}")
