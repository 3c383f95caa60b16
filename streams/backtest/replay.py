"""``driftline backtest``: replay retained predictions and labels through a candidate configuration.

Why: a detector setting is cheap to change and expensive to get wrong in production (an alert storm, or a
change nobody hears about). The backtest answers "what would this configuration have raised on last
week's traffic?" with the live pipeline's own code, in-process: `PartitionWindows` per input partition,
`PredictionSummarizer` against the references in force, the merge stage's merge and `WindowRows` with the
detectors the candidate configuration enables, then the summarize stage's `LabelJoiner` and the merge stage's
`LabelWindows` for the labels. Findings are collected, never emitted.

Isolation: both topics are read with ``assign()`` (no group membership, no rebalance of the live workers)
under a fresh group id, with commits and offset storage off; nothing is produced to Kafka, ClickHouse is
never opened, the join-state changelog is not read, and automatic references learnt during the replay stay
in a local book.

Range: ``[start_ms, end_ms)`` in *event time* (the ``ts`` field). Partitions are positioned by Kafka record
timestamp (``offsets_for_times``), from ``start_ms - SEEK_SLACK_MS`` up to the first record stamped after
``end_ms`` + the largest allowed lateness + ``SEEK_SLACK_MS`` (or the end of the partition when the run
started); records whose event time falls outside the range are skipped. Windows at the range's edges hold
only the records inside it: give window-aligned times to replay whole windows.

Labels: the labels topic is read after the predictions, for labels whose event time is in
``[start_ms, end_ms + max_label_delay]`` (positioned the same way, and capped by the partitions' ends when
the run started). Every replayed prediction of the range is kept in the join store (no size bound, no
expiry), so a label joins whenever its prediction was replayed, however late it came within that bound;
one whose prediction is not in the range is counted unmatched at once (there is nothing left to wait
for). As live, a label is attributed to its *prediction's* window, summarised against the profile that
window was binned with, and the label-based detectors (``LABEL_DETECTORS``), ``labels``,
``label_coverage`` and ``accuracy`` are computed once per window, on all of its labels, after the replay.

Fidelity to the live pipeline: records are validated as live (event times too, against their Kafka
timestamps); each partition's watermark is its event time (``PartitionWindows``' rule, over all models)
minus the allowed lateness, exactly as in the summarize stage; a model window is judged once every partition's
watermark passed it, as in the merge stage; and the partitions are replayed interleaved in event time, as they
arrive live, so an automatic reference takes effect on the same windows as it would in production. Not
replayed: the wall-clock advance of idle partitions (each partition closes all its windows at the end of
its range instead: ``close_all``), and the revisions of label windows as labels trickle in (live, a
window's label findings are re-computed as each batch of labels lands; here only the final one counts).
"""

from __future__ import annotations

import heapq
import logging
import math
import sys
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.summaries import WindowSummary
from driftline.streams import store
from driftline.streams.config.model_config import MonitoringConfig, ResolvedModelConfig
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import topics
from driftline.streams.pipeline.decode import (
    EventTimeBounds,
    InvalidRecord,
    Prediction,
    decode_label,
    decode_prediction,
)
from driftline.streams.pipeline.envelope import SummaryHeader
from driftline.streams.pipeline.join_store import PartitionJoinStore
from driftline.streams.pipeline.label_rows import PartState, fold_label_summaries, label_rows
from driftline.streams.pipeline.rows import WindowRows
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.pipeline.windows import ClosedWindow, OpenWindow, PartitionWindows, WindowKey
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.references.topic import ReferenceFollower
from driftline.streams.stages.label_join import LabelDelta, LabelJoiner

log = logging.getLogger("driftline.backtest")
SEEK_SLACK_MS = 60_000
STALL_TIMEOUT_S = 60.0
BATCH = 5000
BUFFER_LIMIT = 20_000


class BacktestError(RuntimeError):
    """The backtest cannot run (broker unreachable, topic missing, bad range); the message says which."""


