"""The ``driftline`` command line.

A ``DriftlineError`` from any command ends it with ``error: <message>`` on stderr instead of a traceback:
exit code 2 for a configuration to fix (``ConfigurationError``), 1 for any other failure.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from driftline.errors import ConfigurationError, DriftlineError
from driftline.serving.service.commands import serve
from driftline.streams.actions.commands import alerts_app
from driftline.streams.api import commands as api_commands
from driftline.streams.backtest.command import backtest
from driftline.streams.config.settings import Settings, load_settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import BrokerStatus, LocalBroker
from driftline.streams.kafka.local_cluster import NODES, REPLICATION_FACTOR, ClusterStatus, LocalCluster


class DriftlineCommands(TyperGroup):
    """The root command group: it turns a ``DriftlineError`` from any subcommand into a message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DriftlineError as exc:
            typer.echo(f"error: {exc}", err=True)
            # a setting or configuration file to fix exits like a usage error; the rest failed while running
            raise typer.Exit(2 if isinstance(exc, ConfigurationError) else 1) from None


app = typer.Typer(help="driftline: real-time monitoring for ML models in production.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=DriftlineCommands)
kafka_app = typer.Typer(help="A local Kafka 4 broker, or a three-node cluster (KRaft), for the demo and tests.",
                        no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
topics_app = typer.Typer(help="driftline's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
reference_app = typer.Typer(help="The reference data each model version is compared with.", no_args_is_help=True)
app.add_typer(reference_app, name="reference")
app.add_typer(alerts_app, name="alerts")
app.command("serve")(serve)


class Stage(StrEnum):
    all = "all"
    summarize = "summarize"
    merge = "merge"
    actions = "actions"


def _broker(settings: Settings) -> LocalBroker:
    return LocalBroker(settings.home, settings.kafka_port, settings.kafka_heap)


def _cluster(settings: Settings) -> LocalCluster:
    return LocalCluster(settings.home, settings.kafka_port, settings.kafka_heap)


@kafka_app.command("up")
def kafka_up(
    brokers: Annotated[int, typer.Option(help="1: one broker on DRIFTLINE_KAFKA_PORT; 3: a three-node cluster on "
                                              "that port and the next two (replication factor 3, "
                                              "min.insync.replicas 2).")] = 1,
) -> None:
    """Install (once, with Maven), format and start the broker(s), then create driftline's topics.

    The topics exist before any worker runs, so a serving app or an outside producer started first loses
    nothing (the broker does not create topics on first use).
    """
    if brokers not in (1, NODES):
        raise typer.BadParameter(f"--brokers must be 1 or {NODES}, got {brokers}")
    settings = load_settings()
    if brokers == 1:
        status: BrokerStatus | ClusterStatus = _broker(settings).up()
    else:
        status = _cluster(settings).up()
    typer.echo(status.describe())
    local = settings.model_copy(update={"kafka_bootstrap": status.bootstrap,
                                        "topic_replication_factor": REPLICATION_FACTOR if brokers > 1 else 1})
    _echo_topics(local, topics.ensure_topics(local))


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the broker or cluster this state directory started (by their pids); harmless when none runs."""
    settings = load_settings()
    if LocalCluster.exists(settings.home):
        typer.echo(_cluster(settings).down().describe())
    typer.echo(_broker(settings).down().describe())


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the broker (or each node of the cluster) runs, with its pid, bootstrap address and log file."""
    settings = load_settings()
    if LocalCluster.exists(settings.home):
        typer.echo(_cluster(settings).status().describe())
    typer.echo(_broker(settings).status().describe())


@topics_app.command("create")
def topics_create() -> None:
    """Create driftline's missing topics on DRIFTLINE_KAFKA_BOOTSTRAP (any cluster); existing ones are kept.

    New topics get DRIFTLINE_TOPIC_PARTITIONS partitions and DRIFTLINE_TOPIC_REPLICATION_FACTOR replicas
    (min.insync.replicas one less). Running it again changes nothing.
    """
    settings = load_settings()
    _echo_topics(settings, topics.ensure_topics(settings))


def _echo_topics(settings: Settings, created: list[str]) -> None:
    for name, partitions, replicas in topics.layout(settings, created):
        typer.echo(f"{'created' if name in created else 'exists '} {name}: partitions {partitions}, "
                   f"replication factor {replicas}")


def _settings_help() -> str:
    lines = ["Settings (environment, or the TOML file named by DRIFTLINE_CONFIG):"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default in (None, "", ()) else f" (default: {field.default})"
        lines.append(f"DRIFTLINE_{name.upper()}: {field.description or ''}{default}")
    return "\n\n".join(lines)


@app.command(epilog=_settings_help())
def worker(
    stage: Annotated[Stage, typer.Option(help="summarize: the summarize stage only (scale it out over "
                                              "partitions); merge: the merge stage (owns the ClickHouse "
                                              "writes) and the policy engine; actions: the policy engine "
                                              "only; all: everything.")] = Stage.all,
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

    settings = load_settings()
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(build_worker_app(settings, stage.value), loglevel)


app.command("sql")(api_commands.sql)
app.command("api")(api_commands.api)


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="Leave the worker, the service and the traffic running (until "
                                                    "Ctrl-C) and print their URLs.")] = False,
    window_seconds: Annotated[int, typer.Option(min=2, help="The demo model's window.")] = 10,
    rate: Annotated[float, typer.Option(min=10, help="Predictions per second sent to the service.")] = 100.0,
) -> None:
    """The whole loop: a served torch model goes wrong, driftline pages, rolls it back and sees it recover.

    Starts (or reuses) the local broker, the worker, the reference service and a local PagerDuty-style sink;
    drives traffic; promotes version 2 (worse on one region); waits for the breach, the alert, the rollback,
    version 1 back in service and the alert resolved; then shifts the input and waits for the drift alert and
    the retrain request. Prints the delays; stops everything it started.
    """
    import sys

    from driftline.streams.demo import DemoOptions, run_demo

    options = DemoOptions(window_seconds=window_seconds, rate=rate, keep_running=keep_running)
    if sys.stdout.isatty():
        from driftline.streams.demo.view import LiveView

        with LiveView() as view:
            code = run_demo(load_settings(), options, typer.echo, view.show)
    else:
        code = run_demo(load_settings(), options, typer.echo)
    raise typer.Exit(code)


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
    from driftline.streams.config.model_config import config_source
    from driftline.streams.references import topic as references
    from driftline.streams.references.files import reference_from_file

    settings = load_settings()
    config = config_source(settings)(model, version)
    ref = reference_from_file(file, model, version, _effective_from(effective_from, settings), config.reference,
                              config.features, windows=config)
    topics.ensure_topics(settings)
    references.publish(settings, ref)
    assert ref.summary is not None
    outputs = ref.summary.classifier or ref.summary.regression
    typer.echo(f"reference {ref.reference_id} for {model}/{version}: {ref.summary.n} rows "
               f"({outputs.labeled if outputs is not None else 0} with ground truth), "
               f"{len(ref.profile.numeric_edges)} numeric and {len(ref.profile.categories)} categorical features, "
               f"effective from {ref.effective_from_ms} (content sha256 {ref.content_hash})")


app.command("backtest")(backtest)
