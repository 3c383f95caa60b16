"""The CUSUM's in-control average run length (ARL0) and the threshold that gives a chosen one.

This is what makes the false-alarm rate of `CUSUM` (and, conservatively, of `PageHinkley`) a setting
rather than a hope: `cusum_threshold` turns "one false alarm per ARL0 updates" into the threshold h.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, special

SIEGMUND_RHO = 1.166
"""Siegmund's correction 2 * 0.583: the expected overshoot of a N(0, 1) random walk over a boundary."""


def siegmund_arl(k: float, h: float, two_sided: bool = True) -> float:
    """Siegmund's approximation of the CUSUM's in-control ARL on iid N(0, 1) statistics.

    One side: (exp(2kb) - 2kb - 1) / (2k^2) with b = h + 1.166 (b^2 when k = 0); two symmetric sides
    halve it. Against the exact `cusum_arl` (for ARL0 in [1e3, 1e6]) it overstates the ARL by < 1 % for
    k <= 0.5, 5-8 % at k = 1 and 20-70 % at k = 2: a threshold from it alarms more often than asked, so
    `cusum_threshold` inverts `cusum_arl` by default.

    Parameters
    ----------
    k
        The allowance (half the shift, in standard deviations, the chart is tuned to).
    h
        The decision threshold.
    two_sided
        Whether the chart watches both directions (two symmetric one-sided charts).

    Examples
    --------
    >>> round(siegmund_arl(0.5, 4.0), 1)
    169.0

    References
    ----------
    [^1]: D. Siegmund. 1985. Sequential Analysis: Tests and Confidence Intervals. Springer.
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

    Parameters
    ----------
    k, h, two_sided
        As in `siegmund_arl`.
    nodes
        Quadrature nodes; None picks 32 + 8 * ceil(h).

    Examples
    --------
    >>> round(cusum_arl(0.5, 4.0), 1)
    167.7

    References
    ----------
    [^1]: E. S. Page. 1954. Continuous Inspection Schemes. Biometrika 41, 1/2 (1954), 100-115.
    """
    if k < 0 or h < 0:
        raise ValueError("k and h must be >= 0")
    one = _one_sided_arl(k, h, nodes)
    return one / 2 if two_sided else one


def _one_sided_arl(k: float, h: float, nodes: int | None = None) -> float:
    """`cusum_arl` of one side; any real k (a negative allowance: the chart drifts up)."""
    return float(_one_sided_arls(np.array([k]), h, nodes)[0])


@functools.lru_cache(maxsize=64)
def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(nodes)  # type: ignore[no-any-return]


def _one_sided_arls(ks: np.ndarray, h: float, nodes: int | None = None) -> np.ndarray:
    """`_one_sided_arl` for each allowance of ``ks``, the integral equations solved as one batch."""
    nodes = nodes or 32 + 8 * math.ceil(h)
    x, w = _legendre(nodes)
    y, w = (x + 1) * h / 2, w * h / 2
    u = np.concatenate(([0.0], y))
    shift = ks[:, None, None] - u[None, :, None]  # k - u, one matrix per allowance
    kernel = np.empty((len(ks), nodes + 1, nodes + 1))
    kernel[:, :, :1] = special.ndtr(shift)  # stats.norm.cdf without its per-call overhead
    kernel[:, :, 1:] = w * np.exp(-((y + shift) ** 2) / 2) / math.sqrt(2 * math.pi)
    return np.linalg.solve(np.eye(nodes + 1) - kernel, np.ones((len(ks), nodes + 1, 1)))[:, 0, 0]


@functools.lru_cache(maxsize=1024)  # a pure function of numbers that costs seconds; many models share them
def cusum_threshold(arl0: float, k: float = 1.0, method: str = "exact") -> float:
    """The threshold h at which the two-sided CUSUM with allowance k has in-control ARL `arl0` (in updates).

    `method="siegmund"` inverts `siegmund_arl`; the default `"exact"` inverts `cusum_arl`, whose measured
    ARL0 is at least `arl0` within sampling error (tests/detectors/test_sequential.py). Returns 0 when even
    h = 0 gives a longer ARL (large k).

    Parameters
    ----------
    arl0
        The wanted in-control ARL, > 1.
    k
        The allowance.
    method
        "exact" (`cusum_arl`) or "siegmund" (`siegmund_arl`).

    Examples
    --------
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
    # Siegmund's h is a close, cheap guess, so the bracket for the exact root needs few integral equations.
    hi = cusum_threshold(arl0, k, "siegmund") + 1.0 if method == "exact" else 1.0
    while gap(hi) < 0:
        hi += 1.0 if method == "exact" else hi
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12))


def _one_sided_rate(k: float, h: float, offset_var: float, points: int = 24) -> float:
    """1 / ARL of one side, averaged over an in-control mean b ~ N(0, offset_var) shared by every update."""
    if offset_var == 0:
        return 1 / _one_sided_arl(k, h)
    x, w = np.polynomial.hermite_e.hermegauss(points)  # nodes and weights for the N(0, 1) density
    rates = 1 / _one_sided_arls(k - x * math.sqrt(offset_var), h)
    return float(np.dot(w, rates) / w.sum())


MAX_EXTRA_H = 8.0  # how far the estimated-reference h may exceed the exact one


@functools.lru_cache(maxsize=1024)  # seconds per call: every model version, restart and alarm asks again
def cusum_threshold_estimated(arl0: float, k: float = 1.0, offset_var: float = 0.0) -> float:
    """`cusum_threshold` when the in-control mean is estimated: the statistics share an offset b ~ N(0, v).

    A reference mean estimated from n_ref events is off by e, the same in every update, so a statistic of n
    events is N(e sqrt(n) / sd, 1): a chart whose in-control ARL depends on e. The false-alarm rate that
    matters is the one averaged over e, E_b[1 / ARL(b)] with b ~ N(0, v), v = n / n_ref; both sides of a
    two-sided chart see b with opposite signs, so its rate is twice one side's. This h makes that average
    rate 1 / `arl0` (Gauss-Hermite quadrature over b, 24 points; exact for v = 0).

    Examples
    --------
    >>> h0, h1 = cusum_threshold(1e5, 1.0), cusum_threshold_estimated(1e5, 1.0, offset_var=0.05)
    >>> round(h0, 3), h1 > h0
    (5.312, True)
    >>> abs(cusum_threshold_estimated(1e5, 1.0, 0.0) - h0) < 1e-6
    True

    References
    ----------
    [^1]: L. A. Jones, C. W. Champ, S. E. Rigdon. 2004. The run length distribution of the CUSUM with
       estimated parameters. Journal of Quality Technology 36, 1, 95-108.
    """
    if not arl0 > 1:
        raise ValueError("arl0 must be > 1")
    if offset_var < 0:
        raise ValueError("offset_var must be >= 0")

    def gap(h: float) -> float:
        return math.log(2 * _one_sided_rate(k, h, offset_var)) + math.log(arl0)

    lo = cusum_threshold(arl0, k)
    hi = lo + 1.0
    while gap(hi) > 0:
        hi += 1.0
        if hi > lo + MAX_EXTRA_H:  # the rate falls like 1 / h once offsets outweigh k: no useful h exists
            raise ValueError(f"offset_var {offset_var:g} too large for arl0 {arl0:g}: h above {hi:g}")
    return lo if gap(lo) <= 0 else float(optimize.brentq(gap, lo, hi, xtol=1e-9))
