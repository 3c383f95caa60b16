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
