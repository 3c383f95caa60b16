"""The shared, mergeable summary of one window of one model's traffic, and what it bins against.

A `WindowSummary` is built per Kafka partition with vectorised batch updates, merged across partitions
and ticks (exactly associative and commutative for counts; float sums to rounding), shipped with
`to_bytes()`, and compared by the detectors with the reference's own summary. The parts live in
`reference` (ReferenceProfile), `feature_summaries`, `model_summaries`, `slice_counts` and `reservoir`;
they are re-exported here, the one module detectors import.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftline.detectors.batch_columns import as_float, batch_size, present
from driftline.detectors.codec import ArrayTable, pack, unpack
from driftline.detectors.feature_summaries import CategoricalSummary, NumericSummary, combine_moments, merge_bounded
from driftline.detectors.hashing import hash_positions, hash_strings
from driftline.detectors.model_summaries import ClassifierSummary, RegressionSummary
from driftline.detectors.reference import UNIVERSAL_EDGES, ReferenceProfile, quantile_edges, top_categories
from driftline.detectors.reservoir import Reservoir
from driftline.detectors.slice_counts import SliceCounts, SliceKey, add_slices, slice_totals

__all__ = [
    "CategoricalSummary",
    "ClassifierSummary",
    "NumericSummary",
    "ReferenceProfile",
    "RegressionSummary",
    "Reservoir",
    "SliceCounts",
    "SliceKey",
    "WindowSummary",
    "combine_moments",
    "quantile_edges",
    "top_categories",
]

FORMAT_VERSION = 1
MAX_UNKNOWN_FEATURES = 256
# A discovery summary takes ~11 KiB per numeric feature (bins on the universal grid and its edges), and the
# summarize stage's messages are at most 4 MiB: 250 features leave room for the outputs and slices.
MAX_FEATURES = 250
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.intp]


def _sum_dicts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


@dataclass(eq=False)
class WindowSummary:
    """Mergeable summary of a window: feature histograms and moments, model outputs, labels, slices, sample.

    Build with `empty(profile)` and the batch updates `add_predictions` / `add_labels` (they mutate);
    `merge` is pure. A feature may be passed in either mapping: values of the other type than the
    profile's are counted in `type_errors` (and are not missing), features the profile does not know in
    `unknown_features` (bounded like `unseen`). Slices are every segment attribute's values, plus
    attribute pairs when `slice_pairs`; at most `max_slices` keys are kept (single attributes first, then
    smallest key hash) and the dropped counts add up in `slice_overflow`.

    >>> import numpy as np
    >>> profile = ReferenceProfile.fit({"x": np.arange(100.0)}, {"c": ["a", "b"] * 50}, n_bins=4)
    >>> w = WindowSummary.empty(profile)
    >>> w.add_predictions(["p1", "p2", "p3"], {"x": np.array([5.0, np.nan, 500.0])}, {"c": ["a", "z", 7]},
    ...                   segments={"country": ["fr", "de", "fr"]})
    >>> w.n, w.numeric["x"].count, w.numeric["x"].out_of_range, w.categorical["c"].unseen, w.type_errors
    (3, 2, 1, {'z': 1}, {'c': 1})
    >>> w.slices[(("country", "fr"),)].n
    2
    >>> WindowSummary.from_bytes(w.merge(w).to_bytes()).n
    6
    """

    profile_hash: str
    numeric: dict[str, NumericSummary]
    categorical: dict[str, CategoricalSummary]
    reservoir: Reservoir
    n: int = 0
    type_errors: dict[str, int] = field(default_factory=dict)
    classifier: ClassifierSummary | None = None
    regression: RegressionSummary | None = None
    slices: dict[SliceKey, SliceCounts] = field(default_factory=dict)
    slice_overflow: SliceCounts = field(default_factory=SliceCounts)
    slice_pairs: bool = False
    max_slices: int = 2000
    unknown_features: dict[str, int] = field(default_factory=dict)
    unknown_features_overflow: bool = False
    discover: bool = False
    max_features: int = MAX_FEATURES  # features a discovery summary watches (`feature_limits`)
    dropped_features: int = 0  # values of the features over it

    @classmethod
    def empty(
        cls,
        profile: ReferenceProfile,
        *,
        slice_pairs: bool = False,
        max_slices: int = 2000,
        reservoir_size: int = 512,
        score_bins: int = 100,
        cal_bins: int = 15,
        max_features: int = MAX_FEATURES,
    ) -> WindowSummary:
        classifier = None
        if profile.task == "classification" and profile.classes is not None:
            classifier = ClassifierSummary.empty(profile.classes, score_bins, cal_bins)
        regression = None
        if profile.task == "regression" and profile.prediction_edges is not None:
            regression = RegressionSummary.empty(profile.prediction_edges)
        return cls(
            profile_hash=profile.content_hash(),
            numeric={f: NumericSummary.empty(profile.numeric_edges[f]) for f in profile.numeric_features},
            categorical={f: CategoricalSummary.empty(c) for f, c in sorted(profile.categories.items())},
            reservoir=Reservoir.empty(profile.numeric_features, reservoir_size),
            classifier=classifier,
            regression=regression,
            slice_pairs=slice_pairs,
            max_slices=max_slices,
            discover=profile.discover,
            max_features=max_features,
        )

    @classmethod
    def of(
        cls,
        profile: ReferenceProfile,
        numeric: Mapping[str, ArrayLike] | None = None,
        categorical: Mapping[str, Sequence[str | None]] | None = None,
        **outputs: Any,
    ) -> WindowSummary:
        """A new summary of one batch: `empty(profile)` plus one `add_predictions` (`ids`, `slice_pairs` and the
        model outputs as keywords)."""
        summary = cls.empty(profile, slice_pairs=outputs.pop("slice_pairs", False))
        summary.add_predictions(outputs.pop("ids", None), numeric or {}, categorical or {}, **outputs)
        return summary

    def _discover(self, numeric: Mapping[str, ArrayLike], categorical: Mapping[str, Sequence[Any]]) -> None:
        """Start summaries for features first met now; the events before them had them missing."""
        for name in numeric:
            if name not in self.numeric and name not in self.categorical:
                self.numeric[name] = NumericSummary.empty(UNIVERSAL_EDGES)
                self.numeric[name].missing = self.n
        for name in categorical:
            if name not in self.numeric and name not in self.categorical:
                self.categorical[name] = CategoricalSummary.empty(())
                self.categorical[name].missing = self.n

    def _aligned(self, other: WindowSummary) -> tuple[WindowSummary, WindowSummary]:
        """Discovery summaries may know different features: give each side the other's, all missing."""
        if not self.discover:
            return self, other
        a, b = self._copy_features(), other._copy_features()
        for x, y in ((a, other), (b, self)):
            for name, ns in y.numeric.items():
                if name not in x.numeric:
                    x.numeric[name] = NumericSummary.empty(ns.edges)
                    x.numeric[name].missing = x.n
            for name, cs in y.categorical.items():
                if name not in x.categorical:
                    x.categorical[name] = CategoricalSummary.empty(cs.categories)
                    x.categorical[name].missing = x.n
        return a, b

    def _copy_features(self) -> WindowSummary:
        return dataclasses.replace(self, numeric=dict(self.numeric), categorical=dict(self.categorical))

    def _type_error(self, name: str, count: int) -> None:
        if count:
            self.type_errors[name] = self.type_errors.get(name, 0) + count

    def add_predictions(
        self,
        ids: Sequence[str] | None,
        numeric: Mapping[str, ArrayLike],
        categorical: Mapping[str, Sequence[str | None]],
        scores: ArrayLike | None = None,
        predicted: Sequence[str | None] | None = None,
        probabilities: ArrayLike | None = None,
        segments: Mapping[str, Sequence[str | None]] | None = None,
        values: ArrayLike | None = None,
    ) -> None:
        """Add a batch of prediction events (columns aligned by row; NaN / None = missing).

        Without `ids` the reservoir keys rows by a digest of the batch's numeric columns and the row
        position, so the same batch added twice is sampled once; pass real prediction ids when separately
        built summaries may hold the same events.
        """
        probs = None if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        n = batch_size(ids, *numeric.values(), *categorical.values(), scores, predicted, probs,
                        *(segments or {}).values(), values)
        if n == 0:
            return
        if self.discover:
            self._discover(numeric, categorical)
        columns = {name: self._add_numeric(name, ns, numeric.get(name), categorical.get(name), n)
                   for name, ns in self.numeric.items()}
        for name, cs in self.categorical.items():
            self._add_categorical(name, cs, categorical.get(name), numeric.get(name), n)
        self._count_unknown(numeric, categorical)
        if scores is not None or predicted is not None or probs is not None:
            if self.classifier is None:
                raise ValueError("the profile has no classifier: scores/predicted/probabilities are not expected")
            self.classifier.add_predictions(predicted, scores, probs, n)
        if values is not None:
            if self.regression is None:
                raise ValueError("the profile has no regression output: values are not expected")
            self.regression.add_predictions(values)
        if segments:
            self._add_slices(slice_totals(segments, n, self.slice_pairs, _traffic))
        self._sample(ids, columns, n)
        self.n += n

    def _add_numeric(
        self, name: str, ns: NumericSummary, x: ArrayLike | None, other: Sequence[Any] | None, n: int
    ) -> FloatArray | None:
        wrong = present(other) if other is not None else np.zeros(n, dtype=bool)
        if x is None:
            ns.missing += n - int(wrong.sum())
            self._type_error(name, int(wrong.sum()))
            return None
        arr, wrong_x = as_float(x)
        if wrong_x is not None:
            wrong |= wrong_x
        rejected = ns.add(arr)
        ns.missing -= int(np.count_nonzero(wrong & np.isnan(arr)))
        self._type_error(name, rejected + int(wrong.sum()))
        return arr

    def _add_categorical(
        self, name: str, cs: CategoricalSummary, values: Sequence[Any] | None, x: ArrayLike | None, n: int
    ) -> None:
        numbers = None
        if x is not None:
            arr, wrong_x = as_float(x)
            numbers = ~np.isnan(arr) if wrong_x is None else ~np.isnan(arr) | wrong_x
        n_numbers = int(numbers.sum()) if numbers is not None else 0
        if values is None:
            cs.missing += n - n_numbers
            self._type_error(name, n_numbers)
            return
        errors, missing = cs.add(values)
        if numbers is not None:
            cs.missing -= int(np.count_nonzero(numbers & missing))
        self._type_error(name, errors + n_numbers)

    def _count_unknown(self, numeric: Mapping[str, ArrayLike], categorical: Mapping[str, Sequence[Any]]) -> None:
        seen: Counter[str] = Counter()
        for name, x in numeric.items():
            if name not in self.numeric and name not in self.categorical:
                arr, wrong = as_float(x)
                seen[name] += int(np.count_nonzero(~np.isnan(arr))) + (int(wrong.sum()) if wrong is not None else 0)
        for name, values in categorical.items():
            if name not in self.numeric and name not in self.categorical:
                seen[name] += int(present(values).sum())
        seen = Counter({k: v for k, v in seen.items() if v})
        if seen:
            self.unknown_features, self.unknown_features_overflow = merge_bounded(
                self.unknown_features, seen, self.unknown_features_overflow, MAX_UNKNOWN_FEATURES
            )

    def _add_slices(self, new: Mapping[SliceKey, SliceCounts]) -> None:
        self.slices, self.slice_overflow = add_slices(self.slices, new, self.slice_overflow, self.max_slices)

    def _sample(self, ids: Sequence[str] | None, columns: Mapping[str, FloatArray | None], n: int) -> None:
        names = self.reservoir.feature_names
        clean = {f: np.where(np.isinf(a), np.nan, a) for f, a in columns.items() if a is not None}
        if ids is not None:
            hashes = hash_strings(ids)
        else:
            digest = hashlib.blake2b(n.to_bytes(8, "little"), digest_size=8)
            for f in names:
                digest.update(f.encode() + b"\x00" + (clean[f].tobytes() if f in clean else b"-"))
            hashes = hash_positions(int.from_bytes(digest.digest(), "little"), n)

        def rows(idx: IntArray) -> FloatArray:
            out = np.full((idx.size, len(names)), np.nan)
            for j, f in enumerate(names):
                if f in clean:
                    out[:, j] = clean[f][idx]
            return out

        self.reservoir.add(hashes, rows)

    def add_labels(
        self,
        *,
        labels: Sequence[str | None] | None = None,
        predicted: Sequence[str | None] | None = None,
        scores: ArrayLike | None = None,
        probabilities: ArrayLike | None = None,
        values: ArrayLike | None = None,
        true_values: ArrayLike | None = None,
        segments: Mapping[str, Sequence[str | None]] | None = None,
    ) -> None:
        """Add labelled predictions: classification `labels` with the prediction's label/scores/probabilities,
        or regression `true_values` with the predicted `values`. Rows whose label is None (NaN) are skipped.
        """
        probs = None if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        n = batch_size(labels, predicted, scores, probs, values, true_values, *(segments or {}).values())
        if labels is not None:
            if self.classifier is None:
                raise ValueError("the profile has no classifier: labels are not expected")
            ok, correct = self.classifier.add_labels(labels, predicted, scores, probs, n)

            def make(idx: IntArray, size: int) -> list[SliceCounts | None]:
                labeled = np.bincount(idx[ok & (idx >= 0)], minlength=size)
                right = np.bincount(idx[correct & (idx >= 0)], minlength=size)
                return [SliceCounts(labeled=int(c), correct=int(r)) if c else None
                        for c, r in zip(labeled, right, strict=True)]
        elif true_values is not None:
            if self.regression is None or values is None:
                raise ValueError("regression labels need a regression profile and the predicted values")
            ok, err = self.regression.add_labels(values, true_values)

            def make(idx: IntArray, size: int) -> list[SliceCounts | None]:
                sel = ok & (idx >= 0)
                labeled = np.bincount(idx[sel], minlength=size)
                abs_err = np.bincount(idx[sel], weights=np.abs(err[sel]), minlength=size)
                sq_err = np.bincount(idx[sel], weights=err[sel] ** 2, minlength=size)
                return [SliceCounts(labeled=int(c), sum_abs_err=float(a), sum_sq_err=float(s)) if c else None
                        for c, a, s in zip(labeled, abs_err, sq_err, strict=True)]
        else:
            raise ValueError("add_labels needs labels (classification) or true_values (regression)")
        if segments and n:
            self._add_slices(slice_totals(segments, n, self.slice_pairs, make))

    def merge(self, other: WindowSummary) -> WindowSummary:
        """A new summary of both windows (exactly associative and commutative for counts)."""
        if self.profile_hash != other.profile_hash:
            raise ValueError("cannot merge summaries made against different reference profiles")
        a, b = self._aligned(other)
        return a._merge_aligned(b)

    def _merge_aligned(self, other: WindowSummary) -> WindowSummary:
        if (self.slice_pairs, self.max_slices) != (other.slice_pairs, other.max_slices):
            raise ValueError("cannot merge summaries with different slice settings")
        if (self.classifier is None) != (other.classifier is None) or (self.regression is None) != (
            other.regression is None
        ):
            raise ValueError("cannot merge summaries with different model outputs")
        slices, overflow = add_slices(self.slices, other.slices, self.slice_overflow + other.slice_overflow,
                                      self.max_slices)
        unknown, unknown_overflow = merge_bounded(
            self.unknown_features, other.unknown_features,
            self.unknown_features_overflow or other.unknown_features_overflow, MAX_UNKNOWN_FEATURES,
        )
        return WindowSummary(
            profile_hash=self.profile_hash,
            numeric={k: v.merge(other.numeric[k]) for k, v in self.numeric.items()},
            categorical={k: v.merge(other.categorical[k]) for k, v in self.categorical.items()},
            reservoir=self.reservoir.merge(other.reservoir),
            n=self.n + other.n,
            type_errors=_sum_dicts(self.type_errors, other.type_errors),
            classifier=self.classifier.merge(other.classifier)
            if self.classifier is not None and other.classifier is not None
            else None,
            regression=self.regression.merge(other.regression)
            if self.regression is not None and other.regression is not None
            else None,
            slices=slices,
            slice_overflow=overflow,
            slice_pairs=self.slice_pairs,
            max_slices=self.max_slices,
            unknown_features=unknown,
            unknown_features_overflow=unknown_overflow,
            discover=self.discover,
            max_features=min(self.max_features, other.max_features),
            dropped_features=self.dropped_features + other.dropped_features,
        )

    def to_bytes(self) -> bytes:
        """Compact binary form: version byte, CRC32, JSON header, raw little-endian arrays."""
        table = ArrayTable()
        state = {
            "profile_hash": self.profile_hash,
            "n": self.n,
            "type_errors": self.type_errors,
            "unknown_features": self.unknown_features,
            "unknown_features_overflow": self.unknown_features_overflow,
            "numeric": {k: v.encode(table) for k, v in self.numeric.items()},
            "categorical": {k: v.encode(table) for k, v in self.categorical.items()},
            "classifier": self.classifier.encode(table) if self.classifier is not None else None,
            "regression": self.regression.encode(table) if self.regression is not None else None,
            "slices": [[[list(p) for p in key], SliceCounts.encode(c)] for key, c in sorted(self.slices.items())],
            "slice_overflow": SliceCounts.encode(self.slice_overflow),
            "slice_pairs": self.slice_pairs,
            "max_slices": self.max_slices,
            "reservoir": self.reservoir.encode(table),
            "discover": self.discover,
            "max_features": self.max_features,
            "dropped_features": self.dropped_features,
        }
        return pack(FORMAT_VERSION, state, table)

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowSummary:
        """Inverse of `to_bytes`; ValueError on an unknown format version or corrupt bytes."""
        state, table = unpack(data, FORMAT_VERSION, "WindowSummary")
        try:
            return cls(
                profile_hash=str(state["profile_hash"]),
                numeric={str(k): NumericSummary.decode(v, table) for k, v in state["numeric"].items()},
                categorical={str(k): CategoricalSummary.decode(v, table) for k, v in state["categorical"].items()},
                reservoir=Reservoir.decode(state["reservoir"], table),
                n=int(state["n"]),
                type_errors={str(k): int(v) for k, v in state["type_errors"].items()},
                classifier=ClassifierSummary.decode(state["classifier"], table) if state["classifier"] else None,
                regression=RegressionSummary.decode(state["regression"], table) if state["regression"] else None,
                slices={tuple((str(a), str(v)) for a, v in key): SliceCounts.decode(c) for key, c in state["slices"]},
                slice_overflow=SliceCounts.decode(state["slice_overflow"]),
                slice_pairs=bool(state["slice_pairs"]),
                max_slices=int(state["max_slices"]),
                unknown_features={str(k): int(v) for k, v in state["unknown_features"].items()},
                unknown_features_overflow=bool(state["unknown_features_overflow"]),
                discover=bool(state.get("discover", False)),
                max_features=int(state.get("max_features", MAX_FEATURES)),
                dropped_features=int(state.get("dropped_features", 0)),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"corrupt WindowSummary bytes: {exc!r}") from None


def _traffic(idx: IntArray, size: int) -> list[SliceCounts | None]:
    return [SliceCounts(n=int(c)) if c else None for c in np.bincount(idx[idx >= 0], minlength=size)]
