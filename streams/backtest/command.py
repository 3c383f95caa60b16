"""The ``driftline backtest`` command. Kept apart from `streams.backtest` so the CLI starts without loading it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from driftline.streams.config.settings import load_settings


def parse_time(option: str, value: str) -> int:
    """Epoch milliseconds from an RFC 3339 time or an integer of epoch milliseconds."""
    from driftline.streams.pipeline.decode import InvalidRecord, parse_ts

    text = value.strip()
    try:
        return parse_ts(int(text) if text.isdigit() else text)
    except InvalidRecord as exc:
        raise typer.BadParameter(f"{option}: {str(exc).removeprefix('ts: ')}") from None


def backtest(
    config: Annotated[Path, typer.Option(help="Candidate monitoring configuration (.yaml, .yml or .toml).")],
    from_: Annotated[str, typer.Option("--from", help="Start of the range (event time): RFC 3339 or epoch ms.")],
    to: Annotated[str, typer.Option(help="End of the range, exclusive: RFC 3339 or epoch ms.")],
    change_point: Annotated[list[str] | None, typer.Option(
        help="A known change (RFC 3339 or epoch ms); repeat for several. Scores detection delays and misses.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model_id.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of Markdown.")] = False,
) -> None:
    """Replay a retained range through a candidate configuration: what would it have raised?

    Reads the predictions topic between --from and --to (event time), and their labels up to --to + the
    maximum label delay, with an isolated consumer (no group membership, no commits), runs the candidate's
    detectors (label-based ones included) exactly as the live pipeline would, and prints every breach, the
    false alarms, and the detection delay of each --change-point. Emits no alert and writes nothing to
    Kafka or ClickHouse.
    """
    start_ms, end_ms = parse_time("--from", from_), parse_time("--to", to)
    if end_ms <= start_ms:
        raise typer.BadParameter("--to must be after --from")
    change_points = [parse_time("--change-point", c) for c in change_point or []]
    settings = load_settings()  # a SettingsError, ConfigError or BacktestError: the CLI's root group reports it
    from driftline.streams.backtest.replay import run_backtest

    report = run_backtest(settings, config, start_ms, end_ms, change_points, model)
    if report.records_replayed == 0:
        which = f" of model {model}" if model else ""
        typer.echo(f"error: no prediction{which} with an event time in [{from_}, {to}) on "
                   f"{settings.topic('predictions')} ({report.records_read} records read): nothing to backtest",
                   err=True)
        raise typer.Exit(1)
    typer.echo(report.to_json() if json else report.to_markdown(), nl=False)
