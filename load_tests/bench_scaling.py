"""How the summarize and merge stages scale with the features per event and the models per worker (issue #15, item 1).

Target: the summarize stage's cost per feature-value (us per event / features per event) stays within 2x of the
20-feature, one-model case from 20 to 200 features (one model) and from 1 to 100 models (20 features each, the same
total traffic spread over them). Events: `load_tests.traffic.classifier_events` (half numeric, a quarter categorical,
a quarter boolean features, 5 segments, three class probabilities) at ``BENCH_SCALING_RATE`` events/s of event time
over all models, each model with a stored reference built from the first events (`bench_merge._reference`), so the
stage bins against it and folds ticks: a model's steady state. Measured three ways:

- in process: the stage itself, as `driftline worker` wires it, assigned every partition of a real topic
  (`_on_assign`), fed the events as confluent-kafka `Message`s (6 partitions, batches of ``batch_max_records``)
  through `_process`, `_checkpoint` every second as its loop runs it, and a last checkpoint after an idle advance
  that closes the last windows; its producer is a stub, so no Kafka is timed. Interleaved rounds (best of; ratios
  are medians of the rounds' ratios), then one pass per case with each step timed by wrapping the function the
  stage calls (`bench_merge.Clock`), to name the step that grows.
- live: one `driftline worker --stage summarize` process (`bench_pipeline.Proc` and `watch`) over the same events
  on a fresh topic prefix, events/s between 20 % and 80 % of them, and its RSS once it has summarised them all;
  the base case runs first and last in a round, its faster run counting.
- the merge stage per model window (`bench_merge`'s windows closed by the real `MergeStage._close_ready`) at 20 and
  200 features (15 + 5 and 150 + 50 numeric + categorical), and with 100 models: the same windows under 100 model
  ids, closed in turn, each model with its reference.

Sizes: ``BENCH_SCALING_EVENTS`` (live events per case, 100,000), ``BENCH_SCALING_INPROC_EVENTS`` (the first ones of
those, in process, 30,000: one whole window at the default rate), ``BENCH_SCALING_ROUNDS`` (in process, 3),
``BENCH_SCALING_LIVE_ROUNDS`` (1), ``BENCH_SCALING_RATE`` (500) and ``BENCH_SCALING_MERGE_WINDOWS`` (windows of a
one-model merge case, 8). About 10 minutes on 2 cores.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast
from unittest import mock

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException, Message, TopicPartition
from threadpoolctl import threadpool_limits

from driftline.detectors.summaries import WindowSummary
from driftline.streams import store
from driftline.streams.config.model_config import MonitoringConfig, ResolvedModelConfig, config_source
from driftline.streams.config.settings import Settings, load_settings
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.pipeline.decode import decode_prediction
from driftline.streams.pipeline.summarize import BuiltColumns, PredictionSummarizer
from driftline.streams.pipeline.ticks import TickSummarizer, tick_shape
from driftline.streams.pipeline.windows import PartitionWindows, window_shape
from driftline.streams.references import topic as references
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.references.wait import awaited_windows
from driftline.streams.stages import summarize_stage
from driftline.streams.stages.consumer import CHECKPOINT_INTERVAL_S, freeze_startup_heap
from load_tests import bench_merge
from load_tests.bench_pipeline import EVENTS as EVENTS_METRIC
from load_tests.bench_pipeline import LABEL_DELAY_S, START_MS, Bench, Died, Proc, watch
from load_tests.traffic import classifier_events, produce


def _env(name: str, default: int) -> int:
    return int(os.environ.get(f"BENCH_SCALING_{name}", default))


EVENTS, INPROC_EVENTS = _env("EVENTS", 100_000), _env("INPROC_EVENTS", 30_000)
ROUNDS, LIVE_ROUNDS, RATE = _env("ROUNDS", 3), _env("LIVE_ROUNDS", 1), _env("RATE", 500)
MERGE_WINDOWS = _env("MERGE_WINDOWS", 8)  # of one model; 100 models: each model's warm-up windows and one more
REF_EVENTS, SEGMENTS, TARGET = 5_000, 5, 2.0
DECODE, ROUTE = "decode + validate (`read_prediction`)", "window + tick routing (`PartitionWindows.assign_many`)"
ADD, TICK = "columns + summary add (`PredictionSummarizer.add`)", "tick fold (`TickSummarizer.add`)"
JOIN, FLUSH = "join store (`LabelJoiner.remember`)", "join-state changelog (`LabelJoiner.flush`)"
EMIT, OTHER = "summary bytes of closed windows and ticks (`_emit`, `_emit_tick`)", "other (batching, checkpoints)"
COLUMNS = "a tick's columns from its window's (`BuiltColumns.for_rows`)"
STEPS = (DECODE, ROUTE, ADD, COLUMNS, TICK, JOIN, FLUSH, EMIT)


@dataclass(frozen=True)
class Case:
    features: int
    models: int

    @property
    def name(self) -> str:
        return f"{self.features} features, {self.models} model{'s' if self.models > 1 else ''}"

    def shape(self) -> dict[str, int]:
        numeric, categorical = self.features // 2, self.features // 4
        return {"n_numeric": numeric, "n_categorical": categorical, "n_boolean": self.features - numeric - categorical}


BASE, WIDE, MANY = Case(20, 1), Case(200, 1), Case(20, 100)
CASES = [BASE, *(Case(f, 1) for f in (50, 100, 200)), Case(20, 10), MANY]


@dataclass
class Workload:
    case: Case
    records: list[tuple[bytes, bytes]]
    refs: list[Reference]  # one per model, in force from the first window


def _workload(case: Case, seed: int) -> Workload:
    records, _ = classifier_events(EVENTS, **case.shape(), n_segments=SEGMENTS, seed=seed, start_ms=START_MS,
                                   events_per_s=RATE, n_models=case.models, label_share=0.0)
    config = MonitoringConfig().resolve(bench_merge.MODEL, bench_merge.VERSION)
    ref = bench_merge._reference([decode_prediction(v) for _, v in records[:REF_EVENTS]], {}, config)
    models = [bench_merge.MODEL] if case.models == 1 else [f"{bench_merge.MODEL}-{i}" for i in range(case.models)]
    return Workload(case, records, [replace(ref, model_id=m) for m in models])


class _NoKafka:
    """The stage's producer: what it produces is serialised by the stage and dropped here, nothing delivered (so
    no offset becomes committable and the consumer is never asked to commit)."""

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


def _stage(settings: Settings, refs: list[Reference]) -> summarize_stage.SummarizeStage[WindowSummary]:
    """The summarize stage wired as `streams.worker` wires it, assigned every partition, its producer a stub."""
    book = ReferenceBook()
    for ref in refs:
        book.add(ref)
    resolve = config_source(settings)
    stage: summarize_stage.SummarizeStage[WindowSummary] = summarize_stage.SummarizeStage(
        settings, PredictionSummarizer(book.profile_for, resolve), threading.Event(), shape=window_shape(resolve),
        awaited=awaited_windows(book, resolve), ticks=(TickSummarizer(book.profile_for, resolve), tick_shape(resolve)))
    stage.producer = cast(Any, _NoKafka())
    assigned = [TopicPartition(topic, p) for topic in (stage.source, stage.labels)
                for p in range(settings.topic_partitions)]
    for attempt in range(30):
        try:
            stage._on_assign(stage.consumer, assigned)
            return stage
        except KafkaException as exc:  # a broker just started: its group coordinator is not there yet
            if attempt == 29 or exc.args[0].code() != KafkaError.NOT_COORDINATOR:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def _consumed(settings: Settings, work: Workload) -> list[Message]:
    """The in-process events as the consumer returns them: spread evenly over the partitions, offsets per partition."""
    n, source, produced = settings.topic_partitions, settings.topic(topics.PREDICTIONS), time.time()
    return [Message(topic=source, partition=i % n, offset=i // n, key=key, value=value,
                    timestamp=(TIMESTAMP_CREATE_TIME, int(produced * 1000)))
            for i, (key, value) in enumerate(work.records[:INPROC_EVENTS])]


def _instrument(stage: summarize_stage.SummarizeStage[WindowSummary], clock: bench_merge.Clock) -> list[Any]:
    """Time each step by wrapping what the stage calls; returns the patches of module and class functions."""
    assert stage.ticks is not None
    stage.summarizer.add = clock.wrap(ADD, stage.summarizer.add, 1)  # type: ignore[attr-defined]
    stage.ticks[0].add = clock.wrap(TICK, stage.ticks[0].add)  # type: ignore[method-assign]
    stage.joiner.remember = clock.wrap(JOIN, stage.joiner.remember)  # type: ignore[method-assign]
    stage.joiner.flush = clock.wrap(FLUSH, stage.joiner.flush)  # type: ignore[method-assign]
    stage._emit = clock.wrap(EMIT, stage._emit)  # type: ignore[method-assign]
    stage._emit_tick = clock.wrap(EMIT, stage._emit_tick)  # type: ignore[method-assign]
    return [mock.patch.object(summarize_stage, "read_prediction", clock.wrap(DECODE, summarize_stage.read_prediction)),
            mock.patch.object(BuiltColumns, "for_rows", clock.wrap(COLUMNS, BuiltColumns.for_rows)),
            mock.patch.object(PartitionWindows, "assign_many", clock.wrap(ROUTE, PartitionWindows.assign_many))]


def _pass(settings: Settings, work: Workload, consumed: list[Message], clock: bench_merge.Clock | None = None
          ) -> float:
    """Microseconds per event of the stage over ``consumed``, from the first batch to the last window closed."""
    stage = _stage(settings, work.refs)
    patches = _instrument(stage, clock) if clock is not None else []
    for patch in patches:
        patch.start()
    gc.collect()  # the previous pass's garbage is not this one's cost
    try:
        start = last = time.perf_counter()
        for i in range(0, len(consumed), settings.batch_max_records):
            stage._process(consumed[i : i + settings.batch_max_records])
            if time.perf_counter() - last >= CHECKPOINT_INTERVAL_S:
                stage._checkpoint()
                last = time.perf_counter()
        end_ms = START_MS + len(consumed) * 1000 // RATE + 3_600_000
        for state in stage.parts.values():  # the idle advance (`_advance_idle`) that closes the last windows
            state.windows.advance_to(end_ms)
            if state.ticks is not None:
                state.ticks.advance_to(end_ms)
        stage._checkpoint()
        elapsed = time.perf_counter() - start
    finally:
        for patch in patches:
            patch.stop()
        stage.consumer.close()
    return elapsed / len(consumed) * 1e6


def _live(bench: Bench, work: Workload) -> tuple[float, float] | None:
    """Events/s of one `driftline worker --stage summarize` over the workload, and its RSS (MiB) once done."""
    prefix = f"sc{uuid.uuid4().hex[:8]}."
    env = bench.env(prefix, idle_partition_seconds=1)
    settings = load_settings(**{k[10:].lower(): v for k, v in env.items() if k.startswith("DRIFTLINE_")})
    topics.ensure_topics(settings)
    produce(bench.bootstrap, settings.topic(topics.PREDICTIONS), work.records)
    producer = kafka_io.producer(settings, **{"message.max.bytes": 8_388_608})
    for ref in work.refs:  # before the worker starts: it reads the references topic before its first batch
        references.publish(settings, ref, producer)
    producer.flush(60)
    proc, n = Proc(env, "summarize", bench.home / f"{prefix}log"), len(work.records)
    seen: list[bool] = []

    def drained() -> bool:  # one more sample once the counter is at n: `watch` needs a sample there
        seen.append(proc.metric(EVENTS_METRIC) >= n)
        return len(seen) > 1 and seen[-2]

    try:
        done = watch([proc], drained, n, None)
        return done.rate, proc.rss_mib()
    except Died as exc:
        bench.failures.append(f"{work.case.name}: {exc} (log: {bench.home / prefix}log)")
        return None
    finally:
        proc.stop()
        bench.drop(prefix)


def _merge(case: Case) -> tuple[float, dict[str, float]]:
    """Median ms per model window closed by `MergeStage._close_ready` (each model's warm-up windows left out), and
    the mean ms per window of each step `bench_merge` times."""
    n_windows = MERGE_WINDOWS if case.models == 1 else bench_merge.WARMUP + 1  # 100 models: 100 windows timed
    preds, truths, labels, size_ms = bench_merge._traffic(case.features * 3 // 4, case.features // 4, n_windows)
    config = MonitoringConfig().resolve(bench_merge.MODEL, bench_merge.VERSION)

    def config_for(_model: str, _version: str) -> ResolvedModelConfig:
        return config

    ref = bench_merge._reference(preds[: bench_merge.REF_EVENTS], truths, config)
    book = ReferenceBook()
    book.add(ref)
    windows = bench_merge._windows(preds[bench_merge.REF_EVENTS :], labels, book, size_ms, config_for)[:n_windows]
    del preds, truths, labels
    names = [bench_merge.MODEL] if case.models == 1 else [f"{bench_merge.MODEL}-{i}" for i in range(case.models)]
    for name in names:
        book.add(replace(ref, model_id=name))
    # every model's window of a minute in turn: the same summaries under each model id
    closes = [((name, version, start), spec, [(replace(h, model_id=name), b) for h, b in parts],
               [(replace(h, model_id=name), b) for h, b in label_parts])
              for (_, version, start), spec, parts, label_parts in windows for name in names]
    clock = bench_merge.Clock()
    with tempfile.TemporaryDirectory() as home, store.opened(f"chdb://{home}/ch") as client, threadpool_limits(1):
        bench_merge._close_all(clock, client, book, config_for, closes)
    timed = clock.windows[bench_merge.WARMUP * case.models :]
    steps = {name: statistics.fmean(w.get(name, 0.0) for w in timed) for name in set().union(*timed)}
    return statistics.median(w["total"] for w in timed), steps


def _ratio(runs: dict[Case, list[float]], case: Case) -> float:
    """Median over the rounds of the case's us per feature-value over the base case's in the same round (NaN where
    a live run failed)."""
    ratios = [c / case.features / (b / BASE.features) for c, b in zip(runs[case], runs[BASE], strict=True)]
    finite = [r for r in ratios if math.isfinite(r)]
    return statistics.median(finite) if finite else math.nan


def _verdict(ratios: list[float]) -> str:
    if any(math.isnan(r) for r in ratios):
        return "**not met**: a run failed"
    worst = max(ratios)
    return "**met**" if worst <= TARGET else f"**not met**: {worst:.1f}x, {100 * (worst / TARGET - 1):.0f} % over"


def _grows(steps: dict[Case, dict[str, float]], case: Case) -> str:
    """The three steps whose cost per feature-value grew most against the base case, with their figures."""
    def per_fv(c: Case, name: str) -> float:
        return steps[c].get(name, 0.0) / c.features

    top = sorted([*STEPS, OTHER], key=lambda s: per_fv(BASE, s) - per_fv(case, s))[:3]
    return "; ".join(f"{name} {per_fv(BASE, name):.2f} -> {per_fv(case, name):.2f}" for name in top)


def _merge_growth(merge: dict[Case, tuple[float, dict[str, float]]], case: Case) -> str:
    """The leaf step (not a total, nor a step that holds others) that grew most per model window from the base."""
    mine, base = merge[case][1], merge[BASE][1]
    leaves = [s for s in mine if s != "total" and "(total)" not in s and not any(o.startswith(f"{s}: ") for o in mine)]
    top = max(leaves, key=lambda s: mine[s] - base.get(s, 0.0))
    return f"{top} ({base.get(top, 0.0):.2f} -> {mine[top]:.2f} ms per window)"


def run(bootstrap: str, home: str) -> str:
    began = time.monotonic()
    freeze_startup_heap()  # as the worker does: the libraries' import-time objects out of the collector's scans
    print("  merge stage: 20 and 200 features, 100 models", flush=True)
    merge = {case: _merge(case) for case in (BASE, WIDE, MANY)}
    work = [_workload(case, seed) for seed, case in enumerate(CASES)]
    prefix = f"sc{uuid.uuid4().hex[:6]}."
    settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, home=home, consumer_group=f"g-{prefix}",
                             idle_partition_seconds=3600, max_label_delay_seconds=LABEL_DELAY_S)
    topics.ensure_topics(settings)
    consumed = {w.case: _consumed(settings, w) for w in work}
    freeze_startup_heap()  # the workloads are the benchmark's, not the stage's: kept out of its collections
    inproc: dict[Case, list[float]] = defaultdict(list)
    for round_no in range(ROUNDS):  # interleaved: this machine's speed drifts by tens of percent
        print(f"  in process: round {round_no + 1}", flush=True)
        for w in work:
            inproc[w.case].append(_pass(settings, w, consumed[w.case]))
    steps: dict[Case, dict[str, float]] = {}
    calls: dict[Case, list[int]] = {}  # events per `PredictionSummarizer.add` call
    for w in work:
        clock = bench_merge.Clock()
        total = _pass(settings, w, consumed[w.case], clock)
        steps[w.case] = {name: ms * 1e3 / len(consumed[w.case]) for name, ms in clock.now.items()}
        steps[w.case][OTHER] = total - sum(steps[w.case].values())
        calls[w.case] = clock.rows[ADD]
    del consumed
    bench = Bench(bootstrap, Path(home))
    live: dict[Case, list[float]] = defaultdict(list)  # us per event
    rss: dict[Case, float] = {}
    for _ in range(LIVE_ROUNDS):
        for w in [*work, work[0]]:  # the base case first and last: this machine's speed drifts within a round
            print(f"  live: {w.case.name}", flush=True)
            got = _live(bench, w)
            live[w.case].append(1e6 / got[0] if got else math.nan)
            if got:
                rss[w.case] = got[1]
        base = [u for u in live[BASE][-2:] if math.isfinite(u)]
        live[BASE][-2:] = [min(base, default=math.nan)]  # its faster run: the ratios err on the high side
    gc.unfreeze()
    return _report(inproc, steps, calls, live, rss, merge, bench.failures, time.monotonic() - began)


def _report(inproc: dict[Case, list[float]], steps: dict[Case, dict[str, float]], calls: dict[Case, list[int]],
            live: dict[Case, list[float]], rss: dict[Case, float], merge: dict[Case, tuple[float, dict[str, float]]],
            failures: list[str], seconds: float) -> str:
    rows, notes = [], []
    for case in CASES:
        best, live_us = min(inproc[case]), min((u for u in live[case] if math.isfinite(u)), default=math.nan)
        ratios = [_ratio(inproc, case), _ratio(live, case)]
        rows.append(f"| {case.name} | {RATE * 60 // case.models:,} | {best:.1f} | {best / case.features:.3f} | "
                    f"{ratios[0]:.2f}x | {1e6 / live_us:,.0f} | {live_us / case.features:.3f} | {ratios[1]:.2f}x | "
                    f"{_verdict(ratios) if case != BASE else 'base'} |")
        if case != BASE and not max(ratios) <= TARGET:
            notes.append(f"- {case.name}: the steps that grew most, us per feature-value: {_grows(steps, case)}.")

    def per_call(c: Case) -> str:
        n = len(calls[c])
        return f"{n:,} calls of {sum(calls[c]) / n:,.0f} events, {steps[c][ADD] * sum(calls[c]) / n:,.0f} us each"

    step_rows = [f"| {name} | " + " | ".join(f"{steps[c].get(name, 0.0):.2f}" for c in CASES) + " |"
                 for name in (*STEPS, OTHER)]
    by_models = [c for c in CASES if c.features == BASE.features and c in rss]
    extra = [f"{(rss[c] - rss[BASE]) / (c.models - 1):.2f}" for c in by_models if c.models > 1 and BASE in rss]
    base_ms = merge[BASE][0]
    merge_rows = [f"| {c.name} | {merge[c][0]:.2f} | {merge[c][0] / c.features:.3f} | "
                  f"{merge[c][0] / c.features / (base_ms / BASE.features):.2f}x | {merge[c][0] / base_ms:.2f}x |"
                  for c in (BASE, WIDE, MANY)]
    return "\n".join([
        "## Scaling: features per event and models per worker",
        "",
        f"Classifier-shaped events (`classifier_events`: half numeric, a quarter categorical, a quarter boolean "
        f"features, {SEGMENTS} segments, three class probabilities) at {RATE} events/s of event time over all "
        f"models (100 models: {RATE / 100:g} events/s each), one-minute windows, 5 s ticks; each model has a "
        f"stored reference (from the first {REF_EVENTS:,} events) in force. **In process**: the summarize stage "
        "wired as `driftline worker` wires it and assigned 6 partitions of a real topic, fed the events as "
        "confluent-kafka `Message`s (batches of 5,000) through `SummarizeStage._process`, `_checkpoint` every "
        "second and once more after an idle advance that closes the last windows; its producer is a stub. "
        f"{INPROC_EVENTS:,} events per case, {ROUNDS} interleaved rounds, best of (ratio: median of the rounds' "
        "ratios). **Live**: one `driftline worker --stage summarize` process on a fresh topic prefix of the local "
        f"broker (same 2-core machine) over {EVENTS:,} events, events/s from its /metrics between 20 % and 80 % of "
        f"them, {LIVE_ROUNDS} round(s), the base case first and last in each (its faster run counts). Cost per "
        "feature-value = us per event / features per event; the ratio is against "
        "the 20-feature, one-model case; target <= 2x.",
        "",
        "| case | events per model window | in process us/event | us per feature-value | ratio | live events/s | "
        "live us per feature-value | ratio | target <= 2x |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        *(notes or ["Every case is within the target."]),
        f"- `PredictionSummarizer.add` (one call per model window and partition in a batch): {per_call(BASE)} "
        f"with one model, {per_call(MANY)} with 100.",
        "",
        "In-process us per event by step (one more pass per case, each step timed by wrapping the function the stage "
        "calls; other: the rest of `_process` and `_checkpoint`):",
        "",
        "| step | " + " | ".join(c.name for c in CASES) + " |",
        "| --- |" + " ---: |" * len(CASES),
        *step_rows,
        "",
        f"Memory: RSS of the live summarize worker once it had summarised its {EVENTS:,} events (20 features; its "
        "join store then holds every prediction of the run), by models: "
        + (", ".join(f"{c.models}: {rss[c]:,.0f} MiB" for c in by_models) or "-")
        + (f"; {' and '.join(extra)} MiB per model beyond the first." if extra else "."),
        "",
        f"Merge stage per model window (`bench_merge`'s windows: {bench_merge.PARTITIONS} partition summaries of "
        f"{bench_merge.EVENTS} events and their label summaries, closed by the real `MergeStage._close_ready` into "
        f"embedded chDB, default detectors, one BLAS thread; 15 + 5 and 150 + 50 numeric + categorical features), "
        f"{MERGE_WINDOWS} windows of one model, each model's first {bench_merge.WARMUP} left out; 100 models: the "
        f"same summaries under 100 model ids, each with its reference, their windows closed in turn, "
        f"{bench_merge.WARMUP + 1} per model:",
        "",
        "| case | ms per model window (median) | ms per feature | per feature vs 20 features | "
        "vs 20 features, 1 model |",
        "| --- | ---: | ---: | ---: | ---: |",
        *merge_rows,
        "",
        f"Targets: per feature at 200 features <= 2x: {_verdict([merge[WIDE][0] / WIDE.features / (base_ms / 20)])}; "
        f"per model window with 100 models <= 2x of one model: {_verdict([merge[MANY][0] / base_ms])}. Grew most: "
        f"200 features {_merge_growth(merge, WIDE)}; 100 models {_merge_growth(merge, MANY)}.",
        *[f"- failed: {failure}" for failure in failures],
        "",
        f"_The whole benchmark took {seconds / 60:.1f} min._",
    ])
