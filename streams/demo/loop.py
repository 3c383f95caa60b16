"""The demo's story: a served model goes wrong, driftline pages, rolls it back, and sees the recovery.

1. Start (or reuse) the local broker; start the worker (with the policy engine and the dispatcher, whose
   PagerDuty route points at a local sink) and the reference service (`driftline serve`, torch, versions 1
   and 2 in its registry); publish a labelled reference of version 1's behaviour for both versions.
2. Drive steady HTTP traffic to ``/predict`` with labels sent back a few seconds later.
3. Promote version 2 (worse on the south region) over ``/admin/promote``, as a release pipeline would.
4. Wait for the loop to close, timing each step: a breached row in the store → the alert at the sink → the
   rollback CloudEvent → the service back on version 1 → the alert resolved at the sink.
5. Shift the input distribution and wait for the drift alert and the retrain request on version 1.
6. Print the delays and the SQL to look at it all; stop every process it started (the broker too, unless it
   was already running). ``keep_running`` leaves everything up until Ctrl-C instead.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from driftline.serving.service import data
from driftline.serving.service.model import encode, probabilities
from driftline.serving.service.registry import Registry, bootstrap
from driftline.streams.api.address import Address
from driftline.streams.config.model_config import ReferenceConfig
from driftline.streams.config.settings import Settings
from driftline.streams.demo.processes import Child, DemoFailed, wait_healthy
from driftline.streams.demo.sink import Received, WebhookSink
from driftline.streams.demo.traffic import Traffic
from driftline.streams.kafka import topics
from driftline.streams.kafka.kafka_io import KAFKA_LOG
from driftline.streams.kafka.local_broker import LocalBroker, free_port
from driftline.streams.kafka.security import client_config
from driftline.streams.references import topic as references
from driftline.streams.references.files import reference_from_file

MODEL = "demo-loans"
STEPS = ("v2 promoted", "breach row", "alert at the sink", "rollback request", "service back on v1",
         "alert resolved", "input shifted", "drift alert at the sink", "retrain request")


@dataclass(frozen=True)
class DemoOptions:
    """The demo's pace. The defaults close the loop in about three minutes on a laptop."""

    window_seconds: int = 10
    rate: float = 100.0  # predictions per second
    baseline_windows: int = 4  # windows of version 1 written before version 2 is promoted
    label_delay: float = 3.0
    shift: float = 0.8  # share of applicants younger than 50 dropped from the traffic in the last phase
    timeout: float = 300.0
    keep_running: bool = False


@dataclass
class Progress:
    """What the demo has seen so far: shown live, and summarised at the end."""

    started: float = field(default_factory=time.time)
    phase: str = "starting"
    steps: dict[str, float] = field(default_factory=dict)
    windows_written: float = 0.0
    events_sent: int = 0
    labels_sent: int = 0
    active_version: str = ""
    pages: int = 0
    pids: list[int] = field(default_factory=list)  # of the processes it started (all stopped at the end)

    def step(self, name: str, at: float | None = None) -> bool:
        """Record a step once; True the first time."""
        if name in self.steps:
            return False
        self.steps[name] = at if at is not None else time.time()
        return True


