"""Memory of `driftline worker` processes over a long backlog (issue #15: "RSS of each worker stays flat").

Produces BENCH_MEMORY_EVENTS (default 10,000,000) classifier-shaped predictions of workload A of
`load_tests.bench_pipeline` (8 numeric, 1 categorical, 1 boolean feature, 2 segments) at
BENCH_MEMORY_RATE (default 100) events/s of event time, with a label for 50 % of them 30 s of event time
later, then runs real `driftline worker` processes over the whole backlog (bench_pipeline's `Bench`/`Proc`:
fresh topic prefix, stored reference, DRIFTLINE_MAX_LABEL_DELAY_SECONDS=600): (a) one whole worker (all
stages, chDB), (b) two summarize workers + one merge worker over BENCH_MEMORY_SPLIT_EVENTS (default: the
same; 0 skips it). Events are byte templates of a 50,000-event pool of `classifier_events` with the
prediction id and the event time filled in, so that producing 15 M records takes minutes, not an hour.

Every BENCH_MEMORY_SAMPLE_SECONDS (default 1) it reads each process's VmRSS (/proc) and the summarize
processes' /metrics (events, labels joined and unmatched, open windows), and reports the curve, the
least-squares slope of each process's RSS against the events counter over the second half and the last
quarter, and the peak, against bench_pipeline's FLAT_MIB. The join store's bound is
computed (rate x TTL, below the per-partition entry cap) and measured in (c): the summarize stage built as
the worker builds it, in process, over BENCH_MEMORY_TRACE_EVENTS (default 1,000,000; 0 skips) with
`tracemalloc` on, reading its join stores' sizes directly and naming the allocation sites that grow between
a snapshot at half and one at the end (bytes per million events). BENCH_MEMORY_TIMEOUT (default 7200 s)
bounds each run.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from driftline.streams import metrics
from driftline.streams.config.model_config import config_source
from driftline.streams.config.settings import Settings, load_settings
from driftline.streams.kafka import topics
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.pipeline.ticks import TickSummarizer, tick_shape
from driftline.streams.pipeline.windows import window_shape
from driftline.streams.references.book import ReferenceBook
from driftline.streams.references.topic import ReferenceFollower
from driftline.streams.references.wait import awaited_windows
from driftline.streams.stages.consumer import freeze_startup_heap
from driftline.streams.stages.summarize_stage import SummarizeStage
from load_tests.bench_pipeline import (
    EVENTS,
    FLAT_MIB,
    LABEL_DELAY_S,
    LABELS,
    SHAPES,
    START_MS,
    Bench,
    Died,
    Proc,
    Traffic,
    _met,
)
from load_tests.traffic import classifier_events, produce

N_EVENTS = int(os.environ.get("BENCH_MEMORY_EVENTS", "10000000"))
SPLIT_EVENTS = int(os.environ.get("BENCH_MEMORY_SPLIT_EVENTS", str(N_EVENTS)))
TRACE_EVENTS = int(os.environ.get("BENCH_MEMORY_TRACE_EVENTS", "1000000"))
RATE = float(os.environ.get("BENCH_MEMORY_RATE", "100"))  # events per second of event time
SAMPLE_S = float(os.environ.get("BENCH_MEMORY_SAMPLE_SECONDS", "1"))
TIMEOUT_S = float(os.environ.get("BENCH_MEMORY_TIMEOUT", "7200"))
POOL, CHUNK, ROWS, SITES = 50_000, 500_000, 16, 8
MIB = 1_048_576


def _template(value: bytes) -> bytes:
    """An event's JSON with its prediction id and event time left open (``%s``, ``%d``)."""
    return (orjson.dumps({**orjson.loads(value), "prediction_id": "@", "ts": 0}).replace(b"%", b"%%")
            .replace(b'"@"', b'"%s"', 1).replace(b'"ts":0', b'"ts":%d', 1))


