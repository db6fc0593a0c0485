"""API keys and scopes: who may call what.

Two scopes. `inference` opens the OpenAI and llama.cpp routes (and `/v1/models`, without the
models' file paths, which only an admin key sees there); `admin` opens everything else:
status, control, model load/unload, logs, history, `/upstream/...`, Socket.IO, `/metrics`
(unless it is public). An admin key is also an inference key: `/upstream/{model}/...`
already lets an admin send completions, so keeping them apart would only pretend.

Open to everyone: `/healthz` (a load balancer's probe), and the pages that carry no data (the
dashboard's HTML and scripts, `/docs`, `/openapi.json`): the dashboard must load to ask for a
key, and every figure it shows comes through the API and Socket.IO, which ask for one.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every key on the ring
without stopping at a match: the time an answer takes says nothing about how much of a key was
right, nor which key matched. A key is never logged, echoed, or kept in plain text here; a
refusal names the key's *name* at most.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from llamaherd.api.errors import error_response
from llamaherd.gateway.route import ADMIN_SCOPE_KEY, INFERENCE_PATHS, MODEL_LIST_PATHS

KeyScope = Literal["inference", "admin"]
SCOPES: tuple[KeyScope, ...] = ("inference", "admin")
# The pages that carry no data. The dashboard's own files are `/`, `/assets/...` and a few
# top-level files (favicon, manifest): one path segment with a file extension.
OPEN_PATHS = frozenset({"/healthz", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
STATIC_SUFFIXES = (".svg", ".ico", ".png", ".webmanifest", ".txt", ".js", ".css")
SOCKETIO_PREFIX = "/socket.io/"  # authenticated by its connect payload (api/realtime.py)
HOW_TO_SEND = "send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'"


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # SHA-256 of the key: the key itself is not kept
    scopes: frozenset[KeyScope]

    def allows(self, scope: KeyScope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class Denial:
    """A refused request: the HTTP status and the OpenAI-style error's message, type and code."""

    status: int
    message: str
    kind: str
    code: str


def _api_keys(keys: Iterable[tuple[str, str, Iterable[KeyScope]]]) -> tuple[ApiKey, ...]:
    return tuple(
        ApiKey(name=name, digest=_digest(secret), scopes=frozenset(scopes))
        for name, secret, scopes in keys
    )


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """The configured keys; `find` answers which one a presented key is, if any."""

    def __init__(self, keys: Iterable[tuple[str, str, Iterable[KeyScope]]]) -> None:
        self.keys = _api_keys(keys)
        self._listeners: list[Callable[[], None]] = []

    def __bool__(self) -> bool:
        return bool(self.keys)

    def replace(self, other: KeyRing) -> None:
        """Take `other`'s keys (a reloaded config), in place: every holder of this ring sees
        them from the next request on; listeners (Socket.IO, which closes the sessions of
        removed keys) are told."""
        self.keys = other.keys
        for listener in list(self._listeners):
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def holds(self, digest: bytes) -> bool:
        """Whether a key with this digest is still configured."""
        return any(hmac.compare_digest(key.digest, digest) for key in self.keys)

    def find(self, presented: str) -> ApiKey | None:
        digest = _digest(presented)
        match = None
        for key in self.keys:  # every key, always: no early exit to time
            if hmac.compare_digest(key.digest, digest):
                match = key
        return match

    def describe(self) -> str:
        """For the start-up log: names and scopes, never keys."""
        return ", ".join(f"{key.name} ({'+'.join(sorted(key.scopes))})" for key in self.keys)


@dataclass(frozen=True)
class AccessPolicy:
    """Who may reach what: the keys (none: anyone who can connect, which serve allows on
    loopback only), whether /metrics is public, and the other sites' origins a browser may
    call llamaherd from (CORS; none by default)."""

    keys: KeyRing = field(default_factory=lambda: KeyRing(()))
    metrics_public: bool = False
    cors_allowed_origins: tuple[str, ...] = ()


def required_scope(path: str, *, metrics_public: bool) -> KeyScope | None:
    """The scope `path` needs; None if it is open to everyone. Anything unknown needs admin,
    so that without a key even a 404 tells nothing."""
    if path in INFERENCE_PATHS or path in MODEL_LIST_PATHS:
        return "inference"
    if path in OPEN_PATHS or path.startswith("/assets/") or path.startswith(SOCKETIO_PREFIX):
        return None
    if path == "/metrics":
        return None if metrics_public else "admin"
    if path.count("/") == 1 and path.endswith(STATIC_SUFFIXES):
        return None
    return "admin"


def authorize(ring: KeyRing, presented: str | None, needed: KeyScope) -> ApiKey | Denial:
    """The key that may make this request, or why not."""
    if not presented:
        return Denial(
            401,
            f"this llamaherd requires an API key: {HOW_TO_SEND}",
            "invalid_request_error",
            "missing_api_key",
        )
    key = ring.find(presented)
    if key is None:
        return Denial(
            401,
            "the API key is not valid: it is none of the keys llamaherd was configured with "
            "(api_keys, LLAMAHERD_API_KEY)",
            "invalid_request_error",
            "invalid_api_key",
        )
    if not key.allows(needed):
        scopes = ", ".join(sorted(key.scopes)) or "none"
        return Denial(
            403,
            f"the API key {key.name!r} has the scopes [{scopes}]; this needs the {needed!r} scope",
            "permission_error",
            "insufficient_scope",
        )
    return key


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key in `Authorization: Bearer KEY` or, failing that, in `x-api-key`."""
    api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip() or None
    return api_key


def socket_key(auth: object, environ: Mapping[str, object]) -> str | None:
    """The key a Socket.IO client sent: its connect payload `{"token": KEY}` (what a browser
    can send), else an Authorization or x-api-key header (what a script may send instead)."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    headers = [
        (name.encode("latin-1"), str(environ[env]).encode("latin-1"))
        for name, env in (("authorization", "HTTP_AUTHORIZATION"), ("x-api-key", "HTTP_X_API_KEY"))
        if isinstance(environ.get(env), str)
    ]
    return presented_key(headers)


class AccessGuard:
    """ASGI: every HTTP request to a path that needs a scope must carry a key that has it.

    Without keys (none configured, or a reload removed them) it passes everything on: a
    reload may add keys, so it stays in the chain."""

    def __init__(self, app: ASGIApp, ring: KeyRing, *, metrics_public: bool = False) -> None:
        self.app = app
        self.ring = ring
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.ring:  # websockets: Socket.IO checks its payload
            await self.app(scope, receive, send)
            return
        # What the request's key may see where an answer differs by scope (/v1/models shows
        # model files to admins only); no key is no admin.
        scope[ADMIN_SCOPE_KEY] = False
        needed = required_scope(scope["path"], metrics_public=self.metrics_public)
        if needed is None:
            await self.app(scope, receive, send)
            return
        verdict = authorize(self.ring, presented_key(scope["headers"]), needed)
        if isinstance(verdict, ApiKey):
            scope[ADMIN_SCOPE_KEY] = verdict.allows("admin")
            await self.app(scope, receive, send)
            return
        response = error_response(verdict.status, verdict.message, verdict.kind, code=verdict.code)
        if verdict.status == 401:
            response.headers["www-authenticate"] = 'Bearer realm="llamaherd"'
        await response(scope, receive, send)
