"""Calls to the ClickHouse store that outlast an outage: the one retry rule every stage's store call goes through.

A stage that cannot write a window, an alarm or an alert must neither drop it nor commit the offsets behind
it. So a failing call (`StoreError`) is retried, with exponential backoff and full jitter (the dispatcher's
rule, ``dispatch.sender.backoff``), until it passes; meanwhile the stage's loop waits, commits nothing, and
its input stays in Kafka, to be drained once the store is back. Every store call is idempotent (insert
deduplication tokens, reads), so a retry of a write that did land stores nothing twice.

An outage is visible without a log line per retry: ``driftline_store_up`` is 0 and
``driftline_store_outage_seconds`` grows while calls fail, ``driftline_store_write_failures_total{operation}``
counts the failed calls, and one line is logged when the outage starts and one when it ends.

A stage that is told to stop while it waits raises `Abandoned` (no commit follows it; its records are read
again after a restart). The stop event is the calling thread's, set by `stopping_on` around a stage's loop,
so the writers a stage calls into need no handle of their own.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from driftline.errors import StoreError
from driftline.streams import metrics
from driftline.streams.actions.dispatch.sender import backoff

BASE_DELAY_S = 0.5
MAX_DELAY_S = 10.0  # the store's return is noticed within this long, and a dead store is tried 6 times a minute
log = logging.getLogger("driftline.store")
P = ParamSpec("P")
T = TypeVar("T")


class Abandoned(StoreError):
    """The stage was told to stop while a store call waited to be retried; nothing after it was committed."""


class _Outage:
    """This process's store outage, shared by its stages' threads: when it began and how many calls failed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None
        self.failures = 0

    def failed(self, operation: str, exc: StoreError) -> None:
        metrics.STORE_WRITE_FAILURES.labels(operation=operation).inc()
        with self.lock:
            self.failures += 1
            if self.since is None:
                self.since = time.monotonic()
                log.error("ClickHouse store unavailable (%s): %s; retrying, offsets held until it is back",
                          operation, exc)

    def passed(self) -> None:
        if self.since is None:  # the common case, without the lock
            return
        with self.lock:
            if self.since is None:
                return
            log.warning("ClickHouse store available again after %.1f s (%d failed calls retried)",
                        time.monotonic() - self.since, self.failures)
            self.since, self.failures = None, 0

    def seconds(self) -> float:
        since = self.since
        return 0.0 if since is None else time.monotonic() - since


_OUTAGE = _Outage()
metrics.STORE_UP.set_function(lambda: 0.0 if _OUTAGE.since is not None else 1.0)
metrics.STORE_OUTAGE.set_function(_OUTAGE.seconds)
_thread = threading.local()
_NEVER = threading.Event()  # outside a stage's loop nothing asks a call to give up
_rng = random.Random()


@contextmanager
def stopping_on(stop: threading.Event) -> Iterator[None]:
    """Store calls made by this thread inside the block give up (`Abandoned`) once ``stop`` is set."""
    before = getattr(_thread, "stop", None)
    _thread.stop = stop
    try:
        yield
    finally:
        _thread.stop = before


def call(operation: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``operation(*args, **kwargs)`` (a ``streams.store`` function), retried until the store takes it."""
    stop: threading.Event = getattr(_thread, "stop", None) or _NEVER
    retry = 0
    while True:
        try:
            result = operation(*args, **kwargs)
        except StoreError as exc:
            _OUTAGE.failed(operation.__name__, exc)
            delay = backoff(retry, BASE_DELAY_S, MAX_DELAY_S, _rng)
            retry += 1
            if stop.wait(delay):
                raise Abandoned(f"stopped while waiting for the ClickHouse store ({operation.__name__})") from exc
            continue
        _OUTAGE.passed()
        return result
