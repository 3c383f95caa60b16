"""Pre-serialised synthetic prediction traffic, produced as fast as librdkafka takes it."""

from __future__ import annotations

import numpy as np
import orjson
from confluent_kafka import Producer

from driftline.serving.monitor import PARTITIONER


def payloads(n: int, n_features: int = 20, seed: int = 0, start_ms: int = 1_767_225_600_000,
             span_ms: int = 600_000, model_id: str = "bench", shift_at: int | None = None,
             shift: float = 0.0) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of n prediction events with n_features numeric features each."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    if shift_at is not None:
        x[shift_at:, 0] += shift
    scores = rng.random(n)
    names = [f"f{i}" for i in range(n_features)]
    out = []
    for i in range(n):
        pid = f"{model_id}-{seed}-{i}"
        event = {"schema_version": 1, "prediction_id": pid, "model_id": model_id, "model_version": "1",
                 "ts": start_ms + i * span_ms // n, "features": dict(zip(names, x[i].tolist(), strict=True)),
                 "prediction": {"score": float(scores[i])}}
        out.append((pid.encode(), orjson.dumps(event)))
    return out


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": PARTITIONER, "linger.ms": 50,
                         "compression.type": "lz4", "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("could not deliver the benchmark traffic")


COUNTRIES = ("us", "de", "fr", "gb", "jp", "br", "in", "ca", "es", "it", "nl", "se")
DEVICES = ("ios", "android", "web")
REGIONS = ("na", "eu", "apac", "latam")
CLASSES = ("approve", "review", "decline")


def classifier_events(n: int, *, n_numeric: int = 8, n_categorical: int = 1, n_boolean: int = 1,
                      n_segments: int = 2, seed: int = 0, start_ms: int = 1_767_225_600_000,
                      events_per_s: float = 50.0, model_id: str = "bench", n_models: int = 1,
                      label_share: float = 1.0, label_delay_ms: int = 0
                      ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Predictions and labels shaped like a real classifier's: numeric, categorical and boolean features,
    segment attributes, three class probabilities and a predicted label; ``label_share`` of the predictions
    get a label (85 % equal to the predicted class) ``label_delay_ms`` of event time later. Events are spread
    over ``n_models`` models (``{model_id}-{i}``; one model: ``model_id``) at ``events_per_s`` of event time."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_numeric)) * 3.0 + 10.0
    cats = rng.integers(0, len(COUNTRIES), size=(n, n_categorical))
    flags = rng.random((n, n_boolean)) < 0.3
    segs = rng.integers(0, 4, size=(n, n_segments))
    logits = rng.normal(size=(n, len(CLASSES)))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1)
    truth = np.where(rng.random(n) < 0.85, predicted, rng.integers(0, len(CLASSES), size=n))
    labelled = rng.random(n) < label_share
    models = rng.integers(0, n_models, size=n)
    num_names = [f"num{i}" for i in range(n_numeric)]
    seg_values = (REGIONS, DEVICES, *(tuple(f"s{j}" for j in range(4)),) * max(0, n_segments - 2))
    predictions, labels = [], []
    for i in range(n):
        model = model_id if n_models == 1 else f"{model_id}-{models[i]}"
        pid = f"{model}-{seed}-{i}"
        ts = start_ms + int(i * 1000 / events_per_s)
        features: dict[str, object] = dict(zip(num_names, np.round(x[i], 4).tolist(), strict=True))
        features.update((f"cat{j}", COUNTRIES[cats[i, j]]) for j in range(n_categorical))
        features.update((f"flag{j}", bool(flags[i, j])) for j in range(n_boolean))
        segments = {f"seg{j}": seg_values[j][segs[i, j] % len(seg_values[j])] for j in range(n_segments)}
        event = {"schema_version": 1, "prediction_id": pid, "model_id": model, "model_version": "1", "ts": ts,
                 "features": features, "segments": segments,
                 "prediction": {"label": CLASSES[predicted[i]], "score": round(float(probs[i].max()), 5),
                                "probabilities": {c: round(float(p), 5) for c, p in zip(CLASSES, probs[i],
                                                                                        strict=True)}}}
        predictions.append((pid.encode(), orjson.dumps(event)))
        if labelled[i]:
            label = {"schema_version": 1, "prediction_id": pid, "model_id": model, "ts": ts + label_delay_ms,
                     "label": CLASSES[truth[i]]}
            labels.append((pid.encode(), orjson.dumps(label)))
    return predictions, labels
