"""The faust application run by ``driftline worker``: lifecycle, signals and the stage services.

faust owns the worker's life (start, SIGTERM/SIGINT, crash handling, consumer-group membership of the
app itself); each stage runs its batch loop in a thread beside the event loop, so CPU-heavy window work
never starves faust's own tasks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import faust

from driftline.streams.config.settings import Settings
from driftline.streams.kafka.security import faust_credentials
from driftline.streams.stages.consumer import freeze_startup_heap

log = logging.getLogger("driftline.worker")


class StageService(faust.Service):
    """Runs one stage's blocking loop in a thread; stopping the service stops and joins the loop."""

    def __init__(self, name: str, build: Callable[[threading.Event], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage_name = name
        self.build = build
        self.halt = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        return f"Stage[{self.stage_name}]"

    async def on_start(self) -> None:
        freeze_startup_heap()
        loop = asyncio.get_running_loop()
        runner = self.build(self.halt)

        def target() -> None:
            try:
                runner.run()
            except BaseException as exc:
                log.exception("stage %s crashed", self.stage_name)
                asyncio.run_coroutine_threadsafe(self.crash(exc), loop)

        self.thread = threading.Thread(target=target, name=f"driftline-{self.stage_name}", daemon=True)
        self.thread.start()

    async def on_stop(self) -> None:
        self.halt.set()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join)


def build_app(settings: Settings, services: dict[str, Callable[[threading.Event], Any]]) -> faust.App:
    # faust makes its datadir without parents, and a summarize worker (no store) may be the first on a fresh home
    settings.home.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.consumer_group}-app",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        web_enabled=False,
        topic_replication_factor=settings.topic_replication_factor,  # its leader-election topic survives a broker
        topic_partitions=settings.topic_partitions,
        store="memory://",
        datadir=str(settings.home / "faust"),
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    for name, build in services.items():
        app.service(StageService(name, build, loop=None))
    return app


def run_worker(app: faust.App, loglevel: str = "info") -> None:
    """Block until SIGTERM/SIGINT; stages flush, commit and exit, then the process exits 0."""
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
