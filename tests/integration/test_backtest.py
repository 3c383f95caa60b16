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
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from driftline.streams.backtest import reading
from driftline.streams.backtest.command import backtest
from driftline.streams.backtest.replay import run_backtest
from driftline.streams.backtest.report import count_false_alarms, score_change_points
from driftline.streams.config.model_config import ReferenceConfig
from driftline.streams.kafka import topics
from driftline.streams.references import topic as references
from driftline.streams.references.book import Reference
from driftline.streams.references.files import ReferenceRows, build
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
        patch.setattr(reading, "BATCH", 500)
        patch.setattr(reading, "BUFFER_LIMIT", 300)
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


# Labels: churn/2 windows 0..6, every prediction labelled LABEL_DELAY_MS later; from window FLIP_FROM on the
# labels are flipped (the model's accuracy drops from about 0.7 to 0.3), features and scores stay put.
L_WINDOWS, L_PER_WINDOW, FLIP_FROM, LABEL_DELAY_MS, MAX_LABEL_DELAY_S = 7, 400, 4, 90_000, 180
LABELS_ONLY = NO_DRIFT + "  window_seconds: 120\nmodels:\n  other: {window_seconds: 60}\n"


def truth_of(event_: dict, rng: np.random.Generator, flip: bool) -> str:
    churn = rng.random() < event_["prediction"]["score"]
    return "churn" if churn != flip else "stay"


def label(pid: str, ts: int, truth: str) -> dict:
    return {"schema_version": 1, "prediction_id": pid, "model_id": MODEL, "ts": ts, "label": truth}


def publish_labelled_reference(settings, rng: np.random.Generator) -> None:
    """A reference with labels (a reference file cannot carry them yet): the file's summary plus add_labels."""
    rows = [event(f"ref-{i}", 0, rng, 0.0) for i in range(4000)]
    profile, summary = build(ReferenceRows([r["prediction_id"] for r in rows], [r["features"] for r in rows],
                                           [r["prediction"] for r in rows]), ReferenceConfig())
    summary.add_labels(labels=[truth_of(r, rng, False) for r in rows],
                       predicted=[r["prediction"]["label"] for r in rows],
                       scores=np.array([r["prediction"]["score"] for r in rows]),
                       segments={"region": [r["segments"]["region"] for r in rows]})
    references.publish(settings, Reference(MODEL, VERSION, "labelled", "h2", "test", 0, profile, summary))


def produce_labelled_history(bootstrap: str, settings, base_ms: int, label_end_ms: int) -> dict[str, tuple]:
    """Predictions and their labels (Kafka timestamps = event times), plus labels that must not join.

    Returns prediction_id -> (window index, predicted label, true label) for every joinable label.
    """
    rng = np.random.default_rng(5)
    producer = outside_producer(bootstrap)
    labels: list[tuple[int, str, bytes]] = []
    joinable = {}
    for w in range(L_WINDOWS):
        for i in range(L_PER_WINDOW):
            ts = base_ms + w * WINDOW_MS + i * WINDOW_MS // L_PER_WINDOW
            pid = f"w{w}-{i}"
            e = event(pid, ts, rng, 0.0)
            producer.produce(settings.topic(topics.PREDICTIONS), key=pid.encode(), value=orjson.dumps(e), timestamp=ts)
            truth = truth_of(e, rng, w >= FLIP_FROM)
            late = pid == "w1-0"  # labelled after the range's end + the maximum label delay: not read as joinable
            at = label_end_ms + 30_000 if late else ts + LABEL_DELAY_MS
            labels.append((at, pid, orjson.dumps(label(pid, at, truth))))
            if not late:
                joinable[pid] = (w, e["prediction"]["label"], truth)
        producer.poll(0)
    labels += [(base_ms + 10_000, "early", orjson.dumps(label("early", base_ms + 10_000, "stay"))),  # before --from
               (base_ms + 200_000, "broken", b'{"schema_version": 1, "prediction_id": "broken"}'),
               (label_end_ms + 400_000, "beyond", orjson.dumps(label("beyond", label_end_ms + 400_000, "stay")))]
    labels += [(base_ms + 200_000, f"ghost-{i}", orjson.dumps(label(f"ghost-{i}", base_ms + 200_000, "churn")))
               for i in range(5)]
    for at, pid, value in sorted(labels):
        producer.produce(settings.topic(topics.LABELS), key=pid.encode(), value=value, timestamp=at)
    assert producer.flush(60) == 0
    return joinable


