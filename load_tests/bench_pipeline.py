"""End-to-end benchmark of issue #15 on classifier-shaped events: `driftline worker` processes against the bare loop.

Owns the measurement of whole deployments as an operator runs them (`driftline worker` subprocesses with DRIFTLINE_*
settings, a stored reference published with `driftline reference set`, embedded chDB): steady-state events/s, the
time until the summarize group's committed offsets reach the end of the predictions topic, RSS growth per million
events, and how late a window's rows become visible under paced live traffic. Sizes: BENCH_PIPELINE_* variables.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.serving.monitor import PARTITIONER
from driftline.streams.config.settings import load_settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import LocalBroker, free_port
from load_tests.bench_summarize import bare_loop
from load_tests.scrape import scrape_metric
from load_tests.traffic import classifier_events, produce

N_EVENTS = int(os.environ.get("BENCH_PIPELINE_EVENTS", "300000"))
ROUNDS = int(os.environ.get("BENCH_PIPELINE_ROUNDS", "3"))
LIVE_SECONDS = float(os.environ.get("BENCH_PIPELINE_LIVE_SECONDS", "150"))  # per load level; 0: no latency part
LIVE_WINDOW_S = int(os.environ.get("BENCH_PIPELINE_LIVE_WINDOW_SECONDS", "10"))
REFERENCE_EVENTS = min(10_000, N_EVENTS // 5)
LABELS = {"label_share": 0.5, "label_delay_ms": 30_000}
SHAPES = {"A": {"n_numeric": 8, "n_categorical": 1, "n_boolean": 1, "n_segments": 2},
          "B": {"n_numeric": 10, "n_categorical": 5, "n_boolean": 5, "n_segments": 5}}
LABEL_DELAY_S = 600  # the join store's time-to-live: with the default 24 h it would hold the whole workload
LATENESS_S = 10.0
FLAT_MIB = 10.0  # per million events: under 1 GiB per 100 M events (23 days at 50 events/s)
START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z: the backlog's first event time
EVENTS, WRITTEN = "driftline_events_total", "driftline_windows_written_total"
ROOT = Path(__file__).resolve().parent.parent
PLAN = [("A", "one summarize worker, predictions only", ("summarize",), False, True),
        ("A", "one summarize worker, labels topic filled too", ("summarize",), True, False),
        ("A", "whole `driftline worker` (all stages, chDB), predictions only", ("all",), False, False),
        ("A", "two summarize workers + one merge worker, predictions only", ("summarize", "summarize", "merge"),
         False, False),
        ("B", "one summarize worker, with labels", ("summarize",), True, True),
        ("B", "whole `driftline worker` (all stages, chDB), with labels", ("all",), True, False)]
ONE_A, _, WHOLE_A, TWO_A, ONE_B, WHOLE_B = (what for _, what, *_ in PLAN)


@dataclass
class Traffic:
    name: str
    predictions: list[tuple[bytes, bytes]]
    labels: list[tuple[bytes, bytes]]
    windows: int  # one-minute windows the predictions span
    reference: Path  # .jsonl of the first predictions, with their labels where they have one


def make_traffic(name: str, workdir: Path, n: int = N_EVENTS) -> Traffic:
    preds, labels = classifier_events(n, seed=ord(name), start_ms=START_MS, **SHAPES[name],  # type: ignore[arg-type]
                                      **LABELS)
    truth = {key: orjson.loads(value)["label"] for key, value in labels}
    path = workdir / f"reference-{name}.jsonl"
    with path.open("wb") as out:
        for key, value in preds[:REFERENCE_EVENTS]:
            out.write(orjson.dumps({**orjson.loads(value), **({"label": truth[key]} if key in truth else {})}) + b"\n")
    return Traffic(name, preds, labels, len({orjson.loads(v)["ts"] // 60_000 for _, v in preds}), path)


class Proc:
    """One `driftline worker` subprocess, its /metrics and its resident memory."""

    def __init__(self, env: dict[str, str], stage: str, log: Path) -> None:
        self.port, self.stage = free_port(), stage
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftline.streams", "worker", "--stage", stage, "--loglevel", "warning"],
                env={**env, "DRIFTLINE_METRICS_PORT": str(self.port)}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def metric(self, name: str) -> float:
        return scrape_metric(self.port, name)

    def rss_mib(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


@dataclass
class Run:
    rate: float  # events/s between 20 % and 80 % of the events
    drained_s: float  # from the processes' start until the summarize group committed the end of the predictions
    written_s: float | None  # ... until every window was written (deployments with a merge stage)
    slope: float  # MiB per million events, all processes together, over the second half of the events
    peak_mib: float
    bare: float | None = None  # the bare loop over the same topic, just before
    checks: dict[str, float] = field(default_factory=dict)


class Died(RuntimeError):
    """A worker process of a deployment exited or stalled: its round is reported as failed, with the reason."""


def _sql(url: str, query: str) -> list[list[object]]:
    req = urllib.request.Request(f"{url}/sql", data=json.dumps({"query": query}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return list(json.loads(resp.read())["rows"])


@dataclass
class Bench:
    bootstrap: str
    home: Path
    failures: list[str] = field(default_factory=list)

    def env(self, prefix: str, **extra: object) -> dict[str, str]:
        values: dict[str, object] = {"kafka_bootstrap": self.bootstrap, "topic_prefix": prefix,
                                     "consumer_group": f"g-{prefix}", "home": self.home / prefix.rstrip("."),
                                     "max_label_delay_seconds": LABEL_DELAY_S, "api_port": free_port(), **extra}
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        return env | {f"DRIFTLINE_{k.upper()}": str(v) for k, v in values.items()}

    def prepare(self, env: dict[str, str], traffic: Traffic, with_labels: bool, effective_from_ms: int) -> None:
        """Topics of a fresh prefix, its traffic, and the stored reference published by the CLI."""
        settings = load_settings(**{k[10:].lower(): v for k, v in env.items() if k.startswith("DRIFTLINE_")})
        topics.ensure_topics(settings)
        produce(self.bootstrap, settings.topic(topics.PREDICTIONS), traffic.predictions)
        if with_labels:
            produce(self.bootstrap, settings.topic(topics.LABELS), traffic.labels)
        subprocess.run([sys.executable, "-m", "driftline.streams", "reference", "set", "--model", "bench",
                        "--file", str(traffic.reference), "--effective-from", str(effective_from_ms)],
                       env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)

    def drop(self, prefix: str) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.delete_topics([t for t in admin.list_topics(timeout=30).topics
                                           if t.startswith(prefix)]).values():
            future.result(60)

    def deploy(self, traffic: Traffic, stages: tuple[str, ...], with_labels: bool, bare: bool) -> Run | None:
        """One deployment on a fresh prefix over the whole workload, from its processes' start until drained."""
        prefix = f"pl{uuid.uuid4().hex[:8]}."
        env = self.env(prefix, idle_partition_seconds=1)
        self.prepare(env, traffic, with_labels, START_MS)
        topic = f"{prefix}{topics.PREDICTIONS}"
        bare_rate = bare_loop(self.bootstrap, topic, len(traffic.predictions)) if bare else None
        committed = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"g-{prefix}-stage1",
                              "enable.auto.commit": False})
        parts = [TopicPartition(topic, p) for p in committed.list_topics(topic, timeout=30).topics[topic].partitions]
        end = sum(committed.get_watermark_offsets(tp, timeout=30)[1] for tp in parts)
        log = self.home / f"{prefix}log"
        procs = [Proc(env, stage, log) for stage in stages]
        merging = "all" in stages or "merge" in stages
        try:
            run = watch(procs, lambda: sum(max(tp.offset, 0) for tp in committed.committed(parts, timeout=10)) >= end,
                        len(traffic.predictions), traffic.windows if merging else None)
            run.bare = bare_rate
            run.checks = {"dead letters": sum(p.metric("driftline_dead_letters_total") for p in procs),
                          "unmatched labels": sum(p.metric("driftline_labels_unmatched_total") for p in procs)}
            if merging:
                run.checks["windows without the stored reference"] = float(_sql(  # type: ignore[arg-type]
                    f"http://127.0.0.1:{env['DRIFTLINE_API_PORT']}", "SELECT countDistinctIf(window_start, "
                    "reference_id = '') FROM driftline.windows WHERE model_id = 'bench'")[0][0])
            return run
        except Died as exc:
            errors = [line.strip() for line in log.read_text(errors="replace").splitlines() if "rror" in line]
            self.failures.append(f"{traffic.name}, {'+'.join(stages)}: {exc} (its log's last error: "
                                 f"`{errors[-1][:240] if errors else 'none'}`)")
            return None
        finally:
            for proc in procs:
                proc.stop()
            committed.close()
            self.drop(prefix)


