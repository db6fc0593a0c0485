"""Socket.IO and Engine.IO packets that break the protocol, sent without a key: a polling POST
is answered 400 in OpenAI's error shape, a websocket message closes its websocket (1008), and
neither costs a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.api.conftest import serve_app, socketio_client
from tests.conftest import ServiceFactory

pytestmark = pytest.mark.timeout(60)

DEEP = "[" * 100_000
BROKEN_PAYLOADS = [
    "42" + DEEP,  # a Socket.IO event nested too deeply
    "4" + DEEP,  # an Engine.IO message that Engine.IO itself reads as JSON
    '40{"token":' * 50_000,  # a connect payload (the key) nested too deeply
    '42["requestLlamaStatus"',  # JSON that does not end
    "42[]",  # an event without a name
    '42{"a":1}',  # an event that is not a list
    '42["connect"]',  # python-socketio's own handler's name
    '451-["requestLlamaStatus",{"_placeholder":true,"num":0}]',  # binary: not ours
    "x",  # not an Engine.IO packet
]


def assert_no_traceback(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # python-socketio and Engine.IO log through their own stderr handlers, and propagate.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]


async def _polling_session(http: httpx.AsyncClient) -> str:
    """An Engine.IO session over long polling (no key needed): its sid."""
    opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert opened.status_code == 200, opened.text
    assert opened.text.startswith("0"), opened.text
    return str(json.loads(opened.text[1:])["sid"])


@pytest.fixture
async def url(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> AsyncIterator[str]:
    """A llamaherd of one (fake, unloaded) model, served."""
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service, start_service=False) as served:
        yield served


async def _post(http: httpx.AsyncClient, payload: bytes) -> httpx.Response:
    """`payload` POSTed into a new polling session."""
    sid = await _polling_session(http)
    params = {"EIO": "4", "transport": "polling", "sid": sid}
    headers = {"content-type": "text/plain;charset=UTF-8"}
    return await http.post("/socket.io/", params=params, content=payload, headers=headers)


async def test_a_polling_post_that_does_not_parse_is_a_400(
    url: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.ERROR)
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        for payload in BROKEN_PAYLOADS:
            answer = await _post(http, payload.encode())
            assert answer.status_code == 400, (payload[:40], answer.text)
            error = answer.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"].startswith("the Socket.IO payload does not parse: ")
        good = await _post(http, b"40")  # a connect: still goes through
        assert good.status_code == 200 and good.text == "OK"
    assert_no_traceback(caplog, capfd)


async def test_a_websocket_packet_that_breaks_the_protocol_costs_no_traceback(
    url: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.ERROR)
    ws_url = "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession(base_url=url) as session:
        for payload in BROKEN_PAYLOADS:
            async with session.ws_connect(ws_url, max_msg_size=0) as ws:
                assert (await ws.receive_str(timeout=10)).startswith("0")  # Engine.IO open
                await ws.send_str("40")
                # Connected: the connect handler's events, then the connect's answer.
                while not (await ws.receive_str(timeout=10)).startswith("40"):
                    pass
                await ws.send_str(payload)
                while not ws.closed:
                    await ws.receive(timeout=10)
                assert ws.close_code == 1008, payload[:40]
    # The server serves the next client as ever.
    async with socketio_client(url) as (_, log):
        await log.wait_count(1)
    assert_no_traceback(caplog, capfd)


async def test_an_event_with_more_arguments_than_its_handler_takes_is_answered(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with socketio_client(url) as (client, _):
        answer = await client.call("loadModel", ({"id": "nope"}, 2, 3), timeout=10)
    assert answer["ok"] is False and "'nope'" in answer["error"]
    assert not [r for r in caplog.records if r.exc_info], caplog.text
