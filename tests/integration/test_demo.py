"""The README's first command: `driftline demo` runs the whole loop, and runs again right after."""

from __future__ import annotations

import pytest

from driftline.streams.config.settings import load_settings
from driftline.streams.demo import run_demo

pytestmark = pytest.mark.integration


def test_the_demo_flags_the_drifted_windows_and_can_run_twice(broker, tmp_path):
    settings = load_settings(home=broker.dir.parent, kafka_port=broker.port,
                             clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}")
    for run in range(2):
        lines: list[str] = []
        assert run_demo(settings, 20_000, lines.append) == 0, "\n".join(lines)
        header = lines.index(next(line for line in lines if line.startswith("window\t")))
        table = [dict(zip(lines[header].split("\t"), line.split("\t"), strict=True))
                 for line in lines[header + 1 : -1]]
        assert sum(float(row["events"]) for row in table) == 20_000, (run, table)
        assert len(table) == 6, table  # window-aligned: six full windows, whenever the demo runs
        # the last third drifts (older applicants, larger amounts): the last window is flagged, the first is not
        assert table[-1]["age_drift"] == "1" and table[-1]["amount_drift"] == "1", table
        assert table[0]["age_drift"] == "0" and table[0]["amount_drift"] == "0", table
        assert 0.5 < float(table[-1]["label_coverage"]) < 0.7, table
        # the built-in policies act on it: the accuracy drop of the drifted windows opens a critical incident
        alerts = [line for line in lines[:header] if line.startswith("alert ")]
        assert any("triggered" in line and "performance (critical)" in line for line in alerts), "\n".join(lines)
