"""The merge stage's output to the policy engine: each window's judged rows, published on ``<prefix>findings``.

The merge stage writes a window's rows to ClickHouse, then publishes them here (record key = model id, so a
model's windows are read in order by one engine); it settles the outbox before it commits its offsets, so a
window whose rows were written is always published (at least once: a replay re-publishes the same revision,
which the engine ignores).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from driftline.streams import metrics
from driftline.streams.actions.findings import Source, WindowFindings
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.kafka_io import Outbox


class FindingsPublisher:
    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self.topic = settings.topic(topics.FINDINGS)
        self.outbox = outbox

    def written(self, rows: Sequence[Sequence[Any]], source: Source) -> None:
        """Publish the judged rows of one window just written to ``driftline.windows``."""
        findings = WindowFindings.from_rows(rows, source)
        if findings is None:
            return
        self.outbox.produce(self.topic, findings.encode(), findings.model_id.encode())
        metrics.FINDINGS_PUBLISHED.labels(source=source).inc()

    def settle(self) -> None:
        """Before the merge stage commits: every window published so far is on the broker."""
        self.outbox.settle()
