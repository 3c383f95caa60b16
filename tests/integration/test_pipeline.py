"""The foundation loop against the real broker and chDB: SDK and outside producers -> worker -> windows."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer

from driftline.serving import Monitor
from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import ROOT, settings_of
from tests.integration.synthetic import (
    FEATURES,
    MODEL,
    VERSION,
    Expected,
    features_for,
    outside_event,
    outside_producer,
)

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: old enough that idle partitions close every window


def produce_history(bootstrap: str, prefix: str, n_each: int, expected: Expected, seed: int = 1) -> None:
    """n_each predictions through the SDK, then n_each through a plain producer, over several windows.

    Two producers writing one partition at full speed interleave their batches arbitrarily, so each gets
    its own stretch of event time: in production both write in real time and their events stay ordered.
    """
    rng = np.random.default_rng(seed)
    monitor = Monitor(bootstrap, model_id=MODEL, model_version=VERSION, topic_prefix=prefix)
    for i in range(n_each):
        ts = BASE_MS + i * 10 + int(rng.integers(0, 3000))
        feats = features_for(rng)
        expected.add(MODEL, VERSION, ts, feats)
        monitor.log_prediction(f"sdk-{i}", feats, score=float(rng.random()), label="repaid", ts=ts,
                               segments={"channel": "app"})
    assert monitor.flush(60) == 0
    assert monitor.stats().sent == n_each and monitor.stats().failed == 0
    plain = outside_producer(bootstrap)
    for i in range(n_each):
        ts = BASE_MS + (n_each + i) * 10 + int(rng.integers(0, 3000))
        feats = features_for(rng)
        expected.add(MODEL, VERSION, ts, feats)
        plain.produce(f"{prefix}predictions", key=f"out-{i}".encode(),
                      value=outside_event(f"out-{i}", ts, feats, rng, as_string_ts=i % 2 == 0))
        if i % 1000 == 0:
            plain.poll(0)
    assert plain.flush(60) == 0


def window_rows(url: str) -> dict[tuple[str, str, int, str, str], float]:
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT model_id, model_version, toUnixTimestamp64Milli(window_start), metric, "
                                      "feature, value FROM driftline.windows FINAL WHERE slice = ''")
    return {(r[0], r[1], int(r[2]), r[3], r[4]): float(r[5]) for r in rows}


def assert_matches_numpy(url: str, expected: Expected) -> None:
    with store.opened(url) as client:
        _, total = store.query(client, "SELECT sum(value) FROM driftline.windows WHERE metric = 'count'")
        _, late = store.query(client, "SELECT sum(value) FROM driftline.windows WHERE metric = 'late_events'")
    assert total[0][0] == expected.total
    assert not late[0][0]
    rows = window_rows(url)
    for key, count in expected.counts.items():
        assert rows[(*key, "count", "")] == count
        for name in FEATURES:
            for metric, value in expected.stats(key, name).items():
                got = rows[(*key, metric, name)]
                assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-12), (key, name, metric, got, value)


def test_sdk_and_outside_producer_counted_exactly(env_for, worker_for):
    env = env_for(window_seconds=60, allowed_lateness_seconds=10)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    expected = Expected(size_ms=60_000)
    produce_history(settings.kafka_bootstrap, settings.topic_prefix, 20_000, expected)
    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", len(expected.counts))
    assert worker.terminate() == 0
    assert_matches_numpy(settings.clickhouse_url, expected)
    done = subprocess.run([sys.executable, "-m", "driftline.streams", "sql",
                           "SELECT sum(value) AS total FROM driftline.windows WHERE metric = 'count'"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.splitlines() == ["total", str(float(expected.total))]
    bad = subprocess.run([sys.executable, "-m", "driftline.streams", "sql", "SELEC nonsense"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")


MALFORMED_KINDS = 5


def malformed(i: int) -> bytes:
    kind = i % MALFORMED_KINDS
    good = {"schema_version": 1, "prediction_id": f"bad-{i}", "model_id": MODEL, "model_version": VERSION,
            "ts": BASE_MS, "features": {"amount": 1.0}, "prediction": {"score": 0.5}}
    if kind == 0:
        return b'{"schema_version": 1, "prediction_id": '
    if kind == 1:
        return orjson.dumps({k: v for k, v in good.items() if k != "model_id"})
    if kind == 2:
        return orjson.dumps({**good, "features": {"amount": [1, 2]}})
    if kind == 3:
        return orjson.dumps({**good, "features": {"blob": "x" * 2_000_000}})
    return orjson.dumps(good).replace(b'"amount":1.0', b'"amount":NaN')


def test_malformed_records_go_to_the_dead_letter_topic(env_for, worker_for):
    env = env_for(window_seconds=60, allowed_lateness_seconds=10)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    expected = Expected(size_ms=60_000)
    plain = outside_producer(settings.kafka_bootstrap)
    rng = np.random.default_rng(5)
    for i in range(3000):
        ts = BASE_MS + i * 50
        feats = features_for(rng)
        expected.add(MODEL, VERSION, ts, feats)
        plain.produce(settings.topic("predictions"), key=f"ok-{i}".encode(),
                      value=outside_event(f"ok-{i}", ts, feats, rng, as_string_ts=False))
        if i % 30 == 0:
            plain.produce(settings.topic("predictions"), key=f"bad-{i // 30}".encode(), value=malformed(i // 30))
    assert plain.flush(60) == 0
    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", len(expected.counts))
    assert worker.metric("driftline_dead_letters_total") == 100
    assert worker.alive()
    assert worker.terminate() == 0

    dlq = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "dlq-reader",
                    "auto.offset.reset": "earliest"})
    dlq.subscribe([settings.topic("dlq")])
    reasons: list[str] = []
    deadline = time.monotonic() + 30
    while len(reasons) < 100 and time.monotonic() < deadline:
        for msg in dlq.consume(100, timeout=1):
            if msg.error() is None:
                reasons.append(dict(msg.headers() or [])["driftline.reason"].decode())
    dlq.close()
    assert len(reasons) == 100
    assert sum("not valid JSON" in r for r in reasons) == 40  # truncated JSON and NaN
    assert sum("missing required field(s): model_id" in r for r in reasons) == 20
    assert sum("features.amount" in r for r in reasons) == 20
    assert sum("record too large" in r for r in reasons) == 20
    assert_matches_numpy(settings.clickhouse_url, expected)


def test_sigkill_half_way_still_counts_exactly(env_for, worker_for):
    env = env_for(window_seconds=2, allowed_lateness_seconds=1, batch_max_records=500)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    expected = Expected(size_ms=2_000)
    rng = np.random.default_rng(9)
    plain = outside_producer(settings.kafka_bootstrap)
    total = 40_000
    produced = threading.Event()

    def live_traffic() -> None:
        for i in range(total):
            ts = int(time.time() * 1000)
            feats = features_for(rng)
            expected.add(MODEL, VERSION, ts, feats)
            plain.produce(settings.topic("predictions"), key=f"live-{i}".encode(),
                          value=outside_event(f"live-{i}", ts, feats, rng, as_string_ts=False))
            if i % 500 == 499:
                plain.poll(0)
                time.sleep(0.1)
        plain.flush(60)
        produced.set()

    feeder = threading.Thread(target=live_traffic)
    first = worker_for(env, "first").start()
    feeder.start()
    first.wait_metric("driftline_windows_written_total", 3)
    first.kill()
    time.sleep(1.0)
    second = worker_for(env, "second").start()
    feeder.join()
    assert produced.is_set()
    last_end_s = (max(key[2] for key in expected.counts) + expected.size_ms) / 1000
    second.wait_metric("driftline_stage2_watermark_seconds", last_end_s, timeout=120)
    assert second.terminate() == 0
    assert_matches_numpy(settings.clickhouse_url, expected)


def test_each_model_gets_its_configured_window_size_and_lateness(env_for, worker_for, tmp_path):
    """A 30 s model with 2 s lateness, a 120 s model and an unconfigured one (the worker's 60 s, 10 s)."""
    config = tmp_path / "monitoring.yaml"
    config.write_text("models:\n  fast:\n    window_seconds: 30\n    allowed_lateness_seconds: 2\n"
                      "  slow:\n    window_seconds: 120\n")
    env = env_for(window_seconds=60, allowed_lateness_seconds=10, topic_partitions=1, monitoring_config=config)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    shapes = {"fast": (30_000, 2_000), "slow": (120_000, 10_000), "plain": (60_000, 10_000)}
    rng = np.random.default_rng(4)
    stream = [(("fast", "slow", "plain")[i % 3], BASE_MS + i * 100 + int(rng.integers(0, 1500))) for i in range(6000)]
    last = max(ts for _, ts in stream)
    stream += [("fast", last - 40_000), ("slow", last - 5_000), ("plain", last - 75_000), ("fast", last - 1_000)]
    # the oracle: one partition, event time = the largest earlier ts, late when end <= event time - lateness
    counts: dict[tuple[str, int], int] = {}
    late: dict[str, int] = dict.fromkeys(shapes, 0)
    now = None
    for model, ts in stream:
        size, lateness = shapes[model]
        if now is not None and ts - ts % size + size <= now - lateness:
            late[model] += 1
        else:
            counts[model, ts - ts % size] = counts.get((model, ts - ts % size), 0) + 1
            now = ts if now is None else max(now, ts)
    assert late["fast"] == 1 and late["slow"] == 0 and late["plain"] == 1
    plain = outside_producer(settings.kafka_bootstrap)
    for i, (model, ts) in enumerate(stream):
        event = {"schema_version": 1, "prediction_id": f"{model}-{i}", "model_id": model, "model_version": "1",
                 "ts": ts, "features": {"x": float(i)}, "prediction": {"score": 0.5}}
        plain.produce(settings.topic(topics.PREDICTIONS), key=f"{model}-{i}".encode(), value=orjson.dumps(event))
    assert plain.flush(60) == 0
    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", len(counts))
    assert worker.terminate() == 0
    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT model_id, toUnixTimestamp64Milli(window_start), "
                                      "toUnixTimestamp64Milli(window_end), metric, value FROM driftline.windows "
                                      "FINAL WHERE slice = '' AND feature = '' AND metric IN ('count', 'late_events')")
    got = {(r[0], int(r[1])): float(r[4]) for r in rows if r[3] == "count"}
    assert got == {k: float(v) for k, v in counts.items()}
    assert {r[0]: shapes[r[0]][0] for r in rows} == {r[0]: int(r[2]) - int(r[1]) for r in rows}
    got_late = {m: sum(float(r[4]) for r in rows if r[0] == m and r[3] == "late_events") for m in shapes}
    assert got_late == {m: float(n) for m, n in late.items()}
