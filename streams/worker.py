"""Wire the stages into the faust app that ``driftline worker`` runs."""

from __future__ import annotations

import threading
from collections.abc import Callable

import faust
from prometheus_client import start_http_server

from driftline.streams import store
from driftline.streams.actions.dispatch.dispatcher import Dispatcher
from driftline.streams.actions.stage import ActionsStage
from driftline.streams.api.address import embedded
from driftline.streams.api.server import ApiServer, check_bind
from driftline.streams.app import build_app
from driftline.streams.config.model_config import config_source
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.kafka.kafka_io import Outbox
from driftline.streams.kafka.security import check_access
from driftline.streams.pipeline.rows import WindowRows
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.pipeline.ticks import TickSummarizer, tick_shape
from driftline.streams.pipeline.windows import window_shape
from driftline.streams.references import topic as references
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.references.topic import ReferenceFollower
from driftline.streams.references.wait import awaited_windows
from driftline.streams.stages.findings_publisher import FindingsPublisher
from driftline.streams.stages.label_windows import LabelWindows
from driftline.streams.stages.merge_stage import MergeStage
from driftline.streams.stages.summarize_stage import SummarizeStage
from driftline.streams.stages.tick_detection import TickDetection
from driftline.streams.store_access import StoreAccess


def build_worker_app(settings: Settings, stage: str = "all") -> faust.App:
    """The worker for ``stage``, with topics created and the store migrated.

    "summarize" and "merge" run one stage; "actions" the policy engine alone (beside a merge stage elsewhere
    that shares a ClickHouse server); "all" runs everything. The policy engine runs with the merge stage
    (``DRIFTLINE_ACTIONS``, default on) because both write the ClickHouse store, which chDB opens in one
    process only; the alert dispatcher runs beside it when ``DRIFTLINE_ALERT_ROUTES`` names routes (or on
    its own: ``driftline alerts dispatch``). The process holding the store serves the monitoring API.
    """
    check_access(settings)  # a refused login fails the start at once, naming it
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
                          awaited=awaited_windows(book, resolve),
                          ticks=(TickSummarizer(book.profile_for, resolve), tick_shape(resolve)))

        services["summarize"] = summarize
    if stage in ("all", "merge", "actions"):
        access = StoreAccess.of(settings)
        client = store.connect(settings.clickhouse_url, access)
        store.migrate(client, access.cluster)
    if stage in ("all", "merge"):

        def merge(halt: threading.Event) -> MergeStage:
            book = ReferenceBook()
            producer = kafka_io.producer(settings, **{"message.max.bytes": 8_388_608})

            def publish(ref: Reference) -> None:
                references.publish(settings, ref, producer)
                producer.flush(30)

            findings = FindingsPublisher(settings, Outbox(producer))
            ticks = TickDetection(settings, client, book, resolve, Outbox(producer), findings)
            return MergeStage(settings, WindowRows(book, resolve, publish), client, halt,
                              ReferenceFollower(settings, book), LabelWindows(client, book, resolve, findings),
                              findings, ticks)

        services["merge"] = merge
    if stage == "actions" or (stage in ("all", "merge") and settings.actions):
        def act(halt: threading.Event) -> ActionsStage:
            return ActionsStage(settings, store.connect(settings.clickhouse_url, StoreAccess.of(settings)), halt)

        services["actions"] = act
    if stage in ("all", "merge", "actions") and settings.alert_routes:
        services["dispatch"] = lambda halt: Dispatcher(settings, halt)
    if stage in ("all", "merge", "actions") and (settings.api_port or embedded(settings)):
        # the process that holds the store serves the API: an embedded chDB store has no other way in (without
        # DRIFTLINE_API_PORT, on a free loopback port that only `driftline sql` on this home uses)
        check_bind(settings)
        services["api"] = lambda halt: ApiServer(settings, halt)
    return build_app(settings, services)
