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
- Each model version has its own window size and allowed lateness (its *shape*, from the model
  configuration); a window ``[start, start + size)`` closes on ``p`` once the event time minus the
  lateness reaches its end. A record whose window has already closed is *late*: it is counted
  (``late_events``) in the currently open window of its model, never added to the closed one.
- The offset that is safe to commit is where a replay must start to rebuild the open windows exactly:
  the first offset of the oldest open window, or the first record of the jump in progress when that
  window was opened by one of its records (the jump is confirmed by records before and after it), or
  the next offset when nothing is open. The commit carries the partition's event time as it stood just
  before that offset, so a replay classifies every record (late or not) exactly as the first run did.
- An idle partition (caught up, nothing new for a while) may be advanced by the caller with
  ``advance_to(wall_clock_ms)``; windows then close without traffic. The advance is part of the committed
  event time, so a replay judges later records against it too.
- A window keeps the shape it opened with; a model's shape is fixed for as long as the caller's ``shape``
  function returns the same (the summarize stage reads it once per model version per worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

A = TypeVar("A")

WindowKey = tuple[str, str, int]  # (model_id, model_version, window_start_ms)
Shape = tuple[int, int]  # (window size, allowed lateness) in milliseconds
ReplayPoint = tuple[int, int | None]  # (offset, the partition's event time just before it)

# Defaults of DRIFTLINE_EVENT_TIME_JUMP_SECONDS / _RECORDS: a step up to the default allowed lateness (10 s)
# costs no on-time record anything, even when it comes from a clock that runs ahead.
JUMP_MS = 10_000
JUMP_RECORDS = 3


def fixed_shape(size_ms: int, lateness_ms: int) -> Callable[[str, str], Shape]:
    """One shape for every model (the worker's settings, or a test's)."""
    return lambda _model_id, _model_version: (size_ms, lateness_ms)


@dataclass(slots=True)
class OpenWindow(Generic[A]):
    key: WindowKey
    size_ms: int
    lateness_ms: int
    first_offset: int
    replay_from: ReplayPoint  # where a replay must start to route the first record as it was routed
    acc: A
    last_offset: int = -1
    late_events: int = 0
    late_oldest_ms: int | None = None


@dataclass(slots=True)
class ClosedWindow(Generic[A]):
    key: WindowKey
    size_ms: int
    lateness_ms: int
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
    shape: Callable[[str, str], Shape]
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
        size_ms, lateness_ms = self.shape(model_id, model_version)
        start = ts_ms - ts_ms % size_ms
        now = self.event_time_ms
        late = now is not None and start + size_ms <= now - lateness_ms
        if late:
            assert now is not None
            start = now - now % size_ms
        point = self.observe(ts_ms, offset)
        key = (model_id, model_version, start)
        window = self.open.get(key)
        if window is None:
            window = OpenWindow(key, size_ms, lateness_ms, offset, point, self.new_acc(model_id, model_version, start))
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
        shapes = np.array([self.shape(*mv) for mv in versions], dtype=np.int64).reshape(-1, 2)
        size, lateness = shapes[version_of, 0], shapes[version_of, 1]
        starts = t - t % size
        prior, known, points = self._event_times(t, offsets)
        late = known & (starts + size <= prior - lateness)
        if late.any():
            starts = np.where(late, prior - prior % size, starts)
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
                window = OpenWindow(key, int(size[first]), int(lateness[first]), offsets[first], point,
                                    self.new_acc(*key))
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
        now = self.event_time_ms
        if now is None:
            return
        ready = [k for k, w in self.open.items() if k[2] + w.size_ms <= now - w.lateness_ms]
        yield from self._pop(ready)

    def close_all(self) -> Iterator[ClosedWindow[A]]:
        """Pop every open window regardless of the watermark (backtests at the end of a range)."""
        yield from self._pop(list(self.open))

    def _pop(self, keys: list[WindowKey]) -> Iterator[ClosedWindow[A]]:
        for key in sorted(keys, key=lambda k: (k[2], k[0], k[1])):
            w = self.open.pop(key)
            yield ClosedWindow(key, w.size_ms, w.lateness_ms, self.partition, w.first_offset, w.last_offset,
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
