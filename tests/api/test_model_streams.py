"""Every model's output and state as events (api/model_streams.py): batched lines that name
their model, a follow whose tail and batches neither overlap nor leave a gap, and streams that
end when the hub closes them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llamaherd.api import model_streams as streams_module
from llamaherd.api.app import create_app
from llamaherd.api.hub import EventHub
from llamaherd.api.model_streams import ModelStreams
from llamaherd.gateway.herd import herd_of_one
from llamaherd.supervisor.service import LlamaService

pytestmark = pytest.mark.timeout(30)


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        self.events.append((name, payload))


async def test_lines_are_batched_per_model_and_a_flood_is_cut(
    fake_binary: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams_module, "LOG_BATCH_S", 0.05)
    service = LlamaService(model_path=model_file, binary=fake_binary)
    herd = herd_of_one(service)
    published = Published()
    streams = ModelStreams(herd, published)
    streams.start()
    try:
        for n in range(streams_module.LOG_BATCH_MAX_LINES + 10):
            service.output.append(f"line {n}")
        await asyncio.sleep(0.2)
    finally:
        streams.close()
    ((name, payload),) = published.events
    lines = payload["data"]["lines"]
    assert name == "llamaLog"
    assert payload["data"]["model"] == herd.primary.spec.id
    assert lines[0] == "[llamaherd: 10 lines skipped]"
    assert lines[-1] == f"line {streams_module.LOG_BATCH_MAX_LINES + 9}"
    assert len(lines) == streams_module.LOG_BATCH_MAX_LINES + 1


async def test_a_follow_gets_each_line_once_even_while_a_batch_is_pending(
    fake_binary: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lines not yet sent when a follow begins are in the ring already: they belong to
    the first batch, not to the tail as well."""
    monkeypatch.setattr(streams_module, "LOG_BATCH_S", 0.05)
    service = LlamaService(model_path=model_file, binary=fake_binary)
    herd = herd_of_one(service)
    model = herd.primary.spec.id
    streams = ModelStreams(herd, Published())
    streams.start()
    try:
        service.output.append("old 1")
        service.output.append("old 2")
        await asyncio.sleep(0.15)  # sent
        service.output.append("new 1")  # waiting for its batch
        tail, queue = streams.follow(model, 10)
        service.output.append("new 2")
        async with asyncio.timeout(5):
            batch = await queue.get()
        only_new, _ = streams.follow(model, 0)
    finally:
        streams.close()
    assert tail == ["old 1", "old 2"]
    assert batch == ["new 1", "new 2"]
    assert only_new == []
    assert queue.get_nowait() is None, "closing the streams ends every follow"


async def test_closing_the_hubs_streams_ends_every_follow(
    fake_binary: Path, model_file: Path
) -> None:
    service = LlamaService(model_path=model_file, binary=fake_binary)
    herd = herd_of_one(service)
    hub = EventHub(service)
    streams = ModelStreams(herd, hub.publish)
    hub.on_close_streams(streams.end_follows)
    streams.start()
    try:
        _, queue = streams.follow(herd.primary.spec.id, 5)
        hub.close_streams()
        assert queue.get_nowait() is None
    finally:
        streams.close()
        await hub.aclose()


async def test_an_unknown_model_cannot_be_followed(fake_binary: Path, model_file: Path) -> None:
    service = LlamaService(model_path=model_file, binary=fake_binary)
    streams = ModelStreams(herd_of_one(service), Published())
    streams.start()
    try:
        with pytest.raises(KeyError):
            streams.follow("nope", 5)
    finally:
        streams.close()


def test_every_models_routes_are_documented(fake_binary: Path, model_file: Path) -> None:
    """The schema lists each model's routes with what they answer: 404 for an unknown model,
    409 where a start cannot fit the budget, and the logs' event stream beside the JSON."""
    service = LlamaService(model_path=model_file, binary=fake_binary)
    schema = create_app(service, start_service=False).api.openapi()
    paths = schema["paths"]
    for action, refusals in (
        ("start", {"404", "409"}),
        ("restart", {"404", "409"}),
        ("stop", {"404"}),
    ):
        operation = paths[f"/api/models/{{model}}/{action}"]["post"]
        assert refusals <= set(operation["responses"]), action
        assert [p["name"] for p in operation["parameters"]][:2] == ["model", "wait"]
    logs = paths["/api/models/{model}/logs"]["get"]
    assert {"application/json", "text/event-stream"} <= set(logs["responses"]["200"]["content"])
    assert {p["name"] for p in logs["parameters"]} >= {"model", "lines", "follow"}
    status = paths["/api/models/{model}/status"]["get"]["responses"]["200"]["content"]
    ref = status["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "model" in schema["components"]["schemas"][ref]["properties"]
