"""Mergeable per-feature summaries: moments and reference-binned histograms, category counts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftline.detectors.binning import binner
from driftline.detectors.codec import ArrayTable, dec_float, enc_float
from driftline.detectors.hashing import keep_smallest, string_rank

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def combine_moments(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[int, float, float]:
    """Chan et al. pairwise update of (count, mean, sum of squared deviations); symmetric in a and b.

    >>> combine_moments(2, 1.0, 2.0, 2, 3.0, 2.0)
    (4, 2.0, 8.0)
    """
    if n_a == 0:
        return n_b, mean_b, m2_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, (n_a * mean_a + n_b * mean_b) / n, m2_a + m2_b + delta * delta * (n_a * n_b) / n


@dataclass(eq=False, slots=True)
class NumericSummary:
    """Count, missing, Chan-mergeable moments, min/max and a histogram on the reference's edges.

    `bins[i]` counts values with `np.searchsorted(edges, x, side="right") == i`: bins[0] holds values
    below the reference minimum, bins[-1] values above the reference maximum (`out_of_range` is their
    sum). Only finite values are summarised; NaN counts as missing, +/-inf is rejected by `add`.

    >>> import numpy as np
    >>> s = NumericSummary.empty(np.array([0.0, 1.0, 2.0]))
    >>> s.add(np.array([-1.0, 0.5, 1.5, 1.7, np.nan]))
    0
    >>> s.bins.tolist(), s.count, s.missing, s.out_of_range, round(s.mean, 3)
    ([1, 1, 2, 0], 4, 1, 1, 0.675)
    """

    edges: FloatArray
    bins: IntArray
    count: int = 0
    missing: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def empty(cls, edges: ArrayLike) -> NumericSummary:
        e = np.asarray(edges, dtype=np.float64)
        return cls(edges=e, bins=np.zeros(e.size + 1, dtype=np.int64))

    @property
    def out_of_range(self) -> int:
        """Values outside [reference min, reference max]: underflow plus overflow bin."""
        return int(self.bins[0] + self.bins[-1])

    def variance(self, ddof: int = 0) -> float:
        """m2 / (count - ddof); NaN when undefined."""
        return self.m2 / (self.count - ddof) if self.count > ddof else math.nan

    def add(self, x: ArrayLike) -> int:
        """Summarise a batch (NaN = missing); returns how many +/-inf values were rejected (type errors)."""
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        finite = np.isfinite(arr)
        n_finite = int(np.count_nonzero(finite))
        rejected = 0
        if n_finite < arr.size:
            n_nan = int(np.count_nonzero(np.isnan(arr)))
            rejected = arr.size - n_finite - n_nan
            self.missing += n_nan
            arr = arr[finite]
        if arr.size:
            mean_b = float(arr.sum()) / arr.size
            dev = arr - mean_b
            self.count, self.mean, self.m2 = combine_moments(
                self.count, self.mean, self.m2, arr.size, mean_b, float(dev @ dev)
            )
            self.min = min(self.min, float(arr.min()))
            self.max = max(self.max, float(arr.max()))
            self.bins += binner(self.edges).counts(arr)
        return rejected

    def merge(self, other: NumericSummary) -> NumericSummary:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge numeric summaries binned on different edges")
        count, mean, m2 = combine_moments(self.count, self.mean, self.m2, other.count, other.mean, other.m2)
        return NumericSummary(
            edges=self.edges,
            bins=self.bins + other.bins,
            count=count,
            missing=self.missing + other.missing,
            mean=mean,
            m2=m2,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    def cdf_at_edges(self) -> FloatArray:
        """P(X < edges[j]) for every edge (the empirical CDF's left limits); NaN when empty."""
        if self.count == 0:
            return np.full(self.edges.size, np.nan)
        return np.cumsum(self.bins)[:-1] / self.count

    def max_bin_mass(self) -> float:
        """Largest share of the values in one bin (under/overflow included); bounds bin-based KS error."""
        return float(self.bins.max()) / self.count if self.count else math.nan

    def ks_distance(self, other: NumericSummary) -> float:
        """Two-sample KS distance evaluated at the shared edges.

        Error bound: with D the exact KS statistic of the raw samples (scipy.stats.ks_2samp),
        ks_distance <= D <= ks_distance + max(self.max_bin_mass(), other.max_bin_mass()). Between two
        edges both CDFs move by at most their mass in that bin, so the supremum can exceed the value at
        the edges by no more than the largest bin mass of the two samples.
        """
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("KS from bins needs the same edges")
        return float(np.max(np.abs(self.cdf_at_edges() - other.cdf_at_edges())))

    def quantile(self, q: ArrayLike) -> FloatArray | float:
        """Quantile estimate by linear interpolation of the CDF inside the bin holding it.

        Bins are bounded by the edges, the outer ones by the observed min and max, all clipped to
        [min, max]. Error bound: the exact sample quantile x_(ceil(q * count)) (np.quantile with
        method="inverted_cdf") lies in the same bin as the estimate, so the error is at most that bin's
        clipped width. NaN when the summary is empty.
        """
        qa = np.asarray(q, dtype=np.float64)
        if self.count == 0:
            return np.full(qa.shape, np.nan) if qa.ndim else math.nan
        lower = np.clip(np.concatenate(([self.min], self.edges)), self.min, self.max)
        upper = np.clip(np.concatenate((self.edges, [self.max])), self.min, self.max)
        full = self.bins > 0
        lo, hi, mass = lower[full], upper[full], self.bins[full]
        cum = np.cumsum(mass)
        target = np.clip(qa, 0.0, 1.0) * self.count
        j = np.minimum(np.searchsorted(cum, target, side="left"), mass.size - 1)
        frac = np.clip((target - (cum[j] - mass[j])) / mass[j], 0.0, 1.0)
        out = lo[j] + frac * (hi[j] - lo[j])
        return out if qa.ndim else float(out)

    def encode(self, table: ArrayTable) -> dict[str, Any]:
        return {
            "edges": table.put(self.edges),
            "bins": table.put(self.bins),
            "count": self.count,
            "missing": self.missing,
            "mean": enc_float(self.mean),
            "m2": enc_float(self.m2),
            "min": enc_float(self.min),
            "max": enc_float(self.max),
        }

    @classmethod
    def decode(cls, d: dict[str, Any], table: ArrayTable) -> NumericSummary:
        edges = table.get(d["edges"], np.float64, 1)
        bins = table.get(d["bins"], np.int64, 1)
        if bins.size != edges.size + 1:
            raise ValueError("bins and edges disagree in length")
        return cls(edges, bins, int(d["count"]), int(d["missing"]), dec_float(d["mean"]), dec_float(d["m2"]),
                   dec_float(d["min"]), dec_float(d["max"]))


@lru_cache(maxsize=1024)
def _category_codes(categories: tuple[str, ...]) -> dict[Any, int]:
    codes: dict[Any, int] = {c: i for i, c in enumerate(categories)}
    codes[None] = -2
    return codes


@dataclass(eq=False, slots=True)
class CategoricalSummary:
    """Counts of the reference's categories, of everything else (`other`), and missing values.

    `unseen` keeps per-value counts of non-reference values, bounded to `MAX_UNSEEN` distinct values: the
    ones with the smallest 64-bit hashes (a uniform sample of distinct values whose counts stay exact under
    any merge order); `unseen_overflow` says some were left out. `other` is always exact.

    >>> s = CategoricalSummary.empty(("a", "b"))
    >>> s.add(["a", "z", None, "a", 3])[0]
    1
    >>> s.counts.tolist(), s.other, s.unseen, s.missing
    ([2, 0], 1, {'z': 1}, 1)
    """

    MAX_UNSEEN: ClassVar[int] = 256

    categories: tuple[str, ...]
    counts: IntArray
    other: int = 0
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_overflow: bool = False
    missing: int = 0

    @classmethod
    def empty(cls, categories: Sequence[str]) -> CategoricalSummary:
        cats = tuple(categories)
        return cls(categories=cats, counts=np.zeros(len(cats), dtype=np.int64))

    @property
    def valid(self) -> int:
        """Non-missing values of the right type."""
        return int(self.counts.sum()) + self.other

    @property
    def folded(self) -> int:
        """Values counted only in `other`: neither a reference category nor among the kept `unseen` values.

        Exact under any merge order, like `unseen`'s counts: a kept value is among the smallest hashes of
        every part it occurs in, so each part counted it.
        """
        return self.other - sum(self.unseen.values())

    def add(self, values: Sequence[Any]) -> tuple[int, BoolArray]:
        """Summarise a batch (None / NaN = missing); returns (type errors, missing mask).

        Non-string values (numbers, booleans) are type errors, not categories.
        """
        get = _category_codes(self.categories).get
        codes = np.array([get(v, -1) for v in values], dtype=np.int64)
        missing = codes == -2
        type_errors = 0
        new: Counter[str] = Counter()
        for i in np.flatnonzero(codes == -1).tolist():
            v = values[i]
            if isinstance(v, str):
                new[str(v)] += 1
            elif isinstance(v, float) and math.isnan(v):
                missing[i] = True
            else:
                type_errors += 1
        self.counts += np.bincount(codes[codes >= 0], minlength=len(self.categories))
        self.missing += int(np.count_nonzero(missing))
        if new:
            self.other += sum(new.values())
            self.unseen, self.unseen_overflow = _merge_unseen(self.unseen, new, self.unseen_overflow)
        return type_errors, missing

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        if self.categories != other.categories:
            raise ValueError("cannot merge categorical summaries with different categories")
        unseen, overflow = _merge_unseen(self.unseen, other.unseen, self.unseen_overflow or other.unseen_overflow)
        return CategoricalSummary(self.categories, self.counts + other.counts, self.other + other.other,
                                  unseen, overflow, self.missing + other.missing)

    def encode(self, table: ArrayTable) -> dict[str, Any]:
        return {
            "categories": list(self.categories),
            "counts": table.put(self.counts),
            "other": self.other,
            "unseen": self.unseen,
            "unseen_overflow": self.unseen_overflow,
            "missing": self.missing,
        }

    @classmethod
    def decode(cls, d: dict[str, Any], table: ArrayTable) -> CategoricalSummary:
        cats = tuple(str(c) for c in d["categories"])
        counts = table.get(d["counts"], np.int64, 1)
        if counts.size != len(cats):
            raise ValueError("counts and categories disagree in length")
        unseen = {str(k): int(v) for k, v in d["unseen"].items()}
        return cls(cats, counts, int(d["other"]), unseen, bool(d["unseen_overflow"]), int(d["missing"]))


def merge_bounded(
    a: dict[str, int], b: dict[str, int] | Counter[str], overflow: bool, limit: int
) -> tuple[dict[str, int], bool]:
    """Sum two bounded count dicts and keep the `limit` keys with the smallest hashes."""
    merged = dict(a)
    for k, v in b.items():
        merged[k] = merged.get(k, 0) + v
    kept, dropped = keep_smallest(merged, limit, string_rank)
    return kept, overflow or bool(dropped)


def _merge_unseen(a: dict[str, int], b: dict[str, int] | Counter[str], overflow: bool) -> tuple[dict[str, int], bool]:
    return merge_bounded(a, b, overflow, CategoricalSummary.MAX_UNSEEN)
