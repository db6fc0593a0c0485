"""API keys and scopes: the pure decisions, then a whole llamaherd (fake llama-server) that
requires keys, over HTTP and Socket.IO; CORS; and /upstream that cannot be pointed elsewhere."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from socketio.exceptions import ConnectionError as SocketConnectionError

from llamaherd.api.access import KeyRing, authorize, presented_key, required_scope, socket_key
from llamaherd.gateway.scheduler import Phase
from tests.conftest import free_port, raw_http
from tests.gateway.conftest import Gateway, gateway_config

ADMIN = "admin-key-0123456789abcdef"
INFER = "infer-key-0123456789abcdef"
WRONG = "wrong-key-0123456789abcdef"
KEYS = [
    {"name": "ops", "key": ADMIN, "scopes": ["admin"]},
    {"name": "app", "key": INFER, "scopes": ["inference"]},
]
CHAT = [{"role": "user", "content": "hi"}]


# ---- the decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/healthz", None),
        ("/", None),
        ("/assets/index-3f2a.js", None),
        ("/favicon.svg", None),
        ("/openapi.json", None),
        ("/docs", None),
        ("/socket.io/", None),
        ("/v1/chat/completions", "inference"),
        ("/completion", "inference"),
        ("/v1/models", "inference"),
        ("/api/status", "admin"),
        ("/api/models/coder/load", "admin"),
        ("/api/history", "admin"),
        ("/upstream/coder/slots", "admin"),
        ("/metrics", "admin"),
        ("/api/nope.js", "admin"),  # two segments: not a dashboard file
        ("/anything-else", "admin"),
    ],
)
def test_every_path_needs_the_scope_of_what_it_reveals(path: str, scope: str | None) -> None:
    assert required_scope(path, metrics_public=False) == scope


def test_metrics_can_be_made_public() -> None:
    assert required_scope("/metrics", metrics_public=True) is None


def test_a_key_is_found_only_whole_and_admin_includes_inference() -> None:
    ring = KeyRing([("ops", ADMIN, ["admin"]), ("app", INFER, ["inference"])])
    assert ring.find(ADMIN) is not None and ring.find(ADMIN).name == "ops"  # type: ignore[union-attr]
    assert ring.find(ADMIN[:-1]) is None
    assert ring.find(ADMIN + "x") is None
    assert ring.find("") is None
    assert ADMIN not in repr(ring.keys) and ADMIN not in ring.describe()

    assert authorize(ring, ADMIN, "inference").name == "ops"  # type: ignore[union-attr]
    denied = authorize(ring, INFER, "admin")
    assert denied.status == 403 and "'app'" in denied.message  # type: ignore[union-attr]
    assert authorize(ring, None, "inference").code == "missing_api_key"  # type: ignore[union-attr]
    assert authorize(ring, WRONG, "inference").code == "invalid_api_key"  # type: ignore[union-attr]


def test_the_key_is_read_from_bearer_or_x_api_key() -> None:
    assert presented_key([(b"authorization", b"Bearer  abc ")]) == "abc"
    assert presented_key([(b"authorization", b"bearer abc")]) == "abc"
    assert presented_key([(b"x-api-key", b"xyz")]) == "xyz"
    assert presented_key([(b"authorization", b"Basic Zm9v"), (b"x-api-key", b"xyz")]) == "xyz"
    assert presented_key([(b"authorization", b"Bearer ")]) is None
    assert presented_key([]) is None
    assert socket_key({"token": "t"}, {}) == "t"
    assert socket_key(None, {"HTTP_AUTHORIZATION": "Bearer h"}) == "h"
    assert socket_key({"token": 5}, {}) is None


# ---- a llamaherd that requires keys ------------------------------------------------------------


def keyed_config(fake_binary: Path, model: Path, **more: Any) -> dict[str, Any]:
    return gateway_config(fake_binary, {"alpha": {"path": str(model)}}, api_keys=KEYS, **more)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_refused(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["type"] == ("permission_error" if status == 403 else "invalid_request_error")
    for key in (ADMIN, INFER, WRONG):
        assert key not in answer.text
    return str(error["message"])


async def test_keys_and_scopes_guard_every_route(
    launch: Any, fake_binary: Path, model_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw: Gateway = await launch(keyed_config(fake_binary, model_file))
    chat = {"model": "alpha", "messages": CHAT, "max_tokens": 4}
    async with gw.http() as client:
        # Open: the probe and the pages that carry no data.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200

        missing = await client.get("/api/status")
        assert "Authorization: Bearer KEY" in assert_refused(missing, 401, "missing_api_key")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert_refused(
            await client.get("/api/status", headers=bearer(WRONG)), 401, "invalid_api_key"
        )
        assert_refused(await client.post("/v1/chat/completions", json=chat), 401, "missing_api_key")
        assert_refused(
            await client.get("/metrics", headers=bearer(INFER)), 403, "insufficient_scope"
        )
        # An unknown path says nothing without a key, not even that it is unknown.
        assert_refused(await client.get("/api/nope"), 401, "missing_api_key")

        scoped = await client.post("/api/models/alpha/load", headers=bearer(INFER))
        message = assert_refused(scoped, 403, "insufficient_scope")
        assert "'app'" in message and "'admin'" in message
        assert_refused(
            await client.get("/upstream/alpha/slots", headers=bearer(INFER)),
            403,
            "insufficient_scope",
        )

        # The inference key does inference; the admin key does everything.
        answer = await client.post("/v1/chat/completions", json=chat, headers=bearer(INFER))
        assert answer.status_code == 200, answer.text
        assert (await client.get("/v1/models", headers={"x-api-key": INFER})).status_code == 200
        assert (await client.get("/api/status", headers={"x-api-key": ADMIN})).status_code == 200
        answer = await client.post("/v1/chat/completions", json=chat, headers=bearer(ADMIN))
        assert answer.status_code == 200, answer.text
        assert (await client.get("/metrics", headers=bearer(ADMIN))).status_code == 200
        assert (await client.get("/upstream/alpha/slots", headers=bearer(ADMIN))).status_code == 200

    async with httpx.AsyncClient(base_url=gw.url) as other:
        # The official client sends its api_key as a Bearer token.
        import openai

        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=INFER, max_retries=0) as oai:
            done = await oai.chat.completions.create(model="alpha", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
            assert done.choices
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=WRONG, max_retries=0) as oai:
            with pytest.raises(openai.AuthenticationError):
                await oai.chat.completions.create(model="alpha", messages=CHAT)  # type: ignore[arg-type]
        assert (await other.get("/healthz")).status_code == 200
    # Keys are never logged, whatever was sent.
    for key in (ADMIN, INFER, WRONG):
        assert key not in caplog.text


async def test_model_files_are_listed_to_admin_keys_only(
    launch: Any, fake_binary: Path, model_file: Path
) -> None:
    keyed: Gateway = await launch(keyed_config(fake_binary, model_file))
    open_: Gateway = await launch(gateway_config(fake_binary, {"alpha": {"path": str(model_file)}}))

    async def listed_paths(gw: Gateway, headers: dict[str, str]) -> list[Any]:
        async with gw.http() as client:
            listing = await client.get("/v1/models", headers=headers)
        assert listing.status_code == 200, listing.text
        return [model["meta"]["path"] for model in listing.json()["data"]]

    assert await listed_paths(keyed, bearer(INFER)) == [None]
    assert await listed_paths(keyed, bearer(ADMIN)) == [str(model_file)]
    # Without keys, whoever can connect may do everything: the paths are shown.
    assert await listed_paths(open_, {}) == [str(model_file)]
    assert str(model_file) not in str(await listed_paths(keyed, {"x-api-key": INFER}))


async def test_socketio_needs_an_admin_key_in_its_connect_payload(
    launch: Any, fake_binary: Path, model_file: Path
) -> None:
    gw: Gateway = await launch(keyed_config(fake_binary, model_file))
    for auth, expected in (
        (None, "requires an API key"),
        ({"token": WRONG}, "not valid"),
        ({"token": INFER}, "needs the 'admin' scope"),
    ):
        client = socketio.AsyncClient(reconnection=False)
        reasons: list[Any] = []
        client.on("connect_error", reasons.append)
        with pytest.raises(SocketConnectionError):
            await client.connect(gw.url, auth=auth, transports=["websocket"], wait_timeout=10)
        assert reasons and expected in reasons[0]["message"], reasons
        for key in (ADMIN, INFER, WRONG):
            assert key not in str(reasons)
        await client.disconnect()

    client = socketio.AsyncClient(reconnection=False)
    statuses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    client.on("llamaStatus", statuses.put_nowait)
    await client.connect(gw.url, auth={"token": ADMIN}, transports=["websocket"], wait_timeout=10)
    try:
        async with asyncio.timeout(10):
            event = await statuses.get()
        assert event["type"] == "llama_status"
    finally:
        await client.disconnect()


async def test_cors_is_off_by_default_and_follows_the_allow_list(
    launch: Any, fake_binary: Path, model_file: Path
) -> None:
    site, other = "https://app.example.com", "https://evil.example.com"
    closed: Gateway = await launch(
        gateway_config(fake_binary, {"alpha": {"path": str(model_file)}})
    )
    opened: Gateway = await launch(
        keyed_config(fake_binary, model_file, cors_allowed_origins=[site])
    )
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    async with closed.http() as client:
        answer = await client.options("/v1/chat/completions", headers={"origin": site, **preflight})
        assert "access-control-allow-origin" not in answer.headers
        posted = await client.post("/api/models/alpha/unload", headers={"origin": site})
        assert posted.status_code == 403
    async with opened.http() as client:
        answer = await client.options("/v1/chat/completions", headers={"origin": site, **preflight})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == site
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        denied = await client.options(
            "/v1/chat/completions", headers={"origin": other, **preflight}
        )
        assert "access-control-allow-origin" not in denied.headers
        # The allowed site's page may POST (with a key); any other site is refused first.
        chat = {"model": "alpha", "messages": CHAT, "max_tokens": 2}
        allowed = await client.post(
            "/v1/chat/completions", json=chat, headers={"origin": site, **bearer(INFER)}
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == site
        refused = await client.post(
            "/v1/chat/completions", json=chat, headers={"origin": other, **bearer(INFER)}
        )
        assert refused.status_code == 403


# ---- /upstream reaches only its own model's llama-server ---------------------------------------


class Canary:
    """An HTTP listener that must never be reached: it counts connections."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ncanary")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Canary:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def raw_request(url: str, target: str) -> tuple[int, bytes]:
    """Send `GET target` exactly as written (httpx would normalise it); the status and body."""
    port = url.rsplit(":", 1)[1]
    head, body = await raw_http(
        url,
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode(),
    )
    return int(head.split()[1]), body


