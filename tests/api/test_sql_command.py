"""``driftline sql`` without a worker: read-only by default, --write for DML/DDL, the four output formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftline.streams.api.commands import Format, render
from driftline.streams.cli import app


def test_formats() -> None:
    columns, rows = ["m", "v"], [["a|b", 1.5], [None, ["x", 2]]]
    assert render(columns, rows, Format.table) == 'm\tv\na|b\t1.5\n\t["x",2]\n'
    assert render(columns, rows, Format.csv) == 'm,v\na|b,1.5\n,"[""x"",2]"\n'
    assert json.loads(render(columns, rows, Format.json)) == [{"m": "a|b", "v": 1.5}, {"m": None, "v": ["x", 2]}]
    assert render(columns, rows, Format.markdown).splitlines() == ["| m | v |", "| --- | --- |", "| a\\|b | 1.5 |",
                                                                   '|  | ["x",2] |']


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_dir: Path) -> Path:
    # the API tests' store: one chDB path per process (chDB cannot open a second one while a client is open)
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", f"chdb://{store_dir / 'clickhouse'}")
    return tmp_path


def test_read_only_unless_write(home: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["sql", "SELECT count() AS n FROM driftline.windows WHERE model_id = 'churn'",
                                "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == [{"n": 27}]
    dropped = runner.invoke(app, ["sql", "DROP TABLE driftline.windows"])
    assert dropped.exit_code == 1 and "readonly" in dropped.stderr.lower()
    assert runner.invoke(app, ["sql", "SELECT 1; SELECT 2"]).exit_code == 1
    created = runner.invoke(app, ["sql", "CREATE TABLE IF NOT EXISTS default.cli_notes (x UInt8) ENGINE = Memory",
                                  "--write"])
    assert created.exit_code == 0, created.output
    assert runner.invoke(app, ["sql", "EXISTS TABLE default.cli_notes"]).stdout.splitlines() == ["result", "1"]
