"""The dashboard's HTML pages (model list, one model) and the fragments the browser refreshes them with.

A page is a shell whose ``#content`` holds a fragment; ``static/dashboard.js`` fetches the fragment again
every few seconds and swaps it in, so the page refreshes without reloading. Everything is escaped here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import HTMLResponse

from driftline.streams import store
from driftline.streams.api import charts

DRIFT_METRICS = ("ks", "chi2", "prediction_drift")
PERFORMANCE = ("accuracy", "estimated_accuracy", "label_coverage", "ece", "calibration_hl")
LAST_WINDOWS = 60
LAST_ALARMS = 20
REFRESH_SECONDS = 5


def status(model: dict[str, Any]) -> str:
    """alerting (an open incident), breached (latest window breached), or ok."""
    return "alerting" if model["open_incidents"] else "breached" if model["breached_last_window"] else "ok"


def _float(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _json(text: str, empty: Any) -> Any:
    try:
        return orjson.loads(text) if text else empty
    except orjson.JSONDecodeError:
        return empty


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """A store row as ``WindowRow`` fields: detail parsed, non-finite numbers null."""
    return {**row, "value": _float(row["value"]), "threshold": _float(row["threshold"]),
            "p_value": _float(row["p_value"]), "breached": bool(row["breached"]), "detail": _json(row["detail"], {})}


def clean_alarm(row: dict[str, Any]) -> dict[str, Any]:
    """A store alarm row as ``AlarmRow`` fields: detail parsed, non-finite numbers null."""
    return {**row, "statistic": _float(row["statistic"]), "threshold": _float(row["threshold"]),
            "detail": _json(row["detail"], {})}


def clean_alert(row: dict[str, Any]) -> dict[str, Any]:
    """A store alert row as ``Alert`` fields."""
    return {**row, "members": list(row["members"]), "evidence": _json(row["evidence"], {}),
            "actions": _json(row["actions"], []), "notify": bool(row["notify"])}


def _shell(title: str, fragment_url: str, content: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · driftline</title><link rel="stylesheet" href="/static/dashboard.css"></head>
<body><header><a class="brand" href="/ui/">driftline</a><span class="stamp" id="stamp"></span></header>
<main id="content" data-fragment="{escape(fragment_url)}" data-refresh="{REFRESH_SECONDS}">{content}</main>
<script src="/static/dashboard.js"></script></body></html>"""


