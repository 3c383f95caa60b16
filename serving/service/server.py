"""Run an ASGI app under uvicorn on a background thread: for the demo, the tests and the benchmark.

``driftline serve`` runs uvicorn in the foreground; a process that drives the service itself (``driftline
demo``, an HTTP test, the benchmark) starts it with ``BackgroundServer`` on a loopback port and stops it
when done, which runs the app's shutdown (the rollback listener stops, the SDK flushes).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn

from driftline.errors import DriftlineError


class ServerError(DriftlineError, RuntimeError):
    """The background HTTP server did not start (port taken, or the app's startup failed) or did not stop."""


class BackgroundServer:
    """uvicorn serving ``app`` on ``host:port`` from a daemon thread; a context manager."""

    def __init__(self, app: Any, port: int, host: str = "127.0.0.1", log_level: str = "warning") -> None:
        self.url = f"http://{host}:{port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                     access_log=False, lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{port}", daemon=True)

    def start(self, timeout: float = 60.0) -> Self:
        """Return once the server accepts connections (after the app's startup)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the server on {self.url} did not start (see the log)")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish the requests in flight, run the app's shutdown."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise ServerError(f"the server on {self.url} did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
