"""What ``POST /sql`` accepts before ClickHouse sees it: one statement, values into JSON.

The read-only guarantee itself is ClickHouse's (a ``readonly = 1`` session, ``store.connect_read_only``); this
module adds what that setting does not cover: chDB runs ``SELECT 1; DROP ...`` as two statements, so a
second statement is refused here, and result values are made JSON-safe the same way for every client.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import math
import uuid
from decimal import Decimal
from typing import Any

from driftline.errors import ContractError


class SqlRefused(ContractError):
    """A ``POST /sql`` or ``driftline sql`` statement that driftline will not run (e.g. two statements)."""


def single_statement(sql: str) -> str:
    """``sql`` without a trailing ``;``; refused when it holds more than one statement or none.

    Quotes ('', "", ``), comments (-- and /* */) are skipped, so a ';' inside a string is not a separator.

    >>> single_statement("SELECT ';' -- ;\\n;")
    "SELECT ';' -- ;"
    """
    i, n, cut = 0, len(sql), None
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            i += 1
            while i < n and sql[i] != ch:
                i += 2 if sql[i] == "\\" else 1
        elif sql.startswith("--", i) or ch == "#":
            while i < n and sql[i] != "\n":
                i += 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 1
        elif ch == ";":
            cut = i if cut is None else cut
        elif cut is not None and not ch.isspace():
            raise SqlRefused("one statement per request: found more after ';'")
        i += 1
    statement = (sql if cut is None else sql[:cut]).strip()
    if not statement:
        raise SqlRefused("no statement given")
    return statement


def jsonable(value: Any) -> Any:
    """A query result value as JSON: times ISO 8601, non-finite floats 'nan'/'inf'/'-inf', bytes as text or base64."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)
