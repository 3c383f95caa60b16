"""The merge stage's sequential side: merge each model's ticks, feed its sequential detectors, write the alarms.

Rules:

1. **Close.** A tick (``streams.pipeline.ticks``) closes once every input partition's watermark has passed its
   end plus its lateness (`WindowSpec.closed_by`, the rule of the windows, with the tick's spec); ticks close
   before the windows that the same watermark closes, and a tick part for a tick already closed (a replay
   duplicate) is dropped. A model version's ticks are fed to its detector in tick order.
2. **Detect.** Each model version with a reference in force gets a `detectors.sequential.TickChangeDetector`
   on the reference's tick streams (numeric means, the score, category shares), with the knobs of its
   configuration and the per-tick false-alarm rate of its false-alarm budget (`sequential_kwargs`). A new
   reference or configuration version starts a new detector (its warm-up ticks included). Ticks made
   against another profile than the reference's are skipped.
3. **Alarm.** An alarm is a row of ``driftline.alarms`` (tick, the change-point estimate, statistic,
   threshold) and, at once, a findings record of the window holding the tick (source ``ticks``, from the
   window's start to the tick's end, revision = alarms so far in that window, all of them listed), which the
   policy engine's ``sequential`` policy turns into an alert dated at the tick's end. The change-point
   estimate is the start of the tick the detector dates the change to, counted back in ticks of
   ``tick_seconds`` (exact unless ticks without traffic lie in between).
4. **Window rows.** When the window closes, its rows gain one judged row per (method, stream): the largest
   chart statistic of the window's ticks, the threshold, breached when the stream alarmed in the window, so
   windows without alarms are the healthy evidence that resolves a sequential incident.
5. **Labels.** A label summary (labels joined on one input partition for one prediction window) adds its
   labelled and mispredicted counts to the next tick the model version's detector is fed: the error-rate
   stream counts outcomes as they are learnt, whatever the prediction's own tick, so it is a stream in
   time like the others and shares their budget. Each (prediction window, input partition) is counted
   from the label offset it reached on, so a replayed label summary is not counted twice.
6. **State.** A model version's detector, the last tick fed and its open windows' statistics are written to
   the compacted ``<prefix>tick-state`` topic (partition = the summaries partition) before the merge stage
   commits, and read back on assignment. A tick no later than the last one fed is skipped, so a replay from
   the committed offset neither loses nor feeds a tick twice: the statistic after a SIGKILL equals an
   uninterrupted run's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from driftline.detectors.findings import Finding
from driftline.detectors.sequential import BUDGETED, ERROR_RATE, TickChangeDetector, TickReference
from driftline.errors import InvalidRecord
from driftline.streams import metrics, store, store_retry
from driftline.streams.actions.state_log import read_partitions
from driftline.streams.config.model_config import ResolvedModelConfig
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import refusals, topics
from driftline.streams.kafka.kafka_io import Outbox
from driftline.streams.pipeline import internal
from driftline.streams.pipeline.envelope import LabelHeader, TickHeader
from driftline.streams.pipeline.evaluate import sequential_kwargs
from driftline.streams.pipeline.rows import to_rows
from driftline.streams.pipeline.ticks import merge_ticks
from driftline.streams.pipeline.windows import WindowKey, WindowSpec, closing
from driftline.streams.references.book import ReferenceBook
from driftline.streams.stages.findings_publisher import FindingsPublisher

log = logging.getLogger("driftline.ticks")
CLOSED_MEMORY_TICKS = 256
LABEL_MARKS = 1024  # (prediction window, input partition) label offsets kept per model version
SEP = "\x1f"


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(slots=True)
class _PendingTick:
    first_seen_offset: int
    spec: WindowSpec
    parts: dict[int, tuple[TickHeader, bytes]] = field(default_factory=dict)


@dataclass(slots=True)
class _Watch:
    """One model version's sequential detection and what its open windows have seen of it."""

    partition: int
    reference_id: str
    config_version: str
    window_ms: int
    tick_ms: int
    detector: TickChangeDetector
    last_tick_ms: int | None = None
    # window start -> "method<SEP>stream" -> [largest statistic, alarms, ticks]
    windows: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    # window start -> the alarms so far (windows rows, as `to_rows` makes them, JSON-safe)
    alarms: dict[int, list[list[Any]]] = field(default_factory=dict)
    labeled: int = 0  # labels learnt since the last tick fed (rule 5), and how many of them were errors
    errors: int = 0
    # "<prediction window start>:<input partition>" -> the last label offset counted
    label_marks: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps({"partition": self.partition, "reference_id": self.reference_id,
                             "config_version": self.config_version, "window_ms": self.window_ms,
                             "tick_ms": self.tick_ms, "detector": self.detector.state_dict(),
                             "last_tick_ms": self.last_tick_ms,
                             "windows": {str(k): v for k, v in self.windows.items()},
                             "alarms": {str(k): v for k, v in self.alarms.items()},
                             "labeled": self.labeled, "errors": self.errors, "label_marks": self.label_marks},
                            option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, raw: bytes | None) -> _Watch:
        """A state record as `to_json` wrote it; `InvalidRecord` naming the field when it is not one."""
        d = internal.typed(_WatchRecord, internal.load_object(raw, "tick state"), "tick state")
        with internal.malformed("tick state"):
            watch = cls(d.partition, d.reference_id, d.config_version, d.window_ms, d.tick_ms,
                       TickChangeDetector.from_state(d.detector), d.last_tick_ms,
                       {int(k): v for k, v in d.windows.items()}, {int(k): v for k, v in d.alarms.items()},
                       d.labeled, d.errors, d.label_marks)
        return watch


