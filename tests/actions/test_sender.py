"""One delivery against a real HTTP server on 127.0.0.1: what is retried (429, 5xx, refused connections,
timeouts), how long it waits (full-jitter backoff, Retry-After in both forms, capped), and what is not (400)."""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from driftline.streams.actions.dispatch import metrics
from driftline.streams.actions.dispatch.routes import Route, RouteSpec
from driftline.streams.actions.dispatch.sender import Interrupted, Sender, backoff, retry_after

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Receiver:
    """A real HTTP server; ``script`` answers each request (given the request number and body)."""

    script: Callable[[int, bytes], Reply]
    requests: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    delay: Callable[[int], float] = lambda _n: 0.0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self, port: int = 0) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                n = len(receiver.requests)
                receiver.requests.append((time.monotonic(), dict(self.headers), body))
                time.sleep(receiver.delay(n))
                status, headers, reply = receiver.script(n, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(script: Callable[[int, bytes], Reply], delay: Callable[[int], float] = lambda _n: 0.0,
             port: int = 0) -> Receiver:
        receiver = Receiver(script, delay=delay).start(port)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


def route(url: str, secret: str = "s3cret", **spec: float) -> Route:
    values = {"retry_base_seconds": 0.02, "retry_max_delay_seconds": 2.0, "max_retry_seconds": 10.0,
              "timeout_seconds": 2.0, **spec}
    return Route(RouteSpec(name="r1", kind="webhook", url=url, secret_env="S", **values), SecretStr(secret))


def post(r: Route, body: bytes = b'{"a":1}', halt: threading.Event | None = None):
    sender = Sender(halt or threading.Event(), random.Random(7))
    try:
        return sender.post(r, body, lambda _t: {"Content-Type": "application/json"})
    finally:
        sender.close()


def test_500_then_429_with_retry_after_then_202_is_delivered_after_three_attempts(serve):
    def script(n: int, _body: bytes) -> Reply:
        return [(500, {}, b"oops"), (429, {"Retry-After": "1"}, b"slow down"), (202, {}, b'{"status":"ok"}')][n]

    receiver = serve(script)
    before = metrics.ATTEMPTS.labels("r1", "429")._value.get()
    result = post(route(receiver.url))
    assert (result.outcome, result.status, result.attempts, result.response) == ("delivered", 202, 3,
                                                                                '{"status":"ok"}')
    times = [t for t, _h, _b in receiver.requests]
    assert times[1] - times[0] < 0.5  # the backoff after the 500: at most 0.02 s (+ the round trip)
    assert 0.95 <= times[2] - times[1] < 1.8  # the Retry-After: 1, not the 0.04 s backoff
    assert [b for _t, _h, b in receiver.requests] == [b'{"a":1}'] * 3
    assert metrics.ATTEMPTS.labels("r1", "429")._value.get() == before + 1


def test_retry_after_as_an_http_date_is_honoured(serve):
    def script(n: int, _body: bytes) -> Reply:
        if n == 0:
            return 503, {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)}, b"maintenance"
        return 202, {}, b""

    receiver = serve(script)
    assert post(route(receiver.url)).outcome == "delivered"
    # an HTTP date has whole seconds: 2 s ahead is between 1 and 2 s away
    assert 0.9 <= receiver.requests[1][0] - receiver.requests[0][0] < 2.5


def test_a_retry_after_beyond_the_cap_waits_the_cap(serve):
    receiver = serve(lambda n, _b: (429, {"Retry-After": "3600"}, b"") if n == 0 else (202, {}, b""))
    started = time.monotonic()
    assert post(route(receiver.url, retry_max_delay_seconds=0.3)).attempts == 2
    assert time.monotonic() - started < 2


