"""Delayed labels join their predictions: accuracy and coverage per prediction window, exact across a restart."""

from __future__ import annotations

import math
import time

import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score

from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import settings_of
from tests.integration.synthetic import outside_producer

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000
MODEL, VERSION = "fraud", "4"
N = 6000


def predictions(rng: np.random.Generator) -> list[dict]:
    out = []
    for i in range(N):
        amount = float(rng.lognormal(4.0, 1.0))
        score = float(rng.random())
        out.append({"schema_version": 1, "prediction_id": f"p{i}", "model_id": MODEL, "model_version": VERSION,
                    "ts": BASE_MS + i * 30, "features": {"amount": amount},
                    "prediction": {"score": score, "label": "fraud" if score > 0.5 else "ok"}})
    return out


def label_for(pred: dict, rng: np.random.Generator) -> dict:
    truth = pred["prediction"]["label"] if rng.random() < 0.8 else ("ok" if pred["prediction"]["label"] == "fraud"
                                                                     else "fraud")
    return {"schema_version": 1, "prediction_id": pred["prediction_id"], "model_id": MODEL,
            "ts": pred["ts"] + 3_600_000, "label": truth}


def produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = outside_producer(bootstrap)
    for e in events:
        producer.produce(topic, key=e["prediction_id"].encode(), value=orjson.dumps(e))
    assert producer.flush(60) == 0


def label_rows(url: str) -> dict[tuple[int, str], float]:
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT intDiv(toUnixTimestamp64Milli(window_start) - {b:Int64}, 60000), "
                                      "metric, value FROM driftline.windows FINAL WHERE metric IN "
                                      "('labels', 'label_coverage', 'accuracy', 'labels_unmatched')", {"b": BASE_MS})
    out: dict[tuple[int, str], float] = {}
    for w, metric, value in rows:
        out[(int(w), metric)] = out.get((int(w), metric), 0.0) + float(value)
    return out


def test_delayed_labels_give_exact_accuracy_and_coverage_across_a_restart(env_for, worker_for):
    env = env_for(window_seconds=60, allowed_lateness_seconds=5, label_wait_seconds=1)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    rng = np.random.default_rng(4)
    preds = predictions(rng)
    produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), preds)
    labelled = [p for p in preds if rng.random() < 0.7]
    labels = {p["prediction_id"]: label_for(p, rng) for p in labelled}
    first, second = labelled[: len(labelled) // 2], labelled[len(labelled) // 2 :]

    worker = worker_for(env, "first").start()
    worker.wait_metric("driftline_windows_written_total", 3)
    produce(settings.kafka_bootstrap, settings.topic(topics.LABELS), [labels[p["prediction_id"]] for p in first])
    worker.wait_metric("driftline_labels_joined_total", len(first))
    worker.kill()

    unknown = [{"schema_version": 1, "prediction_id": f"nobody-{i}", "model_id": MODEL, "ts": BASE_MS + 1000,
                "label": "ok"} for i in range(50)]
    produce(settings.kafka_bootstrap, settings.topic(topics.LABELS),
            [labels[p["prediction_id"]] for p in second] + unknown)
    again = worker_for(env, "second").start()
    again.wait_metric("driftline_labels_joined_total", len(second))
    again.wait_metric("driftline_labels_unmatched_total", 50)
    time.sleep(2.0)
    assert again.terminate() == 0

    rows = label_rows(settings.clickhouse_url)
    assert rows[(0, "labels_unmatched")] == 50
    for w in range(3):
        in_window = [p for p in labelled if (p["ts"] - BASE_MS) // 60_000 == w]
        count = sum(1 for p in preds if (p["ts"] - BASE_MS) // 60_000 == w)
        truth = [labels[p["prediction_id"]]["label"] for p in in_window]
        predicted = [p["prediction"]["label"] for p in in_window]
        assert rows[(w, "labels")] == len(in_window)
        assert math.isclose(rows[(w, "label_coverage")], len(in_window) / count, rel_tol=1e-12)
        assert math.isclose(rows[(w, "accuracy")], accuracy_score(truth, predicted), rel_tol=1e-12)
