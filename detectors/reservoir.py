"""The bounded sample of a window's numeric feature vectors, chosen by prediction id hash so it merges exactly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.detectors.codec import ArrayTable

FloatArray = NDArray[np.float64]
U64 = NDArray[np.uint64]


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
