"""The reference inference service: the torch model behind FastAPI, every prediction and label logged via the SDK.

``create_app`` builds the app: it opens (and on first start trains) the model registry under
``<DRIFTLINE_HOME>/registry``, loads the deployed version, and on startup opens the SDK ``Monitor`` and the
rollback listener; shutdown stops the listener and flushes the monitor. Endpoints:

* ``POST /predict`` / ``POST /predict/batch``: one applicant, or up to 1,000 answered by one version;
* ``POST /labels`` / ``POST /labels/batch``: delayed ground truth for earlier prediction ids;
* ``GET /healthz``: the version serving, its hash, since when, the registered versions, the SDK's counts;
* ``GET /metrics``: Prometheus (``driftline_serving_*``, then the process-wide ``driftline_sdk_*``);
* ``POST /admin/promote``: deploy a registered version by hand, with ``Authorization: Bearer <token>``
  where the token is the value of the environment variable named by ``DRIFTLINE_ADMIN_TOKEN_ENV``.

Requests are validated strictly (unknown fields too): a bad one is a 422 whose ``detail[].loc`` names the
field. The handlers are ``async`` and run the model inline: it answers in tens of microseconds, less than a
hop to the thread pool would cost.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from driftline.serving.monitor import Monitor, MonitorStats
from driftline.serving.service import data
from driftline.serving.service.deployment import Deployment, Outcome
from driftline.serving.service.metrics import LatencyMiddleware, ServiceMetrics
from driftline.serving.service.model import encode, probabilities
from driftline.serving.service.registry import LoadedVersion, Registry, bootstrap
from driftline.serving.service.rollback import RollbackListener
from driftline.streams.config.settings import Settings
from driftline.streams.kafka.security import KafkaSecurity

log = logging.getLogger(__name__)
DEFAULT_MODEL_ID = "agrawal-loans"
MAX_BATCH = 1000
ENDPOINTS = frozenset({"/predict", "/predict/batch", "/labels", "/labels/batch", "/healthz", "/metrics",
                       "/admin/promote"})

Amount = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
PredictionId = Annotated[str, Field(min_length=1, max_length=128)]
_BEARER = HTTPBearer(auto_error=False)  # module level: FastAPI resolves the dependency from the module's names
VersionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Applicant(_Strict):
    """The model's input: river's Agrawal attributes."""

    salary: Amount
    commission: Amount
    age: Annotated[int, Field(ge=0, le=130)]
    elevel: Annotated[int, Field(ge=0, le=4, description="education level")]
    car: Annotated[int, Field(ge=1, le=20, description="car maker")]
    zipcode: Annotated[int, Field(ge=0, le=8, description="0-2: north, 3-5: central, 6-8: south")]
    hvalue: Amount
    hyears: Annotated[int, Field(ge=0, le=100)]
    loan: Amount


class PredictRequest(_Strict):
    prediction_id: PredictionId | None = Field(default=None, description="yours, or one is made up")
    features: Applicant


class Prediction(BaseModel):
    prediction_id: str
    model_id: str
    model_version: str
    label: str
    score: float = Field(description='P("1")')
    probabilities: dict[str, float]
    segments: dict[str, str]


class BatchPredictRequest(_Strict):
    instances: Annotated[list[PredictRequest], Field(min_length=1, max_length=MAX_BATCH)]


class BatchPrediction(BaseModel):
    model_version: str
    predictions: list[Prediction]


class LabelRequest(_Strict):
    prediction_id: PredictionId
    label: Literal["0", "1"]


class BatchLabelRequest(_Strict):
    labels: Annotated[list[LabelRequest], Field(min_length=1, max_length=MAX_BATCH)]


class LabelsAccepted(BaseModel):
    accepted: int


class PromoteRequest(_Strict):
    version: VersionName


class PromoteResponse(BaseModel):
    outcome: str
    model_version: str
    previous_version: str


class Health(BaseModel):
    status: str
    model_id: str
    model_version: str
    sha256: str
    active_since: str
    versions: list[str]
    sdk: dict[str, int] | None
    rollback_listener: str


class Service:
    """What the endpoints share: the registry, the deployment, the SDK monitor, the metrics."""

    def __init__(self, settings: Settings, model_id: str, monitor: Monitor | None, monitoring: bool) -> None:
        self.settings = settings
        self.model_id = model_id
        self.registry = Registry(settings.home / "registry", model_id)
        bootstrap(self.registry)
        self.monitor = monitor
        self.monitoring = monitoring
        self.metrics = ServiceMetrics(self.sdk_stats)
        self.deployment = Deployment(self.registry, self.metrics)
        self.listener: RollbackListener | None = None

    def sdk_stats(self) -> MonitorStats | None:
        return self.monitor.stats() if self.monitor is not None else None

    def predict(self, requests: Sequence[PredictRequest]) -> list[Prediction]:
        active: LoadedVersion = self.deployment.active  # read once: the whole batch is one version's answer
        rows = [r.features.model_dump() for r in requests]
        probs = probabilities(active.model, encode(rows))
        out = []
        for request, row, p in zip(requests, rows, probs, strict=True):
            pid = request.prediction_id or uuid.uuid4().hex
            by_class = {c: float(p[i]) for i, c in enumerate(data.CLASSES)}
            label = data.CLASSES[int(p.argmax())]
            segments = {"region": data.region(row["zipcode"])}
            if self.monitor is not None:
                # categorical attributes as strings, so driftline profiles them as categories, not numbers
                features = {**row, **{name: str(row[name]) for name in data.CATEGORICAL}}
                self.monitor.log_prediction(pid, features, label=label, score=by_class[data.CLASSES[1]],
                                            probabilities=by_class, segments=segments,
                                            model_version=active.version)
            out.append(Prediction(prediction_id=pid, model_id=self.model_id, model_version=active.version,
                                  label=label, score=by_class[data.CLASSES[1]], probabilities=by_class,
                                  segments=segments))
        self.metrics.predictions.labels(model_version=active.version).inc(len(out))
        return out

    def label(self, labels: Sequence[LabelRequest]) -> LabelsAccepted:
        if self.monitor is not None:
            for item in labels:
                self.monitor.log_label(item.prediction_id, item.label)
        self.metrics.labels.inc(len(labels))
        return LabelsAccepted(accepted=len(labels))

    def start(self, instance: str, listen: bool) -> None:
        if self.monitoring and self.monitor is None:
            self.monitor = Monitor(self.settings.kafka_bootstrap, model_id=self.model_id,
                                   model_version=self.deployment.active.version,
                                   topic_prefix=self.settings.topic_prefix,
                                   security=KafkaSecurity.from_settings(self.settings))
        if listen:
            group = f"{self.settings.consumer_group}-serve-{self.model_id}-{instance}"
            self.listener = RollbackListener(self.deployment, self.metrics, bootstrap=self.settings.kafka_bootstrap,
                                             topic=self.settings.topic("rollback"), group_id=group,
                                             security=KafkaSecurity.from_settings(self.settings)).start()

    def stop(self, owns_monitor: bool) -> None:
        if self.listener is not None:
            self.listener.stop()
        if owns_monitor and self.monitor is not None:
            left = self.monitor.close(timeout=5)
            if left:
                log.warning("%d predictions and labels were not delivered to Kafka before shutdown", left)


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field. The offending input is not echoed: a NaN in it has no JSON form (the
    default handler would fail with a 500) and a client's payload does not belong in error responses."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(settings: Settings, *, model_id: str = DEFAULT_MODEL_ID, monitor: Monitor | None = None,
               monitoring: bool = True, listen_for_rollbacks: bool = True, instance: str | None = None) -> FastAPI:
    """The service for ``model_id``, its registry under ``settings.home / "registry"``.

    ``monitor``: an SDK monitor to log through (the caller closes it); by default one is opened on
    ``settings.kafka_bootstrap`` at startup and closed at shutdown. ``monitoring=False`` logs nothing (the
    benchmark's baseline). ``instance`` names this replica's rollback consumer group (default: the host name).
    """
    service = Service(settings, model_id, monitor if monitoring else None, monitoring)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start(instance or socket.gethostname(), listen_for_rollbacks)
        try:
            yield
        finally:
            service.stop(owns_monitor=monitor is None)

    app = FastAPI(title=f"driftline reference service: {model_id}", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(LatencyMiddleware, histogram=service.metrics.request_seconds, endpoints=ENDPOINTS)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.post("/predict", response_model=Prediction)
    async def predict(request: PredictRequest) -> Prediction:
        return service.predict([request])[0]

    @app.post("/predict/batch", response_model=BatchPrediction)
    async def predict_batch(request: BatchPredictRequest) -> BatchPrediction:
        predictions = service.predict(request.instances)
        return BatchPrediction(model_version=predictions[0].model_version, predictions=predictions)

    @app.post("/labels", response_model=LabelsAccepted, status_code=status.HTTP_202_ACCEPTED)
    async def label(request: LabelRequest) -> LabelsAccepted:
        return service.label([request])

    @app.post("/labels/batch", response_model=LabelsAccepted, status_code=status.HTTP_202_ACCEPTED)
    async def label_batch(request: BatchLabelRequest) -> LabelsAccepted:
        return service.label(request.labels)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        active = service.deployment.active
        stats = service.sdk_stats()
        listener = service.listener
        return Health(status="ok", model_id=model_id, model_version=active.version, sha256=active.sha256,
                      active_since=datetime.fromtimestamp(service.deployment.active_since, UTC).isoformat(),
                      versions=service.registry.versions(),
                      sdk=None if stats is None else {"sent": stats.sent, "failed": stats.failed,
                                                      "dropped": stats.dropped, "queued": stats.queued},
                      rollback_listener="off" if listener is None else
                      "listening" if listener.ready.is_set() else "connecting")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/admin/promote", response_model=PromoteResponse)
    async def promote(request: PromoteRequest,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> PromoteResponse:
        expected = os.environ.get(settings.admin_token_env, "")
        if not expected:
            service.metrics.promotions.labels(outcome="disabled").inc()
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"promotion is disabled: set {settings.admin_token_env} to a token")
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            service.metrics.promotions.labels(outcome="unauthorized").inc()
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        previous = service.deployment.active.version
        outcome = service.deployment.switch(request.version, trigger="promote",
                                            reason=f"promoted by hand over POST /admin/promote (was {previous})")
        service.metrics.promotions.labels(outcome=outcome.value).inc()
        if outcome is Outcome.UNKNOWN_VERSION:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{model_id} has no registered version {request.version}")
        if outcome is Outcome.UNUSABLE_VERSION:
            raise HTTPException(status.HTTP_409_CONFLICT, f"version {request.version} cannot be loaded (see the log)")
        return PromoteResponse(outcome=outcome.value, model_version=service.deployment.active.version,
                               previous_version=previous)

    return app
