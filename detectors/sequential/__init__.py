"""Sequential change detection on short ticks, so a clear change is flagged within seconds, not a window.

A tick is a short sub-window (a few seconds) summarised like any window. Each monitored stream (a numeric
feature's mean, the model score's mean, the error rate) gives one standardised statistic per tick,
z_t = (tick mean - reference mean) / (reference sd / sqrt(tick count)), which is N(0, 1) in control by the
central limit theorem whatever the tick's size. Page's CUSUM on z_t detects a persistent shift fastest for
a given in-control average run length (ARL0: ticks between false alarms), and that ARL0 can be computed,
so the false-alarm rate is set, not hoped for. The tick index is the only time: there are no clocks here.

Modules, one concern each:

- `arl`: the CUSUM's in-control ARL (exact and Siegmund's) and the threshold for a chosen ARL0, also when the
  in-control mean is estimated from a reference.
- `chart`: the alarm bookkeeping the vectorised charts share.
- `cusum`: `CUSUM`, the two-sided Page CUSUM over many streams.
- `page_hinkley`: `PageHinkley`, river's Page-Hinkley over many streams.
- `river_ticks`: `RiverTicks`, any river drift detector fed per tick, and `spread_errors`.
- `tick_stats`: `TickStats` (one tick) and `TickReference` (in control), read from window summaries.
- `tick_detector`: `TickChangeDetector`, which pools ticks, sets the false-alarm budget and reports.

This package re-exports the public names, so `from detectors.sequential import X` is all a caller needs.
"""

from driftline.detectors.sequential.arl import (
    SIEGMUND_RHO,
    cusum_arl,
    cusum_threshold,
    cusum_threshold_estimated,
    siegmund_arl,
)
from driftline.detectors.sequential.chart import FloatArray, IntArray
from driftline.detectors.sequential.cusum import CUSUM
from driftline.detectors.sequential.page_hinkley import PageHinkley
from driftline.detectors.sequential.river_ticks import (
    ERROR_DETECTORS,
    ADWINTicks,
    DDMTicks,
    EDDMTicks,
    HDDMATicks,
    HDDMWTicks,
    RiverTicks,
    spread_errors,
)
from driftline.detectors.sequential.tick_detector import BUDGETED, METHODS, TickChangeDetector
from driftline.detectors.sequential.tick_stats import (
    ERROR_RATE,
    SCORE,
    Moments,
    TickReference,
    TickStats,
    hist_moments,
    proportion_stream,
)

__all__ = [
    "BUDGETED",
    "CUSUM",
    "ERROR_DETECTORS",
    "ERROR_RATE",
    "METHODS",
    "SCORE",
    "SIEGMUND_RHO",
    "ADWINTicks",
    "DDMTicks",
    "EDDMTicks",
    "FloatArray",
    "HDDMATicks",
    "HDDMWTicks",
    "IntArray",
    "Moments",
    "PageHinkley",
    "RiverTicks",
    "TickChangeDetector",
    "TickReference",
    "TickStats",
    "cusum_arl",
    "cusum_threshold",
    "cusum_threshold_estimated",
    "hist_moments",
    "proportion_stream",
    "siegmund_arl",
    "spread_errors",
]