# ----------------------------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class Breach:
    """One breached finding of one replayed window."""

    window_start_ms: int
    window_end_ms: int
    metric: str
    feature: str
    slice: str
    value: float
    threshold: float | None
    p_value: float | None


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One merged model window as the merge stage would have judged it (``reference_id`` empty: not judged).

    ``labels`` are the replayed labels joined to the window's predictions; ``label_coverage`` (labels / n)
    and ``accuracy`` are None where the merge stage would not report them (no label, no classifier label).
    """

    start_ms: int
    end_ms: int
    n: int
    late_events: int
    reference_id: str
    breaches: tuple[Breach, ...] = ()
    labels: int = 0
    label_coverage: float | None = None
    accuracy: float | None = None


@dataclass(frozen=True, slots=True)
class ChangePointResult:
    """How a known change point was met: the first breached window that ends after it, before the next one.

    >>> ChangePointResult(90_000, 60_000, 120_000, 0).delay_s, ChangePointResult(90_000, None, None, 2).missed
    (30.0, True)
    """

    change_point_ms: int
    detected_start_ms: int | None
    detected_end_ms: int | None
    breached_before: int

    @property
    def missed(self) -> bool:
        return self.detected_end_ms is None

    @property
    def delay_s(self) -> float | None:
        """Detection delay: the end of the detecting window (when the merge stage can close it) minus the change."""
        return None if self.detected_end_ms is None else (self.detected_end_ms - self.change_point_ms) / 1000


def score_change_points(windows: Sequence[WindowResult], change_points_ms: Iterable[int]) -> list[ChangePointResult]:
    """Match each change point with its first detection.

    A window detects change point ``c_i`` when it is breached, ends after ``c_i`` (it holds traffic from
    after the change) and starts before the next change point ``c_{i+1}`` (later windows belong to that
    one). ``breached_before`` counts the breached windows that end at or before ``c_i``.

    >>> w = [WindowResult(s, s + 60_000, 100, 0, "r", (Breach(s, s + 60_000, "ks", "x", "", 0.3, 0.1, 1e-5),)
    ...                   if s in (60_000, 240_000) else ()) for s in range(0, 360_000, 60_000)]
    >>> [(r.delay_s, r.breached_before, r.missed) for r in score_change_points(w, [150_000, 300_000])]
    [(150.0, 1, False), (None, 2, True)]
    """
    cps = sorted(set(change_points_ms))
    breached = sorted((w for w in windows if w.breaches), key=lambda w: w.start_ms)
    out = []
    for i, cp in enumerate(cps):
        following = cps[i + 1] if i + 1 < len(cps) else math.inf
        hit = next((w for w in breached if w.end_ms > cp and w.start_ms < following), None)
        before = sum(1 for w in breached if w.end_ms <= cp)
        out.append(ChangePointResult(cp, hit.start_ms if hit else None, hit.end_ms if hit else None, before))
    return out


def count_false_alarms(windows: Sequence[WindowResult], change_points_ms: Iterable[int]) -> int:
    """Breached windows that end at or before the first change point; every breached window when none is given.

    Without change points the range is taken to be stable, so any breach is a false alarm.

    >>> w = [WindowResult(s, s + 10, 5, 0, "r", (Breach(s, s + 10, "ks", "x", "", 1.0, None, None),)) for s in (0, 10)]
    >>> count_false_alarms(w, [10]), count_false_alarms(w, [5]), count_false_alarms(w, [])
    (1, 0, 2)
    """
    cps = sorted(change_points_ms)
    return sum(1 for w in windows if w.breaches and (not cps or w.end_ms <= cps[0]))


@dataclass
class VersionReport:
    """What the candidate configuration would have raised for one model version.

    >>> w = WindowResult(0, 60_000, 50, 0, "ref", (Breach(0, 60_000, "ks", "age", "", 0.4, 0.01, 1e-4),))
    >>> v = VersionReport("fraud", "3", "c0ffee", [w, WindowResult(60_000, 120_000, 50, 0, "")])
    >>> v.windows_judged, v.breached_windows, v.breaches_per_metric()
    (1, 1, {'ks': 1})
    """

    model_id: str
    model_version: str
    config_version: str
    windows: list[WindowResult] = field(default_factory=list)

    @property
    def windows_judged(self) -> int:
        return sum(1 for w in self.windows if w.reference_id)

    @property
    def breached_windows(self) -> int:
        return sum(1 for w in self.windows if w.breaches)

    @property
    def breaches(self) -> list[Breach]:
        return [b for w in self.windows for b in w.breaches]

    def breaches_per_metric(self) -> dict[str, int]:
        return dict(sorted(Counter(b.metric for b in self.breaches).items()))


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


@dataclass
class BacktestReport:
    """The findings a candidate configuration would have raised on a replayed range. Nothing was emitted.

    >>> b = Breach(60_000, 120_000, "ks", "tenure", "", 0.31, 0.05, 1e-9)
    >>> v = VersionReport("churn", "2", "abc", [WindowResult(0, 60_000, 10, 0, "ref"),
    ...                                         WindowResult(60_000, 120_000, 10, 0, "ref", (b,))])
    >>> r = BacktestReport("c.yaml", "f00", 0, 120_000, [30_000], "g", versions=[v])
    >>> r.to_dict()["versions"][0]["change_points"][0]["delay_s"], r.to_dict()["versions"][0]["false_alarms"]
    (90.0, 0)
    >>> "| churn/2 | abc | 2 | 2 | 1 | 0 |" in r.to_markdown()
    True
    """

    config_source: str
    config_version: str
    start_ms: int
    end_ms: int
    change_points_ms: list[int]
    group_id: str
    records_read: int = 0
    records_replayed: int = 0
    invalid: int = 0
    out_of_range: int = 0
    other_models: int = 0
    late_events: int = 0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    versions: list[VersionReport] = field(default_factory=list)
    labels_to_ms: int | None = None
    labels_read: int = 0
    labels_joined: int = 0
    labels_unmatched: int = 0
    labels_invalid: int = 0
    labels_out_of_range: int = 0
    labels_other_models: int = 0
    label_partitions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def version(self, model_id: str, model_version: str) -> VersionReport | None:
        return next((v for v in self.versions if (v.model_id, v.model_version) == (model_id, model_version)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config_source, "config_version": self.config_version,
            "from_ms": self.start_ms, "to_ms": self.end_ms, "change_points_ms": sorted(self.change_points_ms),
            "group_id": self.group_id, "records_read": self.records_read, "records_replayed": self.records_replayed,
            "invalid": self.invalid, "out_of_range": self.out_of_range, "other_models": self.other_models,
            "late_events": self.late_events,
            "partitions": {str(p): {"from_offset": a, "to_offset": b} for p, (a, b) in sorted(self.partitions.items())},
            "labels_to_ms": self.labels_to_ms, "labels_read": self.labels_read, "labels_joined": self.labels_joined,
            "labels_unmatched": self.labels_unmatched, "labels_invalid": self.labels_invalid,
            "labels_out_of_range": self.labels_out_of_range, "labels_other_models": self.labels_other_models,
            "label_partitions": {str(p): {"from_offset": a, "to_offset": b}
                                 for p, (a, b) in sorted(self.label_partitions.items())},
            "versions": [{
                "model_id": v.model_id, "model_version": v.model_version, "config_version": v.config_version,
                "windows_evaluated": len(v.windows), "windows_judged": v.windows_judged,
                "breached_windows": v.breached_windows,
                "false_alarms": count_false_alarms(v.windows, self.change_points_ms),
                "breaches_per_metric": v.breaches_per_metric(),
                "change_points": [{**asdict(c), "delay_s": c.delay_s, "missed": c.missed}
                                  for c in score_change_points(v.windows, self.change_points_ms)],
                "windows": [{"start_ms": w.start_ms, "end_ms": w.end_ms, "n": w.n, "late_events": w.late_events,
                             "reference_id": w.reference_id, "breached": bool(w.breaches), "labels": w.labels,
                             "label_coverage": w.label_coverage, "accuracy": w.accuracy} for w in v.windows],
                "breaches": [asdict(b) for b in v.breaches],
            } for v in self.versions],
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def to_markdown(self) -> str:
        cps = sorted(self.change_points_ms)
        lines = [
            f"# Backtest of {self.config_source} (config version {self.config_version})", "",
            f"Event time {_iso(self.start_ms)} to {_iso(self.end_ms)}; {self.records_replayed} predictions replayed "
            f"of {self.records_read} read ({self.invalid} invalid, {self.out_of_range} outside the range, "
            f"{self.other_models} of other models), {self.late_events} late. Nothing was emitted.", "",
            f"Labels to {_iso(self.labels_to_ms)} (event time): {self.labels_joined} joined to the replayed "
            f"predictions of {self.labels_read} read, {self.labels_unmatched} unmatched (their prediction is not "
            f"in the range), {self.labels_invalid} invalid, {self.labels_out_of_range} outside the range, "
            f"{self.labels_other_models} of other models.", "",
            "False alarms: breached windows ending at or before the first change point"
            + ("." if cps else " (no change point given: the range is taken as stable, every breach counts)."), "",
            "| model/version | config | windows | judged | breached | false alarms | breaches per metric |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for v in self.versions:
            per_metric = ", ".join(f"{m} {n}" for m, n in v.breaches_per_metric().items()) or "-"
            lines.append(f"| {v.model_id}/{v.model_version} | {v.config_version} | {len(v.windows)} | "
                         f"{v.windows_judged} | {v.breached_windows} | {count_false_alarms(v.windows, cps)} | "
                         f"{per_metric} |")
        if not self.versions:
            lines.append("| (no model window in the range) | | | | | | |")
        for v in self.versions:
            if v.windows and not v.windows_judged:
                lines += ["", f"{v.model_id}/{v.model_version}: no window had a reference with data, so no "
                              "detector ran (publish one with `driftline reference set`, or set "
                              "reference.source: auto)."]
            if cps:
                lines += ["", f"## {v.model_id}/{v.model_version}: change points", "",
                          "| change point | first breached window | delay (s) | breached windows before |",
                          "| --- | --- | --- | --- |"]
                for c in score_change_points(v.windows, cps):
                    found = "missed" if c.missed else _iso(c.detected_start_ms)
                    lines.append(f"| {_iso(c.change_point_ms)} | {found} | {_num(c.delay_s)} | {c.breached_before} |")
            if v.breaches:
                lines += ["", f"## {v.model_id}/{v.model_version}: breached findings", "",
                          "| window start | metric | feature | slice | value | threshold | p-value |",
                          "| --- | --- | --- | --- | --- | --- | --- |"]
                lines += [f"| {_iso(b.window_start_ms)} | {b.metric} | {b.feature or '-'} | {b.slice or '-'} | "
                          f"{_num(b.value)} | {_num(b.threshold)} | {_num(b.p_value)} |" for b in v.breaches]
            if any(w.labels for w in v.windows):
                lines += ["", f"## {v.model_id}/{v.model_version}: labels", "",
                          "| window start | labels | label coverage | accuracy |", "| --- | --- | --- | --- |"]
                lines += [f"| {_iso(w.start_ms)} | {w.labels} | {_num(w.label_coverage)} | {_num(w.accuracy)} |"
                          for w in v.windows if w.labels]
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- the replay


def read_references(settings: Settings, timeout: float = 30.0) -> ReferenceBook:
    """Every published reference, read without creating the topic when it does not exist."""
    book = ReferenceBook()
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BacktestError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
    if settings.topic(topics.REFERENCES) in existing:
        follower = ReferenceFollower(settings, book)
        try:
            follower.catch_up(timeout)
        except RuntimeError as exc:
            raise BacktestError(str(exc)) from None
        finally:
            follower.close()
    return book


@dataclass(slots=True)
class _Pending:
    size_ms: int
    lateness_ms: int
    parts: dict[int, tuple[SummaryHeader, bytes]] = field(default_factory=dict)


# (event time, offset, the prediction; None for another model's, which only moves the partition's event time)
_Entry = tuple[int, int, Prediction | None]


class _Replay:
    """The summarize and merge stages of the live pipeline in one process, over a bounded range of offsets.

    Records are fetched into per-partition buffers and replayed in event-time order across partitions
    (each partition's own order kept), stopping whenever a partition still being read has nothing
    buffered. So the replay does not depend on how Kafka happens to batch the fetches: the same range
    and configuration give the same report every time. Then the labels are read and joined, and each
    labelled window judged once, on all its labels.
    """

    def __init__(self, settings: Settings, config: MonitoringConfig, book: ReferenceBook, report: BacktestReport,
                 model: str | None) -> None:
        self.settings = settings
        self.config = config
        self.book = book
        self.report = report
        self.model = model
        self.topic = settings.topic(topics.PREDICTIONS)
        self.label_topic = settings.topic(topics.LABELS)
        self.profiles: dict[WindowKey, ReferenceProfile] = {}
        self.summarizer = PredictionSummarizer(self._profile_for)
        self.learnt: list[Reference] = []
        self.rows = WindowRows(book, self.config_for, self.learnt.append)
        self.resolved: dict[tuple[str, str], ResolvedModelConfig] = {}
        self.windows: dict[int, PartitionWindows[WindowSummary]] = {}
        self.event_times = EventTimeBounds.of(settings)
        self.added: dict[int, tuple[OpenWindow[WindowSummary], list[Prediction]]] = {}
        self.pending: dict[WindowKey, _Pending] = {}
        self.results: dict[tuple[str, str], VersionReport] = {}
        self.n_partitions = 0
        sections = (config.defaults, *config.models.values(), *config.versions.values())
        sizes = [s.window_seconds or settings.window_seconds for s in sections]
        # windows are closed and judged each time event time crosses a quarter of the shortest window
        self.step_ms = max(1, min(sizes) * 1000 // 4)
        self.max_lateness_ms = max(int((s.allowed_lateness_seconds if s.allowed_lateness_seconds is not None
                                        else settings.allowed_lateness_seconds) * 1000) for s in sections)
        # No wait for a missing prediction: every prediction of the range is in the join store before any label.
        self.joiner = LabelJoiner(settings.model_copy(update={"label_wait_seconds": 0.0}), self._label_summary,
                                  self._shape)
        self.label_end_ms = report.labels_to_ms = report.end_ms + int(settings.max_label_delay_seconds * 1000)

    def config_for(self, model_id: str, model_version: str) -> ResolvedModelConfig:
        key = (model_id, model_version)
        if key not in self.resolved:
            self.resolved[key] = self.config.resolve(model_id, model_version, self.settings)
        return self.resolved[key]

    def _shape(self, model_id: str, model_version: str) -> tuple[int, int]:
        cfg = self.config_for(model_id, model_version)
        assert cfg.window_seconds is not None and cfg.allowed_lateness_seconds is not None
        return cfg.window_seconds * 1000, int(cfg.allowed_lateness_seconds * 1000)

    def _profile_for(self, model_id: str, model_version: str, window_start_ms: int) -> ReferenceProfile:
        """The book's profile, remembered for the window's labels (the first partition to open it decides)."""
        profile = self.book.profile_for(model_id, model_version, window_start_ms)
        self.profiles.setdefault((model_id, model_version, window_start_ms), profile)
        return profile

    def _label_summary(self, model_id: str, model_version: str, start_ms: int) -> WindowSummary:
        """The joiner's summary for labels of the model window holding ``start_ms``, binned as its predictions."""
        start = start_ms - start_ms % self._shape(model_id, model_version)[0]
        profile = self.profiles.get((model_id, model_version, start))
        if profile is None:  # only late predictions of the range fell in that window: the book's, as live
            profile = self.book.profile_for(model_id, model_version, start)
        return WindowSummary.empty(profile)

    def _version(self, model_id: str, model_version: str) -> VersionReport:
        version = self.results.get((model_id, model_version))
        if version is None:
            version = self.results[(model_id, model_version)] = VersionReport(
                model_id, model_version, self.config_for(model_id, model_version).version)
        return version

    # -- reading

    def run(self) -> None:
        consumer = Consumer({
            "bootstrap.servers": self.settings.kafka_bootstrap, "group.id": self.report.group_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True,
            "auto.offset.reset": "earliest", "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 4_194_304,
        })
        try:
            bounds = self._bounds(consumer)
            label_bounds = self._label_bounds(consumer)  # the labels' ends as the run starts, too
            self.report.partitions, self.report.label_partitions = bounds, label_bounds
            live = {p for p, (a, b) in bounds.items() if a < b}
            consumer.assign([TopicPartition(self.topic, p, bounds[p][0]) for p in sorted(live)])
            self._read(consumer, bounds, live)
            self._read_labels(consumer, label_bounds)
        finally:
            consumer.close()
        self._flush()
        for key in sorted(self.pending, key=lambda k: (k[2], k[0], k[1])):
            self._evaluate(key, self.pending.pop(key))
        self._judge_labels()

    def _bounds(self, consumer: Consumer) -> dict[int, tuple[int, int]]:
        """Per partition, the offsets [from, to) that can hold the range's records."""
        try:
            meta = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        except KafkaException as exc:
            raise BacktestError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}") from None
        if meta is None or meta.error is not None or not meta.partitions:
            raise BacktestError(f"topic {self.topic} does not exist on {self.settings.kafka_bootstrap}")
        parts = sorted(meta.partitions)
        self.n_partitions = len(parts)
        return self._offsets(consumer, self.topic, parts, self.report.start_ms,
                             self.report.end_ms + self.max_lateness_ms)

    def _label_bounds(self, consumer: Consumer) -> dict[int, tuple[int, int]]:
        """Per labels partition, the offsets that can hold labels stamped in ``[from, to + max label delay]``.

        No labels topic: nothing to join (it is not created). Its partitions must match the predictions',
        as the live worker requires, since partition p of the labels only ever meets partition p's predictions.
        """
        try:
            meta = consumer.list_topics(timeout=30).topics.get(self.label_topic)
        except KafkaException as exc:
            raise BacktestError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}") from None
        if meta is None or meta.error is not None or not meta.partitions:
            return {}
        if len(meta.partitions) != self.n_partitions:
            raise BacktestError(f"{self.label_topic} has {len(meta.partitions)} partitions and {self.topic} "
                                f"{self.n_partitions}: they must match for labels to meet predictions")
        ttl_ms = int(self.settings.max_label_delay_seconds * 1000)
        for p in meta.partitions:
            self.joiner.parts[p] = self.joiner.new_partition(None, PartitionJoinStore(ttl_ms, sys.maxsize))
        return self._offsets(consumer, self.label_topic, sorted(meta.partitions), self.report.start_ms,
                             self.label_end_ms)

    def _offsets(self, consumer: Consumer, topic: str, parts: list[int], first_ms: int,
                 last_ms: int) -> dict[int, tuple[int, int]]:
        """Per partition, from the first record stamped at ``first_ms`` - slack to the first stamped after
        ``last_ms`` + slack, or to the partition's end now."""
        first_ms, last_ms = max(0, first_ms - SEEK_SLACK_MS), last_ms + SEEK_SLACK_MS
        firsts = consumer.offsets_for_times([TopicPartition(topic, p, first_ms) for p in parts], timeout=30)
        lasts = consumer.offsets_for_times([TopicPartition(topic, p, last_ms) for p in parts], timeout=30)
        bounds = {}
        for p, first, after in zip(parts, firsts, lasts, strict=True):
            for tp in (first, after):
                if tp.error is not None:
                    raise BacktestError(f"cannot look up offsets of {topic}[{p}]: {tp.error}")
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            begin = first.offset if first.offset >= 0 else high
            end = after.offset if 0 <= after.offset <= high else high
            bounds[p] = (begin, max(begin, end))
        return bounds

    def _read(self, consumer: Consumer, bounds: dict[int, tuple[int, int]], live: set[int]) -> None:
        buffers: dict[int, deque[_Entry]] = {p: deque() for p in live}
        fetched: set[int] = set()  # partitions read to the end of their range
        paused: set[int] = set()
        last_progress = time.monotonic()
        horizon: int | None = None
        while live:
            batch = consumer.consume(BATCH, timeout=0.1)
            if batch:
                last_progress = time.monotonic()
                self._fetch(batch, bounds, buffers, fetched)
            elif reading := [TopicPartition(self.topic, p) for p in live - fetched]:
                ended = {tp.partition for tp in consumer.position(reading) if tp.offset >= bounds[tp.partition][1]}
                fetched |= ended
                if not ended and time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise BacktestError(f"no progress reading {self.topic} partitions "
                                        f"{sorted(live - fetched)} for {STALL_TIMEOUT_S:.0f} s")
            horizon = self._drain(buffers, fetched, live, horizon)
            # stop fetching past a partition's range, and ahead of what the replay can use
            behind = live - fetched
            stop = (fetched | {p for p in behind if len(buffers[p]) > BUFFER_LIMIT}) - paused
            if stop:
                consumer.pause([TopicPartition(self.topic, p) for p in sorted(stop)])
            go = {p for p in paused & behind if len(buffers[p]) < BUFFER_LIMIT // 2}
            if go:
                consumer.resume([TopicPartition(self.topic, p) for p in sorted(go)])
            paused = (paused | stop) - go

    def _fetch(self, batch: list[Message], bounds: dict[int, tuple[int, int]], buffers: dict[int, deque[_Entry]],
               fetched: set[int]) -> None:
        """Decode a batch into the partitions' buffers; invalid and out-of-range records are only counted.

        The range's predictions (late ones too, as live) go to the label join store.
        """
        report = self.report
        remember: dict[int, list[Prediction]] = defaultdict(list)
        now_ms = int(time.time() * 1000)
        for msg in batch:
            partition = msg.partition()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    fetched.add(partition)
                else:
                    log.warning("consume error: %s", err)
                continue
            offset = msg.offset()
            if partition in fetched or offset >= bounds[partition][1]:
                fetched.add(partition)
                continue
            if offset >= bounds[partition][1] - 1:
                fetched.add(partition)
            report.records_read += 1
            try:
                pred = decode_prediction(msg.value())
                key = msg.key()
                if key is not None and key != pred.prediction_id.encode():
                    raise InvalidRecord("record key does not match prediction_id")
                self.event_times.check(pred.ts_ms, msg.timestamp()[1], now_ms)
            except InvalidRecord:
                report.invalid += 1
                continue
            if not report.start_ms <= pred.ts_ms < report.end_ms:
                report.out_of_range += 1
                continue
            if self.model is not None and pred.model_id != self.model:
                report.other_models += 1
                buffers[partition].append((pred.ts_ms, offset, None))
            else:
                buffers[partition].append((pred.ts_ms, offset, pred))
                remember[partition].append(pred)
        for partition, preds in remember.items():
            self.joiner.remember(partition, preds)

    def _drain(self, buffers: dict[int, deque[_Entry]], fetched: set[int], live: set[int],
               horizon: int | None) -> int | None:
        """Replay buffered records in event-time order while every partition still being read has some."""
        done = [p for p in live if p in fetched and not buffers[p]]
        if done:
            self._finish(done, live)
        if any(not buffers[p] for p in live):
            return horizon
        heads = [(buffers[p][0][0], p) for p in live]
        heapq.heapify(heads)
        while heads:
            ts, partition = heapq.heappop(heads)
            if horizon is None or ts >= horizon:
                if horizon is not None:
                    self._close_ready(live)
                horizon = ts - ts % self.step_ms + self.step_ms
            buffer = buffers[partition]
            self._replay(partition, buffer.popleft())
            if buffer:
                heapq.heappush(heads, (buffer[0][0], partition))
            elif partition in fetched:
                self._finish([partition], live)
            else:
                break  # the replay cannot go on without this partition's next records
        return horizon

    def _replay(self, partition: int, entry: _Entry) -> None:
        """The summarize stage for one record: route it to its window on its partition (or count it late)."""
        ts_ms, offset, pred = entry
        windows = self._partition(partition)
        if pred is None:
            windows.observe(ts_ms, offset)  # other models' records move the partition's event time too, as live
            return
        window, late = windows.assign(pred.model_id, pred.model_version, ts_ms, offset)
        if late:
            self.report.late_events += 1
        else:
            self.report.records_replayed += 1
            self.added.setdefault(id(window), (window, []))[1].append(pred)

    def _partition(self, partition: int) -> PartitionWindows[WindowSummary]:
        windows = self.windows.get(partition)
        if windows is None:
            windows = self.windows[partition] = PartitionWindows(partition, self._shape, self.summarizer.new,
                                                                 *self.settings.event_time_jump())
        return windows

    def _flush(self) -> None:
        """Fold the records routed since the last flush into their windows' summaries, a column at a time."""
        for window, preds in self.added.values():
            self.summarizer.add(window.acc, preds)
        self.added = {}

    def _finish(self, done: list[int], live: set[int]) -> None:
        """Partitions at the end of their range close every window they hold (the backtest's last watermark)."""
        self._flush()
        for partition in done:
            live.discard(partition)
            for closed in self._partition(partition).close_all():
                self._closed(closed)
        self._close_ready(live)

    # -- merging and judging

    def _closed(self, closed: ClosedWindow[WindowSummary]) -> None:
        model_id, model_version, start = closed.key
        size_ms, lateness_ms = closed.size_ms, closed.lateness_ms
        header = SummaryHeader(model_id, model_version, start, size_ms, lateness_ms, closed.partition,
                               self.n_partitions, closed.first_offset, closed.last_offset, closed.acc.n,
                               closed.late_events, closed.late_oldest_ms)
        pending = self.pending.setdefault(closed.key, _Pending(size_ms, lateness_ms))
        pending.parts[closed.partition] = (header, closed.acc.to_bytes())

    def _close_ready(self, live: set[int]) -> None:
        """Close the partitions' windows their watermarks passed; judge the model windows every partition passed."""
        self._flush()
        for partition in live:
            for closed in self._partition(partition).close_ready():
                self._closed(closed)

        def ready(key: WindowKey, pending: _Pending) -> bool:
            end = key[2] + pending.size_ms + pending.lateness_ms
            return all((m := self._partition(p).event_time_ms) is not None and m >= end for p in live)

        for key in sorted((k for k, v in self.pending.items() if ready(k, v)), key=lambda k: (k[2], k[0], k[1])):
            self._evaluate(key, self.pending.pop(key))

    def _evaluate(self, key: WindowKey, pending: _Pending) -> None:
        """The merge stage for one model window: merge its partitions' summaries, run the candidate's detectors."""
        model_id, model_version, start = key
        parts = [pending.parts[p] for p in sorted(pending.parts)]
        rows = [dict(zip(store.WINDOW_COLUMNS, row, strict=True))
                for row in self.rows.rows(key, pending.size_ms, parts)]
        end = start + pending.size_ms
        by_metric = {r["metric"]: r for r in rows if not r["feature"] and not r["slice"]}
        breaches = tuple(Breach(start, end, r["metric"], r["feature"], r["slice"], float(r["value"]),
                                r["threshold"], r["p_value"]) for r in rows if r["breached"])
        late = sum(header.late_events for header, _ in parts)
        result = WindowResult(start, end, int(by_metric["count"]["value"]), late, rows[0]["reference_id"], breaches)
        self._version(model_id, model_version).windows.append(result)

    # -- labels

    def _read_labels(self, consumer: Consumer, bounds: dict[int, tuple[int, int]]) -> None:
        """Join the labels of ``bounds`` with the replayed predictions (the join store holds all of them)."""
        todo = {p for p, (a, b) in bounds.items() if a < b}
        if not todo:
            return
        consumer.assign([TopicPartition(self.label_topic, p, bounds[p][0]) for p in sorted(todo)])
        last_progress = time.monotonic()
        while todo:
            batch = consumer.consume(BATCH, timeout=0.1)
            done: set[int] = set()
            if batch:
                last_progress = time.monotonic()
                self._fetch_labels(batch, bounds, done)
            else:
                positions = consumer.position([TopicPartition(self.label_topic, p) for p in sorted(todo)])
                done = {tp.partition for tp in positions if tp.offset >= bounds[tp.partition][1]}
                if not done and time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise BacktestError(f"no progress reading {self.label_topic} partitions {sorted(todo)} "
                                        f"for {STALL_TIMEOUT_S:.0f} s")
            if done := done & todo:
                consumer.pause([TopicPartition(self.label_topic, p) for p in sorted(done)])
                todo -= done

    def _fetch_labels(self, batch: list[Message], bounds: dict[int, tuple[int, int]], done: set[int]) -> None:
        """Hand the batch's labels of the range to the joiner; invalid and other labels are only counted."""
        report = self.report
        kept = []
        for msg in batch:
            partition = msg.partition()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    done.add(partition)
                else:
                    log.warning("consume error: %s", err)
                continue
            offset = msg.offset()
            if offset >= bounds[partition][1]:
                done.add(partition)
                continue
            if offset >= bounds[partition][1] - 1:
                done.add(partition)
            report.labels_read += 1
            try:
                label = decode_label(msg.value())
            except InvalidRecord:
                report.labels_invalid += 1
                continue
            if not report.start_ms <= label.ts_ms <= self.label_end_ms:
                report.labels_out_of_range += 1
            elif self.model is not None and label.model_id != self.model:
                report.labels_other_models += 1
            else:
                kept.append(msg)
        if kept:
            self.joiner.receive(kept, self._invalid_label)

    def _invalid_label(self, _msg: Message, _problem: InvalidRecord) -> None:
        self.report.labels_invalid += 1

    def _judge_labels(self) -> None:
        """The merge stage's label windows, once per model window on all its labels, into the windows' results."""
        report = self.report
        deltas: dict[WindowKey, dict[int, list[LabelDelta]]] = defaultdict(lambda: defaultdict(list))
        for partition, part in self.joiner.parts.items():
            report.labels_unmatched += sum(len(offsets) for offsets in part.unmatched.values())
            for (model_id, model_version, start), delta in part.deltas.items():
                size_ms = self._shape(model_id, model_version)[0]
                deltas[(model_id, model_version, start - start % size_ms)][partition].append(delta)
                report.labels_joined += delta.labeled
        for key in sorted(deltas, key=lambda k: (k[2], k[0], k[1])):
            model_id, model_version, start = key
            size_ms = self._shape(model_id, model_version)[0]
            expected = self.book.profile_for(*key).content_hash()
            parts = {}
            for p, ds in sorted(deltas[key].items()):
                summary, conflicts = fold_label_summaries([d.summary.to_bytes() for d in ds], expected)
                parts[p] = PartState(max(d.last_offset for d in ds), sum(d.labeled for d in ds),
                                     sum(d.correct for d in ds), sum(d.abs_err for d in ds),
                                     sum(d.sq_err for d in ds), conflicts=conflicts, summary=summary)
            windows = self._version(model_id, model_version).windows
            at = next((i for i, w in enumerate(windows) if w.start_ms == start), None)
            count = windows[at].n if at is not None else 0
            rows = [dict(zip(store.WINDOW_COLUMNS, row, strict=True)) for row in
                    label_rows(key, size_ms, parts, count, self.book, self.config_for(model_id, model_version))]
            by_metric = {r["metric"]: r for r in rows if not r["feature"] and not r["slice"]}
            breaches = tuple(Breach(start, start + size_ms, r["metric"], r["feature"], r["slice"], float(r["value"]),
                                    r["threshold"], r["p_value"]) for r in rows if r["breached"])
            coverage, accuracy = by_metric.get("label_coverage"), by_metric.get("accuracy")
            if at is None:  # only late predictions of the range fell in this window
                windows.append(WindowResult(start, start + size_ms, 0, 0, ""))
                at = len(windows) - 1
            windows[at] = replace(windows[at], breaches=windows[at].breaches + breaches,
                                  labels=int(by_metric["labels"]["value"]),
                                  label_coverage=None if coverage is None else float(coverage["value"]),
                                  accuracy=None if accuracy is None else float(accuracy["value"]))


def run_backtest(settings: Settings, config_path: str | Path, start_ms: int, end_ms: int,
                 change_points_ms: Sequence[int] = (), model: str | None = None) -> BacktestReport:
    """Replay event time ``[start_ms, end_ms)`` of the predictions topic, and the labels of those predictions
    stamped up to ``end_ms`` + the maximum label delay, through the configuration at ``config_path``.

    Raises `streams.model_config.ConfigError` for a bad configuration file and `BacktestError` when the
    range is empty or Kafka cannot be read. Writes nothing to Kafka or ClickHouse.
    """
    if end_ms <= start_ms:
        raise BacktestError(f"the range is empty: --to ({end_ms}) must be after --from ({start_ms})")
    config = MonitoringConfig.load(config_path)
    group = f"{settings.consumer_group}-backtest-{uuid.uuid4().hex[:12]}"
    report = BacktestReport(str(config_path), config.version, start_ms, end_ms, sorted(set(change_points_ms)), group)
    replay = _Replay(settings, config, read_references(settings), report, model)
    replay.run()
    report.versions = [replay.results[k] for k in sorted(replay.results)]
    for version in report.versions:
        version.windows.sort(key=lambda w: w.start_ms)
    for ref in replay.learnt:
        log.info("backtest learnt reference %s for %s/%s (kept local, not published)", ref.reference_id,
                 ref.model_id, ref.model_version)
    return report
