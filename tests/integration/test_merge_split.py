"""Merge split: two `--stage merge` workers in one group split the models and together write one worker's windows.

The summaries topic is keyed by model_id and every summaries partition gets every input partition's watermarks,
so merge workers in one consumer group split the models by partition and each closes its own models' windows on
its own. Proved against the real broker, from the same events (five models, fourteen 60 s windows each, through
the automatic reference) in two topic prefixes: one `--stage summarize` worker and two `--stage merge` workers, each
merge worker with its own home and so its own embedded store, against one `driftline worker` (all stages).
The two stores hold disjoint sets of models, each exactly the models whose summaries partitions its worker was
assigned, and their union holds exactly the single worker's rows: same keys, same values and n.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka.partitioner import murmur2  # the murmur2 of the producers' "murmur2_random" partitioner

from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import Worker, settings_of
from tests.integration.synthetic import VERSION, features_for, outside_event, outside_producer
from tests.integration.test_scale_out import BASE_MS, CLOSE_MS, assert_same, close_all_windows

pytestmark = pytest.mark.integration
PARTITIONS = 6
MODELS = ("m-a", "m-b", "m-c", "m-d", "m-e")  # summaries partitions 1, 4, 0, 0, 1: both halves of a range split
EVENTS = 4_000
# 4,000 events over 840 s: fourteen 60 s windows per model, so each model's automatic reference is complete (profile
# from windows 0-4, in force from window 7, summary from windows 7-11) and no merge commit is held behind a warm-up
STEP_MS = 210
WINDOW_MS = 60_000
ASSIGNED = re.compile(r"merge stage assigned \[([0-9, ]*)\]")

Rows = dict[tuple, tuple[float, int]]


def summaries_partition(model: str) -> int:
    """Where the summarize stage's producer puts a model's summaries (key model_id, murmur2 like Java)."""
    return (murmur2(model.encode()) & 0x7FFFFFFF) % PARTITIONS


def produce_models(bootstrap: str, sources: list[str]) -> dict[str, set[int]]:
    """The same events into every topic of ``sources``, models taking turns; the window starts of each model."""
    rng = np.random.default_rng(11)
    producer = outside_producer(bootstrap)
    windows: dict[str, set[int]] = defaultdict(set)
    for j in range(EVENTS):
        model = MODELS[j % len(MODELS)]
        ts = BASE_MS + j * STEP_MS + int(rng.integers(0, 2000))
        pid = f"ms-{j}"
        event = orjson.loads(outside_event(pid, ts, features_for(rng), rng, j % 3 == 0))
        value = orjson.dumps({**event, "model_id": model})
        for source in sources:
            producer.produce(source, key=pid.encode(), value=value)
        windows[model].add(ts - ts % WINDOW_MS)
        if j % 500 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return windows


def rows_by_model(url: str) -> dict[str, Rows]:
    """`test_scale_out.rows_of` for several models: each model's rows, keyed as there (with the version)."""
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT model_id, model_version, toUnixTimestamp64Milli(window_start), metric, "
                                      "feature, slice, value, n FROM driftline.windows FINAL "
                                      f"WHERE window_start < fromUnixTimestamp64Milli({CLOSE_MS})")
    out: dict[str, Rows] = defaultdict(dict)
    for r in rows:
        out[r[0]][(r[1], int(r[2]), r[3], r[4], r[5])] = (float(r[6]), int(r[7]))
    return dict(out)


def assignments(mergers: list[Worker], timeout: float = 60.0) -> list[set[int]]:
    """Each merge worker's summaries partitions once the group has settled: both hold some, all are held once."""
    deadline = time.monotonic() + timeout
    latest: list[set[int] | None] = []
    while time.monotonic() < deadline:
        for m in mergers:
            if not m.alive():
                raise AssertionError(f"merge worker died:\n{m.log.read_text()[-4000:]}")
        logs = [ASSIGNED.findall(m.log.read_text(errors="replace")) if m.log.exists() else [] for m in mergers]
        latest = [{int(p) for p in found[-1].split(",") if p.strip()} if found else None for found in logs]
        if all(latest):
            sets = [s for s in latest if s]
            if sum(len(s) for s in sets) == PARTITIONS and set().union(*sets) == set(range(PARTITIONS)):
                return sets
        time.sleep(0.2)
    raise AssertionError(f"the merge group did not settle: {latest}")


