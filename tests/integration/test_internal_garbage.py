"""Issue #14, hostile input on driftline's own topics: garbage written straight onto every internal topic.

Random bytes, JSON of the wrong shape and right envelopes with wrong field types go onto the summaries,
findings, alert-deliveries and alerts topics of a running worker, and onto the state topics (join-state,
tick-state, alert-state, references, silences) both before it starts (read back at assignment) and while
it runs. The worker keeps running and exits 0, every window's count and labels equal what was produced,
and each garbage record is reported: dead-lettered with its reason where a stage consumes the topic,
else skipped and counted in ``driftline_internal_records_refused_total``.
"""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from driftline.streams.kafka import topics
from driftline.streams.pipeline import envelope
from tests.conftest import settings_of
from tests.integration import hostile
from tests.integration.synthetic import outside_producer
from tests.integration.test_hostile_input import dead_letters, window_rows

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000
MODEL, VERSION = "inside", "1"
N, STEP_MS, LABELLED = 3000, 100, 1000  # five one-minute windows; the first 1000 predictions get labels
SEP = "\x1f"


def framed(head: object, body: bytes = b"") -> bytes:
    data = orjson.dumps(head)
    return struct.pack(">I", len(data)) + data + body


def garbage(rng: np.random.Generator) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """(key, value) of the garbage records for each internal topic (unprefixed names)."""
    noise = [(None, rng.bytes(int(n))) for n in rng.integers(1, 400, 3)] + [(None, b"\x00\xff{")]
    wrong_shape = [(None, b"[1, 2, 3]"), (None, b'{"a": {"b": [null]}}'), (None, b'"text"'), (None, b"{}")]
    watermark = {"type": "watermark", "partition": 0, "partitions": 1, "event_time_ms": 5}
    summary = {"type": "summary", **{f: 0 for f in envelope.SummaryHeader.__dataclass_fields__},
               "model_id": MODEL, "model_version": VERSION, "window_size_ms": 60_000, "late_oldest_ms": None}
    findings = {"model_id": MODEL, "model_version": VERSION, "window_start_ms": 0, "window_end_ms": 60_000,
                "source": "predictions", "revision": 0, "reference_id": "r", "config_version": "c", "events": 10,
                "rows": [["psi", "amount", "", 0.5, 10, True, 0.2, None]]}
    delivery = {"schema_version": 1, "event_id": "e", "fingerprint": "f", "incident_id": "i", "model_id": MODEL,
                "model_version": VERSION, "policy": "drift", "severity": "warning", "transition": "triggered",
                "route": "hook", "kind": "webhook", "outcome": "delivered", "status": 200, "attempts": 1,
                "response": "", "time": "2026-01-01T00:00:00Z"}
    reference = {"model_id": MODEL, "model_version": VERSION, "reference_id": "r", "content_hash": "h",
                 "source": "file", "effective_from_ms": 0, "profile": {}, "summary": None}
    return {
        topics.SUMMARIES: noise + wrong_shape + [
            (None, framed({**watermark, "event_time_ms": "5"})),                      # right envelope, wrong types
            (None, framed({**watermark, "partition": None})),
            (None, framed({**summary, "window_start_ms": 1.5})),
            (None, framed({**summary, "model_id": ["x"]})),
            (None, framed(summary, b"not a summary")),                                # right header, foreign body
            (None, framed({**summary, "type": "tick", "tick_start_ms": 0, "tick_size_ms": 1000})),
        ],
        topics.FINDINGS: noise + wrong_shape + [
            (MODEL.encode(), orjson.dumps({**findings, "events": "10"})),
            (MODEL.encode(), orjson.dumps({**findings, "source": "elsewhere"})),
            (MODEL.encode(), orjson.dumps({**findings, "rows": [["psi", "amount", "", "high", 10, 1, None, None]]})),
        ],
        topics.ALERT_DELIVERIES: noise + wrong_shape + [
            (b"e", orjson.dumps({**delivery, "attempts": "one"})),
            (b"e", orjson.dumps({**delivery, "status": [200]})),
        ],
        topics.ALERTS: noise + wrong_shape + [(b"f", orjson.dumps({"schema_version": 1, "notify": "yes"}))],
        topics.REFERENCES: noise + wrong_shape + [
            (b"r", orjson.dumps({**reference, "model_id": 5})),
            (b"r", orjson.dumps({**reference, "summary": "@@not base64@@"})),
            (b"r", orjson.dumps({**reference, "profile": "flat"})),
        ],
        topics.SILENCES: noise + wrong_shape + [(b"s", orjson.dumps({"id": 5, "model": MODEL}))],
        topics.JOIN_STATE: noise + wrong_shape + [
            (None, orjson.dumps({"put": {"p-1": [MODEL, VERSION, "soon", None, None, None, None]}})),
            (None, orjson.dumps({"put": {"p-2": [MODEL, VERSION, 0]}, "joined": []})),
            (None, orjson.dumps({"joined": [1, 2]})),
        ],
        # state records are keyed <model>\x1f<version>: one key each, so each is read back
        topics.TICK_STATE: [(f"{MODEL}{SEP}{i}".encode(), v) for i, (_, v) in enumerate(noise + wrong_shape)] + [
            (b"\xff\xfe", b"{}"),                                                       # a key that is not UTF-8
            (f"{MODEL}{SEP}x".encode(), orjson.dumps({"partition": "0", "detector": {}})),
        ],
        topics.ALERT_STATE: [(f"{MODEL}{SEP}{i}".encode(), v) for i, (_, v) in enumerate(noise + wrong_shape)] + [
            (b"no separator", b'{"horizon_ms": null, "windows": [], "policies": {}}'),
            (b"\xff\xfe", b"{}"),
            (f"{MODEL}{SEP}x".encode(), b'{"horizon_ms": "x", "windows": [], "policies": {}}'),
        ],
    }


