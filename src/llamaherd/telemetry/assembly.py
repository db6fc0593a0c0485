"""Everything that watches the herd, built and run together: request measurements, server
sampling, Prometheus, the live `llamaMetrics` feed, the history store, log files and alerts.

Each part subscribes to what the gateway and the supervisors publish; none of them is on a
decision path. The order of start and stop matters, and is kept here in one place:
- the sampler and the history store start before the herd loads anything, so the first
  start is timed from `checking` and its transitions are recorded;
- the sampler and the alerter stop before the herd stops the servers (no probe of a closing
  server, no alert about a shutdown), the history store and log files after it (the stops are
  the last things they record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaherd.alerts import Alerter, AlertOptions
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.records import RequestLog
from llamaherd.metrics.live import MetricsFeed
from llamaherd.metrics.meter import RequestMeter
from llamaherd.metrics.prometheus import GatewayMetrics
from llamaherd.metrics.sampler import ServerSampler
from llamaherd.store.history import HistoryStore, follow_herd
from llamaherd.store.logfiles import ServerLogFiles

logger = logging.getLogger("llamaherd.metrics")

Publish = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class TelemetryOptions:
    """What to run; built from the settings by whoever reads the config."""

    metrics: bool = True  # measure requests and servers; /metrics; llamaMetrics
    history_path: Path | None = None  # the SQLite file; None: no history
    retention_days: float = 30.0
    requests_kept: int = 10_000
    log_folder: Path | None = None  # one rotating file per model; None: no files
    log_max_bytes: int = 10 * 1024 * 1024
    log_count: int = 5
    alerts: AlertOptions | None = None  # None, or nowhere to send: no alerts


class Telemetry:
    def __init__(self, herd: Herd, options: TelemetryOptions | None = None) -> None:
        options = options or TelemetryOptions()
        self.herd = herd
        self.requests = RequestLog()
        # History records starts and memory too, so it needs the sampler with or without metrics.
        wanted = options.metrics or options.history_path is not None
        self.sampler = ServerSampler(herd) if wanted else None
        self.metrics = GatewayMetrics(herd, sampler=self.sampler) if options.metrics else None
        self.feed: MetricsFeed | None = None
        self.history = (
            HistoryStore(
                options.history_path,
                retention_days=options.retention_days,
                requests_kept=options.requests_kept,
            )
            if options.history_path is not None
            else None
        )
        self.logfiles = (
            ServerLogFiles(
                options.log_folder, max_bytes=options.log_max_bytes, backup_count=options.log_count
            )
            if options.log_folder is not None and options.log_max_bytes > 0
            else None
        )
        alerts = options.alerts
        self.alerter = (
            Alerter(alerts, herd)
            if alerts is not None and (alerts.webhooks or alerts.command)
            else None
        )
        self._unsubscribes: list[Callable[[], None]] = []

    @property
    def measuring(self) -> bool:
        return self.metrics is not None or self.history is not None

    def observe(self, model: str, endpoint: str, stream: bool) -> RequestMeter:
        """The route's ObserverFactory: one meter per inference request."""
        return RequestMeter(self.requests.publish, model, endpoint, stream=stream)

    async def start(self, publish: Publish) -> None:
        """Before the herd starts; `publish` sends an event to every dashboard."""
        subscribe = self._unsubscribes.append
        if self.sampler is not None:
            self.sampler.start()
        if self.sampler is not None and self.metrics is not None:
            self.metrics.start()
            subscribe(self.requests.subscribe(self.metrics.record))
            self.feed = MetricsFeed(self.herd, self.sampler, publish)
            subscribe(self.requests.subscribe(self.feed.record))
        if self.history is not None:
            await self.history.start()
            subscribe(follow_herd(self.history, self.herd))
            subscribe(self.requests.subscribe(self.history.record_request))
            if self.sampler is not None:
                subscribe(self.sampler.on_start(self.history.record_start))
                subscribe(self.sampler.on_sample(self.history.record_sample))
        if self.logfiles is not None:
            self.logfiles.start()
            logfiles = self.logfiles
            # Every model's, and those a reload adds later.
            subscribe(self.herd.follow_backends(lambda m, b: logfiles.attach(m, b.service.output)))
        if self.alerter is not None:
            self.alerter.start()

    def after_herd_start(self) -> None:
        if self.feed is not None:
            self.feed.start()

    async def close_before_herd(self) -> None:
        if self.feed is not None:
            await self.feed.aclose()
        if self.alerter is not None:
            await self.alerter.aclose()
        if self.metrics is not None:
            await self.metrics.aclose()
        if self.sampler is not None:
            await self.sampler.aclose()

    async def close_after_herd(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
        if self.history is not None:
            await self.history.aclose()
        if self.logfiles is not None:
            await self.logfiles.aclose()
