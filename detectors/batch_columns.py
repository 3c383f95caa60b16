"""The columns of one batch as `WindowSummary` reads them: missing values, numbers among other values, sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def is_missing(v: Any) -> bool:
    """None or NaN."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def present(values: Sequence[Any]) -> BoolArray:
    """Which values are not missing."""
    return np.array([not is_missing(v) for v in values], dtype=bool).reshape(-1)


def as_float(x: ArrayLike) -> tuple[FloatArray, BoolArray | None]:
    """float64 values (NaN = missing) and, for object input, the rows holding a non-number (type errors)."""
    arr = np.asarray(x)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False).reshape(-1), None
    items = arr.reshape(-1).tolist()
    wrong = np.array([not (is_missing(v) or isinstance(v, int | float)) for v in items], dtype=bool)
    vals = np.array([math.nan if w or v is None else float(v) for v, w in zip(items, wrong, strict=True)])
    return vals.reshape(-1).astype(np.float64), wrong


def batch_size(*columns: Any) -> int:
    """The rows of a batch whose columns (None = not given) must all have that length."""
    sizes = {len(c) for c in columns if c is not None}
    if len(sizes) > 1:
        raise ValueError(f"batch columns differ in length: {sorted(sizes)}")
    return sizes.pop() if sizes else 0
