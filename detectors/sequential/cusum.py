"""Page's two-sided CUSUM on standardised statistics, vectorised over independent streams."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from driftline.detectors.sequential.chart import Chart, FloatArray


class CUSUM(Chart):
    """Two-sided Page CUSUM on standardised statistics, one independent chart per stream (vectorised).

    S+ = max(0, S+ + z - k) and S- = max(0, S- - z - k); an alarm when either exceeds h. k is half the
    shift (in z units) the chart is tuned to; h sets the in-control ARL (`cusum_threshold`). A NaN z leaves
    its stream untouched (no data). An alarmed stream restarts from 0 at the next update, as river's
    detectors do, so in the long run the false alarms per update are 1 / ARL0. The change-point estimate
    is the label (`start`, default: the update's index) of the observation that began the alarming run.

    Parameters
    ----------
    k
        The allowance: half the shift, in standard deviations of z, the chart is tuned to.
    h
        The decision threshold; `cusum_threshold(arl0, k)` gives the one with in-control ARL arl0.
    n_streams
        How many independent charts.

    Examples
    --------
    >>> cusum = CUSUM(k=0.5, h=3.0)
    >>> [cusum.update(z) for z in (0.1, -0.3, 2.0, 2.5)]
    [False, False, False, True]
    >>> cusum.change_point.tolist(), cusum.direction.tolist()
    ([2], [1])

    References
    ----------
    [^1]: E. S. Page. 1954. Continuous Inspection Schemes. Biometrika 41, 1/2 (1954), 100-115.
    """

    def __init__(self, k: float = 1.0, h: float = 5.0, n_streams: int = 1) -> None:
        if k < 0 or h < 0 or n_streams < 1:
            raise ValueError("need k >= 0, h >= 0, n_streams >= 1")
        super().__init__(n_streams)
        self.k, self.h = float(k), float(h)
        self.s_up = np.zeros(n_streams)
        self.s_down = np.zeros(n_streams)

    def update(self, z: ArrayLike, start: ArrayLike | None = None) -> bool:
        """Feed one statistic per stream (NaN: none); True when any stream alarms."""
        z, label = self._inputs(z, start)
        self.s_up[self.alarms] = 0.0
        self.s_down[self.alarms] = 0.0
        seen = ~np.isnan(z)
        zz = np.where(seen, z, 0.0)
        up = np.where(seen, np.maximum(0.0, self.s_up + zz - self.k), self.s_up)
        down = np.where(seen, np.maximum(0.0, self.s_down - zz - self.k), self.s_down)
        self.start_up = np.where((self.s_up == 0) & (up > 0), label, self.start_up)
        self.start_down = np.where((self.s_down == 0) & (down > 0), label, self.start_down)
        self.s_up, self.s_down = up, down
        is_up = (up > self.h) & (up >= down)
        return self._record(is_up, (down > self.h) & ~is_up)

    @property
    def statistic(self) -> FloatArray:
        """max(S+, S-) per stream."""
        return np.maximum(self.s_up, self.s_down)

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        config = {"k": self.k, "h": self.h, "n_streams": self.n_streams}
        return config | self._alarm_state() | {"s_up": self.s_up.tolist(), "s_down": self.s_down.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        obj = cls(state["k"], state["h"], state["n_streams"])
        obj._load_alarm_state(state)
        obj.s_up = np.asarray(state["s_up"], dtype=np.float64)
        obj.s_down = np.asarray(state["s_down"], dtype=np.float64)
        return obj