@dataclass
class Pool:
    """Byte templates of classifier events: a label template (or None) per prediction template."""
    predictions: list[bytes]
    labels: list[bytes | None]

    @classmethod
    def make(cls, reference: Path) -> Pool:
        """The pool, and the stored reference's .jsonl (its first 10,000 events with their labels) at ``reference``."""
        preds, labels = classifier_events(POOL, seed=ord("A"), start_ms=START_MS, events_per_s=RATE,
                                          **SHAPES["A"], **LABELS)  # type: ignore[arg-type]
        by_key = dict(labels)
        reference.write_bytes(b"".join(orjson.dumps({**orjson.loads(v), **(
            {"label": orjson.loads(by_key[k])["label"]} if k in by_key else {})}) + b"\n" for k, v in preds[:10_000]))
        return cls([_template(v) for _, v in preds], [_template(by_key[k]) if k in by_key else None for k, _ in preds])

    def fill(self, bootstrap: str, settings: Settings, n: int) -> None:
        """Produce ``n`` predictions (ids ``m-<i>``) and their labels to the settings' topics, in chunks."""
        delay = int(LABELS["label_delay_ms"])
        for start in range(0, n, CHUNK):
            ids = [(b"m-%d" % i, START_MS + int(i * 1000 / RATE)) for i in range(start, min(n, start + CHUNK))]
            produce(bootstrap, settings.topic(topics.PREDICTIONS),
                    [(pid, self.predictions[i % POOL] % (pid, ts)) for i, (pid, ts) in enumerate(ids, start)])
            produce(bootstrap, settings.topic(topics.LABELS),
                    [(pid, t % (pid, ts + delay)) for i, (pid, ts) in enumerate(ids, start)
                     if (t := self.labels[i % POOL]) is not None])


def _filled(bench: Bench, prefix: str, n: int) -> tuple[dict[str, str], Settings]:
    """A fresh prefix's worker environment, its topics created and filled, the stored reference published."""
    env = bench.env(prefix, idle_partition_seconds=1)
    reference = bench.home / f"{prefix}reference.jsonl"
    pool = Pool.make(reference)
    bench.prepare(env, Traffic("A", [], [], int(n / RATE / 60), reference), False, START_MS)
    settings = _settings(env)
    pool.fill(bench.bootstrap, settings, n)
    return env, settings


def _own_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:"))


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(**{k[10:].lower(): v for k, v in env.items() if k.startswith("DRIFTLINE_")})


@dataclass
class Curve:
    what: str
    n: int
    stages: list[str]
    samples: list[tuple[float, float, list[float], float, float, float]]  # s, events, RSS per process, joined,
    # unmatched, open windows
    seconds: float

    def slope(self, process: int, share: float) -> float:
        last = next((i for i, s in enumerate(self.samples) if s[1] >= self.n), len(self.samples) - 1)
        part = [s for s in self.samples[: last + 1] if s[1] >= (1 - share) * self.n]
        if len(part) < 3:
            return float("nan")
        return float(np.polyfit([s[1] / 1e6 for s in part], [s[2][process] for s in part], 1)[0])


def deploy(bench: Bench, what: str, stages: tuple[str, ...], n: int) -> Curve:
    """A fresh prefix with ``n`` events and their labels; the processes run over them, sampled until all are in."""
    prefix = f"mem{uuid.uuid4().hex[:8]}."
    env, _ = _filled(bench, prefix, n)
    procs = [Proc(env, stage, bench.home / f"{prefix}log") for stage in stages]
    summarizers = [p for p in procs if p.stage in ("summarize", "all")]
    samples: list[tuple[float, float, list[float], float, float, float]] = []
    start = time.monotonic()
    try:
        while not samples or samples[-1][1] < n:
            now = time.monotonic() - start
            if now > TIMEOUT_S:
                raise Died(f"{what}: {samples[-1][1]:,.0f} of {n:,} events after {TIMEOUT_S:.0f} s")
            if dead := [p.stage for p in procs if p.proc.poll() is not None]:
                raise Died(f"{what}: {', '.join(dead)} process exited at {now:.0f} s (log: {prefix}log)")
            samples.append((now, sum(p.metric(EVENTS) for p in summarizers), [p.rss_mib() for p in procs],
                            sum(p.metric("driftline_labels_joined_total") for p in procs),
                            sum(p.metric("driftline_labels_unmatched_total") for p in procs),
                            sum(p.metric("driftline_open_windows") for p in procs)))
            time.sleep(SAMPLE_S)
        return Curve(what, n, list(stages), samples, samples[-1][0])
    finally:
        for proc in procs:
            proc.stop()
        bench.drop(prefix)


