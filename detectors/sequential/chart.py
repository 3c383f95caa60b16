"""What the vectorised two-sided charts (`CUSUM`, `PageHinkley`) share: one independent chart per stream.

`Chart` owns the per-stream input checks, the update counter that labels observations, and the alarm
bookkeeping (which streams alarmed, in which direction, where the alarming run began) with its state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

ALARM_INTS = ("start_up", "start_down", "direction", "change_point")
"""The integer arrays of the alarm bookkeeping, as named in every chart's state."""


class Chart:
    """Alarm bookkeeping of `n_streams` independent two-sided charts updated together.

    After each update `alarms` says which streams alarmed, `direction` +1 (up), -1 (down) or 0, and
    `change_point` the label of the observation that began the alarming run (-1 without alarm);
    `start_up` / `start_down` are the candidate labels the subclass maintains per side.

    Parameters
    ----------
    n_streams
        How many streams (independent charts).

    Examples
    --------
    >>> chart = Chart(2)
    >>> chart.start_up[:] = [4, 7]
    >>> chart._record(np.array([False, True]), np.array([False, False]))
    True
    >>> chart.direction.tolist(), chart.change_point.tolist(), chart.t
    ([0, 1], [-1, 7], 1)
    """

    def __init__(self, n_streams: int) -> None:
        self.n_streams = int(n_streams)
        self.t = 0
        self.start_up = np.zeros(n_streams, dtype=np.int64)
        self.start_down = np.zeros(n_streams, dtype=np.int64)
        self.alarms = np.zeros(n_streams, dtype=bool)
        self.direction = np.zeros(n_streams, dtype=np.int64)
        self.change_point = np.full(n_streams, -1, dtype=np.int64)
        self.drift_detected = False

    def _inputs(self, x: ArrayLike, start: ArrayLike | None) -> tuple[FloatArray, IntArray]:
        """One value per stream, and each value's label (`start`, default: this update's index)."""
        a = np.asarray(x, dtype=np.float64)
        if a.size != self.n_streams:
            raise ValueError(f"expected {self.n_streams} values, got {a.size}")
        if start is None:
            return a.reshape(self.n_streams), np.full(self.n_streams, self.t, dtype=np.int64)
        return a.reshape(self.n_streams), np.broadcast_to(np.asarray(start, dtype=np.int64), (self.n_streams,)).copy()

    def _record(self, is_up: BoolArray, is_down: BoolArray) -> bool:
        """Close an update on the streams alarming up / down (disjoint); True when any alarmed."""
        self.alarms = is_up | is_down
        self.direction = is_up.astype(np.int64) - is_down.astype(np.int64)
        self.change_point = np.where(is_up, self.start_up, np.where(is_down, self.start_down, -1))
        self.t += 1
        self.drift_detected = bool(self.alarms.any())
        return self.drift_detected

    def _alarm_state(self) -> dict[str, Any]:
        """JSON-safe update counter and alarm bookkeeping."""
        ints = {name: getattr(self, name).tolist() for name in ALARM_INTS}
        return {"t": self.t, "alarms": self.alarms.tolist()} | ints

    def _load_alarm_state(self, state: dict[str, Any]) -> None:
        """Inverse of `_alarm_state`."""
        self.t = state["t"]
        for name in ALARM_INTS:
            setattr(self, name, np.asarray(state[name], dtype=np.int64))
        self.alarms = np.asarray(state["alarms"], dtype=bool)
        self.drift_detected = bool(self.alarms.any())
