"""Wire the stages into the faust app that ``driftline worker`` runs."""

from __future__ import annotations

import threading
from collections.abc import Callable

import faust
from prometheus_client import start_http_server

from driftline.streams import store
from driftline.streams.app import build_app
from driftline.streams.config.model_config import ConfigWatcher, MonitoringConfig, ResolvedModelConfig
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.pipeline.rows import WindowRows
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.pipeline.windows import window_shape
from driftline.streams.references import topic as references
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.references.topic import ReferenceFollower
from driftline.streams.references.wait import awaited_windows
from driftline.streams.stages.label_windows import LabelWindows
from driftline.streams.stages.merge_stage import MergeStage
from driftline.streams.stages.summarize_stage import SummarizeStage


def config_source(settings: Settings) -> Callable[[str, str], ResolvedModelConfig]:
    """Resolve a model version's configuration, re-reading the file when it changed (no restart)."""
    if settings.monitoring_config is None:
        built_in = MonitoringConfig()
        return lambda model_id, version: built_in.resolve(model_id, version, settings)
    watcher = ConfigWatcher(settings.monitoring_config)

    def resolve(model_id: str, version: str) -> ResolvedModelConfig:
        watcher.poll()
        return watcher.current().resolve(model_id, version, settings)

    return resolve


def build_worker_app(settings: Settings, stage: str = "all") -> faust.App:
    """The worker for ``stage`` ("summarize", "merge" or "all"), with topics created and the store migrated."""
    topics.ensure_topics(settings)
    resolve = config_source(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_addr)
    services: dict[str, Callable[[threading.Event], object]] = {}
    if stage in ("all", "summarize"):
        def summarize(halt: threading.Event) -> SummarizeStage[object]:
            book = ReferenceBook()
            return SummarizeStage(settings, PredictionSummarizer(book.profile_for, resolve), halt,  # type: ignore[arg-type]
                          ReferenceFollower(settings, book), shape=window_shape(resolve),
                          awaited=awaited_windows(book, resolve))

        services["summarize"] = summarize
    if stage in ("all", "merge"):
        client = store.connect(settings.clickhouse_url)
        store.migrate(client)

        def merge(halt: threading.Event) -> MergeStage:
            book = ReferenceBook()
            producer = kafka_io.producer(settings.kafka_bootstrap, **{"message.max.bytes": 8_388_608})

            def publish(ref: Reference) -> None:
                references.publish(settings, ref, producer)
                producer.flush(30)

            return MergeStage(settings, WindowRows(book, resolve, publish), client, halt,
                          ReferenceFollower(settings, book), LabelWindows(client, book, resolve))

        services["merge"] = merge
    return build_app(settings, services)
