"""The backtest's report: what a candidate configuration would have raised on a replayed range.

Owns the result dataclasses (`Breach`, `WindowResult`, `VersionReport`, `BacktestReport`), their Markdown
and JSON renderings, and the scoring against known change points: false alarms (`count_false_alarms`)
and detection delays and misses (`score_change_points`). Nothing here reads Kafka.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Breach:
    """One breached finding of one replayed window."""

    window_start_ms: int
    window_end_ms: int
    metric: str
    feature: str
    slice: str
    value: float
    threshold: float | None
    p_value: float | None


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One merged model window as the merge stage would have judged it (``reference_id`` empty: not judged).

    ``labels`` are the replayed labels joined to the window's predictions; ``label_coverage`` (labels / n)
    and ``accuracy`` are None where the merge stage would not report them (no label, no classifier label).
    """

    start_ms: int
    end_ms: int
    n: int
    late_events: int
    reference_id: str
    breaches: tuple[Breach, ...] = ()
    labels: int = 0
    label_coverage: float | None = None
    accuracy: float | None = None


@dataclass(frozen=True, slots=True)
class ChangePointResult:
    """How a known change point was met: the first breached window that ends after it, before the next one.

    >>> ChangePointResult(90_000, 60_000, 120_000, 0).delay_s, ChangePointResult(90_000, None, None, 2).missed
    (30.0, True)
    """

    change_point_ms: int
    detected_start_ms: int | None
    detected_end_ms: int | None
    breached_before: int

    @property
    def missed(self) -> bool:
        return self.detected_end_ms is None

    @property
    def delay_s(self) -> float | None:
        """Detection delay: the end of the detecting window (when the merge stage can close it) minus the change."""
        return None if self.detected_end_ms is None else (self.detected_end_ms - self.change_point_ms) / 1000


def score_change_points(windows: Sequence[WindowResult], change_points_ms: Iterable[int]) -> list[ChangePointResult]:
    """Match each change point with its first detection.

    A window detects change point ``c_i`` when it is breached, ends after ``c_i`` (it holds traffic from
    after the change) and starts before the next change point ``c_{i+1}`` (later windows belong to that
    one). ``breached_before`` counts the breached windows that end at or before ``c_i``.

    >>> w = [WindowResult(s, s + 60_000, 100, 0, "r", (Breach(s, s + 60_000, "ks", "x", "", 0.3, 0.1, 1e-5),)
    ...                   if s in (60_000, 240_000) else ()) for s in range(0, 360_000, 60_000)]
    >>> [(r.delay_s, r.breached_before, r.missed) for r in score_change_points(w, [150_000, 300_000])]
    [(150.0, 1, False), (None, 2, True)]
    """
    cps = sorted(set(change_points_ms))
    breached = sorted((w for w in windows if w.breaches), key=lambda w: w.start_ms)
    out = []
    for i, cp in enumerate(cps):
        following = cps[i + 1] if i + 1 < len(cps) else math.inf
        hit = next((w for w in breached if w.end_ms > cp and w.start_ms < following), None)
        before = sum(1 for w in breached if w.end_ms <= cp)
        out.append(ChangePointResult(cp, hit.start_ms if hit else None, hit.end_ms if hit else None, before))
    return out


def count_false_alarms(windows: Sequence[WindowResult], change_points_ms: Iterable[int]) -> int:
    """Breached windows that end at or before the first change point; every breached window when none is given.

    Without change points the range is taken to be stable, so any breach is a false alarm.

    >>> w = [WindowResult(s, s + 10, 5, 0, "r", (Breach(s, s + 10, "ks", "x", "", 1.0, None, None),)) for s in (0, 10)]
    >>> count_false_alarms(w, [10]), count_false_alarms(w, [5]), count_false_alarms(w, [])
    (1, 0, 2)
    """
    cps = sorted(change_points_ms)
    return sum(1 for w in windows if w.breaches and (not cps or w.end_ms <= cps[0]))


