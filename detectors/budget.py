"""One false-alarm budget per model, in time, spent across its sequential detection and its window families.

A user experiences false alarms as pages per model per month, not as a level per test. Each detector family
used to run at its own level per window (drift BH at 1 %, slices at FDR 5 %, quality at 0.1 %, ...), so the
rate a user saw was their sum, times the windows in a day. `FalseAlarmBudget` turns one number a user can
reason about, "at most `alarms` false alarms per `days` of stationary traffic", into the level each part runs
at, by alpha-spending (a union bound, so the parts need not be independent):

- the sequential (tick-level) detection gets ``sequential_share`` of the rate, as expected false alarms per
  tick of the whole detector (`TickChangeDetector` splits it further across its streams and methods);
- the window-level families share the rest equally: each family's level per window is the window's share
  divided by the number of families that run for the model (Bonferroni across families); within a family
  its own multiple-testing control (BH across features, Bonferroni across metrics, BH across slices) holds
  the family's false-alarm probability per window at that level.

The expected number of false alarms over T seconds of stationary traffic is then at most
``alarms * T / (days * 86400)`` (the union bound is exact for expectations when every family's error rate
equals its level, and conservative otherwise).

Parameters
----------
alarms
    Expected false alarms per model in `days` of stationary traffic (> 0).
days
    The period the budget is stated over (> 0).
sequential_share
    The part of the budget spent on the sequential (tick-level) detection, in [0, 1]; the rest goes to the
    window-level families.

Examples
--------
>>> budget = FalseAlarmBudget()                      # one false alarm per model per 30 days
>>> f"{budget.per_second():.3e}"
'3.858e-07'
>>> f"{budget.per_window(60, families=9):.3e}"      # each of 9 families, per 60 s window
'1.286e-06'
>>> f"{budget.per_tick(5):.3e}"                     # the whole sequential detector, per 5 s tick
'9.645e-07'

References
----------
[^1]: C. E. Bonferroni. 1936. Teoria statistica delle classi e calcolo delle probabilita. Pubblicazioni del R.
Istituto Superiore di Scienze Economiche e Commerciali di Firenze 8, 3-62.
[^2]: K. K. G. Lan and D. L. DeMets. 1983. Discrete sequential boundaries for clinical trials. Biometrika 70, 3
(1983), 659-663 (alpha spending).
[^3]: Y. Benjamini and Y. Hochberg. 1995. Controlling the false discovery rate. Journal of the Royal
Statistical Society B 57, 1 (1995), 289-300.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class FalseAlarmBudget:
    """Expected false alarms per model over a period of stationary traffic; see the module docstring.

    >>> FalseAlarmBudget(alarms=0)
    Traceback (most recent call last):
    ...
    ValueError: alarms must be a finite number > 0 (got 0)
    """

    alarms: float = 1.0
    days: float = 30.0
    sequential_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("alarms", "days"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 (got {value!r})")
        share = self.sequential_share
        if not (isinstance(share, int | float) and 0 <= share <= 1):
            raise ValueError(f"sequential_share must be in [0, 1] (got {share!r})")

    def per_second(self) -> float:
        """Expected false alarms per second of stationary traffic, all detection of the model together.

        >>> FalseAlarmBudget(alarms=86_400, days=1).per_second()
        1.0
        """
        return self.alarms / (self.days * SECONDS_PER_DAY)

    def per_tick(self, tick_seconds: float) -> float:
        """Expected false alarms per tick of the model's whole sequential detection (all streams and methods).

        >>> FalseAlarmBudget(alarms=86_400, days=1, sequential_share=0.25).per_tick(4)
        1.0
        """
        if not tick_seconds > 0:
            raise ValueError(f"tick_seconds must be > 0 (got {tick_seconds!r})")
        return self.sequential_share * self.per_second() * tick_seconds

    def per_window(self, window_seconds: float, families: int) -> float:
        """The false-alarm level per window of each of `families` window-level families (Bonferroni across them).

        >>> FalseAlarmBudget(alarms=8_640, days=1, sequential_share=0.5).per_window(60, families=10)
        0.3
        """
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0 (got {window_seconds!r})")
        if families < 1:
            raise ValueError(f"families must be >= 1 (got {families!r})")
        return (1 - self.sequential_share) * self.per_second() * window_seconds / families
