"""Stage 2's finalizer: merge a model window's partition summaries and turn them into ``windows`` rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import reduce
from typing import Any

import orjson

from detectors.findings import Finding
from detectors.summaries import WindowSummary
from streams.envelope import SummaryHeader
from streams.windows import WindowKey


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def merge_parts(parts: Sequence[tuple[SummaryHeader, bytes]]) -> WindowSummary:
    return reduce(lambda a, b: a.merge(b), (WindowSummary.from_bytes(body) for _, body in parts))


def base_metrics(summary: WindowSummary, late_events: int) -> list[Finding]:
    """The descriptive numbers of every window: volume, lateness, and each numeric feature's moments."""
    found = [Finding("count", float(summary.n), None, False, detail={}),
             Finding("late_events", float(late_events), None, False)]
    for name, num in sorted(summary.numeric.items()):
        total = num.count + num.missing
        found.append(Finding("missing", float(num.missing), None, False, feature=name, detail={"n": total}))
        if num.count:
            found += [Finding("mean", float(num.mean), None, False, feature=name, detail={"n": num.count}),
                      Finding("min", float(num.min), None, False, feature=name, detail={"n": num.count}),
                      Finding("max", float(num.max), None, False, feature=name, detail={"n": num.count})]
    return found


def to_rows(key: WindowKey, size_ms: int, findings: Sequence[Finding], n_default: int,
            revision: int = 0) -> list[list[Any]]:
    model_id, model_version, start = key
    begin, end = _ts(start), _ts(start + size_ms)
    rows = []
    for f in findings:
        detail = dict(f.detail)
        n = int(detail.pop("n", n_default))
        value = f.value if math.isfinite(f.value) else math.nan
        rows.append([model_id, model_version, begin, end, f.metric, f.feature, f.slice, value, n,
                     int(f.breached), f.threshold, f.p_value,
                     orjson.dumps(detail, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode(),
                     revision])
    return rows


class WindowRows:
    """Merges the partitions' summaries and writes the base metrics of the window."""

    def rows(self, key: WindowKey, size_ms: int, parts: Sequence[tuple[SummaryHeader, bytes]]) -> list[list[Any]]:
        summary = merge_parts(parts)
        late = sum(header.late_events for header, _ in parts)
        return to_rows(key, size_ms, base_metrics(summary, late), summary.n)
