"""Where a live worker's time goes: py-spy samples of real `driftline worker` processes, summed by pipeline step.

Owns the flame summaries of issue #15: a worker started on a backlog of classifier-shaped events (the workloads
and the deployment of `bench_pipeline`) is sampled by `py-spy record` (200 Hz, raw collapsed stacks; py-spy
stops the worker for each sample, which is how it tells a sleeping thread, at a cost of a few percent) from the
moment its events counter passes 20 % of the events until it passes 80 %: steady state, start-up and the last
windows left out. Each sample is charged to the innermost pipeline step on its stack (`STEPS`), and the step's
seconds are divided by the events read while sampling: microseconds per event, in the live process, beside the
bare loop's cost per event. Samples of a thread asleep in ``select()`` (faust's event loop between its timers)
are counted apart: py-spy's idle test misses them. Sizes: BENCH_PROFILE_EVENTS (default 300,000).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from driftline.streams.kafka import topics
from load_tests.bench_pipeline import EVENTS, START_MS, Bench, Died, Proc, Traffic, make_traffic
from load_tests.bench_summarize import bare_loop

N_EVENTS = int(os.environ.get("BENCH_PROFILE_EVENTS", "300000"))
RATE_HZ = 200
# (step, the function charged to it as "file:function"): a sample goes to the innermost of these on its stack.
STEPS = [
    ("Kafka consume (librdkafka, in `consume()`)", "consumer.py:ConsumerStage._loop"),
    ("decode + validate a prediction (msgspec)", "records.py:read_prediction"),
    ("event-time window routing", "windows.py:PartitionWindows.assign_many"),
    ("feature columns + window summary", "summarize.py:PredictionSummarizer.add"),
    ("tick summary", "ticks.py:TickSummarizer.add"),
    ("join store: remember predictions", "label_join.py:LabelJoiner.remember"),
    ("decode a label + join it (receive)", "label_join.py:LabelJoiner.receive"),
    ("label retries at checkpoints", "label_join.py:LabelJoiner.retry"),
    ("join-state changelog + expiry", "label_join.py:LabelJoiner.flush"),
    ("summarize checkpoint: emit summaries, watermarks, commit", "summarize_stage.py:SummarizeStage._checkpoint"),
    ("other summarize-stage Python", "summarize_stage.py:SummarizeStage._process"),
    ("merge: tick detectors", "tick_detection.py:TickDetection.close_ready"),
    ("merge: ClickHouse inserts (chDB)", "store.py:insert_windows"),
    ("merge: label windows", "label_windows.py:LabelWindows.apply"),
    ("merge: merge summaries, detectors, rows", "merge_stage.py:MergeStage._close_ready"),
    ("merge: read summaries", "merge_stage.py:MergeStage._process"),
    ("actions stage", "stage.py:ActionsStage._process"),
]
STEP_OF = {fn: step for step, fn in STEPS}
LOOP = STEPS[0][1]
PLAN = [("A", "one summarize worker, predictions only", "summarize", False),
        ("B", "whole `driftline worker` (all stages, chDB), with labels", "all", True)]
_FRAME = re.compile(r"^(?P<fn>.+?) \((?P<file>[^:()]+?)(?::\d+)?\)$")


def frames(stack: str) -> list[str]:
    """A collapsed stack's frames as "file:function", outermost first (the thread's name dropped)."""
    out = []
    for frame in stack.split(";")[1:]:
        match = _FRAME.match(frame)
        if match:
            out.append(f"{Path(match['file']).name}:{match['fn']}")
    return out


def charge(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int, int]:
    """Of a py-spy raw file: samples per step, per innermost function (self time), all busy samples, and the
    samples of threads asleep in ``select()``, left out of the rest."""
    by_step: collections.Counter[str] = collections.Counter()
    by_self: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stack_frames, n = frames(stack), int(count)
        if stack_frames and stack_frames[-1].startswith("selectors.py:"):
            idle += n  # faust's event loop asleep in select(): py-spy's idle test misses it
            continue
        total += n
        if stack_frames:
            by_self[stack_frames[-1]] += n
        step = next((STEP_OF[f] for f in reversed(stack_frames) if f in STEP_OF),
                    "other (faust's event loop, metrics, start-up threads)")
        if step == STEP_OF[LOOP] and stack_frames[-1] != LOOP:
            step = "other stage-loop Python"  # under the loop, in none of the steps (commits, producer polls)
        by_step[step] += n
    return by_step, by_self, total, idle


def profile(bench: Bench, traffic: Traffic, stage: str, labels: bool, out: Path) -> tuple[float, float]:
    """Sample one deployment from 20 % to 80 % of its events; (events read meanwhile, seconds sampled)."""
    prefix = f"pf{uuid.uuid4().hex[:8]}."
    env = bench.env(prefix, idle_partition_seconds=1)
    bench.prepare(env, traffic, labels, START_MS)
    worker = Proc(env, stage, bench.home / f"{prefix}log")
    n = len(traffic.predictions)
    try:
        first = _wait_for(worker, 0.2 * n)
        started = time.monotonic()
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                str(worker.proc.pid), "-r", str(RATE_HZ), "-f", "raw", "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last = _wait_for(worker, 0.8 * n)
        seconds = time.monotonic() - started
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(60)
        return last - first, seconds
    finally:
        worker.stop()
        bench.drop(prefix)


def _wait_for(worker: Proc, events: float, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while (seen := worker.metric(EVENTS)) < events:
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise Died(f"the worker did not read {events:,.0f} events")
        time.sleep(0.5)  # a scrape costs the worker a /metrics render and a read of /proc: seldom
    return seen


def run(bootstrap: str, home: str) -> str:
    bench = Bench(bootstrap, Path(home))
    out = ["## Where a live worker's time goes (py-spy)", "",
           f"{N_EVENTS:,} classifier-shaped events of `bench_pipeline`'s workloads on a 6-partition topic of the local "
           f"broker, the stored reference in force. `py-spy record` samples the worker at {RATE_HZ} Hz from 20 % to "
           "80 % of its events; a sample is charged to the innermost pipeline step on its stack; microseconds "
           "per event = the step's sampled seconds / the events read meanwhile. The bare loop (`consume(5000)` + "
           "`orjson.loads`) reads the same topic just before, in the same run."]
    for name, what, stage, labels in PLAN:
        traffic = make_traffic(name, bench.home, N_EVENTS)
        prefix = f"bare{uuid.uuid4().hex[:8]}."
        env = bench.env(prefix)
        bench.prepare(env, traffic, False, START_MS)
        bare = bare_loop(bootstrap, f"{prefix}{topics.PREDICTIONS}", len(traffic.predictions))
        bench.drop(prefix)
        raw = bench.home / f"profile-{name}.txt"
        events, seconds = profile(bench, traffic, stage, labels, raw)
        by_step, by_self, total, idle = charge(raw)
        us = 1e6 / RATE_HZ / events  # microseconds per event of one sample
        out += ["", f"### Workload {name}: {what}", "",
                f"{events:,.0f} events read in {seconds:.1f} s sampled ({events / seconds:,.0f} events/s while "
                f"sampled); {total:,} busy samples ({idle:,} more asleep in `select()`, left out), "
                f"{total / RATE_HZ / seconds:.2f} cores busy on average. "
                f"Bare loop on the same topic: {bare:,.0f} events/s, {1e6 / bare:.1f} us per event.", "",
                "| step | share of samples | us per event |", "| --- | ---: | ---: |"]
        out += [f"| {step} | {100 * n / total:.1f} % | {n * us:.2f} |" for step, n in by_step.most_common()]
        out += ["", "Innermost functions (self time), the top 12:", "", "| function | share | us per event |",
                "| --- | ---: | ---: |"]
        out += [f"| `{fn}` | {100 * n / total:.1f} % | {n * us:.2f} |" for fn, n in by_self.most_common(12)]
    return "\n".join(out)
