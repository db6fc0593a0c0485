"""Every model, not just the primary, against the real llama-server: its status, logs (the tail
and the follow), start, stop and restart over REST, and its lines and status over Socket.IO.

`alpha` is the primary (the default); `beta` (alias `b`) is the second model, whose controls
and output existed only for the primary before."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import Status
from tests.conftest import free_port
from tests.gateway.conftest import DemoModels, Gateway, Launch, gateway_config
from tests.serving import ServedLlamaherd, write_config
from tests.waiting import until

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(120)]

WAIT = {"wait": 30}


async def two_models(launch: Launch, binary: Path, demo: DemoModels, **keys: Any) -> Gateway:
    models = {
        "alpha": {"path": str(demo.alpha)},
        "beta": {"path": str(demo.beta), "aliases": ["b"]},
    }
    config = gateway_config(binary, models, default_model="alpha", max_loaded=2, **keys)
    return await launch(config)


async def complete(client: httpx.AsyncClient, model: str) -> httpx.Response:
    return await client.post("/completion", json={"model": model, "prompt": "Hi", "n_predict": 2})


async def quiet(service: LlamaService, still_s: float = 0.3) -> None:
    """Until `service`'s server has written nothing for `still_s` (longer than a batch)."""
    async with asyncio.timeout(20):
        while True:
            count = service.output.appended
            await asyncio.sleep(still_s)
            if service.output.appended == count:
                return