@dataclass
class VersionReport:
    """What the candidate configuration would have raised for one model version.

    >>> w = WindowResult(0, 60_000, 50, 0, "ref", (Breach(0, 60_000, "ks", "age", "", 0.4, 0.01, 1e-4),))
    >>> v = VersionReport("fraud", "3", "c0ffee", [w, WindowResult(60_000, 120_000, 50, 0, "")])
    >>> v.windows_judged, v.breached_windows, v.breaches_per_metric()
    (1, 1, {'ks': 1})
    """

    model_id: str
    model_version: str
    config_version: str
    windows: list[WindowResult] = field(default_factory=list)

    @property
    def windows_judged(self) -> int:
        return sum(1 for w in self.windows if w.reference_id)

    @property
    def breached_windows(self) -> int:
        return sum(1 for w in self.windows if w.breaches)

    @property
    def breaches(self) -> list[Breach]:
        return [b for w in self.windows for b in w.breaches]

    def breaches_per_metric(self) -> dict[str, int]:
        return dict(sorted(Counter(b.metric for b in self.breaches).items()))


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


@dataclass
class BacktestReport:
    """The findings a candidate configuration would have raised on a replayed range. Nothing was emitted.

    >>> b = Breach(60_000, 120_000, "ks", "tenure", "", 0.31, 0.05, 1e-9)
    >>> v = VersionReport("churn", "2", "abc", [WindowResult(0, 60_000, 10, 0, "ref"),
    ...                                         WindowResult(60_000, 120_000, 10, 0, "ref", (b,))])
    >>> r = BacktestReport("c.yaml", "f00", 0, 120_000, [30_000], "g", versions=[v])
    >>> r.to_dict()["versions"][0]["change_points"][0]["delay_s"], r.to_dict()["versions"][0]["false_alarms"]
    (90.0, 0)
    >>> "| churn/2 | abc | 2 | 2 | 1 | 0 |" in r.to_markdown()
    True
    """

    config_source: str
    config_version: str
    start_ms: int
    end_ms: int
    change_points_ms: list[int]
    group_id: str
    records_read: int = 0
    records_replayed: int = 0
    invalid: int = 0
    out_of_range: int = 0
    other_models: int = 0
    late_events: int = 0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    versions: list[VersionReport] = field(default_factory=list)
    labels_to_ms: int | None = None
    labels_read: int = 0
    labels_joined: int = 0
    labels_unmatched: int = 0
    labels_invalid: int = 0
    labels_out_of_range: int = 0
    labels_other_models: int = 0
    label_partitions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def version(self, model_id: str, model_version: str) -> VersionReport | None:
        return next((v for v in self.versions if (v.model_id, v.model_version) == (model_id, model_version)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config_source, "config_version": self.config_version,
            "from_ms": self.start_ms, "to_ms": self.end_ms, "change_points_ms": sorted(self.change_points_ms),
            "group_id": self.group_id, "records_read": self.records_read, "records_replayed": self.records_replayed,
            "invalid": self.invalid, "out_of_range": self.out_of_range, "other_models": self.other_models,
            "late_events": self.late_events,
            "partitions": {str(p): {"from_offset": a, "to_offset": b} for p, (a, b) in sorted(self.partitions.items())},
            "labels_to_ms": self.labels_to_ms, "labels_read": self.labels_read, "labels_joined": self.labels_joined,
            "labels_unmatched": self.labels_unmatched, "labels_invalid": self.labels_invalid,
            "labels_out_of_range": self.labels_out_of_range, "labels_other_models": self.labels_other_models,
            "label_partitions": {str(p): {"from_offset": a, "to_offset": b}
                                 for p, (a, b) in sorted(self.label_partitions.items())},
            "versions": [{
                "model_id": v.model_id, "model_version": v.model_version, "config_version": v.config_version,
                "windows_evaluated": len(v.windows), "windows_judged": v.windows_judged,
                "breached_windows": v.breached_windows,
                "false_alarms": count_false_alarms(v.windows, self.change_points_ms),
                "breaches_per_metric": v.breaches_per_metric(),
                "change_points": [{**asdict(c), "delay_s": c.delay_s, "missed": c.missed}
                                  for c in score_change_points(v.windows, self.change_points_ms)],
                "windows": [{"start_ms": w.start_ms, "end_ms": w.end_ms, "n": w.n, "late_events": w.late_events,
                             "reference_id": w.reference_id, "breached": bool(w.breaches), "labels": w.labels,
                             "label_coverage": w.label_coverage, "accuracy": w.accuracy} for w in v.windows],
                "breaches": [asdict(b) for b in v.breaches],
            } for v in self.versions],
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def to_markdown(self) -> str:
        cps = sorted(self.change_points_ms)
        lines = [
            f"# Backtest of {self.config_source} (config version {self.config_version})", "",
            f"Event time {_iso(self.start_ms)} to {_iso(self.end_ms)}; {self.records_replayed} predictions replayed "
            f"of {self.records_read} read ({self.invalid} invalid, {self.out_of_range} outside the range, "
            f"{self.other_models} of other models), {self.late_events} late. Nothing was emitted.", "",
            f"Labels to {_iso(self.labels_to_ms)} (event time): {self.labels_joined} joined to the replayed "
            f"predictions of {self.labels_read} read, {self.labels_unmatched} unmatched (their prediction is not "
            f"in the range), {self.labels_invalid} invalid, {self.labels_out_of_range} outside the range, "
            f"{self.labels_other_models} of other models.", "",
            "False alarms: breached windows ending at or before the first change point"
            + ("." if cps else " (no change point given: the range is taken as stable, every breach counts)."), "",
            "| model/version | config | windows | judged | breached | false alarms | breaches per metric |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for v in self.versions:
            per_metric = ", ".join(f"{m} {n}" for m, n in v.breaches_per_metric().items()) or "-"
            lines.append(f"| {v.model_id}/{v.model_version} | {v.config_version} | {len(v.windows)} | "
                         f"{v.windows_judged} | {v.breached_windows} | {count_false_alarms(v.windows, cps)} | "
                         f"{per_metric} |")
        if not self.versions:
            lines.append("| (no model window in the range) | | | | | | |")
        for v in self.versions:
            if v.windows and not v.windows_judged:
                lines += ["", f"{v.model_id}/{v.model_version}: no window had a reference with data, so no "
                              "detector ran (publish one with `driftline reference set`, or set "
                              "reference.source: auto)."]
            if cps:
                lines += ["", f"## {v.model_id}/{v.model_version}: change points", "",
                          "| change point | first breached window | delay (s) | breached windows before |",
                          "| --- | --- | --- | --- |"]
                for c in score_change_points(v.windows, cps):
                    found = "missed" if c.missed else _iso(c.detected_start_ms)
                    lines.append(f"| {_iso(c.change_point_ms)} | {found} | {_num(c.delay_s)} | {c.breached_before} |")
            if v.breaches:
                lines += ["", f"## {v.model_id}/{v.model_version}: breached findings", "",
                          "| window start | metric | feature | slice | value | threshold | p-value |",
                          "| --- | --- | --- | --- | --- | --- | --- |"]
                lines += [f"| {_iso(b.window_start_ms)} | {b.metric} | {b.feature or '-'} | {b.slice or '-'} | "
                          f"{_num(b.value)} | {_num(b.threshold)} | {_num(b.p_value)} |" for b in v.breaches]
            if any(w.labels for w in v.windows):
                lines += ["", f"## {v.model_id}/{v.model_version}: labels", "",
                          "| window start | labels | label coverage | accuracy |", "| --- | --- | --- | --- |"]
                lines += [f"| {_iso(w.start_ms)} | {w.labels} | {_num(w.label_coverage)} | {_num(w.accuracy)} |"
                          for w in v.windows if w.labels]
        return "\n".join(lines) + "\n"
