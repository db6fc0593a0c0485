"""Engine.IO sessions that have not made an authorized Socket.IO connect yet ("pending"),
bounded in number and in time.

Why this exists: an Engine.IO handshake (`GET /socket.io/?EIO=4&transport=polling`) is a short
HTTP request that leaves a session behind (a socket with its queue, a ping task, the request's
environ), kept until its ping timeout: 45 s with python-engineio's defaults. Keys are checked
only by the Socket.IO connect that follows on that session, and the connection caps
(connections.py) never see it: its request has ended. 12,000 handshakes in 4 s took llamaherd
from 100 to 239 MB.

So `bound_handshakes(sio, limits)`:
- admits a handshake only while fewer than `max_per_client` pending sessions from its address
  and fewer than `max_total` in all exist; beyond, `503` + `Retry-After: 1` with an
  OpenAI-style error naming the key to raise (a WebSocket handshake is closed with code 1013,
  "try again later", before it is accepted);
- closes a session still pending `connect_timeout_s` after its handshake: a client that never
  connects, or whose key was refused;
- counts a session out once its Socket.IO connect is authorized (api/realtime.py calls
  `PendingSessions.connected`) or once it ends, whatever ended it.

A dashboard connects within milliseconds of its handshake, so its sessions are pending only
that long. Behind a reverse proxy every client has the proxy's address, as with the
connection caps.

The seams in python-engineio (4.x) and python-socketio (5.x): the Engine.IO server's
`handle_request` (a handshake is a GET or a WebSocket without `sid` in its query) and its
`connect` and `disconnect` handlers, which python-socketio registers with `eio.on`; each is
wrapped here. A handshake's admission travels to its session in the ASGI scope, which the
session's environ keeps as `asgi.scope`.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio

from llamaherd.api.connections import Caps, ConnectionCounts, Refusal, WarningThrottle
from llamaherd.gateway.asgi import Receive, Scope, Send
from llamaherd.gateway.replies import send_error

logger = logging.getLogger("llamaherd.api.socketio")

PER_CLIENT_KEY = "max_socketio_pending_per_client"
TOTAL_KEY = "max_socketio_pending"
TIMEOUT_KEY = "socketio_connect_timeout_s"
ADMISSION = "llamaherd.handshake"  # the scope key that carries a handshake's admission
TRY_AGAIN_LATER = 1013  # the WebSocket close code for an overloaded server


@dataclass(frozen=True)
class HandshakeLimits:
    max_total: int = 256  # sessions pending in all
    max_per_client: int = 32  # sessions pending from one client address
    connect_timeout_s: float = 10.0  # from the handshake until the authorized connect
    # Each kind of refusal or closing is logged at most once in this many seconds.
    warning_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_total < 1 or self.max_per_client < 1:
            raise ValueError(f"{TOTAL_KEY} and {PER_CLIENT_KEY} must be at least 1")
        if not self.connect_timeout_s > 0:
            raise ValueError(f"{TIMEOUT_KEY} must be more than 0")


class Admission:
    """One admitted handshake, counted from its request until its session connects or ends."""

    def __init__(self, host: str | None) -> None:
        self.host = host
        self.sid: str | None = None  # its Engine.IO session, once the handshake made one
        self.counted = True
        self.deadline: asyncio.TimerHandle | None = None


class PendingSessions:
    """The pending sessions of one Engine.IO server: counted by client address, each closed
    at its deadline unless it connects first."""

    def __init__(self, eio: Any, limits: HandshakeLimits) -> None:
        self._eio = eio
        self._limits = limits
        self._caps = Caps(
            "Socket.IO sessions waiting for a connect",
            limits.max_total,
            limits.max_per_client,
            TOTAL_KEY,
            PER_CLIENT_KEY,
        )
        self.counts = ConnectionCounts()
        self._by_sid: dict[str, Admission] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._throttle = WarningThrottle(limits.warning_interval_s)

    def admit(self, host: str | None) -> Admission | Refusal:
        refused = self.counts.admit(self._caps, host)
        if refused is not None:
            self._throttle.warn(
                logger, refused.key, "refused a Socket.IO handshake: %s", refused.message
            )
            return refused
        return Admission(host)

    def bind(self, admission: Admission, sid: str) -> None:
        """The handshake made session `sid`: it has `connect_timeout_s` to connect."""
        if not admission.counted:
            return
        admission.sid = sid
        self._by_sid[sid] = admission
        admission.deadline = asyncio.get_running_loop().call_later(
            self._limits.connect_timeout_s, self._expire, sid
        )

    def release(self, admission: Admission) -> None:
        """Count it out (once, whichever comes first: connect, end, deadline)."""
        if not admission.counted:
            return
        admission.counted = False
        self.counts.release(admission.host)
        if admission.deadline is not None:
            admission.deadline.cancel()
        if admission.sid is not None:
            self._by_sid.pop(admission.sid, None)

    def connected(self, environ: dict[str, Any]) -> None:
        """The session of this environ made an authorized Socket.IO connect."""
        admission = environ.get("asgi.scope", {}).get(ADMISSION)
        if isinstance(admission, Admission):
            self.release(admission)

    def ended(self, sid: str) -> None:
        admission = self._by_sid.get(sid)
        if admission is not None:
            self.release(admission)

    def _expire(self, sid: str) -> None:
        task = asyncio.get_running_loop().create_task(self._close(sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, sid: str) -> None:
        admission = self._by_sid.get(sid)
        socket = self._eio.sockets.get(sid)
        try:
            if admission is None or socket is None or socket.closing or socket.closed:
                return
            self._throttle.warn(
                logger,
                TIMEOUT_KEY,
                "closed a Socket.IO session from %s: no authorized connect within %g s (%s)",
                admission.host or "a local socket",
                self._limits.connect_timeout_s,
                TIMEOUT_KEY,
            )
            # Not eio.disconnect(sid): it waits until a client polls the close packet, which
            # a client that never polls never does.
            await socket.close(wait=False, reason=self._eio.reason.SERVER_DISCONNECT)
            if socket.upgraded:
                await socket.queue.put(None)  # ends its WebSocket writer, and so the WebSocket
            self._eio.sockets.pop(sid, None)
        finally:
            self.ended(sid)


def _is_handshake(scope: Scope) -> bool:
    """A request that would make a new Engine.IO session: a GET or a WebSocket without `sid`."""
    if scope["type"] == "http" and scope["method"] != "GET":
        return False
    query = scope.get("query_string", b"").decode("utf-8", "replace")
    return "sid" not in urllib.parse.parse_qs(query)


async def _refuse(scope: Scope, receive: Receive, send: Send, refused: Refusal) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": refused.message})
        return
    await send_error(
        send, 503, refused.message, "service_unavailable", headers=[(b"retry-after", b"1")]
    )


def bound_handshakes(sio: socketio.AsyncServer, limits: HandshakeLimits) -> PendingSessions:
    """Bound the sessions of `sio` that wait for an authorized connect (see the module's
    docstring); their counts, for the connect handler to call `connected` on."""
    eio = sio.eio
    pending = PendingSessions(eio, limits)
    handle_request: Callable[[Scope, Receive, Send], Awaitable[Any]] = eio.handle_request
    on_connect = eio.handlers["connect"]
    on_disconnect = eio.handlers["disconnect"]

    async def guarded_request(scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] not in ("http", "websocket") or not _is_handshake(scope):
            return await handle_request(scope, receive, send)
        client = scope.get("client")
        admitted = pending.admit(client[0] if client else None)
        if isinstance(admitted, Refusal):
            await _refuse(scope, receive, send, admitted)
            return None
        try:
            return await handle_request({**scope, ADMISSION: admitted}, receive, send)
        finally:
            if admitted.sid is None:  # refused by Engine.IO (origin, version): no session
                pending.release(admitted)

    async def connect(sid: str, environ: dict[str, Any]) -> Any:
        admission = environ.get("asgi.scope", {}).get(ADMISSION)
        if isinstance(admission, Admission):
            pending.bind(admission, sid)
        accepted = await on_connect(sid, environ)
        if accepted is not None and accepted is not True:
            pending.ended(sid)  # Engine.IO drops a session its handler refused, silently
        return accepted

    async def disconnect(sid: str, reason: Any) -> Any:
        pending.ended(sid)
        return await on_disconnect(sid, reason)

    eio.handle_request = guarded_request
    eio.on("connect", connect)
    eio.on("disconnect", disconnect)
    return pending
