"""The backtest report's arithmetic (delays, false alarms, misses) and the command's errors, without Kafka."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from driftline.streams import cli
from driftline.streams.backtest.report import (
    BacktestReport,
    Breach,
    VersionReport,
    WindowResult,
    count_false_alarms,
    score_change_points,
)

S = 1000  # ms per second
BREACHED = (1, 4, 5, 8)


def windows(breached: tuple[int, ...] = BREACHED) -> list[WindowResult]:
    """Ten one-minute windows; those in ``breached`` carry a ks breach (window 5 also a psi one)."""
    out = []
    for i in range(10):
        start, end = i * 60 * S, (i + 1) * 60 * S
        found: tuple[Breach, ...] = ()
        if i in breached:
            found = (Breach(start, end, "ks", "tenure", "", 0.2 + i / 100, 0.01, 1e-6),)
            if i == 5:
                found += (Breach(start, end, "psi", "tenure", "region=eu", 0.4, 0.25, None),)
        out.append(WindowResult(start, end, 100 + i, 0, "file-x", found))
    return out


def test_each_change_point_gets_its_first_detection_before_the_next_one():
    cps = [200 * S, 250 * S, 400 * S, 530 * S]
    got = [(c.change_point_ms // S, c.detected_start_ms, c.delay_s, c.breached_before, c.missed)
           for c in score_change_points(windows(), cps)]
    assert got == [
        (200, 240 * S, 100.0, 1, False),  # window 4 [240, 300) is the first breached one ending after 200
        (250, 240 * S, 50.0, 1, False),   # it straddles 250 too; window 1 is the only breach before
        (400, 480 * S, 140.0, 3, False),  # window 5 ends at 360 <= 400: before, not a detection
        (530, 480 * S, 10.0, 3, False),   # window 8 [480, 540) holds traffic after 530
    ]


def test_a_change_point_is_missed_when_no_breach_follows_it_in_its_segment():
    got = score_change_points(windows(), [300 * S, 450 * S, 545 * S])
    assert [(c.detected_start_ms, c.delay_s, c.missed, c.breached_before) for c in got] == [
        (300 * S, 60.0, False, 2),   # window 5 [300, 360): a window starting exactly at the change detects it
        (480 * S, 90.0, False, 3),
        (None, None, True, 4),       # nothing breached after 545 s: window 8 ended at 540
    ]
    # a breach only after the next change point belongs to that one: the first is missed
    sparse = windows(breached=(8,))
    first, second = score_change_points(sparse, [100 * S, 400 * S])
    assert first.missed and first.breached_before == 0
    assert second.delay_s == 140.0 and second.breached_before == 0


def test_change_points_are_sorted_and_deduplicated_and_a_window_ending_at_one_is_before_it():
    got = score_change_points(windows(), [400 * S, 240 * S, 240 * S])
    assert [c.change_point_ms for c in got] == [240 * S, 400 * S]
    assert got[0].delay_s == 60.0 and got[0].breached_before == 1  # window 1 [60, 120) ends before 240
    (at_end,) = score_change_points(windows(), [120 * S])  # window 1 ends exactly at the change
    assert at_end.breached_before == 1 and at_end.detected_start_ms == 240 * S


def test_false_alarms_are_breaches_before_the_first_change_point_or_all_without_one():
    w = windows()
    assert count_false_alarms(w, []) == 4
    assert count_false_alarms(w, [530 * S, 200 * S]) == 1
    assert count_false_alarms(w, [120 * S]) == 1
    assert count_false_alarms(w, [119 * S]) == 0
    assert count_false_alarms(windows(breached=()), []) == 0


def test_report_json_and_markdown_carry_the_same_numbers():
    version = VersionReport("churn", "2", "cfg123", windows())
    version.windows.append(WindowResult(600 * S, 660 * S, 0, 3, "", ()))
    report = BacktestReport("candidate.yaml", "filever", 0, 660 * S, [545 * S, 200 * S], "g-backtest-1",
                            records_read=1010, records_replayed=1000, invalid=4, out_of_range=6,
                            versions=[version])
    data = orjson.loads(report.to_json())
    assert data == orjson.loads(orjson.dumps(report.to_dict()))
    (v,) = data["versions"]
    assert (v["windows_evaluated"], v["windows_judged"], v["breached_windows"], v["false_alarms"]) == (11, 10, 4, 1)
    assert v["breaches_per_metric"] == {"ks": 4, "psi": 1}
    assert [(c["change_point_ms"], c["delay_s"], c["missed"]) for c in v["change_points"]] == [
        (200 * S, 100.0, False), (545 * S, None, True)]
    assert len(v["breaches"]) == 5 and v["breaches"][3]["slice"] == "region=eu"
    assert data["change_points_ms"] == [200 * S, 545 * S]
    md = report.to_markdown()
    assert "| churn/2 | cfg123 | 11 | 10 | 4 | 1 | ks 4, psi 1 |" in md
    assert "| 1970-01-01T00:03:20.000Z | 1970-01-01T00:04:00.000Z | 100 | 1 |" in md
    assert "| 1970-01-01T00:09:05.000Z | missed | - | 4 |" in md
    assert "| 1970-01-01T00:05:00.000Z | psi | tenure | region=eu | 0.4 | 0.25 | - |" in md
    assert math.isclose(version.breaches[0].value, 0.21)


def test_labels_are_reported_in_total_and_per_window_and_their_breaches_count_like_the_others():
    before, after = windows(breached=(4,))[3:5]
    after = replace(after, breaches=(*after.breaches, Breach(240 * S, 300 * S, "accuracy", "", "", 0.55, 0.8, 1e-7)),
                    labels=80, label_coverage=80 / 104, accuracy=0.55)
    report = BacktestReport("c.yaml", "v", 180 * S, 300 * S, [250 * S], "g", labels_to_ms=480 * S, labels_read=100,
                            labels_joined=80, labels_unmatched=15, labels_invalid=2, labels_out_of_range=3,
                            label_partitions={0: (5, 105)},
                            versions=[VersionReport("churn", "2", "cfg", [before, after])])
    data = report.to_dict()
    assert {k: data[k] for k in ("labels_to_ms", "labels_read", "labels_joined", "labels_unmatched",
                                 "labels_invalid", "labels_out_of_range", "labels_other_models")} == {
        "labels_to_ms": 480 * S, "labels_read": 100, "labels_joined": 80, "labels_unmatched": 15,
        "labels_invalid": 2, "labels_out_of_range": 3, "labels_other_models": 0}
    assert data["label_partitions"] == {"0": {"from_offset": 5, "to_offset": 105}}
    (v,) = data["versions"]
    assert [(w["labels"], w["label_coverage"], w["accuracy"]) for w in v["windows"]] == [(0, None, None),
                                                                                       (80, 80 / 104, 0.55)]
    assert v["breaches_per_metric"] == {"accuracy": 1, "ks": 1} and v["change_points"][0]["delay_s"] == 50.0
    md = report.to_markdown()
    assert "Labels to 1970-01-01T00:08:00.000Z (event time): 80 joined to the replayed predictions of 100 read, " \
           "15 unmatched (their prediction is not in the range), 2 invalid, 3 outside the range" in md
    assert "| 1970-01-01T00:04:00.000Z | 80 | 0.7692 | 0.55 |" in md
    assert "| 1970-01-01T00:03:00.000Z | 0 |" not in md
    assert "| 1970-01-01T00:04:00.000Z | accuracy | - | - | 0.55 | 0.8 | 1e-07 |" in md


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, ["backtest", *args],
                                env={"DRIFTLINE_KAFKA_BOOTSTRAP": "127.0.0.1:9", **(env or {})})
    return result.exit_code, result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "yesterday", "--to", "1000"], "--from: not an RFC 3339 date-time: 'yesterday'"),
    (["--from", "0", "--to", "2026-01-01T00:00:00"], "--to: RFC 3339 needs"),
    (["--from", "2000", "--to", "1000"], "--to must be after --from"),
    (["--from", "0", "--to", "1000", "--change-point", "soon"], "--change-point: not an RFC 3339"),
])
def test_bad_times_are_usage_errors(tmp_path: Path, args: list[str], message: str):
    config = tmp_path / "c.yaml"
    config.write_text("defaults: {}\n")
    code, output = run_cli("--config", str(config), *args)
    assert code == 2 and message in output


def test_configuration_and_settings_errors_exit_2_before_touching_kafka(tmp_path: Path):
    config = tmp_path / "candidate.yaml"
    config.write_text("defaults:\n  detectors:\n    drift: {alpah: 0.01}\n")
    code, output = run_cli("--config", str(config), "--from", "0", "--to", "1000")
    assert code == 2 and "defaults.detectors.drift.alpah: unknown key (did you mean 'alpha'?)" in output
    code, output = run_cli("--config", str(tmp_path / "missing.yaml"), "--from", "0", "--to", "1000")
    assert code == 2 and "missing.yaml: cannot read" in output
    config.write_text("defaults: {}\n")
    code, output = run_cli("--config", str(config), "--from", "0", "--to", "1000",
                           env={"DRIFTLINE_WINDOW_SECONDS": "0"})
    assert code == 2 and "DRIFTLINE_WINDOW_SECONDS" in output
