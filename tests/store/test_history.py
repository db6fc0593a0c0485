"""The history store on a real SQLite file: batches written off the loop, per-minute figures,
retention, restarts, and a disk that refuses writes without stopping anything."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llamaherd.gateway.herd import herd_of_one
from llamaherd.gateway.records import RequestRecord
from llamaherd.metrics.sampler import ServerSample, StartRecord
from llamaherd.stats import percentile
from llamaherd.store.history import HistoryStore, follow_herd
from llamaherd.store.minutes import merge_minutes
from llamaherd.store.rows import MinuteRow
from llamaherd.store.schema import SCHEMA_VERSION
from llamaherd.supervisor.states import ExitInfo, ServiceState, Status
from tests.clock import FakeClock
from tests.conftest import RecordingSleep, ServiceFactory, StateRecorder

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000.0  # a multiple of 60: the start of a minute
DAY = 86400.0


@dataclass(frozen=True)
class Start:  # what the resource sampler produces
    model: str
    at: float
    load_time_s: float
    peak_rss_bytes: int
    ok: bool


@dataclass(frozen=True)
class Sample:  # what the resource sampler publishes, in part
    model: str
    rss_bytes: int | None


def request(
    model: str = "a",
    *,
    at: float = T0,
    status: int | None = 200,
    latency_s: float = 0.5,
    ttft_s: float | None = None,
    tps: float | None = 100.0,
    error: str | None = None,
) -> RequestRecord:
    return RequestRecord(
        model=model,
        endpoint="/v1/chat/completions",
        status=status,
        started_at=at,
        latency_s=latency_s,
        queue_wait_s=0.01,
        ttft_s=ttft_s,
        stream=ttft_s is not None,
        prompt_tokens=10,
        completion_tokens=20,
        prompt_tps=1000.0,
        generation_tps=tps,
        error=error,
    )


def crashed(code: int | None = None, sig: str | None = None) -> ServiceState:
    return ServiceState(
        status=Status.CRASHED,
        last_error="llama-server exited while ready",
        last_exit=ExitInfo(code, sig),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "history.db"


@pytest.fixture
async def make_store(db_path: Path, clock: FakeClock) -> AsyncIterator[Callable[..., HistoryStore]]:
    stores: list[HistoryStore] = []

    def factory(**kwargs: Any) -> HistoryStore:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("flush_interval_s", 3600)  # tests flush by hand
        store = HistoryStore(kwargs.pop("path", db_path), **kwargs)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.aclose()


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """What is really in the file, read with a connection of the test's own."""
    with sqlite3.connect(path) as db:
        found = db.execute(sql).fetchall()
    db.close()
    return found


@pytest.fixture
def store_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    caplog.set_level(logging.INFO, logger="llamaherd.store")

    def warnings() -> list[str]:
        return [
            record.getMessage()
            for record in caplog.records
            if record.name == "llamaherd.store" and record.levelno >= logging.WARNING
        ]

    yield warnings


# ---- round trip ------------------------------------------------------------------------------