def curve_section(curve: Curve) -> list[str]:
    names = [f"{stage} #{i + 1}" if curve.stages.count(stage) > 1 else stage
             for i, stage in enumerate(curve.stages)]
    last = len(curve.samples) - 1
    picked = sorted({next(i for i, s in enumerate(curve.samples) if s[1] >= curve.n * k / (ROWS - 1) or i == last)
                     for k in range(ROWS)})
    rows = []
    for t, events, rss, joined, unmatched, windows in (curve.samples[i] for i in picked):
        rows.append(f"| {events:,.0f} | {t:,.0f} | " + " | ".join(f"{r:,.0f}" for r in rss)
                    + f" | {joined:,.0f} | {unmatched:,.0f} | {windows:,.0f} |")
    lines = [f"### {curve.what}: {curve.n:,} events in {curve.seconds:,.0f} s "
             f"({curve.n / curve.seconds:,.0f} events/s)", "",
             "| events | s | " + " | ".join(f"RSS {n} (MiB)" for n in names)
             + " | labels joined | labels unmatched | open windows |",
             "| ---: | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: |", *rows, "",
             "| process | slope, 2nd half (MiB per M events) | slope, last quarter | peak RSS (MiB) | flat |",
             "| --- | ---: | ---: | ---: | --- |"]
    for i, name in enumerate(names):
        half, quarter = curve.slope(i, 0.5), curve.slope(i, 0.25)
        worst = max(abs(half), abs(quarter))
        verdict = _met(worst <= FLAT_MIB) + ("" if worst <= FLAT_MIB else f" (by {worst - FLAT_MIB:,.1f})")
        lines.append(f"| {name} | {half:+,.1f} | {quarter:+,.1f} | {max(s[2][i] for s in curve.samples):,.0f} | "
                     f"{verdict} |")
    return lines


