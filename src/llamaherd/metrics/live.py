"""The `llamaMetrics` event: each model's request counts, speeds and latencies over a rolling
window, its queue, and what its server costs, pushed to the dashboard while they change.

Pushed at most once per `min_interval_s`: the first change after a quiet spell goes at once,
later ones are coalesced into one push at the end of the interval, and a payload equal to the
last one pushed is not pushed again. Changes come from finished requests (`record`, a
RequestLog sink), the herd (queue, in flight) and the sampler (memory, slots). The window
also changes by itself as requests age out of it (a slice at a time, metrics/window.py): one
timer, set for the moment the oldest slice leaves, covers that; when all is quiet and the
windows are empty, nothing runs at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamaherd.gateway.herd import Herd
from llamaherd.gateway.records import RequestRecord
from llamaherd.metrics.sampler import ServerSample, ServerSampler
from llamaherd.metrics.window import BucketWindow

METRICS_EVENT = "llamaMetrics"
METRICS_TYPE = "llama_metrics"
EXPIRY_MARGIN_S = 0.001  # fire just after the oldest entry's time is up, never just before

Publish = Callable[[str, dict[str, Any]], None]


# The figures the window keeps of each request, in this order: only what the payload reads.
LATENCY, TTFT, GENERATION_TPS, PROMPT_TPS = range(4)


@dataclass(eq=False)
class _Counts:
    window: BucketWindow
    total: int = 0
    errors: int = 0


class MetricsFeed:
    def __init__(
        self,
        herd: Herd,
        sampler: ServerSampler | None,
        publish: Publish,
        *,
        window_s: float = 60.0,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._herd = herd
        self._sampler = sampler
        self._publish = publish
        self.window_s = window_s
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._counts: dict[str, _Counts] = {}
        self._pending: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._last_built_at: float | None = None
        self._last_data: dict[str, Any] | None = None
        self._unsubscribes: list[Callable[[], None]] = []
        self._closed = False

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the herd and the sampler; the first payload goes out at once."""
        self._unsubscribes.append(self._herd.on_change(self._changed))
        if self._sampler is not None:
            self._unsubscribes.append(self._sampler.on_sample(self._sampled))
        self._changed()

    async def aclose(self) -> None:
        self._closed = True
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
        for handle in (self._pending, self._expiry):
            if handle is not None:
                handle.cancel()
        self._pending = self._expiry = None

    # ---- inputs ----------------------------------------------------------------------------

    def record(self, rec: RequestRecord) -> None:
        """A RequestLog sink: count one finished request."""
        if rec.model not in self._herd.backends:
            return  # only configured models are shown
        counts = self._counts_of(rec.model)
        counts.total += 1
        answered = rec.status is not None and rec.status < 400
        if not answered and not rec.client_disconnected:
            counts.errors += 1
        counts.window.add(
            self._clock(),
            (
                rec.latency_s if answered else None,  # LATENCY: only of answered requests
                rec.ttft_s,
                rec.generation_tps,
                rec.prompt_tps,
            ),
        )
        self._changed()

    def _sampled(self, sample: ServerSample) -> None:
        self._changed()

    # ---- output ----------------------------------------------------------------------------

    def snapshot_event(self) -> dict[str, Any]:
        """The payload as it is now (for a client that connects or asks)."""
        return self._event(self._data(self._clock()))

    def _changed(self) -> None:
        if self._pending is not None or self._closed:
            return
        now = self._clock()
        wait = 0.0
        if self._last_built_at is not None:
            wait = max(0.0, self._last_built_at + self.min_interval_s - now)
        self._pending = asyncio.get_running_loop().call_later(wait, self._push)

    def _push(self) -> None:
        self._pending = None
        now = self._last_built_at = self._clock()
        data = self._data(now)
        if data != self._last_data:
            self._last_data = data
            self._publish(METRICS_EVENT, self._event(data))
        self._arm_expiry(now)

    def _arm_expiry(self, now: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expiries = [e for c in self._counts.values() if (e := c.window.next_expiry()) is not None]
        if expiries and not self._closed:
            delay = max(0.0, min(expiries) - now) + EXPIRY_MARGIN_S
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self._changed()

    # ---- the payload -----------------------------------------------------------------------

    def _event(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"type": METRICS_TYPE, "timestamp": int(time.time() * 1000), "data": data}

    def _data(self, now: float) -> dict[str, Any]:
        samples = self._sampler.snapshot() if self._sampler is not None else {}
        models = []
        for backend, view, _state in self._herd.views():
            model = backend.spec.id
            counts = self._counts_of(model)
            window = counts.window
            window.prune(now)
            sample = samples.get(model)
            models.append(
                {
                    "id": model,
                    "requests": {"total": counts.total, "errors": counts.errors},
                    "tokensPerSecond": _round(window.mean(GENERATION_TPS)),
                    "promptTokensPerSecond": _round(window.mean(PROMPT_TPS)),
                    "latencyP50Ms": _ms(window.percentile(LATENCY, 50)),
                    "ttftP50Ms": _ms(window.percentile(TTFT, 50)),
                    "requestsLastMinute": window.requests(),
                    "queued": view.queued,
                    "inFlight": view.in_flight,
                    "memory": {
                        "rssBytes": sample.rss_bytes if sample else None,
                        "vramBytes": sample.vram_bytes if sample else None,
                        "cpuPercent": _round(sample.cpu_percent) if sample else None,
                    },
                    "slotsBusy": sample.slots_busy if sample else None,
                    "slotsTotal": sample.slots_total if sample else None,
                    "loadTimeS": _round(sample.load_time_s, 3) if sample else None,
                    "peakLoadRssBytes": sample.peak_load_rss_bytes if sample else None,
                }
            )
        return {"models": models}

    def _counts_of(self, model: str) -> _Counts:
        counts = self._counts.get(model)
        if counts is None:
            counts = self._counts[model] = _Counts(BucketWindow(self.window_s, kinds=4))
        return counts


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
