"""REST control and status over a real uvicorn, with the fake llama-server behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import serve_app
from tests.conftest import RecordingSleep, ServiceFactory, StateRecorder

pytestmark = pytest.mark.timeout(60)

STATUS_KEYS = {"status", "models", "lastError", "retries", "uptime", "startedAt"}


async def test_status_models_logs_and_health(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url, httpx.AsyncClient(base_url=url) as http:
        await service.wait_settled(20)
        health = (await http.get("/healthz")).json()
        status = (await http.get("/api/status")).json()
        models = (await http.get("/api/models")).json()
        logs = (await http.get("/api/llama/logs", params={"lines": 3})).json()

    assert health["status"] == "ok" and health["name"] == "llamaherd"
    assert set(status) >= STATUS_KEYS
    assert status["status"] == "ready"
    assert isinstance(status["uptime"], int)
    assert status["startedAt"].endswith("Z")
    assert models == {"models": status["models"]}
    assert models["models"][0]["id"] == "fake-model.gguf"
    assert set(models["models"][0]) == {"id", "name", "size", "type", "modified_at"}
    assert 1 <= len(logs["lines"]) <= 3


async def test_stop_start_restart(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        await service.wait_settled(20)
        first_pid = service.get_state().pid

        stopped = await http.post("/api/llama/stop")
        assert stopped.status_code == 200
        assert stopped.json()["status"]["status"] == "initial"

        started = await http.post("/api/llama/start", params={"wait": 20})
        assert started.json()["status"]["status"] == "ready"

        restarted = await http.post("/api/llama/restart", params={"wait": 20})
        body = restarted.json()["status"]
        assert body["status"] == "ready"
        assert body["pid"] not in (None, first_pid)


async def test_restart_leaves_error(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, tmp_path: Path
) -> None:
    counter = tmp_path / "launches"
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-fail-first", "6", "--fake-state-file", str(counter)],
        sleep=RecordingSleep(),
    )
    async with serve_app(service) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        await service.wait_settled(30)
        assert (await http.get("/api/status")).json()["status"] == "error"
        answer = await http.post("/api/llama/restart", params={"wait": 20})
        assert answer.json()["status"]["status"] == "ready"
        assert answer.json()["status"]["retries"] == 0


async def test_a_restart_during_a_stop_waits_its_turn_and_wins(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    """Start, stop and restart are requests to the scheduler, carried out in order: a restart
    asked while a stop runs is neither refused nor interleaved with it."""
    service = make_service(
        binary=fake_binary, model_path=model_file, server_args=["--fake-slow-sigterm-s", "1"]
    )
    recorder = StateRecorder(service)
    async with serve_app(service) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        await service.wait_settled(20)
        stop = asyncio.create_task(http.post("/api/llama/stop"))
        await recorder.wait_status(service.get_state().status.STOPPING)
        restart = await http.post("/api/llama/restart", params={"wait": 20})
        assert (await stop).status_code == 200
        assert restart.status_code == 200
        assert restart.json()["status"]["status"] == "ready"
    statuses = [s.value for s in recorder.statuses]
    assert statuses[statuses.index("stopping") :][:2] == ["stopping", "initial"]


async def test_errors_are_json_without_traces(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with (
        serve_app(service, start_service=False) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        missing = await http.get("/api/nope")
        bad = await http.get("/api/llama/logs", params={"lines": "many"})
        wrong_method = await http.get("/api/llama/stop")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    assert bad.status_code == 422
    assert "lines" in bad.json()["error"]["message"]
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.status_code == 405
    for answer in (missing, bad, wrong_method):
        assert "Traceback" not in answer.text


async def test_openapi_documents_every_endpoint(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with (
        serve_app(service, start_service=False) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        schema = (await http.get("/openapi.json")).json()
    assert set(schema["paths"]) >= {
        "/healthz",
        "/api/status",
        "/api/models",
        "/api/llama/logs",
        "/api/llama/start",
        "/api/llama/stop",
        "/api/llama/restart",
        "/api/events",
    }


async def test_server_sent_events(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        await service.wait_settled(20)
        seen: list[str] = []
        async with http.stream("GET", "/api/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            restart = None
            async for line in stream.aiter_lines():
                if line.startswith("data: ") and '"llama_status"' in line:
                    status = line.split('"status":"', 1)[1].split('"', 1)[0]
                    seen.append(status)
                    if restart is None:
                        restart = asyncio.create_task(http.post("/api/llama/restart"))
                    elif status == "ready":
                        break
            assert restart is not None
            await restart
    assert seen[0] == "ready"
    assert seen[1:] == ["stopping", "initial", "checking", "starting", "ready"]
