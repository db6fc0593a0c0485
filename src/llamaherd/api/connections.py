"""Connection limits for llamaherd's HTTP server: header and body timeouts, caps on connections.

Why this exists: uvicorn (0.54) guards a connection only between requests, with its keep-alive
timeout, armed when a response completes. A fresh connection that sends nothing, or sends its
headers a byte at a time (slowloris), is held open for ever; and nothing stops one client from
opening thousands of connections. uvicorn's own `limit_concurrency` counts every client
together, answers a bare text 503 and names no setting.

So `guarded_http_protocol(limits)` makes a subclass of uvicorn's `HttpToolsProtocol` that:
- admits a connection only while fewer than `max_per_client` connections from its address and
  fewer than `max_connections` in total are open; a connection beyond a cap is accepted but its
  request is answered `503` with an OpenAI-style error naming the config key to raise,
  `Retry-After: 1` and `connection: close`. Only admitted connections are counted: a refused
  one costs one small answer and lives at most `header_timeout_s`;
- closes a connection whose request headers are not complete `header_timeout_s` after it
  opened, or after the first byte of the next request on a kept-alive connection, with a
  `408` when no response is under way;
- closes a connection whose request body is not complete `body_timeout_s` after its headers,
  on every route (REST, Socket.IO polling, the dashboard, inference), with a `408` when no
  response has started. A deadline, not an idle timer: a body dripped a byte a second cannot
  hold the connection, nor can one that follows an answer sent before the body was read
  (`GET /healthz` with `Content-Length: 1000000`). A request whose body came with its headers
  (most) never arms the timer;
- logs each kind of refusal at most once per `warning_interval_s`, with how many it left out,
  and never any of the request.

It leans on `HttpToolsProtocol`'s callbacks: `connection_made` (count, admit, arm the timer),
`on_message_begin` (re-arm), `on_headers_complete` (disarm; it runs `self.app`, which a refused
connection replaces with its 503), `data_received` (arm the body timer once the headers are
in and the body is not), `on_message_complete` (disarm it), `connection_lost` (release,
once); on the upgrade to a WebSocket, after which the WebSocket protocol owns the transport and
so the release; and, for a refused connection, on `_should_upgrade_to_ws` and
`_unsupported_upgrade_warning`, so that it cannot upgrade past its 503.

The address is the TCP peer's: behind a reverse proxy every client shares the proxy's address
(the headers that would name the real client have not arrived when a connection is admitted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llamaherd.gateway.asgi import Receive, Scope, Send
from llamaherd.gateway.replies import error_json, send_error

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

logger = logging.getLogger("llamaherd.connections")

PER_CLIENT_KEY = "max_connections_per_client"
TOTAL_KEY = "max_connections"
HEADER_TIMEOUT_KEY = "header_timeout_s"
BODY_TIMEOUT_KEY = "body_timeout_s"


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1024  # open connections in total
    max_per_client: int = 256  # open connections from one client address
    # From connect (or from the first byte of the next request on a kept-alive connection)
    # until the request's headers are complete.
    header_timeout_s: float = 10.0
    # From the end of a request's headers until the end of its body.
    body_timeout_s: float = 60.0
    # Each kind of refusal is logged at most once in this many seconds.
    warning_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_client < 1:
            raise ValueError("max_connections and max_connections_per_client must be at least 1")
        if not (self.header_timeout_s > 0 and self.body_timeout_s > 0):
            raise ValueError("header_timeout_s and body_timeout_s must be more than 0")

    @property
    def caps(self) -> Caps:
        return Caps(
            "connections", self.max_connections, self.max_per_client, TOTAL_KEY, PER_CLIENT_KEY
        )


@dataclass(frozen=True)
class Refusal:
    key: str  # the config key that would have admitted the connection
    message: str


@dataclass(frozen=True)
class Caps:
    """Two caps on things counted by client address, and the config keys that set them."""

    what: str  # "connections": what a refusal says there are too many of
    total: int
    per_client: int
    total_key: str
    per_client_key: str

    def refusal(self, total: int, from_client: int, host: str | None) -> Refusal | None:
        """Whether one more from `host` must be refused, given `total` open now, `from_client`
        of them from `host`. The client's own cap is named first: it is the one that client
        can do something about."""
        if host is not None and from_client >= self.per_client:
            return Refusal(
                self.per_client_key,
                f"too many {self.what} from {host} ({from_client} open; {self.per_client_key})",
            )
        if total >= self.total:
            return Refusal(
                self.total_key, f"too many {self.what} in total ({total} open; {self.total_key})"
            )
        return None


def refusal(
    limits: ConnectionLimits, total: int, from_client: int, host: str | None
) -> Refusal | None:
    """Whether a new connection from `host` must be refused, given the connections open now."""
    return limits.caps.refusal(total, from_client, host)


class ConnectionCounts:
    """The admitted connections of one server, in total and per client address (or anything
    else counted that way: api/handshakes.py counts Engine.IO sessions with it)."""

    def __init__(self) -> None:
        self.total = 0
        self._per_client: dict[str, int] = {}

    def open_from(self, host: str | None) -> int:
        return 0 if host is None else self._per_client.get(host, 0)

    @property
    def clients(self) -> int:
        return len(self._per_client)

    def admit(self, caps: Caps, host: str | None) -> Refusal | None:
        refused = caps.refusal(self.total, self.open_from(host), host)
        if refused is None:
            self.add(host)
        return refused

    def add(self, host: str | None) -> None:
        self.total += 1
        if host is not None:
            self._per_client[host] = self._per_client.get(host, 0) + 1

    def release(self, host: str | None) -> None:
        self.total -= 1
        if host is not None:
            left = self._per_client[host] - 1
            if left:
                self._per_client[host] = left
            else:
                del self._per_client[host]


class WarningThrottle:
    """At most one warning per reason every `interval_s` seconds: an attack opening thousands
    of connections must not also fill the log."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def due(self, reason: str, now: float) -> int | None:
        """None: stay quiet. Else log now, adding that this many were left out since."""
        last = self._last.get(reason)
        if last is not None and now - last < self._interval_s:
            self._left_out[reason] = self._left_out.get(reason, 0) + 1
            return None
        self._last[reason] = now
        return self._left_out.pop(reason, 0)

    def warn(self, log: logging.Logger, reason: str, message: str, *args: Any) -> None:
        """`log.warning(message, *args)`, unless one for `reason` was logged lately."""
        left_out = self.due(reason, time.monotonic())
        if left_out is None:
            return
        if left_out:
            message += " (%d more since the last such warning)"
            args = (*args, left_out)
        log.warning(message, *args)