def crossing(samples: list[tuple[float, float, float]], level: float) -> float:
    """When the events counter passed ``level`` (linear between the two samples around it)."""
    for (t0, e0, _), (t1, e1, _) in itertools.pairwise(samples):
        if e0 < level <= e1:
            return t0 + (t1 - t0) * (level - e0) / (e1 - e0)
    raise RuntimeError(f"the events counter never passed {level:,.0f}")


def watch(procs: list[Proc], drained_now: Callable[[], bool], n: int, windows: int | None, timeout: float = 900
          ) -> Run:
    """Sample the events counter and RSS every 0.1 s until the group committed the end (and the windows are in)."""
    summarizers = [p for p in procs if p.stage in ("summarize", "all")]
    merger = next((p for p in procs if p.stage in ("merge", "all")), None)
    start, checked = time.monotonic(), 0.0
    samples: list[tuple[float, float, float]] = []  # (seconds, events, RSS MiB of every process)
    drained: float | None = None
    written: float | None = None
    while drained is None or (merger is not None and written is None):
        now = time.monotonic() - start
        if now > timeout:
            raise Died(f"not drained after {timeout:.0f} s")
        if dead := [p.stage for p in procs if p.proc.poll() is not None]:
            raise Died(f"{', '.join(dead)} process exited at {now:.0f} s")
        samples.append((now, sum(p.metric(EVENTS) for p in summarizers), sum(p.rss_mib() for p in procs)))
        if drained is None and now - checked >= 0.5:
            checked = now
            drained = now if drained_now() else None
        if merger is not None and written is None and merger.metric(WRITTEN) >= (windows or 0):
            written = now
        time.sleep(0.1)
    assert drained is not None
    rate = 0.6 * n / (crossing(samples, 0.8 * n) - crossing(samples, 0.2 * n))
    last = next(i for i, s in enumerate(samples) if s[1] >= n)
    half = [s for s in samples[: last + 1] if s[1] >= 0.5 * n]
    slope = float(np.polyfit([s[1] / 1e6 for s in half], [s[2] for s in half], 1)[0]) if len(half) > 2 else 0.0
    return Run(rate, drained, written, slope, max(s[2] for s in samples))