def test_a_400_is_not_retried_and_its_body_is_recorded_cut_at_2000(serve):
    receiver = serve(lambda _n, _b: (400, {}, b'{"status":"invalid event","errors":["' + b"e" * 5000 + b'"]}'))
    result = post(route(receiver.url))
    assert (result.outcome, result.status, result.attempts) == ("failed", 400, 1)
    assert result.response.startswith('{"status":"invalid event"') and len(result.response) == 2000
    time.sleep(0.2)
    assert len(receiver.requests) == 1


def test_a_refused_connection_is_retried_until_the_route_s_retry_time_is_spent():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    result = post(route(f"http://127.0.0.1:{port}/x", retry_base_seconds=0.05, retry_max_delay_seconds=0.2,
                        max_retry_seconds=1.0))
    elapsed = time.monotonic() - started
    assert (result.outcome, result.status) == ("failed", None) and result.attempts >= 3
    assert "ConnectError" in result.response and str(port) not in result.response
    assert elapsed < 1.5


def test_a_refused_connection_is_retried_until_a_server_answers(serve):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    late: list[Receiver] = []
    threading.Timer(0.5, lambda: late.append(serve(lambda _n, _b: (202, {}, b"ok"), port=port))).start()
    result = post(route(f"http://127.0.0.1:{port}/x", retry_base_seconds=0.05, retry_max_delay_seconds=0.2))
    assert (result.outcome, result.status, result.response) == ("delivered", 202, "ok") and result.attempts >= 2
    assert len(late[0].requests) == 1


def test_a_timeout_is_retried(serve):
    receiver = serve(lambda _n, _b: (202, {}, b"late ok"), delay=lambda n: 1.0 if n == 0 else 0.0)
    result = post(route(receiver.url, timeout_seconds=0.3))
    assert (result.outcome, result.attempts) == ("delivered", 2)


def test_the_retry_time_cap_fails_a_delivery_that_keeps_getting_503(serve):
    receiver = serve(lambda _n, _b: (503, {}, b"down"))
    started = time.monotonic()
    result = post(route(receiver.url, retry_base_seconds=0.1, max_retry_seconds=0.8))
    assert (result.outcome, result.status, result.response) == ("failed", 503, "down")
    assert time.monotonic() - started < 1.5 and len(receiver.requests) == result.attempts >= 2


def test_halt_cuts_a_retry_wait_short(serve):
    receiver = serve(lambda _n, _b: (429, {"Retry-After": "30"}, b""))
    halt = threading.Event()
    threading.Timer(0.3, halt.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted, match="r1"):
        post(route(receiver.url, retry_max_delay_seconds=60, max_retry_seconds=120), halt=halt)
    assert time.monotonic() - started < 2


def test_secrets_and_the_url_never_reach_the_logs_or_the_recorded_response(serve, caplog):
    # a receiver that echoes the request back (the routing key is in a PagerDuty body)
    receiver = serve(lambda n, body: (500 if n == 0 else 400, {}, b"you sent: " + body))
    caplog.set_level(logging.DEBUG)
    result = post(route(receiver.url, secret="pd-r0uting-key"), body=b'{"routing_key":"pd-r0uting-key"}')
    assert result.outcome == "failed" and result.response == 'you sent: {"routing_key":"***"}'
    assert "pd-r0uting-key" not in caplog.text and receiver.url not in caplog.text
    assert "r1" in caplog.text


def test_backoff_is_full_jitter_under_an_exponential_bound():
    rng = random.Random(3)
    for retry in range(8):
        bound = min(5.0, 0.1 * 2**retry)
        draws = [backoff(retry, 0.1, 5.0, rng) for _ in range(400)]
        assert all(0 <= d <= bound for d in draws)
        # full jitter: from zero, not from half the bound
        assert min(draws) < 0.1 * bound and max(draws) > 0.9 * bound
    assert backoff(10_000, 1.0, 60.0, rng) <= 60.0


def test_retry_after_parses_seconds_and_http_dates():
    now = time.time()
    assert retry_after("7", now) == 7.0 and retry_after(" 0 ", now) == 0.0
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after(None, now) is None and retry_after("-1", now) is None and retry_after("later", now) is None
