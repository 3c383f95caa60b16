"""Deterministic synthetic traffic for the integration tests, and the numbers numpy expects from it."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

FEATURES = ("amount", "age", "score_a", "score_b", "tenure")
MODEL = "credit-risk"
VERSION = "7"


@dataclass
class Expected:
    """Per (model, version, window start ms): the raw feature values produced into it."""

    size_ms: int
    values: dict[tuple[str, str, int], dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    counts: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, model: str, version: str, ts_ms: int, features: dict[str, object]) -> None:
        key = (model, version, ts_ms - ts_ms % self.size_ms)
        self.counts[key] += 1
        for name in FEATURES:
            value = features.get(name)
            self.values[key][name].append(math.nan if value is None else float(value))  # type: ignore[arg-type]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def stats(self, key: tuple[str, str, int], name: str) -> dict[str, float]:
        x = np.asarray(self.values[key][name], dtype=np.float64)
        present = x[~np.isnan(x)]
        return {"mean": float(present.mean()), "min": float(present.min()), "max": float(present.max()),
                "missing": float(np.isnan(x).sum())}


def features_for(rng: np.random.Generator) -> dict[str, object]:
    values: dict[str, object] = {
        "amount": float(rng.lognormal(3.0, 1.0)),
        "age": int(rng.integers(18, 90)),
        "score_a": float(rng.normal(0.0, 1.0)),
        "score_b": float(rng.normal(5.0, 2.0)),
        "tenure": None if rng.random() < 0.1 else float(rng.exponential(3.0)),
        "country": str(rng.choice(["FR", "DE", "US", "BR"])),
    }
    return values


def rfc3339(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def outside_producer(bootstrap: str) -> Producer:
    """What a service without driftline would run: plain confluent-kafka, murmur2 like the Java client.

    Idempotence keeps each partition in produce order across retries (without it librdkafka may reorder
    a retried batch behind later ones, which turns on-time events into late ones).
    """
    return Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20,
                     "message.max.bytes": 4_194_304, "enable.idempotence": True})


def outside_event(pid: str, ts_ms: int, features: dict[str, object], rng: np.random.Generator,
                  as_string_ts: bool) -> bytes:
    score = float(rng.random())
    return orjson.dumps({
        "schema_version": 1, "prediction_id": pid, "model_id": MODEL, "model_version": VERSION,
        "ts": rfc3339(ts_ms) if as_string_ts else ts_ms, "features": features,
        "prediction": {"score": score, "label": "default" if score > 0.5 else "repaid"},
        "segments": {"channel": "web" if rng.random() < 0.5 else "branch"},
    })


def dead_letters(bootstrap: str, topic: str, expected: int) -> list[tuple[str, str]]:
    """(reason, source topic) of every record on the dead-letter topic."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-reader", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out: list[tuple[str, str]] = []
    deadline = time.monotonic() + 30
    while len(out) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=1):
            if msg.error() is None:
                headers = dict(msg.headers() or [])
                out.append((headers["driftline.reason"].decode(), headers["driftline.source"].decode()))
    consumer.close()
    return out
