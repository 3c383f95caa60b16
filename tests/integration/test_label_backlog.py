"""A worker started behind its traffic joins every label of the backlog, not only those that arrive in step.

Predictions and their labels (every prediction labelled 30 s of event time later) are all on the topics when
the worker starts, the predictions first; the join store keeps 60 s of event time. A worker reading both topics
as fast as the fetches give read the labels far behind (or ahead of) their predictions: behind, the predictions
had expired; ahead, they timed out after ``label_wait_seconds``. Most labels were counted unmatched (2.0 M of
5 M labels of a 10 M-event backlog, `load_tests/bench_memory.py`). The join is paced now (`join_pacing`):
every label joins, none is unmatched, and the windows hold them all.
"""

from __future__ import annotations

import time

import orjson
import pytest

from driftline.streams import store
from driftline.streams.kafka import topics
from load_tests.traffic import produce
from tests.conftest import settings_of

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000
N = 60_000  # 100 events/s of event time: 600 s, ten one-minute windows; the store keeps 60 s of them
STEP_MS, DELAY_MS = 10, 30_000


def test_a_backlog_of_predictions_and_labels_joins_every_label(env_for, worker_for):
    env = env_for(window_seconds=60, allowed_lateness_seconds=5, label_wait_seconds=1, max_label_delay_seconds=60)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), [(b"p%d" % i, orjson.dumps(
        {"schema_version": 1, "prediction_id": f"p{i}", "model_id": "m", "model_version": "1",
         "ts": BASE_MS + i * STEP_MS, "features": {"x": float(i % 97)},
         "prediction": {"score": (i % 10) / 10, "label": "yes" if i % 10 >= 5 else "no"}})) for i in range(N)])
    produce(settings.kafka_bootstrap, settings.topic(topics.LABELS), [(b"p%d" % i, orjson.dumps(
        {"schema_version": 1, "prediction_id": f"p{i}", "model_id": "m", "ts": BASE_MS + i * STEP_MS + DELAY_MS,
         "label": "yes" if i % 3 else "no"})) for i in range(N)])

    worker = worker_for(env).start()
    deadline = time.monotonic() + 300
    while worker.metric("driftline_labels_joined_total") + worker.metric("driftline_labels_unmatched_total") < N:
        assert worker.alive() and time.monotonic() < deadline, worker.log.read_text()[-3000:]
        time.sleep(0.5)
    assert (worker.metric("driftline_labels_unmatched_total"), worker.metric("driftline_labels_joined_total")) \
        == (0, N)
    assert worker.terminate() == 0
    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT sum(value) FROM driftline.windows FINAL WHERE metric = 'labels'")
    assert rows[0][0] == N
