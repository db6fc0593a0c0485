"""A real uvicorn serving the real app on a free port, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio
import uvicorn

from llamaherd.api.app import Application, create_app
from llamaherd.supervisor.service import LlamaService
from tests.conftest import free_port


@contextlib.asynccontextmanager
async def serve_app(service: LlamaService, *, start_service: bool = True) -> AsyncIterator[str]:
    async with serve_application(create_app(service, start_service=start_service)) as url:
        yield url


@contextlib.asynccontextmanager
async def serve_application(
    application: Application, *, graceful_s: int | None = None
) -> AsyncIterator[str]:
    """uvicorn on a free port; at the end it stops accepting, gives open requests `graceful_s`
    (uvicorn's default: no limit), then runs the app's shutdown (which stops every
    llama-server)."""
    port = free_port()
    config = uvicorn.Config(
        application.asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=graceful_s,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(15):
        while not server.started:  # uvicorn offers no event for this
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        application.hub.close_streams()
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


class EventLog:
    """Socket.IO events a client received, awaitable by predicate."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def add(self, payload: dict[str, Any]) -> None:
        self.events.append(payload)
        self._changed.set()

    @property
    def statuses(self) -> list[str]:
        return [event["data"]["status"] for event in self.events]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def wait_count(self, n: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < n:
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def socketio_client(url: str) -> AsyncIterator[tuple[socketio.AsyncClient, EventLog]]:
    client = socketio.AsyncClient(reconnection=False)
    log = EventLog()
    client.on("llamaStatus", log.add)
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    try:
        yield client, log
    finally:
        await client.disconnect()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
