"""The API's tests: the app of one LlamaService served on a free port (tests/serving.py), and a
Socket.IO client that records what it hears. `launch` (a whole llamaherd from a config) is
re-exported from the gateway's fixtures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio

from llamaherd.api.app import create_app
from llamaherd.supervisor.service import LlamaService
from tests.gateway.conftest import launch  # noqa: F401 (the whole-llamaherd fixture, for test_access)
from tests.serving import serve_application


@contextlib.asynccontextmanager
async def serve_app(service: LlamaService, *, start_service: bool = True) -> AsyncIterator[str]:
    async with serve_application(create_app(service, start_service=start_service)) as url:
        yield url


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