async def test_what_is_recorded_is_written_and_queried_back(
    make_store: Callable[..., HistoryStore], db_path: Path, clock: FakeClock
) -> None:
    store = make_store()
    await store.start()
    clock.now = T0 + 5
    store.record_transition("a", "starting", ServiceState(status=Status.READY))
    store.record_start(Start("a", T0 + 1, 2.5, 300_000_000, True))
    store.record_request(request(at=T0 + 4, ttft_s=0.2))
    store.record_request(request(at=T0 + 4.5, status=503, tps=None, error="queue full"))
    clock.now = T0 + 6
    store.record_transition("a", "ready", crashed(sig="SIGKILL"))
    await store.flush()

    assert rows(db_path, "SELECT from_status, to_status, signal FROM transitions") == [
        ("starting", "ready", None),
        ("ready", "crashed", "SIGKILL"),
    ]
    assert rows(db_path, "SELECT count(*) FROM requests") == [(2,)]
    assert rows(db_path, "SELECT count(*) FROM minutes") == [(0,)]  # the minute is still open

    history = await store.query(None, None, None, 100)
    assert history["transitions"] == [
        {
            "model": "a",
            "at": T0 + 5,
            "from": "starting",
            "to": "ready",
            "reason": None,
            "exitCode": None,
            "signal": None,
        },
        {
            "model": "a",
            "at": T0 + 6,
            "from": "ready",
            "to": "crashed",
            "reason": "llama-server exited while ready",
            "exitCode": None,
            "signal": "SIGKILL",
        },
    ]
    assert history["starts"] == [
        {"model": "a", "at": T0 + 1, "loadTimeS": 2.5, "peakRssBytes": 300_000_000, "ok": True}
    ]
    assert history["requests"][0] == {
        "model": "a",
        "endpoint": "/v1/chat/completions",
        "status": 200,
        "at": T0 + 4,
        "latencyMs": 500.0,
        "queueWaitMs": 10.0,
        "ttftMs": 200.0,
        "promptTokens": 10,
        "completionTokens": 20,
        "tokensPerSecond": 100.0,
        "error": None,
    }
    assert history["requests"][1]["status"] == 503
    assert history["requests"][1]["error"] == "queue full"
    # The open minute is part of the answer before it is written.
    [minute] = history["minutes"]
    assert set(minute) == {
        "model",
        "minute",
        "requests",
        "errors",
        "byStatus",
        "promptTokens",
        "completionTokens",
        "tokensPerSecond",
        "latencyP50Ms",
        "latencyP95Ms",
        "ttftP50Ms",
        "ttftP95Ms",
        "rssBytes",
    }
    assert minute["requests"] == 2 and minute["errors"] == 1
    assert minute["byStatus"] == {"200": 1, "503": 1}
    assert history["store"] == {"ok": True, "warning": None}


async def test_rows_not_yet_written_are_in_the_answer_exactly_once(
    make_store: Callable[..., HistoryStore],
) -> None:
    store = make_store()
    await store.start()
    store.record_request(request(at=T0 + 1))
    before = await store.query(None, None, None, 10)
    await store.flush()
    after = await store.query(None, None, None, 10)
    assert len(before["requests"]) == len(after["requests"]) == 1


async def test_the_periodic_flush_writes_without_being_asked(
    make_store: Callable[..., HistoryStore], db_path: Path
) -> None:
    store = make_store(flush_interval_s=0.05)
    await store.start()
    store.record_request(request())
    async with asyncio.timeout(10):
        while rows(db_path, "SELECT count(*) FROM requests") != [(1,)]:
            await asyncio.sleep(0.02)


async def test_query_filters_orders_and_keeps_the_newest(
    make_store: Callable[..., HistoryStore], clock: FakeClock
) -> None:
    store = make_store()
    await store.start()
    for second in range(10):
        clock.now = T0 + second
        store.record_transition("a", "initial", ServiceState(status=Status.CHECKING))
        store.record_transition("b", "initial", ServiceState(status=Status.CHECKING))
    await store.flush()
    for second in range(10, 12):  # still in memory
        clock.now = T0 + second
        store.record_transition("a", "initial", ServiceState(status=Status.CHECKING))

    history = await store.query("a", T0 + 3, T0 + 10, 4)
    assert [t["at"] for t in history["transitions"]] == [T0 + 7, T0 + 8, T0 + 9, T0 + 10]
    assert {t["model"] for t in history["transitions"]} == {"a"}
    assert (await store.query("nobody", None, None, 10))["transitions"] == []


# ---- per-minute figures ------------------------------------------------------------------------