def traced(bench: Bench, n: int) -> list[str]:
    """The worker's summarize stage in process with tracemalloc: join store sizes and the sites that grow."""
    prefix = f"mtr{uuid.uuid4().hex[:8]}."
    _, settings = _filled(bench, prefix, n)
    resolve, book, halt = config_source(settings), ReferenceBook(), threading.Event()
    freeze_startup_heap()
    stage = SummarizeStage(settings, PredictionSummarizer(book.profile_for, resolve), halt,  # type: ignore[arg-type]
                           ReferenceFollower(settings, book), shape=window_shape(resolve),
                           awaited=awaited_windows(book, resolve),
                           ticks=(TickSummarizer(book.profile_for, resolve), tick_shape(resolve)))
    counter = metrics.EVENTS.labels(stage="summarize")
    before = counter._value.get()
    tracemalloc.start()
    thread = threading.Thread(target=stage.run)
    thread.start()
    rows: list[str] = []
    snaps: list[tuple[float, float, tracemalloc.Snapshot]] = []
    marks = [n * k / 10 for k in range(1, 11)]
    try:
        while marks:
            done = counter._value.get() - before
            if not thread.is_alive():
                raise Died(f"the in-process summarize stage stopped after {done:,.0f} events")
            if done < marks[0]:
                time.sleep(0.2)
                continue
            marks.pop(0)
            sizes = [len(part.store.entries) for part in list(stage.joiner.parts.values())]
            puts = sum(len(part.puts) for part in list(stage.joiner.parts.values()))
            rss = _own_rss_mib()
            rows.append(f"| {done:,.0f} | {sum(sizes):,} | {max(sizes, default=0):,} | {puts:,} | "
                        f"{tracemalloc.get_traced_memory()[0] / MIB:,.1f} | {rss:,.0f} |")
            if len(marks) in (5, 0):
                gc.collect()
                snaps.append((done, rss, tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)])))
    finally:
        halt.set()
        thread.join(60)
        tracemalloc.stop()
        bench.drop(prefix)
    (e0, rss0, s0), (e1, rss1, s1) = snaps
    per_m = 1e6 / (e1 - e0)
    diff = sorted(s1.compare_to(s0, "lineno"), key=lambda d: -d.size_diff)[:SITES]
    root = str(Path(__file__).resolve().parent.parent)
    total = sum(d.size_diff for d in s1.compare_to(s0, "filename"))
    return ["", f"### The summarize stage in process over {n:,} events, tracemalloc on", "",
            "The worker's summarize stage (`SummarizeStage` built as `driftline worker` builds it: reference book "
            "and follower, model config, ticks) on a thread of this process, over a fresh prefix filled as above. "
            "Join store sizes are read from the stage's `LabelJoiner` (6 partitions); *pending puts*: predictions "
            "remembered since the last checkpoint (the changelog's next records); RSS: this whole process.", "",
            "| events | join store entries | largest partition | pending puts | traced Python heap (MiB) | RSS (MiB) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |", *rows, "",
            f"Between {e0:,.0f} and {e1:,.0f} events (after `gc.collect()`): traced heap {total / MIB * per_m:+,.1f} "
            f"MiB per million events, RSS {(rss1 - rss0) * per_m:+,.1f} MiB per million events. Sites that grew "
            "most:", "", "| allocation site | MiB per M events | blocks per M events |", "| --- | ---: | ---: |",
            *[f"| `{str(d.traceback[0].filename).replace(root, '')}:{d.traceback[0].lineno}` | "
              f"{d.size_diff / MIB * per_m:+,.2f} | {d.count_diff * per_m:+,.0f} |" for d in diff]]


def run(bootstrap: str, home: str) -> str:
    bench = Bench(bootstrap, Path(home))
    plan = [("whole `driftline worker` (all stages, chDB)", ("all",), N_EVENTS),
            ("two summarize workers + one merge worker", ("summarize", "summarize", "merge"), SPLIT_EVENTS)]
    out = ["## Memory over a long backlog", "",
           f"Classifier-shaped events of workload A (8 numeric, 1 categorical, 1 boolean feature, 2 segments) at "
           f"{RATE:,.0f} events/s of event time, 50 % labelled 30 s of event time later, produced before the "
           f"processes start; DRIFTLINE_MAX_LABEL_DELAY_SECONDS={LABEL_DELAY_S}, so the join store holds at most "
           f"{RATE * LABEL_DELAY_S:,.0f} predictions (all partitions; the per-partition cap, "
           f"{load_settings().max_join_entries:,}, is never reached) and reaches that bound after "
           f"{RATE * LABEL_DELAY_S:,.0f} events ({LABEL_DELAY_S} s of event time); with half the labels joined "
           f"after 30 s it holds about {RATE * (LABEL_DELAY_S + 30) / 2:,.0f}. RSS: VmRSS of each process every "
           f"{SAMPLE_S:g} s with the summarize processes' `{EVENTS}`; slopes are least-squares fits against that "
           f"counter; flat: |slope| <= {FLAT_MIB:g} MiB per million events over the second half and the last "
           "quarter."]
    for what, stages, n in plan:
        if n > 0:
            print(f"  memory: {what}, {n:,} events", flush=True)
            try:
                out += ["", *curve_section(deploy(bench, what, stages, n))]
            except Died as exc:
                out += ["", f"### {what}: failed: {exc}"]
    if TRACE_EVENTS > 0:
        print(f"  memory: summarize stage in process, {TRACE_EVENTS:,} events", flush=True)
        try:
            out += traced(bench, TRACE_EVENTS)
        except Died as exc:
            out += ["", f"In-process run failed: {exc}"]
    return "\n".join(out)
