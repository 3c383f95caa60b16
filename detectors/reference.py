"""What every window summary bins against: the reference's quantile edges, categories and classes."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Task = Literal["classification", "regression"]
PROFILE_VERSION = 1
MAX_CATEGORIES = 1000
# Before a model has a reference, its numeric features are binned on this fixed grid (0 and +/-10^(k/16)
# for 10^-6..10^15): windows binned on it stay mergeable, and the first windows' histograms give the automatic
# reference's quantile edges with a relative error of at most one grid step (15 %).
UNIVERSAL_EDGES: FloatArray = np.concatenate(
    (-np.logspace(15, -6, 21 * 16 + 1), [0.0], np.logspace(-6, 15, 21 * 16 + 1)))


def quantile_edges(values: FloatArray, n_bins: int) -> FloatArray:
    """Strictly increasing edges from the finite reference values: edges[0] = min, top edge just above max.

    The top edge is the next float above the maximum, so the reference's own maximum lies inside the
    range and a window's overflow bin counts exactly the values above the reference maximum. A feature with
    at most `n_bins` distinct values gets one bin per value (edges = the values); otherwise the edges are
    the distinct `n_bins`-quantiles, plus a bin of its own for the maximum when it carries at least one
    bin's share of the mass (a capped feature).

    >>> quantile_edges(np.array([3.0, 3.0, 3.0]), 10).tolist()
    [3.0, 3.0000000000000004]
    >>> quantile_edges(np.array([0.0, 1.0, 1.0, 2.0]), 10).tolist()
    [0.0, 1.0, 2.0, 2.0000000000000004]
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no finite reference values to fit edges on")
    distinct = np.unique(x)
    top = np.nextafter(distinct[-1], np.inf)
    if distinct.size <= n_bins:
        return np.append(distinct, top)
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
    if np.quantile(x, 1.0 - 1.0 / n_bins) >= distinct[-1]:
        return np.append(edges, top)
    edges[-1] = top
    return edges


