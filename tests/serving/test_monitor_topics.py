"""The SDK before driftline's topics exist: one log line names them, and no record is lost once they do."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from driftline.serving import Monitor
from driftline.streams.config.settings import load_settings
from driftline.streams.kafka.local_broker import LocalBroker
from driftline.streams.kafka.topics import ensure_topics


@pytest.mark.integration
def test_a_missing_topic_is_named_once_and_its_records_wait_for_it(broker: LocalBroker, caplog):
    prefix = f"missing{uuid.uuid4().hex[:8]}."
    caplog.set_level(logging.WARNING, logger="driftline.serving")
    with Monitor(broker.bootstrap, model_id="m", model_version="1", topic_prefix=prefix) as monitor:
        for i in range(200):
            monitor.log_prediction(f"p{i}", {"x": float(i)}, score=0.5)
            monitor.log_label(f"p{i}", True)
        deadline = time.monotonic() + 20
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # room for a second line, were there one
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("driftline.serving")]
        assert len(lines) == 1, lines
        assert f"{prefix}predictions, {prefix}labels do not exist on {broker.bootstrap}" in lines[0]
        assert "driftline topics create" in lines[0]
        assert monitor.stats().failed == 0
        ensure_topics(load_settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, topic_partitions=2))
        assert monitor.flush(30) == 0
        assert monitor.stats().sent == 400 and monitor.stats().failed == 0
