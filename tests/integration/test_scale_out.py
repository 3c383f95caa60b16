"""Scale-out: one worker and three summarize workers in one group write identical windows, even after a kill."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import numpy as np
import pytest

from driftline.streams import store
from driftline.streams.kafka import topics
from driftline.streams.pipeline.windows import JUMP_RECORDS
from tests.conftest import settings_of
from tests.integration.synthetic import features_for, outside_event, outside_producer

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000
PER_HALF = 15_000
CLOSE_MS = BASE_MS + 86_400_000  # one record per partition this far ahead closes every window


def produce_half(bootstrap: str, topic: str, half: int) -> None:
    rng = np.random.default_rng(100 + half)
    producer = outside_producer(bootstrap)
    for i in range(PER_HALF):
        j = half * PER_HALF + i
        ts = BASE_MS + j * 20 + int(rng.integers(0, 2000))
        pid = f"so-{j}"
        producer.produce(topic, key=pid.encode(), value=outside_event(pid, ts, features_for(rng), rng, i % 3 == 0))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def close_all_windows(bootstrap: str, topic: str, partitions: int) -> None:
    producer = outside_producer(bootstrap)
    rng = np.random.default_rng(7)
    for p in range(partitions):
        for i in range(JUMP_RECORDS):  # a jump in event time counts once that many records confirm it
            pid = f"close-{p}-{i}"
            producer.produce(topic, key=pid.encode(), partition=p,
                             value=outside_event(pid, CLOSE_MS, features_for(rng), rng, False))
    assert producer.flush(30) == 0


def rows_of(url: str) -> dict[tuple, tuple[float, int]]:
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT toUnixTimestamp64Milli(window_start), metric, feature, slice, value, n "
                                      "FROM driftline.windows FINAL "
                                      f"WHERE window_start < fromUnixTimestamp64Milli({CLOSE_MS})")
    return {(int(r[0]), r[1], r[2], r[3]): (float(r[4]), int(r[5])) for r in rows}


def run(env_for, worker_for, tmp_path: Path, summarizers: int, kill_one: bool) -> dict[tuple, tuple[float, int]]:
    tag = uuid.uuid4().hex[:8]
    env = env_for(topic_prefix=f"so{tag}.", consumer_group=f"so-{tag}", home=tmp_path / tag,
                  window_seconds=60, allowed_lateness_seconds=5, idle_partition_seconds=3600, topic_partitions=6)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    source = settings.topic(topics.PREDICTIONS)
    produce_half(settings.kafka_bootstrap, source, 0)
    if summarizers == 1:
        workers = [worker_for(env, f"{tag}-all").start()]
        merger = workers[0]
    else:
        merger = worker_for(env, f"{tag}-merge").start("--stage", "merge")
        workers = [worker_for({**env, "DRIFTLINE_METRICS_PORT": "0"}, f"{tag}-s{i}").start("--stage", "summarize")
                   for i in range(summarizers)]
    merger.wait_metric("driftline_windows_written_total", 1)
    if kill_one:
        workers[0].kill()
    produce_half(settings.kafka_bootstrap, source, 1)
    close_all_windows(settings.kafka_bootstrap, source, 6)
    expected_windows = (PER_HALF * 2 * 20 + 2000) // 60_000 + 1  # the closing record keeps its own open
    merger.wait_metric("driftline_windows_written_total", expected_windows, timeout=180)
    for w in workers:
        if w.alive():
            assert w.terminate() == 0
    if merger.alive():
        assert merger.terminate() == 0
    return rows_of(settings.clickhouse_url)


def assert_same(a: dict[tuple, tuple[float, int]], b: dict[tuple, tuple[float, int]]) -> None:
    assert a.keys() == b.keys()
    for key, (value, n) in a.items():
        other, other_n = b[key]
        assert n == other_n, key
        assert math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(value) and math.isnan(other)), key


def test_one_worker_and_three_workers_write_identical_windows(env_for, worker_for, tmp_path: Path):
    single = run(env_for, worker_for, tmp_path, 1, kill_one=False)
    assert sum(v for (_, metric, _, _), (v, _) in single.items() if metric == "count") == 2 * PER_HALF
    assert_same(single, run(env_for, worker_for, tmp_path, 3, kill_one=False))
    assert_same(single, run(env_for, worker_for, tmp_path, 3, kill_one=True))

