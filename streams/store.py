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

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from driftline import schemas
from driftline.errors import StoreError
from driftline.schemas import cluster as cluster_ddl
from driftline.streams.store_access import StoreAccess, client_kwargs, redacted

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
ALARM_COLUMNS = ("model_id", "model_version", "tick_start", "tick_end", "window_start", "method", "stream",
                 "statistic", "threshold", "change_start", "direction", "events", "reference_id", "config_version",
                 "detail")
ALERT_COLUMNS = ("event_id", "kind", "fingerprint", "incident_id", "sequence", "transition", "model_id",
                 "model_version", "policy", "severity", "at", "summary", "members", "evidence", "evidence_sql",
                 "actions", "notify", "route", "outcome", "status", "attempts", "response")


_MIGRATIONS_TABLE = """CREATE DATABASE IF NOT EXISTS driftline;
CREATE TABLE IF NOT EXISTS driftline.schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') \
DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"""


def connect(url: str, access: StoreAccess | None = None) -> Client:
    """Open the store named by ``url`` (``chdb:///abs/path`` or ``http(s)://host:port``); ``access``: a server's
    user, password and TLS checks (``StoreAccess.of(settings)``), ignored by chDB."""
    try:
        if url.startswith("chdb://"):
            path = url.removeprefix("chdb://")
            if path and path != "memory":
                Path(path).mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(dsn=url)
        return clickhouse_connect.get_client(**client_kwargs(url, access or StoreAccess()))
    except Exception as exc:
        raise StoreError(f"cannot open ClickHouse store {redacted(url)}: {exc}") from exc


@contextmanager
def _store_errors(doing: str) -> Iterator[None]:
    """clickhouse-connect's errors leave the gateway as ``StoreError``, the original kept as ``__cause__``."""
    try:
        yield
    except ClickHouseError as exc:
        raise StoreError(f"{doing}: {exc}") from exc


@contextmanager
def opened(url: str, access: StoreAccess | None = None) -> Iterator[Client]:
    """A migrated client that is closed afterwards (an embedded chDB store is then free for another opener)."""
    client = connect(url, access)
    try:
        migrate(client, access.cluster if access else "")
        yield client
    finally:
        client.close()


def migrate(client: Client, cluster: str = "") -> list[str]:
    """Apply the versioned DDL files in ``schemas/clickhouse`` that this store has not seen; return their names.

    ``cluster`` (`StoreAccess.cluster`): apply their replicated variant on that ClickHouse cluster (`schemas.cluster`).
    """
    with _store_errors("migrating the ClickHouse store"):
        return _migrate(client, cluster)


def _migrate(client: Client, cluster: str) -> list[str]:
    for statement in cluster_ddl.statements(_MIGRATIONS_TABLE, "streams/store.py (migrations table)", cluster):
        client.command(statement)
    done = {row[0] for row in client.query("SELECT version FROM driftline.schema_migrations").result_rows}
    applied = []
    for version, name, sql in schemas.migrations():
        if version in done:
            continue
        for statement in cluster_ddl.statements(sql, name, cluster):
            client.command(statement)
        client.insert("driftline.schema_migrations", [[version, name]], column_names=["version", "name"])
        applied.append(name)
    return applied


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


