"""The ClickHouse gateway: every SQL statement driftline runs, behind named functions.

Access goes through clickhouse-connect: chDB in-process by default, a server by URL. One code path. No other
module holds SQL (``query`` runs the user's own, for ``driftline sql``); the table layouts live in
``schemas/clickhouse``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from driftline import schemas
from driftline.errors import StoreError

if TYPE_CHECKING:  # annotations only: the gateway runs no pipeline code, and ``driftline sql`` starts faster
    from driftline.streams.pipeline.windows import WindowKey

WINDOW_COLUMNS = (
    "model_id", "model_version", "window_start", "window_end", "metric", "feature", "slice",
    "value", "n", "breached", "threshold", "p_value", "detail", "reference_id", "config_version", "revision",
)
# One input partition's label state of a prediction window, named as ``label_rows.PartState``'s fields.
LABEL_STATE_FIELDS = ("last_offset", "labeled", "correct", "abs_err", "sq_err", "unmatched", "conflicts", "summary")
LABEL_STATE_COLUMNS = ("model_id", "model_version", "window_start", "partition", *LABEL_STATE_FIELDS)
REFERENCE_COLUMNS = ("model_id", "model_version", "reference_id", "content_hash", "source", "effective_from",
                     "profile", "summary")
ALERT_COLUMNS = ("event_id", "kind", "fingerprint", "incident_id", "sequence", "transition", "model_id",
                 "model_version", "policy", "severity", "at", "summary", "members", "evidence", "evidence_sql",
                 "actions", "notify", "route", "outcome", "status", "attempts", "response")


def connect(url: str) -> Client:
    """Open the store named by ``url`` (``chdb:///abs/path`` or ``http(s)://host:port``)."""
    try:
        if url.startswith("chdb://"):
            path = url.removeprefix("chdb://")
            if path and path != "memory":
                Path(path).mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(dsn=url)
        parsed = urlparse(url)
        return clickhouse_connect.get_client(
            host=parsed.hostname or "localhost",
            port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
            username=parsed.username or "default",
            password=parsed.password or "",
            secure=parsed.scheme == "https",
        )
    except Exception as exc:
        raise StoreError(f"cannot open ClickHouse store {url}: {exc}") from exc


@contextmanager
def _store_errors(doing: str) -> Iterator[None]:
    """clickhouse-connect's errors leave the gateway as ``StoreError``, the original kept as ``__cause__``."""
    try:
        yield
    except ClickHouseError as exc:
        raise StoreError(f"{doing}: {exc}") from exc


@contextmanager
def opened(url: str) -> Iterator[Client]:
    """A migrated client that is closed afterwards (an embedded chDB store is then free for another opener)."""
    client = connect(url)
    try:
        migrate(client)
        yield client
    finally:
        client.close()


def migrate(client: Client) -> list[str]:
    """Apply the versioned DDL files in ``schemas/clickhouse`` that this store has not seen; return their names."""
    with _store_errors("migrating the ClickHouse store"):
        return _migrate(client)


def _migrate(client: Client) -> list[str]:
    client.command("CREATE DATABASE IF NOT EXISTS driftline")
    client.command(
        "CREATE TABLE IF NOT EXISTS driftline.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM driftline.schema_migrations").result_rows}
    applied = []
    for version, name, sql in schemas.migrations():
        if version in done:
            continue
        for statement in (s.strip() for s in _split_statements(sql)):
            client.command(statement)
        client.insert("driftline.schema_migrations", [[version, name]], column_names=["version", "name"])
        applied.append(name)
    return applied


def _split_statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s for s in "\n".join(lines).split(";") if s.strip()]


def insert_windows(client: Client, rows: Sequence[Sequence[Any]], token: str) -> None:
    """Insert one window's rows; the same ``token`` again stores nothing, so replays never double-count."""
    if rows:
        with _store_errors("writing driftline.windows"):
            client.insert("driftline.windows", list(rows), column_names=WINDOW_COLUMNS,
                          settings={"insert_deduplication_token": token})


def insert_reference(client: Client, row: Sequence[Any], token: str) -> None:
    """Record a reference for audit (``driftline.references``); the same token again stores nothing."""
    with _store_errors("writing driftline.references"):
        client.insert("driftline.references", [list(row)], column_names=REFERENCE_COLUMNS,
                      settings={"insert_deduplication_token": token})


def insert_alerts(client: Client, rows: Sequence[Sequence[Any]], token: str) -> None:
    """Record alert transitions or delivery outcomes (``ALERT_COLUMNS``); the same token again stores nothing."""
    if rows:
        with _store_errors("writing driftline.alerts"):
            client.insert("driftline.alerts", list(rows), column_names=ALERT_COLUMNS,
                          settings={"insert_deduplication_token": token})


