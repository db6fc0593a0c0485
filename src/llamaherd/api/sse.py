"""GET /api/events: the Socket.IO events as Server-Sent Events, for clients without Socket.IO."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from llamaherd.api.hub import EventHub
from llamaherd.api.payloads import STATUS_EVENT, status_event
from llamaherd.supervisor.service import LlamaService

KEEPALIVE_S = 15.0


def _frame(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def create_sse_router(service: LlamaService, hub: EventHub) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/api/events",
        tags=["status"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events() -> StreamingResponse:
        """`llamaStatus` (now, then on every change) and `llamaLog` events, as SSE."""
        queue = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield _frame(STATUS_EVENT, status_event(service.get_state()))
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is None:
                        return
                    yield _frame(*item)
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
