"""The demo's live view in a terminal: phase, traffic, windows and each step of the loop as it happens."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from driftline.streams.demo.loop import STEPS, Progress


class LiveView:
    """A rich ``Live`` table, refreshed by `show` (the demo calls it twice a second)."""

    def __init__(self, console: Console | None = None) -> None:
        self.live = Live(Table(), console=console or Console(), refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.live.__exit__(kind, exc, tb)

    def show(self, progress: Progress) -> None:
        table = Table(title=f"driftline demo — {progress.phase}", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("elapsed", f"{time.time() - progress.started:.0f} s")
        table.add_row("predictions / labels sent", f"{progress.events_sent} / {progress.labels_sent}")
        table.add_row("version serving", progress.active_version or "…")
        table.add_row("windows written", f"{progress.windows_written:.0f}")
        table.add_row("pages at the sink", str(progress.pages))
        for name in STEPS:
            at = progress.steps.get(name)
            table.add_row(name, "…" if at is None else f"✓ at +{at - progress.started:.0f} s")
        self.live.update(table)
