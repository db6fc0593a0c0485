"""Connection limits against a real uvicorn in the test's event loop, driven by raw sockets:
idle and slowloris connections are closed by the header timeout, caps answer 503, and the
counts return to zero whatever closed a connection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from llamaherd.api.connections import (
    ConnectionCounts,
    ConnectionLimits,
    WarningThrottle,
    guarded_http_protocol,
    refusal,
)
from tests.conftest import free_port
from tests.serving import serve_uvicorn
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

HEADER_TIMEOUT_S = 0.3
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 "ok" to any request, once its body is in (`/early`: at once, as `/healthz` answers,
    without reading the body); a WebSocket is accepted and kept until the client leaves."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["path"] != "/early":
        while (await receive()).get("more_body"):
            pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """Opens raw connections to the server, and closes whatever a test left open."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened: list[Connection] = []

    async def connect(self) -> Connection:
        async with asyncio.timeout(5):
            connection = await asyncio.open_connection("127.0.0.1", self.port)
        self.opened.append(connection)
        return connection

    async def close_all(self) -> None:
        for connection in self.opened:
            await close(connection)


@contextlib.asynccontextmanager
async def serving(limits: ConnectionLimits, counts: ConnectionCounts) -> AsyncIterator[Client]:
    """uvicorn with the guarded protocol on a free port. At the end every connection must
    have been released."""
    config = uvicorn.Config(
        ok_app,
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="off",
        http=guarded_http_protocol(limits, counts=counts),
    )
    async with serve_uvicorn(config, stop_timeout_s=15):
        client = Client(config.port)
        try:
            yield client
        finally:
            await client.close_all()
    assert (counts.total, counts.clients) == (0, 0)


