"""Issue #14, high-cardinality abuse, through Kafka and a `driftline worker`: 20,000 distinct model_ids, a model
naming 2,000 distinct features and a categorical feature with 200,000 distinct values, mixed into a healthy
model's traffic. The worker's memory must stay bounded, every record must be counted or dead-lettered, and the
healthy model's windows must be exact.

Limits: DRIFTLINE_MAX_MODELS=50, `summary.max_features: 100` (per-model knob, in the defaults section). The
models have no reference (`source: stored`, none stored), so they stay in discovery mode, where the feature
limit applies and no detector runs (their imports would blur the memory measurement).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.detectors.feature_summaries import CategoricalSummary
from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import settings_of
from tests.integration.synthetic import MODEL, VERSION, Expected, features_for, outside_event, outside_producer
from tests.integration.test_bad_timestamps import dead_letters

pytestmark = pytest.mark.integration
WINDOW_MS, N_WINDOWS = 60_000, 4  # windows 0-3 are checked; traffic in window 4 closes them
N_NORMAL, N_WIDE, N_CATS = 3000, 200, 50_000  # per window
N_MODELS, N_NAMES, NAMES_PER_RECORD, N_CATEGORIES = 20_000, 2_000, 40, 200_000
MAX_MODELS, MAX_FEATURES = 50, 100
# Bound on the worker's RSS growth while it takes the abusive traffic (see rss_bound below).
RSS_BOUND_MB = 160
MODEL_LIMIT = re.compile(r"model limit: this worker already tracks 50 model versions \(DRIFTLINE_MAX_MODELS\); "
                         r"abuse-\d{5}/1 is not summarised")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def event(pid: str, model: str, ts: int, features: dict[str, object], score: float) -> bytes:
    return orjson.dumps({"schema_version": 1, "prediction_id": pid, "model_id": model, "model_version": "1",
                         "ts": ts, "features": features, "prediction": {"score": score}})


def traffic(base: int, rng: np.random.Generator, expected: Expected
            ) -> tuple[list[tuple[int, str, bytes]], dict[int, int], dict[int, int]]:
    """Every record as (event time, prediction id, value) in event-time order, with the wide model's present
    feature values and the categorical model's events per window."""
    out: list[tuple[int, str, bytes]] = []
    wide_values: dict[int, int] = {}
    cats: dict[int, int] = {}
    for w in range(N_WINDOWS + 1):
        start = base + w * WINDOW_MS
        for i in range(N_NORMAL):
            ts, feats = start + i * 20, features_for(rng)
            expected.add(MODEL, VERSION, ts, feats)
            out.append((ts, f"n{w}-{i}", outside_event(f"n{w}-{i}", ts, feats, rng, as_string_ts=False)))
        if w == N_WINDOWS:
            break
        for i in range(N_WIDE):
            first = (w * N_WIDE + i) * NAMES_PER_RECORD
            feats = {f"x{(first + j) % N_NAMES:04d}": float(rng.normal()) for j in range(NAMES_PER_RECORD)}
            wide_values[start] = wide_values.get(start, 0) + len(feats)
            out.append((start + i * 300, f"w{w}-{i}", event(f"w{w}-{i}", "wide", start + i * 300, feats, 0.5)))
        for i in range(N_CATS):
            k = w * N_CATS + i
            ts = start + i * 6 // 5
            out.append((ts, f"c{k}", event(f"c{k}", "cats", ts, {"merchant": f"m{k}", "amount": 1.0}, 0.5)))
        cats[start] = N_CATS
        if w == 1:
            for i in range(N_MODELS):
                ts = start + i * 3
                out.append((ts, f"a{i}", event(f"a{i}", f"abuse-{i:05d}", ts, {"amount": 1.0}, 0.5)))
    out.sort(key=lambda r: r[0])
    return out, wide_values, cats


