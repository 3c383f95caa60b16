"""`TickChangeDetector`: every stream's tick means standardised against the reference, fed to the charts.

It owns the tick-level pooling, the false-alarm budget shared by the charts, and the findings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self, cast

import numpy as np

from driftline.detectors.findings import Finding
from driftline.detectors.sequential.arl import cusum_threshold, cusum_threshold_estimated
from driftline.detectors.sequential.chart import FloatArray, IntArray
from driftline.detectors.sequential.cusum import CUSUM
from driftline.detectors.sequential.page_hinkley import PageHinkley
from driftline.detectors.sequential.river_ticks import ERROR_DETECTORS, ADWINTicks
from driftline.detectors.sequential.tick_stats import ERROR_RATE, SCORE, TickReference, TickStats
from driftline.detectors.summaries import WindowSummary

BUDGETED = ("cusum", "page_hinkley")
"""The methods whose thresholds come from the false-alarm budget."""
METHODS = (*BUDGETED, "adwin", *ERROR_DETECTORS)
MAX_POOL_SHARE = 0.05  # of a stream's reference events one pooled z may need (need / n_ref); beyond: unwatched


class TickChangeDetector:
    """Sequential change detection per tick on every numeric feature's mean, the score mean and the error rate.

    Each stream's tick statistics are pooled until `min_count` events (a Bernoulli stream, the error rate or
    a category's share: also until count * p0 * (1 - p0) >= 10, so its skewness is <= 0.32), then
    standardised against the reference.
    False-alarm budget: `false_alarm_rate` is the expected number of false alarms per tick of the whole
    detector. With d streams and m budgeted methods ("cusum", "page_hinkley") each chart gets
    ARL0 = m * d / false_alarm_rate ticks (Bonferroni: the alarm rates of the m * d charts add up to at
    most the budget), with h = `cusum_threshold(ARL0, k)`; Page-Hinkley uses delta = k, threshold = h,
    no forgetting, which measures at least as conservative. "adwin" (on z), "ddm", "eddm", "hddm_a" and
    "hddm_w" (on the spread error sequence) keep river's own false-alarm control and are not budgeted.
    The reference's own error: its mean is estimated from n_ref events, an error shared by every tick, so
    the z of a tick of n events carries the same offset, of sd sqrt(n / n_ref), tick after tick, which the
    CUSUM accumulates as if it were a shift. So a z weighs at most `reference_share` * n_ref events,
    z = (mean - mu) / (sd / sqrt(min(n, cap))) with cap = max(need, reference_share * n_ref), and h is set
    for the false-alarm rate averaged over that offset (`cusum_threshold_estimated` with offset variance
    v = the largest cap / n_ref over the streams, 0.02 by default: h 8.90 instead of 7.27 at ARL0 6.25e6).
    A stream whose pool must hold more than `MAX_POOL_SHARE` (or `reference_share`, if larger) of its
    reference events (a rare category, a small reference) is not watched (`unwatched`): its offset needs an
    h that grows without bound (v = 0.17, a 1 % category in a 6,000-event reference, took minutes to solve
    and stalled the merge stage).
    Why 2 %: with a 12,000-event reference it flags 0.2 sd in 4.2 ticks and 0.5 sd in 1.3 (1 %: 6.7 and 1.8;
    3 %: 3.7 and 1.2, with h growing fast beyond).
    A pool above the cap gives a z of sd below 1 and a smaller offset: fewer false alarms than budgeted,
    never more; the charts then see shifts of sd / sqrt(cap) and more (a larger reference, more power).
    The first `warmup_ticks` ticks are ignored: after a (re)start or a new model version they often
    replay a backlog or carry canary traffic. An alarmed chart restarts from zero at the next tick.
    The CLT makes z normal; a skewed feature with few events per tick alarms more often than budgeted
    (measured in detectors/README.md), a larger `min_count` fixes that at the cost of delay.

    Findings (only alarms, all breached): "cusum" / "page_hinkley" carry the chart statistic and h, with
    detail tick, change_tick (first tick of the data that began the alarming run) and direction; "adwin"
    carries the mean z of the window ADWIN kept, change_tick = tick - observations kept after the cut
    (exact without pooling, else the latest possible); the error detectors carry the tick's error rate,
    change_tick None and the alarm's positions in the tick's spread error sequence.

    Parameters
    ----------
    reference
        The in-control means and sds; its streams are the ones watched.
    false_alarm_rate
        Expected false alarms per tick of the whole detector, in (0, 1).
    k
        The CUSUM allowance (and Page-Hinkley's delta), in z units: half the shift tuned to.
    warmup_ticks
        Ticks ignored after a (re)start.
    min_count
        Events pooled per stream before its z is computed.
    methods
        Any of `METHODS`.
    reference_share
        The largest share of a stream's reference events one z may weigh, in (0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.detectors.sequential import Moments
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

    References
    ----------
    [^1]: E. S. Page. 1954. Continuous Inspection Schemes. Biometrika 41, 1/2 (1954), 100-115.
    """

    def __init__(
        self,
        reference: TickReference,
        false_alarm_rate: float = 1e-4,
        k: float = 1.0,
        warmup_ticks: int = 1,
        min_count: int = 30,
        methods: Sequence[str] = ("cusum",),
        reference_share: float = 0.02,
    ) -> None:
        if not 0 < false_alarm_rate < 1:
            raise ValueError("false_alarm_rate must be in (0, 1)")
        if not 0 < reference_share <= 1:
            raise ValueError("reference_share must be in (0, 1]")
        if unknown := set(methods) - set(METHODS):
            raise ValueError(f"unknown methods {sorted(unknown)}; known: {METHODS}")
        self.reference, self.false_alarm_rate, self.k = reference, false_alarm_rate, float(k)
        self.warmup_ticks, self.min_count, self.methods = warmup_ticks, min_count, tuple(methods)
        self.reference_share = float(reference_share)
        streams, self.unwatched = [], []
        for name, m, sd in reference.streams():
            need = max(min_count, math.ceil(10 / (m * (1 - m)))) if reference.is_bernoulli(name) else min_count
            # a z pooled from a large share of the stream's reference events carries an offset h cannot budget
            # (h grows without bound): its reference is too small to judge ticks (a rare category)
            if need > max(self.reference_share, MAX_POOL_SHARE) * reference.count(name):
                self.unwatched.append(name)
            else:
                streams.append((name, m, sd, need))
        if not streams:
            raise ValueError("the reference has no stream with a positive sd and enough events to judge a tick")
        self.names = [s[0] for s in streams]
        self.mu = np.array([s[1] for s in streams])
        self.sd = np.array([s[2] for s in streams])
        self.need = np.array([s[3] for s in streams], dtype=np.float64)
        d, budgeted = len(streams), sum(m in BUDGETED for m in self.methods)
        self.arl0 = max(budgeted, 1) * d / false_alarm_rate
        ref_counts = np.array([reference.count(n) for n in self.names])
        self.cap = np.maximum(self.need, ref_counts * self.reference_share)
        known = np.isfinite(ref_counts)  # a reference of unknown size counts as exact: no offset
        offset_var = float(np.max(self.cap[known] / ref_counts[known], initial=0.0))
        self.h = cusum_threshold_estimated(self.arl0, self.k, offset_var) if offset_var > 0 else \
            cusum_threshold(self.arl0, self.k)
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
            elif name in tick.proportions:
                count[i], mean[i] = tick.proportions[name]
        return count, mean

    def _pooled_z(self, tick: TickStats) -> tuple[FloatArray, IntArray]:
        count, mean = self._observe(tick)
        has = count > 0
        self.pool_start = np.where(has & (self.pool_start < 0), self.tick, self.pool_start)
        self.pool_n += count
        self.pool_sum += np.where(has, count * mean, 0.0)
        ready = self.pool_n >= self.need
        n = np.where(ready, self.pool_n, 1.0)
        weight = np.minimum(n, self.cap)  # the reference's own error bounds what one z may weigh
        z = np.where(ready, (self.pool_sum / n - self.mu) / (self.sd / np.sqrt(weight)), np.nan)
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
            "reference_share": self.reference_share,
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
        obj = cls(TickReference.from_dict(state["reference"]), **{c: state[c] for c in config},
                  reference_share=state.get("reference_share", 0.02))
        obj.tick = state["tick"]
        obj.pool_n = np.asarray(state["pool_n"], dtype=np.float64)
        obj.pool_sum = np.asarray(state["pool_sum"], dtype=np.float64)
        obj.pool_start = np.asarray(state["pool_start"], dtype=np.int64)
        obj.cusum = CUSUM.from_state(state["cusum"])
        obj.page_hinkley = PageHinkley.from_state(state["page_hinkley"])
        obj.adwin = [ADWINTicks.from_state(a) for a in state["adwin"]]
        obj.error_detectors = {m: ERROR_DETECTORS[m].from_state(s) for m, s in state["error_detectors"].items()}
        return obj
