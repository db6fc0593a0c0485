"""The ASGI application: REST control and status, with Socket.IO mounted beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from llamaherd import __version__
from llamaherd.config import Settings
from llamaherd.supervisor.service import LlamaService

logger = logging.getLogger("llamaherd.api")


def create_app(service: LlamaService, settings: Settings) -> ASGIApp:
    background: set[asyncio.Task[object]] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Start in the background: the API answers at once, while llama-server loads.
        task = asyncio.create_task(service.start(), name="llamaherd-initial-start")
        background.add(task)
        task.add_done_callback(background.discard)
        try:
            yield
        finally:
            task.cancel()
            await service.stop()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "name": "llamaherd", "version": __version__})

    return Starlette(routes=[Route("/healthz", healthz)], lifespan=lifespan)