async def test_upstream_cannot_be_pointed_at_anything_else(
    launch: Any, fake_binary: Path, model_file: Path
) -> None:
    gw: Gateway = await launch(gateway_config(fake_binary, {"alpha": {"path": str(model_file)}}))
    await gw.loaded("alpha")
    assert gw.view("alpha").phase is Phase.READY
    async with Canary() as canary:
        c = f"127.0.0.1:{canary.port}"
        tricks = [
            "/upstream/alpha/../../../etc/passwd",
            f"/upstream/alpha//{c}/x",
            f"/upstream/alpha/http://{c}/x",
            f"/upstream/alpha/%2F%2F{c}/x",
            f"/upstream/alpha/@{c}/x",
            f"/upstream/alpha/x%0d%0aHost:%20{c}%0d%0a",
            f"http://{c}/upstream/alpha/health",  # absolute form: the authority is ignored
            f"/upstream/{c}/x",
            f"/upstream/..%2F..%2F{c}/x",
            f"/upstream/http:%2F%2F{c}/x",
        ]
        for target in tricks:
            status, body = await raw_request(gw.url, target)
            assert status < 500, (target, status, body)
            assert b"canary" not in body, target
        assert canary.connections == 0
    # The same route does reach its own server.
    status, body = await raw_request(gw.url, "/upstream/alpha/health")
    assert status == 200 and b"ok" in body


async def test_the_command_line_sends_llamaherd_api_key(
    launch: Any,
    fake_binary: Path,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llamaherd.client.cli import main

    gw: Gateway = await launch(keyed_config(fake_binary, model_file))
    monkeypatch.delenv("LLAMAHERD_API_KEY", raising=False)
    assert await asyncio.to_thread(main, ["status", "--url", gw.url]) == 1
    err = capsys.readouterr().err
    assert "requires an API key" in err and "LLAMAHERD_API_KEY" in err
    assert "Traceback" not in err

    monkeypatch.setenv("LLAMAHERD_API_KEY", INFER)
    assert await asyncio.to_thread(main, ["models", "--url", gw.url]) == 1
    err = capsys.readouterr().err
    assert "needs the 'admin' scope" in err and INFER not in err

    monkeypatch.setenv("LLAMAHERD_API_KEY", ADMIN)
    assert await asyncio.to_thread(main, ["models", "--url", gw.url]) == 0
    assert "alpha" in capsys.readouterr().out