@dataclass(slots=True)
class _WatchRecord:
    """A tick-state record's fields and their types (the detector's state is checked by its own from_state)."""

    partition: int
    reference_id: str
    config_version: str
    window_ms: int
    tick_ms: int
    detector: dict[str, Any]
    last_tick_ms: int | None
    windows: dict[str, dict[str, list[float]]]
    alarms: dict[str, list[list[Any]]]
    labeled: int
    errors: int
    label_marks: dict[str, int]


def _statistic(det: TickChangeDetector, method: str, i: int) -> float:
    """Stream ``i``'s chart statistic after the last tick (Page-Hinkley: its larger one-sided test)."""
    if method == "cusum":
        return float(det.cusum.statistic[i])
    return max(float(det.page_hinkley.test_up[i]), float(det.page_hinkley.test_down[i]))


class TickDetection:
    """The sequential detectors of the merge stage's models (rules: module docstring)."""

    def __init__(self, settings: Settings, client: Client, book: ReferenceBook,
                 config_for: Callable[[str, str], ResolvedModelConfig], outbox: Outbox,
                 findings: FindingsPublisher | None = None) -> None:
        self.settings = settings
        self.client = client
        self.book = book
        self.config_for = config_for
        self.outbox = outbox
        self.findings = findings
        self.state_topic = settings.topic(topics.TICK_STATE)
        self.pending: dict[int, dict[WindowKey, _PendingTick]] = {}
        self.closed: dict[int, dict[WindowKey, int]] = {}
        self.watches: dict[tuple[str, str], _Watch] = {}
        self.dirty: set[tuple[str, str]] = set()
        # (model, version, reference, configuration version) whose detector cannot be built: said once
        self.unwatched: set[tuple[str, str, str, str]] = set()

    def assign(self, partitions: Iterable[int]) -> None:
        """Read back the state of the models whose ticks arrive on these summaries partitions."""
        wanted = sorted(set(partitions))
        for p in wanted:
            self.pending[p], self.closed[p] = {}, {}
        self.restore(read_partitions(self.settings, wanted, changelog=topics.TICK_STATE))

    def restore(self, records: dict[str, bytes]) -> None:
        """Load state records as `save` wrote them (key ``<model>\x1f<version>``)."""
        for key, raw in records.items():
            model, _, version = key.partition(SEP)
            try:
                self.watches[(model, version)] = _Watch.from_json(raw)
            except InvalidRecord as exc:  # its detector starts afresh
                refusals.skipped(self.state_topic, f"of {model}/{version}", exc)

    def revoke(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for p in gone:
            self.pending.pop(p, None)
            self.closed.pop(p, None)
        for key in [k for k, w in self.watches.items() if w.partition in gone]:
            del self.watches[key]
            self.dirty.discard(key)

    def receive(self, partition: int, header: TickHeader, body: bytes, offset: int, min_mark: int | None) -> None:
        """Hold one input partition's share of a tick until the watermarks close the tick."""
        spec = WindowSpec(header.tick_size_ms, header.lateness_ms)
        key = (header.model_id, header.model_version, header.tick_start_ms)
        watch = self.watches.get(key[:2])
        closed = self.closed.setdefault(partition, {})
        if key in closed or spec.closed_by(key[2], min_mark) or (
                watch is not None and watch.last_tick_ms is not None and key[2] <= watch.last_tick_ms):
            return  # a replay duplicate: this tick was fed (or closed) already
        pending = self.pending.setdefault(partition, {})
        tick = pending.get(key)
        if tick is None:
            tick = pending[key] = _PendingTick(offset, spec)
        known = tick.parts.get(header.partition)
        if known is None or header.first_offset < known[0].first_offset:
            tick.parts[header.partition] = (header, body)

    def labels(self, header: LabelHeader) -> None:
        """Count one label summary's outcomes into its model version's next tick (rule 5)."""
        watch = self.watches.get((header.model_id, header.model_version))
        if not header.model_version or not header.labeled or watch is None or ERROR_RATE not in watch.detector.names:
            return
        mark = f"{header.window_start_ms}:{header.partition}"
        if header.last_offset <= watch.label_marks.get(mark, -1):
            return  # counted before (a replay of the summarize stage)
        watch.label_marks[mark] = header.last_offset
        if len(watch.label_marks) > LABEL_MARKS:  # the oldest prediction windows' labels have long arrived
            for old in sorted(watch.label_marks, key=lambda m: int(m.split(":")[0]))[:-LABEL_MARKS]:
                del watch.label_marks[old]
        watch.labeled += header.labeled
        watch.errors += header.labeled - header.correct
        self.dirty.add((header.model_id, header.model_version))

    def held(self, partition: int) -> list[int]:
        """The first offsets of the ticks still open on this summaries partition (the commit stays behind them)."""
        return [t.first_seen_offset for t in self.pending.get(partition, {}).values()]

    def close_ready(self, partition: int, min_mark: int | None) -> None:
        """Feed every tick the watermarks close to its model's detector, oldest first."""
        pending = self.pending.get(partition, {})
        closed = self.closed.setdefault(partition, {})
        for key in closing({k: t.spec for k, t in pending.items()}, min_mark):
            tick = pending.pop(key)
            closed[key] = key[2]
            try:
                self._feed(partition, key, tick)
            except (ValueError, ArithmeticError) as exc:  # one bad tick never stops the stage
                log.error("tick %s not fed: %s", key, exc)
        if len(closed) > CLOSED_MEMORY_TICKS:
            for key in sorted(closed, key=lambda k: closed[k])[:-CLOSED_MEMORY_TICKS]:
                del closed[key]

    def _watch(self, partition: int, model: str, version: str, tick_start: int, tick_ms: int) -> _Watch | None:
        ref = self.book.at(model, version, tick_start)
        if ref is None or ref.summary is None:
            return None
        config = self.config_for(model, version)
        watch = self.watches.get((model, version))
        if watch is not None and (watch.reference_id, watch.config_version) == (ref.reference_id, config.version):
            return watch
        key = (model, version, ref.reference_id, config.version)
        if key in self.unwatched:
            return None
        try:
            detector = TickChangeDetector(TickReference.from_summary(ref.summary), **sequential_kwargs(config))
        except ValueError as exc:  # e.g. no stream with a spread, or a budget with no sequential share
            self.unwatched.add(key)
            log.warning("no sequential detection for %s/%s with reference %s: %s", model, version,
                        ref.reference_id, exc)
            return None
        window_ms = (config.window_seconds or self.settings.window_seconds) * 1000
        watch = _Watch(partition, ref.reference_id, config.version, window_ms, tick_ms, detector,
                       None if watch is None else watch.last_tick_ms)
        self.watches[(model, version)] = watch
        log.info("%s/%s: sequential detection on %d streams, h=%.3f, %.3g false alarms per tick%s", model, version,
                 len(detector.names), detector.h, detector.false_alarm_rate,
                 f"; too few reference events to judge ticks of {', '.join(detector.unwatched)}"
                 if detector.unwatched else "")
        return watch

    def _feed(self, partition: int, key: WindowKey, tick: _PendingTick) -> None:
        model, version, start = key
        watch = self._watch(partition, model, version, start, tick.spec.size_ms)
        if watch is None or not tick.parts:
            return
        merged, _ = merge_ticks([body for _, body in tick.parts.values()])
        ref = self.book.at(model, version, start)
        if merged is None or ref is None or merged.profile_hash != ref.profile.content_hash():
            return
        found = watch.detector.update(replace(merged.stats(), labeled=watch.labeled, errors=watch.errors))
        watch.last_tick_ms, watch.labeled, watch.errors = start, 0, 0
        self.dirty.add((model, version))
        metrics.TICKS_FED.inc()
        window = start - start % watch.window_ms
        self._window_stats(watch, window, found)
        if found:
            self._alarm(watch, key, tick.spec.size_ms, window, merged.n, found)

    def _window_stats(self, watch: _Watch, window: int, found: list[Finding]) -> None:
        """Fold the tick into its window's rows: every chart's statistic, and each alarm of any method."""
        stats = watch.windows.setdefault(window, {})
        det = watch.detector
        for method in (m for m in det.methods if m in BUDGETED):
            for i, stream in enumerate(det.names):
                entry = stats.setdefault(f"{method}{SEP}{stream}", [0.0, 0, 0])
                entry[0] = max(entry[0], _statistic(det, method, i))
                entry[2] += 1
        for f in found:  # an alarmed chart restarts at once: what crossed is the finding's value
            entry = stats.setdefault(f"{f.metric}{SEP}{f.feature}", [0.0, 0, 0])
            entry[0] = max(entry[0], float(f.value)) if math.isfinite(f.value) else entry[0]
            entry[1] += 1
            entry[2] = max(entry[2], 1)

    def _alarm(self, watch: _Watch, key: WindowKey, tick_ms: int, window: int, events: int,
               found: list[Finding]) -> None:
        model, version, start = key
        rows = []
        for f in found:
            change_tick = f.detail.get("change_tick")
            change = None if change_tick is None else start - (int(f.detail["tick"]) - int(change_tick)) * tick_ms
            detail = dict(f.detail)
            rows.append([model, version, _ts(start), _ts(start + tick_ms), _ts(window), f.metric, f.feature,
                         float(f.value), f.threshold, None if change is None else _ts(change),
                         str(f.detail.get("direction", "")), events, watch.reference_id, watch.config_version,
                         orjson.dumps(detail, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()])
            metrics.SEQUENTIAL_ALARMS.labels(method=f.metric).inc()
            log.warning("%s/%s: %s alarm on %s at tick %s (statistic %.3f > %.3f, change from %s)", model, version,
                        f.metric, f.feature, _ts(start).isoformat(), f.value, f.threshold or math.nan,
                        "?" if change is None else _ts(change).isoformat())
        store_retry.call(store.insert_alarms, self.client, rows,
                         token=f"{model}|{version}|{start}|{watch.reference_id}|alarms")
        so_far = watch.alarms.setdefault(window, [])
        for f in found:
            detail = {**f.detail, "tick_start_ms": start, "n": events}
            so_far.append([f.metric, f.feature, float(f.value), f.threshold if f.metric in BUDGETED else None,
                           orjson.loads(orjson.dumps(detail, option=orjson.OPT_SERIALIZE_NUMPY, default=str))])
        if self.findings is not None:
            findings = [Finding(m, v, t, True, s, detail=dict(d)) for m, s, v, t, d in so_far]
            # the revision ends with the tick: the alert it triggers is dated by the data, not the window's end
            self.findings.written(to_rows((model, version, window), start + tick_ms - window, findings, events,
                                          watch.reference_id, watch.config_version, len(so_far)), "ticks")
        self.dirty.add((model, version))

    def window_rows(self, key: WindowKey, size_ms: int, reference_id: str, config_version: str) -> list[list[Any]]:
        """The window's judged sequential rows (rule 4); empty when the model version has no detection."""
        watch = self.watches.get(key[:2])
        if watch is None:
            return []
        stats = watch.windows.pop(key[2], None)
        watch.alarms.pop(key[2], None)
        for old in [w for w in watch.windows if w < key[2]]:  # windows no longer open (a replay's leftovers)
            del watch.windows[old]
            watch.alarms.pop(old, None)
        if stats is None:
            return []
        self.dirty.add(key[:2])
        h = watch.detector.h
        findings = []
        for name, (value, alarms, ticks) in sorted(stats.items()):
            method, _, stream = name.partition(SEP)
            findings.append(Finding(method, value, h if method in BUDGETED else None, alarms > 0, stream,
                                    detail={"n": int(ticks), "alarms": int(alarms)}))
        return to_rows(key, size_ms, findings, 0, reference_id, config_version)

    def save(self) -> None:
        """Write the changed models' state to ``tick-state`` and wait for it (before the merge stage commits)."""
        for model, version in sorted(self.dirty):
            watch = self.watches.get((model, version))
            if watch is not None:
                self.outbox.produce(self.state_topic, watch.to_json(), f"{model}{SEP}{version}".encode(),
                                    partition=watch.partition)
        self.dirty.clear()
        self.outbox.settle()
