"""The SDK on the request path: caller mistakes raise with the field named; a missing broker never does.

Its lifecycle too: a context manager, an idempotent close(), logging after close() refused.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from datetime import UTC, datetime

import jsonschema
import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer

from driftline import schemas
from driftline.serving import Monitor, MonitorClosed, MonitorStats
from driftline.streams.config.settings import load_settings
from driftline.streams.kafka.local_broker import free_port
from driftline.streams.kafka.topics import ensure_topics


@pytest.fixture
def away() -> Monitor:
    """A monitor whose broker does not exist: records can only queue, then drop or time out."""
    return Monitor(f"127.0.0.1:{free_port()}", model_id="m", model_version="1", max_queue=100,
                   producer_config={"log_level": 0, "message.timeout.ms": 1500})


@pytest.mark.parametrize(("kwargs", "error", "field"), [
    ({"prediction_id": 7, "features": {}, "score": 0.1}, TypeError, "prediction_id"),
    ({"prediction_id": "", "features": {}, "score": 0.1}, ValueError, "prediction_id"),
    ({"prediction_id": "x" * 129, "features": {}, "score": 0.1}, ValueError, "prediction_id"),
    ({"prediction_id": "p", "features": [1, 2], "score": 0.1}, TypeError, "features"),
    ({"prediction_id": "p", "features": {"a": [1]}, "score": 0.1}, TypeError, "features['a']"),
    ({"prediction_id": "p", "features": {"a": math.inf}, "score": 0.1}, ValueError, "features['a']"),
    ({"prediction_id": "p", "features": {}, "score": 1.2}, ValueError, "score"),
    ({"prediction_id": "p", "features": {}, "score": "high"}, TypeError, "score"),
    ({"prediction_id": "p", "features": {}, "probabilities": {"a": -0.1}}, ValueError, "probabilities['a']"),
    ({"prediction_id": "p", "features": {}, "value": math.nan}, ValueError, "value"),
    ({"prediction_id": "p", "features": {}}, ValueError, "label, score, probabilities or value"),
    ({"prediction_id": "p", "features": {}, "score": 0.5, "ts": datetime(2026, 1, 1)}, ValueError, "ts"),
    ({"prediction_id": "p", "features": {}, "score": 0.5, "segments": {"tier": 3}}, TypeError, "segments['tier']"),
])
def test_wrong_arguments_name_the_field(away: Monitor, kwargs, error, field):
    with pytest.raises(error, match=None) as info:
        away.log_prediction(**kwargs)
    assert field in str(info.value)
    assert away.stats().dropped == away.stats().failed == 0


def test_a_missing_broker_buffers_up_to_the_bound_then_counts_drops(away: Monitor):
    for i in range(150):
        away.log_prediction(f"p{i}", {"x": float(i)}, score=0.5)
    assert away.stats() == MonitorStats(sent=0, failed=0, dropped=50, queued=100)
    away.log_label("p1", True)
    assert away.stats().dropped == 51


def test_records_the_broker_never_acknowledges_are_counted_as_failed(away: Monitor):
    for i in range(10):
        away.log_prediction(f"p{i}", {"x": 1.0}, label="a")
    assert away.flush(10) == 0
    assert away.stats().failed == 10 and away.stats().sent == 0


def test_stats_is_a_frozen_snapshot(away: Monitor):
    away.log_prediction("p1", {"x": 1.0}, score=0.5)
    stats = away.stats()
    assert isinstance(stats, MonitorStats) and stats == MonitorStats(sent=0, failed=0, dropped=0, queued=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.sent = 1  # type: ignore[misc]


def test_the_with_block_closes_the_monitor_on_exit(away: Monitor):
    with away as monitor:
        assert monitor is away and not monitor.is_closed
    assert away.is_closed


def test_the_with_block_closes_the_monitor_when_its_body_raises(away: Monitor):
    with pytest.raises(ValueError, match="the request failed"), away:
        raise ValueError("the request failed")
    assert away.is_closed


def test_a_second_close_is_a_no_op_returning_the_first_result(away: Monitor):
    for i in range(3):
        away.log_prediction(f"p{i}", {"x": 1.0}, score=0.5)
    assert away.close(timeout=0) == 3
    after_first = away.stats()
    # A real second flush would wait out the 1.5 s message timeout and return 0, with 3 more failed.
    assert away.close() == 3
    assert away.stats() == after_first == MonitorStats(sent=0, failed=0, dropped=3, queued=3)


@pytest.mark.parametrize(("call", "log"), [
    ("log_prediction", lambda m: m.log_prediction("p1", {"x": 1.0}, score=0.5)),
    ("log_label", lambda m: m.log_label("p1", True)),
])
def test_logging_after_close_raises_naming_the_call(away: Monitor, call, log):
    away.close()
    assert issubclass(MonitorClosed, RuntimeError)
    with pytest.raises(MonitorClosed, match=rf"Monitor\.{call}\(\) called after close\(\)"):
        log(away)
    assert away.stats() == MonitorStats(sent=0, failed=0, dropped=0, queued=0)


def test_numpy_values_nan_and_timestamps_reach_the_topic_as_the_contract_says(broker):
    topic = f"sdk-{uuid.uuid4().hex[:8]}"
    ensure_topics(load_settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"{topic}."))
    when = datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    with Monitor(broker.bootstrap, model_id="m", model_version="1", topic_prefix=f"{topic}.") as monitor:
        monitor.log_prediction("p1", {"a": np.float32(1.5), "b": np.int64(3), "c": math.nan, "d": True, "e": "FR"},
                               probabilities={"x": np.float64(0.25), "y": 0.75}, ts=when)
        assert monitor.flush(30) == 0 and monitor.stats().sent == 1
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{topic}.predictions"])
    msgs: list = []
    deadline = time.monotonic() + 30
    while not msgs and time.monotonic() < deadline:
        msgs = [m for m in consumer.consume(1, timeout=1) if m.error() is None]
    consumer.close()
    assert msgs[0].key() == b"p1"
    event = orjson.loads(msgs[0].value())
    assert jsonschema.Draft202012Validator(schemas.load(schemas.PREDICTION_V1)).is_valid(event)
    assert event["features"] == {"a": 1.5, "b": 3, "c": None, "d": True, "e": "FR"}
    assert event["ts"] == 1_767_225_600_123 and event["prediction"] == {"probabilities": {"x": 0.25, "y": 0.75}}
