"""Property-based fuzz of the API from its own OpenAPI document: no input makes it answer 5xx."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Served

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
SQL_WORDS = st.sampled_from(["SELECT", "FROM", "driftline.windows", "driftline.alerts", "WHERE", "1", "'x'", ";",
                             "--", "/*", "*/", "{m:String}", "{n:Int64}", "count()", "GROUP BY", "SETTINGS",
                             "readonly=0", "DROP", "TABLE", "INSERT", "numbers(10)", "(", ")", ",", "`", '"', "\\"])


def _value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema allows (edges included) and values it does not, as a client could send them."""
    options = [schema, *schema.get("anyOf", [])]
    kinds = {o.get("type") for o in options}
    valid: list[st.SearchStrategy[Any]] = []
    if "integer" in kinds:
        bounds = next(o for o in options if o.get("type") == "integer")
        valid.append(st.integers(bounds.get("minimum", -(2**63)), bounds.get("maximum", 2**63)))
    if "string" in kinds:
        valid.append(TEXT)
    return st.one_of(*valid, TEXT, st.integers(-(2**70), 2**70), st.floats(allow_nan=True))


def _operations(spec: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(path, op.get("parameters", [])) for path, item in spec["paths"].items()
            for method, op in item.items() if method == "get"]


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_get_input_makes_a_5xx(api: Served, data: st.DataObject) -> None:
    with api.client() as http:
        spec = http.get("/openapi.json").json()
        path, parameters = data.draw(st.sampled_from(_operations(spec)))
        query: dict[str, Any] = {}
        for p in parameters:
            value = data.draw(_value(p["schema"]), label=p["name"])
            if p["in"] == "path":
                path = path.replace("{" + p["name"] + "}", quote(str(value), safe="") or "x")
            elif data.draw(st.booleans()):
                query[p["name"]] = str(value)
        response = http.get(path, params=query)
    assert response.status_code < 500, (path, query, response.text)
    assert "Traceback" not in response.text


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(words=st.lists(st.one_of(SQL_WORDS, TEXT), min_size=1, max_size=12),
       parameters=st.dictionaries(st.sampled_from(["m", "n", "x"]),
                                  st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                                            TEXT, st.lists(st.integers(), max_size=3)), max_size=3),
       write=st.booleans())
def test_no_sql_input_makes_a_5xx(api: Served, words: list[str], parameters: dict[str, Any], write: bool) -> None:
    with api.client() as http:
        # json.dumps, not httpx's encoder: NaN and Infinity literals are what a careless client sends
        body = json.dumps({"query": " ".join(words), "parameters": parameters, "write": write})
        response = http.post("/sql", content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (words, parameters, response.text)
    assert "Traceback" not in response.text
