"""Process, store and webhook faults (issue #14): nothing is lost, nothing counted twice, nothing paged twice.

- The ClickHouse store refuses every write for a while: the merge stage retries, commits nothing meanwhile,
  reports the outage (metrics, one log line at each end) and drains its backlog after; every count is exact.
  The failure is injected below the gateway, in the driver (``Client.insert`` raises the error an unreachable
  server gives), by a ``sitecustomize`` on the worker's ``PYTHONPATH``: driftline's own code is unchanged.
- Workers (two ``--stage summarize``, one ``--stage merge``) are SIGKILLed at seeded random moments: every
  row equals an uninterrupted single worker's (counts exact, metrics to 1e-9), and every alert transition and
  retrain request is there, once per id in ``driftline.alerts``.
- The webhook receiver is down (connection refused): every alert arrives once it is back, once per event id,
  in order per dedup key.

The sizes are the CI ones; ``load_tests/soak_faults.py`` runs the same tests at soak size through the
``FAULTS_*`` environment variables (200k events, a 60 s store outage, a webhook down for 5 minutes).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.streams import store
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import free_port
from driftline.streams.pipeline.windows import JUMP_RECORDS
from tests.actions.test_dispatch_bodies import alert_doc
from tests.actions.test_sender import Receiver
from tests.conftest import ROOT, settings_of
from tests.integration.synthetic import outside_producer
from tests.integration.test_backlog import assert_same
from tests.integration.test_dispatch import SECRETS, deduped, env_with_routes, outcomes, publish, run_in_thread

pytestmark = pytest.mark.integration
EVENTS = int(os.environ.get("FAULTS_EVENTS", "12000"))
STORE_OUTAGE_S = float(os.environ.get("FAULTS_STORE_OUTAGE_S", "15"))
WEBHOOK_OUTAGE_S = float(os.environ.get("FAULTS_WEBHOOK_OUTAGE_S", "20"))
KILLS = int(os.environ.get("FAULTS_KILLS", "5"))
SOAK = os.environ.get("FAULTS_SOAK") == "1"  # the webhook route keeps its default retry settings
SETTLE_S = 120 + EVENTS / 200  # how long a run may take to write every window (a shared 2-core machine)
MODEL, VERSION = "loan-default", "1"
SIZE_MS = 2000
N_WINDOWS = 40
SHIFTED_FROM = 20  # window index
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, fixed: the request ids (which hold window starts) match
CLOSE_MS = BASE_MS + 86_400_000  # records this far ahead close every window
PARTITIONS = 6
NUMERIC = ("x0", "x1", "x2", "x3")
STORE_DOWN_HOOK = '''
"""Test hook, loaded at interpreter start: the store's driver fails every insert while the flag file exists."""
import os

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

_FLAG = os.environ["FAULTS_STORE_DOWN_FLAG"]
_insert = Client.insert


def insert(self, *args, **kwargs):
    if os.path.exists(_FLAG):
        # what clickhouse-connect raises when the server does not answer
        raise OperationalError("Error HTTPConnectionPool(host='clickhouse', port=8123): Max retries exceeded "
                               "(Caused by NewConnectionError: [Errno 111] Connection refused)")
    return _insert(self, *args, **kwargs)


