"""The history store: what happened to every model, kept in a SQLite file across restarts.

Serving never waits for the disk. The `record_*` methods run on the event loop, are sync and
quick, and only append to an in-memory batch (a request, a transition, a start) or to the
open minute's raw values. A background task writes the batch every `flush_interval_s` in one
transaction, and a minute's row once the minute has passed.

Threads: every SQLite call runs on one dedicated thread (a single-worker executor) that owns
both connections, the read-write one (`HistoryWriter`) and the read-only one for queries
(`HistoryReader`); `asyncio.to_thread` would spread them over the default pool's threads.
An `asyncio.Lock` keeps a query and a flush apart, so a query sees each row exactly once:
either in the file or still in memory.

A disk that is full or read-only, or a folder that cannot be created, never stops serving:
the first failure logs one warning and `status()` carries it; the batch stays in memory (the
oldest dropped beyond `max_pending`, and counted); each flush tries again, and the first write
that succeeds logs that the store resumed and clears the warning.

Retention: rows older than `retention_days` are deleted at start and then hourly, in the same
transaction as a batch; only the newest `requests_kept` requests are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llamaherd.gateway.records import RequestRecord
from llamaherd.store.minutes import MinuteBucket, minute_of
from llamaherd.store.queries import HistoryQuery, HistoryReader, assemble
from llamaherd.store.rows import Row, SampleLike, StartLike, StartRow, TransitionRow
from llamaherd.store.writer import HistoryWriter
from llamaherd.supervisor.states import ServiceState, Status

if TYPE_CHECKING:
    from llamaherd.gateway.herd import Backend, Herd

logger = logging.getLogger("llamaherd.store")

PRUNE_EVERY_S = 3600.0
MAX_PENDING = 100_000  # rows kept in memory while the file cannot be written

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StoreStatus:
    ok: bool
    warning: str | None  # why it is not ok, for the person running llamaherd
    path: Path


class HistoryStore:
    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 30,
        requests_kept: int = 10_000,
        flush_interval_s: float = 1.0,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.retention_s = retention_days * 86400
        self.requests_kept = requests_kept
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self._clock = clock  # wall-clock unix seconds: history outlives the process
        self._pending: deque[Row] = deque()
        self._open_minutes: dict[tuple[str, int], MinuteBucket] = {}
        self._dropped = 0
        self._failure: str | None = None  # why the last write failed; None while all is well
        self._read_failed = False
        self._last_prune: float | None = None
        self._writer = HistoryWriter(self.path)
        self._reader = HistoryReader(self.path)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    # ---- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the file (creating it, migrating it), delete what is past retention, and write
        every `flush_interval_s` from now on. Never raises: a file that cannot be written is
        the degraded mode described above."""
        await self.flush()
        self._flusher = asyncio.create_task(self._flush_periodically(), name="history-flush")

    async def aclose(self) -> None:
        """Write everything, the open minutes included, and close the file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._flusher is not None:
            await self._flusher
        await self._flush(close_all_minutes=True)
        if self._pending:
            logger.warning(
                "history store %s: %d measurements could not be written and are lost",
                self.path,
                len(self._pending),
            )
        if self._executor is not None:
            with contextlib.suppress(sqlite3.Error, OSError):
                await self._in_thread(self._close_connections)
            self._executor.shutdown(wait=False)
            self._executor = None

    # ---- recording (on the event loop: sync, quick, no disk) --------------------------------

    def record_request(self, record: RequestRecord) -> None:
        """A request ended: it counts in this minute's figures and joins the last requests."""
        if self._closed:
            return
        self._bucket(record.model).add_request(record)
        if self.requests_kept > 0:
            self._push(record)

    def record_transition(self, model: str, old: str, new: ServiceState) -> None:
        if self._closed:
            return
        last_exit = new.last_exit
        self._push(
            TransitionRow(
                model=model,
                at=self._clock(),
                from_status=str(old),
                to_status=str(new.status),
                reason=new.last_error,
                exit_code=last_exit.returncode if last_exit else None,
                signal=last_exit.signal_name if last_exit else None,
            )
        )

    def record_start(self, start: StartLike) -> None:
        if self._closed:
            return
        self._push(
            StartRow(
                model=start.model,
                at=start.at,
                load_time_s=start.load_time_s,
                peak_rss_bytes=start.peak_rss_bytes,
                ok=bool(start.ok),
            )
        )

    def record_memory(self, model: str, rss_bytes: int) -> None:
        """A resident-memory sample: the minute keeps the largest."""
        if self._closed:
            return
        self._bucket(model).add_memory(rss_bytes)

    def record_sample(self, sample: SampleLike) -> None:
        """A resource sampler's listener: its resident memory, when it has one."""
        if sample.rss_bytes is not None:
            self.record_memory(sample.model, sample.rss_bytes)

    # ---- reading ---------------------------------------------------------------------------

    def status(self) -> StoreStatus:
        return StoreStatus(ok=self._failure is None, warning=self._warning(), path=self.path)

    async def query(
        self,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """The history payload of `GET /api/history` (see `queries.assemble`)."""
        wanted = HistoryQuery(model=model, since=since, until=until, limit=limit)
        async with self._lock:
            memory = [*self._pending, *(b.row() for b in self._open_minutes.values())]
            status = self.status()
            store = {"ok": status.ok, "warning": status.warning}
            if self._closed:  # shutting down: the file is closed, its thread gone
                return assemble(wanted, [], memory, store)
            try:
                stored = await self._in_thread(self._reader.read, wanted)
            except (sqlite3.Error, OSError) as exc:
                self._read_failure(exc)
                stored = []
            else:
                self._read_failed = False
            return await self._in_thread(assemble, wanted, stored, memory, store)

    # ---- writing ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write what waits now (the minutes that have passed, not the open one)."""
        await self._flush(close_all_minutes=False)

    async def _flush_periodically(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._stop.wait()
            if not self._stop.is_set():
                try:
                    await self.flush()
                except Exception:  # a bug: say so, and keep the history going
                    logger.exception("history store %s: a flush failed", self.path)

    async def _flush(self, *, close_all_minutes: bool) -> None:
        async with self._lock:
            now = self._clock()
            self._close_minutes(None if close_all_minutes else minute_of(now))
            prune = self._last_prune is None or now - self._last_prune >= PRUNE_EVERY_S
            if not self._pending and not prune and self._failure is None:
                return
            batch, self._pending = self._pending, deque()
            try:
                await self._in_thread(
                    functools.partial(
                        self._writer.write,
                        list(batch),
                        requests_kept=self.requests_kept,
                        prune_before=now - self.retention_s if prune else None,
                    )
                )
            except asyncio.CancelledError:
                raise  # the thread goes on with this batch: putting it back could write it twice
            except Exception as exc:
                self._pending = batch + self._pending
                self._trim()
                self._write_failure(exc)
                return
            if prune:
                self._last_prune = now
            self._write_success()

    def _close_minutes(self, current: int | None) -> None:
        """Move every minute before `current` (all of them if None) into the batch."""
        for key, bucket in list(self._open_minutes.items()):
            if current is None or bucket.minute < current:
                del self._open_minutes[key]
                self._push(bucket.row())

    def _bucket(self, model: str) -> MinuteBucket:
        minute = minute_of(self._clock())
        bucket = self._open_minutes.get((model, minute))
        if bucket is None:
            bucket = self._open_minutes[(model, minute)] = MinuteBucket(model, minute)
        return bucket

    def _push(self, row: Row) -> None:
        self._pending.append(row)
        self._trim()

    def _trim(self) -> None:
        while len(self._pending) > self.max_pending:
            self._pending.popleft()
            self._dropped += 1

    def _write_failure(self, exc: Exception) -> None:
        first = self._failure is None
        self._failure = str(exc) or type(exc).__name__
        if not isinstance(exc, sqlite3.Error | OSError):
            logger.error("history store %s: a write failed", self.path, exc_info=exc)
        if first:
            logger.warning("%s", self._warning())
        else:
            logger.debug("history store %s still cannot be written: %s", self.path, exc)

    def _write_success(self) -> None:
        if self._failure is None:
            return
        logger.warning(
            "history store %s is written again; %d measurements were dropped meanwhile",
            self.path,
            self._dropped,
        )
        self._failure = None
        self._dropped = 0

    def _read_failure(self, exc: Exception) -> None:
        if not self._read_failed and self._failure is None:
            logger.warning(
                "history store %s cannot be read: %s; answering with what is in memory",
                self.path,
                exc,
            )
        self._read_failed = True

    def _warning(self) -> str | None:
        if self._failure is None:
            return None
        return (
            f"history store {self.path} cannot be written: {self._failure}; measurements are "
            f"kept in memory ({self._dropped} dropped) until it can"
        )

    # ---- the store's thread ----------------------------------------------------------------

    async def _in_thread(self, work: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="llamaherd-history")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(work, *args))

    def _close_connections(self) -> None:
        self._reader.close()
        self._writer.close()


def follow_herd(store: HistoryStore, herd: Herd) -> Callable[[], None]:
    """Record every status change of every model's server; returns an unsubscribe.

    Changes that keep the status (ready to ready: models refreshed, retries reset) are no
    transitions and are not recorded."""

    def attach(model: str, backend: Backend) -> Callable[[], None]:
        listener = _TransitionListener(store, model, backend.service.get_state().status)
        return backend.service.on_state_change(listener)

    return herd.follow_backends(attach)  # every model, and those a reload adds


class _TransitionListener:
    def __init__(self, store: HistoryStore, model: str, status: Status) -> None:
        self.store = store
        self.model = model
        self.previous = status

    def __call__(self, state: ServiceState) -> None:
        if state.status == self.previous:
            return
        previous, self.previous = self.previous, state.status
        self.store.record_transition(self.model, previous, state)