def test_abusive_cardinality_is_bounded_counted_and_the_healthy_model_exact(env_for, worker_for, tmp_path):
    config = tmp_path / "monitoring.yaml"
    config.write_text(f"defaults:\n  reference: {{source: stored}}\n  summary: {{max_features: {MAX_FEATURES}}}\n")
    env = env_for(window_seconds=60, allowed_lateness_seconds=10, topic_partitions=4, max_models=MAX_MODELS,
                  max_join_entries=1_000, monitoring_config=config)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    source, n_parts = settings.topic(topics.PREDICTIONS), settings.topic_partitions
    now = int(time.time() * 1000)
    # ten minutes ahead (valid: within the allowed clock skew), so an idle partition's wall-clock advance
    # closes no window early between the two phases
    base = now - now % WINDOW_MS + 10 * WINDOW_MS
    expected = Expected(size_ms=WINDOW_MS)
    records, wide_values, cats = traffic(base, np.random.default_rng(14), expected)
    producer = outside_producer(settings.kafka_bootstrap)

    def produce(part: list[tuple[int, str, bytes]], offset: int) -> None:
        for i, (_, pid, value) in enumerate(part):
            producer.produce(source, key=pid.encode(), value=value, partition=(offset + i) % n_parts)
            if i % 50_000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0

    # phase 1: the first 40 s of window 0 (no abuse yet); the worker warms up on it
    split = next(i for i, r in enumerate(records) if r[0] >= base + 40_000)
    produce(records[:split], 0)
    worker = worker_for(env).start()
    worker.wait_metric("driftline_events_total", split)
    time.sleep(2)
    assert worker.proc is not None
    before = rss_mb(worker.proc.pid)
    started = time.monotonic()

    # phase 2: the rest, with 20,000 model ids in window 1
    produce(records[split:], split)
    total = len(records)
    deadline = time.monotonic() + 120
    while worker.metric("driftline_events_total") + worker.metric("driftline_dropped_models_total") < total:
        assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
        assert worker.alive(), worker.log.read_text()[-3000:]
        time.sleep(0.5)
    dropped_models = worker.metric("driftline_dropped_models_total")
    admitted = N_MODELS - dropped_models
    worker.wait_metric("driftline_windows_written_total", 3 * N_WINDOWS + admitted)
    after = rss_mb(worker.proc.pid)
    took = time.monotonic() - started
    dropped_features = worker.metric("driftline_dropped_features_total")
    folded = worker.metric("driftline_folded_categories_total")
    assert worker.metric("driftline_dead_letters_total") == dropped_models
    assert worker.metric("driftline_late_events_total") == 0
    assert worker.terminate() == 0
    print(f"RSS {before:.0f} -> {after:.0f} MiB in {took:.1f} s; {dropped_models:.0f} records of "
          f"{N_MODELS} model ids dead-lettered")

    # Memory: what the limits allow is small (50 discovery summaries of two numeric columns per partition, ~22
    # KiB each: ~4 MiB; the wide model's 100 features x 4 partitions x ~11 KiB: ~4 MiB per window; 256 sampled
    # categories); the rest is the consumer's prefetch of the ~35 MiB of phase 2, the dead letters' producer
    # queue (~20,000 x ~0.4 KiB) and the store's inserts, ~90 MiB measured. Without the model limit the 20,000
    # abusive windows alone take ~670 MiB (measured in process: their discovery summaries 245 MiB in the
    # summarize stage, their 22 KiB messages 428 MiB in the merge stage), and the store, writing ~20 windows/s,
    # needs a quarter of an hour for them.
    assert after - before < RSS_BOUND_MB, (before, after)

    letters = dead_letters(settings.kafka_bootstrap, settings.topic(topics.DLQ), int(dropped_models))
    assert len(letters) == dropped_models and all(MODEL_LIMIT.fullmatch(r) for r, _ in letters)

    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT model_id, toUnixTimestamp64Milli(window_start), metric, feature, "
                                      "value, n FROM driftline.windows FINAL")
    value = {(r[0], int(r[1]), r[2], r[3]): float(r[4]) for r in rows}
    n_of = {(r[0], int(r[1]), r[2], r[3]): int(r[5]) for r in rows}
    starts = [base + w * WINDOW_MS for w in range(N_WINDOWS)]

    # abuse: every record either dead-lettered or counted; the ids all came in one window, and slots are freed
    # once the slowest partition has closed it, so just the 47 slots the three real models left were given
    abusive = {k[0] for k in value if k[0].startswith("abuse-")}
    assert sum(v for k, v in value.items() if k[0].startswith("abuse-") and k[2] == "count") == admitted
    assert len(abusive) == admitted == MAX_MODELS - 3

    # the healthy model: exact counts and moments
    for start in starts:
        key = (MODEL, VERSION, start)
        assert value[MODEL, start, "count", ""] == expected.counts[key] == N_NORMAL
        for name in ("amount", "score_a"):
            want = expected.stats(key, name)
            assert value[MODEL, start, "mean", name] == pytest.approx(want["mean"], rel=1e-9)
        assert (MODEL, start, "dropped_features", "") not in value
        assert (MODEL, start, "folded_categories", "country") not in value

    # the wide model: at most 100 features per window, every value kept or counted as dropped
    for start in starts:
        features = {k[3] for k in value if k[:3] == ("wide", start, "missing") and not k[3].startswith("prediction.")}
        assert len(features) == MAX_FEATURES
        kept = sum(n_of["wide", start, "mean", f] for f in features)
        assert kept + value["wide", start, "dropped_features", ""] == wide_values[start]
    assert dropped_features == sum(v for k, v in value.items() if k[2] == "dropped_features")

    # the categorical model: every value counted, all but a 256-value sample folded into `other`
    for start in starts:
        assert value["cats", start, "count", ""] == cats[start]
        assert value["cats", start, "folded_categories", "merchant"] == cats[start] - CategoricalSummary.MAX_UNSEEN
    assert folded == sum(v for k, v in value.items() if k[2] == "folded_categories")
