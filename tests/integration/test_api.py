"""The API and dashboard served by a worker, on data produced through Kafka: HTTP, `driftline sql` beside the
running worker, and the pages in headless Chromium (DOM assertions, a click, a screenshot of each page)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from driftline.streams.api.address import Address
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import free_port
from tests.browser.cdp import Browser, chromium_path
from tests.conftest import ROOT, settings_of
from tests.integration import test_detection as drift
from tests.integration import test_file_reference_labels as labelled

pytestmark = pytest.mark.integration
DRIFTING = "churn-drift"


def artifacts() -> Path:
    """Where screenshots go: $DRIFTLINE_ARTIFACTS, else tests/artifacts/ (ignored by git)."""
    folder = Path(os.environ.get("DRIFTLINE_ARTIFACTS") or ROOT / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DRIFTLINE_ARTIFACTS"):
        (folder / ".gitignore").write_text("*\n")
    return folder


def drift_events(n_windows: int, per_window: int, shifted_from: int) -> list[dict]:
    rng = np.random.default_rng(3)
    events = []
    for w in range(n_windows):
        for i in range(per_window):
            ts = drift.BASE_MS + w * 60_000 + i * 60_000 // per_window
            event = drift.event(f"d{w}-{i}", ts, rng, 1.0 if w >= shifted_from else 0.0)
            events.append({**event, "model_id": DRIFTING})
    return events


def sql_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.streams", "sql", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def pipeline(env_for, worker_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A worker that processed a drifting model and a labelled one; its env, settings and API URL."""
    monkeypatch.setitem(labelled.PER_WINDOW, labelled.LABELLED, 1500)
    env = env_for(window_seconds=60, allowed_lateness_seconds=5, label_wait_seconds=1, api_port=free_port())
    settings = settings_of(env)
    topics.ensure_topics(settings)
    rng = np.random.default_rng(99)
    reference = tmp_path / "drift-reference.jsonl"
    reference.write_text("\n".join(json.dumps({**drift.event(f"r{i}", drift.BASE_MS, rng, 0.0), "model_id": DRIFTING})
                                   for i in range(4000)))
    done = subprocess.run([sys.executable, "-m", "driftline.streams", "reference", "set", "--model", DRIFTING,
                           "--version", drift.VERSION, "--file", str(reference), "--effective-from", "0"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    labelled.publish(env, labelled.LABELLED, labelled.write_reference(tmp_path / "ref.csv", True))
    preds, labels = labelled.traffic(labelled.LABELLED)
    events = sorted(preds + drift_events(6, 1500, shifted_from=3), key=lambda e: e["ts"])  # event-time order
    labelled.produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), events)
    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", 9, timeout=240)
    labelled.produce(settings.kafka_bootstrap, settings.topic(topics.LABELS), labels)
    worker.wait_metric("driftline_labels_joined_total", len(labels), timeout=240)
    worker.wait_metric("driftline_alert_transitions_total", 1, timeout=120)
    address = Address.read(settings.home)
    assert address is not None and address.url == f"http://127.0.0.1:{settings.api_port}"
    yield env, settings, address.url, worker
    assert worker.terminate() == 0
    assert Address.read(settings.home) is None  # the worker removed its address file on the way out


def test_api_sql_and_dashboard_on_pipeline_data(pipeline) -> None:
    """One pipeline run (it is the slow part) checked four ways: HTTP, the CLI, SQL in the repository, the browser."""
    env, settings, url, _ = pipeline
    api_and_sql(env, url)
    shipped_sql(url)
    dashboard(settings, url)


# Grafana's ClickHouse macros and the cookbook's placeholders, made concrete for the pipeline's data
DATA_FROM, DATA_TO = "2025-12-31 00:00:00", "2026-01-02 00:00:00"
MACROS = [(re.compile(r"\$__timeFilter\((\w+)\)"), rf"\1 >= toDateTime64('{DATA_FROM}', 3, 'UTC') AND "
           rf"\1 < toDateTime64('{DATA_TO}', 3, 'UTC')"),
          (re.compile(r"\$__timeInterval\((\w+)\)"), r"toStartOfInterval(\1, INTERVAL 60 second)"),
          (re.compile(r"\$\{model\}"), DRIFTING)]


def shipped_sql(url: str) -> None:
    """Every Grafana panel's SQL and every cookbook query returns rows on what the pipeline wrote."""
    dashboard_json = json.loads((ROOT / "deploy/grafana/dashboards/driftline.json").read_text())
    queries = {f"panel {p['title']}": t["rawSql"] for p in dashboard_json["panels"] for t in p["targets"]
               if "rawSql" in t}
    queries["variable model"] = dashboard_json["templating"]["list"][0]["query"]
    cookbook = (ROOT / "docs/sql-cookbook.md").read_text()
    for title, block in re.findall(r"## (.+?)\n.*?```sql\n(.*?)```", cookbook, re.S):
        queries[f"cookbook {title}"] = (block.replace("'fraud'", f"'{labelled.MODEL}'")
                                        .replace("now()", f"toDateTime64('{DATA_TO}', 3, 'UTC')"))
    assert sum(k.startswith("cookbook") for k in queries) == 5 and sum(k.startswith("panel") for k in queries) == 5
    with httpx.Client(base_url=url, timeout=60) as http:
        for name, sql in queries.items():
            for pattern, replacement in MACROS:
                sql = pattern.sub(replacement, sql)
            assert "$" not in sql, (name, sql)
            response = http.post("/sql", json={"query": sql})
            assert response.status_code == 200, (name, response.text)
            assert response.json()["rows"], (name, sql)