def _ago(ms: int, now_ms: int) -> str:
    seconds = max(0, (now_ms - ms) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _badge(state: str) -> str:
    return f'<span class="badge {escape(state)}">{escape(state)}</span>'


def model_list(models: Sequence[dict[str, Any]], now_ms: int) -> str:
    """The model list fragment: one row per model with its health."""
    if not models:
        return ('<h1>Models</h1><p class="empty-note">No model has written a window yet. Produce predictions to '
                "the predictions topic and run <code>driftline worker</code>.</p>")
    rows = []
    for m in models:
        coverage = "—" if m["label_coverage"] is None else f"{m['label_coverage']:.0%}"
        rows.append(f'<tr data-model="{escape(m["model_id"])}"><td><a class="model-link" '
                    f'href="/ui/models/{quote(m["model_id"], safe="")}">{escape(m["model_id"])}</a></td>'
                    f"<td>{_badge(status(m))}</td><td>{m['open_incidents']}</td><td>{m['breached_last_window']}</td>"
                    f"<td>{coverage}</td><td>{charts.hhmm(m['last_window_end_ms'])} UTC "
                    f'<span class="muted">({_ago(m["last_window_end_ms"], now_ms)})</span></td>'
                    f"<td>{m['windows']}</td><td>{escape(', '.join(m['versions']))}</td></tr>")
    return ('<h1>Models</h1><table class="models"><thead><tr><th>model</th><th>health</th><th>open incidents</th>'
            "<th>breached findings, latest window</th><th>label coverage</th><th>last window end (event time)</th>"
            "<th>windows</th><th>versions</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _drift(rows: Sequence[dict[str, Any]]) -> str:
    cells: dict[tuple[str, int], tuple[float, bool, str]] = {}
    for r in rows:
        name = f"prediction: {r['feature']}" if r["metric"] == "prediction_drift" else r["feature"]
        effect = _json(r["detail"], {}).get("psi", 0.0)
        p = "" if r["p_value"] is None else f", p = {r['p_value']:.2g}"
        cells[(name, r["window_start_ms"])] = (float(effect), bool(r["breached"]),
                                               f"{name} at {charts.hhmm(r['window_start_ms'])}: {r['metric']} "
                                               f"{r['value']:.3f}{p}, PSI {float(effect):.3f}"
                                               f"{' — breached' if r['breached'] else ''}")
    if not cells:
        return ('<p class="empty-note">No drift tests yet: they start once the model version has a reference '
                "(from a file, or learnt from its first windows).</p>")
    features = sorted({f for f, _ in cells}, key=lambda f: (-sum(c[1] for (g, _), c in cells.items() if g == f),
                                                            -max(c[0] for (g, _), c in cells.items() if g == f), f))
    windows = sorted({w for _, w in cells})
    return ('<p class="note">Colour: population stability index (PSI) against the reference, white 0 to dark '
            "orange ≥ 0.5; outlined cells with a dot breached their test (KS or χ²). Worst features first.</p>"
            + charts.heatmap(features, windows, cells))


def _points(rows: Sequence[dict[str, Any]], metric: str) -> list[tuple[int, float, bool]]:
    return [(r["window_start_ms"], float(r["value"]), bool(r["breached"])) for r in rows
            if r["metric"] == metric and not r["feature"] and not r["slice"]]


def _performance(rows: Sequence[dict[str, Any]]) -> str:
    accuracy, estimated = _points(rows, "accuracy"), _points(rows, "estimated_accuracy")
    coverage = [(ms, v) for ms, v, _ in _points(rows, "label_coverage")]
    if not accuracy and not estimated:
        return '<p class="empty-note">No accuracy yet: it needs labels, or calibrated scores and a reference.</p>'
    return charts.lines([charts.Series("accuracy (labels)", accuracy, "s1"),
                         charts.Series("estimated accuracy (no labels)", estimated, "s2", dashed=True)],
                        bars=coverage, bar_name="label coverage", fmt="{:.2f}")


def _calibration(rows: Sequence[dict[str, Any]]) -> str:
    ece = _points(rows, "ece")
    if not ece:
        return ('<p class="empty-note">No calibration yet: it needs labels and a labelled reference for '
                "a classifier with scores.</p>")
    latest = [r for r in rows if r["metric"] == "ece" and not r["slice"]][-1]
    bins = _json(latest["detail"], {}).get("reliability", [])
    return ('<div class="pair"><div><h3>Expected calibration error per window</h3>'
            + charts.lines([charts.Series("ECE", ece, "s3")], fmt="{:.3f}")
            + f'</div><div><h3>Reliability, window {charts.hhmm(latest["window_start_ms"])}</h3>'
            + charts.reliability(bins) + "</div></div>")


def _slices(rows: Sequence[dict[str, Any]]) -> str:
    sliced = [r for r in rows if r["metric"] == "slice_accuracy" and r["slice"]]
    if not sliced:
        return '<p class="empty-note">No slice accuracy yet: it needs labels and segment attributes.</p>'
    last = max(r["window_start_ms"] for r in sliced)
    latest = sorted((r for r in sliced if r["window_start_ms"] == last), key=lambda r: (r["value"], r["slice"]))
    bars = [(r["slice"], float(r["value"]), int(r["n"]), bool(r["breached"]),
             _json(r["detail"], {}).get("baseline_accuracy")) for r in latest]
    return (f'<p class="note">Window {charts.hhmm(last)} UTC, worst slice first; n = labelled predictions; '
            "the tick marks each slice's baseline.</p>" + charts.hbars(bars))


def _evidence(alert: dict[str, Any]) -> str:
    evidence = _json(alert["evidence"], {})
    rows = "".join(f"<tr><td>{escape(b.get('metric', ''))}</td><td>{escape(b.get('feature', ''))}</td>"
                   f"<td>{escape(b.get('slice', ''))}</td><td>{b.get('value', 0):.4g}</td>"
                   f"<td>{'' if b.get('threshold') is None else format(b['threshold'], '.4g')}</td>"
                   f"<td>{'' if b.get('p_value') is None else format(b['p_value'], '.2g')}</td>"
                   f"<td>{b.get('n', '')}</td><td>{escape(str(b.get('window_start', '')))}</td></tr>"
                   for b in evidence.get("breaches", []))
    return ('<details><summary>evidence</summary><table class="evidence"><thead><tr><th>metric</th><th>feature</th>'
            "<th>slice</th><th>value</th><th>threshold</th><th>p</th><th>n</th><th>window</th></tr></thead><tbody>"
            f"{rows}</tbody></table><pre>{escape(alert['evidence_sql'])}</pre></details>")


def _alerts(alerts: Sequence[dict[str, Any]]) -> str:
    if not alerts:
        return '<p class="empty-note">No alerts for this model.</p>'
    items = "".join(f'<li class="alert {escape(a["transition"])}"><span class="when">{charts.hhmm(a["at_ms"])}</span>'
                    f"{_badge(a['transition'])} <b>{escape(a['policy'])}</b> "
                    f'<span class="muted">{escape(a["severity"])} · v{escape(a["model_version"])}</span>'
                    f'<div class="summary">{escape(a["summary"])}</div>{_evidence(a)}</li>' for a in alerts)
    return f'<ol class="timeline">{items}</ol>'


def _clock(ms: int | None) -> str:
    return "—" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M:%S")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _alarms(model_id: str, alarms: Sequence[dict[str, Any]], total: int) -> str:
    if not alarms:
        return ""
    rows = "".join(f"<tr><td>{_clock(a['tick_start_ms'])}</td><td>{escape(a['model_version'])}</td>"
                   f"<td>{escape(a['method'])}</td><td>{escape(a['stream'])}</td><td>{escape(a['direction'])}</td>"
                   f"<td>{_number(a['statistic'])}</td><td>{_number(a['threshold'])}</td>"
                   f"<td>{_clock(a['change_start_ms'])}</td><td>{a['events']}</td></tr>" for a in alarms)
    api = f"/models/{quote(model_id, safe='')}/alarms"
    return ('<section id="alarms"><h2>Sequential alarms</h2><p class="note">Tick-level detectors, seconds after '
            f"the data; newest tick first, {len(alarms)} of {total} (all: <a href=\"{api}\">{api}</a>). "
            "An alarm is a statistic that reached its threshold h; change start is the detector's estimate of when "
            'the change began.</p><table class="evidence"><thead><tr><th>tick (UTC)</th><th>version</th>'
            "<th>method</th><th>stream</th><th>direction</th><th>statistic</th><th>threshold h</th>"
            f"<th>change start</th><th>events</th></tr></thead><tbody>{rows}</tbody></table></section>")


def model_page(model: dict[str, Any], rows: Sequence[dict[str, Any]], alerts: Sequence[dict[str, Any]],
               alarms: Sequence[dict[str, Any]], alarm_total: int, now_ms: int) -> str:
    """One model's fragment: health line, drift heat map, accuracy, calibration, slices, sequential alarms (the
    newest ``alarms`` of ``alarm_total``), alerts."""
    drift = [r for r in rows if r["metric"] in DRIFT_METRICS and not r["slice"]]
    return (f'<nav class="crumbs"><a href="/ui/">Models</a> / {escape(model["model_id"])}</nav>'
            f'<h1>{escape(model["model_id"])} {_badge(status(model))}</h1>'
            f'<p class="health">{model["open_incidents"]} open incident(s) · {model["breached_last_window"]} '
            f"breached finding(s) in the latest window · last window ended {charts.hhmm(model['last_window_end_ms'])} "
            f"UTC ({_ago(model['last_window_end_ms'], now_ms)}) · versions {escape(', '.join(model['versions']))}</p>"
            f'<section id="drift"><h2>Drift per feature</h2>{_drift(drift)}</section>'
            f'<section id="accuracy"><h2>Accuracy and label coverage</h2>{_performance(rows)}</section>'
            f'<section id="calibration"><h2>Calibration</h2>{_calibration(rows)}</section>'
            f'<section id="slices"><h2>Slice accuracy</h2>{_slices(rows)}</section>'
            f"{_alarms(model['model_id'], alarms, alarm_total)}"
            f'<section id="alerts"><h2>Alerts</h2>{_alerts(alerts)}</section>')


def mount(app: FastAPI, reads: Any, guarded: list[Depends], known_model: Callable[[str], None]) -> None:
    """Add the dashboard's routes (outside the OpenAPI document) to ``app``."""

    def list_fragment() -> str:
        with reads.client() as client:
            return model_list(store.api_model_health(client), int(time.time() * 1000))

    def model_fragment(model_id: str) -> str:
        known_model(model_id)
        with reads.client() as client:
            model = next(m for m in store.api_model_health(client) if m["model_id"] == model_id)
            rows = store.dashboard_rows(client, model_id, (*DRIFT_METRICS, *PERFORMANCE, "slice_accuracy"),
                                        LAST_WINDOWS)
            _, recent = store.api_alerts(client, model_id, None, 50)
            alarm_total, alarms = store.api_alarm_rows(client, model_id, limit=LAST_ALARMS)
        return model_page(model, rows, recent, alarms, alarm_total, int(time.time() * 1000))

    @app.get("/ui/", response_class=HTMLResponse, dependencies=guarded, include_in_schema=False)
    def ui_models() -> str:
        return _shell("Models", "/ui/fragments/models", list_fragment())

    @app.get("/ui/models/{model_id}", response_class=HTMLResponse, dependencies=guarded, include_in_schema=False)
    def ui_model(model_id: str) -> str:
        return _shell(model_id, f"/ui/fragments/models/{quote(model_id, safe='')}", model_fragment(model_id))

    @app.get("/ui/fragments/models", response_class=HTMLResponse, dependencies=guarded, include_in_schema=False)
    def fragment_models() -> str:
        return list_fragment()

    @app.get("/ui/fragments/models/{model_id}", response_class=HTMLResponse, dependencies=guarded,
             include_in_schema=False)
    def fragment_model(model_id: str) -> str:
        return model_fragment(model_id)
