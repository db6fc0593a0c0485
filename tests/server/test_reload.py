"""Run as a service (issue 15): reload the config, preload, drain on SIGTERM; with `llamaherd
serve` as a process of its own and the real llama-server."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.conftest import free_port, sse_lines
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(120)]

KEY_A = "reload-test-key-aaaaaaaa"
KEY_B = "reload-test-key-bbbbbbbb"


def base_config(
    tmp_path: Path, binary: Path, models: dict[str, Any], **more: Any
) -> dict[str, Any]:
    return {
        "llama_server_binary": str(binary),
        "llama_server_port": free_port(),
        "app_port": free_port(),
        "state_dir": str(tmp_path / "state"),
        "readiness_interval_ms": 50,
        "models": models,
        **more,
    }


def model(path: Path, *args: str, **more: Any) -> dict[str, Any]:
    return {"path": str(path), "args": list(args), **more}


async def reload_api(
    served: ServedLlamaherd, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with served.http(headers, timeout=60) as http:
        return await http.post("/api/config/reload")


async def config_info(served: ServedLlamaherd) -> dict[str, Any]:
    async with served.http() as http:
        answer = await http.get("/api/config")
    assert answer.status_code == 200, answer.text
    info: dict[str, Any] = answer.json()
    return info


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaherd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_reload_applies_what_changed_and_names_what_needs_a_restart(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    settings = base_config(tmp_path, real_binary, {"chat": model(demo_model)})
    path = write_config(tmp_path, settings)
    async with ServedLlamaherd(path) as served:
        first = await served.wait_ready("chat")
        before = await config_info(served)
        assert before["lastReload"] is None and before["loadedAt"] > 0

        settings["models"]["chat"]["aliases"] = ["gpt-4o-mini"]  # routing only
        settings["models"]["extra"] = model(demo_model, "-c", "1024")  # added
        settings["queue_depth"] = 8  # a limit
        settings["app_port"] = free_port()  # needs a restart
        path.write_text(json.dumps(settings))
        answer = await reload_api(served)
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["ok"] and report["trigger"] == "api"
        assert "chat: routed differently (applied at once)" in report["changes"]
        assert "extra: added" in report["changes"]
        assert any(line.startswith("limits: queue_depth 64 -> 8") for line in report["changes"])
        assert report["needsRestart"] == ["app_port"]

        models = await served.models()
        assert models["chat"]["pid"] == first["pid"], "an alias change restarted the server"
        assert models["chat"]["aliases"] == ["gpt-4o-mini"]
        assert "extra" in models
        async with served.http(timeout=30) as http:
            by_alias = await http.post(
                "/v1/completions", json={"model": "gpt-4o-mini", "prompt": "x", "max_tokens": 2}
            )
            assert by_alias.status_code == 200, by_alias.text
            added = await http.post(
                "/v1/completions", json={"model": "extra", "prompt": "x", "max_tokens": 2}
            )
            assert added.status_code == 200, added.text
        info = await config_info(served)
        assert info["lastReload"]["changes"] == report["changes"]
        assert info["loadedAt"] > before["loadedAt"]


async def test_an_invalid_config_changes_nothing_in_each_trigger(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    settings = base_config(tmp_path, real_binary, {"chat": model(demo_model)})
    path = write_config(tmp_path, settings)
    async with ServedLlamaherd(path) as served:
        first = await served.wait_ready("chat")
        good = path.read_text()
        path.write_text(good.replace('"models"', '"modles"'))  # a typo in a key

        rest = await reload_api(served)
        assert rest.status_code == 422
        message = rest.json()["error"]["message"]
        assert message.startswith("config not reloaded: ")
        assert "modles" in message and message.endswith("the config in use stays")

        cli = run_cli("reload", "--url", served.url)
        assert cli.returncode == 1
        assert cli.stderr.startswith("llamaherd: error: ") and "modles" in cli.stderr
        assert cli.stderr.count("\n") == 1

        served.send_signal(signal.SIGHUP)

        async def refused_by_sighup() -> dict[str, Any] | None:
            last = (await config_info(served))["lastReload"]
            return last if last and last["trigger"] == "SIGHUP" else None

        last = await served.wait_until("the SIGHUP reload is reported", refused_by_sighup)
        assert last["ok"] is False and "modles" in last["error"]
        assert "config not reloaded (SIGHUP)" in served.output

        models = await served.models()
        assert list(models) == ["chat"] and models["chat"]["pid"] == first["pid"]
        assert models["chat"]["state"] == "ready"


async def test_sighup_relaunches_a_changed_model_after_its_stream_ends(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    """A model launched differently drains: its stream in flight ends on the old process,
    then the new one starts."""
    settings = base_config(tmp_path, real_binary, {"chat": model(demo_model, "-c", "2048")})
    path = write_config(tmp_path, settings)
    async with ServedLlamaherd(path) as served:
        first = await served.wait_ready("chat")
        async with served.http(timeout=60) as http:
            body = {"model": "chat", "prompt": "x", "n_predict": 1500, "stream": True}
            async with http.stream("POST", "/completion", json={**body, "ignore_eos": True}) as s:
                lines = sse_lines(s)
                assert (await anext(lines)).startswith("data: ")
                settings["models"]["chat"]["args"] = ["-c", "1024"]
                path.write_text(json.dumps(settings))
                served.send_signal(signal.SIGHUP)
                events = [json.loads(line[6:]) async for line in lines if line.startswith("data: ")]
        assert events[-1]["stop"] is True and not any("error" in e for e in events)

        async def relaunched() -> dict[str, Any] | None:
            facts = (await served.models())["chat"]
            new = facts["pid"] not in (None, first["pid"]) and facts["state"] == "ready"
            return facts if new else None

        # It was loaded, so it comes back loaded, on a server of its own.
        await served.wait_until("chat is ready on a new server", relaunched)


async def test_preload_loads_in_order_as_far_as_the_limits_allow(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    models = {
        "a": model(demo_model),
        "b": model(demo_model, preload=True),
        "c": model(demo_model),
    }
    settings = base_config(tmp_path, real_binary, models, preload=["c", "a"], max_loaded=2)
    path = write_config(tmp_path, settings)
    async with ServedLlamaherd(path) as served:
        await served.wait_healthy()

        async def preloaded() -> dict[str, Any] | None:
            found = await served.models()
            ready = [m for m, facts in found.items() if facts["phase"] == "ready"]
            return found if sorted(ready) == ["a", "c"] else None

        found = await served.wait_until("c and a are preloaded", preloaded)
        assert found["b"]["phase"] == "unloaded"
        assert [found[m]["preload"] for m in "abc"] == [2, 3, 1]  # places in the order
        assert "not preloading model b: max_loaded or the memory budget is taken by c, a" in (
            served.output
        )


async def test_watch_config_reloads_when_the_file_changes(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    settings = base_config(tmp_path, real_binary, {"chat": model(demo_model)}, watch_config=True)
    path = write_config(tmp_path, settings)
    async with ServedLlamaherd(path) as served:
        await served.wait_healthy()
        settings["models"]["chat"]["aliases"] = ["watched"]
        path.write_text(json.dumps(settings))

        async def reloaded() -> dict[str, Any] | None:
            last = (await config_info(served))["lastReload"]
            return last if last and last["trigger"] == "file changed" else None

        last = await served.wait_until("the change is reloaded", reloaded, timeout_s=20)
        assert last["ok"] and last["changes"] == ["chat: routed differently (applied at once)"]
        assert (await served.models())["chat"]["aliases"] == ["watched"]


async def test_keys_apply_at_once_and_a_removed_keys_sessions_are_closed(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    keys = [{"name": "a", "key": KEY_A, "scopes": ["admin"]}]
    settings = base_config(tmp_path, real_binary, {"chat": model(demo_model)}, api_keys=keys)
    path = write_config(tmp_path, settings)
    async with ServedLlamaherd(path) as served:
        await served.wait_healthy()
        client = socketio.AsyncClient(reconnection=False)
        gone = asyncio.Event()
        client.on("disconnect", lambda *args: gone.set())
        await client.connect(served.url, auth={"token": KEY_A}, transports=["websocket"])
        try:
            settings["api_keys"] = [{"name": "b", "key": KEY_B, "scopes": ["admin"]}]
            path.write_text(json.dumps(settings))
            answer = await reload_api(served, {"authorization": f"Bearer {KEY_A}"})
            assert answer.status_code == 200, answer.text
            assert "api_keys: b (admin)" in answer.json()["changes"]
            async with asyncio.timeout(10):
                await gone.wait()  # the session of the removed key is closed
        finally:
            await client.disconnect()
        async with served.http() as http:
            old = await http.get("/v1/models", headers={"authorization": f"Bearer {KEY_A}"})
            new = await http.get("/v1/models", headers={"authorization": f"Bearer {KEY_B}"})
        assert (old.status_code, new.status_code) == (401, 200)


async def test_sigterm_drains_streams_and_a_second_sigterm_ends_them_clearly(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    settings = base_config(
        tmp_path, real_binary, {"chat": model(demo_model, "--parallel", "2")}, shutdown_drain_s=60
    )
    path = write_config(tmp_path, settings)

    async def stream(http: httpx.AsyncClient, tokens: int, first: asyncio.Event) -> list[Any]:
        body = {"model": "chat", "prompt": "x", "n_predict": tokens, "ignore_eos": True}
        events: list[Any] = []
        async with http.stream("POST", "/completion", json={**body, "stream": True}) as answer:
            async for line in sse_lines(answer):
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    first.set()
        return events

    # One SIGTERM: the streams in flight finish, then llamaherd exits 0.
    async with ServedLlamaherd(path) as served:
        await served.wait_ready("chat")
        async with served.http(timeout=60) as http:
            firsts = [asyncio.Event(), asyncio.Event()]
            streams = [asyncio.create_task(stream(http, 1500, f)) for f in firsts]
            await asyncio.gather(*(f.wait() for f in firsts))
            served.send_signal(signal.SIGTERM)
            for events in await asyncio.gather(*streams):
                assert events[-1]["stop"] is True and not any("error" in e for e in events)
        assert await served.wait_exit(30) == 0

    # Endless streams: a second SIGTERM stops the servers, and each stream ends with an error
    # event that says so, not a cut connection.
    async with ServedLlamaherd(path) as served:
        await served.wait_ready("chat")
        async with served.http(timeout=60) as http:
            firsts = [asyncio.Event(), asyncio.Event()]
            streams = [asyncio.create_task(stream(http, 200_000, f)) for f in firsts]
            await asyncio.gather(*(f.wait() for f in firsts))
            served.send_signal(signal.SIGTERM)
            await served.wait_until(
                "the drain has begun",
                lambda: asyncio.sleep(0, "requests in flight have up to" in served.output),
            )
            assert not any(s.done() for s in streams), "the first SIGTERM cut a stream"
            served.send_signal(signal.SIGTERM)
            for events in await asyncio.gather(*streams):
                assert "error" in events[-1], events[-3:]
        assert await served.wait_exit(30) == 0
