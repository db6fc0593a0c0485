"""GET /api/events: the Socket.IO events as Server-Sent Events, for clients without Socket.IO."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from llamaherd.api.hub import EventHub
from llamaherd.api.payloads import LOG_EVENT, STATUS_EVENT, status_event
from llamaherd.gateway.herd import Herd

KEEPALIVE_S = 15.0
T = TypeVar("T")


def frame(name: str, payload: dict[str, Any]) -> str:
    """One Server-Sent Event."""
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def create_sse_router(herd: Herd, hub: EventHub) -> APIRouter:
    router = APIRouter()

    def wanted(name: str, payload: dict[str, Any]) -> bool:
        # The seed's stream carries the primary model's lines; any model's are followed at
        # GET /api/models/{id}/logs?follow=1.
        return name != LOG_EVENT or payload["data"]["model"] == herd.primary.spec.id

    @router.get(
        "/api/events",
        tags=["status"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events() -> StreamingResponse:
        """`llamaStatus` (now, then on every change), `llamaModels`, `llamaModelStatus`,
        `llamaMetrics` and the primary model's `llamaLog` events, as SSE."""
        queue = hub.subscribe(wanted)
        first = frame(STATUS_EVENT, status_event(herd.primary.service.get_state()))
        return event_stream(first, queue, lambda item: frame(*item), lambda: hub.unsubscribe(queue))

    return router


def event_stream(
    first: str,
    queue: asyncio.Queue[T | None],
    frame_of: Callable[[T], str],
    done: Callable[[], None],
) -> StreamingResponse:
    """A Server-Sent-Events answer: the frame `first`, then `frame_of(item)` for each item of
    `queue` until a None, with a comment every KEEPALIVE_S while it is quiet (so proxies and
    clients can tell a quiet stream from a dead one); `done()` once it ends, however it ends
    (the client may leave at any moment)."""

    async def stream() -> AsyncIterator[str]:
        try:
            yield first
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield frame_of(item)
        finally:
            done()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
