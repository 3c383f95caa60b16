"""What the policy engine reads: one window's judged rows, as the merge stage wrote them, on ``<prefix>findings``.

A window is published twice or more: once when it closes (``source="predictions"``, revision 0) and again
each time labels land (``source="labels"``, ``revision`` = labels merged so far, only growing), and, while it is
still open, each time a sequential detector alarms on one of its ticks (``source="ticks"``, ``revision`` =
alarms so far in the window, every one of them listed). The record key
is the model id, so every version of a model is read in order by one engine. Only rows that a detector judged
(a threshold, a p-value or a breach) travel, plus the window's event count: descriptive rows (means, minima)
stay in ClickHouse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from driftline.errors import InvalidRecord
from driftline.streams.pipeline import internal

Source = Literal["predictions", "labels", "ticks"]


@dataclass(frozen=True, slots=True)
class FindingRow:
    """One judged (metric, feature, slice) of a window: a ``driftline.windows`` row without its keys."""

    metric: str
    feature: str
    slice: str
    value: float
    n: int
    breached: bool
    threshold: float | None
    p_value: float | None


# A findings record's fields as `WindowFindings.encode` writes them (a row's value null when not finite).
_WIRE: dict[str, Any] = {
    "model_id": str, "model_version": str, "window_start_ms": int, "window_end_ms": int, "source": Source,
    "revision": int, "reference_id": str, "config_version": str, "events": int,
    "rows": list[tuple[str, str, str, float | None, int, bool, float | None, float | None]],
}


@dataclass(frozen=True, slots=True)
class WindowFindings:
    """One revision of one source's rows of one model window.

    >>> w = WindowFindings("fraud", "3", 60_000, 120_000, "predictions", 0, "auto-1", "cfg", 400,
    ...                    (FindingRow("ks", "age", "", 0.3, 400, True, 0.01, 1e-9),))
    >>> WindowFindings.decode(w.encode()) == w
    True
    """

    model_id: str
    model_version: str
    window_start_ms: int
    window_end_ms: int
    source: Source
    revision: int
    reference_id: str
    config_version: str
    events: int
    rows: tuple[FindingRow, ...]

    def encode(self) -> bytes:
        data = {f: getattr(self, f) for f in self.__slots__ if f != "rows"}  # type: ignore[attr-defined]
        data["rows"] = [[r.metric, r.feature, r.slice, _finite(r.value), r.n, r.breached, r.threshold, r.p_value]
                        for r in self.rows]
        return orjson.dumps(data)

    @classmethod
    def decode(cls, raw: bytes | None) -> WindowFindings:
        """Parse a record's value; `InvalidRecord` (a ``ValueError``) naming the field on a malformed one."""
        return internal.conforms(internal.decoded(cls._parse, raw, "findings record"), "findings record")

    @classmethod
    def _parse(cls, raw: bytes) -> WindowFindings:
        data = internal.load_object(raw, "findings record")
        for name, hint in _WIRE.items():
            if name not in data:
                raise InvalidRecord(f"findings record: missing field {name}")
            internal.check(data[name], hint, f"findings record.{name}")
        rows = tuple(FindingRow(m, f, s, math.nan if v is None else float(v), n, b,
                                None if t is None else float(t), None if p is None else float(p))
                     for m, f, s, v, n, b, t, p in data["rows"])
        return cls(data["model_id"], data["model_version"], data["window_start_ms"], data["window_end_ms"],
                   data["source"], data["revision"], data["reference_id"], data["config_version"], data["events"],
                   rows)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]], source: Source) -> WindowFindings | None:
        """The findings of ``driftline.windows`` rows of one window (``store.WINDOW_COLUMNS`` order); None if empty."""
        if not rows:
            return None
        first = rows[0]
        model_id, model_version, begin, end = first[0], first[1], first[2], first[3]
        reference_id, config_version, revision = first[13], first[14], first[15]
        events = 0
        judged = []
        for _, _, _, _, metric, feature, slice_, value, n, breached, threshold, p_value, *_ in rows:
            if metric == "count" or (source == "labels" and metric == "labels"):
                events = int(value)
            if breached or threshold is not None or p_value is not None:
                # detectors hand numpy scalars through; the record carries plain floats
                judged.append(FindingRow(str(metric), str(feature), str(slice_), float(value), int(n), bool(breached),
                                         None if threshold is None else float(threshold),
                                         None if p_value is None else float(p_value)))
        return cls(model_id, model_version, _ms(begin), _ms(end), source, int(revision), reference_id,
                   config_version, events, tuple(judged))


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
