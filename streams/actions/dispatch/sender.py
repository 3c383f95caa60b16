"""One delivery: POST a body to a route until it is accepted, refused, or the route's retry time is spent.

Retried: 429, 5xx, connection errors and timeouts, after an exponential backoff with full jitter, or after the
response's ``Retry-After`` (seconds or an HTTP date) when it sends one; each wait is capped by the route's
``retry_max_delay_seconds``. Not retried: any other status outside 2xx, a request the receiver refused (the
outcome is ``failed`` with its response body). Secrets and the route's URL (which may embed a token) never
reach a log line or the recorded response: they are replaced by ``***`` and the route's name.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from driftline.errors import DriftlineError
from driftline.streams.actions.dispatch import metrics
from driftline.streams.actions.dispatch.routes import Route

RESPONSE_LIMIT = 2000
log = logging.getLogger("driftline.dispatch")
# httpx logs every request's full URL at INFO, and a webhook URL often embeds its token
_QUIET = ("httpx", "httpcore")


class Interrupted(DriftlineError):
    """The dispatcher was told to stop while a delivery waited for its next attempt."""


@dataclass(frozen=True, slots=True)
class Result:
    """A delivery's final state: its outcome, last HTTP status (None: no response), attempts, last response."""

    outcome: Literal["delivered", "failed"]
    status: int | None
    attempts: int
    response: str


def backoff(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait before retry number ``retry`` (0 = the first retry): uniform in [0, min(cap, base * 2**retry)].

    >>> rng = random.Random(1)
    >>> all(0 <= backoff(r, 0.5, 4.0, rng) <= min(4.0, 0.5 * 2**r) for r in range(10) for _ in range(100))
    True
    """
    return rng.uniform(0, min(cap, base * 2 ** min(retry, 62)))


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date); None when absent or invalid.

    >>> retry_after("3", 0.0), retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0), retry_after("soon", 0.0)
    (3.0, 6.0, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when.tzinfo is not None else None


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class Sender:
    """POSTs bodies with retries; thread-safe, one HTTP connection pool for every route.

    ``halt`` set while a delivery waits for its next attempt raises `Interrupted`: the caller commits nothing,
    and the delivery is made again after a restart (receivers drop it by its dedup key or event id).
    """

    def __init__(self, halt: threading.Event, rng: random.Random | None = None) -> None:
        self.halt = halt
        self.rng = rng or random.Random()
        self.client = httpx.Client(follow_redirects=False, headers={"User-Agent": "driftline-dispatcher"})
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)

    def post(self, route: Route, body: bytes, headers: Callable[[float], dict[str, str]]) -> Result:
        """Deliver ``body`` to ``route``; ``headers(now)`` builds each attempt's headers (a fresh timestamp)."""
        spec = route.spec
        started = time.monotonic()
        deadline = started + spec.max_retry_seconds
        attempts = 0
        while True:
            attempts += 1
            status, response, wait = self._attempt(route, body, headers(time.time()))
            if status is not None and not _retryable(status):
                outcome: Literal["delivered", "failed"] = "delivered" if 200 <= status < 300 else "failed"
                return self._final(route, outcome, status, attempts, response, started)
            delay = min(spec.retry_max_delay_seconds,
                        wait if wait is not None else backoff(attempts - 1, spec.retry_base_seconds,
                                                              spec.retry_max_delay_seconds, self.rng))
            if time.monotonic() + delay > deadline:
                return self._final(route, "failed", status, attempts, response, started)
            log.info("alert route %s: attempt %d got %s, retrying in %.2f s", route.name, attempts,
                     status if status is not None else response, delay)
            if self.halt.wait(delay):
                raise Interrupted(f"stopped while route {route.name} waited to retry")

    def _attempt(self, route: Route, body: bytes, headers: dict[str, str]) -> tuple[int | None, str, float | None]:
        """One POST: (status or None, response body or error, Retry-After seconds or None)."""
        try:
            resp = self.client.post(route.spec.url, content=body, headers=headers,
                                    timeout=route.spec.timeout_seconds)
        except httpx.TimeoutException as exc:
            metrics.ATTEMPTS.labels(route.name, "timeout").inc()
            return None, self._scrub(route, f"timeout: {type(exc).__name__} {exc}"), None
        except httpx.TransportError as exc:
            metrics.ATTEMPTS.labels(route.name, "error").inc()
            return None, self._scrub(route, f"{type(exc).__name__}: {exc}"), None
        metrics.ATTEMPTS.labels(route.name, str(resp.status_code)).inc()
        return resp.status_code, self._scrub(route, resp.text), retry_after(resp.headers.get("Retry-After"),
                                                                            time.time())

    def _final(self, route: Route, outcome: Literal["delivered", "failed"], status: int | None, attempts: int,
               response: str, started: float) -> Result:
        metrics.LATENCY.labels(route.name).observe(time.monotonic() - started)
        if outcome == "failed":
            log.warning("alert route %s: delivery failed after %d attempt(s), last %s: %.200s", route.name,
                        attempts, status if status is not None else "no response", response)
        return Result(outcome, status, attempts, response[:RESPONSE_LIMIT])

    @staticmethod
    def _scrub(route: Route, text: str) -> str:
        secret = route.secret.get_secret_value()
        return text.replace(secret, "***").replace(route.spec.url, f"<route {route.name}>")

    def close(self) -> None:
        self.client.close()
