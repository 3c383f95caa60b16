"""Serving the API: in the worker (a stage service) or alone (``driftline api``), and the address file.

Whoever holds an embedded chDB store serves the API, because no other process can open that store. The
server writes ``$DRIFTLINE_HOME/api.json`` (owner-only) with its URL, pid, store URL and a random local key,
so ``driftline sql`` on the same home reaches it, and writes (``--write``) are allowed only to someone who can
read that file: exactly who could open the store directly when no worker runs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import threading

import uvicorn

from driftline.errors import SettingsError
from driftline.streams.api.address import ADDRESS_FILE, Address
from driftline.streams.api.app import create_app
from driftline.streams.config.settings import Settings

log = logging.getLogger("driftline.api")


def is_loopback(addr: str) -> bool:
    """True for localhost and loopback IPs (127.0.0.0/8, ::1)."""
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to serve beyond this host without a token (before anything starts)."""
    if not is_loopback(settings.api_addr) and not settings.api_token.get_secret_value():
        raise SettingsError(f"DRIFTLINE_API_ADDR={settings.api_addr} is not a loopback address: set "
                            "DRIFTLINE_API_TOKEN so the API requires a bearer token (or bind to 127.0.0.1)")


class ApiServer:
    """uvicorn in the calling thread until ``halt`` is set (or a signal, when run in the main thread)."""

    def __init__(self, settings: Settings, halt: threading.Event) -> None:
        check_bind(settings)
        self.settings = settings
        self.halt = halt
        self.local_key = secrets.token_urlsafe(32)
        # with an embedded store and no port configured, a free loopback port serves `driftline sql` only
        port, host = settings.api_port, settings.api_addr if settings.api_port else "127.0.0.1"
        self.app = create_app(settings, self.local_key)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=port, log_level="warning",
                                                    access_log=False, lifespan="off", server_header=False))
        self.path = settings.home / ADDRESS_FILE

    def _publish(self) -> None:
        while not self.server.started and not self.halt.wait(0.05):
            if self.server.should_exit:
                return
        if self.halt.is_set():
            self.server.should_exit = True
            return
        sock = self.server.servers[0].sockets[0].getsockname()
        host = sock[0] if ":" not in sock[0] else f"[{sock[0]}]"
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{sock[1]}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"url": url, "pid": os.getpid(), "clickhouse_url": self.settings.clickhouse_url,
                       "local_key": self.local_key}, out)
        tmp.replace(self.path)
        log.info("monitoring API at %s (dashboard %s/ui/)", url, url)
        self.halt.wait()
        self.server.should_exit = True

    def run(self) -> None:
        watcher = threading.Thread(target=self._publish, name="driftline-api-address", daemon=True)
        watcher.start()
        try:
            self.server.run()
        finally:
            mine = Address.read(self.settings.home)
            if mine is not None and mine.local_key == self.local_key:
                self.path.unlink(missing_ok=True)
            for pool in self.app.state.pools:
                pool.close()
