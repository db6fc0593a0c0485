"""Cross-site requests (by Origin, and by Sec-Fetch-Site for those that carry none) and DNS
rebinding are refused; same-origin and CLI use is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from llamaherd.api.guard import NOT_A_BROWSER, BrowserGuard, FetchMetadata, refusal
from llamaherd.gateway.scheduler import Phase
from tests.api.conftest import serve_app
from tests.conftest import ServiceFactory
from tests.gateway.conftest import Gateway, gateway_config

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


HOST = "127.0.0.1:3000"
SITE = "https://app.example.com"  # a configured cors_allowed_origins entry


@pytest.mark.parametrize(
    ("method", "origin", "fetch", "path", "allowed"),
    [
        # llamaherd's own pages, an address typed, a client that is no browser: as before.
        ("GET", None, FetchMetadata("same-origin"), "/upstream/m2/health", True),
        ("POST", f"http://{HOST}", FetchMetadata("same-origin"), "/v1/chat/completions", True),
        ("GET", None, FetchMetadata("none", navigation=True), "/upstream/m2/", True),
        ("GET", None, NOT_A_BROWSER, "/upstream/m2/health", True),
        # <img>, <script>, a no-cors fetch from another site: nothing, reads included.
        ("GET", None, FetchMetadata("cross-site"), "/upstream/m2/health", False),
        ("GET", None, FetchMetadata("cross-site"), "/api/status", False),
        ("GET", None, FetchMetadata("cross-site"), "/socket.io/", False),
        # Another port of this site (another local app) is another origin all the same.
        ("GET", None, FetchMetadata("same-site"), "/upstream/m2/health", False),
        ("GET", "http://127.0.0.1:8080", FetchMetadata("same-site"), "/api/status", False),
        # A link followed from another site: to a page that changes nothing, not to a load;
        # never into a frame (which could trick clicks on the dashboard).
        ("GET", None, FetchMetadata("cross-site", navigation=True), "/", True),
        ("GET", None, FetchMetadata("cross-site", navigation=True), "/api/status", True),
        ("GET", None, FetchMetadata("cross-site", navigation=True), "/upstream/m2/", False),
        ("GET", None, FetchMetadata("cross-site"), "/", False),
        # A configured site's page, which says who it is (CORS).
        ("GET", SITE, FetchMetadata("cross-site"), "/upstream/m2/slots", True),
        ("POST", SITE, FetchMetadata("cross-site"), "/v1/chat/completions", True),
        ("OPTIONS", SITE, FetchMetadata("cross-site"), "/v1/chat/completions", True),
        ("GET", "https://evil.example", FetchMetadata("cross-site"), "/api/status", False),
    ],
)
def test_a_request_from_another_site_is_refused_unless_it_changes_nothing_or_is_allowed(
    method: str, origin: str | None, fetch: FetchMetadata, path: str, allowed: bool
) -> None:
    problem = refusal(
        method,
        HOST,
        origin,
        loopback_only=True,
        allowed_origins=frozenset({SITE}),
        fetch=fetch,
        get_has_effects=path.startswith("/upstream/"),
    )
    assert (problem is None) is allowed, problem
    if problem is not None:
        assert problem.status == 403 and problem.kind == "forbidden"
        assert problem.message.startswith(f"cross-site {method} refused: ")


async def test_an_image_on_another_site_cannot_load_a_model(
    launch: Any, fake_binary: Path, model_file: Path
) -> None:
    # What Chromium sends for <img src="http://127.0.0.1:3000/upstream/m2/health"> on a
    # page of another site: no Origin, only the fetch metadata.
    models = {"m1": {"path": str(model_file)}, "m2": {"path": str(model_file)}}
    gw: Gateway = await launch(gateway_config(fake_binary, models, max_loaded=1))
    await gw.loaded("m1")
    image = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}
    link = {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
    }
    async with gw.http() as client:
        embedded = await client.get("/upstream/m2/health", headers=image)
        followed = await client.get("/upstream/m2/", headers=link)
        dashboard = await client.get("/", headers=link)
    for refused in (embedded, followed):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["type"] == "forbidden"
    assert "may not load a model" in followed.json()["error"]["message"]
    assert dashboard.status_code == 200
    assert gw.starts["m2"] == 0 and gw.view("m1").phase is Phase.READY


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
