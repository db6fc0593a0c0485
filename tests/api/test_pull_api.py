"""Models from Hugging Face through the API (issue 18): POST /api/models/pull and its
refusals, `modelPull` events, cancel, and a pulled model served without a restart, chatted
with through the gateway (the real llama-server), then deleted once unloaded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from llamaherd.api.app import create_app
from llamaherd.catalog.hub import Hub
from llamaherd.catalog.pulls import PullManager
from llamaherd.config.settings import settings_from_mapping
from llamaherd.wiring.build import build_herd
from tests.catalog.hub_server import AMBIGUOUS, GATED, TINY, HubServer, standard_hub
from tests.conftest import free_port
from tests.serving import ServedLlamaherd, serve_application, write_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hub(demo_model: Path) -> Iterator[HubServer]:
    with standard_hub(demo_model.read_bytes()) as server:
        yield server


def error_of(answer: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "code"}, error
    return error


async def test_a_pull_is_refused_with_the_reason_before_anything_is_written(
    tmp_path: Path, hub: HubServer, fake_binary: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    settings = settings_from_mapping(
        {"models_dir": str(models), "llama_server_binary": str(fake_binary)}
    )
    free = {"bytes": 10**12}
    pulls = PullManager(
        lambda: models, Hub(hub.url, False), free_space=lambda folder: free["bytes"]
    )
    application = create_app(build_herd(settings), start_service=False, pulls=pulls)
    async with (
        serve_application(application) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        refusals = {
            "nonsense": (400, "bad_source", "OWNER/REPO"),
            "test-org/Nope-GGUF:Q4_K_M": (404, "no_such_repo", "no repository test-org/Nope"),
            f"{TINY}:Q2_K": (404, "no_such_file", "its quantisations: Q4_K_M, Q8_0"),
            GATED: (401, "gated", "set HF_TOKEN"),
            f"{AMBIGUOUS}:Q4_K_M": (409, "ambiguous_quant", "Alpha-Q4_K_M.gguf, Beta-Q4_K_M"),
        }
        for source, (status, code, words) in refusals.items():
            answer = await http.post("/api/models/pull", json={"source": source})
            assert answer.status_code == status, (source, answer.text)
            error = error_of(answer)
            assert error["code"] == code and words in error["message"], error
        free["bytes"] = 1000
        answer = await http.post("/api/models/pull", json={"repo": TINY, "quant": "Q4_K_M"})
        assert answer.status_code == 507, answer.text
        assert "not enough disk space" in error_of(answer)["message"]
        assert list(models.iterdir()) == []
        free["bytes"] = 10**12

        # Two pulls of one file at once are one pull; a cancel removes its partial file.
        hub.delay_s = 0.02
        first, second = await asyncio.gather(
            http.post("/api/models/pull", json={"source": f"{TINY}:Q4_K_M"}),
            http.post("/api/models/pull", json={"repo": TINY, "file": "Tiny-Q4_K_M.gguf"}),
        )
        assert first.status_code == second.status_code == 202, first.text
        pull = first.json()
        assert second.json()["id"] == pull["id"]
        assert pull["state"] == "downloading" and pull["model"] == "Tiny-Q4_K_M"
        assert pull["files"] == ["Tiny-Q4_K_M.gguf"] and pull["total"] == 300_000
        listed = (await http.get("/api/models/pulls")).json()["pulls"]
        assert [p["id"] for p in listed] == [pull["id"]]
        cancelled = await http.delete(f"/api/models/pulls/{pull['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert list(models.rglob("*.gguf*")) == []
        assert len(hub.downloads("Tiny-Q4_K_M.gguf")) == 1
        unknown = await http.delete("/api/models/pulls/nope")
        assert unknown.status_code == 404 and error_of(unknown)["code"] == "no_such_pull"


@pytest.mark.real_server
async def test_a_pulled_model_is_served_without_a_restart_then_deleted(
    tmp_path: Path, hub: HubServer, real_binary: Path
) -> None:
    (tmp_path / "models").mkdir()
    config = write_config(
        tmp_path,
        {
            "llama_server_binary": str(real_binary),
            "llama_server_port": free_port(),
            "app_port": free_port(),
            "state_dir": str(tmp_path / "state"),
            "readiness_interval_ms": 50,
            "models_dir": "models",
        },
    )
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": None, "HF_HOME": str(tmp_path / "hf")}
    events: list[dict[str, Any]] = []
    done = asyncio.Event()

    def on_pull(pull: dict[str, Any]) -> None:
        events.append(pull)
        if pull["state"] != "downloading":
            done.set()

    async with ServedLlamaherd(config, env=env) as served:
        await served.wait_healthy()
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("modelPull", on_pull)
        await sio.connect(served.url, transports=["websocket"], wait_timeout=10)
        try:
            async with served.http(timeout=60) as http:
                answer = await http.post("/api/models/pull", json={"source": f"{TINY}:Q8_0"})
                assert answer.status_code == 202, answer.text
                async with asyncio.timeout(30):
                    await done.wait()
                assert events[-1]["state"] == "done", (events[-1], served.tail())
                assert events[-1]["bytes"] == events[-1]["total"] > 0
                assert events[0]["id"] == answer.json()["id"]

                ids = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
                assert "Tiny-Q8_0" in ids
                chat = await http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "Tiny-Q8_0",
                        "messages": [{"role": "user", "content": "hello"}],
                        "max_tokens": 8,
                    },
                )
                assert chat.status_code == 200, chat.text
                assert chat.json()["choices"][0]["message"] is not None

                loaded = await http.delete("/api/models/Tiny-Q8_0")
                assert loaded.status_code == 409, loaded.text
                assert "unload it first" in error_of(loaded)["message"]
                unload = await http.post("/api/models/Tiny-Q8_0/unload")
                assert unload.status_code == 200, unload.text

                async def unloaded() -> bool:
                    return (await served.models())["Tiny-Q8_0"]["phase"] == "unloaded"

                await served.wait_until("Tiny-Q8_0 is unloaded", unloaded)
                deleted = await http.delete("/api/models/Tiny-Q8_0")
                assert deleted.status_code == 200, deleted.text
                assert deleted.json() == {
                    "model": "Tiny-Q8_0", "files": ["Tiny-Q8_0.gguf"], "reloaded": True,
                    "error": None,
                }  # fmt: skip
                ids = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
                assert "Tiny-Q8_0" not in ids
                assert not (tmp_path / "models" / "Tiny-Q8_0.gguf").exists()
                gone = await http.delete("/api/models/Tiny-Q8_0")
                assert gone.status_code == 404, gone.text
        finally:
            await sio.disconnect()


async def test_only_a_models_dir_file_other_than_the_primary_can_be_deleted(
    tmp_path: Path, hub: HubServer, fake_binary: Path, model_file: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("first.gguf", "second.gguf"):
        (models / name).write_bytes(model_file.read_bytes())
    settings = settings_from_mapping(
        {
            "models_dir": str(models),
            "models": {"named": {"path": str(model_file)}},
            "default_model": "first",
            "llama_server_binary": str(fake_binary),
        }
    )
    pulls = PullManager(lambda: models, Hub(hub.url, False))
    application = create_app(build_herd(settings), start_service=False, pulls=pulls)
    async with (
        serve_application(application) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        listed = (await http.get("/api/gateway/models")).json()["models"]
        # What the dashboard offers to remove: the models_dir files but the primary.
        assert {m["id"]: m["removable"] for m in listed} == {
            "named": False,
            "first": False,
            "second": True,
        }
        named = await http.delete("/api/models/named")
        assert named.status_code == 409 and error_of(named)["code"] == "not_in_models_dir"
        primary = await http.delete("/api/models/first")
        assert primary.status_code == 409 and error_of(primary)["code"] == "primary_model"
        unknown = await http.delete("/api/models/nothing")
        assert unknown.status_code == 404, unknown.text
        second = await http.delete("/api/models/second")  # no reload here: no config file
        assert second.status_code == 200, second.text
        assert second.json()["files"] == ["second.gguf"]
    assert sorted(p.name for p in models.iterdir()) == ["first.gguf"]
    assert model_file.exists()


async def test_an_app_without_pulls_lists_none_and_says_why_it_refuses(
    fake_binary: Path, model_file: Path
) -> None:
    settings = settings_from_mapping(
        {"llama_model_path": str(model_file), "llama_server_binary": str(fake_binary)}
    )
    application = create_app(build_herd(settings), start_service=False)
    async with (
        serve_application(application) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        assert (await http.get("/api/models/pulls")).json() == {"pulls": []}
        refused = await http.post("/api/models/pull", json={"source": "acme/tiny-GGUF"})
        assert refused.status_code == 409
        assert error_of(refused)["code"] == "no_models_dir"
        assert "models_dir" in error_of(refused)["message"]
