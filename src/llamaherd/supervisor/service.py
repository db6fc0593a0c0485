"""LlamaService: the whole life of one llama-server, kept alive and observable.

Desired state (what should run: binary, model, host, port, arguments) is fixed at construction;
observed state (status, pid, models, retries, the last exit) changes only through
`_transition`, which checks the move against the state machine and tells every subscriber.

One background task supervises: check the port, adopt a running server or spawn one, wait for
readiness, watch liveness, and on a crash wait out the backoff and start again, until the
retries are spent and the state is `error`. Manual start, stop and restart are serialised by one
lock, so two control requests never interleave.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llamaherd.catalog.models import models_from_listing
from llamaherd.errors import BinaryNotFoundError, ControlConflictError, LlamaherdError
from llamaherd.supervisor.backoff import readiness_delays_s
from llamaherd.supervisor.health import Health, HealthProbe
from llamaherd.supervisor.output import EVIDENCE_LINES, LogRing, telling_lines
from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.ports import find_listener
from llamaherd.supervisor.process import LlamaProcess, exit_info
from llamaherd.supervisor.states import (
    ExitInfo,
    ModelInfo,
    ServiceState,
    Status,
    check_transition,
)

if TYPE_CHECKING:
    from llamaherd.config import Settings

logger = logging.getLogger("llamaherd.supervisor")

StateListener = Callable[[ServiceState], Awaitable[None] | None]
Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


class _Crash(Exception):
    """Internal: the server went down; carries why, for last_error and the log."""

    def __init__(self, reason: str, exit: ExitInfo | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit = exit


class _Fatal(Exception):
    """Internal: retrying cannot help (port held by another program, no binary, no model)."""


class LlamaService:
    """Supervises one llama-server on one host and port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8134,
        model_path: str | Path | None = None,
        server_args: Sequence[str] = (),
        binary: str | Path | None = None,
        *,
        policy: SupervisorPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.host = host
        self.port = port
        self.model_path = Path(model_path) if model_path is not None else None
        self.server_args = tuple(server_args)
        self.binary = str(binary) if binary is not None else None
        self.policy = policy or SupervisorPolicy()
        self.output = LogRing(self.policy.log_lines)
        # Backoff waits go through an injectable sleep so tests can record the exact schedule.
        self._sleep = sleep
        self._state = ServiceState(status=Status.INITIAL, max_retries=self.policy.max_retries)
        self._ready_since: float | None = None
        self._listeners: list[StateListener] = []
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._control = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._proc: LlamaProcess | None = None
        self._probe: HealthProbe | None = None
        self._settled = asyncio.Event()

    @classmethod
    def from_config(cls, settings: Settings) -> LlamaService:
        return cls(
            host=settings.llama_server_host,
            port=settings.llama_server_port,
            model_path=settings.llama_model_path,
            server_args=settings.llama_server_args,
            binary=settings.llama_server_binary,
            policy=settings.supervisor_policy(),
        )

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ---- observing -------------------------------------------------------------------------

    def get_state(self) -> ServiceState:
        """A snapshot; `uptime` counts from the monotonic clock at the moment of the call."""
        uptime = 0.0
        if self._state.status is Status.READY and self._ready_since is not None:
            uptime = max(0.0, time.monotonic() - self._ready_since)
        return replace(self._state, uptime=uptime)

    def on_state_change(self, callback: StateListener) -> Callable[[], None]:
        """Call `callback(state)` (sync or async) on every change; returns an unsubscribe."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    @property
    def control_in_progress(self) -> bool:
        return self._control.locked()

    # ---- control ---------------------------------------------------------------------------

    async def start(self, *, exclusive: bool = False, wait: bool = True) -> ServiceState:
        """Start supervising; idempotent. Returns once ready, or once the supervisor gives up
        (`error`); with `wait=False`, as soon as supervision has begun.

        With `exclusive`, a start while another control action runs raises
        ControlConflictError instead of waiting its turn.
        """
        async with self._acquire(exclusive):
            self._start_locked()
        return await self.wait_settled() if wait else self.get_state()

    async def stop(self, *, exclusive: bool = False) -> ServiceState:
        """Stop supervising; a server we started gets SIGTERM, then SIGKILL after the timeout.

        A server that was adopted (found running) is left running: it is not ours to stop.
        """
        async with self._acquire(exclusive):
            await self._stop_locked()
        return self.get_state()

    async def restart(self, *, exclusive: bool = False, wait: bool = True) -> ServiceState:
        """Stop, then start with a fresh retry count; the way out of `error`."""
        async with self._acquire(exclusive):
            await self._stop_locked()
            self._start_locked()
        return await self.wait_settled() if wait else self.get_state()

    async def wait_settled(self, timeout: float | None = None) -> ServiceState:
        """Wait until the current start has ended in `ready` or `error` (or was stopped).

        On timeout, returns the state as it is then."""
        try:
            async with asyncio.timeout(timeout):
                await self._settled.wait()
        except TimeoutError:
            pass
        return self.get_state()

    def _acquire(self, exclusive: bool) -> asyncio.Lock:
        if exclusive and self._control.locked():
            raise ControlConflictError(
                "another start, stop or restart of llama-server is in progress; "
                "try again when it has finished"
            )
        return self._control

    def _start_locked(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._settled = asyncio.Event()
        self._task = asyncio.create_task(self._supervise(), name=f"llamaherd-supervise-{self.port}")

    async def _stop_locked(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._state.status is Status.INITIAL and self._proc is None:
            return
        self._transition(Status.STOPPING, next_retry_at=None)
        proc, self._proc = self._proc, None
        if proc is not None:
            logger.info("Stopping llama-server (pid %d)", proc.pid)
            code = await proc.terminate(self.policy.stop_timeout_s)
            logger.info("llama-server stopped (%s)", exit_info(code).describe())
        elif self._state.adopted:
            logger.info("Leaving the adopted llama-server on port %d running", self.port)
        await self._close_probe()
        self._transition(
            Status.INITIAL, models=(), pid=None, started_at=None, adopted=False, retries=0
        )
        self._settled.set()

    # ---- the transition function -----------------------------------------------------------

    def _transition(self, status: Status, **changes: Any) -> None:
        old = self._state.status
        check_transition(old, status)
        if status is Status.READY and old is not Status.READY:
            self._ready_since = time.monotonic()
        elif status is not Status.READY:
            self._ready_since = None
        self._state = replace(self._state, status=status, **changes)
        if status in (Status.READY, Status.ERROR):
            self._settled.set()
        snapshot = self.get_state()
        for listener in list(self._listeners):
            self._notify(listener, snapshot)

    def _notify(self, listener: StateListener, snapshot: ServiceState) -> None:
        try:
            result = listener(snapshot)
        except Exception:
            logger.exception("a state listener failed; it stays subscribed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[None]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("an async state listener failed", exc_info=task.exception())

    # ---- supervision -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        if self._probe is None:  # kept across a start from `error`; closed by stop()
            self._probe = HealthProbe(self.base_url, self.policy.health_timeout_ms / 1000)
        self._transition(Status.CHECKING, retries=0, next_retry_at=None)
        try:
            crash = await self._first_life()
            while crash is not None:
                crash = await self._after_crash(crash)
        except _Fatal as exc:
            logger.error("llama-server: %s", exc)
            self._transition(
                Status.ERROR, last_error=str(exc), pid=None, models=(), started_at=None
            )
        except Exception as exc:
            # A bug must not leave callers of start() waiting forever on a dead supervisor.
            logger.exception("the llama-server supervisor failed")
            self._state = replace(self._state, last_error=f"internal error: {exc!r}")
            self._settled.set()
            raise

    async def _first_life(self) -> _Crash | None:
        health = await self._probe_once()
        if health is Health.READY or health is Health.LOADING:
            return await self._life(adopt=True)
        if health is Health.REFUSED:
            return await self._life(adopt=False)
        holder = find_listener(self.port) or "another program"
        assert self._probe is not None
        raise _Fatal(
            f"port {self.port} on {self.host} is held by {holder}, which does not answer like "
            f"llama-server ({self._probe.last_detail}). Stop that program, or set "
            "llama_server_port to a free port."
        )

    async def _after_crash(self, crash: _Crash) -> _Crash | None:
        """Record the crash, then wait out the backoff and start again, or give up."""
        self._proc = None
        retries = self._state.retries
        max_retries = self.policy.max_retries
        if retries >= max_retries:
            message = (
                f"{crash.reason}. Gave up after {max_retries} retries; fix the cause, then "
                "restart (POST /api/llama/restart or `llamaherd restart`)."
            )
            logger.error("llama-server: %s", message)
            self._transition(
                Status.ERROR,
                last_error=message,
                last_exit=crash.exit,
                pid=None,
                models=(),
                started_at=None,
            )
            return None
        retry = retries + 1
        delay = self.policy.backoff.delay_s(retry)
        logger.warning(
            "llama-server %s; retry %d/%d in %.0f s", crash.reason, retry, max_retries, delay
        )
        self._transition(
            Status.CRASHED,
            retries=retry,
            restarts=self._state.restarts + 1,
            last_error=crash.reason,
            last_exit=crash.exit,
            pid=None,
            models=(),
            started_at=None,
            next_retry_at=datetime.now(UTC) + timedelta(seconds=delay),
        )
        await self._sleep(delay)
        return await self._life(adopt=False)

    async def _life(self, *, adopt: bool) -> _Crash | None:
        """One server's life, from spawn (or adoption) to its end; returns how it ended."""
        proc = None if adopt else await self._spawn()
        ended = asyncio.ensure_future(proc.wait() if proc else asyncio.Event().wait())
        try:
            await self._await_ready(proc, ended)
            await self._become_ready(proc, adopted=adopt)
            await self._watch(proc, ended)
        except _Crash as crash:
            return crash
        finally:
            if not ended.done():
                ended.cancel()
        return None  # pragma: no cover - _watch only ends by raising

    async def _spawn(self) -> LlamaProcess:
        argv = self._argv()
        logger.info("Starting llama-server: %s", " ".join(argv))
        try:
            proc = await LlamaProcess.spawn(argv, self.output)
        except BinaryNotFoundError as exc:
            raise _Fatal(str(exc)) from exc
        self._proc = proc
        self._transition(Status.STARTING, pid=proc.pid, adopted=False, next_retry_at=None)
        return proc

    def _argv(self) -> list[str]:
        from llamaherd.config import locate_llama_server

        if self.model_path is None:
            raise _Fatal(
                "no llama-server answers on the port and no model is configured to start one; "
                "set llama_model_path"
            )
        if not self.model_path.is_file():
            raise _Fatal(
                f"model file {self.model_path} does not exist; set llama_model_path to a .gguf "
                "file (or make one with `llamaherd demo-model PATH`)"
            )
        try:
            binary = locate_llama_server(self.binary)
        except LlamaherdError as exc:
            raise _Fatal(str(exc)) from exc
        model, port = str(self.model_path), str(self.port)
        return [str(binary), "-m", model, "--host", self.host, "--port", port, *self.server_args]

    async def _await_ready(self, proc: LlamaProcess | None, ended: asyncio.Future[Any]) -> None:
        """Poll /health until 200: quickly at first, then every readiness interval.

        A small model is ready in a tenth of a second; polling only once a second would add
        up to a second to every start and every recovery. The budget is unchanged:
        readiness_max_attempts x readiness_interval_ms (60 s by default)."""
        policy = self.policy
        budget_s = policy.readiness_max_attempts * policy.readiness_interval_ms / 1000
        delays = readiness_delays_s(policy.readiness_initial_ms, policy.readiness_interval_ms)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        checks = 0
        while True:
            checks += 1
            if await self._race(self._probe_once(), ended) is Health.READY:
                return
            if loop.time() >= deadline:
                break
            await self._race(asyncio.sleep(next(delays)), ended)
        if proc is not None:
            await proc.kill()
        raise _Crash(
            f"did not become ready within {budget_s:g} s ({checks} health checks); killed it"
        )

    async def _become_ready(self, proc: LlamaProcess | None, *, adopted: bool) -> None:
        models = await self._fetch_models()
        listener = None if proc else find_listener(self.port)
        pid = proc.pid if proc else listener.pid if listener else None
        if adopted:
            logger.info(
                "Adopted the llama-server already running on %s (%s); it will not be stopped "
                "by llamaherd",
                self.base_url,
                listener or "pid unknown",
            )
        logger.info("llama-server ready on %s with %d model(s)", self.base_url, len(models))
        self._transition(
            Status.READY,
            models=tuple(models),
            pid=pid,
            adopted=adopted,
            last_error=None,
            started_at=datetime.now(UTC),
            next_retry_at=None,
        )

    async def _fetch_models(self) -> list[ModelInfo]:
        assert self._probe is not None
        try:
            listing = await self._probe.models()
        except Exception as exc:
            logger.warning("llama-server is ready but GET /v1/models failed: %s", exc)
            return []
        return models_from_listing(listing, self.model_path)

    async def _watch(self, proc: LlamaProcess | None, ended: asyncio.Future[Any]) -> None:
        """While ready: wait for an exit, probe liveness, reset retries once stable."""
        interval = self.policy.liveness_interval_ms / 1000
        failures = 0
        while True:
            await self._race(asyncio.sleep(interval), ended)
            health = await self._race(self._probe_once(), ended)
            if health is Health.READY:
                failures = 0
                self._reset_retries_if_stable()
                continue
            failures += 1
            assert self._probe is not None
            logger.warning(
                "llama-server liveness probe %d/%d failed: %s",
                failures,
                self.policy.liveness_failures,
                self._probe.last_detail,
            )
            if failures >= self.policy.liveness_failures:
                await self._end_hung(proc, failures)

    async def _end_hung(self, proc: LlamaProcess | None, failures: int) -> None:
        reason = f"stopped answering /health ({failures} probes failed in a row)"
        if proc is None:
            raise _Crash(f"{reason}; it was adopted, so llamaherd will start its own")
        code = await proc.kill()
        raise _Crash(f"{reason}; killed it", self._evidence(code))

    def _reset_retries_if_stable(self) -> None:
        if self._state.retries == 0 or self._ready_since is None:
            return
        if time.monotonic() - self._ready_since >= self.policy.stable_after_s:
            logger.info("llama-server stable; retry count reset")
            self._transition(Status.READY, retries=0)

    async def _race(self, work: Coroutine[Any, Any, T], ended: asyncio.Future[Any]) -> T:
        """Run `work`, unless the server process ends first: then raise _Crash."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        code = ended.result()
        evidence = self._evidence(code)
        during = "while starting" if self._state.status is not Status.READY else "unexpectedly"
        tail = " | ".join(telling_lines(evidence.last_output))
        reason = f"{evidence.describe()} {during}" + (f": {tail}" if tail else "")
        raise _Crash(reason, evidence)

    def _evidence(self, code: int | None) -> ExitInfo:
        return exit_info(code, self.output.tail(EVIDENCE_LINES * 4))

    async def _probe_once(self) -> Health:
        assert self._probe is not None
        return await self._probe.check()

    async def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.aclose()
