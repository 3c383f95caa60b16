"""The README's first command: `driftline demo` closes the whole loop, stops what it started, and runs again."""

from __future__ import annotations

import json
import os
import re

import pytest

from driftline.streams.config.settings import load_settings
from driftline.streams.demo import DemoOptions, run_demo
from driftline.streams.demo.loop import STEPS, Progress
from tests.actions.test_dispatch_bodies import VALIDATOR as PAGERDUTY_EVENT

pytestmark = pytest.mark.integration
STEP_LINE = re.compile(r"^  (?P<name>[a-z0-9 ]+?)\s+\+\s*(?P<seconds>[0-9.]+) s$")


def test_the_demo_closes_the_loop_stops_what_it_started_and_runs_again(broker, tmp_path):
    settings = load_settings(home=broker.dir.parent, kafka_port=broker.port,
                             clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}")
    options = DemoOptions(window_seconds=5, baseline_windows=4, timeout=150)
    for run in range(2):
        lines: list[str] = []
        seen: list[Progress] = []
        assert run_demo(settings, options, lines.append, seen.append) == 0, "\n".join(lines)
        steps = {m["name"]: float(m["seconds"]) for line in lines if (m := STEP_LINE.match(line))}
        assert set(steps) == set(STEPS), (run, lines)
        # in order: the rollback loop after the promotion, then the drift loop after the input shift
        assert (steps["alert at the sink"] <= steps["rollback request"] <= steps["service back on v1"]
                <= steps["alert resolved"]), lines
        assert steps["drift alert at the sink"] > 0 and steps["retrain request"] > 0, lines
        assert any(re.search(r"failed requests: 0\b", line) for line in lines), "the switch dropped requests"
        # every process it started is gone; the session's broker (already running) is left up
        for pid in seen[-1].pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert broker.status().running
    # what the PagerDuty-style sink received are valid Events v2 bodies: triggers and resolves
    pages = [json.loads(line) for path in broker.dir.parent.glob("demo-*-webhooks.jsonl")
             for line in path.read_text().splitlines()]
    assert {p["event_action"] for p in pages} >= {"trigger", "resolve"}
    for page in pages:
        PAGERDUTY_EVENT.validate(page)
