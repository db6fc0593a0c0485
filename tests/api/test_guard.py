"""Cross-site requests and DNS rebinding are refused; same-origin and CLI use is not."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from llamaherd.api.guard import BrowserGuard
from tests.api.conftest import serve_app
from tests.conftest import ServiceFactory

pytestmark = pytest.mark.timeout(30)


async def test_cross_origin_control_is_refused(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with (
        serve_app(service, start_service=False) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        evil = await http.post("/api/llama/stop", headers={"Origin": "https://evil.example"})
        same = await http.post("/api/llama/stop", headers={"Origin": url})
        cli = await http.post("/api/llama/stop")  # no Origin: not a browser
        read = await http.get("/api/status", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert evil.json()["error"] == {
        "message": "cross-origin POST from https://evil.example refused",
        "type": "forbidden",
    }
    assert same.status_code == 200 and cli.status_code == 200
    assert read.status_code == 200


async def test_rebound_host_names_are_refused(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with (
        serve_app(service, start_service=False) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        rebound = await http.get("/api/status", headers={"Host": "attacker.example:3000"})
        local = await http.get("/api/status", headers={"Host": "localhost:3000"})
    assert rebound.status_code == 403
    assert "not a loopback name" in rebound.json()["error"]["message"]
    assert local.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "[zz"},
        {"Host": "[::1"},
        {"Host": "a]"},
        {"Host": "[zz]:3000"},
        {"Origin": "http://[zz"},
    ],
)
async def test_malformed_host_or_origin_is_a_400_not_a_crash(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    headers: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with (
        serve_app(service, start_service=False) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        got = await http.post("/api/llama/stop", headers=headers)
        read = await http.get("/api/status", headers=headers)
    for answer in (got, read):
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["type"] == "bad_request"
        assert repr(next(iter(headers.values()))) in error["message"]
    # uvicorn logs an exception in the app through its own handler, onto stderr.
    assert "Traceback" not in capsys.readouterr().err


async def _websocket_close_code(headers: list[tuple[bytes, bytes]]) -> object:
    """The guard's answer to a websocket handshake, called as ASGI (no client library needed)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept"})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/socket.io/", "headers": headers}
    await BrowserGuard(app, loopback_only=True)(scope, receive, send)
    assert len(sent) == 1
    return sent[0].get("code") if sent[0]["type"] == "websocket.close" else sent[0]["type"]


@pytest.mark.parametrize(
    "headers",
    [[(b"host", b"[zz")], [(b"host", b"127.0.0.1:3000"), (b"origin", b"http://[zz")]],
)
async def test_malformed_websocket_handshake_is_closed_with_1008(
    headers: list[tuple[bytes, bytes]],
) -> None:
    assert await _websocket_close_code(headers) == 1008
    assert await _websocket_close_code([(b"host", b"127.0.0.1:3000")]) == "websocket.accept"
