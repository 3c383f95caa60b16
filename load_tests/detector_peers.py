"""The peers of `bench_detectors` that cannot live in driftline's virtualenv, run in a throwaway one.

Frouros 0.9 pins numpy < 2.2 and scipy < 1.15, Evidently 0.4 pins pandas < 2.3: they run in a separate
interpreter (`DRIFTLINE_PEERS_PYTHON`, default /tmp/peers-venv/bin/python) as
`python load_tests/detector_peers.py {frouros|evidently|nannyml} IN.npz OUT.json`. This file imports nothing
from driftline. Every peer runs with its defaults.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np


def frouros(data: Any) -> list[dict[str, Any]]:
    """Frouros CUSUM (delta 0.005, lambda 50, 30 instances) per event; reset after each alarm.

    Frouros' CUSUM is one-sided (upward); a two-sided stream runs a second one on the negated values and
    either alarming counts. Stops at the first alarm at or after the change.
    """
    from frouros.detectors.concept_drift import CUSUM

    out = []
    for i in range(int(data["count"])):
        stream, change = data[f"stream_{i}"], int(data[f"change_{i}"])
        signs = (1.0, -1.0) if bool(data[f"two_sided_{i}"]) else (1.0,)
        detectors = [CUSUM() for _ in signs]
        alarms, seen = [], 0
        start = time.perf_counter()
        for j, v in enumerate(stream.tolist()):
            seen = j + 1
            hit = False
            for sign, det in zip(signs, detectors, strict=True):
                det.update(value=sign * v)
                hit = hit or det.drift
            if hit:
                for det in detectors:
                    det.reset()
                alarms.append(j)
                if j >= change:
                    break
        out.append({"alarms": alarms, "seconds": time.perf_counter() - start, "events": seen})
    return out


def _frames(data: Any, i: int, ref_rows: int | None = None) -> tuple[Any, Any, list[str]]:
    import pandas as pd

    names = [str(n) for n in data[f"names_{i}"]]
    base, col = data[f"base_{i}"], int(data[f"col_{i}"])
    ref = base[data[f"ref_idx_{i}"][-(ref_rows or 0):]]
    cur = base[data[f"cur_idx_{i}"]].copy()
    cur[:, col] += data[f"add_{i}"]
    return pd.DataFrame(ref, columns=names), pd.DataFrame(cur, columns=names), names


def evidently(data: Any) -> list[dict[str, Any]]:
    """Evidently's DataDriftPreset per window; an alarm when any column's default test says drifted.

    The reference is the last window's worth of reference rows: with five windows' worth a 30-column
    report takes ~9 s per window here, and its default test (normed Wasserstein >= 0.1) is an effect size.
    """
    from evidently.metric_preset import DataDriftPreset
    from evidently.report import Report

    out = []
    window = int(data["window"])
    for i in range(int(data["count"])):
        ref, cur, _ = _frames(data, i, window)
        start = time.perf_counter()
        alarms, dataset_drift, tests = [], [], set()
        for w in range(len(cur) // window):
            report = Report(metrics=[DataDriftPreset()])
            report.run(reference_data=ref, current_data=cur.iloc[w * window:(w + 1) * window])
            result = next(m["result"] for m in report.as_dict()["metrics"] if "drift_by_columns" in m["result"])
            columns = result["drift_by_columns"].values()
            alarms.append(any(bool(c["drift_detected"]) for c in columns))
            dataset_drift.append(bool(result["dataset_drift"]))
            tests |= {str(c["stattest_name"]) for c in columns}
        out.append({"alarms": alarms, "dataset_drift": dataset_drift, "tests": sorted(tests),
                    "seconds": time.perf_counter() - start})
    return out


def nannyml(data: Any) -> list[dict[str, Any]]:
    """NannyML's UnivariateDriftCalculator (default methods and thresholds), chunks of one window each."""
    import warnings

    import nannyml as nml

    warnings.filterwarnings("ignore")
    out = []
    window = int(data["window"])
    for i in range(int(data["count"])):
        ref, cur, names = _frames(data, i)
        start = time.perf_counter()
        calc = nml.UnivariateDriftCalculator(column_names=names, chunk_size=window)
        calc.fit(ref)
        frame = calc.calculate(cur).filter(period="analysis").to_df()
        alert = frame.loc[:, [c for c in frame.columns if c[-1] == "alert"]].to_numpy(dtype=bool)
        out.append({"alarms": alert.any(axis=1).tolist(), "seconds": time.perf_counter() - start})
    return out


def main() -> None:
    mode, source, target = sys.argv[1:4]
    run = {"frouros": frouros, "evidently": evidently, "nannyml": nannyml}[mode]
    with np.load(source) as data:
        result = run(data)
    with open(target, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
