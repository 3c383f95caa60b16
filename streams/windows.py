"""Event-time tumbling windows per Kafka partition: assignment, watermark, lateness, safe commit offsets.

Pure bookkeeping (no Kafka, no clock reads), so replay determinism can be tested directly.

Rules, per input partition ``p``:
- ``max_event_ms`` is the largest event time read so far on ``p``; the watermark is
  ``max_event_ms - lateness``. A window ``[start, start + size)`` closes on ``p`` once the watermark reaches
  its end; a record whose window has already closed is *late*: it is counted (``late_events``) in the
  currently open window of its model, never added to the closed one.
- The offset that is safe to commit is the first offset of the oldest open window (or the next offset when
  none is open), so a crash re-reads and rebuilds exactly the open windows. The commit carries the
  partition's ``max_event_ms`` as it stood just before that offset, so a replay classifies every record
  (late or not) exactly as the first run did.
- An idle partition (caught up, nothing new for a while) may be advanced by the caller with
  ``advance_to(wall_clock_ms)``; windows then close without traffic. The advance is part of the committed
  event time, so a replay judges later records against it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

A = TypeVar("A")

WindowKey = tuple[str, str, int]  # (model_id, model_version, window_start_ms)


@dataclass(slots=True)
class OpenWindow(Generic[A]):
    key: WindowKey
    first_offset: int
    max_before_first: int | None
    acc: A
    last_offset: int = -1
    late_events: int = 0
    late_oldest_ms: int | None = None


@dataclass(slots=True)
class ClosedWindow(Generic[A]):
    key: WindowKey
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
    size_ms: int
    lateness_ms: int
    new_acc: Callable[[str, str, int], A]
    max_event_ms: int | None = None
    idle_ms: int | None = None
    next_offset: int | None = None
    open: dict[WindowKey, OpenWindow[A]] = field(default_factory=dict)

    def window_start(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.size_ms

    @property
    def event_time_ms(self) -> int | None:
        """How far event time has got on this partition: its max event time or the idle advance."""
        if self.idle_ms is None:
            return self.max_event_ms
        if self.max_event_ms is None:
            return self.idle_ms
        return max(self.max_event_ms, self.idle_ms)

    @property
    def watermark_ms(self) -> int | None:
        now = self.event_time_ms
        return None if now is None else now - self.lateness_ms

    def assign(self, model_id: str, model_version: str, ts_ms: int, offset: int) -> tuple[OpenWindow[A], bool]:
        """Route one record: (window to add it to or count it in, whether it is late)."""
        start = self.window_start(ts_ms)
        mark = self.watermark_ms
        late = mark is not None and start + self.size_ms <= mark
        if late:
            start = self.window_start(self.event_time_ms or ts_ms)
        key = (model_id, model_version, start)
        window = self.open.get(key)
        if window is None:
            window = OpenWindow(key, offset, self.event_time_ms, self.new_acc(model_id, model_version, start))
            self.open[key] = window
        window.last_offset = offset
        if late:
            window.late_events += 1
            window.late_oldest_ms = ts_ms if window.late_oldest_ms is None else min(window.late_oldest_ms, ts_ms)
        elif self.max_event_ms is None or ts_ms > self.max_event_ms:
            self.max_event_ms = ts_ms
        self.next_offset = offset + 1
        return window, late

    def advance_to(self, now_ms: int) -> None:
        """Let wall-clock time stand in for event time on an idle partition."""
        if self.idle_ms is None or now_ms > self.idle_ms:
            self.idle_ms = now_ms

    def close_ready(self) -> Iterator[ClosedWindow[A]]:
        """Pop every window the watermark has passed, oldest first."""
        mark = self.watermark_ms
        if mark is None:
            return
        ready = sorted((k for k in self.open if k[2] + self.size_ms <= mark), key=lambda k: (k[2], k[0], k[1]))
        for key in ready:
            w = self.open.pop(key)
            yield ClosedWindow(key, self.partition, w.first_offset, w.last_offset, w.late_events,
                               w.late_oldest_ms, w.acc)

    def close_all(self) -> Iterator[ClosedWindow[A]]:
        """Pop every open window regardless of the watermark (backtests at the end of a range)."""
        for key in sorted(self.open, key=lambda k: (k[2], k[0], k[1])):
            w = self.open.pop(key)
            yield ClosedWindow(key, self.partition, w.first_offset, w.last_offset, w.late_events,
                               w.late_oldest_ms, w.acc)

    def commit_point(self) -> tuple[int, int | None] | None:
        """(offset, event time reached before it) that is safe to commit, or None before the first record."""
        if self.open:
            oldest = min(self.open.values(), key=lambda w: w.first_offset)
            return oldest.first_offset, oldest.max_before_first
        if self.next_offset is None:
            return None
        return self.next_offset, self.event_time_ms
