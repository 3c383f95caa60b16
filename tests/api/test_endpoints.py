"""Every endpoint over real HTTP, with good and bad input; /sql's read-only guarantees; auth."""

from __future__ import annotations

import base64

import pytest

from driftline.errors import SettingsError
from driftline.streams.api.address import LOCAL_KEY_HEADER
from driftline.streams.api.server import check_bind
from driftline.streams.config.settings import Settings
from tests.api.conftest import MINUTE, T0, TOKEN, Served


def test_healthz_and_docs(api: Served) -> None:
    with api.client() as http:
        assert http.get("/healthz").json()["status"] == "ok"
        spec = http.get("/openapi.json").json()
        assert {"/models", "/models/{model_id}/windows", "/models/{model_id}/findings", "/models/{model_id}/alarms",
                "/alerts", "/sql", "/healthz", "/metrics"} <= set(spec["paths"])
        assert "swagger" in http.get("/docs").text.lower()


def test_models_with_health(api: Served) -> None:
    with api.client() as http:
        models = {m["model_id"]: m for m in http.get("/models").json()}
    assert models["fraud"]["status"] == "alerting" and models["fraud"]["open_incidents"] == 1
    assert models["fraud"]["windows"] == 8 and models["fraud"]["label_coverage"] == pytest.approx(0.6)
    assert models["fraud"]["last_window_end_ms"] == T0 + 8 * MINUTE
    assert models["churn"]["status"] == "ok" and models["churn"]["open_incidents"] == 0


def test_windows_filters_and_pages(api: Served) -> None:
    with api.client() as http:
        everything = http.get("/models/fraud/windows", params={"limit": 1000}).json()
        assert everything["total"] == 8 * 9 and everything["next_offset"] is None
        ks = http.get("/models/fraud/windows", params={"metric": "ks", "feature": "age", "limit": 3}).json()
        assert ks["total"] == 8 and [r["window_start_ms"] for r in ks["items"]] == [
            T0 + w * MINUTE for w in (7, 6, 5)]
        assert ks["next_offset"] == 3 and ks["items"][0]["detail"]["psi"] == 0.6
        last = http.get("/models/fraud/windows", params={"metric": "ks", "limit": 3, "offset": 6}).json()
        assert len(last["items"]) == 2 and last["next_offset"] is None
        ranged = http.get("/models/fraud/windows", params={"from_ms": T0 + MINUTE, "to_ms": T0 + 3 * MINUTE,
                                                           "slice": "region=eu", "version": "3"}).json()
        assert sorted(r["window_start_ms"] for r in ranged["items"]) == [T0 + MINUTE, T0 + 2 * MINUTE]
        assert http.get("/models/fraud/windows", params={"version": "9"}).json()["total"] == 0


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"from_ms": "yesterday"},
                                    {"to_ms": -5}, {"limit": "ten"}])
def test_windows_refuses_bad_input_with_a_message(api: Served, params: dict) -> None:
    response = api.client().get("/models/fraud/windows", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] and "Traceback" not in response.text


def test_unknown_model_is_404(api: Served) -> None:
    with api.client() as http:
        for path in ("/models/nope/windows", "/models/nope/findings", "/ui/models/nope"):
            response = http.get(path)
            assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_findings_are_the_breached_rows(api: Served) -> None:
    with api.client() as http:
        found = http.get("/models/fraud/findings", params={"limit": 1000}).json()
    assert found["total"] == 9 and all(r["breached"] for r in found["items"])
    assert {r["metric"] for r in found["items"]} == {"ks", "accuracy", "slice_accuracy"}


def test_alerts_open_and_recent(api: Served) -> None:
    with api.client() as http:
        everything = http.get("/alerts").json()
        assert [a["incident_id"] for a in everything["open"]] == ["inc-open"]
        assert len(everything["recent"]) == 3 and everything["recent"][0]["at_ms"] == T0 + 7 * MINUTE
        assert everything["open"][0]["evidence"]["breaches"][0]["feature"] == "age"
        churn = http.get("/alerts", params={"model_id": "churn", "since_ms": T0 + 2 * MINUTE}).json()
        assert churn["open"] == [] and [a["transition"] for a in churn["recent"]] == ["resolved"]
        assert http.get("/alerts", params={"limit": 0}).status_code == 422


