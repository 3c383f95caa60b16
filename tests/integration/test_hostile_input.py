"""Issue #14, hostile input: 10,000 hypothesis-made hostile records among valid traffic, through a real worker.

Predictions and labels: every record the contract refuses is on the dead-letter topic with its reason and
origin, every valid one (odd ones included: NUL and other unicode edge cases, duplicate keys whose last
value is right, records without a key) is counted exactly, and the worker never stops.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import settings_of
from tests.integration import hostile
from tests.integration.hostile import Hostile
from tests.integration.synthetic import dead_letters

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MODEL, VERSION = "hostile", "1"
N_VALID, STEP_MS = 6000, 100  # ten one-minute windows
N_BAD_PREDICTIONS, N_BAD_LABELS = 6000, 4000
PLAIN_LABELS = N_VALID - N_BAD_LABELS  # the first predictions get plain labels, each later one a hostile label
MAX_BYTES = 20_000  # the biggest hypothesis-made record here (1 MiB to 10 MiB ones: test_decode_fuzz) ...
HUGE = 10 * 1_048_576  # ... and two 10 MiB records on each topic


def drawn(make: Callable[[int], st.SearchStrategy[Hostile]], n: int, per_example: int = 20) -> list[Hostile]:
    """``n`` records from hypothesis, derandomized (the same list on every run).

    Each example draws ``per_example`` records (hypothesis's cost is mostly per example); an example that
    hypothesis abandons half-way adds none.
    """
    out: list[Hostile] = []

    @settings(max_examples=n // per_example + 50, derandomize=True, database=None, phases=[Phase.generate],
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        batch = [data.draw(make(len(out) + j)) for j in range(per_example)]  # always draw: the same tree each run
        if len(out) < n:
            out.extend(batch)

    collect()
    assert len(out) >= n
    return out[:n]


def ts_of(i: int) -> int:
    return BASE_MS + i * STEP_MS


def window_rows(url: str, base_ms: int) -> dict[tuple[int, str], float]:
    """(minute since ``base_ms``, metric) -> value of every window's ``count`` and ``labels`` rows."""
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT intDiv(toUnixTimestamp64Milli(window_start) - {b:Int64}, 60000), "
                                      "metric, value FROM driftline.windows FINAL WHERE feature = '' AND slice = '' "
                                      "AND metric IN ('count', 'labels')", {"b": base_ms})
    return {(int(w), m): float(v) for w, m, v in rows}


def test_hostile_records_are_dead_lettered_and_valid_ones_counted_exactly(env_for, worker_for):
    started = time.monotonic()
    env = env_for(window_seconds=60, allowed_lateness_seconds=10, label_wait_seconds=20)
    conf = settings_of(env)
    n_parts = conf.topic_partitions
    source, labels = conf.topic(topics.PREDICTIONS), conf.topic(topics.LABELS)
    # input topics that carry 10 MB records (a broker's default stops at 1 MB), so those reach the worker too
    admin = AdminClient({"bootstrap.servers": conf.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, n_parts, 1, config={"max.message.bytes": str(HUGE + 65_536)})
                                       for t in (source, labels)]).values():
        future.result()
    topics.ensure_topics(conf)

    bad_predictions = drawn(lambda k: hostile.hostile_prediction(
        f"h-{k}", MODEL, VERSION, ts_of(k * N_VALID // N_BAD_PREDICTIONS), max_bytes=MAX_BYTES), N_BAD_PREDICTIONS)
    bad_labels = drawn(lambda k: hostile.hostile_label(
        f"p-{PLAIN_LABELS + k}", MODEL, ts_of(PLAIN_LABELS + k) + 3_600_000, max_bytes=MAX_BYTES), N_BAD_LABELS)
    generated = time.monotonic() - started

    huge = [Hostile(f"huge-{k}".encode(), hostile._dumps(hostile.prediction(f"huge-{k}", "m" * HUGE, VERSION,
                                                                        ts_of(0))), False, "10 MB")
            for k in range(2)]
    bad_predictions[:2] = huge  # the first ones: a 10 MB record must not hold the valid ones behind it
    bad_labels[:2] = [Hostile(h.key, h.value, False, h.kind) for h in huge]
    counts: Counter[int] = Counter()
    labelled: Counter[int] = Counter()
    producer = Producer({"bootstrap.servers": conf.kafka_bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "message.max.bytes": HUGE + 65_536})
    per_step = N_BAD_PREDICTIONS // N_VALID
    for i in range(N_VALID):  # in event-time order per partition, hostile records among the valid ones
        part, window = i % n_parts, (ts_of(i) - BASE_MS) // 60_000
        producer.produce(source, key=f"p-{i}".encode(), partition=part,
                         value=hostile._dumps(hostile.prediction(f"p-{i}", MODEL, VERSION, ts_of(i))))
        counts[window] += 1
        for h in bad_predictions[i * per_step:(i + 1) * per_step]:
            producer.produce(source, key=h.key, value=h.value, partition=part)
            counts[window] += h.valid
        producer.poll(0)
    assert producer.flush(60) == 0
    for i in range(N_VALID):  # labels after their predictions: each prediction is labelled once at most
        part, window = i % n_parts, (ts_of(i) - BASE_MS) // 60_000
        if i < PLAIN_LABELS:
            h = Hostile(f"p-{i}".encode(), hostile._dumps(hostile.label(f"p-{i}", MODEL, ts_of(i) + 3_600_000)),
                        True, "plain")
        else:
            h = bad_labels[i - PLAIN_LABELS]
        producer.produce(labels, key=h.key, value=h.value, partition=part)
        labelled[window] += h.valid
        producer.poll(0)
    assert producer.flush(60) == 0
    n_bad = {source: sum(not h.valid for h in bad_predictions), labels: sum(not h.valid for h in bad_labels)}
    assert min(n_bad.values()) > 1000 and len(bad_predictions) + len(bad_labels) >= 10_000

    worker = worker_for(env).start()
    worker.wait_metric("driftline_dead_letters_total", sum(n_bad.values()), timeout=90)
    worker.wait_metric("driftline_labels_joined_total", sum(labelled.values()), timeout=90)
    worker.wait_metric("driftline_windows_written_total", len(counts), timeout=90)
    assert worker.metric("driftline_dead_letters_total") == sum(n_bad.values())
    assert worker.metric("driftline_late_events_total") == 0
    assert worker.metric("driftline_labels_unmatched_total") == 0
    assert worker.terminate() == 0

    got = window_rows(conf.clickhouse_url, BASE_MS)
    assert {w: got[(w, "count")] for w in counts} == {w: float(n) for w, n in counts.items()}
    assert {w: got.get((w, "labels"), 0.0) for w in counts} == {w: float(labelled[w]) for w in counts}

    letters = dead_letters(conf.kafka_bootstrap, conf.topic(topics.DLQ), sum(n_bad.values()))
    by_source = Counter(src.rsplit("/", 2)[0] for _, src in letters)
    assert by_source == n_bad
    assert all(reason for reason, _ in letters)
    assert sum(reason.startswith("record too large: 104859") for reason, _ in letters) == 4  # 10 MiB, refused unread
    print(f"generated {len(bad_predictions) + len(bad_labels)} hostile records in {generated:.1f} s; "
          f"whole test {time.monotonic() - started:.1f} s")

