"""``driftline backtest``: replay retained predictions and labels through a candidate configuration.

Why: a detector setting is cheap to change and expensive to get wrong in production (an alert storm, or a
change nobody hears about). The backtest answers "what would this configuration have raised on last
week's traffic?" with the live pipeline's own code, in-process: `PartitionWindows` per input partition,
`PredictionSummarizer` against the references in force, the merge stage's merge and `WindowRows` with the
detectors the candidate configuration enables, then the summarize stage's `LabelJoiner` and the merge stage's
`LabelWindows` arithmetic for the labels. Findings are collected (`report`), never emitted: ClickHouse is
never opened, and automatic references learnt during the replay stay in a local book. Reading the range
(and what "the range" means) is `reading`'s.

Labels: every replayed prediction of the range is kept in the join store (no size bound, no expiry), so a
label joins whenever its prediction was replayed, however late it came within the maximum label delay;
one whose prediction is not in the range is counted unmatched at once (there is nothing left to wait
for). As live, a label is attributed to its *prediction's* window, summarised against the profile that
window was binned with, and the label-based detectors (``LABEL_DETECTORS``), ``labels``,
``label_coverage`` and ``accuracy`` are computed once per window, on all of its labels, after the replay.

Fidelity to the live pipeline: each model version's `WindowSpec` comes from its configuration as in the
worker (`windows.window_shape`); each partition's windows close by `PartitionWindows`' rule (its event time,
over all models, past a window's end plus its lateness), exactly as in the summarize stage; a model window
is judged once every partition's event time passed it (`windows.closing` at the slowest one), as in the
merge stage; and the partitions are replayed interleaved in event time, as they arrive live, so an
automatic reference takes effect on the same windows as it would in production. Not replayed: the
wall-clock advance of idle partitions (each partition closes all its windows at the end of its range
instead: ``close_all``), and the revisions of label windows as labels trickle in (live, a window's label
findings are re-computed as each batch of labels lands; here only the final one counts).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.summaries import WindowSummary
from driftline.streams import store
from driftline.streams.backtest.reading import BacktestError, Entry, RangeReader, read_references
from driftline.streams.backtest.report import BacktestReport, Breach, VersionReport, WindowResult
from driftline.streams.config.model_config import MonitoringConfig, ResolvedModelConfig
from driftline.streams.config.settings import Settings
from driftline.streams.pipeline.decode import Prediction
from driftline.streams.pipeline.envelope import SummaryHeader
from driftline.streams.pipeline.label_rows import PartState, fold_label_summaries, label_rows
from driftline.streams.pipeline.rows import WindowRows
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.pipeline.windows import (
    ClosedWindow,
    OpenWindow,
    PartitionWindows,
    WindowKey,
    WindowSpec,
    closing,
    window_order,
    window_shape,
)
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.stages.label_join import LabelDelta, LabelJoiner

log = logging.getLogger("driftline.backtest")


@dataclass(slots=True)
class _Pending:
    spec: WindowSpec
    parts: dict[int, tuple[SummaryHeader, bytes]] = field(default_factory=dict)


class _Replay(RangeReader):
    """The summarize and merge stages of the live pipeline in one process, over the range `RangeReader` reads.

    Then the labels are read and joined, and each labelled window judged once, on all its labels.
    """

    def __init__(self, settings: Settings, config: MonitoringConfig, book: ReferenceBook, report: BacktestReport,
                 model: str | None) -> None:
        self.config = config
        self.book = book
        self.resolved: dict[tuple[str, str], ResolvedModelConfig] = {}
        self.shape = window_shape(self.config_for)
        self.profiles: dict[WindowKey, ReferenceProfile] = {}
        self.summarizer = PredictionSummarizer(self._profile_for)
        self.learnt: list[Reference] = []
        self.rows = WindowRows(book, self.config_for, self.learnt.append)
        self.windows: dict[int, PartitionWindows[WindowSummary]] = {}
        self.added: dict[int, tuple[OpenWindow[WindowSummary], list[Prediction]]] = {}
        self.pending: dict[WindowKey, _Pending] = {}
        self.results: dict[tuple[str, str], VersionReport] = {}
        sections = (config.defaults, *config.models.values(), *config.versions.values())
        sizes = [s.window_seconds or settings.window_seconds for s in sections]
        # windows are closed and judged each time event time crosses a quarter of the shortest window
        step_ms = max(1, min(sizes) * 1000 // 4)
        max_lateness_ms = max(int((s.allowed_lateness_seconds if s.allowed_lateness_seconds is not None
                                   else settings.allowed_lateness_seconds) * 1000) for s in sections)
        # No wait for a missing prediction: every prediction of the range is in the join store before any label.
        joiner = LabelJoiner(settings.model_copy(update={"label_wait_seconds": 0.0}), self._label_summary, self.shape)
        super().__init__(settings, report, model, joiner, step_ms, max_lateness_ms)

    def config_for(self, model_id: str, model_version: str) -> ResolvedModelConfig:
        key = (model_id, model_version)
        if key not in self.resolved:
            self.resolved[key] = self.config.resolve(model_id, model_version, self.settings)
        return self.resolved[key]

    def _profile_for(self, model_id: str, model_version: str, window_start_ms: int) -> ReferenceProfile:
        """The book's profile, remembered for the window's labels (the first partition to open it decides)."""
        profile = self.book.profile_for(model_id, model_version, window_start_ms)
        self.profiles.setdefault((model_id, model_version, window_start_ms), profile)
        return profile

    def _label_summary(self, model_id: str, model_version: str, start_ms: int) -> WindowSummary:
        """The joiner's summary for labels of the model window holding ``start_ms``, binned as its predictions."""
        start = self.shape(model_id, model_version).start_of(start_ms)
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

    def run(self) -> None:
        self.read()
        self._flush()
        for key in sorted(self.pending, key=window_order):
            self._evaluate(key, self.pending.pop(key))
        self._judge_labels()

    def _replay(self, partition: int, entry: Entry) -> None:
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
            windows = self.windows[partition] = PartitionWindows(partition, self.shape, self.summarizer.new,
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
        spec = closed.spec
        header = SummaryHeader(model_id, model_version, start, spec.size_ms, spec.lateness_ms, closed.partition,
                               self.n_partitions, closed.first_offset, closed.last_offset, closed.acc.n,
                               closed.late_events, closed.late_oldest_ms)
        pending = self.pending.setdefault(closed.key, _Pending(spec))
        pending.parts[closed.partition] = (header, closed.acc.to_bytes())

    def _close_ready(self, live: set[int]) -> None:
        """Close the partitions' windows their watermarks passed; judge the model windows every partition passed."""
        self._flush()
        for partition in live:
            for closed in self._partition(partition).close_ready():
                self._closed(closed)
        if live:  # the merge stage's close: at the slowest partition still being read (None: one has none yet)
            marks = [self._partition(p).event_time_ms for p in live]
            keys = closing({k: v.spec for k, v in self.pending.items()},
                           None if None in marks else min(m for m in marks if m is not None))
        else:  # every partition is at the end of its range: nothing holds a window open
            keys = sorted(self.pending, key=window_order)
        for key in keys:
            self._evaluate(key, self.pending.pop(key))

    def _evaluate(self, key: WindowKey, pending: _Pending) -> None:
        """The merge stage for one model window: merge its partitions' summaries, run the candidate's detectors."""
        model_id, model_version, start = key
        parts = [pending.parts[p] for p in sorted(pending.parts)]
        rows = [dict(zip(store.WINDOW_COLUMNS, row, strict=True))
                for row in self.rows.rows(key, pending.spec.size_ms, parts)]
        end = start + pending.spec.size_ms
        by_metric = {r["metric"]: r for r in rows if not r["feature"] and not r["slice"]}
        breaches = tuple(Breach(start, end, r["metric"], r["feature"], r["slice"], float(r["value"]),
                                r["threshold"], r["p_value"]) for r in rows if r["breached"])
        late = sum(header.late_events for header, _ in parts)
        result = WindowResult(start, end, int(by_metric["count"]["value"]), late, rows[0]["reference_id"], breaches)
        self._version(model_id, model_version).windows.append(result)

    # -- labels

    def _judge_labels(self) -> None:
        """The merge stage's label windows, once per model window on all its labels, into the windows' results."""
        report = self.report
        deltas: dict[WindowKey, dict[int, list[LabelDelta]]] = defaultdict(lambda: defaultdict(list))
        for partition, part in self.joiner.parts.items():
            report.labels_unmatched += sum(len(offsets) for offsets in part.unmatched.values())
            for (model_id, model_version, start), delta in part.deltas.items():
                deltas[(model_id, model_version, self.shape(model_id, model_version).start_of(start))][partition] \
                    .append(delta)
                report.labels_joined += delta.labeled
        for key in sorted(deltas, key=window_order):
            model_id, model_version, start = key
            size_ms = self.shape(model_id, model_version).size_ms
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
