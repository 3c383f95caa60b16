"""`driftline kafka up | down | status` as a user runs it: idempotent, clean, with clear errors, topics made."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.streams.kafka.local_broker import BrokerError, LocalBroker, free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.streams", "kafka", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False)


def kafka_jvms(home: Path) -> set[int]:
    """Kafka JVMs whose configuration lies under ``home`` (under xdist the other worker starts brokers too)."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if b"kafka.Kafka" in cmdline and str(home).encode() in cmdline:
                    found.add(int(proc.name))
            except OSError:
                continue
    return found


def test_up_twice_is_harmless_and_down_leaves_no_jvm(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path), "DRIFTLINE_KAFKA_PORT": str(port)}
    before = kafka_jvms(tmp_path)
    first = cli(env, "up")
    assert first.returncode == 0, first.stderr
    assert f"bootstrap 127.0.0.1:{port}" in first.stdout
    # the topics exist before any worker runs: a serving app started first loses nothing
    assert "created driftline.predictions: partitions 6, replication factor 1" in first.stdout
    second = cli(env, "up")
    assert second.returncode == 0
    assert second.stdout == first.stdout.replace("created ", "exists  ")
    assert len(kafka_jvms(tmp_path) - before) == 1
    assert "running" in cli(env, "status").stdout
    assert cli(env, "down").returncode == 0
    assert kafka_jvms(tmp_path) - before == set()
    assert cli(env, "down").returncode == 0
    assert "not running" in cli(env, "status").stdout


def test_a_taken_port_and_a_missing_java_are_clear_errors(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} is taken"):
            LocalBroker(tmp_path, port=port).up()
    env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path / "nojava"), "DRIFTLINE_KAFKA_PORT": str(free_port()),
           "PATH": str(Path(sys.executable).parent)}
    done = cli(env, "up")
    assert done.returncode == 1
    assert "`java` not found on PATH: install a Java 17+ runtime" in done.stderr


def test_a_cluster_id_starting_with_a_dash_formats(tmp_path: Path):
    broker = LocalBroker(tmp_path, port=free_port())
    broker.dir.mkdir(parents=True)
    (broker.dir / "cluster.id").write_text("-" + "A" * 21)
    try:
        assert broker.up().running
    finally:
        broker.down()
