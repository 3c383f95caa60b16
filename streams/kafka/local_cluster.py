"""A local three-node Apache Kafka 4 cluster (KRaft, every node broker+controller) for fault tests and
``driftline kafka up --brokers 3``.

Owns what differs from the single broker (`local_broker.LocalBroker`, whose process handling each node
reuses): the nodes' ports, kept in ``<home>/kafka/cluster/ports.json`` so a restart finds the same quorum;
their state directories ``<home>/kafka/cluster/node-<id>/kafka`` and shared cluster id; the durable
defaults (replication factor 3, ``min.insync.replicas`` 2); starting the nodes together (the controller
quorum needs a majority before any node answers); and stopping or killing one node.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from driftline.errors import LocalBrokerError
from driftline.streams.kafka.local_broker import START_TIMEOUT_S, BrokerStatus, LocalBroker, free_port

NODES = 3
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    nodes: tuple[BrokerStatus, ...]

    @property
    def running(self) -> int:
        return sum(node.running for node in self.nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def describe(self) -> str:
        lines = [f"kafka cluster: {self.running}/{len(self.nodes)} nodes running, bootstrap {self.bootstrap}"]
        lines += [f"  node {i}: {node.describe()}" for i, node in enumerate(self.nodes, start=1)]
        return "\n".join(lines)


class ClusterNode(LocalBroker):
    """One node of the cluster: `LocalBroker`'s process handling with the cluster's configuration."""

    def __init__(self, cluster_dir: Path, libs: Path, node_id: int, ports: dict[int, tuple[int, int]],
                 heap: str) -> None:
        super().__init__(cluster_dir / f"node-{node_id}", ports[node_id][0], heap)
        self.libs = libs  # the jars are shared with the single broker: Maven copies them once per home
        self.node_id = node_id
        self.ports = ports

    def _write_config(self) -> None:
        voters = ",".join(f"{i}@127.0.0.1:{controller}" for i, (_, controller) in sorted(self.ports.items()))
        lines = self._properties(self.node_id, voters, self.ports[self.node_id][1], REPLICATION_FACTOR,
                                 MIN_INSYNC_REPLICAS)
        lines.update({
            "default.replication.factor": str(REPLICATION_FACTOR),
            "min.insync.replicas": str(MIN_INSYNC_REPLICAS),
            "unclean.leader.election.enable": "false",
            # a killed node is fenced (its partitions get new leaders) after 4 s instead of 9: the nodes share
            # one host, so a missed heartbeat means a dead process rather than a slow network
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            "num.io.threads": "2",
        })
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def _wait_ready(self, proc: object) -> None:
        """Nothing to wait for alone: a node answers only once a majority of the quorum runs (`LocalCluster.up`)."""

    def kill(self) -> None:
        """SIGKILL the node, as a crash would; its state directory stays for a restart."""
        pid = self._owned_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while self._owned_pid() is not None:
                time.sleep(0.05)


class LocalCluster:
    """Three nodes owned through ``<home>/kafka/cluster``; ``up()`` and ``down()`` are idempotent."""

    def __init__(self, home: Path, first_port: int = 9092, heap: str = "512m",
                 ports: list[int] | None = None) -> None:
        """Nodes listen on ``ports`` (default ``first_port`` and the next two); ports chosen once are kept."""
        self.dir = home / "kafka" / "cluster"
        self.ports_file = self.dir / "ports.json"
        if self.exists(home):
            saved = json.loads(self.ports_file.read_text())
            node_ports = {int(k): (int(v[0]), int(v[1])) for k, v in saved.items()}
        else:
            brokers = ports or [first_port + i for i in range(NODES)]
            node_ports = {i + 1: (port, free_port()) for i, port in enumerate(brokers)}
        self.node_ports = node_ports
        self.nodes = [ClusterNode(self.dir, home / "kafka" / "libs", i, node_ports, heap) for i in sorted(node_ports)]

    @staticmethod
    def exists(home: Path) -> bool:
        """Whether ``home`` holds a cluster that was started once."""
        return (home / "kafka" / "cluster" / "ports.json").exists()

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def status(self) -> ClusterStatus:
        return ClusterStatus(tuple(node.status() for node in self.nodes))

    def up(self) -> ClusterStatus:
        """Start the nodes that are not running (installing the jars once) and wait for all of them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports_file.write_text(json.dumps(self.node_ports))
        first, *others = self.nodes
        first.up()  # formats its storage, writing the cluster id the others join
        for node in others:
            node.dir.mkdir(parents=True, exist_ok=True)
            (node.dir / "cluster.id").write_text((first.dir / "cluster.id").read_text())
        with ThreadPoolExecutor(len(others)) as pool:  # formatting is a JVM start each: in parallel
            list(pool.map(ClusterNode.up, others))
        self.wait_ready(len(self.nodes))
        return self.status()

    def wait_ready(self, brokers: int, timeout: float = START_TIMEOUT_S) -> None:
        """Return once the cluster's metadata lists ``brokers`` brokers; fail early when a node exits."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n in self.nodes if n.pid_file.exists() and not n.status().running]
            if dead:
                tail = dead[0].log_file.read_text(errors="replace")[-3000:]
                raise LocalBrokerError(f"cluster node {dead[0].node_id} exited; log {dead[0].log_file}:\n{tail}")
            try:
                if len(admin.list_topics(timeout=1).brokers) >= brokers:
                    return
            except Exception:
                pass
            time.sleep(0.3)
        raise LocalBrokerError(f"the cluster did not list {brokers} brokers in {timeout:.0f} s; see {self.dir}")

    def down(self) -> ClusterStatus:
        """Stop every node at once (one by one, the last ones would wait for a quorum that is gone)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(ClusterNode.down, self.nodes))
        return self.status()

