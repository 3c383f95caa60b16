"""``driftline api`` as an operator runs it: serves, is found by ``driftline sql``, cleans up on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from driftline.streams.api.address import Address
from driftline.streams.kafka.local_broker import free_port
from tests.conftest import ROOT


def env(home: Path, **values: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    out.update({"DRIFTLINE_HOME": str(home), **values})
    return out


def cli(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.streams", *args], env=environment, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_serves_until_sigterm_and_driftline_sql_goes_through_it(tmp_path: Path) -> None:
    environment = env(tmp_path, DRIFTLINE_API_PORT=str(free_port()))
    proc = subprocess.Popen([sys.executable, "-m", "driftline.streams", "api"], env=environment, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while (address := Address.read(tmp_path)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        assert (tmp_path / "api.json").stat().st_mode & 0o077 == 0  # the local key is the owner's only
        assert httpx.get(f"{address.url}/healthz").json()["status"] == "ok"
        # the API process holds the embedded store: this only works through it
        created = cli(environment, "sql", "CREATE TABLE default.t (x UInt8) ENGINE = MergeTree ORDER BY x", "--write")
        assert created.returncode == 0, created.stderr
        assert cli(environment, "sql", "INSERT INTO default.t VALUES (7)").returncode == 1
        assert cli(environment, "sql", "INSERT INTO default.t VALUES (7)", "--write").returncode == 0
        shown = cli(environment, "sql", "SELECT x FROM default.t", "--format", "csv")
        assert shown.stdout == "x\n7\n", shown.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert Address.read(tmp_path) is None


def test_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    done = cli(env(tmp_path, DRIFTLINE_API_PORT=str(free_port()), DRIFTLINE_API_ADDR="0.0.0.0"), "api")
    assert done.returncode == 2 and "DRIFTLINE_API_TOKEN" in done.stderr
    assert cli(env(tmp_path), "api").returncode == 2  # no port
