"""A three-node KRaft cluster (issue #14): topics replicated 3 times, and the loss of a leader loses nothing.

The cluster is started as a user would, with ``driftline kafka up --brokers 3``, which also creates driftline's
topics (replication factor 3, ``min.insync.replicas`` 2). ``driftline topics create`` is idempotent on it.
Then the node leading most of the predictions partitions is SIGKILLed while the SDK logs live traffic: every
record the SDK counted as acknowledged reaches its window, and every window's count is exact.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from driftline.serving import Monitor
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import port_is_free
from driftline.streams.kafka.local_cluster import LocalCluster
from tests.conftest import ROOT, settings_of
from tests.integration.synthetic import MODEL, VERSION, Expected
from tests.integration.test_kafka_faults import LiveTraffic
from tests.integration.test_pipeline import assert_matches_numpy

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.streams", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False)


def three_free_ports() -> int:
    """A port p with p, p+1 and p+2 free (``kafka up --brokers 3`` listens on DRIFTLINE_KAFKA_PORT and the next two)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            first = int(sock.getsockname()[1])
        if first < 65000 and all(port_is_free(first + i) for i in range(3)):
            return first
    raise RuntimeError("no three consecutive free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    home = tmp_path_factory.mktemp("kafka-cluster")
    env = {**os.environ, "DRIFTLINE_HOME": str(home), "DRIFTLINE_KAFKA_PORT": str(three_free_ports()),
           "DRIFTLINE_KAFKA_HEAP": "384m"}
    up = cli(env, "kafka", "up", "--brokers", "3")
    local = LocalCluster(home)
    try:
        assert up.returncode == 0, up.stderr
        assert "kafka cluster: 3/3 nodes running" in up.stdout
        # the topics exist before any worker: an outside producer started first loses nothing
        assert "created driftline.predictions: partitions 6, replication factor 3" in up.stdout
        yield local
    finally:
        for node in local.nodes:  # its data is thrown away: no need for a clean shutdown
            node.kill()


@pytest.fixture
def broker(cluster: LocalCluster) -> LocalCluster:
    """``env_for`` points at the cluster (every node in the bootstrap list)."""
    return cluster


def test_topics_create_twice_makes_replicated_topics_once(env_for):
    env = env_for(topic_partitions=4, topic_replication_factor=3)
    first = cli(env, "topics", "create")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == len(topics.ALL) + len(topics.CHANGELOGS)
    assert all(line.startswith("created ") and line.endswith("replication factor 3") for line in lines)
    prefix = env["DRIFTLINE_TOPIC_PREFIX"]
    assert f"created {prefix}predictions: partitions 4, replication factor 3" in lines
    assert f"created {prefix}references: partitions 1, replication factor 3" in lines
    second = cli(env, "topics", "create")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [line.replace("created ", "exists  ", 1) for line in lines]
    admin = AdminClient({"bootstrap.servers": env["DRIFTLINE_KAFKA_BOOTSTRAP"]})
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"{prefix}predictions")
    min_isr = admin.describe_configs([resource])[resource].result()["min.insync.replicas"]
    # set on the topic itself, so it holds on any cluster, whatever the brokers' default
    assert (min_isr.value, min_isr.source) == ("2", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)


def leader_of_most_predictions(cluster: LocalCluster, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
    return Counter(p.leader for p in partitions).most_common(1)[0][0]


def test_killing_the_predictions_leader_loses_no_acknowledged_record(cluster: LocalCluster, env_for, worker_for,
                                                                    tmp_path: Path):
    # A dead node stalls acks=all writes on every partition it replicates, not only those it leads, until
    # the controller fences it (4 s on the local cluster, broker.session.timeout.ms): the leaders that stay
    # answer the worker meanwhile, so its idle time must outlast a failover or it closes their windows early
    env = env_for(window_seconds=2, allowed_lateness_seconds=1, idle_partition_seconds=10, topic_replication_factor=3)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    worker = worker_for(env).start()
    worker.wait_metric("driftline_stage2_watermark_seconds", 1)
    expected = Expected(size_ms=2_000)
    monitor = Monitor(settings.kafka_bootstrap, model_id=MODEL, model_version=VERSION,
                      topic_prefix=settings.topic_prefix)
    traffic = LiveTraffic(monitor, expected)
    traffic.thread.start()
    worker.wait_metric("driftline_windows_written_total", 2)
    victim = leader_of_most_predictions(cluster, settings.topic(topics.PREDICTIONS))
    cluster.node(victim).kill()
    killed_at = time.monotonic()
    time.sleep(10)
    traffic.stop()
    assert monitor.flush(60) == 0
    stats = monitor.stats()
    # acks=all with min.insync.replicas 2: what the SDK counts as sent is on both surviving nodes
    assert (stats.sent, stats.failed, stats.dropped) == (traffic.logged, 0, 0)
    assert leader_of_most_predictions(cluster, settings.topic(topics.PREDICTIONS)) != victim
    last_end_s = (max(key[2] for key in expected.counts) + expected.size_ms) / 1000
    worker.wait_metric("driftline_stage2_watermark_seconds", last_end_s, timeout=60)
    assert worker.alive()
    assert worker.terminate() == 0
    assert_matches_numpy(settings.clickhouse_url, expected)
    print(f"node {victim} killed; {traffic.logged} predictions, all acknowledged and counted; checked "
          f"{time.monotonic() - killed_at:.1f} s after the kill")
