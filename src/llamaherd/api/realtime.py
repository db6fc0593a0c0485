"""Socket.IO: `llamaStatus` to every client on each change, on connect, and on request."""

from __future__ import annotations

from typing import Any

import socketio

from llamaherd.api.hub import EventHub
from llamaherd.api.payloads import STATUS_EVENT, STATUS_REQUEST, status_event
from llamaherd.supervisor.service import LlamaService


def create_socketio(service: LlamaService, hub: EventHub) -> socketio.AsyncServer:
    # Same-origin only by default (cors_allowed_origins unset): a page on another site must
    # not be able to drive a local llama-server through the browser.
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)

    async def send_status(sid: str) -> None:
        await sio.emit(STATUS_EVENT, status_event(service.get_state()), to=sid)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await send_status(sid)

    @sio.on(STATUS_REQUEST)  # type: ignore[untyped-decorator]
    async def request_status(sid: str, *args: Any) -> None:
        await send_status(sid)

    async def broadcast(name: str, payload: dict[str, Any]) -> None:
        await sio.emit(name, payload)

    hub.add_sink(broadcast)
    return sio
