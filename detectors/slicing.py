"""Per-slice counts (segment attribute = value, and attribute pairs) and the bounded numeric reservoir."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.detectors.codec import ArrayTable
from driftline.detectors.hashing import hash_strings, keep_smallest

SliceKey = tuple[tuple[str, str], ...]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
U64 = NDArray[np.uint64]


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


@dataclass(eq=False, slots=True)
class Reservoir:
    """Bounded sample of numeric feature vectors: the rows with the `capacity` smallest id hashes.

    Choosing by hash instead of at random makes the sample of a merged window the same whatever the
    merge order, and a uniform sample of the window's distinct prediction ids. `hashes` is ascending;
    a prediction id seen twice is kept once.

    >>> import numpy as np
    >>> r = Reservoir.empty(("x",), capacity=2)
    >>> r.add(np.array([5, 1, 3], dtype=np.uint64), lambda rows: np.array([[50.0], [10.0], [30.0]])[rows])
    >>> r.hashes.tolist(), r.values.ravel().tolist()
    ([1, 3], [10.0, 30.0])
    """

    feature_names: tuple[str, ...]
    capacity: int = 512
    hashes: U64 = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    values: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))

    @classmethod
    def empty(cls, feature_names: Sequence[str], capacity: int = 512) -> Reservoir:
        names = tuple(feature_names)
        return cls(names, capacity, np.zeros(0, dtype=np.uint64), np.zeros((0, len(names))))

    def add(self, hashes: U64, rows: Callable[[NDArray[np.intp]], FloatArray]) -> None:
        """Offer a batch: `rows(indices)` returns the feature matrix of the chosen batch rows."""
        if hashes.size == 0 or self.capacity == 0:
            return
        candidates = np.arange(hashes.size)
        if self.hashes.size == self.capacity:
            candidates = candidates[hashes < self.hashes[-1]]
        if candidates.size > self.capacity:
            smallest = candidates[np.argpartition(hashes[candidates], self.capacity - 1)[: self.capacity]]
            if np.unique(hashes[smallest]).size < smallest.size:
                smallest = candidates[np.unique(hashes[candidates], return_index=True)[1][: self.capacity]]
            candidates = smallest
        if candidates.size:
            self.hashes, self.values = self._combine(hashes[candidates], rows(candidates))

    def _combine(self, hashes: U64, values: FloatArray) -> tuple[U64, FloatArray]:
        all_h = np.concatenate((self.hashes, hashes))
        all_v = np.concatenate((self.values, values.reshape(hashes.size, len(self.feature_names))))
        unique, first = np.unique(all_h, return_index=True)
        keep = first[: self.capacity]
        return unique[: self.capacity], all_v[keep]

    def merge(self, other: Reservoir) -> Reservoir:
        if (self.feature_names, self.capacity) != (other.feature_names, other.capacity):
            raise ValueError("cannot merge reservoirs with different features or capacity")
        hashes, values = self._combine(other.hashes, other.values)
        return Reservoir(self.feature_names, self.capacity, hashes, values)

    def encode(self, table: ArrayTable) -> dict[str, Any]:
        return {"feature_names": list(self.feature_names), "capacity": self.capacity,
                "hashes": table.put(self.hashes), "values": table.put(self.values)}

    @classmethod
    def decode(cls, d: dict[str, Any], table: ArrayTable) -> Reservoir:
        names = tuple(str(f) for f in d["feature_names"])
        hashes, values = table.get(d["hashes"], np.uint64, 1), table.get(d["values"], np.float64, 2)
        if values.shape != (hashes.size, len(names)) or hashes.size > int(d["capacity"]):
            raise ValueError("reservoir arrays disagree with its features or capacity")
        return cls(names, int(d["capacity"]), hashes, values)
