"""The demo's users: steady HTTP traffic to the reference service's ``/predict``, and the labels sent back later.

Applicants come from the service's own data generator (`driftline.serving.service.data`), so the labels that
land later are the true outcomes; `Traffic.shift` moves the input distribution (fewer young applicants)
while it runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import httpx

from driftline.serving.service import data


class Traffic(threading.Thread):
    """Sends ``rate`` predictions a second in batches of ``batch``; each label follows ``label_delay`` s later."""

    def __init__(self, base_url: str, rate: float, batch: int = 10, label_delay: float = 3.0, seed: int = 11) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self.base_url = base_url
        self.interval = batch / rate
        self.batch = batch
        self.label_delay = label_delay
        self.seed = seed
        self.shift = 0.0
        self.sent = 0
        self.labels_sent = 0
        self.errors = 0
        self.last_error = ""
        self.versions: Counter[str] = Counter()
        self.active_version = ""
        self.halt = threading.Event()
        self._pending: deque[tuple[float, str, str]] = deque()

    def run(self) -> None:
        shift, examples = self.shift, data.stream(self.seed)
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            next_at = time.monotonic()
            while not self.halt.is_set():
                if self.shift != shift:  # a new distribution from now on
                    shift, examples = self.shift, data.stream(self.seed + self.sent, self.shift)
                batch = [next(examples) for _ in range(self.batch)]
                self._predict(client, batch)
                self._send_due_labels(client)
                next_at += self.interval
                self.halt.wait(max(0.0, next_at - time.monotonic()))

    def _predict(self, client: httpx.Client, batch: list[data.Example]) -> None:
        ids = [f"demo-{self.seed}-{self.sent + i}" for i in range(len(batch))]
        try:
            response = client.post("/predict/batch", json={"instances": [
                {"prediction_id": pid, "features": e.features} for pid, e in zip(ids, batch, strict=True)]})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.errors += 1
            self.last_error = str(exc)
            return
        answer = response.json()
        self.active_version = answer["model_version"]
        self.versions[self.active_version] += len(batch)
        self.sent += len(batch)
        due = time.monotonic() + self.label_delay
        self._pending.extend((due, pid, e.label) for pid, e in zip(ids, batch, strict=True))

    def _send_due_labels(self, client: httpx.Client) -> None:
        now = time.monotonic()
        due = []
        while self._pending and self._pending[0][0] <= now and len(due) < 500:
            _, pid, label = self._pending.popleft()
            due.append({"prediction_id": pid, "label": label})
        if not due:
            return
        try:
            client.post("/labels/batch", json={"labels": due}).raise_for_status()
            self.labels_sent += len(due)
        except httpx.HTTPError as exc:
            self.errors += 1
            self.last_error = str(exc)

    def stop(self) -> None:
        self.halt.set()
        self.join(15)
