"""river's Page-Hinkley test vectorised over independent streams, detection for detection."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from driftline.detectors.sequential.chart import BoolArray, Chart, FloatArray


class PageHinkley(Chart):
    """river.drift.PageHinkley for many streams at once: the same arithmetic, hence the same detections.

    Unlike CUSUM it centres each stream on its own running mean (since the last alarm), so it needs no
    reference but `min_instances` observations. The change point is the label of the observation after the
    extreme of the cumulative sum. A NaN leaves its stream untouched.

    Parameters
    ----------
    min_instances
        Observations (since the last alarm) before a stream may alarm.
    delta
        The allowance subtracted from (up) or added to (down) each deviation from the running mean.
    threshold
        The change detection threshold (lambda).
    alpha
        The forgetting factor of the cumulative sums (1: none).
    mode
        Which changes alarm: "up", "down" or "both".
    n_streams
        How many independent charts.

    Examples
    --------
    >>> ph = PageHinkley(min_instances=5, delta=0.5, threshold=3.0, alpha=1.0)
    >>> next(i for i, z in enumerate([0.0] * 10 + [3.0] * 5) if ph.update(z)), ph.change_point.tolist()
    (11, [10])

    References
    ----------
    [^1]: E. S. Page. 1954. Continuous Inspection Schemes. Biometrika 41, 1/2 (1954), 100-115.
    [^2]: D. V. Hinkley. 1971. Inference about the change-point from cumulative sum tests. Biometrika 58, 3
    (1971), 509-523.
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
        n_streams: int = 1,
    ) -> None:
        if mode not in ("up", "down", "both"):
            raise ValueError("mode must be 'up', 'down' or 'both'")
        super().__init__(n_streams)
        self.min_instances, self.delta, self.threshold = min_instances, float(delta), float(threshold)
        self.alpha, self.mode = float(alpha), mode
        self.n = np.zeros(n_streams)
        self.mean = np.zeros(n_streams)
        self.sum_up = np.zeros(n_streams)
        self.sum_down = np.zeros(n_streams)
        self.min_up = np.full(n_streams, np.inf)
        self.max_down = np.full(n_streams, -1.0)
        self.at_min = np.ones(n_streams, dtype=bool)
        self.at_max = np.ones(n_streams, dtype=bool)

    def _reset(self, mask: BoolArray) -> None:
        for name, value in (("n", 0.0), ("mean", 0.0), ("sum_up", 0.0), ("sum_down", 0.0)):
            getattr(self, name)[mask] = value
        self.min_up[mask] = np.inf
        self.max_down[mask] = -1.0
        self.at_min[mask] = True
        self.at_max[mask] = True

    def update(self, x: ArrayLike, start: ArrayLike | None = None) -> bool:
        """Feed one value per stream (NaN: none); True when any stream alarms."""
        x, label = self._inputs(x, start)
        self._reset(self.alarms)
        seen = ~np.isnan(x)
        xx = np.where(seen, x, 0.0)
        self.start_up = np.where(seen & self.at_min, label, self.start_up)
        self.start_down = np.where(seen & self.at_max, label, self.start_down)
        n = np.where(seen, self.n + 1.0, self.n)
        mean = np.where(seen, self.mean + (1.0 / np.maximum(n, 1.0)) * (xx - self.mean), self.mean)
        dev = xx - mean
        sum_up = np.where(seen, self.alpha * self.sum_up + dev - self.delta, self.sum_up)
        sum_down = np.where(seen, self.alpha * self.sum_down + dev + self.delta, self.sum_down)
        self.at_min = np.where(seen, sum_up < self.min_up, self.at_min)
        self.at_max = np.where(seen, sum_down > self.max_down, self.at_max)
        self.n, self.mean, self.sum_up, self.sum_down = n, mean, sum_up, sum_down
        self.min_up = np.minimum(self.min_up, sum_up)
        self.max_down = np.maximum(self.max_down, sum_down)
        ready = seen & (n >= self.min_instances)
        is_up = ready & (self.mode != "down") & (self.test_up > self.threshold)
        return self._record(is_up, ready & (self.mode != "up") & (self.test_down > self.threshold) & ~is_up)

    @property
    def test_up(self) -> FloatArray:
        """river's test_increase: the cumulative sum above its minimum."""
        return self.sum_up - self.min_up

    @property
    def test_down(self) -> FloatArray:
        """river's test_decrease: the cumulative sum below its maximum."""
        return self.max_down - self.sum_down

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state (min_up is +inf only on streams without data, restored from n == 0)."""
        config = {
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "mode": self.mode,
            "n_streams": self.n_streams,
        }
        arrays = ("n", "mean", "sum_up", "sum_down", "max_down", "at_min", "at_max")
        return (
            {"config": config, "min_up": np.where(self.n > 0, self.min_up, 0.0).tolist()}
            | self._alarm_state()
            | {name: getattr(self, name).tolist() for name in arrays}
        )

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        obj = cls(**state["config"])
        obj._load_alarm_state(state)
        for name in ("n", "mean", "sum_up", "sum_down", "max_down"):
            setattr(obj, name, np.asarray(state[name], dtype=np.float64))
        obj.min_up = np.where(obj.n > 0, np.asarray(state["min_up"], dtype=np.float64), np.inf)
        obj.at_min = np.asarray(state["at_min"], dtype=bool)
        obj.at_max = np.asarray(state["at_max"], dtype=bool)
        return obj
