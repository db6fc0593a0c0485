"""Alerter: watches every model of the herd and sends its alerts to every destination."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import aiohttp

from llamaherd.alerts.destinations import Command, Destination, Webhook
from llamaherd.alerts.outbox import Outbox
from llamaherd.alerts.payload import build_alert, redact_url
from llamaherd.alerts.rules import AlertRules, RateLimit
from llamaherd.supervisor.states import ServiceState

if TYPE_CHECKING:
    from llamaherd.gateway.herd import Backend, Herd

logger = logging.getLogger("llamaherd.alerts")

QUEUE_DEPTH = 100  # alerts waiting per destination; a few models failing at once fit easily
CLOSE_GRACE_S = 2.0  # how long aclose() lets deliveries in flight finish


class CrashLoop(Protocol):
    @property
    def crashes(self) -> int: ...
    @property
    def within_s(self) -> float: ...


class AlertOptions(Protocol):
    """Where alerts go and how often: the config's `alerts` (config.settings.AlertSettings)
    has these fields; the alerter needs nothing else of the config."""

    @property
    def webhooks(self) -> Sequence[str]: ...
    @property
    def command(self) -> Sequence[str]: ...
    @property
    def crash_loop(self) -> CrashLoop: ...
    @property
    def min_interval_s(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def retries(self) -> int: ...


class Alerter:
    """`start()` (on the running loop) subscribes to every model's state changes and starts
    one delivery task per destination; `aclose()` unsubscribes, lets deliveries finish for
    `close_grace_s`, then cancels them. With no webhook and no command it does nothing.

    `clock` (monotonic seconds) times the crash-loop window and the rate limit;
    `retry_base_s` is the first wait before a retry (then doubled).
    """

    def __init__(
        self,
        settings: AlertOptions,
        herd: Herd,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_base_s: float = 1.0,
        close_grace_s: float = CLOSE_GRACE_S,
        queue_depth: int = QUEUE_DEPTH,
        host: str | None = None,
    ) -> None:
        self.rules = AlertRules(settings.crash_loop.crashes, settings.crash_loop.within_s)
        self.rate_limit = RateLimit(settings.min_interval_s)
        self.host = host if host is not None else socket.gethostname()
        self._herd = herd
        self._clock = clock
        self._close_grace_s = close_grace_s
        self._session: aiohttp.ClientSession | None = None
        self._unsubscribes: list[Callable[[], None]] = []
        webhooks = settings.webhooks
        destinations: list[Destination] = [
            Webhook(
                url,
                f"webhook {index} ({redact_url(url)})" if len(webhooks) > 1 else redact_url(url),
                self._http,
                settings.timeout_s,
            )
            for index, url in enumerate(webhooks, 1)
        ]
        if settings.command:
            destinations.append(Command(tuple(settings.command), settings.timeout_s))
        self._outboxes = [
            Outbox(destination, queue_depth, settings.retries, retry_base_s)
            for destination in destinations
        ]

    # ---- counts, for /metrics and tests ----------------------------------------------------

    @property
    def delivered(self) -> int:
        return sum(outbox.delivered for outbox in self._outboxes)

    @property
    def failed(self) -> int:
        """Deliveries given up on after every retry."""
        return sum(outbox.failed for outbox in self._outboxes)

    @property
    def dropped(self) -> int:
        """Deliveries pushed out of a full outbox before they were tried."""
        return sum(outbox.dropped for outbox in self._outboxes)

    @property
    def suppressed(self) -> int:
        """Alerts held back by the rate limit (sent nowhere)."""
        return self.rate_limit.suppressed_total

    @property
    def pending(self) -> int:
        """Deliveries queued or under way, over every destination."""
        return sum(outbox.pending for outbox in self._outboxes)

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._outboxes or self._unsubscribes:
            return
        self._unsubscribes.append(self._herd.follow_backends(self._follow))
        for outbox in self._outboxes:
            outbox.start()
        labels = ", ".join(outbox.destination.label for outbox in self._outboxes)
        logger.info("alerts go to %s", labels)

    def _follow(self, model: str, backend: Backend) -> Callable[[], None]:
        """Every model's state changes, and those of models a reload adds."""
        self.rules.track(model, backend.service.get_state().status)
        return backend.service.on_state_change(functools.partial(self._on_state, model))

    async def aclose(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
        for outbox in self._outboxes:
            outbox.close()
        tasks = [outbox.task for outbox in self._outboxes if outbox.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._close_grace_s)
            abandoned = self.pending  # only the late ones have any left
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for outbox in self._outboxes:
                outbox.clear()
            if abandoned:
                logger.warning("alerts: %d deliveries abandoned at shutdown", abandoned)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the supervisor's side: decide and enqueue, never wait -----------------------------

    def _on_state(self, model: str, state: ServiceState) -> None:
        now = self._clock()
        for event in self.rules.observe(model, state, now):
            suppressed = self.rate_limit.admit((model, event), now)
            if suppressed is None:
                logger.info(
                    "alert %s for model %s held back: one went out less than %g s ago",
                    event,
                    model,
                    self.rate_limit.min_interval_s,
                )
                continue
            alert = build_alert(
                event,
                model,
                state,
                self.rules,
                host=self.host,
                suppressed=suppressed,
                timestamp_ms=int(time.time() * 1000),
            )
            logger.info("alert: %s", alert.payload["message"])
            for outbox in self._outboxes:
                outbox.put(alert)

    def _http(self) -> aiohttp.ClientSession:
        """The webhooks' own session, made on first use (on the loop, by a delivery task)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False, headers={"User-Agent": "llamaherd-alerts"}
            )
        return self._session
