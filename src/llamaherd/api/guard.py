"""Browser-borne attacks on a service that listens on localhost.

- Cross-site requests: any web page can make a browser POST to http://127.0.0.1:3000
  (a "simple" request needs no CORS preflight). A state-changing request that carries an
  Origin other than our own is refused, so a random site cannot stop your llama-server
  (unless it is one of the configured cors_allowed_origins).
- Cross-site requests without an Origin: an `<img>`, `<script>` or `<iframe>` on any page
  makes the browser GET what it names, with no Origin header, and `/upstream/{model}/...`
  loads that model (evicting another) for a GET. Browsers say where every request comes
  from in `Sec-Fetch-Site` (Chromium, Firefox, Safari 16.4+): `same-origin` (llamaherd's
  own pages), `none` (an address the user typed, a bookmark), else `same-site` or
  `cross-site` (a page of another origin). A request from another origin is served only
  when its Origin is one of ours (the same host, or cors_allowed_origins), or when it is a
  link followed to a page (a top-level GET navigation) that changes nothing: the dashboard
  or the API's reads may be linked to, `/upstream/...` may not. Whatever else a page of
  another site asks for, it gets nothing (a 403): it could not read the answer anyway.
- DNS rebinding: a hostile name that resolves to 127.0.0.1 makes the page same-origin with us.
  While llamaherd listens on loopback only, the Host header must name loopback too.
- A Host or Origin header that does not parse is answered 400 (a websocket is closed with 1008),
  never an exception: nothing a client sends may cost a traceback in the log.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from llamaherd.api.errors import error_response
from llamaherd.gateway.route import UPSTREAM_PREFIX

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Sec-Fetch-Site values of a request that no page of another origin made.
OWN_SITES = frozenset({"same-origin", "none"})
# Paths whose GET changes something: /upstream/{model}/... loads the model.
GET_WITH_EFFECTS_PREFIXES = (UPSTREAM_PREFIX,)
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Refusal:
    """Why a request is turned away: the HTTP answer, or a websocket close (1008)."""

    status: int
    message: str
    kind: str


def _host_name(host_header: str) -> str:
    """The name in a Host header; ValueError if the header is not a host[:port]."""
    return urlsplit(f"//{host_header}").hostname or ""


def _origin_netloc(origin: str) -> str:
    """The host[:port] of an Origin header; ValueError if it is malformed."""
    return urlsplit(origin).netloc


def _malformed(header: str, value: str, exc: ValueError, form: str) -> Refusal:
    # urlsplit's reasons ("Invalid IPv6 URL") are terse but true; the value says the rest.
    return Refusal(400, f"malformed {header} header {value!r} ({exc}); send {form}", "bad_request")


def origin_allowed(origin: str, host: str, allowed_origins: frozenset[str]) -> bool:
    """Whether a page from `origin` may call llamaherd at `host`: a page of llamaherd's own
    (the same host), or of one of the configured sites (cors_allowed_origins)."""
    if origin.rstrip("/") in allowed_origins:
        return True
    try:
        return _origin_netloc(origin) == host
    except ValueError:
        return False


@dataclass(frozen=True)
class FetchMetadata:
    """What a browser says of a request's source: the Sec-Fetch-Site header (None when absent:
    not a browser, or one too old to send it), and whether the request is a top-level
    navigation (Sec-Fetch-Mode `navigate`, Sec-Fetch-Dest `document`: a link followed, an
    address typed; not an `<iframe>`, which could frame the dashboard to trick clicks)."""

    site: str | None = None
    navigation: bool = False


NOT_A_BROWSER = FetchMetadata()


@functools.lru_cache(maxsize=512)  # a client sends the same few headers on every request
def refusal(
    method: str,
    host: str,
    origin: str | None,
    *,
    loopback_only: bool,
    allowed_origins: frozenset[str] = frozenset(),
    fetch: FetchMetadata = NOT_A_BROWSER,
    get_has_effects: bool = False,
) -> Refusal | None:
    """The decision, as a pure function of the request's method and headers, and of whether
    a GET of its path changes anything (`get_has_effects`).

    A Host or Origin that does not parse is a bad request (400) whatever the mode: it can only
    come from a broken or hostile client, and must not reach urlsplit again further in.
    """
    try:
        host_name = _host_name(host)
    except ValueError as exc:
        return _malformed("Host", host, exc, "HOST[:PORT], e.g. 127.0.0.1:3000")
    try:
        if origin is not None:
            _origin_netloc(origin)  # parsed here once, so a malformed one is a 400
    except ValueError as exc:
        return _malformed("Origin", origin or "", exc, "SCHEME://HOST[:PORT]")
    if loopback_only and host and not is_loopback(host_name):
        return Refusal(
            403,
            f"Host {host!r} is not a loopback name; llamaherd listens on loopback only "
            "(open it as http://127.0.0.1:PORT or http://localhost:PORT)",
            "forbidden",
        )
    if origin and method not in SAFE_METHODS and not origin_allowed(origin, host, allowed_origins):
        return Refusal(403, f"cross-origin {method} from {origin} refused", "forbidden")
    if fetch.site is None or fetch.site in OWN_SITES:
        return None
    if origin and origin_allowed(origin, host, allowed_origins):
        return None  # a configured site's page (CORS), which says who it is
    if fetch.navigation and method in ("GET", "HEAD") and not get_has_effects:
        return None  # a link from another site to a page that changes nothing
    return _from_another_site(method, origin, fetch, get_has_effects)


def _from_another_site(
    method: str, origin: str | None, fetch: FetchMetadata, get_has_effects: bool
) -> Refusal:
    source = f"a page of {origin}" if origin else "a page of another origin"
    if fetch.navigation and get_has_effects:
        why = (
            "a link from another site may not load a model; open it from llamaherd's "
            "dashboard, or type its address"
        )
    else:
        why = (
            f"{source} may not use llamaherd (Sec-Fetch-Site: {fetch.site}); list its origin "
            "in cors_allowed_origins to allow it"
        )
    return Refusal(403, f"cross-site {method} refused: {why}", "forbidden")


class BrowserGuard:
    """`allowed_origins`: the sites (cors_allowed_origins) whose pages may call llamaherd."""

    def __init__(
        self, app: ASGIApp, *, loopback_only: bool, allowed_origins: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.loopback_only = loopback_only
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # Every request passes here, inference included: look at the two headers that matter
        # rather than decoding them all.
        host, origin, site, mode, dest = "", None, None, None, None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
            elif key.startswith(b"sec-fetch-"):
                if key == b"sec-fetch-site":
                    site = value.decode("latin-1")
                elif key == b"sec-fetch-mode":
                    mode = value
                elif key == b"sec-fetch-dest":
                    dest = value
        fetch = NOT_A_BROWSER
        if site is not None:
            fetch = FetchMetadata(site, navigation=mode == b"navigate" and dest == b"document")
        problem = refusal(
            scope.get("method", "GET"),
            host,
            origin,
            loopback_only=self.loopback_only,
            allowed_origins=self.allowed_origins,
            fetch=fetch,
            get_has_effects=scope["path"].startswith(GET_WITH_EFFECTS_PREFIXES),
        )
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = error_response(problem.status, problem.message, problem.kind)
        await response(scope, receive, send)
