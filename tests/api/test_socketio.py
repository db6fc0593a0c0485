"""The llamaStatus contract over Socket.IO, with python-socketio's AsyncClient."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import serve_app, socketio_client
from tests.conftest import RecordingSleep, ServiceFactory

pytestmark = pytest.mark.timeout(60)

STATUSES = {"initial", "checking", "starting", "ready", "crashed", "stopping", "error"}


def assert_contract(event: dict[str, Any]) -> None:
    """Keys and types exactly as the wire contract gives them."""
    assert set(event) == {"type", "data", "timestamp"}
    assert event["type"] == "llama_status"
    assert isinstance(event["timestamp"], int) and event["timestamp"] > 1_600_000_000_000
    data = event["data"]
    assert {"status", "models", "lastError", "retries", "uptime", "startedAt"} <= set(data)
    assert data["status"] in STATUSES
    assert data["lastError"] is None or isinstance(data["lastError"], str)
    assert isinstance(data["retries"], int)
    assert isinstance(data["uptime"], int)
    if data["startedAt"] is not None:
        datetime.fromisoformat(data["startedAt"].replace("Z", "+00:00"))
    for model in data["models"]:
        assert set(model) == {"id", "name", "size", "type", "modified_at"}
        assert isinstance(model["id"], str) and isinstance(model["name"], str)
        assert isinstance(model["size"], int) and isinstance(model["modified_at"], int)
        assert isinstance(model["type"], str)


async def test_status_on_connect_and_on_request(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        async with socketio_client(url) as (client, log):
            await log.wait_count(1)
            assert_contract(log.events[0])
            assert log.events[0]["data"]["status"] == "ready"
            await client.emit("requestLlamaStatus")
            await log.wait_count(2)
            assert_contract(log.events[1])
            assert log.events[1]["data"]["status"] == "ready"
            await asyncio.sleep(0.5)
            assert len(log.events) == 2, "nothing may be broadcast while nothing changes"


async def test_every_client_sees_the_crash_and_recovery(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-crash-after-s", "0.5"],
        sleep=RecordingSleep(real_s=60),  # stays crashed until the test restarts it
    )
    async with serve_app(service) as url:
        await service.wait_settled(20)
        async with socketio_client(url) as (_, first), socketio_client(url) as (_, second):
            for log in (first, second):
                crashed = await log.wait_for(lambda e: e["data"]["status"] == "crashed")
                assert_contract(crashed)
                assert crashed["data"]["retries"] == 1
                assert "GGML_ASSERT" in crashed["data"]["lastError"]
            assert first.statuses == second.statuses


async def test_crash_loop_shows_every_retry_then_error_then_restart(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, tmp_path: Path
) -> None:
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-fail-first", "6", "--fake-state-file", str(tmp_path / "n")],
        sleep=RecordingSleep(real_s=0.05),
    )
    async with serve_app(service, start_service=False) as url:
        async with socketio_client(url) as (_, log), httpx.AsyncClient(base_url=url) as http:
            await log.wait_count(1)
            await http.post("/api/llama/start")
            error = await log.wait_for(lambda e: e["data"]["status"] == "error")
            retries = [e["data"]["retries"] for e in log.events if e["data"]["status"] == "crashed"]
            assert retries == [1, 2, 3, 4, 5]
            assert error["data"]["retries"] == 5
            assert "Gave up after 5 retries" in error["data"]["lastError"]

            await http.post("/api/llama/restart")
            ready = await log.wait_for(lambda e: e["data"]["status"] == "ready")
            assert ready["data"]["retries"] == 0
        for event in log.events:
            assert_contract(event)


async def test_logs_go_only_to_clients_that_subscribe(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        async with socketio_client(url) as (reader, _), socketio_client(url) as (other, _):
            heard: dict[str, list[str]] = {"reader": [], "other": []}
            reader.on("llamaLog", lambda event: heard["reader"].extend(event["data"]["lines"]))
            other.on("llamaLog", lambda event: heard["other"].extend(event["data"]["lines"]))
            await reader.emit("subscribeLlamaLogs")
            await reader.emit("requestLlamaStatus")  # answered after the subscription
            await asyncio.sleep(0.2)

            await service.restart()
            async with asyncio.timeout(10):
                while not any("listening" in line for line in heard["reader"]):
                    await asyncio.sleep(0.05)

            await reader.emit("unsubscribeLlamaLogs")
            await asyncio.sleep(0.2)
            count = len(heard["reader"])
            await service.restart()
            await asyncio.sleep(0.5)

    assert heard["other"] == []
    assert len(heard["reader"]) == count, "no lines after unsubscribing"
