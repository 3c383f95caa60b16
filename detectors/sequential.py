"""Sequential change detection on short ticks, so a clear change is flagged within seconds, not a window.

A tick is a short sub-window (a few seconds) summarised like any window. Each monitored stream (a numeric
feature's mean, the model score's mean, the error rate) gives one standardised statistic per tick,
z_t = (tick mean - reference mean) / (reference sd / sqrt(tick count)), which is N(0, 1) in control by the
central limit theorem whatever the tick's size. Page's CUSUM on z_t detects a persistent shift fastest for
a given in-control average run length (ARL0: ticks between false alarms), and that ARL0 can be computed,
so the false-alarm rate is set, not hoped for. The tick index is the only time: there are no clocks here.
"""

from __future__ import annotations

import base64
import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Self, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from river import drift
from river.base import DriftDetector
from scipy import optimize, stats

from detectors.findings import Finding
from detectors.summaries import WindowSummary

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

SIEGMUND_RHO = 1.166
"""Siegmund's correction 2 * 0.583: the expected overshoot of a N(0, 1) random walk over a boundary."""


def siegmund_arl(k: float, h: float, two_sided: bool = True) -> float:
    """Siegmund's approximation of the CUSUM's in-control ARL on iid N(0, 1) statistics.

    One side: (exp(2kb) - 2kb - 1) / (2k^2) with b = h + 1.166 (b^2 when k = 0); two symmetric sides
    halve it. Against the exact `cusum_arl` (for ARL0 in [1e3, 1e6]) it overstates the ARL by < 1 % for
    k <= 0.5, 5-8 % at k = 1 and 20-70 % at k = 2: a threshold from it alarms more often than asked, so
    `cusum_threshold` inverts `cusum_arl` by default.

    >>> round(siegmund_arl(0.5, 4.0), 1)
    169.0
    """
    if k < 0 or h < 0:
        raise ValueError("k and h must be >= 0")
    b = h + SIEGMUND_RHO
    one = b * b if k == 0 else (math.expm1(2 * k * b) - 2 * k * b) / (2 * k * k)
    return one / 2 if two_sided else one


def cusum_arl(k: float, h: float, two_sided: bool = True, nodes: int | None = None) -> float:
    """In-control ARL of the CUSUM on iid N(0, 1) statistics, from Page's integral equation.

    L(u) = 1 + L(0) Phi(k - u) + int_0^h L(y) phi(y + k - u) dy is the expected run length from S = u;
    Gauss-Legendre quadrature (Nystrom, 32 + 8h nodes) solves it to < 1e-5 relative error for
    ARLs up to 1e8 and < 1e-3 up to 1e10, float64 conditioning being the limit (tested against 4x nodes).
    Two sides: 1/L = 1/L+ + 1/L-, exact when h <= 2k (the sides are never positive together) and
    conservative within sampling error otherwise (measured in the tests).

    >>> round(cusum_arl(0.5, 4.0), 1)
    167.7
    """
    if k < 0 or h < 0:
        raise ValueError("k and h must be >= 0")
    nodes = nodes or 32 + 8 * math.ceil(h)
    x, w = np.polynomial.legendre.leggauss(nodes)
    y, w = (x + 1) * h / 2, w * h / 2
    u = np.concatenate(([0.0], y))
    kernel = np.empty((nodes + 1, nodes + 1))
    kernel[:, 0] = stats.norm.cdf(k - u)
    kernel[:, 1:] = w[None, :] * stats.norm.pdf(y[None, :] + k - u[:, None])
    one = float(np.linalg.solve(np.eye(nodes + 1) - kernel, np.ones(nodes + 1))[0])
    return one / 2 if two_sided else one


