"""The summarize stage throughput against a bare confluent-kafka consume + orjson decode loop, on the same broker.

Decides (with numbers) whether the summarize stage may use faust's stream iteration: the target is at least 50 % of
the bare loop and at least 100,000 events/s per worker, 20 numeric features per event.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer

from driftline.detectors.reference import ReferenceProfile
from driftline.streams import metrics
from driftline.streams.config.settings import load_settings
from driftline.streams.kafka import topics
from driftline.streams.pipeline.decode import decode_prediction
from driftline.streams.pipeline.summarize import PredictionSummarizer, feature_columns
from driftline.streams.stages.consumer import freeze_startup_heap
from driftline.streams.stages.summarize_stage import SummarizeStage
from load_tests.traffic import payloads, produce

N_EVENTS = int(os.environ.get("BENCH_STAGE1_EVENTS", "300000"))
ROUNDS = 3


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


def reference_profile(records: list[tuple[bytes, bytes]]) -> ReferenceProfile:
    """A 50-bin profile fitted on the first 10,000 events: the steady state of a model with a reference."""
    numeric, _ = feature_columns([decode_prediction(v).features for _, v in records[:10_000]])
    return ReferenceProfile.fit(numeric)


def summarize_stage(settings_overrides: dict[str, object], n: int, profile: ReferenceProfile | None = None) -> float:
    settings = load_settings(**settings_overrides)
    freeze_startup_heap()  # as the worker does when its stages start
    halt = threading.Event()
    summarizer = PredictionSummarizer(None if profile is None else lambda _m, _v, _s: profile)
    runner = SummarizeStage(settings, summarizer, halt)
    counter = metrics.EVENTS.labels(stage="summarize")
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
    del runner
    gc.collect()  # the stage's consumer callbacks form a cycle: free it before the next round
    return (counter._value.get() - before) / elapsed


def _summarize_child(overrides: dict[str, object], done: Any, stop: Any) -> None:
    """One summarize worker process: adds the events it has summarised to the shared counter."""
    settings = load_settings(**overrides)
    freeze_startup_heap()
    halt = threading.Event()
    runner = SummarizeStage(settings, PredictionSummarizer(), halt)
    thread = threading.Thread(target=runner.run)
    thread.start()
    counter = metrics.EVENTS.labels(stage="summarize")
    reported = 0.0
    while not stop.is_set():
        now = counter._value.get()
        with done.get_lock():
            done.value += int(now - reported)
        reported = now
        time.sleep(0.005)
    halt.set()
    thread.join()


def summarize_workers(overrides: dict[str, object], n: int, workers: int) -> float:
    """Events/s of ``workers`` summarize processes in one group, between 20 % and 80 % of the events done
    (their start and the group's rebalance as the second one joins are left out)."""
    ctx = multiprocessing.get_context("spawn")
    done, stop = ctx.Value("q", 0), ctx.Event()
    procs = [ctx.Process(target=_summarize_child, args=(overrides, done, stop)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    marks: dict[float, float] = {}
    while done.value < n and all(p.is_alive() for p in procs):
        for share in (0.2, 0.8):
            if share not in marks and done.value >= share * n:
                marks[share] = time.perf_counter()
        time.sleep(0.002)
    stop.set()
    for proc in procs:
        proc.join(60)
    if len(marks) < 2:
        raise RuntimeError("a summarize worker process died before the benchmark finished")
    return 0.6 * n / (marks[0.8] - marks[0.2])


def faust_take(bootstrap: str, topic: str, n: int) -> float | None:
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic, "BENCH_N": str(n)}
    done = subprocess.run([sys.executable, "-m", "load_tests.faust_take", "worker", "-l", "warn"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        words = line.split()
        if "FAUST_EVENTS_PER_S" in words:
            return float(words[words.index("FAUST_EVENTS_PER_S") + 1])
    return None


def _best_of(runs: int, step: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def breakdown(records: list[tuple[bytes, bytes]], settings_overrides: dict[str, object]) -> list[tuple[str, float]]:
    """Microseconds per event of each step of the summarize stage's hot path, in process (no Kafka), best of 3."""
    from driftline.streams.pipeline.windows import PartitionWindows, fixed_shape
    from driftline.streams.stages.label_join import LabelJoiner

    summarizer = PredictionSummarizer()
    values = [v for _, v in records]
    n = len(values)
    batches = range(0, n, 5000)
    decode = _best_of(3, lambda: [decode_prediction(v) for v in values])
    preds = [decode_prediction(v) for v in values]

    def route() -> None:
        windows = PartitionWindows(0, fixed_shape(60_000, 10_000), summarizer.new)
        for start in batches:
            chunk = preds[start : start + 5000]
            windows.assign_many([p.model_id for p in chunk], [p.model_version for p in chunk],
                                [p.ts_ms for p in chunk], list(range(start, start + len(chunk))))

    def summarise() -> None:
        for start in batches:
            summarizer.add(summarizer.new("bench", "1", 0), preds[start : start + 5000])

    def remember() -> None:
        joiner = LabelJoiner(load_settings(**settings_overrides), summarizer.new)
        joiner.parts[0] = joiner.new_partition(None)
        for start in batches:
            joiner.remember(0, preds[start : start + 5000])

    return [("decode + validate (msgspec typed decode)", decode / n * 1e6),
            ("event-time window routing (per batch)", _best_of(3, route) / n * 1e6),
            ("columns + WindowSummary.add_predictions", _best_of(3, summarise) / n * 1e6),
            ("label-join store (remember)", _best_of(3, remember) / n * 1e6)]


def run(bootstrap: str, home: str) -> str:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    overrides: dict[str, object] = {"kafka_bootstrap": bootstrap, "topic_prefix": prefix, "home": home,
                                    "consumer_group": f"bench-{prefix}", "idle_partition_seconds": 30}
    settings = load_settings(**overrides)
    topics.ensure_topics(settings)
    records = payloads(N_EVENTS, n_features=20)
    produce(bootstrap, settings.topic(topics.PREDICTIONS), records)
    bare_runs, our_runs = [], []
    for round_no in range(ROUNDS):  # interleaved: this machine's speed drifts by tens of percent
        bare_runs.append(bare_loop(bootstrap, settings.topic(topics.PREDICTIONS), N_EVENTS))
        our_runs.append(summarize_stage({**overrides, "consumer_group": f"bench-{prefix}{round_no}"}, N_EVENTS))
    bare, ours = statistics.median(bare_runs), statistics.median(our_runs)
    ratio = statistics.median(o / b for o, b in zip(our_runs, bare_runs, strict=True))
    with_reference = summarize_stage({**overrides, "consumer_group": f"bench-{prefix}ref"}, N_EVENTS,
                            reference_profile(records))
    two = summarize_workers({**overrides, "consumer_group": f"bench-{prefix}two"}, N_EVENTS, 2)
    faust_rate = faust_take(bootstrap, settings.topic(topics.PREDICTIONS), N_EVENTS)
    faust_text = f"{faust_rate:,.0f}" if faust_rate else "did not finish"
    steps = breakdown(records[:100_000], overrides)
    share_met, rate_met = ratio >= 0.5, ours >= 100_000
    return "\n".join([
        "## Summarize stage throughput (one worker, 20 numeric features per event)",
        "",
        f"{N_EVENTS:,} prediction events on a 6-partition topic of the local Kafka 4 broker (same machine, so the "
        f"broker shares its 2 cores). {ROUNDS} interleaved rounds of the bare loop and the summarize stage (a fresh "
        "consumer group each), medians; the share is the median of each round's ratio.",
        "",
        "| consumer | events/s (median) | rounds | share of bare loop |",
        "| --- | ---: | --- | ---: |",
        f"| bare confluent-kafka `consume(5000)` + `orjson.loads` | {bare:,.0f} | "
        f"{', '.join(f'{r:,.0f}' for r in bare_runs)} | 100 % |",
        f"| driftline summarize stage (validate, window, summarise, join store, emit, commit) | {ours:,.0f} | "
        f"{', '.join(f'{r:,.0f}' for r in our_runs)} | {100 * ratio:.0f} % |",
        f"| driftline summarize stage against a 50-bin reference profile (a model's steady state; the rows above: "
        f"no reference yet) | {with_reference:,.0f} | 1 | {100 * with_reference / bare:.0f} % |",
        f"| driftline summarize stage, 2 summarize worker processes in one group (steady state: 20-80 % of the "
        f"events) | {two:,.0f} | 1 | {100 * two / bare:.0f} % |",
        f"| faust agent, `stream.take(5000, within=1)` + the same validation | {faust_text} | 1 | "
        + (f"{100 * faust_rate / bare:.0f} % |" if faust_rate else "- |"),
        "",
        f"Targets: the summarize stage >= 50 % of the bare loop (**{'met' if share_met else 'not met'}**) and "
        f">= 100,000 events/s per worker (**{'met' if rate_met else 'not met'}**). faust's stream iteration is far "
        "from both, which decided the design: the summarize stage consumes confluent-kafka batches inside a faust "
        "service (faust keeps the worker's lifecycle). Scale-out: two summarize processes on this 2-core machine "
        f"(which also runs the broker) carry {two / ours:.1f}x one; partitions >= workers.",
        "",
        "Per-event cost of the summarize stage's steps, in process (no Kafka), 100,000 events, best of 3; in the "
        "live run the same steps cost more, the consumer's fetch threads and the broker taking the other core:",
        "",
        "| the summarize stage step | us per event |",
        "| --- | ---: |",
        *[f"| {name} | {us:.2f} |" for name, us in steps],
        f"| bare consume + `orjson.loads` (from the first row) | {1e6 / bare:.2f} |",
    ])