Client.insert = insert
'''
Rows = dict[tuple[int, str, str, str], tuple[float, int, int, str]]


def traffic(events: int, seed: int = 14, shifted_from: int = SHIFTED_FROM
            ) -> tuple[list[tuple[str, bytes]], Counter[int]]:
    """(prediction id, record) in event-time order over ``N_WINDOWS`` windows, the feature x0 shifted from
    window ``shifted_from`` on (drift and sequential alerts, retrain requests), and the events per window."""
    rng = np.random.default_rng(seed)
    per_window = events // N_WINDOWS
    out, counts = [], Counter[int]()
    for w in range(N_WINDOWS):
        x = rng.normal(0.0, 1.0, (per_window, len(NUMERIC)))
        x[:, 0] += 0.6 if w >= shifted_from else 0.0
        purposes = rng.choice(["car", "home", "study"], per_window, p=[0.5, 0.3, 0.2])
        for i in range(per_window):
            ts = BASE_MS + w * SIZE_MS + i * SIZE_MS // per_window
            pid = f"p{w}-{i}"
            p = float(1 / (1 + np.exp(-(x[i, 0] + 0.5 * x[i, 1]))))
            features: dict[str, object] = {name: float(v) for name, v in zip(NUMERIC, x[i], strict=True)}
            features["purpose"] = str(purposes[i])
            out.append((pid, orjson.dumps({
                "schema_version": 1, "prediction_id": pid, "model_id": MODEL, "model_version": VERSION, "ts": ts,
                "features": features, "prediction": {"score": p, "label": "default" if p >= 0.5 else "repaid"},
                "segments": {"region": "eu" if i % 3 else "us"}})))
            counts[w] += 1
    return out, counts


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]], seconds: float = 0.0,
            close: bool = True) -> None:
    """The records, spread over ``seconds`` of wall time, then (``close``) per partition the records that close
    every window."""
    producer = outside_producer(bootstrap)
    started = time.monotonic()
    for n, (pid, value) in enumerate(records):
        _send(producer, topic, pid, value)
        if n % 500 == 0:
            producer.poll(0)
            if seconds:
                time.sleep(max(0.0, started + seconds * n / len(records) - time.monotonic()))
    for p in range(PARTITIONS if close else 0):
        for i in range(JUMP_RECORDS):  # a jump in event time counts once that many records confirm it
            pid = f"close-{p}-{i}"
            _send(producer, topic, pid, orjson.dumps({
                "schema_version": 1, "prediction_id": pid, "model_id": MODEL, "model_version": VERSION,
                "ts": CLOSE_MS, "features": {"x0": 0.0}, "prediction": {"score": 0.5, "label": "repaid"}}), p)
    assert producer.flush(60) == 0


def _send(producer: Producer, topic: str, pid: str, value: bytes, partition: int | None = None) -> None:
    while True:
        try:
            if partition is None:
                producer.produce(topic, key=pid.encode(), value=value)
            else:
                producer.produce(topic, key=pid.encode(), value=value, partition=partition)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.1)


def environment(env_for, tmp_path: Path, name: str, **extra: Any) -> dict[str, str]:
    """Settings of one run, its topics made and the model's reference stored (`driftline reference set`).

    A stored reference, not an automatic one: with an automatic reference the sequential detectors start on
    the first tick summarised after the reference reached the summarize stage, a moment that depends on the
    pace of the run (on restarts too), so their rows would differ from run to run."""
    config = tmp_path / f"{name}.yaml"
    # ticks no longer than windows: a window's tick rows are then fixed by the records, whatever the pace
    config.write_text(f"models:\n  {MODEL}:\n    window_seconds: 2\n    allowed_lateness_seconds: 0.5\n"
                      "    tick_seconds: 1\n    tick_lateness_seconds: 0.5\n")
    prefix = f"{name}-{tmp_path.name[-12:]}."
    env = env_for(topic_prefix=prefix, consumer_group=f"g-{prefix}", home=tmp_path / name, monitoring_config=config,
                  idle_partition_seconds=3600, topic_partitions=PARTITIONS, **extra)
    topics.ensure_topics(settings_of(env))
    path = tmp_path / f"{name}-reference.jsonl"
    path.write_bytes(b"\n".join(value for _, value in traffic(8000, seed=99, shifted_from=N_WINDOWS)[0]))
    done = subprocess.run([sys.executable, "-m", "driftline.streams", "reference", "set", "--model", MODEL,
                           "--version", VERSION, "--file", str(path), "--effective-from", "0"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return env


def rows_of(url: str) -> Rows:
    with store.opened(url) as client:
        _, found = store.query(client, (
            "SELECT intDiv(toUnixTimestamp64Milli(window_start) - {b:Int64}, {s:Int64}), metric, feature, slice, "
            "value, n, breached, reference_id FROM driftline.windows FINAL WHERE model_id = {m:String} "
            "AND window_start < fromUnixTimestamp64Milli({c:Int64})"), {"b": BASE_MS, "s": SIZE_MS, "m": MODEL,
                                                                        "c": CLOSE_MS - 60_000})
    return {(int(w), metric, feature, slice_): (float(value), int(n), int(breached), ref)
            for w, metric, feature, slice_, value, n, breached, ref in found}


def transitions_of(url: str) -> Counter[str]:
    """How many rows each alert transition's event id has in ``driftline.alerts``."""
    with store.opened(url) as client:
        _, found = store.query(client, "SELECT event_id FROM driftline.alerts WHERE kind = 'transition'")
    return Counter(str(r[0]) for r in found)


def assert_counts_exact(rows: Rows, counts: Counter[int]) -> None:
    assert {w: int(v) for (w, metric, _, _), (v, _, _, _) in rows.items() if metric == "count"} == dict(counts)


def topic_ids(bootstrap: str, topic: str, field: str) -> Counter[str]:
    """``field`` of every record on ``topic``, read from the beginning to its end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.time_ns()}",
                         "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        found: Counter[str] = Counter()
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    found[json.loads(msg.value())[field]] += 1
                    if msg.offset() + 1 >= ends[msg.partition()]:
                        done.add(msg.partition())
        assert len(done) == len(ends), f"{topic} not read to its end"
        return found
    finally:
        consumer.close()


def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """Whether ``group`` has committed every record of ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return all(tp.offset >= consumer.get_watermark_offsets(tp, timeout=10)[1]
                   or consumer.get_watermark_offsets(tp, timeout=10)[1] == 0 for tp in committed)
    finally:
        consumer.close()


def settle(env: dict[str, str], merger, others: tuple = ()) -> None:
    """Until the merge stage's watermark passed every window and the policy engine read every finding (every
    worker staying alive)."""
    settings = settings_of(env)
    deadline = time.monotonic() + SETTLE_S
    while merger.metric("driftline_stage2_watermark_seconds") < (CLOSE_MS - 1000) / 1000 or not caught_up(
            settings.kafka_bootstrap, f"{settings.consumer_group}-actions", settings.topic(topics.FINDINGS)):
        for worker in (merger, *others):
            assert worker.alive(), f"{worker.log} died:\n{worker.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not settled:\n{merger.log.read_text()[-3000:]}"
        time.sleep(1)


def committed_offsets(env: dict[str, str], group_suffix: str, topic: str) -> dict[int, int]:
    settings = settings_of(env)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": f"{settings.consumer_group}-{group_suffix}", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in parts],
                                                                      timeout=10)}
    finally:
        consumer.close()


def uninterrupted(env_for, worker_for, tmp_path: Path, records: list[tuple[str, bytes]]
                  ) -> tuple[Rows, Counter[str], Counter[str], Counter[str]]:
    """One ``driftline worker`` over all the records: the rows, transitions, alerts and retrain requests."""
    env = environment(env_for, tmp_path, "calm")
    settings = settings_of(env)
    produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), records)
    worker = worker_for(env, "calm").start()
    settle(env, worker)
    assert worker.terminate() == 0
    return (rows_of(settings.clickhouse_url), transitions_of(settings.clickhouse_url),
            topic_ids(settings.kafka_bootstrap, settings.topic(topics.ALERTS), "event_id"),
            topic_ids(settings.kafka_bootstrap, settings.topic(topics.RETRAIN), "id"))


def test_a_store_outage_holds_the_offsets_and_the_backlog_drains_after(env_for, worker_for, tmp_path: Path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(STORE_DOWN_HOOK)
    flag = tmp_path / "store-down"
    env = {**environment(env_for, tmp_path, "outage"), "PYTHONPATH": str(hooks), "FAULTS_STORE_DOWN_FLAG": str(flag)}
    settings = settings_of(env)
    records, counts = traffic(EVENTS)
    half = len(records) // 2
    worker = worker_for(env, "outage").start()
    produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), records[:half], close=False)
    worker.wait_metric("driftline_windows_written_total", N_WINDOWS // 4, timeout=SETTLE_S)
    flag.touch()
    down_at = time.monotonic()
    produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), records[half:])
    worker.wait_metric("driftline_store_write_failures_total", 1)
    written = worker.metric("driftline_windows_written_total")
    held = committed_offsets(env, "stage2", settings.topic(topics.SUMMARIES))
    time.sleep(max(0.0, down_at + STORE_OUTAGE_S - time.monotonic()))
    assert worker.metric("driftline_store_up") == 0
    assert worker.metric("driftline_store_outage_seconds") >= STORE_OUTAGE_S / 2
    assert worker.metric("driftline_windows_written_total") == written
    assert committed_offsets(env, "stage2", settings.topic(topics.SUMMARIES)) == held
    flag.unlink()
    up_at = time.monotonic()
    settle(env, worker)
    drained_s = time.monotonic() - up_at
    assert worker.metric("driftline_store_up") == 1 and worker.metric("driftline_store_outage_seconds") == 0
    failed_calls = worker.metric("driftline_store_write_failures_total")
    assert worker.terminate() == 0
    log = worker.log.read_text()
    assert log.count("ClickHouse store unavailable") == 1 and log.count("ClickHouse store available again") == 1, log
    assert "Traceback" not in log
    rows = rows_of(settings.clickhouse_url)
    assert_counts_exact(rows, counts)
    print(f"store down {STORE_OUTAGE_S:.0f} s, {failed_calls:.0f} failed calls; backlog drained {drained_s:.1f} s "
          "after it came back")


def test_workers_killed_at_random_moments_write_the_rows_and_alerts_of_an_uninterrupted_run(
        env_for, worker_for, tmp_path: Path):
    records, counts = traffic(EVENTS)
    began = time.monotonic()
    expected, transitions, alerts, retrains = uninterrupted(env_for, worker_for, tmp_path, records)
    calm_s = time.monotonic() - began
    assert_counts_exact(expected, counts)
    assert transitions and all(n == 1 for n in transitions.values()) and retrains, (transitions, retrains)

    env = environment(env_for, tmp_path, "killed")
    settings = settings_of(env)
    merger = worker_for(env, "merge").start("--stage", "merge")
    summarizers = [worker_for({**env, "DRIFTLINE_METRICS_PORT": "0"}, f"summarize-{i}").start("--stage", "summarize")
                   for i in range(2)]
    spread_s = max(4.0 * KILLS, EVENTS / 2000)  # the production, and the kills, spread over this long
    producer = threading.Thread(target=produce, args=(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS),
                                                      records, spread_s))
    producer.start()
    rng = random.Random(1414)
    workers = [merger, *summarizers]
    victims = rng.sample(workers, len(workers)) + [rng.choice(workers) for _ in range(KILLS - len(workers))]
    kills = []
    started = time.monotonic()
    for victim in victims:  # each worker at least once, in a random order
        time.sleep(rng.uniform(0.3, 1.5) * spread_s / KILLS)
        victim.kill()
        kills.append((round(time.monotonic() - started, 1), victim.log.stem))
        victim.start(*(["--stage", "merge"] if victim is merger else ["--stage", "summarize"]))
    producer.join()
    settle(env, merger, tuple(summarizers))
    for worker in [*summarizers, merger]:
        assert worker.terminate() == 0
    print(f"uninterrupted run {calm_s:.0f} s, killed run {time.monotonic() - began - calm_s:.0f} s; "
          f"SIGKILLed at (s, worker): {kills}")
    got = rows_of(settings.clickhouse_url)
    assert_counts_exact(got, counts)
    assert_same(expected, got)
    got_transitions = transitions_of(settings.clickhouse_url)
    assert got_transitions == transitions  # every transition, once each
    assert set(topic_ids(settings.kafka_bootstrap, settings.topic(topics.ALERTS), "event_id")) == set(alerts)
    assert set(topic_ids(settings.kafka_bootstrap, settings.topic(topics.RETRAIN), "id")) == set(retrains)


def test_a_webhook_down_for_a_while_gets_every_alert_once_it_is_back(env_for, tmp_path: Path):
    port = free_port()
    retry = {} if SOAK else {"retry_base_seconds": 0.2, "retry_max_delay_seconds": 2.0,
                             "max_retry_seconds": 3 * WEBHOOK_OUTAGE_S}
    env = env_with_routes(env_for, [{"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{port}/hook",
                                     "secret_env": "HOOK_SECRET", **retry}])
    settings = settings_of(env)
    topics.ensure_topics(settings)
    docs = []
    for fingerprint in ("a" * 32, "b" * 32, "c" * 32):
        docs += [alert_doc("triggered", 0, fingerprint), alert_doc("updated", 1, fingerprint),
                 alert_doc("resolved", 2, fingerprint)]
    publish(settings, docs)
    halt, thread = run_in_thread(settings, env)
    receiver = None
    try:
        time.sleep(WEBHOOK_OUTAGE_S)  # nothing listens on the port: every attempt is refused
        receiver = Receiver(lambda _n, _b: (202, {}, b"ok")).start(port)
        up_at = time.monotonic()
        found = outcomes(settings, len(docs), timeout=120 + WEBHOOK_OUTAGE_S)
    finally:
        halt.set()
        thread.join(60)
        if receiver is not None:
            receiver.stop()
    assert not thread.is_alive()
    assert sorted(o["event_id"] for o in found) == sorted(d["event_id"] for d in docs)
    assert all(o["outcome"] == "delivered" for o in found)
    assert max(o["attempts"] for o in found) > 1  # refused while it was down
    got = [json.loads(body) for _t, _h, body in receiver.requests]
    assert Counter(d["event_id"] for d in got) == Counter(d["event_id"] for d in docs)  # once each
    by_key: dict[str, list[str]] = {}
    for d in got:
        by_key.setdefault(d["fingerprint"], []).append(d["event_id"])
    assert {k: deduped(v) for k, v in by_key.items()} == {
        f: [d["event_id"] for d in docs if d["fingerprint"] == f] for f in by_key}
    assert all(t >= up_at for t, _h, _b in receiver.requests)
    assert SECRETS["HOOK_SECRET"] not in "".join(o["response"] for o in found)
    print(f"webhook down {WEBHOOK_OUTAGE_S:.0f} s; every alert delivered "
          f"{receiver.requests[-1][0] - up_at:.1f} s after it came back")
