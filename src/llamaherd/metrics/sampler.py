"""What each supervised llama-server costs while it runs, and what each start cost.

The sampler follows every server's state changes (it never polls the herd for them):

- `checking` (or `starting` after a crash) opens a start; while `starting`, the process's
  resident memory is read every `loading_interval_s`, because a model's memory peaks while
  it loads, and a five-second sample would miss it;
- `ready` closes the start as a `StartRecord` (load time, peak memory), then samples the
  server every `interval_s`: resident memory and CPU (psutil), GPU memory (NVML, when there
  is one), and busy slots (its `/slots`);
- `crashed` or `error` before `ready` closes the start as failed (a stop before `ready` drops
  it: nothing failed); a stop or a crash of a ready server ends the sampling, and the live
  figures go back to unknown.

An adopted server (found running, started by someone else) gets no StartRecord: nobody here
saw it load. psutil and NVML block, so they run in worker threads; `/slots` goes through the
herd's upstream session for that server, with a short deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import psutil

from llamaherd.gateway.herd import Backend, Herd
from llamaherd.metrics.gpu import GpuMemory
from llamaherd.supervisor.process import resident_bytes
from llamaherd.supervisor.states import ServiceState, Status

logger = logging.getLogger("llamaherd.metrics")


@dataclass(frozen=True, slots=True)
class StartRecord:
    """One start of a model's server, from `checking` (or `starting`, on a retry) to `ready`,
    or to the crash or error that ended it."""

    model: str
    at: float  # unix seconds, when it ended (ready, crashed or error)
    load_time_s: float
    peak_rss_bytes: int | None  # None when the process could not be measured at all
    ok: bool
    error: str | None = None  # why a failed start failed (the supervisor's last_error)


@dataclass(frozen=True, slots=True)
class ServerSample:
    """The latest figures of one model's server; live ones are None while it is not ready."""

    model: str
    at: float  # unix seconds
    rss_bytes: int | None = None
    vram_bytes: int | None = None
    cpu_percent: float | None = None  # psutil's: 100 is one core busy
    slots_busy: int | None = None
    slots_total: int | None = None
    load_time_s: float | None = None  # of the last successful start
    peak_load_rss_bytes: int | None = None  # of the last successful start


StartSink = Callable[[StartRecord], None]
SampleListener = Callable[[ServerSample], None]


@dataclass(eq=False)
class _Attempt:
    began: float  # monotonic
    peak_rss: int | None = None

    def see(self, rss: int | None) -> None:
        if rss is not None and (self.peak_rss is None or rss > self.peak_rss):
            self.peak_rss = rss


@dataclass(eq=False)
class _Server:
    """What the sampler keeps about one model's server."""

    backend: Backend
    status: Status = Status.INITIAL
    attempt: _Attempt | None = None
    # A start that reached `ready`, reported once its memory is read, or when it leaves
    # `ready` first: either way exactly once.
    ready_start: tuple[_Attempt, float] | None = None
    task: asyncio.Task[None] | None = None  # the loading watch or the ready sampling
    sample: ServerSample | None = None
    load_time_s: float | None = None
    peak_load_rss: int | None = None
    unsubscribe: Callable[[], None] = field(default=lambda: None)

    @property
    def model(self) -> str:
        return self.backend.spec.id