def paced(bootstrap: str, topic: str, pool: list[bytes], rate: float, seconds: float) -> tuple[int, int]:
    """Produce ``rate`` events/s for ``seconds``, each stamped with its due time; (first ts, events sent)."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": PARTITIONER, "linger.ms": 5,
                         "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000})
    # byte templates with the id and the time left open: cheap, so the cores stay with the worker and the broker
    templates = [orjson.dumps({**orjson.loads(v), "prediction_id": "@", "ts": 0}).replace(b"%", b"%%")
                 .replace(b'"@"', b'"%s"', 1).replace(b'"ts":0', b'"ts":%d', 1) for v in pool]
    t0, sent = time.time(), 0
    while (elapsed := time.time() - t0) < seconds:
        for i in range(sent, int(elapsed * rate)):
            pid = b"live-%d" % i
            producer.produce(topic, key=pid, value=templates[i % len(templates)] % (pid, t0 * 1000 + i * 1000 / rate))
            if i % 1000 == 0:
                producer.poll(0)
        sent = max(sent, int(elapsed * rate))
        producer.poll(0)
        time.sleep(0.002)
    if producer.flush(60):
        raise Died("could not deliver the paced traffic")
    return int(t0 * 1000), sent


def live(bench: Bench, traffic: Traffic, rate: float) -> tuple[float, list[float], int]:
    """The whole worker under paced real-time traffic: (events/s produced, each window's delay, windows missing)."""
    prefix, size_ms = f"lv{uuid.uuid4().hex[:8]}.", LIVE_WINDOW_S * 1000
    env = bench.env(prefix, window_seconds=LIVE_WINDOW_S, allowed_lateness_seconds=LATENESS_S)
    now_ms = int(time.time() * 1000)
    bench.prepare(env, Traffic(traffic.name, [], [], 0, traffic.reference), False, now_ms - now_ms % size_ms)
    worker = Proc(env, "all", bench.home / f"{prefix}log")
    url = f"http://127.0.0.1:{env['DRIFTLINE_API_PORT']}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                _sql(url, "SELECT 1")
                break
            except OSError:
                if time.monotonic() > deadline or worker.proc.poll() is not None:
                    raise Died(f"the live worker did not start (log: {bench.home / prefix}log)") from None
                time.sleep(0.5)
        pool = [value for _, value in traffic.predictions[:20_000]]
        first, sent = paced(bench.bootstrap, f"{prefix}{topics.PREDICTIONS}", pool, rate, LIVE_SECONDS)
        last = first + int(sent * 1000 / rate)
        # windows wholly inside the traffic that closed while it still flowed, after 30 s of warm-up
        ends = [e for e in range(first - first % size_ms + 2 * size_ms, last, size_ms)
                if first + 30_000 <= e + LATENESS_S * 1000 <= last]
        query = ("SELECT toUnixTimestamp64Milli(window_end) AS e, toUnixTimestamp64Milli(min(written_at)) "
                 "FROM driftline.windows WHERE model_id = 'bench' GROUP BY e ORDER BY e")
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(e in seen for e in ends) and worker.proc.poll() is None:
            seen = {int(e): int(at) for e, at in _sql(url, query)}  # type: ignore[call-overload]
            time.sleep(1)
        delays = [(seen[e] - e) / 1000 - LATENESS_S for e in ends if e in seen]
        return sent / LIVE_SECONDS, delays, sum(e not in seen for e in ends)
    finally:
        worker.stop()
        bench.drop(prefix)


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(bootstrap: str, home: str) -> str:
    bench = Bench(bootstrap, Path(home))
    traffic = {name: make_traffic(name, bench.home) for name in SHAPES}
    rows: dict[str, list[Run | None]] = {what: [] for _, what, *_ in PLAN}
    for round_no in range(ROUNDS):  # interleaved: this machine's speed drifts by tens of percent
        for name, what, stages, labels, bare in PLAN:
            print(f"  round {round_no + 1}, {name}: {what}", flush=True)
            rows[what].append(bench.deploy(traffic[name], stages, labels, bare))
    # each round's bare loop ran before that round's first deployment of the workload
    bares = {name: [r.bare if r else None for r in rows[what]] for name, what, *_, bare in PLAN if bare}

    def share(name: str, what: str) -> float:
        return _median([r.rate / b for r, b in zip(rows[what], bares[name], strict=True) if r and b])

    table = ["| workload | deployment | events/s (rounds) | median | share of bare loop | drained (s) | "
             "all windows written (s) | RSS slope (MiB per M events) | peak RSS (MiB) |",
             "| --- | --- | --- | ---: | ---: | --- | --- | --- | --- |"]
    for name in SHAPES:
        runs = [b for b in bares[name] if b]
        table.append(f"| {name} | bare `consume(5000)` + `orjson.loads` | {', '.join(f'{b:,.0f}' for b in runs)} | "
                     f"{_median(runs):,.0f} | 100 % | | | | |")
        for what in (what for n2, what, *_ in PLAN if n2 == name):
            ok = [r for r in rows[what] if r]
            table.append(" | ".join([
                f"| {name} | {what}", ", ".join(f"{r.rate:,.0f}" if r else "failed" for r in rows[what]),
                f"{_median([r.rate for r in ok]):,.0f}", f"{100 * share(name, what):.0f} %",
                ", ".join(f"{r.drained_s:.1f}" for r in ok),
                ", ".join(f"{r.written_s:.1f}" for r in ok if r.written_s is not None) or "-",
                ", ".join(f"{r.slope:+.0f}" for r in ok), ", ".join(f"{r.peak_mib:,.0f}" for r in ok)]) + " |")
    scale = _median([t.rate / o.rate for t, o in zip(rows[TWO_A], rows[ONE_A], strict=True) if t and o])
    done = [r for rs in rows.values() for r in rs if r]
    checks = {key: sum(r.checks.get(key, 0) for r in done) for r in done for key in r.checks}
    out = [
        "## End to end on classifier-shaped events",
        "",
        f"{N_EVENTS:,} prediction events from `load_tests.traffic.classifier_events` at 50 events/s of event time "
        f"({traffic['A'].windows} one-minute windows), model `bench`, on 6-partition topics of the local Kafka 4 "
        "broker (same machine: the broker, the workers and this script share its cores). Workload **A**: 8 numeric, "
        "1 categorical, 1 boolean feature, 2 segments, three class probabilities; **B**: 20 features (10 numeric, "
        "5 categorical, 5 boolean), 5 segments. Labels (where a row says so): 50 % of the predictions, 30 s of event "
        f"time later. A stored reference from the first {REFERENCE_EVENTS:,} events (with their labels) is "
        "published by `driftline reference set` before each run. Every deployment runs real `driftline worker` "
        "processes on a fresh topic prefix (so a fresh consumer group, summaries and join-state) with "
        f"DRIFTLINE_IDLE_PARTITION_SECONDS=1 and DRIFTLINE_MAX_LABEL_DELAY_SECONDS={LABEL_DELAY_S} (the join store "
        "then stops growing after 10 minutes of event time; with the default 24 h it keeps every prediction of "
        f"this workload). {ROUNDS} interleaved round(s); the bare loop reads the same topic just before the "
        "round's first worker of that workload starts; a share is the median of the rounds' ratios.",
        "",
        "- **events/s**: the summarize processes' `driftline_events_total` from /metrics (sampled every 0.1 s, "
        "interpolated) between 20 % and 80 % of the events: steady state, start-up and rebalances left out.",
        "- **drained**: seconds from the processes' start until the `<group>-stage1` committed offsets equal the "
        "end of the predictions topic (start-up included, and the 1 s idle advance that closes the last window); "
        "**all windows written**: until `driftline_windows_written_total` reached every window.",
        "- **RSS**: VmRSS of all the deployment's processes together, sampled with the counter; the slope is a "
        "least-squares fit against the events counter over the second half of the events.",
        "",
        *table,
        "",
        f"Checks over the runs that finished: {', '.join(f'{k} {v:,.0f}' for k, v in checks.items())}.",
        *[f"- failed: {failure}" for failure in bench.failures],
        "",
        f"Targets: one summarize worker >= 80 % of the bare loop: {_met(share('A', ONE_A) >= 0.8)} "
        f"({100 * share('A', ONE_A):.0f} % on A, {100 * share('B', ONE_B):.0f} % on B); the whole single-process "
        f"worker >= 60 %: {_met(share('A', WHOLE_A) >= 0.6)} ({100 * share('A', WHOLE_A):.0f} % on A, "
        f"{100 * share('B', WHOLE_B):.0f} % on B); two summarize processes >= 1.5x one: {_met(scale >= 1.5)} "
        f"({scale:.2f}x, median of the rounds' ratios); flat memory (every slope within +-{FLAT_MIB:.0f} MiB per "
        f"million events): {_met(bool(done) and all(abs(r.slope) <= FLAT_MIB for r in done))}"
        + ("; a deployment that failed meets no target." if bench.failures else "."),
    ]
    if LIVE_SECONDS > 0:
        out += latency_section(bench, traffic["A"], _median([r.rate for r in rows[WHOLE_A] if r]))
    return "\n".join(out)


def latency_section(bench: Bench, traffic: Traffic, sustained: float) -> list[str]:
    if not sustained > 0:
        return ["", "No latency run: the whole worker finished no throughput run to take its maximum from."]
    lines = ["", f"Latency of the whole worker (workload A, predictions only) under live traffic: predictions "
             f"produced in real time at 50 % and 90 % of its sustained maximum above ({sustained:,.0f} events/s) by "
             f"this script, each stamped with its due time, for {LIVE_SECONDS:.0f} s per load; {LIVE_WINDOW_S} s "
             f"windows (so that a run has enough of them), {LATENESS_S:.0f} s lateness, the stored reference in "
             "force. Delay = the window's first `driftline.windows` row's `written_at` (the insert's time, "
             "`now64(3)`, read back through the worker's `POST /sql`) - (window end + lateness), over the windows "
             "wholly inside the traffic that closed while it still flowed, the first 30 s left out.", "",
             "| load | events/s asked | produced | windows | p50 delay (s) | p99 delay (s) | max (s) | not written |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    p99 = float("inf")
    for share in (0.5, 0.9):
        try:
            produced, delays, missing = live(bench, traffic, share * sustained)
        except (Died, OSError) as exc:
            return [*lines[:2], f"The live run at {share:.0%} load failed: {exc}."]
        d = delays or [float("nan")]
        p99 = float(np.percentile(d, 99)) if not missing else float("inf")
        lines.append(f"| {share:.0%} | {share * sustained:,.0f} | {produced:,.0f} | {len(delays)} | "
                     f"{np.percentile(d, 50):.2f} | {np.percentile(d, 99):.2f} | {max(d):.2f} | {missing} |")
    return [*lines, "", f"Target: rows visible <= window end + lateness + 5 s at 90 % load (p99): {_met(p99 <= 5)}."]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        local = LocalBroker(Path(tmp), port=free_port(), heap="1g")
        local.up()
        try:
            print(run(local.bootstrap, tmp))
        finally:
            local.down()