async def test_a_minute_is_written_once_it_has_passed(
    make_store: Callable[..., HistoryStore], db_path: Path, clock: FakeClock
) -> None:
    store = make_store()
    await store.start()
    clock.now = T0 + 10
    for latency in (0.1, 0.2, 0.3, 0.4, 1.0):
        store.record_request(request(latency_s=latency, ttft_s=latency / 2, tps=latency * 100))
    store.record_request(request(status=None, latency_s=0.05, tps=None))
    store.record_memory("a", 100)
    store.record_memory("a", 300)
    store.record_memory("a", 200)
    store.record_sample(Sample("b", 50))  # memory alone makes a row
    store.record_sample(Sample("b", None))  # not measured
    await store.flush()
    assert rows(db_path, "SELECT count(*) FROM minutes") == [(0,)]

    clock.now = T0 + 61
    store.record_request(request())  # the next minute: stays open
    await store.flush()

    history = await store.query(None, None, None, 10)
    a, b, a_next = history["minutes"]
    assert (a["model"], a["minute"], b["model"], a_next["minute"]) == ("a", T0, "b", T0 + 60)
    assert a["requests"] == 6 and a["errors"] == 1
    assert a["byStatus"] == {"200": 5, "none": 1}
    assert a["promptTokens"] == 60 and a["completionTokens"] == 120
    assert a["tokensPerSecond"] == pytest.approx(40.0)  # mean of 10, 20, 30, 40, 100
    assert a["latencyP50Ms"] == pytest.approx(250.0)  # 50, 100, 200, 300, 400, 1000
    assert a["latencyP95Ms"] == pytest.approx(850.0)
    assert a["ttftP50Ms"] == pytest.approx(150.0)  # 50, 100, 150, 200, 500
    assert a["rssBytes"] == 300
    assert b["requests"] == 0 and b["rssBytes"] == 50 and b["latencyP50Ms"] is None
    assert rows(db_path, "SELECT model, minute, requests, rss_bytes FROM minutes") == [
        ("a", int(T0), 6, 300),
        ("b", int(T0), 0, 50),
    ]

    await store.aclose()  # the open minute too
    assert rows(db_path, "SELECT minute, requests FROM minutes WHERE model = 'a'") == [
        (int(T0), 6),
        (int(T0) + 60, 1),
    ]


def test_percentiles_and_merging_two_rows_of_one_minute() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0

    def row(requests: int, speed: float | None, samples: int, p95: float | None) -> MinuteRow:
        return MinuteRow("a", 60, requests, 1, {"200": requests - 1, "500": 1}, 1, 2, speed,
                         samples, p95, p95, None, None, None)  # fmt: skip

    merged = merge_minutes(row(3, 10.0, 3, 100.0), row(1, 30.0, 1, 400.0))
    assert (merged.requests, merged.errors) == (4, 2)
    assert merged.by_status == {"200": 2, "500": 2}
    assert merged.tokens_per_second == pytest.approx(15.0)  # weighted by samples
    assert merged.latency_p95_ms == 400.0  # the larger: an upper bound
    assert merge_minutes(row(1, None, 0, None), row(1, None, 0, 5.0)).latency_p95_ms == 5.0
    assert merge_minutes(row(1, None, 0, None), row(1, None, 0, None)).tokens_per_second is None


# ---- restarts, schema, retention ---------------------------------------------------------------


async def test_a_new_store_on_the_same_file_reads_what_the_last_one_wrote(
    make_store: Callable[..., HistoryStore], db_path: Path, clock: FakeClock
) -> None:
    first = make_store()
    await first.start()
    clock.now = T0 + 10
    first.record_request(request(latency_s=0.1))
    first.record_request(request(latency_s=0.3))
    first.record_transition("a", "ready", crashed(code=1))
    await first.aclose()

    clock.now = T0 + 20  # the same minute, after a restart
    second = make_store()
    await second.start()
    second.record_request(request(status=500, latency_s=2.0))
    history = await second.query(None, None, None, 10)
    assert [t["exitCode"] for t in history["transitions"]] == [1]
    assert len(history["requests"]) == 3
    [minute] = history["minutes"]  # the written row and the open one, merged
    assert minute["requests"] == 3 and minute["byStatus"] == {"200": 2, "500": 1}
    await second.aclose()

    third = make_store()
    await third.start()
    [minute] = (await third.query(None, None, None, 10))["minutes"]
    assert minute["requests"] == 3 and minute["errors"] == 1
    assert minute["latencyP95Ms"] == pytest.approx(2000.0)


