"""The monitoring API's FastAPI application: endpoints, bearer-token auth, errors as messages.

Every query goes through ``driftline.streams.store`` on read-only clients (a ClickHouse ``readonly = 1``
session); writes exist only for ``driftline sql --write`` from a user of the same ``DRIFTLINE_HOME``, who
proves it with the local key the server writes there (``server.py``).
"""

from __future__ import annotations

import base64
import hmac
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import orjson
from clickhouse_connect.driver.client import Client
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import REGISTRY, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from driftline.errors import DriftlineError, StoreError
from driftline.streams import store
from driftline.streams.api import pages
from driftline.streams.api.address import LOCAL_KEY_HEADER
from driftline.streams.api.models import (
    AlarmPage,
    AlarmRow,
    Alert,
    Alerts,
    Health,
    ModelHealth,
    Problem,
    SqlRequest,
    SqlResult,
    WindowPage,
    WindowRow,
)
from driftline.streams.api.sqlcheck import SqlRefused, jsonable, single_statement
from driftline.streams.config.settings import Settings
from driftline.streams.store_access import StoreAccess

log = logging.getLogger("driftline.api")
STATIC = Path(__file__).parent / "static"
REQUESTS = Counter("driftline_api_requests_total", "Monitoring API requests answered", ["route", "status"])
# module level: the endpoints' annotations are strings (PEP 563) that FastAPI resolves in this module's namespace
Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page.")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Millis = Annotated[int | None, Query(ge=0, le=253_402_300_799_999, description="Epoch milliseconds.")]
_ERRORS = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found", 422: "invalid input"}


class ClientPool:
    """At most ``size`` store clients in use at once, made on demand and reused (each request holds one)."""

    def __init__(self, make: Callable[[], Client], size: int) -> None:
        self._make = make
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def client(self) -> Iterator[Client]:
        with self._slots:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                client = self._make()
            try:
                yield client
            finally:
                self._idle.put(client)

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()


def _public_url(url: str) -> str:
    parsed = urlparse(url)
    return url if parsed.scheme == "chdb" else f"{parsed.scheme}://{parsed.hostname}:{parsed.port or ''}"


def _message(exc: Exception) -> str:
    # ClickHouse may append its server-side stack trace; a client gets the message only
    return str(exc).split("Stack trace", 1)[0].strip()


