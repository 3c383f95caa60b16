"""Wire the stages into the faust app that ``driftline worker`` runs."""

from __future__ import annotations

import threading

import faust
from prometheus_client import start_http_server

from streams import store, topics
from streams.app import build_app
from streams.rows import WindowRows
from streams.settings import Settings
from streams.stage1 import Stage1
from streams.stage2 import Stage2
from streams.summarize import PredictionSummarizer


def build_worker_app(settings: Settings, stage: str = "all") -> faust.App:
    """The worker for ``stage`` ("summarize", "merge" or "all"), with topics created and the store migrated."""
    topics.ensure_topics(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_addr)
    services = {}
    if stage in ("all", "summarize"):
        summarizer = PredictionSummarizer()
        services["summarize"] = lambda halt: Stage1(settings, summarizer, halt)
    if stage in ("all", "merge"):
        client = store.connect(settings.clickhouse_url)
        store.migrate(client)

        def merge(halt: threading.Event) -> Stage2:
            return Stage2(settings, WindowRows(), client, halt)

        services["merge"] = merge
    return build_app(settings, services)