async def test_the_schema_version_is_set_and_the_file_is_in_wal_mode(
    make_store: Callable[..., HistoryStore], db_path: Path
) -> None:
    await make_store().start()
    assert SCHEMA_VERSION == 1
    assert rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert {name for (name,) in rows(db_path, "SELECT name FROM sqlite_master")} >= {
        "transitions",
        "starts",
        "minutes",
        "requests",
    }


async def test_a_file_from_a_newer_llamaherd_is_left_alone(
    make_store: Callable[..., HistoryStore],
    db_path: Path,
    store_warnings: Callable[[], list[str]],
) -> None:
    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    store = make_store()
    await store.start()
    assert not store.status().ok
    assert "schema version 99 is newer" in (store.status().warning or "")
    assert rows(db_path, "SELECT count(*) FROM sqlite_master") == [(0,)]
    assert len(store_warnings()) == 1


async def test_rows_past_retention_are_deleted_at_start_and_hourly(
    make_store: Callable[..., HistoryStore], db_path: Path, clock: FakeClock
) -> None:
    old = make_store(retention_days=30)
    await old.start()
    clock.now = T0 - 31 * DAY
    old.record_transition("a", "initial", ServiceState(status=Status.CHECKING))
    old.record_start(Start("a", clock.now, 1.0, 1, True))
    old.record_request(request(at=clock.now))
    clock.now = T0 - 29 * DAY
    old.record_transition("a", "checking", ServiceState(status=Status.READY))
    old.record_request(request(at=clock.now))
    await old.aclose()
    assert rows(db_path, "SELECT count(*) FROM minutes") == [(2,)]

    clock.now = T0
    store = make_store(retention_days=30)
    await store.start()
    assert rows(db_path, "SELECT count(*) FROM transitions") == [(1,)]
    assert rows(db_path, "SELECT count(*) FROM starts") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM requests") == [(1,)]
    assert rows(db_path, "SELECT count(*) FROM minutes") == [(1,)]

    clock.now = T0 + 1.5 * DAY  # the kept row is now 30.5 days old: the hourly pass takes it
    await store.flush()
    assert rows(db_path, "SELECT count(*) FROM transitions") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM requests") == [(0,)]


async def test_only_the_newest_requests_are_kept(
    make_store: Callable[..., HistoryStore], db_path: Path
) -> None:
    store = make_store(requests_kept=3)
    await store.start()
    for n in range(5):
        store.record_request(request(at=T0 + n))
    await store.flush()
    assert rows(db_path, "SELECT at FROM requests ORDER BY at") == [(T0 + 2,), (T0 + 3,), (T0 + 4,)]

    none_kept = make_store(requests_kept=0, path=db_path.with_name("none.db"))
    await none_kept.start()
    none_kept.record_request(request())
    history = await none_kept.query(None, None, None, 10)
    assert history["requests"] == [] and history["minutes"][0]["requests"] == 1


# ---- a disk that refuses ------------------------------------------------------------------------


async def test_a_folder_that_cannot_exist_degrades_and_never_raises(
    make_store: Callable[..., HistoryStore],
    tmp_path: Path,
    store_warnings: Callable[[], list[str]],
) -> None:
    (tmp_path / "file.txt").write_text("a file, not a folder")
    path = tmp_path / "file.txt" / "history.db"
    store = make_store(path=path)
    await store.start()  # does not raise
    store.record_request(request())
    store.record_transition("a", "ready", crashed(code=1))
    await store.flush()
    await store.flush()

    status = store.status()
    assert not status.ok and status.path == path
    assert status.warning is not None
    assert status.warning.startswith(f"history store {path} cannot be written: ")
    assert "(0 dropped)" in status.warning
    history = await store.query(None, None, None, 10)  # what memory keeps
    assert len(history["requests"]) == 1 and len(history["transitions"]) == 1
    assert history["store"] == {"ok": False, "warning": status.warning}
    assert store_warnings() == [status.warning]

    await store.aclose()
    assert store_warnings()[1:] == [
        f"history store {path}: 3 measurements could not be written and are lost"
    ]  # the request, the transition, and the minute closed at shutdown
    after = await store.query(None, None, None, 10)  # a late request during shutdown
    assert len(after["requests"]) == 1 and len(after["minutes"]) == 1


