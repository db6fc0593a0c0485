"""Socket.IO: `llamaStatus` to every client on each change, on connect, and on request;
`llamaLog` only to clients that asked for it.

Logs are opt-in because they are the chatty stream: a busy llama-server logs a line per
request, and sending every batch to every connected client costs about 0.13 ms of CPU per
client (bench/socketio_fanout.py). Only a visible log view needs them."""

from __future__ import annotations

from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError as SocketRefused

from llamaherd.api.access import AccessPolicy, ApiKey, authorize, socket_key
from llamaherd.api.guard import origin_allowed
from llamaherd.api.handshakes import HandshakeLimits, bound_handshakes
from llamaherd.api.hub import EventHub
from llamaherd.api.payloads import (
    LOAD_MODEL,
    LOG_EVENT,
    LOG_SUBSCRIBE,
    LOG_UNSUBSCRIBE,
    METRICS_REQUEST,
    MODELS_EVENT,
    MODELS_REQUEST,
    STATUS_EVENT,
    STATUS_REQUEST,
    UNLOAD_MODEL,
    models_event,
    status_event,
)
from llamaherd.gateway.control import ModelControlError, control_model
from llamaherd.gateway.herd import Herd
from llamaherd.metrics.live import METRICS_EVENT
from llamaherd.metrics.telemetry import Telemetry
from llamaherd.supervisor.service import LlamaService

LOG_ROOM = "llama-logs"


def create_socketio(
    service: LlamaService,
    hub: EventHub,
    herd: Herd,
    telemetry: Telemetry,
    access: AccessPolicy | None = None,
    *,
    handshakes: HandshakeLimits | None = None,
) -> socketio.AsyncServer:
    """`handshakes`: how many Engine.IO sessions may wait for an authorized connect, and for
    how long (api/handshakes.py)."""
    access = access or AccessPolicy()
    allowed = frozenset(access.cors_allowed_origins)

    def from_allowed_page(origin: str | None, environ: dict[str, Any]) -> bool:
        # Same-origin only, plus the configured allow-list: a page on another site must not
        # be able to drive a local llama-server through the browser.
        return not origin or origin_allowed(origin, environ.get("HTTP_HOST", ""), allowed)

    sio = socketio.AsyncServer(
        async_mode="asgi",
        logger=False,
        engineio_logger=False,
        cors_allowed_origins=from_allowed_page,
    )
    pending = bound_handshakes(sio, handshakes or HandshakeLimits())

    async def send_status(sid: str) -> None:
        await sio.emit(STATUS_EVENT, status_event(service.get_state()), to=sid)

    async def send_models(sid: str) -> None:
        await sio.emit(MODELS_EVENT, models_event(herd), to=sid)

    async def send_metrics(sid: str) -> None:
        if telemetry.feed is not None:
            await sio.emit(METRICS_EVENT, telemetry.feed.snapshot_event(), to=sid)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if access.keys:
            # The connect payload {"token": KEY}: a browser cannot set headers on a websocket.
            verdict = authorize(access.keys, socket_key(auth, environ), "admin")
            if not isinstance(verdict, ApiKey):
                raise SocketRefused(verdict.message, {"code": verdict.code})
        pending.connected(environ)
        await send_status(sid)
        await send_models(sid)
        await send_metrics(sid)

    @sio.on(METRICS_REQUEST)  # type: ignore[untyped-decorator]
    async def request_metrics(sid: str, *args: Any) -> None:
        await send_metrics(sid)

    @sio.on(MODELS_REQUEST)  # type: ignore[untyped-decorator]
    async def request_models(sid: str, *args: Any) -> None:
        await send_models(sid)

    def on_control(action: str) -> Any:
        async def handler(sid: str, data: Any = None, *_more: Any) -> dict[str, Any]:
            """`loadModel` / `unloadModel` with `{"id": "coder"}`; the acknowledgement is
            `{"ok": true, "model": {...}}` or `{"ok": false, "error": "..."}`. Arguments
            beyond the first are ignored: a client that sends them must not cost a traceback."""
            name = data.get("id") if isinstance(data, dict) else data
            try:
                return {"ok": True, "model": control_model(herd, action, name)}
            except ModelControlError as exc:
                return {"ok": False, "error": str(exc)}

        return handler

    sio.on(LOAD_MODEL, on_control("load"))
    sio.on(UNLOAD_MODEL, on_control("unload"))

    @sio.on(STATUS_REQUEST)  # type: ignore[untyped-decorator]
    async def request_status(sid: str, *args: Any) -> None:
        await send_status(sid)

    @sio.on(LOG_SUBSCRIBE)  # type: ignore[untyped-decorator]
    async def subscribe_logs(sid: str, *args: Any) -> None:
        await sio.enter_room(sid, LOG_ROOM)

    @sio.on(LOG_UNSUBSCRIBE)  # type: ignore[untyped-decorator]
    async def unsubscribe_logs(sid: str, *args: Any) -> None:
        await sio.leave_room(sid, LOG_ROOM)

    async def broadcast(name: str, payload: dict[str, Any]) -> None:
        await sio.emit(name, payload, to=LOG_ROOM if name == LOG_EVENT else None)

    hub.add_sink(broadcast)
    return sio
