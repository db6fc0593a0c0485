"""Socket.IO: `llamaStatus` to every client on each change, on connect, and on request;
`llamaLog` only to clients that asked for it.

Logs are opt-in because they are the chatty stream: a busy llama-server logs a line per
request, and sending every batch to every connected client costs about 0.13 ms of CPU per
client (bench/socketio_fanout.py). Only a visible log view needs them."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError as SocketRefused

from llamaherd.api.access import AccessPolicy, ApiKey, KeyRing, authorize, socket_key
from llamaherd.api.guard import origin_allowed
from llamaherd.api.handshakes import HandshakeLimits, bound_handshakes
from llamaherd.api.hub import EventHub, Sink
from llamaherd.api.payloads import (
    LOAD_MODEL,
    LOG_EVENT,
    LOG_SUBSCRIBE,
    LOG_UNSUBSCRIBE,
    METRICS_REQUEST,
    MODEL_STATUS_EVENT,
    MODEL_STATUS_REQUEST,
    MODELS_EVENT,
    MODELS_REQUEST,
    RESTART_MODEL,
    START_MODEL,
    STATUS_EVENT,
    STATUS_REQUEST,
    STOP_MODEL,
    UNLOAD_MODEL,
    model_status_event,
    models_event,
    status_event,
)
from llamaherd.gateway.control import Action, ModelControlError, control_model, resolve_model
from llamaherd.gateway.herd import Herd
from llamaherd.metrics.live import METRICS_EVENT
from llamaherd.supervisor.service import LlamaService
from llamaherd.telemetry.assembly import Telemetry

LOG_ROOM = "llama-logs"  # the seed's subscribers: the primary model's lines


def log_room(model: str) -> str:
    """The room of the clients that follow `model`'s lines (never LOG_ROOM: it has a colon)."""
    return f"{LOG_ROOM}:{model}"


def _named(data: Any) -> object:
    """The model an event names: `{"model": ID}`, `{"id": ID}` or the bare id; None if none."""
    if isinstance(data, dict):
        return data.get("model", data.get("id"))
    return data


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

    keyed = _KeyedSessions(sio, access.keys)

    @sio.event  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, *reason: Any) -> None:
        keyed.discard(sid)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if access.keys:
            # The connect payload {"token": KEY}: a browser cannot set headers on a websocket.
            verdict = authorize(access.keys, socket_key(auth, environ), "admin")
            if not isinstance(verdict, ApiKey):
                raise SocketRefused(verdict.message, {"code": verdict.code})
            keyed.add(sid, verdict.digest)
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

    @sio.on(STATUS_REQUEST)  # type: ignore[untyped-decorator]
    async def request_status(sid: str, *args: Any) -> None:
        await send_status(sid)

    hub.add_sink(_serve_models(sio, herd))
    return sio


def _serve_models(sio: socketio.AsyncServer, herd: Herd) -> Sink:
    """Every model's events: load, unload, start, stop and restart; its status on request; its
    output lines to the clients that subscribed to them. Returns the hub's sink, which sends
    each event to its audience."""

    def on_control(action: Action) -> Any:
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
    # Any model's start (a load, by the seed's name), stop (drains, then refuses requests until
    # started) and restart, acknowledged at once like a load; llamaModelStatus follows them.
    sio.on(START_MODEL, on_control("start"))
    sio.on(STOP_MODEL, on_control("stop"))
    sio.on(RESTART_MODEL, on_control("restart"))

    @sio.on(MODEL_STATUS_REQUEST)  # type: ignore[untyped-decorator]
    async def request_model_status(sid: str, data: Any = None, *_more: Any) -> dict[str, Any]:
        """`requestLlamaModelStatus` with `{"model": "coder"}`: that model's `llamaModelStatus`
        to this client; acknowledged with `{"ok": true}` or `{"ok": false, "error": "..."}`."""
        try:
            model = resolve_model(herd, _named(data))
        except ModelControlError as exc:
            return {"ok": False, "error": str(exc)}
        state = herd.backends[model].service.get_state()
        await sio.emit(MODEL_STATUS_EVENT, model_status_event(model, state), to=sid)
        return {"ok": True}

    @sio.on(LOG_SUBSCRIBE)  # type: ignore[untyped-decorator]
    async def subscribe_logs(sid: str, data: Any = None, *_more: Any) -> dict[str, Any]:
        """`subscribeLlamaLogs`: the primary model's lines, as the seed's; with
        `{"model": "coder"}` (an id or an alias), that model's. Acknowledged with
        `{"ok": true, "model": ID}` or `{"ok": false, "error": "..."}`."""
        if _named(data) is None:
            await sio.enter_room(sid, LOG_ROOM)
            return {"ok": True, "model": herd.primary.spec.id}
        try:
            model = resolve_model(herd, _named(data))
        except ModelControlError as exc:
            return {"ok": False, "error": str(exc)}
        await sio.enter_room(sid, log_room(model))
        return {"ok": True, "model": model}

    @sio.on(LOG_UNSUBSCRIBE)  # type: ignore[untyped-decorator]
    async def unsubscribe_logs(sid: str, data: Any = None, *_more: Any) -> None:
        """`unsubscribeLlamaLogs`: no more of the primary model's lines (the seed's); with
        `{"model": "coder"}`, no more of that model's. Each undoes its own subscribe, so a page
        that switches models can send both at once in either order."""
        name = _named(data)
        if not isinstance(name, str) or not name:
            await sio.leave_room(sid, LOG_ROOM)
            return
        try:
            await sio.leave_room(sid, log_room(resolve_model(herd, name)))
        except ModelControlError:  # a model a reload removed: its room, by the id
            await sio.leave_room(sid, log_room(name))

    async def broadcast(name: str, payload: dict[str, Any]) -> None:
        if name != LOG_EVENT:
            await sio.emit(name, payload, to=None)
            return
        # A model's lines go to its followers; the primary's to the seed's subscribers too
        # (python-socketio sends once to a client in both rooms).
        model = payload["data"]["model"]
        rooms = [log_room(model)]
        if model == herd.primary.spec.id:
            rooms.append(LOG_ROOM)
        await sio.emit(name, payload, to=rooms)

    return broadcast


class _KeyedSessions:
    """Socket.IO sessions by the key each connected with: when a reload removes a key, the
    sessions that hold it end at once (a dashboard then asks for a key again)."""

    def __init__(self, sio: socketio.AsyncServer, ring: KeyRing) -> None:
        self._sio = sio
        self._ring = ring
        self._digests: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        ring.on_change(self._keys_changed)

    def add(self, sid: str, digest: bytes) -> None:
        self._digests[sid] = digest

    def discard(self, sid: str) -> None:
        self._digests.pop(sid, None)

    def _keys_changed(self) -> None:
        task = asyncio.get_running_loop().create_task(self._close_revoked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_revoked(self) -> None:
        # No keys left at all: everyone who can connect may; the sessions stay.
        revoked = [
            sid for sid, d in self._digests.items() if self._ring and not self._ring.holds(d)
        ]
        for sid in revoked:
            self.discard(sid)
            await self._sio.disconnect(sid)
