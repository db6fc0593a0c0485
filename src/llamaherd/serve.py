"""`llamaherd serve`: the supervisor and the API in one process, run by uvicorn.

uvicorn owns the signals: on Ctrl-C or SIGTERM it stops accepting, lets connections finish,
then runs the app's shutdown, which stops llama-server gracefully (SIGTERM, then SIGKILL).
A second Ctrl-C forces the exit.
"""

from __future__ import annotations

import logging

import uvicorn

from llamaherd.api.app import create_app
from llamaherd.config import Settings
from llamaherd.supervisor.service import LlamaService

logger = logging.getLogger("llamaherd")


def run_serve(settings: Settings) -> int:
    service = LlamaService.from_config(settings)
    app = create_app(service, settings)
    config = uvicorn.Config(
        app,
        host=settings.app_host,
        port=settings.app_port,
        log_level="info",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    logger.info(
        "llamaherd listening on http://%s:%d (llama-server on %s)",
        settings.app_host,
        settings.app_port,
        service.base_url,
    )
    server.run()
    return 0 if server.started else 1
