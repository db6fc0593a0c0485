"""MetricsFeed: the `llamaMetrics` payload, pushed at most once an interval and only on change."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from llamaherd.gateway.records import RequestRecord
from llamaherd.gateway.scheduler import Phase
from llamaherd.metrics.live import METRICS_EVENT, MetricsFeed
from llamaherd.metrics.sampler import ServerSampler
from llamaherd.metrics.window import EXACT_VALUES, BucketWindow
from llamaherd.stats import percentile
from tests.conftest import HerdFactory

pytestmark = pytest.mark.timeout(60)

MODEL_KEYS = {
    "id",
    "requests",
    "tokensPerSecond",
    "promptTokensPerSecond",
    "latencyP50Ms",
    "ttftP50Ms",
    "requestsLastMinute",
    "queued",
    "inFlight",
    "memory",
    "slotsBusy",
    "slotsTotal",
    "loadTimeS",
    "peakLoadRssBytes",
}


class Published:
    """What the feed published, when (monotonic), and ways to await or rule out more."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        assert name == METRICS_EVENT
        self.events.append((time.monotonic(), payload))
        self._changed.set()

    def model(self, index: int, model: str = "a") -> dict[str, Any]:
        models = self.events[index][1]["data"]["models"]
        return next(entry for entry in models if entry["id"] == model)

    async def until(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()

    async def until_model(
        self, predicate: Callable[[dict[str, Any]], bool], model: str = "a", timeout: float = 15.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for index in range(len(self.events)):
                    if predicate(self.model(index, model)):
                        return self.model(index, model)
                self._changed.clear()
                await self._changed.wait()

    async def quiet(self, seconds: float) -> None:
        """Nothing more is published for `seconds` (what "nothing happens" looks like)."""
        count = len(self.events)
        self._changed.clear()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        assert len(self.events) == count


@pytest.fixture
async def feeds() -> AsyncIterator[list[MetricsFeed]]:
    made: list[MetricsFeed] = []
    yield made
    for feed in made:
        await feed.aclose()


def record(**fields: Any) -> RequestRecord:
    defaults: dict[str, Any] = {
        "model": "a",
        "endpoint": "/v1/chat/completions",
        "status": 200,
        "started_at": time.time(),
        "latency_s": 0.1,
        "queue_wait_s": 0.0,
        "ttft_s": None,
        "stream": False,
    }
    return RequestRecord(**{**defaults, **fields})


async def test_the_payload(make_herd: HerdFactory, feeds: list[MetricsFeed]) -> None:
    herd = make_herd(max_loaded=2)
    feed = MetricsFeed(herd, None, Published())
    feeds.append(feed)
    feed.record(record(generation_tps=100.0, prompt_tps=1000.0, latency_s=0.2, ttft_s=0.05))
    feed.record(record(generation_tps=200.0, latency_s=0.4, stream=True))
    feed.record(record(status=429, latency_s=0.001, error="queue full"))
    feed.record(record(status=None, client_disconnected=True))  # left: not an error
    feed.record(record(status=None))  # no answer, and not because the client left
    feed.record(record(status=502, error="llama-server closed the connection"))
    feed.record(record(model="not-configured"))

    before = int(time.time() * 1000)
    event = feed.snapshot_event()
    assert event["type"] == "llama_metrics"
    assert before <= event["timestamp"] <= int(time.time() * 1000)
    models = {entry["id"]: entry for entry in event["data"]["models"]}
    assert set(models) == {"a", "b"}
    assert set(models["a"]) == MODEL_KEYS
    assert models["a"] == {
        "id": "a",
        "requests": {"total": 6, "errors": 3},
        "tokensPerSecond": 150.0,
        "promptTokensPerSecond": 1000.0,
        "latencyP50Ms": 300.0,  # of the two answered requests
        "ttftP50Ms": 50.0,
        "requestsLastMinute": 6,
        "queued": 0,
        "inFlight": 0,
        "memory": {"rssBytes": None, "vramBytes": None, "cpuPercent": None},
        "slotsBusy": None,
        "slotsTotal": None,
        "loadTimeS": None,
        "peakLoadRssBytes": None,
    }
    assert models["b"]["requests"] == {"total": 0, "errors": 0}
    assert models["b"]["tokensPerSecond"] is None and models["b"]["latencyP50Ms"] is None


async def test_many_records_are_coalesced(make_herd: HerdFactory, feeds: list[MetricsFeed]) -> None:
    published = Published()
    feed = MetricsFeed(make_herd(max_loaded=2), None, published, min_interval_s=0.25)
    feeds.append(feed)
    feed.start()
    await published.until(1)  # the first goes at once
    assert published.model(0)["requests"]["total"] == 0

    for _ in range(100):
        feed.record(record())
    await published.until(2)
    assert len(published.events) == 2 and published.model(1)["requests"]["total"] == 100

    began = time.monotonic()
    for _ in range(60):
        feed.record(record())
        await asyncio.sleep(0.01)
    await published.until_model(lambda m: m["requests"]["total"] == 160)
    elapsed = time.monotonic() - began
    times = [at for at, _ in published.events]
    assert all(later - earlier >= 0.24 for earlier, later in itertools.pairwise(times))
    assert len(published.events) <= 2 + elapsed / 0.25 + 1


async def test_nothing_is_pushed_when_nothing_changed(
    make_herd: HerdFactory, feeds: list[MetricsFeed]
) -> None:
    herd = make_herd(max_loaded=2)
    published = Published()
    feed = MetricsFeed(herd, None, published, min_interval_s=0.1)
    feeds.append(feed)
    feed.start()
    await published.until(1)
    await published.quiet(0.3)

    # The herd changes while the model loads, but nothing this payload shows does.
    herd.load("a")
    async with asyncio.timeout(10):
        while herd.view("a").phase is not Phase.READY:
            await asyncio.sleep(0.02)
    await published.quiet(0.3)
    assert len(published.events) == 1

    ticket = herd.submit("a")  # this does change it: one in flight
    await ticket.decision
    entry = await published.until_model(lambda m: m["inFlight"] == 1)
    assert entry["queued"] == 0
    herd.end(ticket)
    await published.until(3)
    assert published.model(2)["inFlight"] == 0


async def test_requests_age_out_of_the_window(
    make_herd: HerdFactory, feeds: list[MetricsFeed]
) -> None:
    published = Published()
    feed = MetricsFeed(make_herd(max_loaded=2), None, published, window_s=0.5, min_interval_s=0.1)
    feeds.append(feed)
    feed.start()
    await published.until(1)
    feed.record(record(generation_tps=50.0))
    entry = await published.until_model(lambda m: m["requestsLastMinute"] == 1)
    assert entry["tokensPerSecond"] == 50.0

    # With no other event, the window's own expiry pushes the change.
    entry = await published.until_model(
        lambda m: m["requestsLastMinute"] == 0 and m["requests"]["total"] == 1
    )
    assert entry["tokensPerSecond"] is None
    await published.quiet(0.4)
    assert feed._expiry is None and feed._pending is None  # nothing left running


async def test_server_figures_come_from_the_sampler(
    make_herd: HerdFactory, feeds: list[MetricsFeed]
) -> None:
    herd = make_herd(max_loaded=2)
    sampler = ServerSampler(herd, interval_s=0.1, loading_interval_s=0.02)
    published = Published()
    feed = MetricsFeed(herd, sampler, published, min_interval_s=0.1)
    feeds.append(feed)
    sampler.start()
    feed.start()
    try:
        await herd.backends["a"].service.start()
        entry = await published.until_model(
            lambda m: m["memory"]["cpuPercent"] is not None and m["slotsTotal"] == 1
        )
        assert entry["memory"]["rssBytes"] > 1_000_000
        assert entry["slotsBusy"] == 0
        assert entry["loadTimeS"] > 0 and entry["peakLoadRssBytes"] > 1_000_000
        assert published.model(-1, "b")["memory"]["rssBytes"] is None
        assert feed.snapshot_event()["data"]["models"][0]["memory"]["rssBytes"] > 1_000_000
    finally:
        await sampler.aclose()


async def test_a_closed_feed_pushes_nothing(
    make_herd: HerdFactory, feeds: list[MetricsFeed]
) -> None:
    published = Published()
    feed = MetricsFeed(make_herd(max_loaded=2), None, published, min_interval_s=0.1)
    feed.start()
    await published.until(1)
    await feed.aclose()
    feed.record(record())
    await published.quiet(0.3)
    assert feed._pending is None and feed._expiry is None


# ---- the window and its statistics, on their own -------------------------------------------


def test_a_bucket_window_forgets_a_slice_at_a_time() -> None:
    window = BucketWindow(60.0, kinds=1)  # slices of 1 s
    assert window.next_expiry() is None and window.requests() == 0
    window.add(100.2, [1.0])
    window.add(100.7, [None])
    window.add(105.5, [3.0])
    assert window.next_expiry() == 161.0  # the slice [100, 101) leaves a span after its end
    assert window.requests() == 3 and window.mean(0) == 2.0
    window.prune(160.9)
    assert window.requests() == 3
    window.prune(161.0)
    assert window.requests() == 1 and window.next_expiry() == 166.0
    window.prune(300.0)
    assert len(window) == 0 and window.next_expiry() is None and window.mean(0) is None
    with pytest.raises(ValueError):
        BucketWindow(0, kinds=1)


def test_bucket_window_medians_are_exact_until_many_then_close() -> None:
    window = BucketWindow(60.0, kinds=1)
    window.add(1.0, [0.2])
    window.add(2.0, [0.4])
    assert window.percentile(0, 50) == pytest.approx(0.3)
    many = BucketWindow(60.0, kinds=1)
    values = [0.001 * (1 + i % 97) for i in range(EXACT_VALUES * 3)]
    for i, value in enumerate(values):
        many.add(i / len(values) * 30, [value])
    exact = percentile(values, 50)
    assert exact is not None
    assert many.percentile(0, 50) == pytest.approx(exact, rel=0.01)
