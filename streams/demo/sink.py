"""A local PagerDuty-style receiver for the demo: it records every Events API v2 body it is sent.

It answers as PagerDuty's ``/v2/enqueue`` does (202 with ``status``, ``message`` and ``dedup_key``), keeps every
body in memory with its arrival time, and appends it to a JSON-lines file so the user can read what an
on-call engineer's pager would have received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Received:
    at: float
    body: dict[str, Any]

    @property
    def action(self) -> str:
        return str(self.body.get("event_action", ""))

    @property
    def policy(self) -> str:
        return str(self.body.get("payload", {}).get("class", ""))

    @property
    def version(self) -> str:
        return str(self.body.get("payload", {}).get("group", ""))


class WebhookSink:
    """Listens on a free loopback port until `close`; `url` is what a pagerduty route points at."""

    def __init__(self, record_to: Path) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.record_to = record_to
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._answer(400, {"status": "invalid event", "message": "Event object is invalid"})
                    return
                sink._record(body)
                self._answer(202, {"status": "success", "message": "Event processed",
                                   "dedup_key": body.get("dedup_key", "")})

            def _answer(self, code: int, payload: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo shows what arrived in its own view."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-sink", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v2/enqueue"

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(Received(time.time(), body))
            with self.record_to.open("a", encoding="utf-8") as out:
                out.write(json.dumps(body) + "\n")

    def first(self, match: Callable[[Received], bool]) -> Received | None:
        with self._lock:
            return next((r for r in self.received if match(r)), None)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
