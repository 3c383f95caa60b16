"""Stage 1 throughput against a bare confluent-kafka consume + orjson decode loop, on the same broker.

Decides (with numbers) whether stage 1 may use faust's stream iteration: the target is at least 50 % of
the bare loop and at least 100,000 events/s per worker, 20 numeric features per event.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import orjson
from confluent_kafka import Consumer

from load_tests.traffic import payloads, produce
from streams import metrics, topics
from streams.settings import load_settings
from streams.stage1 import Stage1
from streams.summarize import PredictionSummarizer

N_EVENTS = int(os.environ.get("BENCH_STAGE1_EVENTS", "300000"))


def bare_loop(bootstrap: str, topic: str, n: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 4_194_304})
    consumer.subscribe([topic])
    seen = 0
    start = 0.0
    while seen < n:
        batch = consumer.consume(5000, timeout=1.0)
        if batch and not start:
            start = time.perf_counter()
        for msg in batch:
            if msg.error() is None:
                orjson.loads(msg.value())
                seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return seen / elapsed


def stage1(settings_overrides: dict[str, object], n: int) -> float:
    settings = load_settings(**settings_overrides)
    halt = threading.Event()
    runner = Stage1(settings, PredictionSummarizer(), halt)
    counter = metrics.EVENTS.labels(stage="1")
    before = counter._value.get()
    thread = threading.Thread(target=runner.run)
    thread.start()
    start = 0.0
    while counter._value.get() - before < n:
        if not start and counter._value.get() > before:
            start = time.perf_counter()
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    halt.set()
    thread.join()
    return (counter._value.get() - before) / elapsed


def faust_take(bootstrap: str, topic: str, n: int) -> float | None:
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic, "BENCH_N": str(n)}
    done = subprocess.run([sys.executable, "-m", "load_tests.faust_take", "worker", "-l", "warn"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        words = line.split()
        if "FAUST_EVENTS_PER_S" in words:
            return float(words[words.index("FAUST_EVENTS_PER_S") + 1])
    return None


def breakdown(records: list[tuple[bytes, bytes]], settings_overrides: dict[str, object]) -> list[tuple[str, float]]:
    """Microseconds per event of each step of stage 1's hot path, in process (no Kafka)."""
    from streams.decode import decode_prediction
    from streams.labels import LabelJoiner
    from streams.windows import PartitionWindows

    summarizer = PredictionSummarizer()
    values = [v for _, v in records]
    n = len(values)
    t0 = time.perf_counter()
    preds = [decode_prediction(v) for v in values]
    t1 = time.perf_counter()
    windows = PartitionWindows(0, 60_000, 10_000, summarizer.new)
    for i, p in enumerate(preds):
        windows.assign(p.model_id, p.model_version, p.ts_ms, i)
    t2 = time.perf_counter()
    for start in range(0, n, 5000):
        acc = summarizer.new("bench", "1", 0)
        summarizer.add(acc, preds[start : start + 5000])
    t3 = time.perf_counter()
    joiner = LabelJoiner(load_settings(**settings_overrides), summarizer.new)
    joiner.assign([])
    joiner.parts[0] = joiner.new_partition(None)
    for start in range(0, n, 5000):
        joiner.remember(0, preds[start : start + 5000])
    t4 = time.perf_counter()
    return [("decode + validate (orjson + contract checks)", (t1 - t0) / n * 1e6),
            ("event-time window routing", (t2 - t1) / n * 1e6),
            ("columns + WindowSummary.add_predictions", (t3 - t2) / n * 1e6),
            ("label-join store (remember)", (t4 - t3) / n * 1e6)]


def run(bootstrap: str, home: str) -> str:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    overrides: dict[str, object] = {"kafka_bootstrap": bootstrap, "topic_prefix": prefix, "home": home,
                                    "consumer_group": f"bench-{prefix}", "idle_partition_seconds": 30}
    settings = load_settings(**overrides)
    topics.ensure_topics(settings)
    records = payloads(N_EVENTS, n_features=20)
    produce(bootstrap, settings.topic(topics.PREDICTIONS), records)
    bare = bare_loop(bootstrap, settings.topic(topics.PREDICTIONS), N_EVENTS)
    ours = stage1(overrides, N_EVENTS)
    faust_rate = faust_take(bootstrap, settings.topic(topics.PREDICTIONS), N_EVENTS)
    faust_text = f"{faust_rate:,.0f}" if faust_rate else "did not finish"
    steps = breakdown(records[:100_000], overrides)
    return "\n".join([
        "## Stage 1 throughput (one worker, 20 numeric features per event)",
        "",
        f"{N_EVENTS:,} prediction events on a 6-partition topic of the local Kafka 4 broker, same machine.",
        "",
        "| consumer | events/s | share of bare loop |",
        "| --- | ---: | ---: |",
        f"| bare confluent-kafka `consume(5000)` + `orjson.loads` | {bare:,.0f} | 100 % |",
        f"| driftline stage 1 (validate, window, summarise, emit) | {ours:,.0f} | {100 * ours / bare:.0f} % |",
        f"| faust agent, `stream.take(5000, within=1)` + the same validation | {faust_text} | "
        + (f"{100 * faust_rate / bare:.0f} % |" if faust_rate else "- |"),
        "",
        "Targets: stage 1 >= 50 % of the bare loop and >= 100,000 events/s per worker. **Verdict:** faust's",
        "stream iteration is far from them, so stage 1 consumes with confluent-kafka batches inside a faust",
        "service (faust keeps the worker's lifecycle). Stage 1 itself does not reach the targets either: the",
        "per-event Python work below (in process, no Kafka, 100,000 events) dominates. Throughput grows with",
        "summarize workers (one per core, partitions >= workers); the next step is a vectorised decode.",
        "",
        "| stage 1 step | us per event |",
        "| --- | ---: |",
        *[f"| {name} | {us:.2f} |" for name, us in steps],
        f"| bare consume + `orjson.loads` (from the first row) | {1e6 / bare:.2f} |",
    ])
