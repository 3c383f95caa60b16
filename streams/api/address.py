"""Where a running API is: the address file its server writes under ``DRIFTLINE_HOME``, and the local key header.

Kept apart from the server so ``driftline sql`` finds a worker without importing the web stack.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from driftline.streams.config.settings import Settings

ADDRESS_FILE = "api.json"
LOCAL_KEY_HEADER = "X-Driftline-Local-Key"


def embedded(settings: Settings) -> bool:
    """The store is chDB in this process (so only this process can answer queries on it)."""
    return settings.clickhouse_url.startswith("chdb://")


@dataclass(frozen=True)
class Address:
    """What ``api.json`` says about the server that wrote it."""

    url: str
    pid: int
    clickhouse_url: str
    local_key: str

    @classmethod
    def read(cls, home: Path) -> Address | None:
        try:
            data = json.loads((home / ADDRESS_FILE).read_text())
            return cls(str(data["url"]), int(data["pid"]), str(data["clickhouse_url"]), str(data["local_key"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
