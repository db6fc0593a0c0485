"""One owner for every model's life, against the real llama-server (issue 14, items 1 to 5):
control paths go through the scheduler, and a model that cannot load never blocks the others.

Each test reproduces what an operator or a client did on the version before, where the
promise ("a busy model is never killed; max_loaded and the memory budget always hold") broke.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import gguf
import httpx
import pytest

from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.states import Status
from tests.conftest import sse_lines
from tests.gateway.conftest import DemoModels, Launch, ServerCensus, gateway_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(120)]

# Long enough that a stop asked after its first token finds it still generating.
LONG = {"prompt": "Hello", "n_predict": 1500, "ignore_eos": True, "stream": True}
TWO_SLOTS = ("-c", "4096", "--parallel", "2")


def entry(path: Path, *args: str, **more: Any) -> dict[str, Any]:
    return {"path": str(path), "args": list(args), **more}


def unloadable_copy(model: Path, folder: Path) -> Path:
    """A GGUF whose header passes llamaherd's check but which llama-server cannot load: its
    `llama.block_count` says 7 for a file with 2 layers' tensors."""
    broken = folder / "seven-layers.gguf"
    shutil.copyfile(model, broken)
    reader = gguf.GGUFReader(broken, "r+")
    reader.fields["llama.block_count"].parts[-1][0] = 7
    reader.data.flush()  # type: ignore[attr-defined]
    del reader
    return broken


async def complete(client: httpx.AsyncClient, model: str, tokens: int = 2) -> httpx.Response:
    body = {"model": model, "prompt": "Hello", "n_predict": tokens}
    return await client.post("/completion", json=body)


async def stream_events(client: httpx.AsyncClient, model: str, first: asyncio.Event) -> list[Any]:
    """A long stream's events, parsed; `first` is set once its first token has arrived."""
    events: list[Any] = []
    async with client.stream("POST", "/completion", json={"model": model, **LONG}) as answer:
        assert answer.status_code == 200, await answer.aread()
        async for line in sse_lines(answer):  # not aiter_lines: the model writes U+2028 too
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                first.set()
    return events


async def test_a_model_that_cannot_load_gives_its_slot_back_at_once(
    launch: Launch, real_binary: Path, demo_models: DemoModels, tmp_path: Path
) -> None:
    """Item 1: the broken model evicted the healthy one, then held the only slot through its
    whole backoff (about 31 s); requests for the healthy model timed out with a false reason,
    and every later request for the broken one started the cycle again."""
    models = {
        "good": entry(demo_models.alpha),
        "broken": entry(unloadable_copy(demo_models.alpha, tmp_path)),
    }
    gw = await launch(gateway_config(real_binary, models, max_loaded=1, queue_timeout_s=60))
    await gw.loaded("good")
    async with gw.http() as client:
        async with asyncio.timeout(20):  # the backoff alone took 31 s
            broken_answer = asyncio.create_task(complete(client, "broken"))
            await gw.wait_until(lambda: gw.view("good").phase is not Phase.READY, "evicted")
            good = await complete(client, "good")  # waits behind the broken model's load
            broken = await broken_answer
        assert good.status_code == 200, good.text
        assert broken.status_code == 503, broken.text
        message = broken.json()["error"]["message"]
        assert message.startswith("model 'broken' is unavailable: llama-server exited")
        assert "while starting" in message
        # Its supervisor was backing off to retry; the waiting model took the slot from it.
        assert gw.starts["broken"] == 1
        assert gw.view("broken").phase is Phase.FAILED
        assert gw.state("broken").status is Status.INITIAL

        # Within the cool-down: refused at once with the same reason, nothing started, and
        # the healthy model keeps its server.
        again = await complete(client, "broken")
        assert again.status_code == 503
        assert "tries it again in" in again.json()["error"]["message"]
        assert int(again.headers["retry-after"]) >= 1
        assert gw.starts["broken"] == 1
        assert gw.view("good").phase is Phase.READY
        assert (await complete(client, "good")).status_code == 200


