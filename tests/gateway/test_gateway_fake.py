"""The gateway end to end with the fake llama-server: the faults and the timing that a real
model makes hard to reproduce (slow generation, slow loading, a server killed mid-request).

Each test runs a whole llamaherd (config -> build_herd -> create_app -> uvicorn) in its own
event loop; the fake is the configured llama_server_binary and the demo GGUF files are its
model paths (it reports the --alias llamaherd gives it, the model's id, as the model of a
native /completion answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.states import Status
from tests.conftest import pid_alive, raw_http
from tests.gateway.conftest import DemoModels, Gateway, Launch, ServerCensus, gateway_config

pytestmark = pytest.mark.timeout(60)

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def fake(path: Path, *flags: str, **entry: Any) -> dict[str, Any]:
    """A `models` entry served by the fake, with its --fake-* switches."""
    return {"path": str(path), "args": list(flags), **entry}


def completion(model: str, tokens: int, **more: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "one two", "n_predict": tokens, **more}


def assert_openai_error(answer: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == kind
    return dict(error)


def queued(gw: Gateway, model: str, count: int) -> Callable[[], bool]:
    return lambda: gw.view(model).queued == count


def retry_after(answer: httpx.Response) -> int:
    value = int(answer.headers["retry-after"])
    assert 1 <= value <= 60
    return value


async def test_a_full_queue_is_429_with_retry_after(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    slow = fake(demo_models.alpha, "--fake-gen-ms", "50", max_concurrency=1)
    gw = await launch(gateway_config(fake_binary, {"slow": slow}, queue_depth=2))
    await gw.loaded("slow")
    async with gw.http() as client:
        busy = asyncio.create_task(client.post("/completion", json=completion("slow", 60)))
        await gw.wait_until(lambda: gw.view("slow").in_flight == 1, "one request is in flight")
        queued = [
            asyncio.create_task(client.post("/completion", json=completion("slow", 1)))
            for _ in range(2)
        ]
        await gw.wait_until(lambda: gw.view("slow").queued == 2, "two requests wait")

        began = time.monotonic()
        refused = await client.post(
            "/v1/chat/completions", json={"model": "slow", "messages": CHAT, "max_tokens": 1}
        )
        assert time.monotonic() - began < 1.0, "a full queue must refuse at once"
        error = assert_openai_error(refused, 429, "rate_limit_error")
        assert error["code"] == 429
        assert "queue for model 'slow' is full" in error["message"]
        retry_after(refused)

        # The official client sees the same refusal as its RateLimitError.
        async with gw.openai() as oai:
            with pytest.raises(openai.RateLimitError) as raised:
                await oai.chat.completions.create(model="slow", messages=CHAT, max_tokens=1)
        assert raised.value.status_code == 429
        assert "is full" in raised.value.message
        assert int(raised.value.response.headers["retry-after"]) >= 1

        answers = await asyncio.gather(busy, *queued)
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert gw.view("slow").queued == 0 and gw.view("slow").in_flight == 0


async def test_a_request_that_waits_too_long_is_503_with_retry_after(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    slow = fake(demo_models.alpha, "--fake-gen-ms", "50", max_concurrency=1)
    gw = await launch(gateway_config(fake_binary, {"slow": slow}, queue_timeout_s=0.5))
    await gw.loaded("slow")
    async with gw.http() as client:
        busy = asyncio.create_task(client.post("/completion", json=completion("slow", 40)))
        await gw.wait_until(lambda: gw.view("slow").in_flight == 1, "one request is in flight")
        began = time.monotonic()
        late = await client.post("/completion", json=completion("slow", 1))
        waited = time.monotonic() - began
        error = assert_openai_error(late, 503, "service_unavailable")
        assert "waited" in error["message"] and "'slow'" in error["message"]
        retry_after(late)
        assert 0.45 <= waited < 2.5, waited
        assert not busy.done(), "the busy request outlasts the queue timeout"
        assert (await busy).status_code == 200


async def test_killed_server_restarts_and_every_queued_request_succeeds(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    slow = fake(demo_models.alpha, "--fake-gen-ms", "50", max_concurrency=1)
    gw = await launch(gateway_config(fake_binary, {"m": slow}))
    first_pid = await gw.loaded("m")
    async with gw.http() as client:
        busy = asyncio.create_task(client.post("/completion", json=completion("m", 200)))
        await gw.wait_until(lambda: gw.view("m").in_flight == 1, "one request is in flight")
        queued = [
            asyncio.create_task(client.post("/completion", json=completion("m", 2)))
            for _ in range(3)
        ]
        await gw.wait_until(lambda: gw.view("m").queued == 3, "three requests wait behind it")

        os.kill(first_pid, signal.SIGKILL)
        async with asyncio.timeout(20):
            answers = await asyncio.gather(*queued)
            cut = await busy

    assert [answer.status_code for answer in answers] == [200, 200, 200], [
        answer.text for answer in answers
    ]
    for answer in answers:
        assert answer.json()["model"] == "m"
        assert answer.json()["tokens_predicted"] == 2
    error = assert_openai_error(cut, 502, "upstream_error")
    assert "llama-server for model m" in error["message"]
    assert gw.state("m").status is Status.READY
    assert gw.pid("m") != first_pid
    assert not pid_alive(first_pid)
    assert gw.starts["m"] == 2


async def test_kill_during_a_stream_ends_it_with_an_error_and_the_plain_request_gets_502(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    slow = fake(demo_models.alpha, "--fake-gen-ms", "50", max_concurrency=2)
    gw = await launch(gateway_config(fake_binary, {"m": slow}))
    pid = await gw.loaded("m")
    long_chat = {"model": "m", "messages": CHAT, "max_tokens": 400}
    async with gw.http() as client:
        plain = asyncio.create_task(client.post("/v1/chat/completions", json=long_chat))
        async with client.stream(
            "POST", "/v1/chat/completions", json={**long_chat, "stream": True}
        ) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            tokens = 0
            async with asyncio.timeout(10):
                while tokens < 2:
                    line = await anext(lines)
                    if line.startswith("data: ") and '"content":"' in line:
                        tokens += 1
            await gw.wait_until(lambda: gw.view("m").in_flight == 2, "both requests are in flight")

            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            rest: list[str] = []
            async with asyncio.timeout(5):  # ends promptly, never hangs
                async for line in lines:
                    rest.append(line)
            ended_after = time.monotonic() - killed
        async with asyncio.timeout(5):
            cut = await plain

    events = [line.removeprefix("data: ") for line in rest if line.startswith("data: ")]
    assert events, rest
    last = json.loads(events[-1])
    assert "llama-server for model m" in last["error"]["message"]
    assert last["error"]["type"] == "upstream_error"
    assert "[DONE]" not in events
    assert ended_after < 3, ended_after
    assert_openai_error(cut, 502, "upstream_error")

    # The supervisor brings it back, and the model serves again.
    await gw.wait_until(lambda: gw.state("m").status is Status.READY, "m is back")
    async with gw.http() as client:
        again = await client.post("/completion", json=completion("m", 2))
    assert again.status_code == 200
    assert gw.pid("m") != pid


async def test_an_idle_model_is_unloaded_after_its_ttl(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    gw = await launch(gateway_config(fake_binary, {"t": fake(demo_models.alpha, ttl_s=0.5)}))
    async with gw.http() as client:
        answer = await client.post("/completion", json=completion("t", 2))
        assert answer.status_code == 200
        answered = time.monotonic()
        pid = gw.pid("t")
        listing = (await client.get("/api/gateway/models")).json()["models"]
        assert listing[0]["loaded"] is True and listing[0]["ttlSeconds"] == 0.5
        await gw.wait_phase("t", Phase.UNLOADED, timeout=10)
        assert time.monotonic() - answered >= 0.45, "unloaded before its TTL"
        await gw.wait_until(lambda: not pid_alive(pid), "its llama-server has exited", 10)
        assert gw.state("t").status is Status.INITIAL
        listing = (await client.get("/api/gateway/models")).json()["models"]
        assert listing[0]["loaded"] is False and listing[0]["pid"] is None

        # The next request loads it again.
        answer = await client.post("/completion", json=completion("t", 2))
        assert answer.status_code == 200
    assert gw.starts["t"] == 2


async def test_a_request_during_a_ttl_unload_waits_and_gets_a_fresh_server(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    # The server takes 1 s to stop, so the request meets the unload half done.
    lingering = fake(demo_models.alpha, "--fake-slow-sigterm-s", "1", ttl_s=0.3)
    gw = await launch(gateway_config(fake_binary, {"t": lingering}))
    async with gw.http() as client:
        assert (await client.post("/completion", json=completion("t", 1))).status_code == 200
        old = gw.pid("t")
        await gw.wait_phase("t", Phase.UNLOADING, timeout=10)
        answer = await client.post("/completion", json=completion("t", 1))
    assert answer.status_code == 200, answer.text
    assert gw.pid("t") != old and not pid_alive(old)
    assert gw.starts["t"] == 2


async def test_a_pinned_model_is_never_evicted(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    models = {
        "p": fake(demo_models.alpha, pinned=True),
        "x": fake(demo_models.beta),
        "y": fake(demo_models.gamma),
    }
    gw = await launch(gateway_config(fake_binary, models, max_loaded=2))
    async with gw.http() as client:
        first = await client.post("/completion", json=completion("p", 1))
        assert first.json()["model"] == "p"
        pinned_pid = gw.pid("p")
        for model in ["x", "y", "x", "y", "p"]:
            answer = await client.post("/completion", json=completion(model, 1))
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == model
            assert gw.view("p").phase is Phase.READY
            assert gw.pid("p") == pinned_pid
    assert gw.starts == {"p": 1, "x": 2, "y": 2}
    assert pid_alive(pinned_pid)


async def test_unknown_model_and_malformed_bodies_are_refused(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    models = {"alpha": fake(demo_models.alpha), "beta": fake(demo_models.beta)}
    gw = await launch(gateway_config(fake_binary, models))
    async with gw.http() as client:
        unknown = await client.post(
            "/v1/chat/completions", json={"model": "nope", "messages": CHAT}
        )
        error = assert_openai_error(unknown, 404, "invalid_request_error")
        assert error["code"] == "model_not_found"
        assert "'nope'" in error["message"]
        assert "alpha, beta" in error["message"]

        broken = await client.post(
            "/v1/chat/completions",
            content=b'{"model": "alpha", "messages": [',
            headers={"content-type": "application/json"},
        )
        assert (
            "not valid JSON" in assert_openai_error(broken, 400, "invalid_request_error")["message"]
        )
        for body in (b"[1, 2]", b'"alpha"', b"null"):
            listed = await client.post("/v1/completions", content=body)
            error = assert_openai_error(listed, 422, "invalid_request_error")
            assert "must be a JSON object" in error["message"]
        for body, field in (
            (b'{"model": 7, "prompt": "x"}', '"model" must be a string'),
            (b'{"model": "alpha", "stream": "yes"}', '"stream" must be true or false'),
        ):
            wrong = await client.post("/v1/completions", content=body)
            assert field in assert_openai_error(wrong, 422, "invalid_request_error")["message"]
        # A model id is looked up among the configured ones, never read as a file path.
        for name in (str(demo_models.alpha), "../alpha", demo_models.alpha.name, "alpha/../beta"):
            answer = await client.post(
                "/v1/chat/completions", json={"model": name, "messages": CHAT}
            )
            assert (
                assert_openai_error(answer, 404, "invalid_request_error")["code"]
                == "model_not_found"
            )
        no_default = await client.post("/v1/chat/completions", json={"messages": CHAT})
        assert_openai_error(no_default, 400, "invalid_request_error")

    async with gw.openai() as oai:
        with pytest.raises(openai.NotFoundError) as raised:
            await oai.chat.completions.create(model="nope", messages=CHAT)
    assert "alpha, beta" in raised.value.message
    assert sum(gw.starts.values()) == 0, "no request here should have started a server"


async def test_json_nested_too_deeply_is_a_400_not_a_traceback(
    launch: Launch,
    fake_binary: Path,
    demo_models: DemoModels,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Python's JSON parser recurses: about a thousand levels raise RecursionError, not the
    # ValueError of other bad JSON.
    gw = await launch(gateway_config(fake_binary, {"alpha": fake(demo_models.alpha)}))
    async with gw.http() as client:
        for path in ("/v1/chat/completions", "/completion", "/tokenize"):
            for body in (b"[" * 100_000, b'{"model": "alpha", "messages": ' + b"[" * 5_000):
                answer = await client.post(path, content=body)
                error = assert_openai_error(answer, 400, "invalid_request_error")
                assert error["message"] == (
                    "the request body nests arrays or objects too deeply to be read"
                )
    assert "Traceback" not in capfd.readouterr().err
    assert sum(gw.starts.values()) == 0


async def test_a_stream_that_waits_gets_its_200_and_comment_lines_first(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    lazy = fake(demo_models.alpha, "--fake-load-s", "2.5")
    gw = await launch(gateway_config(fake_binary, {"lazy": lazy}))
    request = {"model": "lazy", "messages": CHAT, "max_tokens": 3, "stream": True}
    async with gw.http() as client:
        began = time.monotonic()
        async with client.stream("POST", "/v1/chat/completions", json=request) as stream:
            headers_after = time.monotonic() - began
            phase_at_headers = gw.view("lazy").phase
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            async with asyncio.timeout(20):
                lines = [line async for line in stream.aiter_lines()]

    assert phase_at_headers is Phase.LOADING, "the 200 came before the model was ready"
    assert 0.9 <= headers_after < 2.4, headers_after
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    comments = [line for line in lines[:first_data] if line.startswith(": llamaherd:")]
    assert comments, lines[:first_data]
    assert "loading lazy" in comments[0]
    assert not any(line.startswith(":") for line in lines[first_data:])
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


@pytest.mark.parametrize("path", ["/tokenize", "/v1/embeddings", "/apply-template"])
async def test_stream_true_on_a_route_that_never_streams_waits_without_an_event_stream(
    launch: Launch, fake_binary: Path, demo_models: DemoModels, path: str
) -> None:
    # llama-server answers these with plain JSON whatever "stream" says: a 200 event-stream
    # start while it waits would turn that JSON into a broken stream.
    lazy = fake(demo_models.alpha, "--fake-load-s", "2")
    gw = await launch(gateway_config(fake_binary, {"lazy": lazy}))
    request = {"model": "lazy", "content": "hello", "input": "hello", "stream": True}
    async with gw.http() as client:
        answer = await client.post(path, json=request)
    assert gw.starts["lazy"] == 1, "the request waited for the load"
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert not answer.text.startswith(":"), answer.text[:200]
    assert isinstance(answer.json(), dict)  # llama-server's own answer, as it sent it


async def test_arrivals_a_b_a_b_are_served_a_a_b_b_with_one_swap(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    models = {
        "a": fake(demo_models.alpha, "--fake-gen-ms", "50", max_concurrency=1),
        "b": fake(demo_models.beta, "--fake-gen-ms", "50", max_concurrency=1),
    }
    gw = await launch(gateway_config(fake_binary, models, max_loaded=1))
    await gw.loaded("a")
    finished: list[str] = []

    async def ask(client: httpx.AsyncClient, name: str, model: str, tokens: int) -> str:
        answer = await client.post("/completion", json=completion(model, tokens))
        assert answer.status_code == 200, answer.text
        finished.append(name)
        return str(answer.json()["model"])

    async with ServerCensus() as census, gw.http() as client:
        tasks = [asyncio.create_task(ask(client, "a1", "a", 20))]
        await gw.wait_until(lambda: gw.view("a").in_flight == 1, "a1 is in flight")
        for name, model, waiting in (("b1", "b", 1), ("a2", "a", 1), ("b2", "b", 2)):
            tasks.append(asyncio.create_task(ask(client, name, model, 2)))
            await gw.wait_until(queued(gw, model, waiting), f"{name} waits")
        served_by = await asyncio.gather(*tasks)

    assert served_by == ["a", "b", "a", "b"]
    assert finished[:2] == ["a1", "a2"] and sorted(finished[2:]) == ["b1", "b2"]
    assert gw.starts == {"a": 1, "b": 1}
    assert census.most == 1


async def test_a_waiting_stream_that_times_out_ends_with_an_error_event(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    slow = fake(demo_models.alpha, "--fake-gen-ms", "50", max_concurrency=1)
    gw = await launch(gateway_config(fake_binary, {"slow": slow}, queue_timeout_s=1.6))
    await gw.loaded("slow")
    request = {"model": "slow", "messages": CHAT, "max_tokens": 2, "stream": True}
    async with gw.http() as client:
        busy = asyncio.create_task(client.post("/completion", json=completion("slow", 50)))
        await gw.wait_until(lambda: gw.view("slow").in_flight == 1, "one request is in flight")
        async with client.stream("POST", "/v1/chat/completions", json=request) as stream:
            assert stream.status_code == 200
            async with asyncio.timeout(10):
                lines = [line async for line in stream.aiter_lines() if line]
        assert (await busy).status_code == 200

    assert lines[0].startswith(": llamaherd: queued, position 1"), lines
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["code"] == 503 and error["type"] == "service_unavailable"
    assert "waited" in error["message"]


async def test_a_client_that_leaves_the_queue_gives_its_place_up(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    slow = fake(demo_models.alpha, "--fake-gen-ms", "50", max_concurrency=1)
    gw = await launch(gateway_config(fake_binary, {"slow": slow}))
    await gw.loaded("slow")
    host, port = gw.url.removeprefix("http://").split(":")
    async with gw.http() as client:
        busy = asyncio.create_task(client.post("/completion", json=completion("slow", 40)))
        await gw.wait_until(lambda: gw.view("slow").in_flight == 1, "one request is in flight")
        body = json.dumps(completion("slow", 2)).encode()
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await gw.wait_until(lambda: gw.view("slow").queued == 1, "the request waits")
        writer.close()
        await writer.wait_closed()
        await gw.wait_until(lambda: gw.view("slow").queued == 0, "the queue is empty again", 5)
        assert gw.view("slow").in_flight == 1
        assert (await busy).status_code == 200
    await gw.wait_until(lambda: gw.view("slow").in_flight == 0, "nothing is in flight", 5)


async def test_an_upstream_refusal_after_the_stream_started_is_one_error_event(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    lazy = fake(demo_models.alpha, "--fake-load-s", "1.5")
    gw = await launch(gateway_config(fake_binary, {"lazy": lazy}))
    async with gw.http() as client:
        # No "messages": llama-server refuses it with a 400, after the stream has started.
        request = {"model": "lazy", "stream": True, "max_tokens": 2}
        async with client.stream("POST", "/v1/chat/completions", json=request) as stream:
            assert stream.status_code == 200
            async with asyncio.timeout(10):
                lines = [line async for line in stream.aiter_lines() if line]
        wrong_method = await client.get("/v1/chat/completions")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        not_a_name = await client.post("/v1/chat/completions", json={"model": 7})
        assert_openai_error(not_a_name, 422, "invalid_request_error")

    assert lines[0].startswith(": llamaherd: loading lazy"), lines
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["code"] == 400 and "'messages' is required" in error["message"]


async def test_a_model_whose_server_cannot_start_answers_503_and_is_tried_again(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    """A failed start answers its requests with 503 and the reason at once (nobody waits
    through the backoff); once the supervisor gives up, requests are refused for the
    cool-down without starting anything; then one request gets one fresh attempt."""
    broken = fake(demo_models.alpha, "--fake-exit-at-start", "1")
    config = gateway_config(fake_binary, {"broken": broken}, max_retries=1, failure_cooldown_s=3)
    gw = await launch(config)
    async with gw.http() as client:
        async with asyncio.timeout(15):
            answers = await asyncio.gather(
                *(client.post("/completion", json=completion("broken", 1)) for _ in range(2))
            )
        for answer in answers:
            error = assert_openai_error(answer, 503, "service_unavailable")
            assert "model 'broken' is unavailable" in error["message"]
            assert "exited with code 1" in error["message"]
            retry_after(answer)
        await gw.wait_phase("broken", Phase.FAILED)  # the one retry failed too
        assert gw.state("broken").status is Status.ERROR
        assert gw.starts["broken"] == 2  # the first try and one retry

        cooling = await client.post("/completion", json=completion("broken", 1))
        error = assert_openai_error(cooling, 503, "service_unavailable")
        assert "Gave up after 1 retries" in error["message"]
        assert "tries it again in" in error["message"]
        assert gw.starts["broken"] == 2

        await asyncio.sleep(3.1)  # the cool-down is a span of time: nothing to await but it
        again = await client.post("/completion", json=completion("broken", 1))
        assert (
            "exited with code 1"
            in assert_openai_error(again, 503, "service_unavailable")["message"]
        )
    assert gw.starts["broken"] >= 3


async def test_a_completion_through_upstream_is_never_evicted_mid_answer(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    models = {"a": fake(demo_models.alpha, "--fake-gen-ms", "50"), "b": fake(demo_models.beta)}
    gw = await launch(gateway_config(fake_binary, models, max_loaded=1))
    await gw.loaded("a")
    async with gw.http() as client:
        direct = asyncio.create_task(
            client.post("/upstream/a/completion", json=completion("a", 30))
        )

        async def generating() -> bool:
            slots = await client.get("/upstream/a/slots")
            return any(slot["is_processing"] for slot in slots.json())

        async with asyncio.timeout(10):
            while not await generating():
                await asyncio.sleep(0.02)
        other = asyncio.create_task(client.post("/completion", json=completion("b", 1)))
        answers = await asyncio.gather(direct, other)
    assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
    assert answers[0].json()["tokens_predicted"] == 30


async def test_an_oversized_or_slow_body_is_refused_with_its_limit_named(
    launch: Launch, fake_binary: Path, demo_models: DemoModels
) -> None:
    gw = await launch(
        gateway_config(
            fake_binary,
            {"alpha": fake(demo_models.alpha)},
            max_body_mb=0.01,  # about 10 KB
            body_timeout_s=0.5,
        )
    )
    async with gw.http() as client:
        big = {"model": "alpha", "prompt": "x" * 20_000}
        error = assert_openai_error(
            await client.post("/v1/completions", json=big), 413, "invalid_request_error"
        )
        assert "larger than 10485 bytes (max_body_mb)" in error["message"]

    # A client that announces a body and stops sending it is cut off after body_timeout_s.
    head, body = await raw_http(
        gw.url,
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"model":',
    )
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"body_timeout_s" in body