def cusum_threshold(arl0: float, k: float = 1.0, method: str = "exact") -> float:
    """The threshold h at which the two-sided CUSUM with allowance k has in-control ARL `arl0` (in updates).

    `method="siegmund"` inverts `siegmund_arl`; the default `"exact"` inverts `cusum_arl`, whose measured
    ARL0 is at least `arl0` within sampling error (tests/detectors/test_sequential.py). Returns 0 when even
    h = 0 gives a longer ARL (large k).

    >>> round(cusum_threshold(1000, k=0.5), 3), round(cusum_threshold(1000, k=0.5, method="siegmund"), 3)
    (5.757, 5.75)
    """
    if not arl0 > 1:
        raise ValueError("arl0 must be > 1")
    if method not in ("exact", "siegmund"):
        raise ValueError("method must be 'exact' or 'siegmund'")
    arl = cusum_arl if method == "exact" else siegmund_arl

    def gap(h: float) -> float:
        return math.log(arl(k, h)) - math.log(arl0)

    if gap(0.0) >= 0:
        return 0.0
    hi = cusum_threshold(arl0, k, "siegmund") + 1.0 if method == "exact" else 1.0
    while gap(hi) < 0:
        hi += 1.0 if method == "exact" else hi
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12))


def _labels(start: ArrayLike | None, default: int, n: int) -> IntArray:
    if start is None:
        return np.full(n, default, dtype=np.int64)
    return np.broadcast_to(np.asarray(start, dtype=np.int64), (n,)).copy()


def _streams(x: ArrayLike, n: int) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.size != n:
        raise ValueError(f"expected {n} values, got {a.size}")
    return a.reshape(n)