def test_backtest_joins_labels_and_scores_the_accuracy_drop(env_for, tmp_path: Path):
    env = env_for(window_seconds=60, allowed_lateness_seconds=5, max_label_delay_seconds=MAX_LABEL_DELAY_S)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    now = int(time.time() * 1000)
    base = now - now % (2 * WINDOW_MS) - 16 * WINDOW_MS  # aligned on two-minute windows too
    start, end, change = base + WINDOW_MS, base + 6 * WINDOW_MS, base + FLIP_FROM * WINDOW_MS
    label_end = end + MAX_LABEL_DELAY_S * 1000
    joinable = produce_labelled_history(settings.kafka_bootstrap, settings, base, label_end)
    publish_labelled_reference(settings, np.random.default_rng(8))
    config = tmp_path / "no-drift.yaml"
    config.write_text(NO_DRIFT)

    report = run_backtest(settings, config, start, end, [change])
    in_range = {pid: v for pid, v in joinable.items() if 1 <= v[0] <= 5}
    # read: every label stamped in [from - 60 s, to + max delay + 60 s]; "beyond" is past it
    assert report.labels_to_ms == label_end and report.labels_read == len(joinable) + 1 + 2 + 5
    assert (report.labels_invalid, report.labels_out_of_range) == (1, 2)  # broken; early and w1-0's late label
    # windows 0 and 6 are outside the range: their labels, and the ghosts', find no prediction
    assert report.labels_joined == len(in_range) == 5 * L_PER_WINDOW - 1
    assert report.labels_unmatched == 2 * L_PER_WINDOW + 5
    (churn,) = report.versions
    assert [(w.start_ms - base) // WINDOW_MS for w in churn.windows] == [1, 2, 3, 4, 5]
    for w in churn.windows:
        index = (w.start_ms - base) // WINDOW_MS
        window = [v for v in in_range.values() if v[0] == index]
        assert w.reference_id == "labelled" and w.labels == len(window) and w.label_coverage == len(window) / w.n
        assert w.accuracy == pytest.approx(accuracy_score([v[2] for v in window], [v[1] for v in window]), abs=1e-12)
        assert (w.accuracy < 0.4) == (index >= FLIP_FROM)
    assert breached_windows(churn, base) == [4, 5]
    assert all("accuracy" in {b.metric for b in w.breaches} for w in churn.windows[3:])
    assert all(b.p_value is not None and b.p_value < 0.01 for b in churn.breaches if b.metric == "accuracy")
    (found,) = score_change_points(churn.windows, [change])
    assert (found.detected_start_ms, found.delay_s, count_false_alarms(churn.windows, [change])) == (change, 60.0, 0)
    assert f"{len(in_range)} joined to the replayed predictions of {report.labels_read} read, " \
           f"{report.labels_unmatched} unmatched" in report.to_markdown()

    # Two-minute windows for churn (and one-minute ones for another model): labels still meet their prediction's
    # window; [240 s, 360 s) holds the flipped labels only.
    config.write_text(LABELS_ONLY)
    code, out, err = cli(env, "--config", str(config), "--from", str(start), "--to", str(end),
                         "--change-point", str(change), "--model", MODEL, "--json")
    assert code == 0, err
    data = orjson.loads(out)
    assert (data["labels_joined"], data["labels_unmatched"]) == (len(in_range), 2 * L_PER_WINDOW + 5)
    (v,) = data["versions"]
    assert [(w["start_ms"] - base, w["n"], w["labels"]) for w in v["windows"]] == [
        (0, L_PER_WINDOW, L_PER_WINDOW - 1), (120_000, 2 * L_PER_WINDOW, 2 * L_PER_WINDOW),
        (240_000, 2 * L_PER_WINDOW, 2 * L_PER_WINDOW)]
    assert [w["breached"] for w in v["windows"]] == [False, False, True]
    assert v["false_alarms"] == 0 and v["change_points"][0]["delay_s"] == 120.0
    assert high_watermarks(settings, topics.SUMMARIES) == [0] * settings.topic_partitions
    assert high_watermarks(settings, topics.JOIN_STATE) == [0] * settings.topic_partitions