def literal(value: str) -> str:
    """A ClickHouse string literal of ``value``: quotes and backslashes escaped, so pasted SQL means what it says.

    >>> print(literal("it's"))
    'it\\'s'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def evidence_sql(model_id: str, model_version: str, metrics: Sequence[str], from_ms: int, to_ms: int) -> str:
    """A ready-to-run query over ``driftline.windows`` showing the rows behind an alert (literals inlined).

    >>> print(evidence_sql("fraud", "3", ["ks", "chi2"], 0, 120_000))
    SELECT window_start, metric, feature, slice, value, threshold, p_value, n, breached, revision
    FROM driftline.windows FINAL
    WHERE model_id = 'fraud' AND model_version = '3' AND metric IN ('chi2', 'ks')
      AND window_start >= fromUnixTimestamp64Milli(0) AND window_start < fromUnixTimestamp64Milli(120000)
    ORDER BY window_start, metric, feature, slice
    """
    names = ", ".join(literal(m) for m in sorted(set(metrics)))
    return ("SELECT window_start, metric, feature, slice, value, threshold, p_value, n, breached, revision\n"
            "FROM driftline.windows FINAL\n"
            f"WHERE model_id = {literal(model_id)} AND model_version = {literal(model_version)} "
            f"AND metric IN ({names})\n"
            f"  AND window_start >= fromUnixTimestamp64Milli({int(from_ms)}) "
            f"AND window_start < fromUnixTimestamp64Milli({int(to_ms)})\n"
            "ORDER BY window_start, metric, feature, slice")


def query(client: Client, sql: str, parameters: dict[str, Any] | None = None
          ) -> tuple[list[str], list[tuple[Any, ...]]]:
    with _store_errors("querying ClickHouse"):
        result = client.query(sql, parameters=parameters)
    return list(result.column_names), [tuple(r) for r in result.result_rows]


def _window_params(key: WindowKey) -> dict[str, Any]:
    return {"m": key[0], "v": key[1], "s": key[2]}


_WHERE_WINDOW = ("model_id = {m:String} AND model_version = {v:String} "
                 "AND window_start = fromUnixTimestamp64Milli({s:Int64})")


def load_label_state(client: Client, key: WindowKey) -> dict[int, dict[str, Any]]:
    """Each input partition's latest label state of one prediction window, by ``LABEL_STATE_FIELDS`` name."""
    _, found = query(client, f"SELECT partition, {', '.join(LABEL_STATE_FIELDS)} FROM driftline.label_windows "
                             f"FINAL WHERE {_WHERE_WINDOW}", _window_params(key))
    states = {}
    for partition, *values in found:
        state = dict(zip(LABEL_STATE_FIELDS, values, strict=True))
        # The summary column is a String; base64 keeps the binary summary intact through every client format.
        state["summary"] = base64.b64decode(state["summary"])
        states[int(partition)] = state
    return states


def insert_label_state(client: Client, key: WindowKey, partition: int, state: Mapping[str, Any]) -> None:
    """Record one partition's label state of a window (``LABEL_STATE_FIELDS``); the same state again stores nothing.

    The newest ``last_offset`` wins (``ReplacingMergeTree(last_offset)``), so a replayed older state never
    hides a newer one.
    """
    values = [state[f] for f in LABEL_STATE_FIELDS]
    values[-1] = base64.b64encode(state["summary"]).decode()
    row = [key[0], key[1], datetime.fromtimestamp(key[2] / 1000, tz=UTC), partition, *values]
    with _store_errors("writing driftline.label_windows"):
        client.insert("driftline.label_windows", [row], column_names=LABEL_STATE_COLUMNS,
                      settings={"insert_deduplication_token": f"{key}|{partition}|{state['last_offset']}"})


def window_count(client: Client, key: WindowKey) -> int | None:
    """The predictions counted in one model window (its latest ``count`` row), or None before it is written."""
    _, found = query(client, "SELECT argMax(value, revision) FROM driftline.windows WHERE metric = 'count' AND "
                             + _WHERE_WINDOW, _window_params(key))
    # argMax over no rows gives the column's default (0), not NULL: a window without a count row reads 0.
    if not found or not found[0][0] or math.isnan(found[0][0]):
        return None
    return int(found[0][0])


DEMO_SUMMARY_SQL = """
SELECT toStartOfMinute(window_start) AS window,
       maxIf(value, metric = 'count') AS events,
       maxIf(round(value, 3), metric = 'ks' AND feature = 'age') AS ks_age,
       maxIf(breached, metric = 'ks' AND feature = 'age') AS age_drift,
       maxIf(round(value, 3), metric = 'psi' AND feature = 'amount') AS psi_amount,
       maxIf(breached, metric = 'ks' AND feature = 'amount') AS amount_drift,
       maxIf(breached, metric = 'mmd') AS multivariate_drift,
       maxIf(round(value, 3), metric = 'accuracy') AS accuracy,
       maxIf(round(value, 3), metric = 'label_coverage') AS label_coverage
FROM driftline.windows FINAL
WHERE model_id = {model:String} AND model_version = {version:String}
GROUP BY window ORDER BY window
"""


def demo_summary(client: Client, model_id: str, model_version: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``driftline demo``'s table: per minute, the events and the demo model's drift and accuracy numbers."""
    return query(client, DEMO_SUMMARY_SQL, {"model": model_id, "version": model_version})


def alert_transitions(client: Client, model_id: str, model_version: str) -> list[tuple[Any, ...]]:
    """A model version's alert transitions, oldest first: (at, transition, policy, severity, summary, actions)."""
    _, rows = query(client, "SELECT at, transition, policy, severity, summary, actions FROM driftline.alerts "
                            "WHERE kind = 'transition' AND model_id = {m:String} AND model_version = {v:String} "
                            "ORDER BY at, sequence", {"m": model_id, "v": model_version})
    return rows
