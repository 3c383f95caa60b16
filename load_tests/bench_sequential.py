"""Real-time (sequential) detection end to end: how long from the first changed event to the alarm row in
``driftline.alarms`` and to the webhook, through the real broker and a ``driftline worker`` subprocess, beside
river's ADWIN and Page-Hinkley run per event on the same values.

One worker (a stored reference per model, a webhook route to a local receiver) serves every run. Per rate
(1,000 and 10,000 events/s) and scenario (`load_tests.change_streams.SCENARIOS`) a model of its own gets a
stationary stretch, then the change, produced at the rate with event time = the wall clock when produced,
until its alarm row and its webhook arrived (or a time cap). At the first rate each mean-shift scenario also
runs a twin model with ``false_alarm_budget.enabled: false`` on the same values at the same time: the power
cost of the budget. Scenarios the stream does not alarm on report the first breached window row of
``driftline.windows`` instead, and say so.

Run with ``python -m load_tests --only sequential`` (it starts its own broker). ``BENCH_SEQUENTIAL_QUICK=1``: a
smoke run (1,000 events/s, the 1 sd mean shift and the categorical shift, short stretches).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from confluent_kafka import Producer

from driftline.detectors.budget import FalseAlarmBudget
from driftline.streams.config.model_config import config_source
from driftline.streams.config.settings import Settings
from driftline.streams.demo.processes import Child, DemoFailed, wait_healthy
from driftline.streams.demo.sink import Received, WebhookSink
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import free_port
from driftline.streams.references import topic as references
from driftline.streams.references.files import reference_from_file
from load_tests.change_streams import BY_KEY, SCENARIOS, PeerResult, Scenario, Stream, generate, river_baselines

QUICK = os.environ.get("BENCH_SEQUENTIAL_QUICK", "") not in ("", "0")
RATES = (1000,) if QUICK else (1000, 10_000)
KEYS = ("mean_1", "categorical") if QUICK else tuple(s.key for s in SCENARIOS)
STATIONARY_S = {1000: 15.0 if QUICK else 40.0, 10_000: 20.0}  # warm-up and the stationary false-alarm count
MAX_CHANGE_S = 30.0 if QUICK else 45.0  # changed traffic is produced at most this long ...
MAX_CHANGE_LABELLED_S = 120.0  # ... with labels 30 s late, long enough for a window-level answer
GRACE_S = 20.0  # after production stops, how long the alarm and the webhook may still come
REFERENCE_EVENTS = 12_000
UNBUDGETED_RATE = 1e-4  # the sequential knob's default once the budget is off
TARGET_ROW_S = 15.0


@dataclass
class Outcome:
    """What one model of one run produced and what came back."""

    model: str
    budgeted: bool
    change_ms: int = 0
    change_index: int = 0
    produced_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alarms: list[dict[str, Any]] = field(default_factory=list)  # rows of driftline.alarms, by tick_end
    window_breach: dict[str, Any] | None = None  # the first breached window row after the change
    webhook: Received | None = None  # the first alert after the change
    false_pages: int = 0

    def events_before(self, at_ms: float) -> int:
        """Changed events produced at or before ``at_ms``."""
        return int(np.searchsorted(self.produced_ms, at_ms, side="right")) - self.change_index

    @property
    def first_alarm(self) -> dict[str, Any] | None:
        return next((a for a in self.alarms if a["tick_end_ms"] > self.change_ms), None)

    @property
    def false_alarms(self) -> int:
        return sum(a["tick_end_ms"] <= self.change_ms for a in self.alarms)


class Harness:
    """The worker, its API, the webhook receiver and a producer; one `run` per (scenario, rate)."""

    def __init__(self, bootstrap: str, home: Path) -> None:
        self.home = home
        prefix = f"seq{os.getpid()}."
        self.settings = Settings(home=home, kafka_bootstrap=bootstrap, topic_prefix=prefix,
                                 consumer_group=f"{prefix}workers", monitoring_config=home / "monitoring.yaml")
        topics.ensure_topics(self.settings)
        self.models = [(model_id(s, r, b), b) for r in RATES for s in (BY_KEY[k] for k in KEYS)
                       for b in (True, False) if b or (s.kind == "mean" and r == RATES[0])]
        (home / "monitoring.yaml").write_text(monitoring_yaml([m for m, b in self.models if not b]))
        self.tick_seconds = float(config_source(self.settings)(self.models[0][0], "1").tick_seconds)
        self._publish_references()
        self.sink = WebhookSink(home / "webhooks.jsonl")
        api_port, metrics_port = free_port(), free_port()
        self.api, self.metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}/metrics"
        route = {"name": "bench-hook", "kind": "webhook", "url": self.sink.url, "secret_env": "BENCH_HOOK_SECRET",
                 "retry_base_seconds": 0.2}
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        env.update({"DRIFTLINE_HOME": str(home), "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
                    "DRIFTLINE_TOPIC_PREFIX": prefix, "DRIFTLINE_CONSUMER_GROUP": self.settings.consumer_group,
                    "DRIFTLINE_MONITORING_CONFIG": str(home / "monitoring.yaml"),
                    "DRIFTLINE_IDLE_PARTITION_SECONDS": "1", "DRIFTLINE_API_PORT": str(api_port),
                    "DRIFTLINE_METRICS_PORT": str(metrics_port), "BENCH_HOOK_SECRET": "bench-secret",
                    "PYTHONUNBUFFERED": "1", "DRIFTLINE_ALERT_ROUTES": json.dumps([route])})
        self.worker = Child("worker", ["worker"], env, home / "worker.log")
        wait_healthy(f"{self.api}/healthz", self.worker, 180)
        # a producer like a careful service's: idempotent, so retries never reorder a partition
        self.producer = Producer({"bootstrap.servers": bootstrap, "partitioner": topics.PARTITIONER, "linger.ms": 5,
                                  "enable.idempotence": True, "compression.type": "lz4",
                                  "queue.buffering.max.messages": 1_000_000})
        self.produced = 0

    def _publish_references(self) -> None:
        """10,000+ in-control events with their truth, published for every model as `driftline reference set` does."""
        ref = generate(SCENARIOS[0], REFERENCE_EVENTS, REFERENCE_EVENTS, seed=12_345)
        rows = [{**ref.event(i, f"ref-{i}", "reference", 0), "label": str(ref.truth[i])} for i in range(len(ref))]
        path = self.home / "reference.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
        resolve = config_source(self.settings)
        for model, _ in self.models:
            config = resolve(model, "1")
            references.publish(self.settings, reference_from_file(path, model, "1", 0, config.reference,
                                                                  config.features, windows=config))

    def close(self) -> str:
        """Stop everything; the worker log's tail when it died."""
        died = "" if self.worker.alive() else (self.home / "worker.log").read_text()[-3000:]
        self.producer.flush(30)
        self.worker.stop()
        self.sink.close()
        return died

    def sql(self, query: str, **parameters: str | int) -> list[dict[str, Any]]:
        for attempt in range(3):  # a loaded machine may time one out; the worker is checked alive elsewhere
            try:
                reply = httpx.post(f"{self.api}/sql", json={"query": query, "parameters": parameters}, timeout=30)
                reply.raise_for_status()
                break
            except httpx.HTTPError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
        body = reply.json()
        return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]

    def metric(self, name: str) -> float:
        text = httpx.get(self.metrics, timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                self.producer.poll(0.05)

    def run(self, scenario: Scenario, rate: int, seed: int) -> tuple[list[Outcome], Stream, dict[str, float]]:
        """Produce one scenario at ``rate`` to its model (and its unbudgeted twin); collect what came back."""
        mine = {model_id(scenario, rate, True), model_id(scenario, rate, False)}
        outcomes = [Outcome(m, b) for m, b in self.models if m in mine]
        change = int(STATIONARY_S[rate] * rate)
        cap = MAX_CHANGE_LABELLED_S if scenario.label_delay_s else MAX_CHANGE_S
        stream = generate(scenario, change + int(cap * rate), change, seed)
        produced_ms = np.zeros(len(stream), dtype=np.int64)
        predictions, labels = self.settings.topic(topics.PREDICTIONS), self.settings.topic(topics.LABELS)
        delay_ms = int((scenario.label_delay_s or 0) * 1000)
        sent = labelled = 0
        start = time.time()
        next_poll, done_at, max_lag = start, None, 0.0
        while sent < len(stream) and (done_at is None or time.time() < done_at):
            now = time.time()
            now_ms = int(now * 1000)
            for i in range(sent, min(len(stream), int((now - start) * rate) + 1)):
                produced_ms[i] = now_ms
                for o in outcomes:
                    pid = f"{o.model}-{i}"
                    self._produce(predictions, pid.encode(), orjson.dumps(stream.event(i, pid, o.model, now_ms)))
                sent = i + 1
            while delay_ms and labelled < sent and produced_ms[labelled] + delay_ms <= now_ms:
                for o in outcomes:
                    pid = f"{o.model}-{labelled}"
                    self._produce(labels, pid.encode(), orjson.dumps(stream.label(labelled, pid, o.model, now_ms)))
                labelled += 1
            self.producer.poll(0)
            if now >= next_poll:
                self.worker.check()
                if (watermark := self.metric("driftline_stage2_watermark_seconds")) > 0:  # 0: not set yet
                    max_lag = max(max_lag, now - watermark)
                next_poll = now + 1.0
                if sent > change and done_at is None and self._answered(outcomes, produced_ms, change):
                    done_at = now + 1.0
            time.sleep(0.002)
        elapsed = time.time() - start
        self.producer.flush(60)
        self.produced += sent * len(outcomes)
        deadline = time.time() + GRACE_S
        while not self._answered(outcomes, produced_ms[:sent], change) and time.time() < deadline:
            self.worker.check()
            time.sleep(1.0)
        backlog = self.produced - self.metric('driftline_events_total{stage="summarize"}')
        self._answered(outcomes, produced_ms[:sent], change)
        return outcomes, stream, {"rate": sent / elapsed, "max_lag_s": max_lag, "backlog": backlog}

    def _answered(self, outcomes: list[Outcome], produced_ms: np.ndarray, change: int) -> bool:
        """Refresh every outcome from the store and the receiver; True once each has an alarm (or a breached
        window) after the change and a webhook after it."""
        for o in outcomes:
            o.change_index, o.change_ms, o.produced_ms = change, int(produced_ms[change]), produced_ms
            o.alarms = self.sql(
                "SELECT method, stream, toUnixTimestamp64Milli(tick_end) AS tick_end_ms, "
                "toUnixTimestamp64Milli(written_at) AS written_ms, statistic, threshold, detail "
                "FROM driftline.alarms FINAL WHERE model_id = {m:String} ORDER BY tick_end_ms, written_ms", m=o.model)
            breaches = self.sql(
                "SELECT metric, feature, toUnixTimestamp64Milli(window_end) AS window_end_ms, "
                "toUnixTimestamp64Milli(min(written_at)) AS written_ms FROM driftline.windows "
                "WHERE model_id = {m:String} AND breached = 1 GROUP BY metric, feature, window_end "
                "HAVING window_end_ms > {c:Int64} ORDER BY written_ms LIMIT 1", m=o.model, c=o.change_ms)
            o.window_breach = breaches[0] if breaches else None
            mine = [r for r in self.sink.received if r.body.get("model_id") == o.model]
            # an alert belongs to the change when what decided it ended after the change; a sequential alert's
            # `time` is its window's end, so it must also come after the first alarming tick after the change ended
            # (else it is the page of a stationary false alarm written late)
            alarm = o.first_alarm
            o.webhook = next((r for r in mine if _decided_ms(r) > o.change_ms
                              and (alarm is None or r.at * 1000 >= alarm["tick_end_ms"])), None)
            o.false_pages = sum(_decided_ms(r) <= o.change_ms for r in mine)
        return all((o.first_alarm is not None or o.window_breach is not None) and o.webhook is not None
                   for o in outcomes)


def _decided_ms(alert: Received) -> float:
    """Event time of the end of the tick or window that decided an alert (alert.v1 ``time``)."""
    return datetime.fromisoformat(alert.body["time"]).timestamp() * 1000


def model_id(scenario: Scenario, rate: int, budgeted: bool) -> str:
    return f"seq-{scenario.key.replace('.', '')}-{rate}" + ("" if budgeted else "-nobudget")


def monitoring_yaml(unbudgeted: list[str]) -> str:
    """Stored references for all; the default budget, except the twins that switch it off."""
    lines = ["# written by load_tests/bench_sequential.py", "defaults:", "  reference: {source: stored}", "models:"]
    lines += [f"  {m}:\n    false_alarm_budget: {{enabled: false}}" for m in unbudgeted]
    return "\n".join(lines if unbudgeted else lines[:-1]) + "\n"


@dataclass
class Result:
    scenario: Scenario
    rate: int
    outcomes: list[Outcome]
    peers: list[PeerResult]
    traffic: dict[str, float]


def run(bootstrap: str, home: str) -> str:
    load = os.getloadavg()[0]
    harness = Harness(bootstrap, Path(home))
    results: list[Result] = []
    failure = ""
    try:
        for rate in RATES:
            for seed, key in enumerate(KEYS):
                scenario = BY_KEY[key]
                print(f"  {scenario.key} at {rate:,} events/s ...", flush=True)
                outcomes, stream, traffic = harness.run(scenario, rate, seed)
                results.append(Result(scenario, rate, outcomes,
                                      river_baselines(stream.peer_values(scenario), stream.change), traffic))
    except DemoFailed as exc:  # the worker died: report what was measured, and why the rest is missing
        failure = str(exc)
    finally:
        died = harness.close()
    # the machine may be shared: its load says how much of it the broker, the worker and the producer had
    failure += f"\n\n```\n{died}\n```" if died else ""
    return report(results, harness.tick_seconds, (load, os.getloadavg()[0]), failure)


def _alpha(outcome: Outcome, tick_seconds: float) -> float:
    """The per-tick false-alarm rate the detector ran at: from its alarm rows, else what the contract sets."""
    for alarm in outcome.alarms:
        used = json.loads(alarm["detail"] or "{}").get("false_alarm_rate")
        if used is not None:
            return float(used)
    return FalseAlarmBudget().per_tick(tick_seconds) if outcome.budgeted else UNBUDGETED_RATE


def _s(ms: float, since_ms: int) -> str:
    return f"{(ms - since_ms) / 1000:.1f}"


def _driftline_row(o: Outcome, scenario: Scenario, tick_seconds: float) -> tuple[str, int | None, float | None]:
    """A table row, the events of data the detection needed, and the alarm row's seconds."""
    alpha = _alpha(o, tick_seconds)
    label = f"driftline, {'default budget' if o.budgeted else 'budget off'} ({alpha:.1e} per tick)"
    fa = (f"{1e5 * o.false_alarms / o.change_index:.1f} ({o.false_alarms} in {o.change_index:,}; "
          f"{o.false_pages} false pages)")
    hook = (f"{_s(o.webhook.at * 1000, o.change_ms)} s / {o.events_before(o.webhook.at * 1000):,} "
            f"({o.webhook.body.get('policy', '?')})" if o.webhook else "none")
    if (alarm := o.first_alarm) is not None:
        data = o.events_before(alarm["tick_end_ms"] - 1)
        tick_ms = tick_seconds * 1000
        # 1 = the tick that holds the first changed event (ticks are aligned to multiples of their length)
        ticks = round((alarm["tick_end_ms"] - o.change_ms + o.change_ms % tick_ms) / tick_ms)
        what = f"{alarm['method']} on {alarm['stream']}, tick {ticks} of the change" + (
            "" if scenario.moves(alarm["stream"]) else " (**a stream the change does not move**)")
        row_ms = float(alarm["written_ms"])
    elif (window := o.window_breach) is not None:
        data = o.events_before(window["window_end_ms"] - 1)
        what = f"**no sequential alarm**; window row {window['metric']} {window['feature']}".rstrip()
        row_ms = float(window["written_ms"])
    else:
        return f"| {label} | **none** | — | — | {hook} | {fa} |", None, None
    seconds = (row_ms - o.change_ms) / 1000
    return (f"| {label} | {what} | {data:,} | {seconds:.1f} s / {o.events_before(row_ms):,} | {hook} | {fa} |",
            data, seconds)


def report(results: list[Result], tick_seconds: float, load: tuple[float, float], failure: str) -> str:
    budget = FalseAlarmBudget()
    per_100k = {r: budget.per_tick(tick_seconds) / tick_seconds / r * 1e5 for r in RATES}
    out = [
        "## Real-time (sequential) detection end to end",
        "",
        f"`load_tests/bench_sequential.py`: events shaped like a binary classifier's (8 numeric features, a "
        "categorical `plan`, a boolean, segments `region` and `device`, class probabilities, labels) produced "
        "through the local broker at the rate shown, event time = the wall clock when produced, to one `driftline "
        "worker` (both stages, the policy engine and the dispatcher; a webhook route to a local HTTP receiver). "
        f"Every model has a stored reference of {REFERENCE_EVENTS:,} in-control events and default settings "
        f"(tick {tick_seconds:g} s, 60 s windows); each run: a stationary stretch (its false alarms), then the "
        "change, until the alarm row and the webhook arrived. **Data (events)**: changed events up to the end of "
        "the alarming tick (what the detector needed); **alarm row**: from the first changed event to the row's "
        "`written_at` in `driftline.alarms` (seconds / changed events produced by then); **webhook**: to the "
        "receiver's arrival (the policy that sent it). river's ADWIN and PageHinkley (defaults) run per event on "
        "the same values of the scenario's one changed stream (column 'alarm'); their seconds = events / rate. "
        "A scenario without a sequential alarm after the change reports the first breached row of "
        "`driftline.windows` after it instead (window level, marked) and the first alert of any policy. "
        f"The default budget ({budget.alarms:g} false alarm per {budget.days:g} days, sequential share "
        f"{budget.sequential_share:g}) allows "
        + ", ".join(f"{v:.1e} false alarms per 100k events at {r:,} events/s" for r, v in per_100k.items())
        + f". Load average (1 min) at the start and the end: {load[0]:.1f}, {load[1]:.1f} on {os.cpu_count()} cores.",
    ]
    for rate in RATES:
        here = [r for r in results if r.rate == rate]
        if not here:
            continue
        out += ["", f"### {rate:,} events/s", "",
                f"Produced: {min(r.traffic['rate'] for r in here):,.0f}-{max(r.traffic['rate'] for r in here):,.0f} "
                f"events/s per model; the slowest partition's watermark lagged the wall clock by up to "
                f"{max(r.traffic['max_lag_s'] for r in here):.1f} s; events not yet summarised when a run ended: "
                f"{max(r.traffic['backlog'] for r in here):,.0f} at most.", "",
                "| scenario / detector | alarm | data (events) | alarm row (s / events) | webhook (s / events) "
                "| false alarms / 100k stationary |",
                "| --- | --- | ---: | ---: | ---: | ---: |"]
        for r in here:
            out.append(f"| **{r.scenario.title}** | river watches: {r.scenario.peer} | | | | |")
            out += [_driftline_row(o, r.scenario, tick_seconds)[0] for o in r.outcomes]
            out += [f"| {p.method} | | {p.delay_events:,} ({p.delay_events / rate:.2f} s) | | | "
                    f"{p.false_alarms_per_100k:.1f} |" if p.delay_events is not None else
                    f"| {p.method} | missed | — | | | {p.false_alarms_per_100k:.1f} |" for p in r.peers]
    out += ["", *_targets(results, tick_seconds, per_100k), *_power_cost(results, tick_seconds)]
    if failure:
        out += ["", f"**The run stopped early**: {failure}"]
    return "\n".join(out)


def _targets(results: list[Result], tick_seconds: float, per_100k: dict[int, float]) -> list[str]:
    floor = ", ".join(f"{tick_seconds / 2 * r:,.0f} at {r:,} events/s" for r in RATES)
    adwin = [p.delay_events for r in results if r.scenario.kind == "mean" for p in r.peers
             if p.method == "river ADWIN" and p.delay_events is not None]
    lines = ["### Targets", "",
             "A tick-level alarm comes at a tick's end, so its delay in events is at least the changed events of the "
             f"tick that holds the change: {tick_seconds / 2:g} s of traffic on average ({floor}) even when it "
             "alarms on that very tick"
             + (f", against river ADWIN's {min(adwin):,}-{max(adwin):,} events on the mean shifts" if adwin else "")
             + ". In events the target can only be met at rates below about ADWIN's delay / half a tick, whatever "
             "the budget.", ""]
    for r in results:
        if r.scenario.kind != "mean":
            continue
        o = next(o for o in r.outcomes if o.budgeted)
        _, data, seconds = _driftline_row(o, r.scenario, tick_seconds)
        adwin = next(p for p in r.peers if p.method == "river ADWIN").delay_events
        fa = 1e5 * o.false_alarms / o.change_index
        verdict = "met" if data is not None and adwin is not None and data <= adwin else "**not met**"
        lines.append(f"- {r.scenario.title}, {r.rate:,} events/s: delay in events no worse than river ADWIN's: "
                     f"{verdict} ({data if data is not None else 'no alarm'} vs {adwin}); false alarms "
                     f"{fa:.1f} per 100k observed ({o.false_alarms} in {o.change_index:,} events) against a budget "
                     f"of {per_100k[r.rate]:.1e}")
        if r.rate == 1000:
            ok = seconds is not None and seconds <= TARGET_ROW_S
            lines[-1] += (f"; alarm row within {TARGET_ROW_S:g} s: {'met' if ok else '**not met**'} "
                          f"({'none' if seconds is None else f'{seconds:.1f} s'})")
        lines[-1] += "."
    return lines


def _power_cost(results: list[Result], tick_seconds: float) -> list[str]:
    pairs = [r for r in results if len(r.outcomes) == 2]
    if not pairs:
        return []
    lines = ["", "### The budget's power cost", "",
             "The same values, produced at the same time to a twin model with `false_alarm_budget.enabled: false` "
             f"(the sequential knob's default, {UNBUDGETED_RATE:g} per tick).", "",
             "| scenario | rate | default budget: data (events) / alarm row (s) "
             "| budget off: data (events) / alarm row (s) |", "| --- | ---: | ---: | ---: |"]
    for r in pairs:
        cells = []
        for o in sorted(r.outcomes, key=lambda o: not o.budgeted):
            _, data, seconds = _driftline_row(o, r.scenario, tick_seconds)
            cells.append("none" if data is None or seconds is None else f"{data:,} / {seconds:.1f}")
        lines.append(f"| {r.scenario.title} | {r.rate:,} | {cells[0]} | {cells[1]} |")
    return lines