async def test_stop_drains_streams_in_flight_and_the_model_stays_stopped(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    """Item 2: a stop with two streams in flight ended both with an error event, and the next
    request silently loaded the model again."""
    models = {"main": entry(demo_models.alpha, *TWO_SLOTS)}
    gw = await launch(gateway_config(real_binary, models))
    await gw.loaded("main")
    async with gw.http() as client:
        firsts = [asyncio.Event(), asyncio.Event()]
        streams = [asyncio.create_task(stream_events(client, "main", f)) for f in firsts]
        async with asyncio.timeout(30):
            await asyncio.gather(*(f.wait() for f in firsts))
        assert gw.view("main").in_flight == 2
        stop = await client.post("/api/llama/stop")
        assert stop.status_code == 200, stop.text
        assert stop.json()["status"]["status"] == "initial"
        for events in await asyncio.gather(*streams):
            assert events[-1]["stop"] is True and "error" not in events[-1]
            assert not any("error" in event for event in events)

        refused = await complete(client, "main")
        assert refused.status_code == 503
        assert refused.json()["error"]["message"] == (
            "model 'main' is stopped (stopped by an operator); start or load it to serve it again"
        )
        assert gw.starts["main"] == 1, "a request loaded the stopped model again"

        started = await client.post("/api/llama/start", params={"wait": 30})
        assert started.json()["status"]["status"] == "ready"
        assert (await complete(client, "main")).status_code == 200


async def test_start_waits_for_a_busy_model_and_never_breaks_max_loaded(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    """Item 3: POST /api/llama/start while another model streamed, with max_loaded 1, ran a
    second llama-server beside it."""
    models = {"busy": entry(demo_models.alpha), "primary": entry(demo_models.beta)}
    config = gateway_config(real_binary, models, max_loaded=1, default_model="primary")
    gw = await launch(config)
    await gw.loaded("busy")
    async with ServerCensus() as census, gw.http() as client:
        first = asyncio.Event()
        stream = asyncio.create_task(stream_events(client, "busy", first))
        await first.wait()
        started = await client.post("/api/llama/start")
        assert started.status_code == 200
        assert gw.view("primary").load_requested
        assert gw.view("busy").phase is Phase.READY  # draining, still serving
        events = await stream
        assert events[-1]["stop"] is True and not any("error" in e for e in events)
        await gw.wait_phase("primary", Phase.READY)
    assert census.most == 1, f"{census.most} llama-servers ran at once with max_loaded 1"
    assert gw.view("busy").phase is Phase.UNLOADED


async def test_start_of_a_model_too_big_for_the_budget_is_409_without_a_traceback(
    launch: Launch,
    real_binary: Path,
    demo_models: DemoModels,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Item 3: with a budget too small, start ran the model anyway, logged "a state listener
    failed" with a traceback, and left a server the gateway called unloaded."""
    models = {"main": entry(demo_models.alpha)}  # estimated at about 0.5 MB
    gw = await launch(gateway_config(real_binary, models, memory_budget_mb=0.01))
    async with gw.http() as client:
        answer = await client.post("/api/llama/start")
    assert answer.status_code == 409
    assert "more than the whole memory budget of 0.01 MB" in answer.json()["error"]["message"]
    assert gw.starts["main"] == 0
    assert gw.state("main").status is Status.INITIAL
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_the_memory_budget_holds_the_same_way_before_and_after_loading(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    """Item 4: with a budget between the estimate (under 1 MB for the tiny model) and the
    measured size (about 20 MB), one model was refused as too big while the other stayed
    loaded over the budget, never evicted. Now the measured size is the size, for both."""
    models = {"a": entry(demo_models.alpha), "b": entry(demo_models.beta)}
    gw = await launch(gateway_config(real_binary, models, max_loaded=2, memory_budget_mb=5))
    async with gw.http() as client:
        for model in ("a", "b"):
            assert (await complete(client, model)).status_code == 200  # planned on the estimate
            await gw.wait_until(lambda m=model: gw.view(m).memory_mb > 5, f"{model} measured")
            await gw.wait_phase(model, Phase.UNLOADED)  # over budget, so unloaded once idle
            refused = await complete(client, model)
            assert refused.status_code == 503
            message = refused.json()["error"]["message"]
            assert "more than the whole memory budget of 5 MB" in message
    assert all(gw.view(m).phase is Phase.UNLOADED for m in models)


async def test_a_dropped_connection_to_a_healthy_server_releases_the_slot_at_once(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    """Item 5: after any upstream error the route kept the slot for up to 2 s, though the
    server was fine (a dropped keep-alive connection), stalling a one-slot queue."""
    gw = await launch(gateway_config(real_binary, {"main": entry(demo_models.alpha)}))
    await gw.loaded("main")
    async with asyncio.timeout(10):  # it waited the whole 30 s before
        await gw.herd.settle_after_failure("main", 30)
