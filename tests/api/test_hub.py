"""The event hub: one ordered stream, no repeats of an unchanged status, bounded per client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamaherd.api import hub as hub_module
from llamaherd.api.app import create_app
from llamaherd.api.hub import EventHub
from llamaherd.supervisor.service import LlamaService
from tests.conftest import ServiceFactory
from tests.serving import serve_application

pytestmark = pytest.mark.timeout(30)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, name: str, payload: dict[str, Any]) -> None:
        self.events.append((name, payload))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_status_events_in_order_and_not_repeated(fake_binary: Path, model_file: Path) -> None:
    service = LlamaService(model_path=model_file, binary=fake_binary)
    hub = EventHub(service)
    sink = Recorder()
    hub.add_sink(sink)
    hub.start()
    try:
        state = service.get_state()
        hub.publish_status(state)
        hub.publish_status(state)  # the same state again: nothing new to say
        await settle()
    finally:
        await hub.aclose()
    assert [name for name, _ in sink.events] == ["llamaStatus"]


async def test_a_slow_stream_client_loses_its_oldest_events_not_the_newest(
    fake_binary: Path, model_file: Path
) -> None:
    service = LlamaService(model_path=model_file, binary=fake_binary)
    hub = EventHub(service)
    hub.start()
    queue = hub.subscribe()
    try:
        for n in range(hub_module.SUBSCRIBER_QUEUE + 20):
            hub.publish("llamaLog", {"n": n})
        await settle()
        await asyncio.sleep(0.05)
    finally:
        await hub.aclose()
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    assert items[-1] is None  # closing the hub ends the stream
    numbers = [item[1]["n"] for item in items[:-1] if item is not None]
    assert numbers[-1] == hub_module.SUBSCRIBER_QUEUE + 19
    assert len(numbers) < hub_module.SUBSCRIBER_QUEUE + 20


async def test_a_disconnected_sse_client_is_forgotten(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    application = create_app(service, start_service=False)
    async with serve_application(application) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("GET", "/api/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    break
            assert application.hub.subscriber_count == 1
        async with asyncio.timeout(5):
            while application.hub.subscriber_count:
                await asyncio.sleep(0.05)