async def test_a_full_disk_keeps_measurements_in_memory_then_resumes(
    make_store: Callable[..., HistoryStore],
    db_path: Path,
    store_warnings: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = make_store(max_pending=3)
    await store.start()
    real_write = store._writer.write
    refusals = 0

    def full_disk(*args: Any, **kwargs: Any) -> None:
        nonlocal refusals
        if refusals < 3:
            refusals += 1
            raise sqlite3.OperationalError("database or disk is full")
        real_write(*args, **kwargs)

    monkeypatch.setattr(store._writer, "write", full_disk)
    for n in range(5):
        store.record_request(request(at=T0 + n))  # serving-side calls never raise
    await store.flush()
    for n in range(5, 7):
        store.record_request(request(at=T0 + n))
    await store.flush()
    await store.flush()

    status = store.status()
    assert not status.ok
    assert status.warning == (
        f"history store {db_path} cannot be written: database or disk is full; measurements "
        "are kept in memory (4 dropped) until it can"
    )
    assert store_warnings() == [
        f"history store {db_path} cannot be written: database or disk is full; measurements "
        "are kept in memory (2 dropped) until it can"
    ]  # one warning for three refusals
    assert rows(db_path, "SELECT count(*) FROM requests") == [(0,)]

    await store.flush()  # the disk has room again
    assert store.status() == type(status)(ok=True, warning=None, path=db_path)
    assert rows(db_path, "SELECT at FROM requests ORDER BY at") == [(T0 + 4,), (T0 + 5,), (T0 + 6,)]
    assert store_warnings()[1:] == [
        f"history store {db_path} is written again; 4 measurements were dropped meanwhile"
    ]


async def test_the_samplers_own_records_are_taken(make_store: Callable[..., HistoryStore]) -> None:
    store = make_store()
    store.record_start(StartRecord("a", T0 + 2, 1.5, None, False, error="exited with code 1"))
    store.record_sample(ServerSample("a", T0 + 3, rss_bytes=123))
    history = await store.query(None, None, None, 10)
    assert history["starts"] == [
        {"model": "a", "at": T0 + 2, "loadTimeS": 1.5, "peakRssBytes": None, "ok": False}
    ]
    assert history["minutes"][0]["rssBytes"] == 123


# ---- following the herd -------------------------------------------------------------------------


async def test_follow_herd_records_each_status_change_with_its_evidence(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    make_store: Callable[..., HistoryStore],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file, sleep=RecordingSleep())
    herd = herd_of_one(service)
    herd.start()
    store = make_store(clock=time.time)
    await store.start()
    unsubscribe = follow_herd(store, herd)
    recorder = StateRecorder(service)
    try:
        await service.start()
        ready = await recorder.wait_status(Status.READY)
        assert ready.pid is not None
        os.kill(ready.pid, signal.SIGKILL)
        await recorder.wait_status(Status.CRASHED)
        await recorder.wait_for(lambda s: s.status is Status.READY and s.pid != ready.pid)
        unsubscribe()
        await service.stop()
    finally:
        unsubscribe()
        await herd.aclose()

    transitions = (await store.query(None, None, None, 100))["transitions"]
    moves = [(t["from"], t["to"]) for t in transitions]
    assert moves[:3] == [("initial", "checking"), ("checking", "starting"), ("starting", "ready")]
    assert moves[3:] == [("ready", "crashed"), ("crashed", "starting"), ("starting", "ready")]
    crash = transitions[3]
    assert crash["model"] == next(iter(herd.backends)) and crash["signal"] == "SIGKILL"
    assert crash["reason"]
    assert transitions == sorted(transitions, key=lambda t: t["at"])
