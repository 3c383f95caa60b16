"""``driftline alerts``: run the alert dispatcher, silence and unsilence alerts, list silences and incidents."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from typing import Annotated

import typer

from driftline.streams.actions import silences
from driftline.streams.config.settings import load_settings
from driftline.streams.kafka import topics

alerts_app = typer.Typer(help="Alert delivery (PagerDuty Events v2, signed webhooks) and silences.",
                         no_args_is_help=True)


@alerts_app.command("dispatch")
def dispatch(
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "info",
) -> None:
    """Deliver alerts to the configured routes (DRIFTLINE_ALERT_ROUTES) until SIGTERM/SIGINT.

    Each notifying transition on <prefix>alerts goes to every route that takes its model and severity; one
    outcome per route (delivered, failed, silenced) is published on <prefix>alert-deliveries before the
    alert is committed. On SIGTERM a delivery waiting to retry is abandoned uncommitted and re-sent on the
    next start (receivers drop it by dedup key / event id).
    """
    from prometheus_client import start_http_server

    from driftline.streams.actions.dispatch.dispatcher import Dispatcher

    settings = load_settings()
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    halt = threading.Event()
    dispatcher = Dispatcher(settings, halt)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: halt.set())
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_addr)
    dispatcher.run()


@alerts_app.command("silence")
def silence(
    model: Annotated[str, typer.Option(help="model_id, or a glob such as 'fraud-*'")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d, 1h30m (at most 365d).")],
    reason: Annotated[str, typer.Option(help="Why, shown by `driftline alerts list`.")],
    policy: Annotated[str | None, typer.Option(help="Mute this policy only (default: every policy).")] = None,
) -> None:
    """Mute the model's alerts from now for --for; prints the silence id (for `unsilence`)."""
    try:
        length = silences.parse_duration(duration)
    except silences.BadDuration as exc:
        raise typer.BadParameter(str(exc), param_hint="--for") from None
    settings = load_settings()
    made = silences.new_silence(model, policy, length, reason)
    topics.ensure_topics(settings)
    silences.publish(settings, made)
    typer.echo(made.id)


@alerts_app.command("unsilence")
def unsilence(silence_id: Annotated[str, typer.Argument(metavar="ID", help="The id `silence` printed.")]) -> None:
    """End a silence now."""
    settings = load_settings()
    topics.ensure_topics(settings)
    follower = silences.SilenceFollower(settings)
    try:
        follower.catch_up()
        known = silence_id in follower.silences
    finally:
        follower.close()
    if not known:
        raise silences.UnknownSilence(f"no silence has the id {silence_id!r} (see `driftline alerts list`)")
    silences.delete(settings, silence_id)
    typer.echo(f"silence {silence_id} removed")


@alerts_app.command("list")
def list_() -> None:
    """Print the silences in force and the open incidents."""
    from driftline.streams.actions.state_log import open_incidents

    settings = load_settings()
    topics.ensure_topics(settings)
    follower = silences.SilenceFollower(settings)
    try:
        follower.catch_up()
        active = follower.active(datetime.now(UTC))
    finally:
        follower.close()
    typer.echo(f"silences ({len(active)}):")
    for s in active:
        typer.echo(f"  {s.id}  model={s.model} policy={s.policy or '*'}  until {s.ends_at.isoformat()}  "
                   f"by {s.created_by}: {s.reason}")
    incidents = open_incidents(settings)
    typer.echo(f"open incidents ({len(incidents)}):")
    for t in incidents:
        since = datetime.fromtimestamp(t.decided_at_ms / 1000, UTC).isoformat()
        typer.echo(f"  {t.incident_id}  {t.model_id}/{t.model_version} {t.policy} {t.severity} "
                   f"({t.transition} #{t.sequence} at {since}): {t.summary}")