def test_sql_reads_with_parameters(api: Served) -> None:
    with api.client() as http:
        response = http.post("/sql", json={"query": "SELECT metric, count() AS c FROM driftline.windows WHERE "
                                                    "model_id = {m:String} AND window_start >= {t:DateTime64(3)} "
                                                    "GROUP BY metric ORDER BY metric;",
                                           "parameters": {"m": "fraud", "t": "2026-01-01 00:05:00"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["metric", "c"] and ["ks", 3] in body["rows"]


@pytest.mark.parametrize("query, says", [
    ("DROP TABLE driftline.windows", "readonly"),
    ("INSERT INTO driftline.alerts (event_id) VALUES ('x')", "readonly"),
    ("ALTER TABLE driftline.windows DELETE WHERE 1", "readonly"),
    ("CREATE TABLE default.evil (x UInt8) ENGINE = Memory", "readonly"),
    ("SELECT 1 SETTINGS readonly = 0", "readonly"),
    ("SELECT 1 SETTINGS max_result_rows = 1000000", "readonly"),
    ("SET readonly = 0", "readonly"),
    ("SELECT 1; DROP TABLE driftline.windows", "one statement"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELECT number FROM numbers(100)", "limit for result"),
    ("SELECT repeat('x', 1000) FROM numbers(40)", "larger than 20000 bytes"),
    ("SELECT sleep(2)", "timeout"),
    ("SELEKT 1", "syntax"),
    ("SELECT {m:String}", "m"),
    ("   ;  ", "no statement"),
])
def test_sql_refuses(api: Served, query: str, says: str) -> None:
    response = api.client().post("/sql", json={"query": query})
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"].lower(), response.json()
    assert api.client().post("/sql", json={"query": "SELECT count() FROM driftline.windows"}).json()["rows"][0][0] > 0


def test_sql_bad_bodies_are_422(api: Served) -> None:
    with api.client() as http:
        for body in ({}, {"query": ""}, {"query": 5}, {"query": "SELECT 1", "parameters": [1]}):
            assert http.post("/sql", json=body).status_code == 422
        assert http.post("/sql", content=b"not json", headers={"content-type": "application/json"}).status_code == 422
        for literal in (b"NaN", b"Infinity", b"-Infinity"):  # Python's JSON reads these; a client may send them
            odd = http.post("/sql", content=b'{"query": "SELECT {m:Float64} AS m", "parameters": {"m": ' + literal
                            + b"}}", headers={"content-type": "application/json"})
            assert odd.status_code in (200, 400, 422), odd.text


def test_writes_need_the_local_key(api: Served) -> None:
    with api.client() as http:
        body = {"query": "CREATE TABLE IF NOT EXISTS default.scratch (x UInt8) ENGINE = Memory", "write": True}
        refused = http.post("/sql", json=body)
        assert refused.status_code == 403 and LOCAL_KEY_HEADER in refused.json()["detail"]
        assert http.post("/sql", json=body, headers={LOCAL_KEY_HEADER: "guess"}).status_code == 403
        assert http.post("/sql", json=body, headers={LOCAL_KEY_HEADER: api.local_key}).status_code == 200


def test_metrics_are_prometheus_text(api: Served) -> None:
    with api.client() as http:
        http.get("/models")
        text = http.get("/metrics").text
    assert 'driftline_api_requests_total{route="/models",status="200"}' in text


def test_dashboard_pages(api: Served) -> None:
    with api.client() as http:
        assert http.get("/", follow_redirects=False).headers["location"] == "/ui/"
        listing = http.get("/ui/").text
        assert 'href="/ui/models/fraud"' in listing and "/static/dashboard.js" in listing
        page = http.get("/ui/models/fraud").text
        for section in ('id="drift"', 'id="accuracy"', 'id="calibration"', 'id="slices"', 'id="alerts"'):
            assert section in page
        assert 'data-breached="1"' in page and "region=eu" in page
        assert http.get("/static/dashboard.css").status_code == 200


def test_auth_is_required_when_a_token_is_set(guarded_api: Served) -> None:
    with guarded_api.client() as http:
        assert http.get("/healthz").status_code == 200  # probes need no token
        for path in ("/models", "/alerts", "/metrics", "/ui/", "/models/fraud/windows"):
            response = http.get(path)
            assert response.status_code == 401 and "token" in response.json()["detail"], path
        assert http.get("/ui/").headers["www-authenticate"].startswith("Basic")
        assert http.get("/models").headers["www-authenticate"].startswith("Bearer")
        assert http.get("/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/models", headers={"Authorization": f"Token {TOKEN}"}).status_code == 401
        assert http.get("/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        assert http.get("/ui/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert http.post("/sql", json={"query": "SELECT 1"}).status_code == 401


def test_refuses_to_bind_beyond_loopback_without_a_token() -> None:
    with pytest.raises(SettingsError, match="DRIFTLINE_API_TOKEN"):
        check_bind(Settings(api_addr="0.0.0.0", api_port=8080))
    check_bind(Settings(api_addr="0.0.0.0", api_port=8080, api_token=TOKEN))  # type: ignore[arg-type]
    check_bind(Settings(api_addr="::1", api_port=8080))
    check_bind(Settings(api_addr="localhost", api_port=8080))
