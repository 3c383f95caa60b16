"""ClickHouse access through clickhouse-connect: chDB in-process by default, a server by URL. One code path."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from driftline import schemas

WINDOW_COLUMNS = (
    "model_id", "model_version", "window_start", "window_end", "metric", "feature", "slice",
    "value", "n", "breached", "threshold", "p_value", "detail", "reference_id", "config_version", "revision",
)
REFERENCE_COLUMNS = ("model_id", "model_version", "reference_id", "content_hash", "source", "effective_from",
                     "profile", "summary")


class StoreError(RuntimeError):
    """The ClickHouse store could not be opened or written."""


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
        client.insert("driftline.windows", list(rows), column_names=WINDOW_COLUMNS,
                      settings={"insert_deduplication_token": token})


def insert_reference(client: Client, row: Sequence[Any], token: str) -> None:
    """Record a reference for audit (``driftline.references``); the same token again stores nothing."""
    client.insert("driftline.references", [list(row)], column_names=REFERENCE_COLUMNS,
                  settings={"insert_deduplication_token": token})


def query(client: Client, sql: str, parameters: dict[str, Any] | None = None
          ) -> tuple[list[str], list[tuple[Any, ...]]]:
    result = client.query(sql, parameters=parameters)
    return list(result.column_names), [tuple(r) for r in result.result_rows]