def _metric(port: int, name: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def publish_reference(settings: Settings, registry: Registry, n: int = 6000) -> str:
    """Version 1's behaviour on clean traffic, with the true labels: the reference of both versions."""
    examples = data.draw(n, seed=4242)
    model = registry.load("1").model
    probs = probabilities(model, encode([e.features for e in examples]))
    rows = []
    for i, (e, p) in enumerate(zip(examples, probs, strict=True)):
        by_class = {c: float(p[j]) for j, c in enumerate(data.CLASSES)}
        features = {**e.features, **{name: str(e.features[name]) for name in data.CATEGORICAL}}
        rows.append(orjson.dumps({
            "schema_version": 1, "prediction_id": f"ref-{i}", "model_id": MODEL, "model_version": "1", "ts": 0,
            "features": features, "segments": {"region": e.region}, "label": e.label,
            "prediction": {"label": data.CLASSES[int(p.argmax())], "score": by_class[data.CLASSES[1]],
                           "probabilities": by_class}}))
    path = settings.home / "demo-reference.jsonl"
    path.write_bytes(b"\n".join(rows))
    reference_id = ""
    for version in ("1", "2"):
        ref = reference_from_file(path, MODEL, version, 0, ReferenceConfig())
        references.publish(settings, ref)
        reference_id = ref.reference_id
    return reference_id


def monitoring_config(options: DemoOptions) -> str:
    """The demo's policies: a performance drop pages and rolls back; sustained drift warns and asks to retrain."""
    return f"""# written by `driftline demo`
defaults:
  window_seconds: {options.window_seconds}
  allowed_lateness_seconds: 2
  reference: {{source: stored}}
  detectors:
    slices: {{fdr: 0.001}}   # one page per slice per thousand windows, not one in twenty
  alerting:
    rollback: {{min_healthy_windows: 2, min_events: 100}}
    policies:
      - name: performance
        metrics: [accuracy, slice_accuracy, roc_auc, f1_*]
        min_consecutive_breaches: 1
        resolve_after_windows: 2
        severity: critical
        actions: [alert, rollback]
      - name: drift
        metrics: [ks, chi2]
        min_consecutive_breaches: 2
        severity: warning
        actions: [alert, retrain]
"""


class TopicWatch:
    """The CloudEvents on one topic since the demo started (a plain consumer, as a retraining job would be)."""

    def __init__(self, settings: Settings, name: str) -> None:
        topic = settings.topic(name)
        self.consumer = Consumer(client_config(settings, {"group.id": f"demo-watch-{name}",
                                                          "enable.auto.commit": False, "logger": KAFKA_LOG}))
        meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self.events: list[tuple[float, dict[str, object]]] = []

    def poll(self) -> None:
        for msg in self.consumer.consume(50, timeout=0):
            if msg.error() is None:
                self.events.append((time.time(), json.loads(msg.value() or b"{}")))

    def close(self) -> None:
        self.consumer.close()


def _wait(what: str, done: Callable[[], bool], timeout: float, children: list[Child], tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for child in children:
            child.check()
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} did not happen within {timeout:.0f} s; see the logs in "
                             f"{children[0].log.parent}")
        tick()
        time.sleep(0.5)