def top_categories(values: Sequence[Any], limit: int = MAX_CATEGORIES) -> tuple[str, ...]:
    """The `limit` most frequent string values, most frequent first, ties by value (None etc. ignored).

    >>> top_categories(["b", "a", None, "b", "c", "a", "b"], limit=2)
    ('b', 'a')
    """
    counts = Counter(v for v in values if isinstance(v, str))
    return tuple(sorted(counts, key=lambda v: (-counts[v], v))[:limit])


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """The fixed binning of one model's features and outputs, fitted once on reference data.

    Summaries of every window bin against the same profile, so they stay mergeable and comparable with
    the reference's own summary (`WindowSummary.of(profile, reference data)`). For binary classifiers `classes`
    is (negative, positive); probabilities are given in `classes` order. `prediction_edges` bins the
    regression output and target. `content_hash()` identifies the profile a summary was made against.
    A `discovery()` profile knows no features yet: a window summary made against it adds every feature it meets
    (numeric ones binned on `UNIVERSAL_EDGES`), which is how a model is watched before it has a reference.

    >>> import numpy as np
    >>> profile = ReferenceProfile.fit({"age": np.array([20.0, 30, 40, 50, np.nan])},
    ...                                {"city": ["paris", "oslo", "paris", None, "rome"]}, n_bins=2)
    >>> profile.numeric_edges["age"].tolist(), profile.categories["city"]
    ([20.0, 35.0, 50.00000000000001], ('paris', 'oslo', 'rome'))
    >>> ReferenceProfile.from_dict(profile.to_dict()).content_hash() == profile.content_hash()
    True
    """

    numeric_edges: Mapping[str, FloatArray]
    categories: Mapping[str, tuple[str, ...]]
    classes: tuple[str, ...] | None = None
    task: Task | None = None
    n_bins: int = 50
    prediction_edges: FloatArray | None = field(default=None)
    discover: bool = False

    def __post_init__(self) -> None:
        overlap = set(self.numeric_edges) & set(self.categories)
        if overlap:
            raise ValueError(f"features both numeric and categorical: {sorted(overlap)}")
        for name, edges in self.numeric_edges.items():
            e = np.asarray(edges, dtype=np.float64)
            if e.ndim != 1 or e.size == 0 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise ValueError(f"edges of {name!r} must be finite, strictly increasing and non-empty")
        if self.task == "classification" and (self.classes is None or len(set(self.classes)) < 2
                                              or len(set(self.classes)) != len(self.classes)):
            raise ValueError("a classification profile needs >= 2 distinct classes")
        if self.task == "regression" and self.prediction_edges is None:
            raise ValueError("a regression profile needs prediction_edges")
        if self.task not in (None, "classification", "regression"):
            raise ValueError(f"unknown task {self.task!r}")

    @classmethod
    def fit(
        cls,
        numeric: Mapping[str, FloatArray] | None = None,
        categorical: Mapping[str, Sequence[str | None]] | None = None,
        classes: Sequence[str] | None = None,
        task: Task | None = None,
        n_bins: int = 50,
        *,
        values: FloatArray | None = None,
        max_categories: int = MAX_CATEGORIES,
    ) -> ReferenceProfile:
        """Fit edges, categories and classes on reference data (NaN / None = missing).

        `task` defaults to "classification" when `classes` are given and to "regression" when the reference
        model outputs `values` are given (their edges bin output drift); a regression profile needs them.
        """
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        if task is None and classes is not None:
            task = "classification"
        elif task is None and values is not None:
            task = "regression"
        if task == "regression" and values is None:
            raise ValueError("a regression profile needs the reference predictions: pass values=")
        edges: dict[str, FloatArray] = {}
        for name, x in (numeric or {}).items():
            try:
                edges[name] = quantile_edges(np.asarray(x, dtype=np.float64), n_bins)
            except ValueError as exc:
                raise ValueError(f"numeric feature {name!r}: {exc}") from None
        cats = {name: top_categories(v, max_categories) for name, v in (categorical or {}).items()}
        return cls(
            numeric_edges=edges,
            categories=cats,
            classes=tuple(str(c) for c in classes) if classes is not None else None,
            task=task,
            n_bins=n_bins,
            prediction_edges=quantile_edges(np.asarray(values, dtype=np.float64), n_bins)
            if task == "regression" and values is not None
            else None,
        )

    @classmethod
    def discovery(cls) -> ReferenceProfile:
        """The provisional profile of a model without a reference: features are discovered as they come."""
        return cls(numeric_edges={}, categories={}, discover=True)

    @property
    def feature_types(self) -> dict[str, Literal["numeric", "categorical"]]:
        """Each feature's reference type."""
        types: dict[str, Literal["numeric", "categorical"]] = dict.fromkeys(self.numeric_edges, "numeric")
        types.update(dict.fromkeys(self.categories, "categorical"))
        return types

    @property
    def numeric_features(self) -> tuple[str, ...]:
        """Numeric feature names in sorted order (the reservoir's column order)."""
        return tuple(sorted(self.numeric_edges))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; floats survive a JSON round trip exactly (shortest repr)."""
        return {
            "version": PROFILE_VERSION,
            "n_bins": self.n_bins,
            "task": self.task,
            "classes": list(self.classes) if self.classes is not None else None,
            "numeric": {k: np.asarray(v, dtype=np.float64).tolist() for k, v in sorted(self.numeric_edges.items())},
            "categorical": {k: list(v) for k, v in sorted(self.categories.items())},
            "prediction_edges": np.asarray(self.prediction_edges).tolist()
            if self.prediction_edges is not None
            else None,
        } | ({"discover": True} if self.discover else {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Inverse of `to_dict`; ValueError on an unknown version or malformed content."""
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"unsupported ReferenceProfile version {data.get('version')!r}")
        try:
            pe = data["prediction_edges"]
            return cls(
                numeric_edges={k: np.asarray(v, dtype=np.float64) for k, v in data["numeric"].items()},
                categories={k: tuple(str(c) for c in v) for k, v in data["categorical"].items()},
                classes=tuple(data["classes"]) if data["classes"] is not None else None,
                task=data["task"],
                n_bins=int(data["n_bins"]),
                prediction_edges=np.asarray(pe, dtype=np.float64) if pe is not None else None,
                discover=bool(data.get("discover", False)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed ReferenceProfile dict: {exc!r}") from None

    @cached_property
    def _hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON encoding: equal profiles, equal hashes, in any process."""
        return self._hash
