"""Event-time tumbling windows per Kafka partition: assignment, watermark, lateness, safe commit offsets.

Pure bookkeeping (no Kafka, no clock reads), so replay determinism can be tested directly.

Rules, per input partition ``p``:
- ``p``'s *event time* is how far its records (over all its models) have moved it: a record at most
  ``jump_ms`` ahead of it moves it to its own event time at once, as the largest event time read would. A
  record further ahead starts or extends a *jump*: the event time moves only once ``jump_records``
  consecutive records are all that far ahead, and then to the earliest of them; any other record in
  between ends the jump unconfirmed. Why: one record from a clock that runs ahead (within the skew that
  validation lets through) must not make every on-time record after it late; a real jump (a producer
  catching up, traffic after a pause) is confirmed by the records that follow it.
- Each model version has its own window size and allowed lateness (its `WindowSpec`, from the model
  configuration); a window ``[start, start + size)`` closes on ``p`` once the event time minus the
  lateness reaches its end (``WindowSpec.closed_by``: the one close rule of the summarize stage, the merge
  stage and the backtest). A record whose window has already closed is *late*: it is counted
  (``late_events``) in the currently open window of its model, never added to the closed one.
- The offset that is safe to commit is where a replay must start to rebuild the open windows exactly:
  the first offset of the oldest open window, or the first record of the jump in progress when that
  window was opened by one of its records (the jump is confirmed by records before and after it), or
  the next offset when nothing is open. The commit carries the partition's event time as it stood just
  before that offset, so a replay classifies every record (late or not) exactly as the first run did.
- An idle partition (caught up, nothing new for a while) may be advanced by the caller with
  ``advance_to(wall_clock_ms)``; windows then close without traffic. The advance is part of the committed
  event time, so a replay judges later records against it too.
- A window keeps the spec it opened with; a model's spec is fixed for as long as the caller's ``shape``
  function returns the same (the summarize stage reads it once per model version per worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

if TYPE_CHECKING:
    from driftline.streams.config.model_config import ResolvedModelConfig

log = logging.getLogger("driftline.summarize")
A = TypeVar("A")
# the rule's arithmetic, on one window (int) or a batch of them at once (numpy arrays)
N = TypeVar("N", int, np.ndarray)

WindowKey = tuple[str, str, int]  # (model_id, model_version, window_start_ms)
ReplayPoint = tuple[int, int | None]  # (offset, the partition's event time just before it)

# Defaults of DRIFTLINE_EVENT_TIME_JUMP_SECONDS / _RECORDS: a step up to the default allowed lateness (10 s)
# costs no on-time record anything, even when it comes from a clock that runs ahead.
JUMP_MS = 10_000
JUMP_RECORDS = 3


def _start_of(ts_ms: N, size_ms: N) -> N:
    return ts_ms - ts_ms % size_ms


def _closed_by(start_ms: N, size_ms: N, lateness_ms: N, event_time_ms: N) -> bool | np.ndarray:
    return start_ms + size_ms + lateness_ms <= event_time_ms


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A model version's tumbling window: its size and allowed lateness in milliseconds (quixstreams'
    ``TimeWindowDefinition`` with its ``grace_ms``), and the rule of when a window of it closes.

    >>> spec = WindowSpec(60_000, 10_000)
    >>> spec.start_of(125_000), spec.closed_by(60_000, 129_999), spec.closed_by(60_000, 130_000)
    (120000, False, True)
    >>> WindowSpec(0, 10)
    Traceback (most recent call last):
    ...
    ValueError: WindowSpec.size_ms must be > 0, not 0
    """

    size_ms: int
    lateness_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"WindowSpec.size_ms must be > 0, not {self.size_ms}")
        if self.lateness_ms < 0:
            raise ValueError(f"WindowSpec.lateness_ms must be >= 0, not {self.lateness_ms}")

    def start_of(self, ts_ms: int) -> int:
        """The start of the window holding event time ``ts_ms``."""
        return _start_of(ts_ms, self.size_ms)

    def closed_by(self, start_ms: int, event_time_ms: int | None) -> bool:
        """Whether event time ``event_time_ms`` (None: none yet) has passed the window's end plus its lateness."""
        return event_time_ms is not None and bool(_closed_by(start_ms, self.size_ms, self.lateness_ms, event_time_ms))


SpecOf = Callable[[str, str], WindowSpec]  # a model version's window spec


def fixed_shape(size_ms: int, lateness_ms: int) -> SpecOf:
    """One spec for every model (the worker's settings, or a test's)."""
    spec = WindowSpec(size_ms, lateness_ms)
    return lambda _model_id, _model_version: spec


def window_shape(resolve: Callable[[str, str], ResolvedModelConfig]) -> SpecOf:
    """A model version's window spec from its configuration (the worker's and the backtest's)."""
    def shape(model_id: str, version: str) -> WindowSpec:
        config = resolve(model_id, version)
        assert config.window_seconds is not None and config.allowed_lateness_seconds is not None
        return WindowSpec(config.window_seconds * 1000, int(config.allowed_lateness_seconds * 1000))

    return shape