LIVE_DLQ = (topics.SUMMARIES, topics.FINDINGS, topics.ALERT_DELIVERIES)  # consumed by a stage: dead-lettered
RESTORED = (topics.JOIN_STATE, topics.TICK_STATE, topics.ALERT_STATE)     # read back on assignment: skipped


def write(producer: Producer, admin: AdminClient, conf, records: dict[str, list[tuple[bytes | None, bytes]]],
          names: tuple[str, ...]) -> dict[str, int]:
    """Every record of ``names`` onto every partition of its topic; how many each topic got."""
    listed = admin.list_topics(timeout=30).topics
    written, failed = {}, []
    for name in names:
        topic = conf.topic(name)
        parts = list(listed[topic].partitions)
        for i, (key, value) in enumerate(records[name]):
            for p in parts:  # compacted topics take no record without a key: give each one its own
                producer.produce(topic, key=key if key is not None else f"garbage-{i}".encode(), value=value,
                                 partition=p, on_delivery=lambda err, _msg: failed.append(err) if err else None)
        written[name] = len(records[name]) * len(parts)
    assert producer.flush(30) == 0 and not failed, failed
    return written


def test_garbage_on_every_internal_topic_is_reported_and_changes_no_count(env_for, worker_for):
    started = time.monotonic()
    routes = [{"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/", "secret_env": "HOOK_SECRET"}]
    env = {**env_for(window_seconds=60, allowed_lateness_seconds=10, label_wait_seconds=20,
                     alert_routes=json.dumps(routes)), "HOOK_SECRET": "s"}
    conf = settings_of(env)
    topics.ensure_topics(conf)
    admin = AdminClient({"bootstrap.servers": conf.kafka_bootstrap})
    n_parts = conf.topic_partitions
    producer = outside_producer(conf.kafka_bootstrap)
    counts: dict[int, int] = {}
    labelled: dict[int, int] = {}
    for i in range(N):
        ts, window = BASE_MS + i * STEP_MS, i * STEP_MS // 60_000
        producer.produce(conf.topic(topics.PREDICTIONS), key=f"p-{i}".encode(), partition=i % n_parts,
                         value=hostile._dumps(hostile.prediction(f"p-{i}", MODEL, VERSION, ts)))
        counts[window] = counts.get(window, 0) + 1
        if i < LABELLED:
            producer.produce(conf.topic(topics.LABELS), key=f"p-{i}".encode(), partition=i % n_parts,
                             value=hostile._dumps(hostile.label(f"p-{i}", MODEL, ts + 3_600_000)))
            labelled[window] = labelled.get(window, 0) + 1
    assert producer.flush(60) == 0
    records = garbage(np.random.default_rng(14))
    everything = tuple(records)
    before = write(producer, admin, conf, records, everything)  # the state topics are read back at start

    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", len(counts), timeout=90)
    during = write(producer, admin, conf, records, (*LIVE_DLQ, topics.ALERTS, topics.REFERENCES, topics.SILENCES))
    dead = sum(before[t] + during[t] for t in LIVE_DLQ)
    worker.wait_metric("driftline_dead_letters_total", dead, timeout=60)
    worker.wait_metric("driftline_labels_joined_total", LABELLED, timeout=60)

    def refused(name: str) -> float:
        return worker.metric(f'driftline_internal_records_refused_total{{topic="{conf.topic(name)}"}}')

    for name in (topics.REFERENCES, topics.SILENCES):  # followed on their own threads
        worker.wait_metric(f'driftline_internal_records_refused_total{{topic="{conf.topic(name)}"}}',
                           before[name] + during[name], timeout=30)

    for name in LIVE_DLQ:
        assert refused(name) == before[name] + during[name], name
    assert refused(topics.SILENCES) == before[topics.SILENCES] + during[topics.SILENCES]
    # the summarize and the merge stage each follow the references
    assert refused(topics.REFERENCES) == 2 * (before[topics.REFERENCES] + during[topics.REFERENCES])
    # read back once per assignment (more if a rebalance re-read them): join-state record by record (b"{}" is
    # an empty one, not garbage), the compacted ones key by key (a key that is not UTF-8 on each partition)
    assert refused(topics.JOIN_STATE) >= before[topics.JOIN_STATE] - n_parts
    for name in (topics.TICK_STATE, topics.ALERT_STATE):
        assert refused(name) >= len(records[name]) - 1 + n_parts, name
    worker.wait_metric("driftline_alert_dispatch_malformed_total", before[topics.ALERTS] + during[topics.ALERTS],
                       timeout=30)  # the dispatcher has its own consumer group and thread
    assert worker.metric("driftline_dead_letters_total") == dead
    assert worker.alive()
    assert worker.terminate() == 0

    got = window_rows(conf.clickhouse_url, BASE_MS)
    assert {w: got[(w, "count")] for w in counts} == {w: float(n) for w, n in counts.items()}
    assert {w: got.get((w, "labels"), 0.0) for w in counts} == {w: float(labelled.get(w, 0)) for w in counts}
    letters = dead_letters(conf.kafka_bootstrap, conf.topic(topics.DLQ), dead)
    assert len(letters) == dead and all(reason for reason, _ in letters)
    assert {src.rsplit("/", 2)[0] for _, src in letters} == {conf.topic(t) for t in LIVE_DLQ}
    print(f"whole test {time.monotonic() - started:.1f} s")
