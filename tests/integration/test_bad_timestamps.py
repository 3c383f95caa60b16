"""Issue #8: event times from a broken clock go to the dead-letter topic and never silence a model.

The issue's run, smaller: malformed records of every kind (far-future and 1970 event times among them), a
second model stamped in the year 2200 once on every partition, labels stamped in 2200, records of a third
model from a clock 50 minutes ahead (valid, so they slip through: first on every partition, and again half
way), then the valid events of a healthy model. Every valid event must be counted in its window, none late.
"""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest

from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import settings_of
from tests.integration.synthetic import (
    MODEL,
    VERSION,
    Expected,
    dead_letters,
    features_for,
    outside_event,
    outside_producer,
)

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a backlog, months old but plausible
N_VALID, STEP_MS = 6000, 100  # ten one-minute windows
FAR = "2200-01-01T00:00:00Z"
AHEAD_MS = BASE_MS + 50 * 60_000  # a clock 50 minutes ahead of the others: still in the past, so valid
KINDS = ("garbage", "deep", "wrong type", "NaN", "missing ts", "bad key", "far future", "1970")
PER_KIND = 60
FAR_REASON = re.compile(rf"ts: {FAR} is 1\d\d years ahead of the record's time \(max skew 3600 s\)")
OLD_REASON = re.compile(r"ts: 1970-01-01T00:00:00Z is \d\d years older than the record's time \(max age 3650 days\)")


def prediction(pid: str, model: str, ts: object) -> dict:
    return {"schema_version": 1, "prediction_id": pid, "model_id": model, "model_version": "1", "ts": ts,
            "features": {"amount": 1.0}, "prediction": {"score": 0.5}}


def malformed(kind: str, pid: str, rng: np.random.Generator) -> tuple[bytes, bytes]:
    """(key, value) of one record that breaks the contract in the given way."""
    good = prediction(pid, MODEL, BASE_MS)
    if kind == "garbage":
        return pid.encode(), b"\x00\xff" + rng.bytes(40)
    if kind == "deep":
        return pid.encode(), orjson.dumps(good).replace(b'{"amount":1.0}', b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}")
    if kind == "wrong type":
        return pid.encode(), orjson.dumps({**good, "prediction_id": 12})
    if kind == "NaN":
        return pid.encode(), orjson.dumps(good).replace(b'"amount":1.0', b'"amount":NaN')
    if kind == "missing ts":
        return pid.encode(), orjson.dumps({k: v for k, v in good.items() if k != "ts"})
    if kind == "bad key":
        return b"someone-else", orjson.dumps(good)
    return pid.encode(), orjson.dumps({**good, "ts": FAR if kind == "far future" else 0})


def test_far_future_and_ancient_event_times_are_dead_lettered_and_valid_events_counted_exactly(env_for, worker_for):
    env = env_for(window_seconds=60, allowed_lateness_seconds=10)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    n_parts = settings.topic_partitions
    source, labels = settings.topic(topics.PREDICTIONS), settings.topic(topics.LABELS)
    rng = np.random.default_rng(8)
    producer = outside_producer(settings.kafka_bootstrap)
    for i in range(PER_KIND * len(KINDS)):  # every kind on every partition
        key, value = malformed(KINDS[i % len(KINDS)], f"bad-{i}", rng)
        producer.produce(source, key=key, value=value, partition=i // len(KINDS) % n_parts)
    for p in range(n_parts):
        producer.produce(source, key=f"buggy-{p}".encode(), partition=p,
                         value=orjson.dumps(prediction(f"buggy-{p}", "buggy-clock", FAR)))
        producer.produce(labels, key=f"label-{p}".encode(), partition=p, value=orjson.dumps(
            {"schema_version": 1, "prediction_id": f"label-{p}", "model_id": MODEL, "ts": FAR, "label": "repaid"}))
    expected = Expected(size_ms=60_000)

    def skewed(tag: str) -> None:
        for p in range(n_parts):
            producer.produce(source, key=f"skewed-{tag}-{p}".encode(), partition=p,
                             value=orjson.dumps(prediction(f"skewed-{tag}-{p}", "skewed-clock", AHEAD_MS)))

    skewed("first")
    for i in range(N_VALID):
        if i == N_VALID // 2:
            skewed("half-way")
        ts, feats = BASE_MS + i * STEP_MS, features_for(rng)
        expected.add(MODEL, VERSION, ts, feats)
        producer.produce(source, key=f"ok-{i}".encode(), partition=i % n_parts,
                         value=outside_event(f"ok-{i}", ts, feats, rng, as_string_ts=i % 2 == 0))
    assert producer.flush(60) == 0

    worker = worker_for(env).start()
    n_rejected = PER_KIND * len(KINDS) + 2 * n_parts
    worker.wait_metric("driftline_dead_letters_total", n_rejected)
    worker.wait_metric("driftline_windows_written_total", len(expected.counts) + 1)  # and the skewed model's
    future = worker.metric('driftline_rejected_event_times_total{reason="future"}')
    too_old = worker.metric('driftline_rejected_event_times_total{reason="too_old"}')
    assert (future, too_old) == (PER_KIND + 2 * n_parts, PER_KIND)
    assert worker.metric("driftline_dead_letters_total") == n_rejected
    assert worker.metric("driftline_late_events_total") == 0
    assert worker.terminate() == 0

    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT model_id, toUnixTimestamp64Milli(window_start), metric, value "
                                      "FROM driftline.windows FINAL WHERE feature = '' AND slice = '' "
                                      "AND metric IN ('count', 'late_events')")
    counts = {(r[0], int(r[1])): float(r[3]) for r in rows if r[2] == "count"}
    assert counts == {**{(MODEL, start): float(n) for (_, _, start), n in expected.counts.items()},
                      ("skewed-clock", AHEAD_MS): 2.0 * n_parts}
    assert not any(float(r[3]) for r in rows if r[2] == "late_events")

    letters = dead_letters(settings.kafka_bootstrap, settings.topic(topics.DLQ), n_rejected)
    assert len(letters) == n_rejected
    def reasons(match: str | re.Pattern) -> int:
        return sum(bool(match.fullmatch(r)) if isinstance(match, re.Pattern) else match in r for r, _ in letters)

    assert reasons("not valid JSON") == 3 * PER_KIND  # garbage, too deep, NaN
    assert reasons("depth limit exceeded") == PER_KIND
    assert reasons("prediction_id: must be a string, got int") == PER_KIND
    assert reasons("missing required field(s): ts") == PER_KIND
    assert reasons("record key does not match prediction_id") == PER_KIND
    assert reasons(FAR_REASON) == PER_KIND + 2 * n_parts
    assert reasons(OLD_REASON) == PER_KIND
    far = [(r, src) for r, src in letters if r.startswith(f"ts: {FAR}")]
    assert len(far) == PER_KIND + 2 * n_parts
    assert {src.rsplit("/", 2)[0] for _, src in far} == {source, labels}
    assert {int(src.rsplit("/", 2)[1]) for _, src in far if src.startswith(labels)} == set(range(n_parts))