def window_order(key: WindowKey) -> tuple[int, str, str]:
    """The order windows close in: by start, then model and version."""
    return key[2], key[0], key[1]


def closing(specs: Mapping[WindowKey, WindowSpec], event_time_ms: int | None) -> list[WindowKey]:
    """The windows of ``specs`` that event time ``event_time_ms`` closes, in the order they close."""
    return sorted((k for k, spec in specs.items() if spec.closed_by(k[2], event_time_ms)), key=window_order)


@dataclass(slots=True)
class OpenWindow(Generic[A]):
    key: WindowKey
    spec: WindowSpec
    first_offset: int
    replay_from: ReplayPoint  # where a replay must start to route the first record as it was routed
    acc: A
    last_offset: int = -1
    late_events: int = 0
    late_oldest_ms: int | None = None


@dataclass(slots=True)
class ClosedWindow(Generic[A]):
    key: WindowKey
    spec: WindowSpec
    partition: int
    first_offset: int
    last_offset: int
    late_events: int
    late_oldest_ms: int | None
    acc: A


@dataclass(slots=True)
class PartitionWindows(Generic[A]):
    """The open windows of one input partition and its event-time watermark."""

    partition: int
    shape: SpecOf
    new_acc: Callable[[str, str, int], A]
    jump_ms: int = JUMP_MS
    jump_records: int = JUMP_RECORDS
    max_event_ms: int | None = None
    idle_ms: int | None = None
    next_offset: int | None = None
    open: dict[WindowKey, OpenWindow[A]] = field(default_factory=dict)
    run: list[int] = field(default_factory=list)  # event times of the unconfirmed jump, in offset order
    run_from: ReplayPoint | None = None  # the jump's first record (meaningful while ``run`` is not empty)

    @property
    def event_time_ms(self) -> int | None:
        """How far event time has got on this partition: as its records moved it, or the idle advance."""
        if self.idle_ms is None:
            return self.max_event_ms
        if self.max_event_ms is None:
            return self.idle_ms
        return max(self.max_event_ms, self.idle_ms)

    def observe(self, ts_ms: int, offset: int) -> ReplayPoint:
        """Move the partition's event time by one record (the rule in the module docstring).

        Returns where a replay must start for this record to be judged the same way: the record itself,
        or the first record of the jump it extends.
        """
        now = self.event_time_ms
        if now is not None and ts_ms <= now + self.jump_ms:
            self.run.clear()
            if self.max_event_ms is None or ts_ms > self.max_event_ms:
                self.max_event_ms = ts_ms
            return offset, now
        if not self.run:
            self.run_from = (offset, now)
        self.run.append(ts_ms)
        point = self.run_from
        assert point is not None
        if len(self.run) >= self.jump_records:
            earliest = min(self.run)
            if self.max_event_ms is None or earliest > self.max_event_ms:
                self.max_event_ms = earliest
            self.run.clear()
        return point

    def assign(self, model_id: str, model_version: str, ts_ms: int, offset: int) -> tuple[OpenWindow[A], bool]:
        """Route one record: (window to add it to or count it in, whether it is late)."""
        spec = self.shape(model_id, model_version)
        start = spec.start_of(ts_ms)
        now = self.event_time_ms
        late = spec.closed_by(start, now)
        if late:
            assert now is not None
            start = spec.start_of(now)
        point = self.observe(ts_ms, offset)
        key = (model_id, model_version, start)
        window = self.open.get(key)
        if window is None:
            window = OpenWindow(key, spec, offset, point, self.new_acc(model_id, model_version, start))
            self.open[key] = window
        window.last_offset = offset
        if late:
            window.late_events += 1
            window.late_oldest_ms = ts_ms if window.late_oldest_ms is None else min(window.late_oldest_ms, ts_ms)
        self.next_offset = offset + 1
        return window, late

    def assign_many(self, model_ids: list[str], model_versions: list[str], ts_ms: list[int], offsets: list[int]
                    ) -> list[tuple[OpenWindow[A], list[int]]]:
        """Route a batch of records (in offset order) exactly as ``assign`` would one by one.

        Returns, per window, the positions of the records to add to it; late records are counted, not
        returned.
        """
        n = len(ts_ms)
        if n == 0:
            return []
        t = np.asarray(ts_ms, dtype=np.int64)
        if model_ids.count(model_ids[0]) == n and model_versions.count(model_versions[0]) == n:
            versions = [(model_ids[0], model_versions[0])]
            version_of = np.zeros(n, dtype=np.int64)
        else:
            index: dict[tuple[str, str], int] = {}
            version_of = np.fromiter((index.setdefault(mv, len(index)) for mv in
                                      zip(model_ids, model_versions, strict=True)), np.int64, n)
            versions = list(index)
        specs = [self.shape(*mv) for mv in versions]
        size = np.array([s.size_ms for s in specs], dtype=np.int64)[version_of]
        lateness = np.array([s.lateness_ms for s in specs], dtype=np.int64)[version_of]
        starts = _start_of(t, size)
        prior, known, points = self._event_times(t, offsets)
        late = known & _closed_by(starts, size, lateness, prior)
        if late.any():
            starts = np.where(late, _start_of(prior, size), starts)
        # one code per (model version, window start): versions in the high bits, starts ranked in the low
        distinct_starts, start_rank = np.unique(starts, return_inverse=True)
        _, first_of, code_of = np.unique(version_of * len(distinct_starts) + start_rank.reshape(-1),
                                         return_index=True, return_inverse=True)
        order = np.argsort(code_of.reshape(-1), kind="stable")
        bounds = np.searchsorted(code_of.reshape(-1)[order], np.arange(len(first_of) + 1))
        added: list[tuple[OpenWindow[A], list[int]]] = []
        for code in np.argsort(first_of, kind="stable").tolist():  # windows open in order of first record
            rows = order[bounds[code] : bounds[code + 1]]
            first = int(rows[0])
            key = (*versions[int(version_of[first])], int(starts[first]))
            window = self.open.get(key)
            if window is None:
                point = points[first] if points is not None else (offsets[first], int(prior[first]))
                window = OpenWindow(key, specs[int(version_of[first])], offsets[first], point, self.new_acc(*key))
                self.open[key] = window
            window.last_offset = offsets[int(rows[-1])]
            is_late = late[rows]
            if is_late.any():
                window.late_events += int(is_late.sum())
                oldest = int(t[rows[is_late]].min())
                window.late_oldest_ms = oldest if window.late_oldest_ms is None else min(window.late_oldest_ms, oldest)
            on_time_rows = rows[~is_late]
            if on_time_rows.size:
                added.append((window, on_time_rows.tolist()))
        self.next_offset = offsets[-1] + 1
        return added

    def _event_times(self, t: np.ndarray, offsets: list[int]
                     ) -> tuple[np.ndarray, np.ndarray, list[ReplayPoint] | None]:
        """Move the event time over a batch as ``observe`` would record by record.

        Returns the event time before each record (0 where there is none yet), whether there is one, and
        each record's replay point (None when every record is its own, with the event time before it).
        """
        n = len(t)
        before = self.event_time_ms
        if before is not None and not self.run:
            prior = np.empty(n, dtype=np.int64)
            prior[0] = before
            np.maximum(np.maximum.accumulate(t[:-1]), before, out=prior[1:])
            if bool((t <= prior + self.jump_ms).all()):  # no jump: the event time is the running maximum
                top = int(t.max())
                if self.max_event_ms is None or top > self.max_event_ms:
                    self.max_event_ms = top
                return prior, np.ones(n, dtype=bool), None
        prior = np.zeros(n, dtype=np.int64)
        known = np.ones(n, dtype=bool)
        points = []
        for i, (ts, offset) in enumerate(zip(t.tolist(), offsets, strict=True)):
            now = self.event_time_ms
            if now is None:
                known[i] = False
            else:
                prior[i] = now
            points.append(self.observe(ts, offset))
        return prior, known, points

    def advance_to(self, now_ms: int) -> None:
        """Let wall-clock time stand in for event time on an idle partition."""
        if self.idle_ms is None or now_ms > self.idle_ms:
            self.idle_ms = now_ms

    def close_ready(self) -> Iterator[ClosedWindow[A]]:
        """Pop every window whose end the event time minus its lateness has passed, oldest first."""
        yield from self._pop(closing({k: w.spec for k, w in self.open.items()}, self.event_time_ms))

    def close_all(self) -> Iterator[ClosedWindow[A]]:
        """Pop every open window regardless of the watermark (backtests at the end of a range)."""
        yield from self._pop(sorted(self.open, key=window_order))

    def _pop(self, keys: list[WindowKey]) -> Iterator[ClosedWindow[A]]:
        for key in keys:
            w = self.open.pop(key)
            yield ClosedWindow(key, w.spec, self.partition, w.first_offset, w.last_offset,
                               w.late_events, w.late_oldest_ms, w.acc)

    def commit_point(self) -> ReplayPoint | None:
        """(offset, event time reached before it) that is safe to commit, or None before the first record."""
        points = [w.replay_from for w in self.open.values()]
        if self.run:  # its windows may have closed by an idle advance: its records are still to count
            assert self.run_from is not None
            points.append(self.run_from)
        if points:
            return min(points, key=lambda point: point[0])
        if self.next_offset is None:
            return None
        return self.next_offset, self.event_time_ms


class PinnedSpecs:
    """A model version's window spec, read once per worker: windows of one model version keep one spec on
    a worker, whatever the configuration file says later (a change applies on restart). ``what`` names the
    windows in the one log line per model version ("windows", "ticks")."""

    def __init__(self, resolve: SpecOf, what: str = "windows") -> None:
        self.resolve = resolve
        self.what = what
        self.known: dict[tuple[str, str], WindowSpec] = {}

    def __call__(self, model_id: str, model_version: str) -> WindowSpec:
        spec = self.known.get((model_id, model_version))
        if spec is None:
            spec = self.known[model_id, model_version] = self.resolve(model_id, model_version)
            log.info("%s/%s: %d s %s, %.3g s allowed lateness", model_id, model_version, spec.size_ms // 1000,
                     self.what, spec.lateness_ms / 1000)
        return spec
