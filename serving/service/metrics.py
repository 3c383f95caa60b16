"""The reference service's Prometheus metrics, on a registry of its own.

One ``CollectorRegistry`` per app, so several apps in one process (tests, benchmarks) never share or
collide on counters. ``/metrics`` renders it followed by the process-wide default registry, which holds the
SDK's ``driftline_sdk_*`` counters and the process collectors. The SDK figures of this app's own
``Monitor`` (queue depth, sent, failed, dropped) are read from it at scrape time, so they are current even
when no request has polled the producer for a while.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from driftline.serving.monitor import MonitorStats

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# request latency buckets: the model answers in well under a millisecond, a batch in a few
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _SdkCollector(Collector):
    """This app's ``Monitor.stats()``, read at scrape time."""

    def __init__(self, stats: Callable[[], MonitorStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:  # monitoring off, or not started yet
            return
        depth = GaugeMetricFamily("driftline_serving_sdk_queue_depth",
                                  "Records this service's SDK holds in its local producer queue")
        depth.add_metric([], stats.queued)
        yield depth
        records = CounterMetricFamily("driftline_serving_sdk_records",
                                      "Records this service's SDK handed to Kafka, by outcome "
                                      "(dropped: local queue full or undelivered at close)", labels=["outcome"])
        for outcome in ("sent", "failed", "dropped"):
            records.add_metric([outcome], getattr(stats, outcome))
        yield records


class ServiceMetrics:
    """Every metric the service exports."""

    def __init__(self, sdk_stats: Callable[[], MonitorStats | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram("driftline_serving_request_seconds", "HTTP request latency",
                                         ["endpoint", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("driftline_serving_predictions", "Predictions served, by model version",
                                   ["model_version"], registry=r)
        self.labels = Counter("driftline_serving_labels", "Ground-truth labels received", registry=r)
        self.active_version = Gauge("driftline_serving_active_version",
                                    "1 for the model version serving requests, 0 for the other registered ones",
                                    ["model_version"], registry=r)
        self.switches = Counter("driftline_serving_version_switches",
                                "Model version switches applied, by trigger (rollback, promote)", ["trigger"],
                                registry=r)
        self.rollbacks = Counter("driftline_serving_rollbacks",
                                 "Rollback events handled, by outcome: applied; refused (unknown_version, "
                                 "unusable_version, stale); ignored (duplicate, already_active, other_model); "
                                 "malformed; error", ["outcome"], registry=r)
        self.promotions = Counter("driftline_serving_promotions", "POST /admin/promote requests, by outcome",
                                  ["outcome"], registry=r)
        r.register(_SdkCollector(sdk_stats))

    def show_active(self, active: str, versions: list[str]) -> None:
        for version in {*versions, active}:
            self.active_version.labels(model_version=version).set(1 if version == active else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class LatencyMiddleware:
    """Pure ASGI middleware timing every HTTP request, labelled by route and status (unknown paths: other)."""

    def __init__(self, app: ASGIApp, histogram: Histogram, endpoints: frozenset[str]) -> None:
        self.app = app
        self.histogram = histogram
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers when the app raises before starting its response

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope["path"] if scope["path"] in self.endpoints else "other"  # bounded label values
            self.histogram.labels(endpoint=path, status=str(status)).observe(time.perf_counter() - start)
