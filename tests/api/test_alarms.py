"""Sequential alarms over real HTTP: ``GET /models/{id}/alarms`` and the model page's alarm table."""

from __future__ import annotations

import pytest

from tests.api.conftest import MINUTE, T0, TICK, Served

FIRST_TICK = T0 + 5 * MINUTE


def test_alarms_newest_first_once_each(api: Served) -> None:
    with api.client() as http:
        everything = http.get("/models/fraud/alarms").json()
    assert everything["total"] == 8 and everything["next_offset"] is None  # the replayed alarm counts once
    assert [(a["model_version"], a["tick_start_ms"]) for a in everything["items"][:2]] == [
        ("4", FIRST_TICK + 7 * TICK), ("3", FIRST_TICK + 5 * TICK)]
    newest = everything["items"][0]
    assert newest == {**newest, "method": "cusum", "stream": "age", "statistic": 12.25, "threshold": 8.0,
                      "tick_end_ms": FIRST_TICK + 8 * TICK, "window_start_ms": FIRST_TICK,
                      "change_start_ms": FIRST_TICK + 4 * TICK, "direction": "up", "events": 120,
                      "detail": {"z": 3.1}}
    no_h = next(a for a in everything["items"] if a["method"] == "page_hinkley")
    assert no_h["threshold"] is None and no_h["change_start_ms"] is None


def test_alarms_filters_and_pages(api: Served) -> None:
    with api.client() as http:
        def get(**params: object) -> dict:
            response = http.get("/models/fraud/alarms", params=params)
            assert response.status_code == 200, response.text
            return response.json()

        assert {a["model_version"] for a in get(version="3")["items"]} == {"3"} and get(version="3")["total"] == 7
        assert [a["stream"] for a in get(method="page_hinkley")["items"]] == ["score"]
        assert get(stream="score", method="cusum")["total"] == 0
        assert get(stream="age", version="3")["total"] == 6
        ranged = get(from_ms=FIRST_TICK + TICK, to_ms=FIRST_TICK + 3 * TICK)  # tick start in [from, to)
        assert sorted({a["tick_start_ms"] for a in ranged["items"]}) == [FIRST_TICK + TICK, FIRST_TICK + 2 * TICK]
        assert ranged["total"] == 3
        first = get(version="3", method="cusum", limit=4)
        assert first["next_offset"] == 4 and [a["tick_start_ms"] for a in first["items"]] == [
            FIRST_TICK + t * TICK for t in (5, 4, 3, 2)]
        rest = get(version="3", method="cusum", limit=4, offset=4)
        assert rest["next_offset"] is None and [a["tick_start_ms"] for a in rest["items"]] == [
            FIRST_TICK + TICK, FIRST_TICK]
        assert get(offset=100)["items"] == [] and get(offset=100)["total"] == 8
        assert get(version="9")["total"] == 0
        churn = http.get("/models/churn/alarms").json()  # a known model without alarms: empty, not 404
    assert churn["items"] == [] and churn["total"] == 0


def test_alarms_of_an_unknown_model_are_404(api: Served) -> None:
    with api.client() as http:
        response = http.get("/models/nope/alarms", params={"version": "3"})
        assert response.status_code == 404 and "nope" in response.json()["detail"]
        fresh = http.get("/models/fresh/alarms")  # alarms before the model's first window: they are shown
        assert fresh.status_code == 200 and fresh.json()["total"] == 1


@pytest.mark.parametrize("params, field", [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                                           ({"offset": -1}, "offset"), ({"from_ms": "yesterday"}, "from_ms"),
                                           ({"to_ms": -5}, "to_ms"), ({"to_ms": 10**16}, "to_ms")])
def test_alarms_refuse_bad_input_with_a_message(api: Served, params: dict, field: str) -> None:
    response = api.client().get("/models/fraud/alarms", params=params)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", field] and problem["msg"] and "Traceback" not in response.text


def test_model_page_lists_the_alarms_newest_first(api: Served) -> None:
    with api.client() as http:
        page = http.get("/ui/models/fraud").text
        fragment = http.get("/ui/fragments/models/fraud").text  # what the page refreshes itself with
        churn = http.get("/ui/models/churn").text
    assert 'id="alarms"' in fragment and "Sequential alarms" in page
    table = page[page.index('id="alarms"'):page.index('id="alerts"')]
    assert table.index("01-01 00:05:35") < table.index("01-01 00:05:25") < table.index("01-01 00:05:00")
    assert "<td>page_hinkley</td><td>score</td><td>up</td><td>51</td><td>—</td><td>—</td>" in table
    assert "<td>12.25</td><td>8</td><td>01-01 00:05:20</td>" in table  # statistic, h, change start
    assert "8 of 8" in table and 'href="/models/fraud/alarms"' in table
    assert 'id="alarms"' not in churn
