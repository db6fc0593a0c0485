"""Socket.IO and REST in front of the real llama-server and the demo model."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import serve_app, socketio_client
from tests.api.test_socketio import assert_contract
from tests.conftest import ServiceFactory

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(90)]


async def test_kill_9_reaches_clients_as_crashed_starting_ready(
    make_service: ServiceFactory, real_binary: Path, demo_model: Path
) -> None:
    service = make_service(binary=real_binary, model_path=demo_model)
    async with serve_app(service) as url:
        await service.wait_settled(30)
        async with socketio_client(url) as (_, log), httpx.AsyncClient(base_url=url) as http:
            hello = await log.wait_for(lambda e: e["data"]["status"] == "ready")
            assert hello["data"]["models"][0]["type"] == "llama"
            assert hello["data"]["models"][0]["size"] == demo_model.stat().st_size
            pid = hello["data"]["pid"]

            os.kill(pid, signal.SIGKILL)
            await log.wait_for(lambda e: e["data"]["status"] == "ready" and e["data"]["pid"] != pid)

            after_kill = log.statuses[1:]
            assert after_kill == ["crashed", "starting", "ready"]
            assert log.events[-1]["data"]["retries"] == 1
            status = (await http.get("/api/status")).json()
            assert status["status"] == "ready" and status["retries"] == 1
            logs = (await http.get("/api/llama/logs", params={"lines": 50})).json()["lines"]
            assert any("listening on http://127.0.0.1" in line for line in logs)
        for event in log.events:
            assert_contract(event)
