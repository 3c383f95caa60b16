"""A real single-node Apache Kafka 4 broker (KRaft, broker+controller) for the demo and the test suite.

The jars come from Maven (``streams/broker/pom.xml``), so the only prerequisites are Java 17 and Maven.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

# BrokerError, the family, stays importable from here: it catches LocalBrokerError as it caught itself before
from driftline.errors import BrokerError as BrokerError
from driftline.errors import LocalBrokerError
from driftline.streams.kafka.local_sasl import SaslListener

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    home: Path
    log_file: Path

    def describe(self) -> str:
        if self.running:
            return f"kafka: running, pid {self.pid}, bootstrap {self.bootstrap}, log {self.log_file}"
        return f"kafka: not running (state in {self.home})"


def _resource(name: str) -> Path:
    return Path(str(resources.files("driftline.streams.kafka").joinpath("broker", name)))


def _require(tool: str, what: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise LocalBrokerError(f"`{tool}` not found on PATH: install {what} to run the local Kafka broker")
    return found


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


class LocalBroker:
    """One broker process owned through its state directory ``<home>/kafka`` and pid file.

    ``up()`` and ``down()`` are idempotent; ``down()`` only ever signals the pid it wrote itself.
    """

    def __init__(self, home: Path, port: int = 9092, heap: str = "512m", sasl: SaslListener | None = None) -> None:
        self.dir = home / "kafka"
        self.port = port
        self.heap = heap
        self.libs = self.dir / "libs"
        self.pid_file = self.dir / "broker.pid"
        self.log_file = self.dir / "broker.log"
        self.config_file = self.dir / "server.properties"
        self.sasl = sasl  # an extra listener whose clients must authenticate (tests of Kafka security)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def status(self) -> BrokerStatus:
        pid = self._owned_pid()
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.dir, self.log_file)

    def install(self) -> None:
        """Copy the broker jars with Maven once; a stamp of the pom's hash makes later calls free."""
        pom = _resource("pom.xml")
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        stamp = self.libs / ".pom-sha256"
        if stamp.exists() and stamp.read_text() == digest:
            return
        _require("java", "a Java 17+ runtime (e.g. openjdk-17-jre-headless)")
        mvn = _require("mvn", "Apache Maven (e.g. the `maven` package)")
        if self.libs.exists():
            shutil.rmtree(self.libs)
        self.libs.mkdir(parents=True)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={self.libs}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-2000:]
            raise LocalBrokerError(f"Maven could not resolve the Kafka jars (exit {done.returncode}):\n{tail}")
        stamp.write_text(digest)

    def up(self) -> BrokerStatus:
        current = self.status()
        if current.running:
            return current
        if not port_is_free(self.port):
            raise LocalBrokerError(f"port {self.port} is taken by another process: free it or set DRIFTLINE_KAFKA_PORT")
        self.install()
        java = _require("java", "a Java 17+ runtime (e.g. openjdk-17-jre-headless)")
        self._write_config()
        self._format(java)
        classpath = f"{self.libs}/*"
        log4j = _resource("log4j2.properties")
        cmd = [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
               "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
               "-cp", classpath, "kafka.Kafka", str(self.config_file)]
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc)
        return self.status()

    def down(self) -> BrokerStatus:
        pid = self._owned_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                while _pid_alive(pid):
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return self.status()

    def _owned_pid(self) -> int | None:
        """The pid in our pid file, if that process is alive and really is our broker."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return None
        return pid if "kafka.Kafka" in cmdline and str(self.config_file) in cmdline else None

    def _write_config(self) -> None:
        controller_port = free_port()
        lines = self._properties(1, f"1@127.0.0.1:{controller_port}", controller_port)
        if self.sasl is not None:
            self.sasl.configure(lines)
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def _properties(self, node_id: int, voters: str, controller_port: int, replicas: int = 1, min_isr: int = 1
                    ) -> dict[str, str]:
        """A combined broker+controller node's server.properties (the single broker's and a cluster node's)."""
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return {
            "process.roles": "broker,controller",
            "node.id": str(node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.cleaner.dedupe.buffer.size": "1048577",
            "message.max.bytes": "4194304",
        }

    def _format(self, java: str) -> None:
        id_file = self.dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())
        log4j = _resource("log4j2.properties")
        cmd = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.libs}/*",
               "kafka.tools.StorageTool", "format", "--config", str(self.config_file),
               f"--cluster-id={id_file.read_text().strip()}", "--ignore-formatted"]  # an id may start with '-'
        if self.sasl is not None:
            cmd += self.sasl.format_args()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LocalBrokerError(f"formatting KRaft storage failed:\n{(done.stdout + done.stderr)[-2000:]}")

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise LocalBrokerError(f"the broker exited with code {proc.returncode}; log {self.log_file}:\n{tail}")
            try:
                metadata = admin.list_topics(timeout=1)
            except Exception:
                time.sleep(0.3)
                continue
            if metadata.brokers:
                return
        proc.kill()
        self.pid_file.unlink(missing_ok=True)
        raise LocalBrokerError(f"the broker did not answer a metadata request in {START_TIMEOUT_S:.0f} s; "
                          f"see {self.log_file}")