def run_demo(settings: Settings, options: DemoOptions = DemoOptions(),
             echo: Callable[[str], None] = print, show: Callable[[Progress], None] | None = None) -> int:
    """Run the loop; 0 when it closed, 1 (with the reason echoed) when a step did not happen in time."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    # the Kafka clients' own lines (a retry while a new topic's coordinator loads) go to a file, not the screen
    kafka_lines = logging.FileHandler(home / "demo-kafka.log")
    KAFKA_LOG.addHandler(kafka_lines)
    KAFKA_LOG.propagate = False
    broker = LocalBroker(home, settings.kafka_port, settings.kafka_heap)
    was_running = broker.status().running
    try:
        echo(broker.up().describe())
        return _run(settings, broker, options, echo, show)
    except DemoFailed as exc:
        echo(f"error: {exc}")
        return 1
    finally:
        if not was_running:
            broker.down()
        KAFKA_LOG.removeHandler(kafka_lines)
        KAFKA_LOG.propagate = True
        kafka_lines.close()


def _run(settings: Settings, broker: LocalBroker, options: DemoOptions, echo: Callable[[str], None],
         show: Callable[[Progress], None] | None) -> int:
    home = settings.home
    run = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)
    settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}demo-{run}.",
                                           "consumer_group": f"{settings.consumer_group}-demo-{run}",
                                           "kafka_bootstrap": broker.bootstrap})
    topics.ensure_topics(settings)
    registry = Registry(home / "registry", MODEL)
    if not registry.versions():
        echo("training the demo model's versions 1 and 2 (torch, once) ...")
    bootstrap(registry)
    echo(f"reference {publish_reference(settings, registry)} published for {MODEL} versions 1 and 2")
    config = home / "demo-monitoring.yaml"
    config.write_text(monitoring_config(options))
    sink = WebhookSink(home / f"demo-{run}-webhooks.jsonl")
    service_port, metrics_port, api_port = free_port(), free_port(), free_port()
    admin_token = secrets.token_hex(16)
    env = {**os.environ, "DRIFTLINE_HOME": str(home), "DRIFTLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
           "DRIFTLINE_CLICKHOUSE_URL": settings.clickhouse_url, "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix,
           "DRIFTLINE_CONSUMER_GROUP": settings.consumer_group, "DRIFTLINE_MONITORING_CONFIG": str(config),
           "DRIFTLINE_IDLE_PARTITION_SECONDS": "1", "DRIFTLINE_LABEL_WAIT_SECONDS": "5",
           "DRIFTLINE_METRICS_PORT": str(metrics_port), "DRIFTLINE_SERVE_PORT": str(service_port),
           # the worker serves the dashboard; pages link to it
           "DRIFTLINE_API_PORT": str(api_port), "DRIFTLINE_DASHBOARD_URL": f"http://127.0.0.1:{api_port}",
           "DRIFTLINE_ADMIN_TOKEN": admin_token, "DRIFTLINE_DEMO_ROUTING_KEY": secrets.token_hex(16),
           "DRIFTLINE_ALERT_ROUTES": json.dumps([{"name": "demo-pager", "kind": "pagerduty", "url": sink.url,
                                                  "routing_key_env": "DRIFTLINE_DEMO_ROUTING_KEY",
                                                  "retry_base_seconds": 0.5}])}
    for key in ("DRIFTLINE_CONFIG", "DRIFTLINE_API_TOKEN"):
        env.pop(key, None)
    progress = Progress()
    children: list[Child] = []
    traffic: Traffic | None = None
    watches: list[TopicWatch] = []
    service_url = f"http://127.0.0.1:{service_port}"
    try:
        children.append(Child("worker", ["worker"], env, home / "demo-worker.log"))
        children.append(Child("service", ["serve", "--model-id", MODEL, "--instance", f"demo-{run}"], env,
                              home / "demo-service.log"))
        progress.pids = [child.proc.pid for child in children]
        echo(f"worker and service starting (logs: {home / 'demo-worker.log'}, {home / 'demo-service.log'}) ...")
        health = wait_healthy(f"{service_url}/healthz", children[1], 240)
        _wait("the service's rollback listener", lambda: httpx.get(f"{service_url}/healthz").json()[
            "rollback_listener"] == "listening", 60, children, lambda: None)
        if health["model_version"] != "1":
            _promote(service_url, admin_token, "1")
        rollbacks, retrains = TopicWatch(settings, topics.ROLLBACK), TopicWatch(settings, topics.RETRAIN)
        watches += [rollbacks, retrains]
        traffic = Traffic(service_url, options.rate, label_delay=options.label_delay)
        traffic.start()

        def tick() -> None:
            progress.windows_written = _metric(metrics_port, "driftline_windows_written_total")
            progress.events_sent, progress.labels_sent = traffic.sent, traffic.labels_sent
            progress.active_version, progress.pages = traffic.active_version, sink.count()
            for watch in watches:
                watch.poll()
            _observe(progress, sink, rollbacks, retrains, traffic, home)
            if show is not None:
                show(progress)

        progress.phase = f"baseline: version 1 serves {options.rate:.0f} predictions/s"
        echo(progress.phase)
        _wait(f"{options.baseline_windows} windows of version 1",
              lambda: progress.windows_written >= options.baseline_windows, options.timeout, children, tick)
        _promote(service_url, admin_token, "2")
        progress.step("v2 promoted")
        progress.phase = "version 2 promoted: waiting for driftline to notice and roll it back"
        echo(progress.phase)
        _wait("the rollback loop (breach → alert → rollback → version 1 → resolve)",
              lambda: "alert resolved" in progress.steps, options.timeout, children, tick)
        traffic.shift = options.shift
        progress.step("input shifted")
        progress.phase = f"input shifted ({options.shift:.0%} of applicants under 50 gone): waiting for drift"
        echo(progress.phase)
        _wait("the drift alert and the retrain request",
              lambda: {"drift alert at the sink", "retrain request"} <= set(progress.steps), options.timeout,
              children, tick)
        progress.phase = "the loop closed"
        if show is not None:
            show(progress)
        for line in summary(progress, traffic, settings, sink, run):
            echo(line)
        if options.keep_running:
            _keep_running(echo, service_url, home, metrics_port, sink)
        return 0
    except DemoFailed as exc:
        echo(f"error: {exc}")
        echo("reached: " + (", ".join(progress.steps) or "nothing"))
        return 1
    finally:
        if traffic is not None:
            traffic.stop()
        for watch in watches:
            watch.close()
        for child in reversed(children):
            child.stop()
        sink.close()


def _promote(service_url: str, token: str, version: str) -> None:
    response = httpx.post(f"{service_url}/admin/promote", json={"version": version},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code != 200:
        raise DemoFailed(f"promoting version {version} failed: {response.status_code} {response.text}")


def _observe(progress: Progress, sink: WebhookSink, rollbacks: TopicWatch, retrains: TopicWatch, traffic: Traffic,
             home: Path) -> None:
    """Record each step of the loop when it is first seen."""
    if "v2 promoted" in progress.steps and "breach row" not in progress.steps:
        address = Address.read(home)
        if address is not None:
            try:
                found = httpx.get(f"{address.url}/models/{MODEL}/findings", params={"version": "2", "limit": 1},
                                  timeout=5).json()
                if found.get("items"):
                    progress.step("breach row")
            except (httpx.HTTPError, ValueError):
                pass

    def first(action: str, policy: str, version: str) -> Received | None:
        return sink.first(lambda r: r.action == action and r.policy == policy and r.version == version)

    if (alert := first("trigger", "performance", "2")) is not None:
        progress.step("alert at the sink", alert.at)
    if rollbacks.events:
        progress.step("rollback request", rollbacks.events[0][0])
    if "rollback request" in progress.steps and traffic.active_version == "1":
        progress.step("service back on v1")
    if (resolved := first("resolve", "performance", "2")) is not None:
        progress.step("alert resolved", resolved.at)
    if "input shifted" in progress.steps:
        if (drift := first("trigger", "drift", "1")) is not None:
            progress.step("drift alert at the sink", drift.at)
        for at, event in retrains.events:
            if isinstance(event.get("data"), dict) and event["data"].get("model_version") == "1":  # type: ignore[union-attr]
                progress.step("retrain request", at)


def summary(progress: Progress, traffic: Traffic, settings: Settings, sink: WebhookSink, run: str) -> list[str]:
    """The closing report: each step's delay after the change that caused it, and where to look next."""
    lines = ["", "the loop closed:"]
    origin = progress.steps["v2 promoted"]
    for name in STEPS:
        if name == "input shifted":
            origin = progress.steps[name]
        at = progress.steps.get(name)
        lines.append(f"  {name:<26} {'-' if at is None else f'+{at - origin:6.1f} s'}")
    by_version = ", ".join(f"v{v}: {n}" for v, n in sorted(traffic.versions.items()))
    failed = f" (last: {traffic.last_error})" if traffic.errors else ""
    lines += [f"predictions sent: {traffic.sent} ({by_version}), labels: {traffic.labels_sent}, "
              f"failed requests: {traffic.errors}{failed}",
              f"pages received by the local PagerDuty-style sink: {sink.count()} ({sink.record_to})",
              "look at it (the store is free once the demo has stopped its worker):",
              f"  driftline sql \"SELECT at, transition, policy, model_version, summary FROM driftline.alerts "
              f"WHERE model_id = '{MODEL}' AND kind = 'transition' ORDER BY at\"",
              f"  driftline sql \"SELECT window_start, model_version, metric, feature, slice, value, p_value FROM "
              f"driftline.windows FINAL WHERE model_id = '{MODEL}' AND breached ORDER BY window_start\""]
    return lines


def _keep_running(echo: Callable[[str], None], service_url: str, home: Path, metrics_port: int,
                  sink: WebhookSink) -> None:
    address = Address.read(home)
    echo(f"running until Ctrl-C: service {service_url}/docs, dashboard {address.url if address else '?'}/, "
         f"worker metrics http://127.0.0.1:{metrics_port}/metrics, pages in {sink.record_to}")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
