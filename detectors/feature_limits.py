"""How many features a discovery-mode window summary watches: the rule, at both levels where it applies.

Without a reference a `WindowSummary` adds every feature it meets (``discover``), so a producer inventing
feature names would grow it without end. Two bounds, both deterministic in the records:

- **A partition's window** (`drop_new_features`, per batch of records): the first ``max_features`` names in
  the order the records met them are summarised; the values of later names are dropped and added to
  ``dropped_features``. Offset order decides, not batch cuts, so a replay drops the same values.
- **A model window** (`keep_features`, after the partitions' summaries are merged): partitions may have
  kept different names; the ``max_features`` names with the most values are kept (ties: the smaller name) and
  the values of the others are added to ``dropped_features``. It depends only on the merged counts, so on
  no merge order. ``max_features`` is the summary's own (fixed when its window opened; the smaller of two
  merged), so a configuration change never splits a window.

With a reference the profile fixes the features (an automatic one is learnt from windows kept to the
limit); features outside it are counted in the bounded ``unknown_features``, so neither rule applies.
Names for which ``exempt`` is true (the model's outputs, watched like features before a reference, and the
features the configuration ignores) are neither counted against the limit nor dropped. "Values" are the
present ones: not None, not NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

from driftline.detectors.batch_columns import is_missing
from driftline.detectors.summaries import WindowSummary


def drop_new_features(summary: WindowSummary, features: list[dict[str, Any]], exempt: Callable[[str], bool]
                      ) -> tuple[list[dict[str, Any]], int]:
    """A batch's feature mappings without the names over ``summary.max_features``, and their present values.

    It runs on the records, before their columns are built: building a column per name is what a record
    naming thousands of features would cost. The usual batch is returned as it is.

    >>> from driftline.detectors.reference import ReferenceProfile
    >>> w = WindowSummary.empty(ReferenceProfile.discovery(), max_features=2)
    >>> batch = [{"c": "x", "b": 2.0}, {"a": 1.0, "b": 3.0, "c": None}, {"a": None}]
    >>> drop_new_features(w, batch, lambda name: False)
    ([{'c': 'x', 'b': 2.0}, {'b': 3.0, 'c': None}, {}], 1)
    >>> w.dropped_features
    1
    """
    if not summary.discover:
        return features, 0
    known = summary.numeric.keys() | summary.categorical.keys()
    new = {name for name in set().union(*features) - known if not exempt(name)}
    room = max(summary.max_features - sum(1 for name in known if not exempt(name)), 0)
    if len(new) <= room:  # the usual batch
        return features, 0
    kept: set[str] = set()
    for name in chain.from_iterable(features):  # in the order the records hold them
        if len(kept) == room:
            break
        if name in new:
            kept.add(name)
    over = new - kept
    dropped = sum(not is_missing(v) for f in features for k, v in f.items() if k in over)
    summary.dropped_features += dropped
    return [f if over.isdisjoint(f) else {k: v for k, v in f.items() if k not in over} for f in features], dropped


def keep_features(summary: WindowSummary, exempt: Callable[[str], bool]) -> int:
    """Keep a merged discovery summary's ``max_features`` features with the most values; returns the values dropped.

    >>> import numpy as np
    >>> from driftline.detectors.reference import ReferenceProfile
    >>> w = WindowSummary.empty(ReferenceProfile.discovery(), max_features=2)
    >>> w.add_predictions(None, {"a": np.array([1.0, 2.0]), "b": np.array([1.0, np.nan])}, {"c": ["x", "y"]})
    >>> keep_features(w, lambda name: False), sorted(w.numeric), sorted(w.categorical), w.dropped_features
    (1, ['a'], ['c'], 1)
    """
    if not summary.discover:
        return 0
    values = {name: s.count + summary.type_errors.get(name, 0) for name, s in summary.numeric.items()
              if not exempt(name)}
    values.update({name: s.valid + summary.type_errors.get(name, 0) for name, s in summary.categorical.items()
                   if not exempt(name)})
    if len(values) <= summary.max_features:
        return 0
    ranked = sorted(values, key=lambda name: (-values[name], name))
    dropped = 0
    for name in ranked[summary.max_features:]:
        dropped += values[name]
        summary.numeric.pop(name, None)
        summary.categorical.pop(name, None)
        summary.type_errors.pop(name, None)
    summary.dropped_features += dropped
    return dropped