def insert_alarms(client: Client, rows: Sequence[Sequence[Any]], token: str) -> None:
    """Record one tick's sequential alarms (``ALARM_COLUMNS``); the same token again stores nothing."""
    if rows:
        with _store_errors("writing driftline.alarms"):
            client.insert("driftline.alarms", list(rows), column_names=ALARM_COLUMNS,
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


def alarm_evidence_sql(model_id: str, model_version: str, methods: Sequence[str], from_ms: int, to_ms: int) -> str:
    """A ready-to-run query over ``driftline.alarms`` showing the sequential alarms behind an alert.

    >>> print(alarm_evidence_sql("fraud", "3", ["cusum"], 0, 65_000))
    SELECT tick_start, tick_end, method, stream, statistic, threshold, change_start, direction, events
    FROM driftline.alarms FINAL
    WHERE model_id = 'fraud' AND model_version = '3' AND method IN ('cusum')
      AND tick_start >= fromUnixTimestamp64Milli(0) AND tick_start < fromUnixTimestamp64Milli(65000)
    ORDER BY tick_start, method, stream
    """
    names = ", ".join(literal(m) for m in sorted(set(methods)))
    return ("SELECT tick_start, tick_end, method, stream, statistic, threshold, change_start, direction, events\n"
            "FROM driftline.alarms FINAL\n"
            f"WHERE model_id = {literal(model_id)} AND model_version = {literal(model_version)} "
            f"AND method IN ({names})\n"
            f"  AND tick_start >= fromUnixTimestamp64Milli({int(from_ms)}) "
            f"AND tick_start < fromUnixTimestamp64Milli({int(to_ms)})\n"
            "ORDER BY tick_start, method, stream")


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


def insert_label_state(client: Client, key: WindowKey, states: Mapping[int, Mapping[str, Any]]) -> None:
    """Record partitions' label states of a window (``LABEL_STATE_FIELDS``) in one insert; the same states again
    store nothing.

    The newest ``last_offset`` wins (``ReplacingMergeTree(last_offset)``), so a replayed older state never
    hides a newer one.
    """
    rows = []
    for partition, state in sorted(states.items()):
        values = [state[f] for f in LABEL_STATE_FIELDS]
        values[-1] = base64.b64encode(state["summary"]).decode()
        rows.append([key[0], key[1], datetime.fromtimestamp(key[2] / 1000, tz=UTC), partition, *values])
    offsets = ",".join(f"{partition}:{state['last_offset']}" for partition, state in sorted(states.items()))
    with _store_errors("writing driftline.label_windows"):
        client.insert("driftline.label_windows", rows, column_names=LABEL_STATE_COLUMNS,
                      settings={"insert_deduplication_token": f"{key}|{offsets}"})


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


# --- The monitoring API (streams/api): the queries behind its endpoints and dashboard pages -----------------------

def connect_read_only(url: str, limits: Mapping[str, int | float] | None = None,
                      access: StoreAccess | None = None) -> Client:
    """A client whose session is read-only (ClickHouse ``readonly = 1``): it can change no data, no table and no
    setting, so ``limits`` (e.g. ``max_result_rows``) hold for every query it runs, whatever the query says.

    Session settings, not per-query ones: chDB keeps a query's settings on its session, so a per-query
    ``readonly`` would refuse the next query's own settings. ``readonly`` goes last, after the limits it freezes.
    """
    client = connect(url, access)
    for key, value in {**(limits or {}), "readonly": 1}.items():
        client.set_client_setting(key, value)
    return client


def _api_filters(model_id: str, version: str | None, metric: str | None, feature: str | None, slice_: str | None,
                 from_ms: int | None, to_ms: int | None, breached_only: bool) -> tuple[str, dict[str, Any]]:
    conditions = ["model_id = {m:String}"]
    params: dict[str, Any] = {"m": model_id}
    for column, name, value in (("model_version", "v", version), ("metric", "k", metric), ("feature", "f", feature),
                                ("slice", "s", slice_)):
        if value is not None:
            conditions.append(f"{column} = {{{name}:String}}")
            params[name] = value
    if from_ms is not None:
        conditions.append("window_start >= fromUnixTimestamp64Milli({t0:Int64})")
        params["t0"] = from_ms
    if to_ms is not None:
        conditions.append("window_start < fromUnixTimestamp64Milli({t1:Int64})")
        params["t1"] = to_ms
    if breached_only:
        conditions.append("breached = 1")
    return " AND ".join(conditions), params


API_WINDOW_COLUMNS = ("model_version", "window_start_ms", "window_end_ms", "metric", "feature", "slice", "value", "n",
                      "breached", "threshold", "p_value", "detail", "reference_id", "config_version", "revision")


def api_window_rows(client: Client, model_id: str, *, version: str | None = None, metric: str | None = None,
                    feature: str | None = None, slice_: str | None = None, from_ms: int | None = None,
                    to_ms: int | None = None, breached_only: bool = False, limit: int = 100, offset: int = 0
                    ) -> tuple[int, list[dict[str, Any]]]:
    """One page of a model's latest-revision ``windows`` rows, newest window first, and how many match in all."""
    where, params = _api_filters(model_id, version, metric, feature, slice_, from_ms, to_ms, breached_only)
    _, total = query(client, f"SELECT count() FROM driftline.windows FINAL WHERE {where}", params)
    _, rows = query(client, "SELECT model_version, toUnixTimestamp64Milli(window_start), "
                            "toUnixTimestamp64Milli(window_end), metric, feature, slice, value, n, breached, "
                            "threshold, p_value, detail, reference_id, config_version, revision "
                            f"FROM driftline.windows FINAL WHERE {where} "
                            "ORDER BY window_start DESC, metric, feature, slice LIMIT {lim:UInt32} OFFSET {off:UInt64}",
                    {**params, "lim": limit, "off": offset})
    return int(total[0][0]), [dict(zip(API_WINDOW_COLUMNS, row, strict=True)) for row in rows]


def api_model_ids(client: Client) -> list[str]:
    """Every model with at least one window, sorted."""
    _, rows = query(client, "SELECT DISTINCT model_id FROM driftline.windows ORDER BY model_id")
    return [str(r[0]) for r in rows]


_OPEN_INCIDENTS = ("SELECT model_id, model_version, policy, incident_id, argMax(transition, (at, sequence)) AS last, "
                   "max(at) AS latest FROM driftline.alerts WHERE kind = 'transition' "
                   "GROUP BY model_id, model_version, policy, incident_id HAVING last != 'resolved'")


def api_model_health(client: Client) -> list[dict[str, Any]]:
    """Per model: versions, windows, the last window's end, the latest label coverage, the breached findings of
    its latest window, and its open incidents."""
    _, models = query(client, "SELECT model_id, arraySort(groupUniqArray(model_version)), uniqExact(window_start), "
                              "toUnixTimestamp64Milli(max(window_end)), toUnixTimestamp64Milli(max(window_start)) "
                              "FROM driftline.windows WHERE metric = 'count' GROUP BY model_id ORDER BY model_id")
    _, coverage = query(client, "SELECT model_id, argMax(value, (window_start, revision)) FROM driftline.windows "
                                "WHERE metric = 'label_coverage' AND slice = '' GROUP BY model_id")
    _, breached = query(client, "SELECT model_id, countIf(breached = 1) FROM driftline.windows FINAL "
                                "WHERE (model_id, window_start) IN (SELECT model_id, max(window_start) "
                                "FROM driftline.windows WHERE metric = 'count' GROUP BY model_id) GROUP BY model_id")
    _, incidents = query(client, f"SELECT model_id, count() FROM ({_OPEN_INCIDENTS}) GROUP BY model_id")
    cov, br, inc = dict(coverage), dict(breached), dict(incidents)
    return [{"model_id": m, "versions": list(versions), "windows": int(windows), "last_window_end_ms": int(end),
             "last_window_start_ms": int(start), "label_coverage": cov.get(m),
             "breached_last_window": int(br.get(m, 0)), "open_incidents": int(inc.get(m, 0))}
            for m, versions, windows, end, start in models]


API_ALERT_COLUMNS = ("event_id", "fingerprint", "incident_id", "sequence", "transition", "model_id", "model_version",
                     "policy", "severity", "at_ms", "summary", "members", "evidence", "evidence_sql", "actions",
                     "notify")
_ALERT_SELECT = ("SELECT event_id, fingerprint, incident_id, sequence, transition, model_id, model_version, policy, "
                 "severity, toUnixTimestamp64Milli(at), summary, members, evidence, evidence_sql, actions, notify "
                 "FROM driftline.alerts WHERE kind = 'transition'")


def api_alerts(client: Client, model_id: str | None, since_ms: int | None, limit: int
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the latest transition of each open incident, the most recent transitions), newest first."""
    where, params = "", {"lim": limit}
    if model_id is not None:
        where += " AND model_id = {m:String}"
        params["m"] = model_id
    recent_where = where
    if since_ms is not None:
        recent_where += " AND at >= fromUnixTimestamp64Milli({t0:Int64})"
        params["t0"] = since_ms
    _, open_rows = query(client, f"{_ALERT_SELECT}{where} AND (incident_id, event_id) IN (SELECT incident_id, "
                                 "argMax(event_id, (at, sequence)) FROM driftline.alerts WHERE kind = 'transition' "
                                 "GROUP BY incident_id HAVING argMax(transition, (at, sequence)) != 'resolved') "
                                 "ORDER BY at DESC, sequence DESC LIMIT {lim:UInt32}", params)
    _, recent = query(client, f"{_ALERT_SELECT}{recent_where} ORDER BY at DESC, sequence DESC LIMIT {{lim:UInt32}}",
                      params)
    return ([dict(zip(API_ALERT_COLUMNS, r, strict=True)) for r in open_rows],
            [dict(zip(API_ALERT_COLUMNS, r, strict=True)) for r in recent])


def dashboard_rows(client: Client, model_id: str, metrics: Sequence[str], last_windows: int
                   ) -> list[dict[str, Any]]:
    """A model's latest-revision rows of ``metrics`` over its last ``last_windows`` windows, oldest first."""
    _, rows = query(client, "SELECT model_version, toUnixTimestamp64Milli(window_start), "
                            "toUnixTimestamp64Milli(window_end), metric, feature, slice, value, n, breached, "
                            "threshold, p_value, detail, reference_id, config_version, revision "
                            "FROM driftline.windows FINAL WHERE model_id = {m:String} AND metric IN {k:Array(String)} "
                            "AND window_start >= (SELECT min(w) FROM (SELECT DISTINCT window_start AS w "
                            "FROM driftline.windows WHERE model_id = {m:String} AND metric = 'count' "
                            "ORDER BY w DESC LIMIT {lim:UInt32})) "
                            "ORDER BY window_start, metric, feature, slice",
                    {"m": model_id, "k": list(metrics), "lim": last_windows})
    return [dict(zip(API_WINDOW_COLUMNS, row, strict=True)) for row in rows]


API_ALARM_COLUMNS = ("model_version", "tick_start_ms", "tick_end_ms", "window_start_ms", "method", "stream",
                     "statistic", "threshold", "change_start_ms", "direction", "events", "reference_id",
                     "config_version", "detail", "written_at_ms")


def api_alarm_rows(client: Client, model_id: str, *, version: str | None = None, method: str | None = None,
                   stream: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                   limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """One page of a model's ``alarms`` (tick start in ``[from_ms, to_ms)``), newest tick first, and how many
    match in all."""
    conditions, params = ["model_id = {m:String}"], {"m": model_id, "lim": limit, "off": offset}
    for condition, name, value in (("model_version = {v:String}", "v", version), ("method = {k:String}", "k", method),
                                   ("stream = {f:String}", "f", stream),
                                   ("tick_start >= fromUnixTimestamp64Milli({t0:Int64})", "t0", from_ms),
                                   ("tick_start < fromUnixTimestamp64Milli({t1:Int64})", "t1", to_ms)):
        if value is not None:
            conditions.append(condition)
            params[name] = value
    where = " AND ".join(conditions)
    _, total = query(client, f"SELECT count() FROM driftline.alarms FINAL WHERE {where}", params)
    _, rows = query(client, "SELECT model_version, toUnixTimestamp64Milli(tick_start), "
                            "toUnixTimestamp64Milli(tick_end), toUnixTimestamp64Milli(window_start), method, stream, "
                            "statistic, threshold, toUnixTimestamp64Milli(change_start), direction, events, "
                            "reference_id, config_version, detail, toUnixTimestamp64Milli(written_at) "
                            f"FROM driftline.alarms FINAL WHERE {where} "
                            "ORDER BY tick_start DESC, model_version, method, stream "
                            "LIMIT {lim:UInt32} OFFSET {off:UInt64}", params)
    return int(total[0][0]), [dict(zip(API_ALARM_COLUMNS, row, strict=True)) for row in rows]


def ping(client: Client) -> None:
    """Raise ``StoreError`` unless the store answers a trivial query."""
    query(client, "SELECT 1")