class ServerSampler:
    def __init__(
        self,
        herd: Herd,
        *,
        interval_s: float = 5.0,
        loading_interval_s: float = 0.1,
        slots_timeout_s: float = 2.0,
        gpu: GpuMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._herd = herd
        self.interval_s = interval_s
        self.loading_interval_s = loading_interval_s
        self.slots_timeout_s = slots_timeout_s
        self._gpu = gpu or GpuMemory()
        self._clock = clock
        self._servers: dict[str, _Server] = {}
        self._start_sinks: list[StartSink] = []
        self._sample_listeners: list[SampleListener] = []
        self._closed = False
        self._unfollow: Callable[[], None] = lambda: None

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Follow every model's server (and those a reload adds); one already ready is sampled
        at once."""
        self._unfollow = self._herd.follow_backends(self._follow)

    def _follow(self, model: str, backend: Backend) -> None:
        server = self._servers[model] = _Server(backend)
        server.unsubscribe = backend.service.on_state_change(
            functools.partial(self._on_state, server)
        )
        state = backend.service.get_state()
        if state.status is not Status.INITIAL:
            self._on_state(server, state)

    async def aclose(self) -> None:
        """Stop following the servers and cancel every measurement under way."""
        self._closed = True
        self._unfollow()
        tasks = []
        for server in self._servers.values():
            server.unsubscribe()
            if server.task is not None:
                server.task.cancel()
                tasks.append(server.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self._gpu.close)

    def on_start(self, sink: StartSink) -> Callable[[], None]:
        """Call `sink(record)` for every start that ends, ready or failed."""
        self._start_sinks.append(sink)
        return lambda: self._start_sinks.remove(sink) if sink in self._start_sinks else None

    def on_sample(self, listener: SampleListener) -> Callable[[], None]:
        """Call `listener(sample)` for every new sample (and when a server's live figures end)."""
        self._sample_listeners.append(listener)
        return lambda: (
            self._sample_listeners.remove(listener) if listener in self._sample_listeners else None
        )

    def snapshot(self) -> dict[str, ServerSample]:
        """The latest sample of every model that has one."""
        return {
            model: server.sample
            for model, server in self._servers.items()
            if server.sample is not None
        }

    # ---- following a server's state --------------------------------------------------------

    def _on_state(self, server: _Server, state: ServiceState) -> None:
        if self._closed:
            return
        previous, server.status = server.status, state.status
        status, now = state.status, self._clock()
        if status is Status.CHECKING:
            server.attempt = _Attempt(began=now)
        elif status is Status.STARTING:
            if server.attempt is None:  # a retry after a crash starts here
                server.attempt = _Attempt(began=now)
            if state.pid is not None:
                self._run(server, self._watch_loading(server.attempt, state.pid))
        elif status is Status.READY:
            if previous is not Status.READY:
                attempt, server.attempt = server.attempt, None
                if attempt is not None and not state.adopted:  # adopted: loaded unseen
                    server.ready_start = (attempt, now - attempt.began)
                self._run(server, self._follow_ready(server, state.pid))
        else:  # crashed, error, stopping, initial: no process to measure any more
            self._cancel(server)
            self._report_ready_start(server)
            attempt, server.attempt = server.attempt, None
            if attempt is not None and status in (Status.CRASHED, Status.ERROR):
                self._record_start(server, attempt, now - attempt.began, state.last_error)
            if server.sample is not None and _live(server.sample):
                self._publish(server, self._idle_sample(server))

    def _run(self, server: _Server, work: Coroutine[Any, Any, None]) -> None:
        self._cancel(server)
        server.task = asyncio.create_task(work, name=f"llamaherd-sampler-{server.model}")
        server.task.add_done_callback(_log_failure)

    def _cancel(self, server: _Server) -> None:
        if server.task is not None:
            server.task.cancel()
            server.task = None

    # ---- measuring -------------------------------------------------------------------------

    async def _watch_loading(self, attempt: _Attempt, pid: int) -> None:
        """The loading process's resident memory, often: its peak is the figure that matters
        for planning memory, and a small model loads in a tenth of a second."""
        while True:
            try:
                attempt.see(await asyncio.to_thread(resident_bytes, pid))
            except (psutil.Error, OSError):
                return  # it is gone; the state change that says so is on its way
            await asyncio.sleep(self.loading_interval_s)

    async def _follow_ready(self, server: _Server, pid: int | None) -> None:
        process: _Process | None = None
        if pid is not None:
            with contextlib.suppress(psutil.Error, OSError):
                process = await asyncio.to_thread(_Process, pid)
                if server.ready_start is not None:  # the memory once loaded counts too
                    server.ready_start[0].see(process.rss)
        self._report_ready_start(server)
        while True:
            self._publish(server, await self._measure(server, process))
            await asyncio.sleep(self.interval_s)

    async def _measure(self, server: _Server, process: _Process | None) -> ServerSample:
        reading, slots = await asyncio.gather(
            asyncio.to_thread(self._read_process, process), self._slots(server.backend)
        )
        rss, cpu, vram = reading
        return ServerSample(
            model=server.model,
            at=time.time(),
            rss_bytes=rss,
            vram_bytes=vram,
            cpu_percent=cpu,
            slots_busy=slots[0],
            slots_total=slots[1],
            load_time_s=server.load_time_s,
            peak_load_rss_bytes=server.peak_load_rss,
        )

    def _read_process(
        self, process: _Process | None
    ) -> tuple[int | None, float | None, int | None]:
        """Resident bytes, CPU percent since the previous reading, GPU bytes (blocking)."""
        if process is None:
            return None, None, None
        try:
            rss, cpu = process.read()
        except (psutil.Error, OSError):
            return None, None, None
        return rss, cpu, self._gpu.used_bytes(process.pid)

    async def _slots(self, backend: Backend) -> tuple[int | None, int | None]:
        """(busy, total) from the server's `/slots`; (None, None) when it does not say."""
        url = f"{backend.base_url}/slots"
        try:
            session = self._herd.upstreams.session(backend.base_url)
            async with asyncio.timeout(self.slots_timeout_s):
                async with session.get(url) as answer:
                    if answer.status != 200:  # 501: started with --no-slots
                        return None, None
                    slots = await answer.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            logger.debug("model %s: no slot figures from %s: %s", backend.spec.id, url, exc)
            return None, None
        if not isinstance(slots, list):
            return None, None
        busy = sum(1 for slot in slots if isinstance(slot, dict) and slot.get("is_processing"))
        return busy, len(slots)

    # ---- telling others --------------------------------------------------------------------

    def _report_ready_start(self, server: _Server) -> None:
        if server.ready_start is not None:
            (attempt, load_time), server.ready_start = server.ready_start, None
            self._record_start(server, attempt, load_time, None)

    def _record_start(
        self, server: _Server, attempt: _Attempt, load_time: float, error: str | None
    ) -> None:
        ok = error is None
        record = StartRecord(
            model=server.model,
            at=time.time(),
            load_time_s=load_time,
            peak_rss_bytes=attempt.peak_rss,
            ok=ok,
            error=None if ok else error or "it ended before it was ready",
        )
        if ok:
            server.load_time_s, server.peak_load_rss = load_time, attempt.peak_rss
            if server.sample is not None:
                server.sample = replace(
                    server.sample, load_time_s=load_time, peak_load_rss_bytes=attempt.peak_rss
                )
        for sink in list(self._start_sinks):
            try:
                sink(record)
            except Exception:
                logger.exception("a start subscriber failed; it stays subscribed")

    def _idle_sample(self, server: _Server) -> ServerSample:
        return ServerSample(
            model=server.model,
            at=time.time(),
            load_time_s=server.load_time_s,
            peak_load_rss_bytes=server.peak_load_rss,
        )

    def _publish(self, server: _Server, sample: ServerSample) -> None:
        server.sample = sample
        for listener in list(self._sample_listeners):
            try:
                listener(sample)
            except Exception:
                logger.exception("a sample listener failed; it stays subscribed")


class _Process:
    """One ready server's process (blocking calls). CPU percent is measured between two
    readings, so the first reading has none: psutil would say 0.0, which is not known."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._process = psutil.Process(pid)
        self._primed = False
        self.rss = int(self._process.memory_info().rss)

    def read(self) -> tuple[int, float | None]:
        with self._process.oneshot():
            rss = int(self._process.memory_info().rss)
            cpu = float(self._process.cpu_percent(interval=None))
        primed, self._primed = self._primed, True
        return rss, cpu if primed else None


def _live(sample: ServerSample) -> bool:
    return any(
        value is not None
        for value in (sample.rss_bytes, sample.cpu_percent, sample.slots_total, sample.vram_bytes)
    )


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed", task.get_name(), exc_info=task.exception())