class CUSUM:
    """Two-sided Page CUSUM on standardised statistics, one independent chart per stream (vectorised).

    S+ = max(0, S+ + z - k) and S- = max(0, S- - z - k); an alarm when either exceeds h. k is half the
    shift (in z units) the chart is tuned to; h sets the in-control ARL (`cusum_threshold`). A NaN z leaves
    its stream untouched (no data). An alarmed stream restarts from 0 at the next update, as river's
    detectors do, so in the long run the false alarms per update are 1 / ARL0. The change-point estimate
    is the label (`start`, default: the update's index) of the observation that began the alarming run.

    >>> cusum = CUSUM(k=0.5, h=3.0)
    >>> [cusum.update(z) for z in (0.1, -0.3, 2.0, 2.5)]
    [False, False, False, True]
    >>> cusum.change_point.tolist(), cusum.direction.tolist()
    ([2], [1])
    """

    def __init__(self, k: float = 1.0, h: float = 5.0, n_streams: int = 1) -> None:
        if k < 0 or h < 0 or n_streams < 1:
            raise ValueError("need k >= 0, h >= 0, n_streams >= 1")
        self.k, self.h, self.n_streams = float(k), float(h), int(n_streams)
        self.t = 0
        self.s_up = np.zeros(n_streams)
        self.s_down = np.zeros(n_streams)
        self.start_up = np.zeros(n_streams, dtype=np.int64)
        self.start_down = np.zeros(n_streams, dtype=np.int64)
        self.alarms = np.zeros(n_streams, dtype=bool)
        self.direction = np.zeros(n_streams, dtype=np.int64)
        self.change_point = np.full(n_streams, -1, dtype=np.int64)
        self.drift_detected = False

    def update(self, z: ArrayLike, start: ArrayLike | None = None) -> bool:
        """Feed one statistic per stream (NaN: none); True when any stream alarms."""
        z = _streams(z, self.n_streams)
        label = _labels(start, self.t, self.n_streams)
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
        is_down = (down > self.h) & ~is_up
        self.alarms = is_up | is_down
        self.direction = is_up.astype(np.int64) - is_down.astype(np.int64)
        self.change_point = np.where(is_up, self.start_up, np.where(is_down, self.start_down, -1))
        self.t += 1
        self.drift_detected = bool(self.alarms.any())
        return self.drift_detected

    @property
    def statistic(self) -> FloatArray:
        """max(S+, S-) per stream."""
        return np.maximum(self.s_up, self.s_down)

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        arrays = ("s_up", "s_down", "start_up", "start_down", "alarms", "direction", "change_point")
        return {"k": self.k, "h": self.h, "n_streams": self.n_streams, "t": self.t} | {
            name: getattr(self, name).tolist() for name in arrays
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        obj = cls(state["k"], state["h"], state["n_streams"])
        obj.t = state["t"]
        for name in ("s_up", "s_down"):
            setattr(obj, name, np.asarray(state[name], dtype=np.float64))
        for name in ("start_up", "start_down", "direction", "change_point"):
            setattr(obj, name, np.asarray(state[name], dtype=np.int64))
        obj.alarms = np.asarray(state["alarms"], dtype=bool)
        obj.drift_detected = bool(obj.alarms.any())
        return obj


class PageHinkley:
    """river.drift.PageHinkley for many streams at once: the same arithmetic, hence the same detections.

    Unlike CUSUM it centres each stream on its own running mean (since the last alarm), so it needs no
    reference but `min_instances` observations. The change point is the label of the observation after the
    extreme of the cumulative sum. A NaN leaves its stream untouched.

    >>> ph = PageHinkley(min_instances=5, delta=0.5, threshold=3.0, alpha=1.0)
    >>> next(i for i, z in enumerate([0.0] * 10 + [3.0] * 5) if ph.update(z)), ph.change_point.tolist()
    (11, [10])
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
        self.min_instances, self.delta, self.threshold = min_instances, float(delta), float(threshold)
        self.alpha, self.mode, self.n_streams = float(alpha), mode, int(n_streams)
        self.t = 0
        self.n = np.zeros(n_streams)
        self.mean = np.zeros(n_streams)
        self.sum_up = np.zeros(n_streams)
        self.sum_down = np.zeros(n_streams)
        self.min_up = np.full(n_streams, np.inf)
        self.max_down = np.full(n_streams, -1.0)
        self.start_up = np.zeros(n_streams, dtype=np.int64)
        self.start_down = np.zeros(n_streams, dtype=np.int64)
        self.at_min = np.ones(n_streams, dtype=bool)
        self.at_max = np.ones(n_streams, dtype=bool)
        self.alarms = np.zeros(n_streams, dtype=bool)
        self.direction = np.zeros(n_streams, dtype=np.int64)
        self.change_point = np.full(n_streams, -1, dtype=np.int64)
        self.drift_detected = False

    def _reset(self, mask: NDArray[np.bool_]) -> None:
        for name, value in (("n", 0.0), ("mean", 0.0), ("sum_up", 0.0), ("sum_down", 0.0)):
            getattr(self, name)[mask] = value
        self.min_up[mask] = np.inf
        self.max_down[mask] = -1.0
        self.at_min[mask] = True
        self.at_max[mask] = True

    def update(self, x: ArrayLike, start: ArrayLike | None = None) -> bool:
        """Feed one value per stream (NaN: none); True when any stream alarms."""
        x = _streams(x, self.n_streams)
        label = _labels(start, self.t, self.n_streams)
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
        is_down = ready & (self.mode != "up") & (self.test_down > self.threshold) & ~is_up
        self.alarms = is_up | is_down
        self.direction = is_up.astype(np.int64) - is_down.astype(np.int64)
        self.change_point = np.where(is_up, self.start_up, np.where(is_down, self.start_down, -1))
        self.t += 1
        self.drift_detected = bool(self.alarms.any())
        return self.drift_detected

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
        arrays = ("n", "mean", "sum_up", "sum_down", "max_down", "start_up", "start_down")
        flags = ("at_min", "at_max", "alarms", "direction", "change_point")
        return {
            "config": config,
            "t": self.t,
            "min_up": np.where(self.n > 0, self.min_up, 0.0).tolist(),
        } | {name: getattr(self, name).tolist() for name in (*arrays, *flags)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        obj = cls(**state["config"])
        obj.t = state["t"]
        for name in ("n", "mean", "sum_up", "sum_down", "max_down"):
            setattr(obj, name, np.asarray(state[name], dtype=np.float64))
        obj.min_up = np.where(obj.n > 0, np.asarray(state["min_up"], dtype=np.float64), np.inf)
        for name in ("start_up", "start_down", "direction", "change_point"):
            setattr(obj, name, np.asarray(state[name], dtype=np.int64))
        for name in ("at_min", "at_max", "alarms"):
            setattr(obj, name, np.asarray(state[name], dtype=bool))
        obj.drift_detected = bool(obj.alarms.any())
        return obj


def spread_errors(labeled: int, errors: int) -> NDArray[np.int64]:
    """The 0/1 sequence a tick's error count stands for: `errors` ones spread evenly over `labeled` events.

    A tick keeps counts, not order, so the order is chosen: position i is an error iff
    floor((i + 1) * errors / labeled) > floor(i * errors / labeled). That is a constant error rate within
    the tick, deterministic, and it never front- or back-loads errors (which would bias detection by up
    to one tick either way).

    >>> spread_errors(10, 3).tolist()
    [0, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    """
    if not 0 <= errors <= labeled:
        raise ValueError("need 0 <= errors <= labeled")
    i = np.arange(labeled + 1, dtype=np.int64)
    return np.diff(i * errors // max(labeled, 1))


class _RiverTicks:
    """Feeds one river detector from ticks and remembers where in the fed sequence it fired.

    State is the pickled river detector (river has no other serialisation; its ADWIN lives in Rust):
    load only checkpoints this process family wrote.
    """

    river_class: ClassVar[type[DriftDetector]]

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.detector = self.river_class(**params)
        self.n_fed = 0
        self.detections: list[int] = []
        self.change_points: list[int | None] = []
        self.drift_detected = False

    def _change_point(self, position: int) -> int | None:
        return None

    def feed(self, values: Iterable[float]) -> bool:
        """Feed values in order; True when the detector fired on any of them."""
        self.detections, self.change_points = [], []
        for x in values:
            self.detector.update(x)
            if self.detector.drift_detected:
                self.detections.append(self.n_fed)
                self.change_points.append(self._change_point(self.n_fed))
            self.n_fed += 1
        self.drift_detected = bool(self.detections)
        return self.drift_detected

    def update(self, x: float) -> bool:
        """Feed one per-tick value (e.g. a standardised tick mean)."""
        return self.feed((x,))

    def update_errors(self, labeled: int, errors: int) -> bool:
        """Feed a tick's labelled outcomes as the 0/1 error sequence `spread_errors(labeled, errors)`."""
        return self.feed(spread_errors(labeled, errors).tolist())

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: parameters, counters and the base64-pickled river detector."""
        return {
            "params": self.params,
            "n_fed": self.n_fed,
            "detections": self.detections,
            "change_points": self.change_points,
            "detector": base64.b64encode(pickle.dumps(self.detector)).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        obj = cls(**state["params"])
        obj.detector = pickle.loads(base64.b64decode(state["detector"]))
        obj.n_fed = state["n_fed"]
        obj.detections = list(state["detections"])
        obj.change_points = list(state["change_points"])
        obj.drift_detected = bool(obj.detections)
        return obj


class ADWINTicks(_RiverTicks):
    """river's ADWIN fed per tick; its change point is the start of the window it keeps after the cut.

    False-alarm control: ADWIN's `delta` (a bound on the chance that a cut is spurious).

    >>> adwin = ADWINTicks(delta=0.002)
    >>> next(t for t, z in enumerate([0.0, 0.1, -0.1] * 20 + [3.0] * 40) if adwin.update(z)), adwin.change_points
    (95, [48])
    """

    river_class = drift.ADWIN

    def _change_point(self, position: int) -> int | None:
        return position - int(self.detector.width) + 1


class DDMTicks(_RiverTicks):
    """river's DDM on a tick's error sequence; alarms when p + s exceeds p_min + 3 s_min (by default).

    >>> ddm = DDMTicks()
    >>> [t for t, e in enumerate([10] * 10 + [90] * 3) if ddm.update_errors(100, e)]
    [10]
    """

    river_class = drift.binary.DDM


class EDDMTicks(_RiverTicks):
    """river's EDDM on a tick's error sequence; watches the distance between errors shrinking.

    >>> eddm = EDDMTicks()
    >>> [t for t, e in enumerate([10] * 10 + [90] * 3) if eddm.update_errors(100, e)]
    [11]
    """

    river_class = drift.binary.EDDM


class HDDMATicks(_RiverTicks):
    """river's HDDMA (Hoeffding bound on averages) on a tick's error sequence.

    >>> hddm = HDDMATicks()
    >>> [t for t, e in enumerate([10] * 10 + [90] * 3) if hddm.update_errors(100, e)]
    [10]
    """

    river_class = drift.binary.HDDMA


class HDDMWTicks(_RiverTicks):
    """river's HDDMW (McDiarmid bound on EWMA) on a tick's error sequence.

    >>> hddm = HDDMWTicks()
    >>> [t for t, e in enumerate([10] * 10 + [90] * 3) if hddm.update_errors(100, e)]
    [10]
    """

    river_class = drift.binary.HDDMW


class Moments(NamedTuple):
    """A stream's count and mean in one tick (a NumericSummary has both, with more)."""

    count: float
    mean: float


def _hist_moments(hist: ArrayLike) -> tuple[float, float, float]:
    """count, mean and m2 of a [0, 1] histogram's bin midpoints (the binned score, exact for it)."""
    h = np.asarray(hist, dtype=np.float64)
    mid = (np.arange(h.size) + 0.5) / h.size
    count = float(h.sum())
    mean = float(h @ mid / count) if count else 0.0
    return count, mean, float(h @ (mid - mean) ** 2)


def _score_moments(summary: WindowSummary) -> tuple[float, float, float] | None:
    if summary.classifier is not None:
        return _hist_moments(summary.classifier.score_hist)
    if summary.regression is not None:
        p = summary.regression.prediction
        return float(p.count), float(p.mean), float(p.m2)
    return None


def _errors(summary: WindowSummary) -> tuple[int, int]:
    c = summary.classifier
    if c is None or c.labeled == 0:
        return 0, 0
    confusion = np.asarray(c.confusion)
    labeled = int(confusion.sum())
    return labeled, labeled - int(np.trace(confusion))


@dataclass(frozen=True, slots=True)
class TickStats:
    """One tick in plain numbers: per-stream (count, mean), and the labelled outcome counts.

    `score` is the binned classifier score (midpoints of `score_hist`) or the regression prediction.

    >>> TickStats({"age": Moments(100, 41.5)}, labeled=20, errors=3).errors
    3
    """

    numeric: Mapping[str, Moments] = field(default_factory=dict)
    score: Moments | None = None
    labeled: int = 0
    errors: int = 0

    @classmethod
    def from_summary(cls, summary: WindowSummary) -> TickStats:
        """Read the `WindowSummary` of one tick."""
        numeric = {name: Moments(float(s.count), float(s.mean)) for name, s in summary.numeric.items()}
        score = _score_moments(summary)
        labeled, errors = _errors(summary)
        return cls(numeric, None if score is None else Moments(score[0], score[1]), labeled, errors)


SCORE, ERROR_RATE = "score", "error_rate"


@dataclass(frozen=True, slots=True)
class TickReference:
    """What in-control looks like: (mean, sd) per numeric feature and of the score, and the error rate.

    Estimated from reference data far larger than a tick: an error e in the reference mean biases every
    tick's z by e * sqrt(tick count) / sd, which the CUSUM accumulates.

    >>> TickReference({"age": (40.0, 12.0)}, error_rate=0.5).streams()
    [('age', 40.0, 12.0), ('error_rate', 0.5, 0.5)]
    """

    numeric: Mapping[str, tuple[float, float]]
    score: tuple[float, float] | None = None
    error_rate: float | None = None

    def streams(self) -> list[tuple[str, float, float]]:
        """(name, mean, sd) of every stream that can be standardised (finite mean, sd > 0)."""
        if SCORE in self.numeric or ERROR_RATE in self.numeric:
            raise ValueError(f"numeric features may not be named {SCORE!r} or {ERROR_RATE!r}")
        out = [(name, float(m), float(s)) for name, (m, s) in self.numeric.items()]
        if self.score is not None:
            out.append((SCORE, float(self.score[0]), float(self.score[1])))
        if self.error_rate is not None:
            p = float(self.error_rate)
            out.append((ERROR_RATE, p, math.sqrt(p * (1 - p))))
        return [(n, m, s) for n, m, s in out if math.isfinite(m) and math.isfinite(s) and s > 0]

    @classmethod
    def from_summary(cls, summary: WindowSummary) -> TickReference:
        """From the reference data's `WindowSummary` (sd with the n - 1 divisor)."""
        numeric = {
            name: (float(s.mean), math.sqrt(s.m2 / (s.count - 1))) for name, s in summary.numeric.items() if s.count > 1
        }
        moments = _score_moments(summary)
        score = None if moments is None or moments[0] < 2 else (moments[1], math.sqrt(moments[2] / (moments[0] - 1)))
        labeled, errors = _errors(summary)
        return cls(numeric, score, errors / labeled if labeled else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "numeric": {name: list(v) for name, v in self.numeric.items()},
            "score": None if self.score is None else list(self.score),
            "error_rate": self.error_rate,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TickReference:
        score = d["score"]
        numeric = {name: (float(v[0]), float(v[1])) for name, v in d["numeric"].items()}
        return cls(numeric, None if score is None else (float(score[0]), float(score[1])), d["error_rate"])


BUDGETED = ("cusum", "page_hinkley")
ERROR_DETECTORS: Mapping[str, type[_RiverTicks]] = {
    "ddm": DDMTicks,
    "eddm": EDDMTicks,
    "hddm_a": HDDMATicks,
    "hddm_w": HDDMWTicks,
}
METHODS = (*BUDGETED, "adwin", *ERROR_DETECTORS)


class TickChangeDetector:
    """Sequential change detection per tick on every numeric feature's mean, the score mean and the error rate.

    Each stream's tick statistics are pooled until `min_count` events (the error rate: also until
    count * p0 * (1 - p0) >= 10, so its skewness is <= 0.32), then standardised against the reference.
    False-alarm budget: `false_alarm_rate` is the expected number of false alarms per tick of the whole
    detector. With d streams and m budgeted methods ("cusum", "page_hinkley") each chart gets
    ARL0 = m * d / false_alarm_rate ticks (Bonferroni: the alarm rates of the m * d charts add up to at
    most the budget), with h = `cusum_threshold(ARL0, k)`; Page-Hinkley uses delta = k, threshold = h,
    no forgetting, which measures at least as conservative. "adwin" (on z), "ddm", "eddm", "hddm_a" and
    "hddm_w" (on the spread error sequence) keep river's own false-alarm control and are not budgeted.
    The first `warmup_ticks` ticks are ignored: after a (re)start or a new model version they often
    replay a backlog or carry canary traffic. An alarmed chart restarts from zero at the next tick.
    The CLT makes z normal; a skewed feature with few events per tick alarms more often than budgeted
    (measured in detectors/README.md), a larger `min_count` fixes that at the cost of delay.

    Findings (only alarms, all breached): "cusum" / "page_hinkley" carry the chart statistic and h, with
    detail tick, change_tick (first tick of the data that began the alarming run) and direction; "adwin"
    carries the mean z of the window ADWIN kept, change_tick = tick - observations kept after the cut
    (exact without pooling, else the latest possible); the error detectors carry the tick's error rate,
    change_tick None and the alarm's positions in the tick's spread error sequence.

    >>> import numpy as np
    >>> ref = TickReference({"x": (0.0, 1.0)})
    >>> det = TickChangeDetector(ref, false_alarm_rate=1e-4, k=1.0, warmup_ticks=0)
    >>> rng = np.random.default_rng(0)
    >>> for tick in range(20):
    ...     x = rng.normal(0.5 if tick >= 10 else 0.0, 1.0, 50)
    ...     found = det.update(TickStats({"x": Moments(50, x.mean())}))
    ...     if found:
    ...         break
    >>> found[0].metric, found[0].feature, found[0].detail["tick"], found[0].detail["change_tick"]
    ('cusum', 'x', 11, 10)
    """

    def __init__(
        self,
        reference: TickReference,
        false_alarm_rate: float = 1e-4,
        k: float = 1.0,
        warmup_ticks: int = 1,
        min_count: int = 30,
        methods: Sequence[str] = ("cusum",),
    ) -> None:
        if not 0 < false_alarm_rate < 1:
            raise ValueError("false_alarm_rate must be in (0, 1)")
        if unknown := set(methods) - set(METHODS):
            raise ValueError(f"unknown methods {sorted(unknown)}; known: {METHODS}")
        self.reference, self.false_alarm_rate, self.k = reference, false_alarm_rate, float(k)
        self.warmup_ticks, self.min_count, self.methods = warmup_ticks, min_count, tuple(methods)
        streams = reference.streams()
        if not streams:
            raise ValueError("the reference has no stream with a positive sd")
        self.names = [s[0] for s in streams]
        self.mu = np.array([s[1] for s in streams])
        self.sd = np.array([s[2] for s in streams])
        self.need = np.array(
            [max(min_count, math.ceil(10 / (m * (1 - m)))) if n == ERROR_RATE else min_count for n, m, _ in streams],
            dtype=np.float64,
        )
        d, budgeted = len(streams), sum(m in BUDGETED for m in self.methods)
        self.arl0 = max(budgeted, 1) * d / false_alarm_rate
        self.h = cusum_threshold(self.arl0, self.k)
        self.tick = 0
        self.pool_n = np.zeros(d)
        self.pool_sum = np.zeros(d)
        self.pool_start = np.full(d, -1, dtype=np.int64)
        self.cusum = CUSUM(self.k, self.h, d)
        self.page_hinkley = PageHinkley(1, self.k, self.h, 1.0, "both", d)
        self.adwin = [ADWINTicks() for _ in range(d)] if "adwin" in self.methods else []
        self.error_detectors = {m: ERROR_DETECTORS[m]() for m in self.methods if m in ERROR_DETECTORS}
        self.drift_detected = False

    def _observe(self, tick: TickStats) -> tuple[FloatArray, FloatArray]:
        count, mean = np.zeros(len(self.names)), np.zeros(len(self.names))
        for i, name in enumerate(self.names):
            if name == ERROR_RATE:
                count[i], mean[i] = tick.labeled, tick.errors / max(tick.labeled, 1)
            elif name == SCORE:
                count[i], mean[i] = (0.0, 0.0) if tick.score is None else tick.score
            elif name in tick.numeric:
                count[i], mean[i] = tick.numeric[name]
        return count, mean

    def _pooled_z(self, tick: TickStats) -> tuple[FloatArray, IntArray]:
        count, mean = self._observe(tick)
        has = count > 0
        self.pool_start = np.where(has & (self.pool_start < 0), self.tick, self.pool_start)
        self.pool_n += count
        self.pool_sum += np.where(has, count * mean, 0.0)
        ready = self.pool_n >= self.need
        n = np.where(ready, self.pool_n, 1.0)
        z = np.where(ready, (self.pool_sum / n - self.mu) / (self.sd / np.sqrt(n)), np.nan)
        start = self.pool_start.copy()
        self.pool_n[ready], self.pool_sum[ready], self.pool_start[ready] = 0.0, 0.0, -1
        return z, start

    def _chart_findings(self, metric: str, chart: CUSUM | PageHinkley, value: FloatArray) -> list[Finding]:
        return [
            Finding(
                metric,
                float(value[i]),
                self.h,
                True,
                self.names[i],
                detail={
                    "tick": self.tick,
                    "change_tick": int(chart.change_point[i]),
                    "direction": "up" if chart.direction[i] > 0 else "down",
                    "k": self.k,
                    "arl0_per_chart": self.arl0,
                    "false_alarm_rate": self.false_alarm_rate,
                    "streams": len(self.names),
                },
            )
            for i in np.flatnonzero(chart.alarms)
        ]

    def update(self, summary: TickStats | WindowSummary) -> list[Finding]:
        """Feed one tick (a `TickStats` or a tick's `WindowSummary`); one breached Finding per alarm."""
        tick = summary if isinstance(summary, TickStats) else TickStats.from_summary(summary)
        findings: list[Finding] = []
        if self.tick >= self.warmup_ticks:
            findings = self._detect(tick)
        self.drift_detected = bool(findings)
        self.tick += 1
        return findings

    def _detect(self, tick: TickStats) -> list[Finding]:
        z, start = self._pooled_z(tick)
        findings: list[Finding] = []
        if "cusum" in self.methods:
            self.cusum.update(z, start)
            findings += self._chart_findings("cusum", self.cusum, self.cusum.statistic)
        if "page_hinkley" in self.methods:
            self.page_hinkley.update(z, start)
            test = np.where(self.page_hinkley.direction > 0, self.page_hinkley.test_up, self.page_hinkley.test_down)
            findings += self._chart_findings("page_hinkley", self.page_hinkley, test)
        if self.adwin:
            findings += self._adwin_findings(z)
        if tick.labeled:
            findings += self._error_findings(tick)
        return findings

    def _adwin_findings(self, z: FloatArray) -> list[Finding]:
        findings = []
        for i in np.flatnonzero(~np.isnan(z)):
            adwin = self.adwin[i]
            if adwin.update(float(z[i])):
                kept = adwin.n_fed - 1 - cast(int, adwin.change_points[-1])
                detail = {"tick": self.tick, "change_tick": self.tick - kept, "kept_observations": kept + 1}
                findings.append(Finding("adwin", adwin.detector.estimation, None, True, self.names[i], detail=detail))
        return findings

    def _error_findings(self, tick: TickStats) -> list[Finding]:
        findings = []
        for metric, detector in self.error_detectors.items():
            if detector.update_errors(tick.labeled, tick.errors):
                first = detector.n_fed - tick.labeled
                detail = {
                    "tick": self.tick,
                    "change_tick": None,
                    "positions_in_tick": [p - first for p in detector.detections],
                }
                findings.append(Finding(metric, tick.errors / tick.labeled, None, True, ERROR_RATE, detail=detail))
        return findings

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: configuration, tick counter, pools and every chart's state."""
        return {
            "reference": self.reference.to_dict(),
            "false_alarm_rate": self.false_alarm_rate,
            "k": self.k,
            "warmup_ticks": self.warmup_ticks,
            "min_count": self.min_count,
            "methods": list(self.methods),
            "tick": self.tick,
            "pool_n": self.pool_n.tolist(),
            "pool_sum": self.pool_sum.tolist(),
            "pool_start": self.pool_start.tolist(),
            "cusum": self.cusum.state_dict(),
            "page_hinkley": self.page_hinkley.state_dict(),
            "adwin": [a.state_dict() for a in self.adwin],
            "error_detectors": {m: d.state_dict() for m, d in self.error_detectors.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        config = ("false_alarm_rate", "k", "warmup_ticks", "min_count", "methods")
        obj = cls(TickReference.from_dict(state["reference"]), **{c: state[c] for c in config})
        obj.tick = state["tick"]
        obj.pool_n = np.asarray(state["pool_n"], dtype=np.float64)
        obj.pool_sum = np.asarray(state["pool_sum"], dtype=np.float64)
        obj.pool_start = np.asarray(state["pool_start"], dtype=np.int64)
        obj.cusum = CUSUM.from_state(state["cusum"])
        obj.page_hinkley = PageHinkley.from_state(state["page_hinkley"])
        obj.adwin = [ADWINTicks.from_state(a) for a in state["adwin"]]
        obj.error_detectors = {m: ERROR_DETECTORS[m].from_state(s) for m, s in state["error_detectors"].items()}
        return obj
