"""The connection pools to the upstreams: one aiohttp `ClientSession` per llama-server (or
peer) base URL, kept for the server's life, and what a failed exchange is called in words.

A pool per request would pay a TCP handshake on every call, and httpx's pool is several times
slower under concurrency.
"""

from __future__ import annotations

import aiohttp
from aiohttp.connector import Connection

# Headers aiohttp would otherwise invent. Without Accept-Encoding a llama-server never
# compresses for a client that did not ask; Content-Type stays what the client sent, or none.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# The errors an upstream exchange can fail with. aiohttp's timeouts are TimeoutErrors;
# OSError covers a reset that reaches us without aiohttp's wrapping.
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, TimeoutError)


class _UpstreamResponse(aiohttp.ClientResponse):
    """A response whose connection goes back to the pool only if the server will keep it.

    llama-server closes the connection after every chunked answer (every event stream), while
    its headers say `Keep-Alive: timeout=5, max=100` and not `Connection: close`. Pooled, such
    a connection goes to the next request before its close is seen, and that request fails
    with a 502 for nothing ("Can not write request body", "Server disconnected"): every plain
    request sent right after a stream did (30 of 30), and up to one request in 60 under a
    mixed load of five clients (tests/chaos/test_crashes.py, the tests without a fault). So a
    chunked answer's connection is closed instead of pooled: the next request pays for a new
    loopback connection, which the server's own close makes necessary anyway.
    """

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        response = await super().start(connection)
        if protocol is not None and "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            if self.connection is None:
                # The whole answer came with its headers and the connection is pooled already:
                # closed, the pool drops it before anyone takes it (nothing ran meanwhile).
                protocol.close()
            else:
                protocol.force_close()  # closed rather than pooled when the answer ends
        return response


class Upstreams:
    """One aiohttp `ClientSession` per upstream base URL, made on first use.

    Settings every session shares, and why:
    - no connection limit (the scheduler decides how many requests a server gets), and idle
      connections kept `keepalive_timeout_s`: below llama-server's own 5 s keep-alive, so we
      never reuse a connection the server is closing;
    - `trust_env=False`: no proxy from the environment for loopback traffic;
    - `auto_decompress=False`: bytes pass through as the upstream sent them;
    - a dummy cookie jar: one client's cookies must never ride along with another's request;
    - a chunked answer's connection is never reused (see `_UpstreamResponse`);
    - a connect timeout, and no total timeout (a stream lasts as long as the generation).
      `read_timeout_s` bounds the silence between two reads; it is off by default, see above.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float | None = None,
        keepalive_timeout_s: float = 4.0,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=read_timeout_s,
        )
        self._keepalive_timeout_s = keepalive_timeout_s
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, base_url: str) -> aiohttp.ClientSession:
        """The session for `base_url`; call it from inside the running event loop."""
        key = base_url.rstrip("/")
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = self._sessions[key] = self._new_session()
        return session

    async def forget(self, base_url: str) -> None:
        """Close the session of a server that stopped; requests still running on it fail."""
        session = self._sessions.pop(base_url.rstrip("/"), None)
        if session is not None:
            await session.close()

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_timeout_s)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            response_class=_UpstreamResponse,
        )


def describe_failure(exc: BaseException, *, answering: bool) -> str:
    """What went wrong with the upstream, in words; `answering`: it had begun its answer."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        what = (
            "refused the connection"
            if isinstance(exc.os_error, ConnectionRefusedError)
            else "could not be reached"
        )
        return f"{what}: {exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        when = "in the middle of its answer" if answering else "before answering"
        return f"closed the connection {when}: {exc}"
    if isinstance(exc, TimeoutError):
        return f"did not answer in time: {exc or type(exc).__name__}"
    return f"failed: {type(exc).__name__}: {exc}"
