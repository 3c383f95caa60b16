"""One-sided tests that a window's quality dropped below its reference's, less a tolerated margin.

Shared by the labelled (`performance_drop`), label-free (`estimated_accuracy`) and per-slice
(`slice_accuracy`) detectors.
"""

from __future__ import annotations

import math


def normal_sf(z: float) -> float:
    """Standard normal upper tail, via erfc (accurate far into the tail, ~20x faster than scipy per call).

    >>> round(normal_sf(2.326), 4)
    0.01
    """
    return 0.5 * math.erfc(z / math.sqrt(2))


def _restricted_mle(p1: float, n1: int, p2: float, n2: int, delta: float) -> tuple[float, float]:
    """Maximum-likelihood (p1, p2) under p1 - p2 = delta: Farrington & Manning's (1990) cubic root."""
    if delta == 0:
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        return pooled, pooled
    theta = n2 / n1
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p2 + delta * (theta + 2))
    c = delta * delta + delta * (2 * p1 + theta + 1) + p1 + theta * p2
    d = -p1 * delta * (1 + delta)
    v = b**3 / (27 * a**3) - b * c / (6 * a * a) + d / (2 * a)
    u = math.copysign(math.sqrt(max(b * b / (9 * a * a) - c / (3 * a), 0.0)), v)
    w = (math.pi + math.acos(min(max(v / u**3, -1.0), 1.0))) / 3 if u != 0 else math.pi / 2
    r1 = min(max(2 * u * math.cos(w) - b / (3 * a), delta), 1.0)
    return r1, r1 - delta


def proportion_drop_pvalue(x_ref: int, n_ref: int, x_new: int, n_new: int, margin: float = 0.0) -> float:
    """One-sided p-value of H0: p_new >= p_ref - margin against H1: p_new < p_ref - margin.

    Farrington-Manning score test (variance at the maximum-likelihood proportions restricted to the null
    boundary, which keeps the level near 0 and 1 where a Wald test fails) with Gart-Nam's skewness
    correction: accuracies near 1 have a long lower tail, and without it a 200-event slice at 90% alarms at
    twice the nominal rate at alpha = 0.001 (the deep tail that Bonferroni/BH use). The tests enumerate
    both binomials to check the exact size. With margin 0 and equal sizes it is the pooled two-proportion
    z-test (z^2 = Pearson chi-squared).

    >>> round(proportion_drop_pvalue(900, 1000, 170, 200), 4)
    0.0222
    """
    if not 0 <= margin < 1:
        raise ValueError("margin must be in [0, 1)")
    p_ref, p_new = x_ref / n_ref, x_new / n_new
    r_ref, r_new = _restricted_mle(p_ref, n_ref, p_new, n_new, margin)
    var = r_ref * (1 - r_ref) / n_ref + r_new * (1 - r_new) / n_new
    diff = p_ref - p_new - margin
    if var == 0:
        return 0.5 if diff == 0 else float(diff < 0)
    z = diff / math.sqrt(var)
    third = r_ref * (1 - r_ref) * (1 - 2 * r_ref) / n_ref**2 - r_new * (1 - r_new) * (1 - 2 * r_new) / n_new**2
    a = third / (6 * var**1.5)
    if abs(a) > 1e-12:
        # Cornish-Fisher: the standardised statistic's quantile is z + a (z^2 - 1); invert it for z.
        disc = 1 + 4 * a * (a + z)
        z = (math.sqrt(disc) - 1) / (2 * a) if disc >= 0 else -1 / (2 * a)
    # A window at or above the boundary is no evidence of a drop, whatever the skew says.
    return normal_sf(z) if diff > 0 else max(normal_sf(z), 0.5)


def normal_drop_pvalue(ref: float, ref_var: float, new: float, new_var: float, margin: float = 0.0) -> float:
    """One-sided p-value of H0: new >= ref - margin for two independent, approximately normal estimates.

    >>> round(normal_drop_pvalue(0.9, 0.0001, 0.85, 0.0004), 4)
    0.0127
    """
    se = math.sqrt(ref_var + new_var)
    diff = ref - new - margin
    if se == 0:
        return 0.0 if diff > 0 else 1.0
    return normal_sf(diff / se)
