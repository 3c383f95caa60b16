"""Session-wide real Kafka broker (the same code as `driftline kafka up`) on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.streams.config.settings import Settings, load_settings
from driftline.streams.kafka.local_broker import LocalBroker, free_port
from load_tests.scrape import scrape_metric

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.fail("integration tests need Java 17+ and Maven on PATH")
    local = LocalBroker(tmp_path_factory.mktemp("kafka-home"), port=free_port(), heap="768m")
    local.up()
    yield local
    local.down()


class Worker:
    """A `driftline worker` subprocess with its own settings, as an operator would run it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = int(env["DRIFTLINE_METRICS_PORT"])

    def start(self, *args: str) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "driftline.streams", "worker", *args], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric's samples, 0 while the endpoint is not up yet."""
        return scrape_metric(self.metrics_port, name)

    def wait_metric(self, name: str, at_least: float, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"worker died:\n{self.log.read_text()[-4000:]}")
            value = self.metric(name)
            if value >= at_least:
                return value
            time.sleep(0.3)
        raise AssertionError(f"{name} stayed below {at_least} ({self.metric(name)}):\n{self.log.read_text()[-3000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def env_for(broker: LocalBroker, tmp_path: Path):
    """Build DRIFTLINE_* environments isolated by topic prefix and state directory."""
    prefix = f"t{uuid.uuid4().hex[:10]}."

    def make(**overrides: object) -> dict[str, str]:
        values: dict[str, object] = {
            "home": tmp_path / "home",
            "kafka_bootstrap": broker.bootstrap,
            "topic_prefix": prefix,
            "consumer_group": f"g-{prefix}",
            "idle_partition_seconds": 1,
            "metrics_port": free_port(),
            **overrides,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        env.update({f"DRIFTLINE_{k.upper()}": str(v) for k, v in values.items()})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    return make


@pytest.fixture
def worker_for(tmp_path: Path):
    started: list[Worker] = []

    def make(env: dict[str, str], name: str = "worker") -> Worker:
        worker = Worker(env, tmp_path / f"{name}.log")
        started.append(worker)
        return worker

    yield make
    for worker in started:
        if worker.alive():
            worker.kill()


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings object a process started with ``env`` would build."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DRIFTLINE_")}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("DRIFTLINE_")})
        return load_settings()
    finally:
        for key in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
            del os.environ[key]
        os.environ.update(saved)