def stop_together(workers: list[Worker]) -> None:
    """SIGTERM every worker, then wait for each: no merge worker takes over another's partitions on the way out.

    (A takeover re-reads from the leaver's commit, which stays behind a model's reference still being learnt, and
    rewrites those windows into the taker's own store, the first of them partly; with a shared ClickHouse server
    the insert-deduplication token drops such rewrites, with two embedded stores nothing does.)
    """
    procs = [worker.proc for worker in workers if worker.proc is not None]
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(60) for proc in procs] == [0] * len(procs)


def test_two_merge_workers_split_the_models_and_write_one_workers_windows(env_for, worker_for, tmp_path: Path):
    halves = {summaries_partition(m) < PARTITIONS // 2 for m in MODELS}
    assert halves == {True, False}, "the models must land on both halves of a two-worker range assignment"
    tag = uuid.uuid4().hex[:8]
    common = {"window_seconds": 60, "allowed_lateness_seconds": 5, "idle_partition_seconds": 3600,
              "topic_partitions": PARTITIONS, "actions": False}
    single_env = env_for(topic_prefix=f"one{tag}.", consumer_group=f"one-{tag}", home=tmp_path / "one", **common)
    split = {"topic_prefix": f"split{tag}.", "consumer_group": f"split-{tag}", **common}
    summarize_env = env_for(home=tmp_path / "summarize", metrics_port=0, **split)
    merge_envs = [env_for(home=tmp_path / f"merge{i}", **split) for i in range(2)]
    single, split_settings = settings_of(single_env), settings_of(summarize_env)
    topics.ensure_topics(single)
    topics.ensure_topics(split_settings)

    one = worker_for(single_env, "one").start()
    mergers = [worker_for(env, f"merge{i}").start("--stage", "merge") for i, env in enumerate(merge_envs)]
    summarizer = worker_for(summarize_env, "summarize").start("--stage", "summarize")
    owned = assignments(mergers)  # settled before any summary exists: no rebalance while windows are pending

    sources = [single.topic(topics.PREDICTIONS), split_settings.topic(topics.PREDICTIONS)]
    windows = produce_models(single.kafka_bootstrap, sources)
    for source in sources:
        close_all_windows(single.kafka_bootstrap, source, PARTITIONS)
    models_of = [{m for m in MODELS if summaries_partition(m) in parts} for parts in owned]
    assert all(models_of), f"a merge worker got no model: {owned}"
    one.wait_metric("driftline_windows_written_total", sum(len(w) for w in windows.values()), timeout=120)
    for merger, models in zip(mergers, models_of, strict=True):
        merger.wait_metric("driftline_windows_written_total", sum(len(windows[m]) for m in models), timeout=120)
    stop_together([summarizer, *mergers, one])

    expected = rows_by_model(single.clickhouse_url)
    stores = [rows_by_model(settings_of(env).clickhouse_url) for env in merge_envs]
    assert set(expected) == set(MODELS)
    assert [set(s) for s in stores] == models_of  # each store: exactly its worker's models, so disjoint
    for model, rows in expected.items():
        assert sum(v for (_, _, metric, _, _), (v, _) in rows.items() if metric == "count") == EVENTS // len(MODELS)
        assert {k[1] for k in rows} == windows[model]
        assert all(k[0] == VERSION for k in rows)
    union = {model: rows for s in stores for model, rows in s.items()}
    for model in MODELS:
        assert_same(expected[model], union[model])