def create_app(settings: Settings, local_key: str = "") -> FastAPI:
    """The API over ``settings.clickhouse_url``; ``local_key`` (from ``server.py``) enables writes for its holder."""
    token = settings.api_token.get_secret_value().encode()
    limits = {"max_result_rows": settings.api_sql_max_rows, "result_overflow_mode": "throw",
              "max_result_bytes": settings.api_sql_max_bytes, "max_execution_time": settings.api_sql_timeout_seconds}
    access = StoreAccess.of(settings)
    reads = ClientPool(lambda: store.connect_read_only(settings.clickhouse_url, access=access), 4)
    user_sql = ClientPool(lambda: store.connect_read_only(settings.clickhouse_url, limits, access), 2)
    writes = ClientPool(lambda: store.connect(settings.clickhouse_url, access), 1)
    app = FastAPI(title="driftline monitoring API", version="1",
                  description="Models, windows, findings, sequential alarms and alerts from the driftline store; "
                              "read-only SQL.",
                  responses={code: {"model": Problem, "description": text} for code, text in _ERRORS.items()})
    app.state.pools = (reads, user_sql, writes)

    def local(request: Request) -> bool:
        given = request.headers.get(LOCAL_KEY_HEADER, "").encode()
        return bool(local_key) and hmac.compare_digest(given, local_key.encode())

    def authorized(request: Request) -> None:
        if not token or local(request):
            return
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        given = credentials.strip().encode()
        if scheme.lower() == "basic":  # a browser's login prompt: the token is the password, any user name
            try:
                given = base64.b64decode(given, validate=True).partition(b":")[2]
            except ValueError:
                given = b""
        elif scheme.lower() != "bearer":
            given = b""
        if not hmac.compare_digest(given, token):
            browser = request.url.path == "/" or request.url.path.startswith("/ui")
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <DRIFTLINE_API_TOKEN>'",
                                headers={"WWW-Authenticate": 'Basic realm="driftline"' if browser
                                         else 'Bearer realm="driftline"'})

    guarded = [Depends(authorized)]

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(DriftlineError)
    async def refused(request: Request, exc: DriftlineError) -> JSONResponse:
        return JSONResponse({"detail": _message(exc)}, 400)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("API request %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged by the server)"}, 500)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        REQUESTS.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    def known_model(model_id: str) -> None:
        with reads.client() as client:
            if model_id not in store.api_model_ids(client):
                raise HTTPException(404, f"no windows for model {model_id!r}")

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The API answers and its store answers a query (no token needed)."""
        with reads.client() as client:
            try:
                store.ping(client)
            except StoreError as exc:
                raise HTTPException(503, f"store unavailable: {_message(exc)}") from None
        return Health(status="ok", store=_public_url(settings.clickhouse_url))

    @app.get("/metrics", dependencies=guarded, tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    def metrics() -> Response:
        """Prometheus metrics of this process (the worker's, when the worker serves the API)."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/models", response_model=list[ModelHealth], dependencies=guarded, tags=["monitoring"])
    def models() -> list[ModelHealth]:
        """Every model with its health: open incidents, latest window, label coverage."""
        with reads.client() as client:
            return [ModelHealth(**m, status=pages.status(m)) for m in store.api_model_health(client)]

    def page(model_id: str, limit: int, offset: int, breached_only: bool, **filters: Any) -> WindowPage:
        known_model(model_id)
        with reads.client() as client:
            total, rows = store.api_window_rows(client, model_id, breached_only=breached_only, limit=limit,
                                                offset=offset, **filters)
        items = [WindowRow(**pages.clean_row(r)) for r in rows]
        more = offset + len(items) < total
        return WindowPage(items=items, total=total, limit=limit, offset=offset,
                          next_offset=offset + len(items) if more else None)

    @app.get("/models/{model_id}/windows", response_model=WindowPage, dependencies=guarded, tags=["monitoring"])
    def windows(model_id: str, version: str | None = None, metric: str | None = None, feature: str | None = None,
                slice: str | None = None, from_ms: Millis = None, to_ms: Millis = None, limit: Limit = 100,
                offset: Offset = 0) -> WindowPage:
        """A model's window rows (latest revision), newest first; filter by version, metric, feature, slice and
        window start in ``[from_ms, to_ms)``."""
        return page(model_id, limit, offset, False, version=version, metric=metric, feature=feature, slice_=slice,
                    from_ms=from_ms, to_ms=to_ms)

    @app.get("/models/{model_id}/findings", response_model=WindowPage, dependencies=guarded, tags=["monitoring"])
    def findings(model_id: str, version: str | None = None, metric: str | None = None, from_ms: Millis = None,
                 to_ms: Millis = None, limit: Limit = 100, offset: Offset = 0) -> WindowPage:
        """A model's breached findings only, newest first."""
        return page(model_id, limit, offset, True, version=version, metric=metric, from_ms=from_ms, to_ms=to_ms)

    @app.get("/models/{model_id}/alarms", response_model=AlarmPage, dependencies=guarded, tags=["monitoring"])
    def alarms(model_id: str, version: str | None = None, method: str | None = None, stream: str | None = None,
               from_ms: Millis = None, to_ms: Millis = None, limit: Limit = 100, offset: Offset = 0) -> AlarmPage:
        """A model's sequential alarms (``driftline.alarms``), newest tick first; filter by version, method
        (cusum, ...), stream and tick start in ``[from_ms, to_ms)``."""
        with reads.client() as client:
            total, rows = store.api_alarm_rows(client, model_id, version=version, method=method, stream=stream,
                                               from_ms=from_ms, to_ms=to_ms, limit=limit, offset=offset)
        if not total:  # a model alarms seconds after its data, before its first window: only then ask for windows
            known_model(model_id)
        items = [AlarmRow(**pages.clean_alarm(r)) for r in rows]
        more = offset + len(items) < total
        return AlarmPage(items=items, total=total, limit=limit, offset=offset,
                         next_offset=offset + len(items) if more else None)

    @app.get("/alerts", response_model=Alerts, dependencies=guarded, tags=["monitoring"])
    def alerts(model_id: str | None = None, since_ms: Millis = None, limit: Limit = 100) -> Alerts:
        """Open incidents (their latest transition) and recent transitions, newest first."""
        with reads.client() as client:
            open_rows, recent = store.api_alerts(client, model_id, since_ms, limit)
        return Alerts(open=[Alert(**pages.clean_alert(a)) for a in open_rows],
                      recent=[Alert(**pages.clean_alert(a)) for a in recent])

    @app.post("/sql", response_model=SqlResult, dependencies=guarded, tags=["sql"])
    def sql(body: SqlRequest, request: Request) -> SqlResult:
        """Run one read-only statement, with the row, byte and time limits of DRIFTLINE_API_SQL_*."""
        statement = single_statement(body.query)
        if body.write and not local(request):
            raise HTTPException(403, f"writes need the {LOCAL_KEY_HEADER} header (driftline sql --write on the "
                                     "worker's DRIFTLINE_HOME)")
        with (writes if body.write else user_sql).client() as client:
            columns, rows = store.query(client, statement, body.parameters or None)
        result = [[jsonable(v) for v in row] for row in rows]
        if not body.write and len(orjson.dumps(result)) > settings.api_sql_max_bytes:
            raise SqlRefused(f"result larger than {settings.api_sql_max_bytes} bytes (DRIFTLINE_API_SQL_MAX_BYTES): "
                             "select fewer rows or columns")
        return SqlResult(columns=columns, rows=result)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    pages.mount(app, reads, guarded, known_model)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
