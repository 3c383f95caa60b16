"""The river wrappers' checkpoint is data only: exact across a save and restore, and refused when tampered."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.detectors.sequential.river_ticks import ERROR_DETECTORS, ADWINTicks, RiverTicks, spread_errors

WRAPPERS: list[type[RiverTicks]] = [ADWINTicks, *ERROR_DETECTORS.values()]
FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Per-tick statistics with level shifts (so ADWIN cuts, and its window spans several bucket rows).
segments = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 3.0, -2.0]), st.integers(1, 120),
                              st.floats(0.0, 1.0)), min_size=1, max_size=6)
# Labelled ticks as (labelled, errors) with error rates that drift.
ticks = st.lists(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))), max_size=25)


def values_of(parts: list[tuple[float, int, float]]) -> list[float]:
    return [level + noise * ((-1) ** i) for level, length, noise in parts for i in range(length)]


def sequence(wrapper: type[RiverTicks], data: st.DataObject) -> list[float]:
    if wrapper is ADWINTicks:
        return values_of(data.draw(segments))
    return [float(x) for n, e in data.draw(ticks) for x in spread_errors(n, e).tolist()]


def run(det: RiverTicks, xs: list[float]) -> list[tuple[bool, list[int], list[int | None]]]:
    out = []
    for x in xs:
        fired = det.update(x)
        out.append((fired, list(det.detections), list(det.change_points)))
    return out


def saved(det: RiverTicks) -> dict[str, Any]:
    """The state as the tick-state topic carries it (orjson, like `_Watch.to_json`)."""
    return orjson.loads(orjson.dumps(det.state_dict(), option=orjson.OPT_SERIALIZE_NUMPY))


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
@FAST
@given(data=st.data())
def test_feed_save_restore_feed_equals_one_run(wrapper: type[RiverTicks], data: st.DataObject) -> None:
    xs = sequence(wrapper, data)
    cut = data.draw(st.integers(0, len(xs)))
    whole = wrapper()
    expected = run(whole, xs)
    first = wrapper()
    got = run(first, xs[:cut])
    restored = wrapper.from_state(saved(first))
    got += run(restored, xs[cut:])
    assert got == expected
    assert saved(restored) == saved(whole)
    if wrapper is ADWINTicks:
        a, b = restored.detector, whole.detector
        assert (a.width, a.total, a.variance, a.n_detections, a.estimation) == \
               (b.width, b.total, b.variance, b.n_detections, b.estimation)
        assert a._helper.__getstate__() == b._helper.__getstate__()


def test_the_state_is_plain_data_with_no_pickle() -> None:
    det = ADWINTicks()
    det.feed(values_of([(0.0, 200, 0.1), (3.0, 100, 0.1)]))
    text = orjson.dumps(det.state_dict())
    assert b"river" not in text and b"ADWIN" not in text  # no class is named: restoring builds from the wrapper
    assert set(det.state_dict()["detector"]["_helper"]) >= {"width", "buckets"}


def paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, containers included."""
    out = [path] if path else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*path, i))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return doc


def removed(doc: Any, path: tuple[Any, ...]) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return doc


# A value of a kind no slot of a state holds: text that is no float's name, lists of text, unknown fields.
wrong_kind = st.one_of(
    st.text(max_size=5).filter(lambda s: s not in ("inf", "-inf", "nan")),
    st.lists(st.text(max_size=3), min_size=1, max_size=3),
    st.dictionaries(st.text(alphabet="xyz", min_size=1, max_size=3), st.integers(), min_size=1, max_size=2),
)


def fed(wrapper: type[RiverTicks]) -> RiverTicks:
    det = wrapper()
    if wrapper is ADWINTicks:
        det.feed(values_of([(0.0, 150, 0.2), (3.0, 60, 0.2)]))
    else:
        for n, e in [(40, 2)] * 5 + [(40, 30)] * 3:
            det.update_errors(n, e)
    return det


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
@FAST
@given(data=st.data())
def test_a_tampered_state_is_refused_with_the_field_named(wrapper: type[RiverTicks], data: st.DataObject) -> None:
    state = saved(fed(wrapper))
    path = data.draw(st.sampled_from(paths(state)))
    how = data.draw(st.sampled_from(["replace", "remove", "add"]))
    if how == "replace":
        bad = replaced(state, path, data.draw(wrong_kind))
    elif how == "remove" and isinstance(path[-1], str):
        bad = removed(state, path)
    else:
        bad = replaced(state, (*path[:-1], "unexpected"), 1) if isinstance(path[-1], str) else \
            replaced(state, path[:-1], [*_at(state, path[:-1]), "unexpected"])
    with pytest.raises(ValueError, match="river state refused"):
        wrapper.from_state(bad)


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
@FAST
@given(garbage=json_values)
def test_garbage_is_refused(wrapper: type[RiverTicks], garbage: Any) -> None:
    with pytest.raises(ValueError, match="river state refused"):
        wrapper.from_state(garbage)
    state = saved(fed(wrapper))
    with pytest.raises(ValueError, match="river state refused"):
        wrapper.from_state({**state, "detector": garbage})


@pytest.mark.parametrize(("params", "why"), [
    ({"clock": 0}, "params.clock"),            # river's Rust window would divide by zero: a panic, not an error
    ({"max_buckets": -1}, "params.max_buckets"),
    ({"delta": 2.0}, "params.delta"),
    ({"delta": "0.1"}, "params.delta"),
    ({"__class__": 1}, "takes no such parameter"),
])
def test_parameters_river_would_panic_on_are_refused(params: dict[str, Any], why: str) -> None:
    state = saved(fed(ADWINTicks))
    with pytest.raises(ValueError, match=why):
        ADWINTicks.from_state({**state, "params": params})


def test_an_inconsistent_adwin_window_is_refused() -> None:
    state = saved(fed(ADWINTicks))
    helper = state["detector"]["_helper"]
    with pytest.raises(ValueError, match="width"):
        ADWINTicks.from_state(replaced(state, ("detector", "_helper", "width"), helper["width"] + 1))
    last = len(helper["buckets"]) - 1
    with pytest.raises(ValueError, match=r"buckets\[\d+\]\.used"):
        ADWINTicks.from_state(replaced(state, ("detector", "_helper", "buckets", last, "used"), 0))