def _refusal_app(refused: Refusal) -> ASGI3Application:
    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(
            send,
            503,
            refused.message,
            "service_unavailable",
            headers=[(b"retry-after", b"1"), (b"connection", b"close")],
        )

    return refuse  # type: ignore[return-value]


def _timeout_answer(default_headers: list[tuple[bytes, bytes]], message: str) -> bytes:
    body = error_json(message, "timeout", 408)
    lines = [b"HTTP/1.1 408 Request Timeout"]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def guarded_http_protocol(
    limits: ConnectionLimits, *, counts: ConnectionCounts | None = None
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HttpToolsProtocol that enforces `limits`; pass it as
    `uvicorn.Config(http=...)`. Make one per server: its connections share one `counts` (pass
    your own to read it, e.g. for a gauge of open connections)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as exc:
        raise ImportError(
            f"connection limits need uvicorn's httptools protocol, which did not import ({exc});"
            " install httptools"
        ) from exc

    shared = ConnectionCounts() if counts is None else counts
    caps = limits.caps
    throttle = WarningThrottle(limits.warning_interval_s)

    def warn(reason: str, message: str, *args: Any) -> None:
        throttle.warn(logger, reason, message, *args)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _host: str | None = None
        _admitted = False
        _refusal: Refusal | None = None
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _body_pending = False  # the headers are in, the body is not (yet)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._host = self.client[0] if self.client else None
            self._refusal = shared.admit(caps, self._host)
            if self._refusal is None:
                self._admitted = True
            else:
                self.app = _refusal_app(self._refusal)
                warn(self._refusal.key, "refused a connection: %s", self._refusal.message)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            self._disarm_body_timer()
            self._release()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._disarm_header_timer()
            super().on_headers_complete()
            # An upgrade has no body: what follows belongs to the WebSocket.
            self._body_pending = not (self.parser.should_upgrade() and self._should_upgrade())

        def on_message_complete(self) -> None:
            self._body_pending = False
            self._disarm_body_timer()
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # Armed once per request, in the read that completed its headers: later bytes of
            # the body do not move the deadline.
            if self._body_pending and self._body_timer is None and not self.transport.is_closing():
                self._body_timer = self.loop.call_later(limits.body_timeout_s, self._body_timeout)

        def handle_websocket_upgrade(self) -> None:
            self._body_pending = False
            self._disarm_body_timer()
            super().handle_websocket_upgrade()
            # The WebSocket protocol now owns the transport, and gets its connection_lost.
            successor = self.transport.get_protocol()
            lost = successor.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                try:
                    lost(exc)
                finally:
                    self._release()

            successor.connection_lost = connection_lost  # type: ignore[method-assign]

        def _should_upgrade_to_ws(self) -> bool:
            return self._refusal is None and super()._should_upgrade_to_ws()

        def _unsupported_upgrade_warning(self) -> None:
            if self._refusal is None:
                super()._unsupported_upgrade_warning()

        def _release(self) -> None:
            if self._admitted:
                self._admitted = False
                shared.release(self._host)

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._header_timeout)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            self._close_late(
                HEADER_TIMEOUT_KEY,
                f"request headers not complete within {limits.header_timeout_s:g} s",
                answer=self.cycle is None or self.cycle.response_complete,
            )

        def _disarm_body_timer(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _body_timeout(self) -> None:
            self._body_timer = None
            cycle = self.cycle
            self._close_late(
                BODY_TIMEOUT_KEY,
                f"the request body did not arrive within {limits.body_timeout_s:g} s of its"
                " headers",
                answer=not cycle.response_started,
            )
            # The app, if it still runs, hears of a disconnect and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()

        def _close_late(self, key: str, what: str, *, answer: bool) -> None:
            """Close the connection a timeout (`key`) ended; first a 408 saying `what`, if
            `answer` (no other answer is under way)."""
            if self.transport.is_closing():
                return
            message = f"{what} ({key})"
            warn(key, "closed a connection from %s: %s", self._host or "a local socket", message)
            if answer:
                self.transport.write(_timeout_answer(self.server_state.default_headers, message))
            self.transport.close()

    return GuardedHttpToolsProtocol