def api_and_sql(env: dict[str, str], url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        models = {m["model_id"]: m for m in http.get("/models").json()}
        assert set(models) == {DRIFTING, labelled.MODEL}
        assert models[DRIFTING]["status"] in ("alerting", "breached") and models[DRIFTING]["windows"] == 6
        assert models[labelled.MODEL]["label_coverage"] == pytest.approx(1.0)
        findings = http.get(f"/models/{DRIFTING}/findings", params={"limit": 1000}).json()["items"]
        assert {(r["metric"], r["feature"]) for r in findings} >= {("ks", "tenure")}
        assert min(r["window_start_ms"] for r in findings if r["metric"] == "ks") == drift.BASE_MS + 3 * 60_000
        assert http.get("/alerts", params={"model_id": DRIFTING}).json()["recent"]
        statement = "SELECT model_id, count() AS n FROM driftline.windows GROUP BY model_id ORDER BY model_id"
        api_rows = http.post("/sql", json={"query": statement}).json()["rows"]

    # the worker holds the embedded store: the command reaches it through the API, with the same answer
    shown = sql_cli(env, statement, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert [[r["model_id"], r["n"]] for r in json.loads(shown.stdout)] == api_rows
    table = sql_cli(env, statement)
    assert table.stdout.splitlines()[0] == "model_id\tn" and len(table.stdout.splitlines()) == 3
    assert sql_cli(env, statement, "--format", "markdown").stdout.splitlines()[1] == "| --- | --- |"
    assert sql_cli(env, statement, "--format", "csv").stdout.splitlines()[0] == "model_id,n"
    dropped = sql_cli(env, "DROP TABLE driftline.windows")
    assert dropped.returncode == 1 and "readonly" in dropped.stderr.lower()
    assert sql_cli(env, "SELECT count() FROM driftline.windows").stdout.splitlines()[1] != "0"
    created = sql_cli(env, "CREATE TABLE default.notes (x UInt8) ENGINE = MergeTree ORDER BY x", "--write")
    assert created.returncode == 0, created.stderr
    assert sql_cli(env, "EXISTS TABLE default.notes").stdout.splitlines()[1] == "1"


def dashboard(settings: Settings, url: str) -> None:
    binary = chromium_path()
    if binary is None:
        pytest.fail("the browser tests need Chromium: apt-get install -y chromium (or set DRIFTLINE_CHROMIUM); "
                    ".ci/run installs it")
    shots = artifacts()
    browser = Browser(binary)
    try:
        browser.goto(f"{url}/ui/")
        assert browser.wait_for("document.querySelectorAll('table.models tbody tr').length") == 2
        assert browser.evaluate(f"document.querySelector('tr[data-model=\"{DRIFTING}\"] .badge').textContent") in (
            "alerting", "breached")
        browser.screenshot(shots / "models.png")

        # auto-refresh: a model that appears later shows up without a reload (the marker survives)
        browser.evaluate("window.__same_page = true")
        late = [{**e, "model_id": "late-model", "prediction_id": f"late-{i}", "ts": e["ts"] + 6 * 60_000}
                for i, e in enumerate(drift_events(1, 300, shifted_from=9))]
        labelled.produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), late)
        browser.wait_for("document.querySelector('tr[data-model=\"late-model\"]') !== null", timeout=120)
        assert browser.evaluate("window.__same_page === true")

        browser.click(f"tr[data-model=\"{DRIFTING}\"] a.model-link")
        browser.wait_for(f"location.pathname === '/ui/models/{DRIFTING}' && "
                         "document.querySelector('#drift svg') !== null")
        labels = browser.evaluate("Array.from(document.querySelectorAll('#drift svg text')).map(t => t.textContent)")
        # worst first: the drifted feature and the score it drives (three breached windows each) before the rest
        assert set(labels[:2]) == {"tenure", "prediction: score"} and labels.index("spend") > 1, labels
        assert browser.evaluate("document.querySelectorAll('#drift rect[data-breached=\"1\"]').length") >= 3
        assert browser.evaluate("document.querySelectorAll('#alerts .timeline li').length") >= 1
        assert "drift" in browser.evaluate("document.querySelector('#alerts .timeline li b').textContent")
        browser.screenshot(shots / "model-drift.png")

        browser.goto(f"{url}/ui/models/{labelled.MODEL}")
        browser.wait_for("document.querySelector('#slices svg') !== null")
        assert browser.evaluate("document.querySelectorAll('#accuracy svg circle').length") >= 3
        assert browser.evaluate("document.querySelector('#calibration svg[aria-label=\"reliability diagram\"]') "
                                "!== null")
        slices = browser.evaluate("Array.from(document.querySelectorAll('#slices svg text')).map(t => t.textContent)")
        assert {"region=eu", "region=us", "region=asia"} <= set(slices)
        browser.screenshot(shots / "model-labelled.png")
    finally:
        browser.close()