async def sse_events(answer: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    name, data = "message", ""
    async for line in answer.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


async def test_a_second_models_logs_status_and_restart(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    gw = await two_models(launch, real_binary, demo_models)
    old_pid = await gw.loaded("beta")
    async with gw.http() as client:
        logs = await client.get("/api/models/b/logs", params={"lines": 400})
        assert logs.status_code == 200, logs.text
        body = logs.json()
        assert body["model"] == "beta"
        assert body["lines"] == gw.herd.backends["beta"].service.output.tail(400)
        assert any(str(demo_models.beta) in line for line in body["lines"])
        assert not any(str(demo_models.alpha) in line for line in body["lines"])

        status = (await client.get("/api/models/beta/status")).json()
        assert (status["model"], status["status"], status["pid"]) == ("beta", "ready", old_pid)

        restarted = await client.post("/api/models/b/restart", params=WAIT)
        assert restarted.status_code == 200, restarted.text
        after = restarted.json()["status"]
        assert (after["model"], after["status"]) == ("beta", "ready")
        assert after["pid"] not in (None, old_pid)
        assert gw.starts["beta"] == 2 and gw.starts["alpha"] == 0, "only beta was restarted"
        assert (await complete(client, "beta")).status_code == 200

        for path in ("/api/models/nope/restart", "/api/models/nope/stop"):
            missing = await client.post(path)
            assert missing.status_code == 404
            assert missing.json()["error"]["message"].endswith("Available models: alpha, beta")
        assert (await client.get("/api/models/nope/logs")).status_code == 404


async def test_a_second_model_stops_refuses_requests_and_starts_again(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    gw = await two_models(launch, real_binary, demo_models)
    await gw.loaded("alpha")
    await gw.loaded("beta")
    async with gw.http() as client:
        stopped = await client.post("/api/models/beta/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"]["status"] == "initial"
        assert gw.view("beta").phase is Phase.UNLOADED
        assert gw.state("alpha").status is Status.READY, "the primary was left alone"
        refused = await complete(client, "beta")
        assert refused.status_code == 503
        assert "model 'beta' is stopped" in refused.json()["error"]["message"]

        started = await client.post("/api/models/beta/start", params=WAIT)
        assert started.json()["status"]["status"] == "ready"
        assert (await complete(client, "beta")).status_code == 200

        # The seed's routes still speak of the primary only.
        primary = (await client.get("/api/status")).json()
        assert primary["pid"] == gw.pid("alpha")


async def test_start_and_restart_of_a_model_too_big_are_409(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    gw = await two_models(launch, real_binary, demo_models, memory_budget_mb=0.01)
    async with gw.http() as client:
        for action in ("start", "restart"):
            answer = await client.post(f"/api/models/beta/{action}")
            assert answer.status_code == 409, answer.text
            assert "memory budget" in answer.json()["error"]["message"]
    assert gw.starts["beta"] == 0


async def test_follow_sends_the_tail_then_new_lines_and_the_seeds_stream_keeps_to_the_primary(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    gw = await two_models(launch, real_binary, demo_models)
    await gw.loaded("beta")
    beta = gw.herd.backends["beta"].service
    await quiet(beta)  # its first start's lines are all sent: what comes next is the restart's
    timeout = httpx.Timeout(30, read=60)
    async with (
        gw.http() as client,
        client.stream("GET", "/api/events", timeout=timeout) as seeds,
        client.stream(
            "GET", "/api/models/b/logs", params={"follow": "true", "lines": 3}, timeout=timeout
        ) as followed,
    ):
        assert followed.headers["content-type"].startswith("text/event-stream")
        events = sse_events(followed)
        name, first = await anext(events)
        assert (name, first["data"]["model"]) == ("llamaLog", "beta")
        tail = first["data"]["lines"]
        assert tail == beta.output.tail(3)

        restart = await client.post("/api/models/beta/restart", params=WAIT)
        assert restart.json()["status"]["status"] == "ready"
        new: list[str] = []
        async with asyncio.timeout(30):
            async for name, payload in events:
                assert (name, payload["data"]["model"]) == ("llamaLog", "beta")
                new += payload["data"]["lines"]
                if any("listening on" in line for line in new):
                    break
        assert any(str(demo_models.beta) in line for line in new), "the new server's start"
        # The tail and the batches are one stretch of the output: no line twice, none missed.
        ring, seen_lines = beta.output.tail(1000), tail + new
        starts = [i for i, line in enumerate(ring) if line == seen_lines[0]]
        assert any(ring[i : i + len(seen_lines)] == seen_lines for i in starts), seen_lines

        # /api/events saw beta's state change, but none of its lines (alpha is not running).
        seen: list[tuple[str, dict[str, Any]]] = []
        async with asyncio.timeout(30):
            async for name, payload in sse_events(seeds):
                seen.append((name, payload))
                if name == "llamaModelStatus" and payload["data"]["status"] == "ready":
                    break
    assert [p["data"]["model"] for n, p in seen if n == "llamaModelStatus"][-1] == "beta"
    assert not [p for n, p in seen if n == "llamaLog"], "another model's lines on /api/events"


@contextlib.asynccontextmanager
async def socket(url: str) -> AsyncIterator[tuple[socketio.AsyncClient, list[Any]]]:
    """A Socket.IO client and every (event, payload) it hears about models."""
    client = socketio.AsyncClient(reconnection=False)
    heard: list[Any] = []
    for name in ("llamaLog", "llamaModelStatus"):
        client.on(name, lambda payload, name=name: heard.append((name, payload)))
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    try:
        yield client, heard
    finally:
        await client.disconnect()


async def test_socketio_follows_any_models_lines_and_status_and_restarts_it(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    gw = await two_models(launch, real_binary, demo_models)
    await gw.loaded("alpha")
    old_pid = await gw.loaded("beta")
    async with socket(gw.url) as (beta_reader, beta_heard), socket(gw.url) as (seed, seed_heard):
        ack = await beta_reader.call("subscribeLlamaLogs", {"model": "b"}, timeout=10)
        assert ack == {"ok": True, "model": "beta"}
        assert await seed.call("subscribeLlamaLogs", timeout=10) == {"ok": True, "model": "alpha"}
        unknown = await beta_reader.call("subscribeLlamaLogs", {"model": "nope"}, timeout=10)
        assert unknown["ok"] is False and "Available models" in unknown["error"]
        # The seed's unsubscribe (no model) undoes the seed's subscribe only: a page switching
        # from the primary to beta sends both, in either order.
        await beta_reader.emit("unsubscribeLlamaLogs")

        asked = await beta_reader.call("requestLlamaModelStatus", {"model": "beta"}, timeout=10)
        assert asked == {"ok": True}

        def beta_statuses() -> list[dict[str, Any]]:
            return [
                p for n, p in beta_heard if n == "llamaModelStatus" and p["data"]["model"] == "beta"
            ]

        await until(lambda: bool(beta_statuses()))
        status = beta_statuses()[-1]
        assert status["type"] == "model_status"
        assert (status["data"]["model"], status["data"]["pid"]) == ("beta", old_pid)

        ack = await beta_reader.call("restartModel", {"id": "b"}, timeout=10)
        assert ack["ok"] is True and ack["model"]["id"] == "beta"

        def beta_lines() -> list[str]:
            return [
                line
                for n, p in beta_heard
                if n == "llamaLog" and p["data"]["model"] == "beta"
                for line in p["data"]["lines"]
            ]

        await until(lambda: any("listening on" in line for line in beta_lines()))
        await until(lambda: gw.state("beta").status is Status.READY and gw.pid("beta") != old_pid)
        await until(
            lambda: any(
                n == "llamaModelStatus" and p["data"]["model"] == "beta" and p["data"]["pid"]
                for n, p in seed_heard[1:]
            )
        )
        assert not [p for n, p in beta_heard if n == "llamaLog" and p["data"]["model"] != "beta"]
        seeds = [p for n, p in seed_heard if n == "llamaLog" and p["data"]["model"] != "alpha"]
        assert not seeds, "beta's lines reached the primary's subscribers"

        ack = await seed.call("stopModel", {"id": "beta"}, timeout=10)
        assert ack["ok"] is True
        await until(lambda: gw.view("beta").phase is Phase.UNLOADED)
        ack = await seed.call("startModel", {"id": "beta"}, timeout=10)
        assert ack["ok"] is True
        await gw.wait_phase("beta", Phase.READY)
        too_many = await seed.call("restartModel", {"id": "nope"}, timeout=10)
        assert too_many["ok"] is False

        # The seed's subscribers still get the primary's lines, which now name it.
        # Acknowledged after every batch sent to it before: none may come after.
        await beta_reader.call("unsubscribeLlamaLogs", {"model": "beta"}, timeout=10)
        count = len(beta_lines())
        restart = await seed.call("restartModel", {"id": "alpha"}, timeout=10)
        assert restart["ok"] is True
        await until(
            lambda: any(
                n == "llamaLog" and "listening on" in " ".join(p["data"]["lines"])
                for n, p in seed_heard
            )
        )
        assert {p["data"]["model"] for n, p in seed_heard if n == "llamaLog"} == {"alpha"}
        await gw.wait_phase("alpha", Phase.READY)
    assert len(beta_lines()) == count, "lines after unsubscribing"


async def test_a_follow_of_a_model_a_reload_removes_ends_once_it_stopped(
    tmp_path: Path, real_binary: Path, demo_models: DemoModels
) -> None:
    """`llamaherd serve` on its own: beta's follow gets beta's goodbye, then the answer ends
    (a client waiting on a model that is gone would otherwise hang until llamaherd stops)."""
    settings = {
        "llama_server_binary": str(real_binary),
        "llama_server_port": free_port(),
        "app_port": free_port(),
        "state_dir": str(tmp_path / "state"),
        "readiness_interval_ms": 50,
        "models": {
            "alpha": {"path": str(demo_models.alpha)},
            "beta": {"path": str(demo_models.beta)},
        },
        "default_model": "alpha",
        "max_loaded": 2,
    }
    path = write_config(tmp_path, settings)
    async with ServedLlamaherd(path) as served:
        await served.wait_ready("beta")
        async with (
            served.http(timeout=60) as http,
            http.stream("GET", "/api/models/beta/logs", params={"follow": "true"}) as followed,
        ):
            events = sse_events(followed)
            assert (await anext(events))[1]["data"]["model"] == "beta"
            del settings["models"]["beta"]
            write_config(tmp_path, settings)
            reloaded = await http.post("/api/config/reload")
            assert reloaded.status_code == 200, reloaded.text
            lines: list[str] = []
            async with asyncio.timeout(30):
                async for _, payload in events:
                    lines += payload["data"]["lines"]
        assert any("cleaning up before exit" in line for line in lines), lines
        assert "beta" not in await served.models()
