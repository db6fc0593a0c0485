"""The streaming relay, end to end: a client, a real uvicorn running a pure-ASGI route that
calls relay(), and a real upstream (the fake llama-server, a raw socket server that writes
exact bytes, or the real llama-server)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from llamaherd.gateway.asgi import BodyTooLarge, ClientDisconnected, RawHeaders, read_body
from llamaherd.gateway.headers import downstream_headers, upstream_headers
from llamaherd.gateway.relay import RelayOutcome, relay
from llamaherd.gateway.replies import send_error, send_sse_error, send_sse_start
from llamaherd.gateway.upstreams import Upstreams
from tests.conftest import chat_body, free_port, wait_http_ready
from tests.serving import serve_uvicorn

pytestmark = pytest.mark.timeout(90)

LABEL = "llama-server for model demo"
WAITING = b": waiting for a free slot\n\n"
Spawn = Callable[[list[str]], subprocess.Popen[bytes]]


# --- the pieces under test, assembled as the gateway route will assemble them ---------------


@dataclass
class RecordingObserver:
    starts: list[tuple[int, list[tuple[bytes, bytes]]]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    ends: list[str | None] = field(default_factory=list)

    def on_start(self, status: int, headers: RawHeaders) -> None:
        self.starts.append((status, list(headers)))

    def on_chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def on_end(self, error: str | None) -> None:
        self.ends.append(error)


class RelayApp:
    """A pure-ASGI app that relays every request to `base_url` and records each outcome.
    A request with `x-test-started: 1` gets the event-stream start and a comment first."""

    def __init__(self, upstreams: Upstreams, base_url: str, limit: int) -> None:
        self.upstreams = upstreams
        self.base_url = base_url
        self.limit = limit
        self.results: asyncio.Queue[tuple[RelayOutcome, RecordingObserver]] = asyncio.Queue()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        try:
            body = await read_body(receive, self.limit)
        except BodyTooLarge as exc:
            await send_error(send, 413, str(exc), "invalid_request_error")
            return
        path_qs = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            path_qs += "?" + scope["query_string"].decode("latin-1")
        started = (b"x-test-started", b"1") in scope["headers"]
        if started:
            await send_sse_start(send)
            await send({"type": "http.response.body", "body": WAITING, "more_body": True})
        observer = RecordingObserver()
        outcome = await relay(
            scope,
            receive,
            send,
            session=self.upstreams.session(self.base_url),
            base_url=self.base_url,
            path_qs=path_qs,
            method=scope["method"],
            headers=scope["headers"],
            body=body,
            observer=observer,
            started=started,
            label=LABEL,
        )
        self.results.put_nowait((outcome, observer))

    async def next_result(self, timeout: float = 10) -> tuple[RelayOutcome, RecordingObserver]:
        async with asyncio.timeout(timeout):
            return await self.results.get()


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off"
    )
    async with serve_uvicorn(config) as url:
        yield url


@contextlib.asynccontextmanager
async def gateway(base_url: str, limit: int = 1 << 20) -> AsyncIterator[tuple[str, RelayApp]]:
    upstreams = Upstreams(connect_timeout_s=5)
    app = RelayApp(upstreams, base_url, limit)
    try:
        async with serve(app) as url:
            yield url, app
    finally:
        await upstreams.aclose()


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, trust_env=False, timeout=20)


# --- upstreams -------------------------------------------------------------------------------


@dataclass
class Fake:
    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture
def fake(fake_binary: Path, spawn_external: Spawn) -> Callable[..., Fake]:
    """Start a fake llama-server (ready at once) with extra arguments."""

    def start(*extra: str) -> Fake:
        port = free_port()
        argv = [str(fake_binary), "--port", str(port), "--fake-load-s", "0", *extra]
        proc = spawn_external(argv)
        wait_http_ready(port)
        return Fake(f"http://127.0.0.1:{port}", proc)

    return start


class RawUpstream:
    """A socket server that records each request as received and answers with exact bytes."""

    def __init__(self, answer: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                self.requests.append((head, await reader.readexactly(length)))
                await self.answer(writer)
        finally:
            writer.close()

    def headers(self, index: int) -> list[tuple[bytes, bytes]]:
        lines = self.requests[index][0].split(b"\r\n")[1:]
        return [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in lines if line)
        ]


@contextlib.asynccontextmanager
async def raw_upstream(
    answer: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[str, RawUpstream]]:
    upstream = RawUpstream(answer)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", upstream
    finally:
        server.close()
        await server.wait_closed()


def fixed_answer(data: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return answer


def get_json(url: str) -> Any:
    return httpx.get(url, timeout=5, trust_env=False).json()


async def wait_slot_idle(base_url: str, timeout_s: float = 10) -> float:
    """Poll GET /slots until no slot is processing; returns the seconds it took."""
    began = time.monotonic()
    async with asyncio.timeout(timeout_s), httpx.AsyncClient(trust_env=False) as http:
        while True:
            slots = (await http.get(f"{base_url}/slots", timeout=5)).json()
            if not any(slot["is_processing"] for slot in slots):
                return time.monotonic() - began
            await asyncio.sleep(0.02)


async def wait_slot_busy(base_url: str, timeout_s: float = 10) -> None:
    slots: Any = None
    try:
        async with asyncio.timeout(timeout_s), httpx.AsyncClient(trust_env=False) as http:
            while True:
                slots = (await http.get(f"{base_url}/slots", timeout=5)).json()
                if any(slot["is_processing"] for slot in slots):
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"no slot became busy within {timeout_s} s: {slots}") from None


async def read_until(pieces: AsyncIterator[bytes], marker: bytes) -> bytes:
    """Read a streamed body until `marker` has arrived. Unlike breaking out of an `async for`,
    this leaves the iterator alive: a generator abandoned mid-way is closed when collected, and
    httpx then closes the connection, which would make the client leave before the test says."""
    received = b""
    async with asyncio.timeout(10):
        while marker not in received:
            received += await anext(pieces)
    return received


def sse_events(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]


chat = functools.partial(chat_body, "demo")


# --- headers ---------------------------------------------------------------------------------


def test_upstream_headers_drop_hop_by_hop_host_and_length() -> None:
    client_headers = [
        (b"host", b"127.0.0.1:3000"),
        (b"connection", b"keep-alive, X-Hop"),
        (b"keep-alive", b"timeout=5"),
        (b"x-hop", b"1"),
        (b"proxy-authorization", b"Basic eA=="),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"trailer", b"x-checksum"),
        (b"content-length", b"12"),
        (b"expect", b"100-continue"),
        (b"authorization", b"Bearer sk-1"),
        (b"content-type", b"application/json"),
        (b"x-request-id", b"r\xe91"),
        (b"accept", b"a"),
        (b"accept", b"b"),
    ]
    assert upstream_headers(client_headers) == [
        ("authorization", "Bearer sk-1"),
        ("content-type", "application/json"),
        ("x-request-id", "r\xe91"),
        ("accept", "a"),
        ("accept", "b"),
    ]


def test_downstream_headers_lowercase_drop_hop_by_hop_and_mark_streams() -> None:
    upstream = [
        (b"Content-Type", b"text/event-stream"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5, max=100"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Server", b"llama.cpp"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    kept = [
        (b"content-type", b"text/event-stream"),
        (b"server", b"llama.cpp"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert downstream_headers(upstream, event_stream=False) == kept
    assert downstream_headers(upstream, event_stream=True) == [
        *kept,
        (b"x-accel-buffering", b"no"),
    ]
    # The upstream's own choice stands.
    own = [(b"X-Accel-Buffering", b"yes")]
    assert downstream_headers(own, event_stream=True) == [(b"x-accel-buffering", b"yes")]


# --- pass-through ----------------------------------------------------------------------------


async def test_answer_passes_through_byte_for_byte_and_request_arrives_intact() -> None:
    # gzip bytes with Content-Encoding: the relay must neither decompress nor re-encode them.
    body = gzip.compress(json.dumps({"text": "h\u00e9llo \u263a"}).encode(), mtime=0)
    answer = (
        b"HTTP/1.1 201 Created\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Content-Encoding: gzip\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: keep-alive, X-Hop\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"X-Hop: secret\r\n"
        b"Trailer: X-Checksum\r\n"
        b"X-Custom: kept\r\n"
        b"Set-Cookie: session=abc\r\n"
        b"\r\n" + body
    )
    request_body = b'{"model": "demo", "prompt": "caf\xc3\xa9"}'
    async with raw_upstream(fixed_answer(answer)) as (base_url, upstream):
        async with gateway(base_url) as (url, app), client(url) as http:
            for _ in range(2):  # the second asks whether a cookie was kept: it must not be
                http.cookies.clear()  # the client's own jar is not the relay's
                request = http.build_request(
                    "POST",
                    "/v1/completions/a%2Fb?x=1&y=%20z",
                    content=request_body,
                    headers={
                        "Authorization": "Bearer sk-1",
                        "Content-Type": "application/json",
                        "Connection": "keep-alive, X-Hop",
                        "Keep-Alive": "300",
                        "X-Hop": "1",
                        "Proxy-Authorization": "Basic eA==",
                        "TE": "trailers",
                        "X-Request-Id": "r1",
                    },
                )
                response = await http.send(request, stream=True)
                raw = b"".join([piece async for piece in response.aiter_raw()])
                outcome, observer = await app.next_result()

        assert response.status_code == 201
        assert raw == body
        got = response.headers
        assert got["content-encoding"] == "gzip"
        assert got["content-length"] == str(len(body))
        assert got["content-type"] == "application/json; charset=utf-8"
        assert got["x-custom"] == "kept"
        assert got["set-cookie"] == "session=abc"
        for hop in ("keep-alive", "x-hop", "trailer", "x-accel-buffering"):
            assert hop not in got

        assert len(upstream.requests) == 2
        head, received = upstream.requests[1]
        assert head.startswith(b"POST /v1/completions/a%2Fb?x=1&y=%20z HTTP/1.1\r\n")
        assert received == request_body
        sent = dict(upstream.headers(1))
        assert sent[b"host"] == base_url.removeprefix("http://").encode()
        assert sent[b"content-length"] == str(len(request_body)).encode()
        assert sent[b"authorization"] == b"Bearer sk-1"
        assert sent[b"content-type"] == b"application/json"
        assert sent[b"x-request-id"] == b"r1"
        assert sent[b"accept-encoding"] == dict(response.request.headers.raw)[b"Accept-Encoding"]
        for hop in ("keep-alive", "x-hop", "proxy-authorization", "te", "cookie"):
            assert hop.encode() not in sent
        assert sent.get(b"connection", b"keep-alive") == b"keep-alive"  # aiohttp's own, if any

    assert outcome == RelayOutcome(
        status=201,
        upstream_status=201,
        body_bytes=len(body),
        chunks=outcome.chunks,
        client_disconnected=False,
        error=None,
    )
    assert outcome.ok
    assert b"".join(observer.chunks) == body
    assert observer.starts[0][0] == 201
    assert observer.ends == [None]


async def test_json_completion_and_upstream_errors_pass_through(fake: Callable[..., Fake]) -> None:
    upstream = fake("--fake-gen-ms", "0")
    async with gateway(upstream.url) as (url, app), client(url) as http:
        answer = await http.post("/v1/chat/completions", json=chat(4, stream=False))
        outcome, _ = await app.next_result()
        missing = await http.get("/nowhere")
        refused = await http.post("/v1/chat/completions", json={"model": "demo"})

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    assert answer.headers["content-length"] == str(len(answer.content))
    payload = answer.json()
    assert payload["object"] == "chat.completion"
    assert payload["usage"]["completion_tokens"] == 4
    assert outcome.ok and outcome.body_bytes == len(answer.content)
    assert "x-accel-buffering" not in answer.headers
    # The upstream's own refusals reach the client as it wrote them.
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}
    }
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "'messages' is required"


# --- streaming -------------------------------------------------------------------------------


async def test_stream_arrives_chunk_by_chunk(fake: Callable[..., Fake]) -> None:
    tokens, gen_ms = 8, 120
    upstream = fake("--fake-gen-ms", str(gen_ms))
    arrivals: list[tuple[float, bytes]] = []
    async with gateway(upstream.url) as (url, app), client(url) as http:
        async with http.stream("POST", "/v1/chat/completions", json=chat(tokens, stream=True)) as r:
            async for piece in r.aiter_raw():
                arrivals.append((time.monotonic(), piece))
        outcome, observer = await app.next_result()

    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["x-accel-buffering"] == "no"
    assert r.headers["transfer-encoding"] == "chunked"
    body = b"".join(piece for _, piece in arrivals)
    events = sse_events(body)
    assert events[-1] == b"data: [DONE]"
    assert len(events) == tokens + 3  # the role, one per token, the usage chunk, [DONE]
    first_token = next(t for t, piece in arrivals if b'"content":" The"' in piece)
    done = next(t for t, piece in arrivals if b"[DONE]" in piece)
    # The first token reached the client while the upstream still had 7 tokens to generate.
    assert done - first_token >= (tokens - 2) * gen_ms / 1000
    assert sum(1 for t, _ in arrivals if t < done) >= tokens - 1
    assert outcome.ok and outcome.status == 200
    assert outcome.body_bytes == len(body) and outcome.chunks >= tokens
    assert b"".join(observer.chunks) == body
    assert observer.starts[0][0] == 200
    assert (b"x-accel-buffering", b"no") in observer.starts[0][1]
    assert observer.ends == [None]


async def test_client_leaving_mid_stream_frees_the_upstream_slot(fake: Callable[..., Fake]) -> None:
    upstream = fake("--fake-gen-ms", "20")  # 100,000 tokens would take 2,000 s
    async with gateway(upstream.url) as (url, app), client(url) as http:
        payload = chat(100_000, stream=True)
        async with http.stream("POST", "/v1/chat/completions", json=payload) as r:
            pieces = r.aiter_raw()
            await read_until(pieces, b'"content":" The"')
            await wait_slot_busy(upstream.url)
        # Leaving the block closed the connection mid-body.
        outcome, observer = await app.next_result()
        took = await wait_slot_idle(upstream.url)

    assert outcome.client_disconnected and outcome.error is None and not outcome.ok
    assert outcome.status == 200
    assert observer.ends == ["client disconnected"]
    assert took < 5


async def test_client_leaving_before_the_answer_returns_at_once(fake: Callable[..., Fake]) -> None:
    upstream = fake("--fake-gen-ms", "20")
    async with gateway(upstream.url) as (url, app), client(url) as http:
        # Non-streaming: llama-server sends nothing until all 1,000 tokens (20 s) are made.
        call = asyncio.create_task(http.post("/v1/chat/completions", json=chat(1000, stream=False)))
        await wait_slot_busy(upstream.url)
        call.cancel()
        left = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        outcome, observer = await app.next_result(timeout=5)
        returned_after = time.monotonic() - left

    assert outcome.client_disconnected
    assert outcome.status is None and outcome.upstream_status is None
    assert observer.starts == [] and observer.ends == ["client disconnected"]
    assert returned_after < 2


async def test_send_failing_counts_as_a_client_that_left(fake: Callable[..., Fake]) -> None:
    """A server whose send() raises (uvicorn's ClientDisconnected is an OSError), called with a
    hand-made receive that never reports the disconnect."""
    upstream = fake("--fake-gen-ms", "20")
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and len(sent) >= 2:
            raise OSError("peer gone")
        sent.append(message)

    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    upstreams = Upstreams()
    try:
        body = json.dumps(chat(100_000, stream=True)).encode()
        async with asyncio.timeout(10):
            outcome = await relay(
                {"type": "http"},
                receive,
                send,
                session=upstreams.session(upstream.url),
                base_url=upstream.url,
                path_qs="/v1/chat/completions",
                method="POST",
                headers=[(b"content-type", b"application/json")],
                body=body,
            )
        took = await wait_slot_idle(upstream.url)
    finally:
        await upstreams.aclose()

    assert outcome.client_disconnected and outcome.status == 200
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert took < 5


# --- upstream failures -----------------------------------------------------------------------


async def test_refused_connection_is_a_502_in_openai_shape() -> None:
    base_url = f"http://127.0.0.1:{free_port()}"
    async with gateway(base_url) as (url, app), client(url) as http:
        response = await http.post("/v1/chat/completions", json=chat(4, stream=False))
        outcome, observer = await app.next_result()

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "upstream_error" and error["code"] == 502
    assert error["message"].startswith(f"{LABEL} at {base_url} refused the connection: ")
    assert outcome.status == 502 and outcome.upstream_status is None
    assert outcome.error == error["message"]
    assert observer.starts == [] and observer.ends == [error["message"]]


async def test_upstream_killed_mid_stream_ends_with_an_error_event(
    fake: Callable[..., Fake],
) -> None:
    upstream = fake("--fake-gen-ms", "20")
    received = b""
    async with gateway(upstream.url) as (url, app), client(url) as http:
        payload = chat(100_000, stream=True)
        async with asyncio.timeout(15):
            async with http.stream("POST", "/v1/chat/completions", json=payload) as r:
                async for piece in r.aiter_raw():
                    received += piece
                    if b'"content":" The"' in piece and upstream.proc.poll() is None:
                        os.kill(upstream.proc.pid, signal.SIGKILL)
        outcome, observer = await app.next_result()

    events = sse_events(received)
    assert events[0].startswith(b"data: {") and b"[DONE]" not in received
    assert received.endswith(b"\n\n")
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["type"] == "upstream_error" and error["code"] == 502
    assert error["message"].startswith(
        f"{LABEL} at {upstream.url} closed the connection in the middle of its answer"
    )
    assert outcome.status == 200 and outcome.error == error["message"]
    assert not outcome.client_disconnected
    assert observer.ends == [error["message"]]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_plain_answer_cut_short_is_not_passed_off_as_complete(framing: str) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        if framing == "content-length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b'Content-Length: 100\r\n\r\n{"choices": [')
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b'Transfer-Encoding: chunked\r\n\r\nd\r\n{"choices": [\r\n')
        await writer.drain()
        writer.close()  # the server dies mid-answer

    async with raw_upstream(answer) as (base_url, _), gateway(base_url) as (url, app):
        async with client(url) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/v1/models")
        outcome, _ = await app.next_result()

    assert outcome.status == 200 and outcome.body_bytes == 13
    assert outcome.error is not None and "in the middle of its answer" in outcome.error


async def test_event_stream_cut_mid_event_gets_the_error_as_an_event_of_its_own() -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        writer.write(b"c\r\ndata: {}\n\nda\r\n")  # one whole event and the start of another
        await writer.drain()
        writer.close()

    async with raw_upstream(answer) as (base_url, _), gateway(base_url) as (url, app):
        async with client(url) as http:
            response = await http.post("/v1/chat/completions", content=b"{}")
        outcome, _ = await app.next_result()

    events = response.content.split(b"\n\n")
    # The half event is ended, so the error cannot be glued to it.
    assert events[:2] == [b"data: {}", b"da"] and events[3:] == [b""]
    error_event = events[2]
    error = json.loads(error_event.removeprefix(b"data: "))["error"]
    assert error["type"] == "upstream_error" and error["message"] == outcome.error
    assert response.content.endswith(b"\n\n")


async def test_concurrent_streams_through_one_session(fake: Callable[..., Fake]) -> None:
    upstream = fake("--fake-gen-ms", "10")

    async def one(http: httpx.AsyncClient, n: int) -> list[bytes]:
        response = await http.post(
            "/v1/completions", json={"prompt": "x", "max_tokens": n, "stream": True}
        )
        assert response.status_code == 200
        return sse_events(response.content)

    async with gateway(upstream.url) as (url, app), client(url) as http:
        results = await asyncio.gather(*(one(http, n) for n in range(5, 13)))
        outcomes = [(await app.next_result())[0] for _ in results]

    for n, events in zip(range(5, 13), results, strict=True):
        assert len(events) == n + 2 and events[-1] == b"data: [DONE]"
    assert all(outcome.ok for outcome in outcomes)


# --- a stream the caller started -------------------------------------------------------------


async def test_started_stream_relays_only_the_body(fake: Callable[..., Fake]) -> None:
    upstream = fake("--fake-gen-ms", "0")
    async with gateway(upstream.url) as (url, app), client(url) as http:
        response = await http.post(
            "/v1/chat/completions", json=chat(3, stream=True), headers={"x-test-started": "1"}
        )
        outcome, observer = await app.next_result()

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content.startswith(WAITING + b"data: {")
    assert sse_events(response.content)[-1] == b"data: [DONE]"
    assert outcome.ok and outcome.status == 200 and outcome.upstream_status == 200
    assert outcome.body_bytes == len(response.content) - len(WAITING)
    assert observer.starts[0][0] == 200


async def test_started_stream_turns_an_upstream_refusal_into_one_error_event(
    fake: Callable[..., Fake],
) -> None:
    upstream = fake()
    async with gateway(upstream.url) as (url, app), client(url) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "demo", "stream": True},  # no messages: llama-server answers 400
            headers={"x-test-started": "1"},
        )
        outcome, _ = await app.next_result()

    assert response.status_code == 200
    error = {"message": "'messages' is required", "type": "invalid_request_error", "code": 400}
    assert (
        response.content
        == WAITING
        + b"data: "
        + json.dumps({"error": error}, separators=(",", ":")).encode()
        + b"\n\n"
    )
    assert outcome.status == 200 and outcome.upstream_status == 400
    assert outcome.error == "'messages' is required"


async def test_started_stream_with_no_upstream_ends_with_an_error_event() -> None:
    base_url = f"http://127.0.0.1:{free_port()}"
    async with gateway(base_url) as (url, app), client(url) as http:
        response = await http.post(
            "/v1/chat/completions", json=chat(3, stream=True), headers={"x-test-started": "1"}
        )
        outcome, _ = await app.next_result()

    assert response.status_code == 200
    events = sse_events(response.content)
    assert len(events) == 2 and events[0] == WAITING.rstrip(b"\n")
    error = json.loads(events[1].removeprefix(b"data: "))["error"]
    assert error["type"] == "upstream_error" and error["code"] == 502
    assert "refused the connection" in error["message"]
    assert outcome.status == 200 and outcome.error == error["message"]


# --- request bodies and error helpers --------------------------------------------------------


def receiver(messages: list[dict[str, Any]]) -> tuple[Callable[[], Awaitable[Any]], list[int]]:
    """A hand-made receive() over `messages`; the list counts how many were taken."""
    taken = [0]

    async def receive() -> dict[str, Any]:
        message = messages[taken[0]]
        taken[0] += 1
        return message

    return receive, taken


async def test_read_body_joins_parts_and_enforces_the_limit() -> None:
    parts = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"defg", "more_body": False},
    ]
    receive, _ = receiver(parts)
    assert await read_body(receive, 7) == b"abcdefg"

    receive, taken = receiver([*parts, {"type": "http.request", "body": b"never read"}])
    with pytest.raises(BodyTooLarge) as too_large:
        await read_body(receive, 6)
    assert too_large.value.limit == 6 and taken == [3]

    receive, taken = receiver([{"type": "http.request", "body": b"x" * 9}])
    with pytest.raises(BodyTooLarge):
        await read_body(receive, 8)

    receive, _ = receiver([{"type": "http.request"}])
    assert await read_body(receive, 0) == b""

    receive, _ = receiver([parts[0], {"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnected):
        await read_body(receive, 100)
    receive, _ = receiver([{"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnected):
        await read_body(receive, 100)


async def test_a_body_over_the_limit_is_refused_over_http() -> None:
    base_url = f"http://127.0.0.1:{free_port()}"
    async with gateway(base_url, limit=1024) as (url, app), client(url) as http:
        response = await http.post("/v1/completions", content=b"x" * 4096)

    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "message": "request body larger than 1024 bytes",
            "type": "invalid_request_error",
            "code": 413,
        }
    }
    assert app.results.empty()  # nothing went upstream


async def test_error_helpers_write_openai_shaped_messages() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await send_error(send, 429, "queue full", "rate_limit", headers=[(b"retry-after", b"3")])
    start, body = sent
    assert start["status"] == 429
    assert (b"retry-after", b"3") in start["headers"]
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]
    assert json.loads(body["body"]) == {
        "error": {"message": "queue full", "type": "rate_limit", "code": 429}
    }
    assert body["more_body"] is False

    sent.clear()
    await send_sse_start(send)
    await send_sse_error(send, "model unloaded", "unavailable", code="model_gone")
    assert sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream") in sent[0]["headers"]
    assert sent[1] == {
        "type": "http.response.body",
        "body": b'data: {"error":{"message":"model unloaded","type":"unavailable",'
        b'"code":"model_gone"}}\n\n',
        "more_body": False,
    }


# --- sessions --------------------------------------------------------------------------------


async def test_one_session_per_base_url_until_forgotten() -> None:
    upstreams = Upstreams()
    first = upstreams.session("http://127.0.0.1:1")
    assert upstreams.session("http://127.0.0.1:1/") is first
    other = upstreams.session("http://127.0.0.1:2")
    assert other is not first
    await upstreams.forget("http://127.0.0.1:1/")
    assert first.closed and not other.closed
    again = upstreams.session("http://127.0.0.1:1")
    assert again is not first
    await upstreams.forget("http://127.0.0.1:9")  # unknown: nothing to do
    await upstreams.aclose()
    assert other.closed and again.closed

    # A route that still holds a forgotten session gets a 502, not an exception.
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # a client that stays
        raise AssertionError("unreachable")

    outcome = await relay(
        {"type": "http"},
        receive,
        send,
        session=first,
        base_url="http://127.0.0.1:1",
        path_qs="/v1/models",
        method="GET",
        headers=[],
        body=b"",
    )
    assert outcome.status == 502 and sent[0]["status"] == 502
    assert (
        outcome.error
        == "llama-server at http://127.0.0.1:1 is no longer served (its session was closed)"
    )


# --- the real llama-server -------------------------------------------------------------------


@pytest.fixture
def real_server(real_binary: Path, demo_model: Path, spawn_external: Spawn) -> Iterator[str]:
    """The real llama-server with the demo model, one slot, /slots and /metrics on. The
    model's 2,048-token training context is raised to 32,768 so that a generation left alone
    runs for tens of seconds: long enough to see whether a departed client stopped it."""
    port = free_port()
    argv = [str(real_binary), "-m", str(demo_model), "--host", "127.0.0.1", "--port", str(port)]
    context = ["-c", "32768", "--override-kv", "llama.context_length=int:32768"]
    spawn_external([*argv, *context, "-np", "1", "--slots", "--metrics"])
    wait_http_ready(port, 60)
    yield f"http://127.0.0.1:{port}"


LONG = 30_000  # tokens: 30 s or more of generation for this model on a small CPU


def real_chat(n: int, *, stream: bool) -> dict[str, Any]:
    # Random weights may emit end-of-sequence at any time; ignore_eos keeps them generating.
    return chat(n, stream=stream, ignore_eos=True)


async def tokens_predicted(base_url: str) -> float:
    """llama-server's count of tokens generated so far, cancelled generations included."""
    async with httpx.AsyncClient(trust_env=False) as http:
        text = (await http.get(f"{base_url}/metrics", timeout=5)).text
    for line in text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total "):
            return float(line.split()[1])
    raise AssertionError(f"no tokens_predicted_total in {text!r}")


@pytest.mark.real_server
async def test_real_server_stream_arrives_chunk_by_chunk(real_server: str) -> None:
    tokens = 1500
    arrivals: list[tuple[float, bytes]] = []
    async with gateway(real_server) as (url, app), client(url) as http:
        began = time.monotonic()
        payload = real_chat(tokens, stream=True)
        async with http.stream("POST", "/v1/chat/completions", json=payload) as r:
            async for piece in r.aiter_raw():
                arrivals.append((time.monotonic(), piece))
        outcome, _ = await app.next_result()

    assert r.status_code == 200 and r.headers["x-accel-buffering"] == "no"
    body = b"".join(piece for _, piece in arrivals)
    events = sse_events(body)
    assert events[-1] == b"data: [DONE]"
    # llama-server's last chunk carries the timings (usage only with stream_options).
    assert json.loads(events[-2].removeprefix(b"data: "))["timings"]["predicted_n"] == tokens
    first = next(t for t, piece in arrivals if b'"content":' in piece)
    done = next(t for t, piece in arrivals if b"[DONE]" in piece)
    # The first token arrived in the first half of the generation, not at its end.
    assert first - began < (done - began) / 2
    assert len(arrivals) >= 10
    assert outcome.ok and outcome.body_bytes == len(body)


@pytest.mark.real_server
async def test_real_server_stops_generating_when_the_client_leaves_a_stream(
    real_server: str,
) -> None:
    async with gateway(real_server) as (url, app), client(url) as http:
        payload = real_chat(LONG, stream=True)
        async with http.stream("POST", "/v1/chat/completions", json=payload) as r:
            pieces = r.aiter_raw()
            await read_until(pieces, b'"content":')
            await wait_slot_busy(real_server)
        outcome, _ = await app.next_result()
        took = await wait_slot_idle(real_server)
        generated = await tokens_predicted(real_server)
        # The slot is free for the next request, which completes in full.
        answer = await http.post("/v1/chat/completions", json=real_chat(5, stream=False))

    assert outcome.client_disconnected and outcome.status == 200
    assert took < 5
    assert generated < LONG / 3
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens"] == 5


@pytest.mark.real_server
async def test_real_server_stops_generating_when_the_client_leaves_before_the_answer(
    real_server: str,
) -> None:
    async with gateway(real_server) as (url, app), client(url) as http:
        call = asyncio.create_task(
            http.post("/v1/chat/completions", json=real_chat(LONG, stream=False))
        )
        await wait_slot_busy(real_server)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        outcome, _ = await app.next_result(timeout=5)
        # Not GET /slots here: llama-server looks for a closed connection of a non-streaming
        # request about once a second, and while /slots was polled every 20 ms it did not
        # notice at all. A second request waits for the only slot instead.
        began = time.monotonic()
        answer = await http.post("/v1/chat/completions", json=real_chat(5, stream=False))
        waited = time.monotonic() - began
        generated = await tokens_predicted(real_server)

    assert outcome.client_disconnected and outcome.status is None
    assert answer.status_code == 200
    assert waited < 10
    assert generated < LONG / 3
