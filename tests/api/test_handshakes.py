"""Engine.IO sessions waiting for an authorized Socket.IO connect are bounded in number (per
client address and in all) and in time, against the real python-engineio served by uvicorn.

Clients come from 127.0.0.1 and 127.0.0.2 (both loopback on Linux) to be two addresses."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import uvicorn
from socketio.exceptions import ConnectionError as SocketConnectionError

from llamaherd.api.access import AccessPolicy, KeyRing
from llamaherd.api.handshakes import HandshakeLimits
from llamaherd.api.hub import EventHub
from llamaherd.api.realtime import create_socketio
from llamaherd.gateway.herd import herd_of_one
from llamaherd.supervisor.service import LlamaService
from llamaherd.telemetry.assembly import Telemetry
from tests.conftest import ServiceFactory, free_port
from tests.serving import serve_uvicorn
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

ADMIN = "admin-key-0123456789abcdef"
OTHER_ADDRESS = "127.0.0.2"
HANDSHAKE = {"EIO": "4", "transport": "polling"}


Served = Callable[[HandshakeLimits], contextlib.AbstractAsyncContextManager[tuple[str, Any]]]


@pytest.fixture
def serve(make_service: ServiceFactory, fake_binary: Path, model_file: Path) -> Served:
    """`serve(limits)`: llamaherd's Socket.IO server alone (an admin key required) on a free
    port; its URL and the server, whose Engine.IO sessions the tests count."""
    service = make_service(binary=fake_binary, model_path=model_file)  # never started
    return functools.partial(socketio_server, service)


@contextlib.asynccontextmanager
async def socketio_server(
    service: LlamaService, limits: HandshakeLimits
) -> AsyncIterator[tuple[str, socketio.AsyncServer]]:
    herd = herd_of_one(service)
    access = AccessPolicy(keys=KeyRing([("ops", ADMIN, ["admin"])]))
    sio = create_socketio(
        service, EventHub(service), herd, Telemetry(herd), access, handshakes=limits
    )
    config = uvicorn.Config(
        socketio.ASGIApp(sio, socketio_path="socket.io"),
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="off",
    )
    try:
        async with serve_uvicorn(config) as url:
            yield url, sio
    finally:
        await sio.shutdown()


def http_from(url: str, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=10)


async def handshakes(http: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    """`n` polling handshakes, 20 at a time."""
    answers: list[httpx.Response] = []
    while len(answers) < n:
        batch = min(20, n - len(answers))
        answers += await asyncio.gather(
            *(http.get("/socket.io/", params=HANDSHAKE) for _ in range(batch))
        )
    return answers


def sid_of(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    assert answer.text.startswith("0"), answer.text  # the Engine.IO OPEN packet
    return str(json.loads(answer.text[1:])["sid"])


def error_of(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == 503
    assert error["type"] == "service_unavailable"
    return error


async def connect_by_polling(http: httpx.AsyncClient, token: str) -> tuple[str, list[str]]:
    """A Socket.IO connect over long-polling, as a browser without WebSocket makes it: the
    handshake, the connect packet with `token`, then one poll. The session and the kinds of
    packet that poll brought (`40`: connected; `44`: refused; `42`: an event). (python-socketio's
    own client takes 30 s to leave a polling session, so the tests speak the protocol.)"""
    sid = sid_of((await handshakes(http, 1))[0])
    session = {**HANDSHAKE, "sid": sid}
    sent = await http.post("/socket.io/", params=session, content=f'40{{"token":"{token}"}}')
    assert sent.status_code == 200, sent.text
    polled = await http.get("/socket.io/", params=session)
    assert polled.status_code == 200, polled.text
    return sid, [packet[:2] for packet in polled.text.split("\x1e")]


async def close_by_polling(http: httpx.AsyncClient, sid: str) -> None:
    closed = await http.post("/socket.io/", params={**HANDSHAKE, "sid": sid}, content="1")
    assert closed.status_code == 200, closed.text


@contextlib.asynccontextmanager
async def admin_client(url: str) -> AsyncIterator[socketio.AsyncClient]:
    """A dashboard's connection over a WebSocket: an admin key in the connect payload; its
    first llamaStatus has arrived."""
    client = socketio.AsyncClient(reconnection=False)
    statuses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    client.on("llamaStatus", statuses.put_nowait)
    await client.connect(url, auth={"token": ADMIN}, transports=["websocket"], wait_timeout=10)
    try:
        async with asyncio.timeout(10):
            assert (await statuses.get())["type"] == "llama_status"
        yield client
    finally:
        await client.disconnect()


async def test_a_flood_of_handshakes_is_refused_beyond_the_cap_and_others_still_connect(
    serve: Served,
) -> None:
    limits = HandshakeLimits(max_per_client=5, max_total=50, connect_timeout_s=30)
    async with serve(limits) as (url, sio), http_from(url, OTHER_ADDRESS) as flood:
        answers = await handshakes(flood, 300)
        assert len([sid_of(a) for a in answers if a.status_code == 200]) == 5
        refused = [a for a in answers if a.status_code != 200]
        assert len(refused) == 295
        error = error_of(refused[0])
        assert error["message"] == (
            f"too many Socket.IO sessions waiting for a connect from {OTHER_ADDRESS} "
            "(5 open; max_socketio_pending_per_client)"
        )
        assert len(sio.eio.sockets) == 5

        # Another address is not held up by that one: its dashboards connect, and a connected
        # session no longer counts as waiting: six of them, with a cap of five, and room for
        # five handshakes still.
        async with admin_client(url), http_from(url) as http:
            connected = []
            for _ in range(5):
                sid, packets = await connect_by_polling(http, ADMIN)
                assert "40" in packets, packets
                connected.append(sid)
            assert len(sio.eio.sockets) == 5 + 6
            for answer in await handshakes(http, 5):
                sid_of(answer)
            assert (await handshakes(http, 1))[0].status_code == 503
            for sid in connected:
                await close_by_polling(http, sid)
        assert (await handshakes(flood, 1))[0].status_code == 503


async def test_a_session_without_an_authorized_connect_is_closed_at_its_deadline(
    serve: Served,
) -> None:
    limits = HandshakeLimits(max_per_client=2, max_total=50, connect_timeout_s=0.5)
    async with serve(limits) as (url, sio), http_from(url) as http:
        # One client is refused for its key (its session stays, waiting), one never connects
        # and only polls.
        refused, packets = await connect_by_polling(http, "not-the-key-0123456789")
        assert packets == ["44"], packets
        silent = sid_of((await handshakes(http, 1))[0])
        assert len(sio.eio.sockets) == 2
        assert "(2 open;" in error_of((await handshakes(http, 1))[0])["message"]

        # At the deadline a poll held open is answered with the close packet, at once.
        held = await http.get("/socket.io/", params={**HANDSHAKE, "sid": silent})
        assert (held.status_code, held.text) == (200, "1")
        await until(lambda: not sio.eio.sockets)
        for sid in (refused, silent):
            poll = await http.get("/socket.io/", params={**HANDSHAKE, "sid": sid})
            assert poll.status_code == 400  # the session is gone

        # Admitted again; a dashboard connects and stays past the deadline.
        async with admin_client(url) as dashboard:
            sid_of((await handshakes(http, 1))[0])
            await asyncio.sleep(limits.connect_timeout_s * 2)
            assert dashboard.connected
            assert len(sio.eio.sockets) == 1  # the dashboard's, not the other one's


async def test_beyond_the_total_cap_every_address_is_refused_a_websocket_too(serve: Served) -> None:
    limits = HandshakeLimits(max_per_client=50, max_total=3, connect_timeout_s=30)
    async with (
        serve(limits) as (url, sio),
        http_from(url, OTHER_ADDRESS) as flood,
        http_from(url) as http,
    ):
        for answer in await handshakes(flood, 3):
            sid_of(answer)
        error = error_of((await handshakes(http, 1))[0])
        assert error["message"] == (
            "too many Socket.IO sessions waiting for a connect in total "
            "(3 open; max_socketio_pending)"
        )
        client = socketio.AsyncClient(reconnection=False)
        with pytest.raises(SocketConnectionError):
            await client.connect(url, auth={"token": ADMIN}, transports=["websocket"])
        await client.disconnect()
        assert len(sio.eio.sockets) == 3


async def test_handshakes_that_make_no_session_are_not_counted(serve: Served) -> None:
    limits = HandshakeLimits(max_per_client=2, max_total=50, connect_timeout_s=30)
    async with serve(limits) as (url, sio), http_from(url) as http:
        for _ in range(5):  # an Engine.IO version it does not speak
            answer = await http.get("/socket.io/", params={"EIO": "3", "transport": "polling"})
            assert answer.status_code == 400
        async with admin_client(url):  # its session ends with its WebSocket
            pass
        await until(lambda: not sio.eio.sockets)
        for answer in await handshakes(http, 2):
            sid_of(answer)


@pytest.mark.parametrize(
    "settings",
    [{"max_total": 0}, {"max_per_client": 0}, {"connect_timeout_s": 0}],
)
def test_limits_that_would_refuse_everything_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HandshakeLimits(**settings)
