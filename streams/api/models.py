"""The monitoring API's typed responses and request bodies (pydantic): what ``/openapi.json`` documents."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# Scalars a query parameter may be bound to; ClickHouse infers nothing, the query names each type ({x:Int64}).
SqlParameter = str | int | float | bool | None | list[str | int | float | bool | None]


class ModelHealth(BaseModel):
    """One monitored model and how it is doing."""

    model_id: str
    versions: list[str]
    windows: int = Field(description="Windows written for the model (all versions).")
    last_window_start_ms: int
    last_window_end_ms: int
    label_coverage: float | None = Field(description="Labels / predictions of the latest labelled window.")
    breached_last_window: int = Field(description="Breached findings in the model's latest window.")
    open_incidents: int
    status: Literal["alerting", "breached", "ok"] = Field(
        description="alerting: an incident is open; breached: the latest window has breached findings; else ok.")


class WindowRow(BaseModel):
    """One ``driftline.windows`` row (its latest revision)."""

    model_version: str
    window_start_ms: int
    window_end_ms: int
    metric: str
    feature: str
    slice: str
    value: float | None = Field(description="null when not a finite number")
    n: int
    breached: bool
    threshold: float | None
    p_value: float | None
    detail: dict[str, Any]
    reference_id: str
    config_version: str
    revision: int


class WindowPage(BaseModel):
    """A page of rows, newest window first."""

    items: list[WindowRow]
    total: int = Field(description="Rows matching the filters in all.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one.")


class AlarmRow(BaseModel):
    """One ``driftline.alarms`` row: a sequential detector crossed its threshold on one stream at one tick."""

    model_version: str
    tick_start_ms: int
    tick_end_ms: int
    window_start_ms: int = Field(description="Start of the window that holds the tick.")
    method: str = Field(description="The detector: cusum, page_hinkley, adwin, ...")
    stream: str = Field(description="A feature, the score, a category's share (feature=category) or the error rate.")
    statistic: float | None = Field(description="null when not a finite number")
    threshold: float | None = Field(description="The detector's h; null for a detector without one.")
    change_start_ms: int | None = Field(description="The change-point estimate; null when the detector gives none.")
    direction: str
    events: int
    reference_id: str
    config_version: str
    detail: dict[str, Any]
    written_at_ms: int


class AlarmPage(BaseModel):
    """A page of sequential alarms, newest tick first."""

    items: list[AlarmRow]
    total: int = Field(description="Alarms matching the filters in all.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one.")


class Alert(BaseModel):
    """One alert transition (triggered, updated, resolved) with its evidence."""

    event_id: str
    fingerprint: str
    incident_id: str
    sequence: int
    transition: str
    model_id: str
    model_version: str
    policy: str
    severity: str
    at_ms: int
    summary: str
    members: list[str]
    evidence: dict[str, Any]
    evidence_sql: str
    actions: list[Any]
    notify: bool


class Alerts(BaseModel):
    """Open incidents (their latest transition) and the most recent transitions."""

    open: list[Alert]
    recent: list[Alert]


class SqlRequest(BaseModel):
    """A single read-only ClickHouse statement; bind values with ``{name:Type}`` placeholders, never by pasting."""

    query: str = Field(min_length=1, max_length=100_000, examples=["SELECT metric, count() FROM driftline.windows "
                                                                   "WHERE model_id = {m:String} GROUP BY metric"])
    parameters: dict[str, SqlParameter] = Field(default_factory=dict, examples=[{"m": "fraud"}])
    write: bool = Field(default=False, description="Run DML/DDL: only with the X-Driftline-Local-Key header, which "
                                                   "only a user of the worker's DRIFTLINE_HOME can read.")


class SqlResult(BaseModel):
    """Columns and rows (values as JSON: times in ISO 8601, non-finite numbers as strings)."""

    columns: list[str]
    rows: list[list[Any]]


class Health(BaseModel):
    """The API process and its store are up."""

    status: Literal["ok"]
    store: str = Field(description="The store's URL without credentials.")


class Problem(BaseModel):
    """An error: what was wrong, never a stack trace."""

    detail: str | list[Any]