async def request(connection: Connection, extra: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One GET on the connection; the status, the headers (lower-case names) and the body."""
    connection[1].write(b"GET / HTTP/1.1\r\nHost: test\r\n" + extra + b"\r\n")
    return await answer_of(connection)


async def answer_of(connection: Connection) -> tuple[int, dict[str, str], bytes]:
    """The next answer on the connection: its status, headers (lower-case names) and body."""
    reader = connection[0]
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode().rstrip("\r\n").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()


async def still_open(reader: asyncio.StreamReader, for_s: float) -> bool:
    """True if nothing arrives and the connection stays open for `for_s` seconds."""
    try:
        async with asyncio.timeout(for_s):
            await reader.read(1)
    except TimeoutError:
        return True
    return False


async def close(connection: Connection) -> None:
    writer = connection[1]
    writer.close()
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(5):
            await writer.wait_closed()


def limits(**kwargs: Any) -> ConnectionLimits:
    return ConnectionLimits(**{"header_timeout_s": HEADER_TIMEOUT_S, **kwargs})


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    counts = ConnectionCounts()
    async with serving(limits(), counts) as client:
        started = time.monotonic()
        reader, _ = await client.connect()
        await until(lambda: counts.total == 1)
        assert await still_open(reader, 0.1)
        answer = await read_to_eof(reader)
        elapsed = time.monotonic() - started
        assert HEADER_TIMEOUT_S - 0.05 <= elapsed < HEADER_TIMEOUT_S + 3
        assert answer.startswith(b"HTTP/1.1 408 ")
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == 408
        assert "header_timeout_s" in error["message"]
        await until(lambda: counts.total == 0)


async def test_a_slowloris_is_closed_by_the_header_timeout() -> None:
    counts = ConnectionCounts()
    async with serving(limits(), counts) as client:
        reader, writer = await client.connect()
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        sent, answer = 0, b""
        async with asyncio.timeout(5):
            while not answer:
                try:
                    async with asyncio.timeout(0.05):
                        answer = await reader.read(1) or b"(closed without an answer)"
                except TimeoutError:
                    writer.write(b"a")
                    sent += 1
        elapsed = time.monotonic() - started
        assert HEADER_TIMEOUT_S - 0.05 <= elapsed < HEADER_TIMEOUT_S + 3
        assert sent >= 3  # it kept sending, and was closed all the same
        assert (answer + await read_to_eof(reader)).startswith(b"HTTP/1.1 408 ")
        await until(lambda: counts.total == 0)


async def test_a_keep_alive_client_is_unaffected_and_its_next_request_is_timed() -> None:
    counts = ConnectionCounts()
    async with serving(limits(), counts) as client:
        connection = await client.connect()
        for _ in range(5):
            status, _, body = await request(connection)
            assert (status, body) == (200, b"ok")
        # Idle longer than the header timeout between requests: that is keep-alive's business.
        assert await still_open(connection[0], HEADER_TIMEOUT_S * 2)
        assert (await request(connection))[0] == 200
        # The next request starts and stalls: its headers are timed from its first byte.
        connection[1].write(b"GET / HTTP/1.1\r\n")
        assert await still_open(connection[0], 0.1)
        assert (await read_to_eof(connection[0])).startswith(b"HTTP/1.1 408 ")
        await until(lambda: counts.total == 0)


BODY_TIMEOUT_S = 0.4
LONG_BODY = b"Content-Length: 1000000\r\n\r\n"


async def drip(connection: Connection, head: bytes, byte: bytes = b"x") -> tuple[bytes, int, float]:
    """Send `head`, then `byte` every 50 ms for as long as the server keeps the connection open.
    What the server said, how many bytes were dripped, and the seconds until it closed."""
    reader, writer = connection
    started = time.monotonic()
    writer.write(head)
    said, sent = b"", 0
    async with asyncio.timeout(5):
        while True:
            try:
                async with asyncio.timeout(0.05):
                    chunk = await reader.read(65536)
            except TimeoutError:
                writer.write(byte)
                sent += 1
                continue
            except ConnectionResetError:
                chunk = b""  # a byte sent as it closed the connection: closed all the same
            if not chunk:
                return said, sent, time.monotonic() - started
            said += chunk


@pytest.mark.parametrize(
    ("head", "byte"),
    [
        (b"POST / HTTP/1.1\r\nHost: test\r\n" + LONG_BODY, b"x"),
        (b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n"),
    ],
    ids=["content-length", "chunked"],
)
async def test_a_dripped_body_is_cut_with_408_at_the_body_deadline(
    head: bytes, byte: bytes
) -> None:
    counts = ConnectionCounts()
    async with serving(limits(body_timeout_s=BODY_TIMEOUT_S), counts) as client:
        said, sent, elapsed = await drip(await client.connect(), head, byte)
        # Each byte arrives well within the timeout: only a deadline from the headers cuts it.
        assert sent >= 4
        assert BODY_TIMEOUT_S - 0.05 <= elapsed < BODY_TIMEOUT_S + 3
        assert said.startswith(b"HTTP/1.1 408 "), said
        head_part, _, body = said.partition(b"\r\n\r\n")
        assert b"connection: close" in head_part
        error = json.loads(body)["error"]
        assert error["code"] == 408
        assert "0.4 s of its headers (body_timeout_s)" in error["message"]
        await until(lambda: counts.total == 0)


async def test_a_body_dripped_after_an_early_answer_is_cut_at_the_deadline_too() -> None:
    """`GET /healthz` with a long body: answered at once, then held for ever by the body's
    bytes, each of which put off uvicorn's keep-alive timeout."""
    counts = ConnectionCounts()
    async with serving(limits(body_timeout_s=BODY_TIMEOUT_S), counts) as client:
        head = b"GET /early HTTP/1.1\r\nHost: test\r\n" + LONG_BODY
        said, sent, elapsed = await drip(await client.connect(), head)
        assert said.startswith(b"HTTP/1.1 200 ")
        assert said.endswith(b"\r\n\r\nok")  # its answer, and nothing after it
        assert sent >= 4
        assert BODY_TIMEOUT_S - 0.05 <= elapsed < BODY_TIMEOUT_S + 3
        await until(lambda: counts.total == 0)


async def test_a_body_in_time_is_served_and_its_connection_kept() -> None:
    counts = ConnectionCounts()
    async with serving(limits(body_timeout_s=BODY_TIMEOUT_S), counts) as client:
        connection = await client.connect()
        for _ in range(2):
            connection[1].write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 6\r\n\r\nabc")
            await asyncio.sleep(BODY_TIMEOUT_S / 4)
            connection[1].write(b"def")
            status, _, body = await answer_of(connection)
            assert (status, body) == (200, b"ok")
            # Past the deadline of the body just sent: no timer of it is left behind.
            assert await still_open(connection[0], BODY_TIMEOUT_S * 1.5)
        await close(connection)
        await until(lambda: counts.total == 0)


async def test_beyond_the_per_client_cap_a_connection_gets_503_until_one_closes() -> None:
    counts = ConnectionCounts()
    async with serving(limits(max_per_client=3, max_connections=100), counts) as client:
        admitted = [await client.connect() for _ in range(3)]
        for connection in admitted:
            assert (await request(connection))[0] == 200
        assert counts.open_from("127.0.0.1") == 3

        refused = await client.connect()
        status, headers, body = await request(refused)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["type"] == "service_unavailable"
        assert error["code"] == 503
        assert "127.0.0.1" in error["message"]
        assert "3 open" in error["message"]
        assert "max_connections_per_client" in error["message"]
        assert await read_to_eof(refused[0]) == b""
        assert counts.open_from("127.0.0.1") == 3  # a refused connection is never counted

        await close(admitted.pop())
        await until(lambda: counts.total == 2)
        again = await client.connect()
        assert (await request(again))[0] == 200
        await client.close_all()
        await until(lambda: counts.total == 0)


async def test_beyond_the_total_cap_a_connection_gets_503_naming_max_connections() -> None:
    counts = ConnectionCounts()
    async with serving(limits(max_per_client=50, max_connections=2), counts) as client:
        admitted = [await client.connect() for _ in range(2)]
        for connection in admitted:
            assert (await request(connection))[0] == 200
        refused = await client.connect()
        status, headers, body = await request(refused)
        assert status == 503
        assert headers["retry-after"] == "1"
        message = json.loads(body)["error"]["message"]
        assert "in total (2 open; max_connections)" in message
        assert "max_connections_per_client" not in message
        await client.close_all()
        await until(lambda: counts.total == 0)


async def test_connections_closed_by_the_server_or_by_timeouts_are_all_released() -> None:
    counts = ConnectionCounts()
    async with serving(limits(max_per_client=4), counts) as client:
        idle = [await client.connect() for _ in range(3)]
        closing = await client.connect()
        await until(lambda: counts.total == 4)
        # Closed by the server after its answer: released before the client sees the end.
        assert (await request(closing, b"Connection: close\r\n"))[0] == 200
        assert await read_to_eof(closing[0]) == b""
        assert counts.total == 3
        for reader, _ in idle:
            assert (await read_to_eof(reader)).startswith(b"HTTP/1.1 408 ")
        await until(lambda: counts.total == 0)


def upgrade_request() -> bytes:
    key = base64.b64encode(b"0123456789abcdef")
    return (
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


async def test_a_websocket_stays_counted_until_it_closes_and_a_refused_one_cannot_upgrade() -> None:
    counts = ConnectionCounts()
    async with serving(limits(max_per_client=1), counts) as client:
        socket_connection = await client.connect()
        socket_connection[1].write(upgrade_request())
        async with asyncio.timeout(5):
            head = await socket_connection[0].readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        # Upgraded long ago, yet still open and counted: the header timeout is not its business.
        assert await still_open(socket_connection[0], HEADER_TIMEOUT_S * 2)
        assert counts.total == 1

        refused = await client.connect()
        refused[1].write(upgrade_request())
        answer = await read_to_eof(refused[0])
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"max_connections_per_client" in answer

        await close(socket_connection)
        await until(lambda: counts.total == 0)


async def test_refusals_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    counts = ConnectionCounts()
    caplog.set_level(logging.WARNING, logger="llamaherd.connections")
    async with serving(limits(max_per_client=1, warning_interval_s=60), counts) as client:
        admitted = await client.connect()
        assert (await request(admitted))[0] == 200
        for _ in range(4):
            refused = await client.connect()
            assert (await request(refused, b"X-Secret: hunter2\r\n"))[0] == 503
            await close(refused)
        await close(admitted)
        await until(lambda: counts.total == 0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "llamaherd.connections"]
    assert len(warnings) == 1
    assert "max_connections_per_client" in warnings[0]
    assert "hunter2" not in caplog.text


def test_the_throttle_counts_what_it_left_out() -> None:
    throttle = WarningThrottle(10)
    assert throttle.due("a", now=100) == 0
    assert throttle.due("a", now=101) is None
    assert throttle.due("b", now=102) == 0  # each reason on its own clock
    assert throttle.due("a", now=105) is None
    assert throttle.due("a", now=110) == 2
    assert throttle.due("a", now=111) is None


def test_the_decision_names_the_cap_that_refused() -> None:
    caps = ConnectionLimits(max_connections=10, max_per_client=2)
    assert refusal(caps, total=9, from_client=1, host="10.0.0.1") is None
    per_client = refusal(caps, total=5, from_client=2, host="10.0.0.1")
    assert per_client is not None
    assert per_client.key == "max_connections_per_client"
    assert "10.0.0.1 (2 open" in per_client.message
    total = refusal(caps, total=10, from_client=0, host="10.0.0.2")
    assert total is not None
    assert total.key == "max_connections"
    # A local (Unix) socket has no address: only the total applies to it.
    assert refusal(caps, total=9, from_client=0, host=None) is None


@pytest.mark.parametrize(
    "settings",
    [
        {"max_connections": 0},
        {"max_per_client": 0},
        {"header_timeout_s": 0},
        {"body_timeout_s": 0},
    ],
)
def test_limits_that_would_refuse_everything_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(**settings)


def test_without_httptools_the_factory_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)
    with pytest.raises(ImportError, match="install httptools"):
        guarded_http_protocol(ConnectionLimits())
