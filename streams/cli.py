"""The ``driftline`` command line."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from driftline.streams.backtest.command import backtest
from driftline.streams.config.settings import Settings, SettingsError, load_settings
from driftline.streams.kafka.local_broker import BrokerError, LocalBroker

app = typer.Typer(help="driftline: real-time monitoring for ML models in production.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
kafka_app = typer.Typer(help="A local single-node Kafka 4 broker (KRaft) for the demo and tests.",
                        no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
reference_app = typer.Typer(help="The reference data each model version is compared with.", no_args_is_help=True)
app.add_typer(reference_app, name="reference")


class Stage(StrEnum):
    all = "all"
    summarize = "summarize"
    merge = "merge"


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _broker(settings: Settings) -> LocalBroker:
    return LocalBroker(settings.home, settings.kafka_port, settings.kafka_heap)


@kafka_app.command("up")
def kafka_up() -> None:
    """Install (once, with Maven), format and start the broker; return when it answers metadata requests."""
    try:
        typer.echo(_broker(_settings()).up().describe())
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the broker this state directory started (by its pid); harmless when none runs."""
    typer.echo(_broker(_settings()).down().describe())


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the broker runs, with its pid, bootstrap address and log file."""
    typer.echo(_broker(_settings()).status().describe())


def _settings_help() -> str:
    lines = ["Settings (environment, or the TOML file named by DRIFTLINE_CONFIG):"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default in (None, "") else f" (default: {field.default})"
        lines.append(f"DRIFTLINE_{name.upper()}: {field.description or ''}{default}")
    return "\n\n".join(lines)


@app.command(epilog=_settings_help())
def worker(
    stage: Annotated[Stage, typer.Option(help="summarize: the summarize stage only (scale it out over "
                                              "partitions); merge: the merge stage only (owns the ClickHouse "
                                              "writes); all: both.")] = Stage.all,
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "info",
) -> None:
    """Run the stream processor until SIGTERM/SIGINT (then it flushes, commits and exits 0).

    The summarize stage validates predictions, dead-letters bad ones, windows them by event time per
    partition (each model with its configured window size and lateness), joins delayed labels and emits
    mergeable summaries; the merge stage closes a model window once the slowest partition's event time
    passed its end plus its lateness, runs the detectors and writes driftline.windows.
    """
    from driftline.streams.app import run_worker
    from driftline.streams.worker import build_worker_app

    settings = _settings()
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(build_worker_app(settings, stage.value), loglevel)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="ClickHouse SQL, e.g. \"SELECT * FROM driftline.windows\"")]) -> None:
    """Run ClickHouse SQL against the configured store and print the rows (tab-separated, with a header)."""
    from driftline.streams import store

    settings = _settings()
    try:
        client = store.connect(settings.clickhouse_url)
        store.migrate(client)
        columns, rows = store.query(client, query)
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    sys.stdout.write("\t".join(columns) + "\n")
    for row in rows:
        sys.stdout.write("\t".join("" if v is None else str(v) for v in row) + "\n")


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Synthetic predictions to produce.")] = 50_000,
) -> None:
    """Start the local broker and a worker, produce synthetic predictions, print the windows they make."""
    from driftline.streams.demo import run_demo

    raise typer.Exit(run_demo(_settings(), events, typer.echo))


def _effective_from(value: str, settings: Settings) -> int:
    from driftline.streams.pipeline.decode import InvalidRecord, parse_ts

    size_ms = settings.window_seconds * 1000
    if value == "next":
        import time

        soon = int(time.time() * 1000) + int(settings.allowed_lateness_seconds * 1000) + size_ms
        return soon - soon % size_ms + size_ms
    try:
        return parse_ts(int(value) if value.isdigit() else value)
    except InvalidRecord as exc:
        raise typer.BadParameter(f"--effective-from: {exc}") from None


@reference_app.command("set")
def reference_set(
    model: Annotated[str, typer.Option(help="model_id")],
    file: Annotated[Path, typer.Option(help=".jsonl of prediction events (optionally with a ground-truth 'label' "
                                            "field), or .csv/.parquet with one column per feature, optional "
                                            "prediction_score/label/value columns, a ground-truth 'label' column "
                                            "and segment.<name> columns")],
    version: Annotated[str, typer.Option(help="model_version")] = "1",
    effective_from: Annotated[str, typer.Option(help="'next' (the first window that opens after the lateness "
                                                     "allowance), an RFC 3339 time, or epoch milliseconds")] = "next",
) -> None:
    """Compute the reference profile and summary from FILE and publish them to every worker."""
    from driftline.streams.kafka import topics
    from driftline.streams.references import topic as references
    from driftline.streams.references.files import ReferenceFileError, reference_from_file
    from driftline.streams.worker import config_source

    settings = _settings()
    config = config_source(settings)(model, version)
    try:
        ref = reference_from_file(file, model, version, _effective_from(effective_from, settings), config.reference,
                                  config.features, windows=config)
    except ReferenceFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    topics.ensure_topics(settings)
    references.publish(settings, ref)
    assert ref.summary is not None
    outputs = ref.summary.classifier or ref.summary.regression
    typer.echo(f"reference {ref.reference_id} for {model}/{version}: {ref.summary.n} rows "
               f"({outputs.labeled if outputs is not None else 0} with ground truth), "
               f"{len(ref.profile.numeric_edges)} numeric and {len(ref.profile.categories)} categorical features, "
               f"effective from {ref.effective_from_ms} (content sha256 {ref.content_hash})")


app.command("backtest")(backtest)
