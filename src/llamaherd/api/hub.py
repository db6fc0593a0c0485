"""One ordered stream of events from the supervisors to every connected client.

State changes and batches of llama-server output (api/model_streams.py batches every model's)
go into a single queue, drained by one publisher task, so every client sees events in the
order they happened. Sinks are the transports: Socket.IO's broadcast, and one bounded queue per
Server-Sent-Events client (a slow SSE client loses its oldest events rather than slowing
anyone else down), which may take only the events it `accepts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from llamaherd.api.payloads import STATUS_EVENT, status_event, without_uptime
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import ServiceState

logger = logging.getLogger("llamaherd.api")

Event = tuple[str, dict[str, Any]]
Sink = Callable[[str, dict[str, Any]], Awaitable[None]]
Accepts = Callable[[str, dict[str, Any]], bool]

SUBSCRIBER_QUEUE = 256


class EventHub:
    def __init__(self, service: LlamaService) -> None:
        self._service = service
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._sinks: list[Sink] = []
        self._subscribers: dict[asyncio.Queue[Event | None], Accepts | None] = {}
        self._stream_closers: list[Callable[[], None]] = []
        self._last_status: dict[str, Any] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._unsubscribes: list[Callable[[], None]] = []

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def start(self) -> None:
        self._unsubscribes = [self._service.on_state_change(self.publish_status)]
        self._publisher = asyncio.create_task(self._publish_forever(), name="llamaherd-events")

    async def aclose(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self.close_streams()
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

    # ---- per-client streams (SSE) ----------------------------------------------------------

    def subscribe(self, accepts: Accepts | None = None) -> asyncio.Queue[Event | None]:
        """A queue of every event from now on (only those `accepts(name, payload)`, if given),
        and None once the hub closes the streams."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers[queue] = accepts
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self._subscribers.pop(queue, None)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def on_close_streams(self, closer: Callable[[], None]) -> None:
        """Call `closer()` when the streams are told to end: other streams (a model's followed
        logs) end with these."""
        self._stream_closers.append(closer)

    def close_streams(self) -> None:
        """Tell every per-client stream to end (None), so shutdown need not wait for them."""
        for queue in list(self._subscribers):
            _put_dropping_oldest(queue, None)
        self._subscribers.clear()
        for closer in self._stream_closers:
            closer()

    # ---- producers -------------------------------------------------------------------------

    def publish(self, name: str, payload: dict[str, Any]) -> None:
        """Queue an event for every client, after every event queued before it."""
        self._queue.put_nowait((name, payload))

    def publish_status(self, state: ServiceState) -> None:
        self.publish(STATUS_EVENT, status_event(state))

    # ---- the one publisher -----------------------------------------------------------------

    async def _publish_forever(self) -> None:
        while True:
            name, payload = await self._queue.get()
            if name == STATUS_EVENT and not self._changed(payload):
                continue
            for queue, accepts in list(self._subscribers.items()):
                if accepts is None or accepts(name, payload):
                    _put_dropping_oldest(queue, (name, payload))
            for sink in self._sinks:
                try:
                    await sink(name, payload)
                except Exception:
                    logger.exception("sending %s failed", name)

    def _changed(self, payload: dict[str, Any]) -> bool:
        essence = without_uptime(payload["data"])
        if essence == self._last_status:
            return False
        self._last_status = essence
        return True


def _put_dropping_oldest(queue: asyncio.Queue[Any], item: Any) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)
