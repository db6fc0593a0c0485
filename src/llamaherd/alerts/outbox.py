"""One destination's queue of alerts and the one task that delivers them, in order.

Bounded: when full, the oldest alert is dropped (and counted), so a destination that is down
for hours holds at most `depth` alerts. A failed attempt is retried after 1, 2, 4... times
`retry_base_s` (at most a minute apart), `retries` times, each failure logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from llamaherd.alerts.destinations import AttemptFailed, Destination
from llamaherd.alerts.payload import Alert

logger = logging.getLogger("llamaherd.alerts")

MAX_RETRY_DELAY_S = 60.0


class Outbox:
    def __init__(
        self, destination: Destination, depth: int, retries: int, retry_base_s: float
    ) -> None:
        self.destination = destination
        self.delivered = 0
        self.failed = 0  # given up on after every retry
        self.dropped = 0  # pushed out of a full queue before they were tried
        self.task: asyncio.Task[None] | None = None
        self._queue: deque[Alert] = deque()
        self._depth = depth
        self._retries = retries
        self._retry_base_s = retry_base_s
        self._wake = asyncio.Event()
        self._closed = False
        self._busy = False

    @property
    def pending(self) -> int:
        """Alerts queued or being delivered."""
        return len(self._queue) + int(self._busy)

    def start(self) -> None:
        """Start the delivery task (on the running loop)."""
        if self.task is None:
            label = self.destination.label
            self.task = asyncio.create_task(self._drain(), name=f"llamaherd-alerts {label}")

    def put(self, alert: Alert) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._depth:
            old = self._queue.popleft()
            self.dropped += 1
            logger.warning(
                "alert %s for model %s to %s dropped: %d alerts waiting already",
                old.event,
                old.model,
                self.destination.label,
                self._depth,
            )
        self._queue.append(alert)
        self._wake.set()

    def close(self) -> None:
        """Take nothing more; the task ends once it has delivered what is queued."""
        self._closed = True
        self._wake.set()

    def clear(self) -> None:
        """Forget what is still queued (after the task was cancelled at shutdown)."""
        self._queue.clear()

    async def _drain(self) -> None:
        while True:
            while not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
            alert = self._queue.popleft()
            self._busy = True
            try:
                await self._deliver(alert)
            except Exception:  # a bug must not stop the alerts after this one
                self.failed += 1
                logger.exception("delivering an alert to %s failed", self.destination.label)
            finally:
                self._busy = False

    async def _deliver(self, alert: Alert) -> None:
        attempts = 1 + self._retries
        for attempt in range(1, attempts + 1):
            try:
                await self.destination.send(alert)
            except AttemptFailed as exc:
                delay = min(self._retry_base_s * 2 ** (attempt - 1), MAX_RETRY_DELAY_S)
                last = attempt == attempts
                logger.warning(
                    "alert %s for model %s: %s, attempt %d/%d failed: %s; %s",
                    alert.event,
                    alert.model,
                    self.destination.label,
                    attempt,
                    attempts,
                    exc,
                    "giving up" if last else f"retrying in {delay:g} s",
                )
                if last:
                    self.failed += 1
                    return
                await asyncio.sleep(delay)
            else:
                self.delivered += 1
                return
