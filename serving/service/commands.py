"""The ``driftline serve`` command. Kept light: FastAPI, uvicorn and torch load only when it runs."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from driftline.streams.config.settings import load_settings


def serve(
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: DRIFTLINE_SERVE_PORT, 8000).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    model_id: Annotated[str, typer.Option(help="The model's id in driftline and in the registry.")] = "agrawal-loans",
    instance: Annotated[str | None, typer.Option(
        help="This replica's name in its rollback consumer group (default: the host name). Each replica "
             "needs its own, so that every one of them switches.")] = None,
    rollbacks: Annotated[bool, typer.Option(help="Act on driftline's rollback requests for the model.")] = True,
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "info",
) -> None:
    """Serve the reference model (torch, trained at first start) with every prediction and label monitored.

    Registry: DRIFTLINE_HOME/registry/<model-id>/<version> (weights, sha256, training metadata); versions 1
    and 2 are trained at first start (2 is worse on the south region). POST /predict, /predict/batch,
    /labels, /labels/batch; GET /healthz, /metrics; POST /admin/promote with a bearer token read from the
    variable named by DRIFTLINE_ADMIN_TOKEN_ENV. Rollback requests on <prefix>rollback switch the version.
    """
    import torch
    import uvicorn

    from driftline.serving.service.app import create_app

    settings = load_settings()
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # a tiny MLP per request: more intra-op threads only contend with the event loop
    app = create_app(settings, model_id=model_id, listen_for_rollbacks=rollbacks, instance=instance)
    uvicorn.run(app, host=host, port=port or settings.serve_port, log_level=loglevel.lower(), access_log=False,
                log_config=None)  # None: keep the logging configured above, for uvicorn's lines too
