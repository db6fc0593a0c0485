"""Browser-borne attacks on a service that listens on localhost.

- Cross-site requests: any web page can make a browser POST to http://127.0.0.1:3000
  (a "simple" request needs no CORS preflight). A state-changing request that carries an
  Origin other than our own is refused, so a random site cannot stop your llama-server.
- DNS rebinding: a hostile name that resolves to 127.0.0.1 makes the page same-origin with us.
  While llamaherd listens on loopback only, the Host header must name loopback too.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from llamaherd.api.errors import error_response

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


class BrowserGuard:
    def __init__(self, app: ASGIApp, *, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        host = headers.get("host", "")
        problem = self._problem(scope, host, headers.get("origin"))
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await error_response(403, problem, "forbidden")(scope, receive, send)

    def _problem(self, scope: Scope, host: str, origin: str | None) -> str | None:
        if self.loopback_only and host and not is_loopback(_host_name(host)):
            return (
                f"Host {host!r} is not a loopback name; llamaherd listens on loopback only "
                "(open it as http://127.0.0.1:PORT or http://localhost:PORT)"
            )
        method = scope.get("method", "GET")
        if origin and method not in SAFE_METHODS and urlsplit(origin).netloc != host:
            return f"cross-origin {method} from {origin} refused"
        return None
