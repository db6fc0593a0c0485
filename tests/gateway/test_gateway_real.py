"""The gateway end to end with the real llama-server and tiny real models: the official openai
client, llama.cpp's own paths, switching models, concurrency, and a client leaving mid-stream.

Which model answered is visible in every answer: llamaherd starts each llama-server with
`--alias ID`, and llama-server reports that id as "model" (OpenAI answers, their streamed
chunks and native /completion alike), never the model file's path.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam

from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.config.settings import load_config
from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.states import Status
from tests.conftest import free_port, pid_alive
from tests.gateway.conftest import DemoModels, Gateway, Launch, ServerCensus, gateway_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(90)]

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
# Generation that lasts far longer than any test: past the context window (context shift),
# never stopped by an end-of-sequence token.
ENDLESS = {"n_predict": 200_000, "ignore_eos": True}


def entry(path: Path, *args: str, **more: Any) -> dict[str, Any]:
    return {"path": str(path), "args": list(args), **more}


async def native(gw: Gateway, model: str | None, tokens: int = 2) -> dict[str, Any]:
    """A native /completion through the gateway; its answer's "model" names the file."""
    body: dict[str, Any] = {"prompt": "Hello", "n_predict": tokens}
    if model is not None:
        body["model"] = model
    async with gw.http() as client:
        answer = await client.post("/completion", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_openai_client_chat_stream_completions_and_embeddings(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    models = {
        "chat": entry(demo_models.alpha, aliases=["gpt-4o-mini"]),
        "embed": entry(demo_models.beta, "--embeddings", "--pooling", "mean"),
    }
    gw = await launch(gateway_config(real_binary, models, default_model="chat", max_loaded=2))
    alpha, beta = "chat", "embed"  # the ids, whatever the files are called
    async with gw.openai() as oai:
        listed = await oai.models.list()
        assert [model.id for model in listed.data] == ["chat", "embed"]

        answer = await oai.chat.completions.create(model="chat", messages=CHAT, max_tokens=4)
        assert answer.model == alpha
        assert answer.choices[0].message.role == "assistant"
        assert answer.usage is not None and answer.usage.completion_tokens == 4

        # Through an alias: the same model, named by its id.
        aliased = await oai.chat.completions.create(
            model="gpt-4o-mini", messages=CHAT, max_tokens=2
        )
        assert aliased.model == alpha

        stream = await oai.chat.completions.create(
            model="chat",
            messages=CHAT,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert len(chunks) >= 3
        assert all(chunk.model == alpha for chunk in chunks)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices]
        assert sum(1 for piece in pieces if piece) >= 1
        last = chunks[-1]
        assert last.usage is not None and last.usage.completion_tokens == 6
        timings = (last.model_extra or {})["timings"]
        assert timings["predicted_n"] == 6 and timings["predicted_per_second"] > 0

        text = await oai.completions.create(model="chat", prompt="Once upon", max_tokens=3)
        assert text.model == alpha
        assert text.usage is not None and text.usage.completion_tokens == 3

        vectors = await oai.embeddings.create(model="embed", input=["hello", "world"])
        assert len(vectors.data) == 2
        assert all(len(item.embedding) == 64 for item in vectors.data)
        assert any(value != 0.0 for value in vectors.data[0].embedding)
        assert vectors.data[0].embedding != vectors.data[1].embedding

    # Without "model": the default model answers; llama.cpp's own paths are routed too.
    async with gw.http() as client:
        unnamed = await client.post(
            "/v1/chat/completions", json={"messages": CHAT, "max_tokens": 2}
        )
        assert unnamed.status_code == 200, unnamed.text
        assert unnamed.json()["model"] == alpha
        tokens = await client.post("/tokenize", json={"model": "embed", "content": "hi"})
        assert tokens.status_code == 200 and tokens.json()["tokens"]
    assert (await native(gw, None))["model"] == alpha
    assert (await native(gw, "gpt-4o-mini"))["model"] == alpha
    assert (await native(gw, "embed"))["model"] == beta
    assert gw.starts == {"chat": 1, "embed": 1}


async def test_answers_and_streams_name_the_model_by_its_id_never_its_file(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    models = {
        "coder": entry(demo_models.alpha),  # an id that is not the file's name
        "own": entry(demo_models.beta, "--alias", "theirs"),  # the user's alias stands
    }
    gw = await launch(gateway_config(real_binary, models, max_loaded=2))
    chat = {"model": "coder", "messages": CHAT, "max_tokens": 3, "stream": True}
    async with gw.http() as client:
        for path, body in (
            ("/v1/chat/completions", chat),
            ("/completion", {"model": "coder", "prompt": "Hi", "n_predict": 3, "stream": True}),
        ):
            async with client.stream("POST", path, json=body) as answer:
                raw = (await answer.aread()).decode()
            assert answer.status_code == 200, raw
            events = [json.loads(line[6:]) for line in raw.splitlines() if line[6:7] == "{"]
            assert any("model" in event for event in events), raw
            assert {event.get("model", "coder") for event in events} == {"coder"}
            assert str(demo_models.alpha) not in raw
        own = await client.post(
            "/completion", json={"model": "own", "prompt": "Hi", "n_predict": 1}
        )
        assert own.json()["model"] == "theirs"
        # llama-server's own listing names the id; the dashboard still has the file's facts.
        listed = await client.get("/upstream/coder/v1/models")
        assert [model["id"] for model in listed.json()["data"]] == ["coder"]
    (info,) = gw.state("coder").models
    assert (info.id, info.type) == ("coder", "llama")
    assert info.size == demo_models.alpha.stat().st_size
    assert info.modified_at == int(demo_models.alpha.stat().st_mtime)


async def test_switching_back_and_forth_never_runs_two_servers(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    models = {"a": entry(demo_models.alpha), "b": entry(demo_models.beta)}
    gw = await launch(gateway_config(real_binary, models, max_loaded=1))
    async with ServerCensus() as census:
        for model in ["a", "b", "a", "b", "a", "b"]:
            answer = await native(gw, model)
            assert answer["model"] == model
            others = [m for m in models if m != model]
            assert all(gw.view(m).phase is Phase.UNLOADED for m in others)
    assert census.samples > 10
    assert census.most == 1, f"{census.most} llama-servers were alive at once"
    assert census.seen <= set(gw.all_pids())
    assert gw.starts == {"a": 3, "b": 3}
    assert len(set(gw.all_pids())) == 6
    assert sum(pid_alive(pid) for pid in gw.all_pids()) == 1


async def test_eight_concurrent_requests_for_an_unloaded_model_start_one_server(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    gw = await launch(gateway_config(real_binary, {"a": entry(demo_models.alpha)}))
    assert gw.view("a").phase is Phase.UNLOADED
    waiting_while_loading = 0

    def count_waiting() -> None:
        nonlocal waiting_while_loading
        view = gw.view("a")
        if view.phase is Phase.LOADING:
            waiting_while_loading = max(waiting_while_loading, view.queued)

    gw.herd.on_change(count_waiting)
    async with gw.openai() as oai:
        answers = await asyncio.gather(
            *(oai.chat.completions.create(model="a", messages=CHAT, max_tokens=2) for _ in range(8))
        )
    assert all(answer.model == "a" for answer in answers)
    assert waiting_while_loading >= 2, "the requests did not meet a loading model"
    assert gw.starts["a"] == 1
    assert len(gw.pids["a"]) == 1
    assert gw.view("a").in_flight == 0 and gw.view("a").queued == 0


async def busy_slots(gw: Gateway, model: str) -> int:
    async with gw.http() as client:
        answer = await client.get(f"/upstream/{model}/slots")
    assert answer.status_code == 200, answer.text
    return sum(1 for slot in answer.json() if slot["is_processing"])


async def wait_busy_slots(gw: Gateway, model: str, count: int, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (busy := await busy_slots(gw, model)) != count:
        assert loop.time() < deadline, f"{busy} slots processing, not {count}, after {timeout} s"
        await asyncio.sleep(0.05)


async def test_a_client_that_leaves_mid_stream_frees_its_slot(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    models = {"a": entry(demo_models.alpha, "--context-shift")}
    gw = await launch(gateway_config(real_binary, models))
    await gw.loaded("a")
    host, port = gw.url.removeprefix("http://").split(":")

    # A raw socket: read a little of the stream, then hang up.
    body = json.dumps({"model": "a", "prompt": "Hello", "stream": True, **ENDLESS}).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    async with asyncio.timeout(20):
        seen = b""
        while seen.count(b"data: ") < 5:
            data = await reader.read(65536)
            assert data, "the stream ended early"
            seen += data
    assert seen.startswith(b"HTTP/1.1 200")
    await wait_busy_slots(gw, "a", 1)
    writer.close()
    await writer.wait_closed()
    await wait_busy_slots(gw, "a", 0, timeout=5)
    await gw.wait_until(lambda: gw.view("a").in_flight == 0, "the herd saw the request end", 5)

    # The official client closing its stream does the same.
    async with gw.openai() as oai:
        stream = await oai.chat.completions.create(
            model="a",
            messages=CHAT,
            stream=True,
            max_tokens=200_000,
            extra_body={"ignore_eos": True},
        )
        try:
            got = 0
            async with asyncio.timeout(20):
                async for _chunk in stream:
                    got += 1
                    if got == 5:
                        break
            await wait_busy_slots(gw, "a", 1)
        finally:
            await stream.close()
    await wait_busy_slots(gw, "a", 0, timeout=5)
    await gw.wait_until(lambda: gw.view("a").in_flight == 0, "the herd saw the request end", 5)
    assert gw.starts["a"] == 1


async def test_upstream_passes_through_and_loads_the_model(
    launch: Launch, real_binary: Path, demo_models: DemoModels
) -> None:
    models = {"a": entry(demo_models.alpha), "b": entry(demo_models.beta)}
    gw = await launch(gateway_config(real_binary, models, max_loaded=1))
    async with gw.http() as client:
        assert gw.view("b").phase is Phase.UNLOADED
        props = await client.get("/upstream/b/props")
        assert props.status_code == 200, props.text
        assert props.json()["model_path"] == str(demo_models.beta)
        assert gw.view("b").phase is Phase.READY

        # Loaded: straight through, with the query string.
        slots = await client.get("/upstream/b/slots?fail_on_no_slot=0")
        assert slots.status_code == 200
        assert len(slots.json()) == props.json()["total_slots"]
        health = await client.get("/upstream/b/health")
        assert health.json() == {"status": "ok"}

        # Another model's upstream swaps (max_loaded 1).
        props = await client.get("/upstream/a/props")
        assert props.json()["model_path"] == str(demo_models.alpha)
        assert gw.view("b").phase is Phase.UNLOADED

        unknown = await client.get("/upstream/nope/props")
        assert unknown.status_code == 404
        assert "a, b" in unknown.json()["error"]["message"]
    assert gw.starts == {"a": 1, "b": 1}


async def test_the_seed_three_key_config_still_works(
    launch: Launch, real_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_SERVER", str(real_binary))
    write_demo_model(tmp_path / "models" / "your-model.gguf")
    config = tmp_path / ".llama-proxy-config.json"
    seed = {
        "llama_server_host": "localhost",
        "llama_server_port": free_port(),
        "llama_model_path": "./models/your-model.gguf",
    }
    config.write_text(json.dumps(seed))
    gw = await launch(settings=load_config(config), start_service=True)
    async with gw.http() as client:
        answer = await client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 2})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "your-model"
        listing = await client.get("/v1/models")
        assert [model["id"] for model in listing.json()["data"]] == ["your-model"]
    assert gw.state("your-model").status is Status.READY
    assert gw.herd.backends["your-model"].service.port == seed["llama_server_port"]
    assert gw.starts["your-model"] == 1
