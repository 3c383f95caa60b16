"""The contracts: JSON Schemas of every event on the bus and the ClickHouse DDL, loaded from package data."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

PREDICTION_V1 = "prediction.v1"
LABEL_V1 = "label.v1"


@cache
def load(name: str) -> dict[str, Any]:
    """Return the JSON Schema called ``name`` (e.g. ``"prediction.v1"``)."""
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def migrations() -> list[tuple[int, str, str]]:
    """ClickHouse migrations as (version, name, sql), in the order they must be applied."""
    folder = resources.files(__name__).joinpath("clickhouse")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)
