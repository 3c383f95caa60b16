"""`driftline backtest` against the real broker: history with a known change, replayed in isolation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import typer
from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

import streams.backtest
from streams import references, topics
from streams.backtest import count_false_alarms, run_backtest, score_change_points
from streams.backtest_command import backtest
from streams.model_config import ReferenceConfig
from streams.reference_files import ReferenceRows, build
from streams.references import Reference
from tests.conftest import settings_of
from tests.integration.synthetic import outside_producer, rfc3339
from tests.integration.test_detection import MODEL, VERSION, event

pytestmark = pytest.mark.integration
WINDOW_MS = 60_000
N_WINDOWS, PER_WINDOW, OTHER_PER_WINDOW, SHIFT_FROM = 10, 1200, 30, 6
STRICT = "defaults:\n  detectors:\n    drift: {alpha: 0.01}\n"
NO_DRIFT = ("defaults:\n  detectors:\n    drift: {enabled: false}\n"
            "    multivariate: {mmd: {enabled: false}, pca: {enabled: false}}\n"
            "    quality: {out_of_range: {enabled: false}}\n")
AUTO = "defaults:\n  reference: {source: auto, windows: 1}\n"


def produce_history(bootstrap: str, topic: str, base_ms: int) -> None:
    """N_WINDOWS one-minute windows of churn/2 (tenure shifted from SHIFT_FROM on), a little traffic of another
    model, and one broken record; Kafka timestamps are the event times, as a replay of history would have."""
    rng = np.random.default_rng(11)
    producer = outside_producer(bootstrap)
    for w in range(N_WINDOWS):
        shift = 1.0 if w >= SHIFT_FROM else 0.0
        for i in range(PER_WINDOW):
            ts = base_ms + w * WINDOW_MS + i * WINDOW_MS // PER_WINDOW
            pid = f"w{w}-{i}"
            producer.produce(topic, key=pid.encode(), value=orjson.dumps(event(pid, ts, rng, shift)), timestamp=ts)
        for i in range(OTHER_PER_WINDOW):
            ts = base_ms + w * WINDOW_MS + i * WINDOW_MS // OTHER_PER_WINDOW
            other = {**event(f"o{w}-{i}", ts, rng, 0.0), "model_id": "other"}
            producer.produce(topic, key=f"o{w}-{i}".encode(), value=orjson.dumps(other), timestamp=ts)
        producer.poll(0)
    broken_ts = base_ms + 2 * WINDOW_MS
    producer.produce(topic, key=b"broken", value=b'{"schema_version": 1', timestamp=broken_ts)
    assert producer.flush(60) == 0


def publish_reference(settings, rng: np.random.Generator) -> None:
    rows = [event(f"ref-{i}", 0, rng, 0.0) for i in range(6000)]
    profile, summary = build(ReferenceRows([r["prediction_id"] for r in rows], [r["features"] for r in rows],
                                           [r["prediction"] for r in rows]), ReferenceConfig())
    references.publish(settings, Reference(MODEL, VERSION, "file-backtest", "h", "file:ref.jsonl", 0, profile,
                                           summary))


def high_watermarks(settings, name: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    try:
        topic = settings.topic(name)
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(parts)]
    finally:
        consumer.close()


def committed(settings, group: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        topic = settings.topic(topics.PREDICTIONS)
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return [tp.offset for tp in consumer.committed(parts, timeout=10)]
    finally:
        consumer.close()


def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    app.command()(backtest)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["backtest", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def breached_windows(version, base: int) -> list[int]:
    return [(w.start_ms - base) // WINDOW_MS for w in version.windows if w.breaches]


def test_backtest_scores_candidates_on_history_and_writes_nothing(env_for, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    env = env_for(window_seconds=60, allowed_lateness_seconds=5)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    now = int(time.time() * 1000)
    base = now - now % WINDOW_MS - 15 * WINDOW_MS
    produce_history(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), base)
    start, end, change = base + WINDOW_MS, base + 9 * WINDOW_MS, base + SHIFT_FROM * WINDOW_MS
    configs = {}
    for name, text in (("strict", STRICT), ("no-drift", NO_DRIFT), ("auto", AUTO)):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(text)
    in_range = list(range(1, 9))

    # No reference yet: the candidate learns one from the range's first window, locally; nothing is published.
    # Small fetches and buffers (partitions paused and resumed all along) must not change what is replayed.
    with monkeypatch.context() as patch:
        patch.setattr(streams.backtest, "BATCH", 500)
        patch.setattr(streams.backtest, "BUFFER_LIMIT", 300)
        auto = run_backtest(settings, configs["auto"], start, end, [change], model=MODEL)
    assert (auto.records_read, auto.invalid, auto.out_of_range) == (N_WINDOWS * (PER_WINDOW + OTHER_PER_WINDOW) + 1,
                                                                     1, 2 * (PER_WINDOW + OTHER_PER_WINDOW))
    assert (auto.records_replayed, auto.other_models, auto.late_events) == (8 * PER_WINDOW, 8 * OTHER_PER_WINDOW, 0)
    assert [(v.model_id, v.model_version) for v in auto.versions] == [(MODEL, VERSION)]
    learnt = auto.versions[0]
    assert [(w.start_ms - base) // WINDOW_MS for w in learnt.windows] == in_range
    assert all(w.n == PER_WINDOW for w in learnt.windows)
    # profile learnt on window 1, in force from window 4 (three later), whose data becomes the reference summary
    assert [w.reference_id[:5] for w in learnt.windows] == [""] * 4 + ["auto-"] * 4
    assert breached_windows(learnt, base) == [6, 7, 8]
    assert high_watermarks(settings, topics.REFERENCES) == [0]

    publish_reference(settings, np.random.default_rng(99))
    strict = run_backtest(settings, configs["strict"], start, end, [change])
    churn, other = strict.version(MODEL, VERSION), strict.version("other", VERSION)
    assert churn is not None and other is not None and len(strict.versions) == 2
    assert [w.reference_id for w in churn.windows] == ["file-backtest"] * 8
    assert other.windows_judged == 0 and not other.breaches
    assert breached_windows(churn, base) == [6, 7, 8]
    for w in churn.windows[5:]:
        assert {(b.metric, b.feature) for b in w.breaches} >= {("ks", "tenure"), ("prediction_drift", "score")}
        assert all(b.feature not in ("spend", "plan") for b in w.breaches)
        assert all(b.p_value is not None and b.p_value < 0.01 for b in w.breaches if b.metric == "ks")
    (found,) = score_change_points(churn.windows, [change])
    assert (found.detected_start_ms, found.delay_s, found.breached_before) == (change, 60.0, 0)
    assert count_false_alarms(churn.windows, [change]) == 0
    assert churn.breaches_per_metric()["ks"] == 3

    code, out, err = cli(env, "--config", str(configs["no-drift"]), "--from", rfc3339(start), "--to", str(end),
                         "--change-point", rfc3339(change), "--json")
    assert code == 0, err
    quiet = orjson.loads(out)
    (q_churn,) = [v for v in quiet["versions"] if v["model_id"] == MODEL]
    assert (q_churn["windows_evaluated"], q_churn["windows_judged"], q_churn["breached_windows"]) == (8, 8, 0)
    assert q_churn["false_alarms"] == 0 and q_churn["breaches"] == []
    assert q_churn["change_points"][0]["missed"] and q_churn["change_points"][0]["delay_s"] is None

    code, out, err = cli(env, "--config", str(configs["strict"]), "--from", "2020-01-01T00:00:00Z",
                         "--to", "2020-01-02T00:00:00Z")
    assert code == 1 and "nothing to backtest" in err and out == ""

    # Isolation: no group offsets, nothing produced, no ClickHouse store opened.
    groups = [auto.group_id, strict.group_id, quiet["group_id"]]
    assert len(set(groups)) == 3
    for group in groups:
        assert committed(settings, group) == [OFFSET_INVALID] * settings.topic_partitions
    listed = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_consumer_groups().result(timeout=10)
    assert not {g.group_id for g in listed.valid} & set(groups)
    assert high_watermarks(settings, topics.SUMMARIES) == [0] * settings.topic_partitions
    assert high_watermarks(settings, topics.DLQ) == [0] * settings.topic_partitions
    assert high_watermarks(settings, topics.REFERENCES) == [1]
    assert not Path(settings.clickhouse_url.removeprefix("chdb://")).exists()
