"""Prometheus metrics of the alert dispatcher (served with the worker's, or by ``driftline alerts dispatch``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter("driftline_alert_deliveries_total",
                     "Final outcomes of delivering an alert transition to a route", ["route", "outcome"])
ATTEMPTS = Counter("driftline_alert_delivery_attempts_total",
                   "HTTP attempts to deliver an alert; status is the HTTP status, 'error' or 'timeout'",
                   ["route", "status"])
LATENCY = Histogram("driftline_alert_delivery_seconds",
                    "Time from a delivery's first attempt to its final outcome, retries included", ["route"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
MALFORMED = Counter("driftline_alert_dispatch_malformed_total",
                    "Records on the alerts topic the dispatcher skipped because they are not alert.v1")
