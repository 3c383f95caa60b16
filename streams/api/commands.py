"""``driftline api`` (serve the API and dashboard alone) and ``driftline sql`` (beside a running worker or not).

``driftline sql`` opens the store itself unless the store is embedded and a live process on the same
``DRIFTLINE_HOME`` holds it and serves the API (``server.py``'s address file): then the statement goes
through that API. Either way the values are made JSON-safe by the same function, so the output is the same.
"""

from __future__ import annotations

import csv
import io
import signal
import sys
import threading
from enum import StrEnum
from typing import Annotated, Any

import httpx
import orjson
import typer

from driftline.errors import SettingsError, StoreError
from driftline.streams import store
from driftline.streams.api.address import LOCAL_KEY_HEADER, Address, embedded
from driftline.streams.api.sqlcheck import jsonable, single_statement
from driftline.streams.config.settings import Settings, load_settings
from driftline.streams.store_access import StoreAccess


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def render(columns: list[str], rows: list[list[Any]], fmt: Format) -> str:
    """Rows as text: ``table`` tab-separated with a header, ``csv``, ``json`` (an array of objects), ``markdown``."""
    if fmt is Format.json:
        return orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows]).decode() + "\n"
    if fmt is Format.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_text(v) for v in row] for row in rows)
        return out.getvalue()
    if fmt is Format.markdown:
        def cell(value: str) -> str:
            return value.replace("|", "\\|").replace("\n", " ")
        lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(cell(_text(v)) for v in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    lines = ["\t".join(columns)] + ["\t".join(_text(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def run_sql(settings: Settings, statement: str, write: bool) -> tuple[list[str], list[list[Any]]]:
    """Run one statement through the holding worker's API, or on the store directly when none holds it."""
    statement = single_statement(statement)
    holder = Address.read(settings.home) if embedded(settings) else None
    if holder is not None and holder.alive() and holder.clickhouse_url == settings.clickhouse_url:
        try:
            response = httpx.post(f"{holder.url}/sql", json={"query": statement, "write": write},
                                  headers={LOCAL_KEY_HEADER: holder.local_key}, timeout=None)
        except httpx.HTTPError as exc:
            raise StoreError(f"the worker (pid {holder.pid}) holds the store but its API at {holder.url} did not "
                             f"answer: {exc}") from None
        if response.status_code != 200:
            raise StoreError(str(response.json().get("detail", response.text)))
        body = response.json()
        return body["columns"], body["rows"]
    access = StoreAccess.of(settings)
    with store.opened(settings.clickhouse_url, access) as client:
        if write:
            columns, rows = store.query(client, statement)
        else:
            reader = store.connect_read_only(settings.clickhouse_url, access=access)
            try:
                columns, rows = store.query(reader, statement)
            finally:
                reader.close()
    return columns, [[jsonable(v) for v in row] for row in rows]


def sql(
    query: Annotated[str, typer.Argument(help="One ClickHouse statement, e.g. \"SELECT * FROM driftline.windows\"")],
    output: Annotated[Format, typer.Option("--format", help="table (tab-separated, with a header), csv, json "
                                                            "(an array of objects) or markdown")] = Format.table,
    write: Annotated[bool, typer.Option("--write", help="Allow DML and DDL (INSERT, ALTER, DROP, ...); "
                                                        "without it the statement runs read-only.")] = False,
) -> None:
    """Run one ClickHouse statement against the store and print the rows.

    Read-only unless --write. With an embedded store held by a running worker (same DRIFTLINE_HOME), the
    statement goes through that worker's API; the output is the same either way.
    """
    columns, rows = run_sql(load_settings(), query, write)
    sys.stdout.write(render(columns, rows, output))


def api() -> None:
    """Serve the monitoring API and dashboard (DRIFTLINE_API_ADDR:DRIFTLINE_API_PORT) until SIGTERM/SIGINT."""
    settings = load_settings()
    if not settings.api_port:
        raise SettingsError("set DRIFTLINE_API_PORT to the port to serve the API on")
    holder = Address.read(settings.home) if embedded(settings) else None
    if holder is not None and holder.alive():
        raise StoreError(f"process {holder.pid} already holds this store and serves its API at {holder.url}")
    from driftline.streams.api.server import ApiServer  # the web stack, only when serving

    halt = threading.Event()
    server = ApiServer(settings, halt)
    # uvicorn in the main thread would re-raise SIGTERM after its shutdown and end the process before the address
    # file is removed; in a thread it leaves signals alone, and halt stops it
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: halt.set())
    thread = threading.Thread(target=server.run, name="driftline-api")
    thread.start()
    typer.echo(f"driftline API on http://{settings.api_addr}:{settings.api_port} (dashboard: /ui/, docs: /docs)")
    while thread.is_alive():
        thread.join(0.5)
