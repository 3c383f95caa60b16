"""Mergeable per-slice counts (segment attribute = value, and attribute pairs), kept to a bounded number of keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.detectors.codec import dec_float, enc_float
from driftline.detectors.hashing import hash_strings, keep_smallest

SliceKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SliceCounts:
    """Traffic and labelled outcome counts of one slice (regression slices add error sums).

    >>> SliceCounts(n=3) + SliceCounts(n=1, labeled=1, correct=1)
    SliceCounts(n=4, labeled=1, correct=1, sum_abs_err=0.0, sum_sq_err=0.0)
    """

    n: int = 0
    labeled: int = 0
    correct: int = 0
    sum_abs_err: float = 0.0
    sum_sq_err: float = 0.0

    def __add__(self, other: SliceCounts) -> SliceCounts:
        return SliceCounts(self.n + other.n, self.labeled + other.labeled, self.correct + other.correct,
                           self.sum_abs_err + other.sum_abs_err, self.sum_sq_err + other.sum_sq_err)

    def encode(self) -> list[Any]:
        return [self.n, self.labeled, self.correct, enc_float(self.sum_abs_err), enc_float(self.sum_sq_err)]

    @classmethod
    def decode(cls, v: Sequence[Any]) -> SliceCounts:
        n, labeled, correct, abs_err, sq_err = v
        return cls(int(n), int(labeled), int(correct), dec_float(abs_err), dec_float(sq_err))


def slice_rank(keys: Sequence[SliceKey]) -> list[tuple[int, int]]:
    """Fixed total order on slice keys: single attributes first, then by 64-bit hash of the key."""
    text = ["\x1f".join(f"{a}\x1e{v}" for a, v in key) for key in keys]
    return [(len(key), h) for key, h in zip(keys, hash_strings(text).tolist(), strict=True)]


def _codes(values: Sequence[str | None], n: int) -> tuple[NDArray[np.intp], NDArray[np.str_]]:
    arr = np.asarray(values, dtype=object).reshape(-1)
    if arr.size != n:
        raise ValueError(f"segment column has {arr.size} rows, expected {n}")
    present = np.not_equal(arr, None)
    uniques, inverse = np.unique(arr[present].astype(str), return_inverse=True)
    codes = np.full(n, -1, dtype=np.intp)
    codes[present] = inverse
    return codes, uniques


def slice_totals(
    segments: Mapping[str, Sequence[str | None]],
    n: int,
    pairs: bool,
    make: Callable[[NDArray[np.intp], int], list[Any]],
) -> dict[SliceKey, Any]:
    """Aggregate per slice: `make(slice_index_per_row, n_slices)` returns one aggregate (or None) per slice.

    Rows whose attribute value is None belong to no slice of that attribute.
    """
    columns = {a: _codes(segments[a], n) for a in sorted(segments)}
    out: dict[SliceKey, Any] = {}
    for a, (codes, uniques) in columns.items():
        for i, agg in enumerate(make(codes, uniques.size)):
            if agg is not None:
                out[((a, str(uniques[i])),)] = agg
    if not pairs:
        return out
    names = list(columns)
    for i, a in enumerate(names):
        ca, ua = columns[a]
        for b in names[i + 1 :]:
            cb, ub = columns[b]
            both = (ca >= 0) & (cb >= 0)
            combined = np.where(both, ca * ub.size + cb, -1)
            present, index = np.unique(combined[both], return_inverse=True)
            row_index = np.full(n, -1, dtype=np.intp)
            row_index[both] = index
            for j, agg in enumerate(make(row_index, present.size)):
                if agg is not None:
                    code = int(present[j])
                    out[((a, str(ua[code // ub.size])), (b, str(ub[code % ub.size])))] = agg
    return out


def add_slices(
    current: dict[SliceKey, SliceCounts], new: Mapping[SliceKey, SliceCounts], overflow: SliceCounts, limit: int
) -> tuple[dict[SliceKey, SliceCounts], SliceCounts]:
    """Sum slice counts, keep the `limit` smallest-ranked keys, add what was dropped to `overflow`."""
    merged = dict(current)
    for key, counts in new.items():
        merged[key] = merged[key] + counts if key in merged else counts
    kept, dropped = keep_smallest(merged, limit, slice_rank)
    for counts in dropped:
        overflow = overflow + counts
    return kept, overflow
