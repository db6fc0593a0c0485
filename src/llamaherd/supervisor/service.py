"""LlamaService: the whole life of one llama-server, kept alive and observable.

Desired state (what should run: binary, model, host, port, arguments) is fixed at construction;
observed state (status, pid, models, retries, the last exit) changes only through
`_transition`, which checks the move against the state machine and tells every subscriber.

One background task supervises: check the port, adopt a running server or spawn one, wait for
readiness, watch liveness, and on a crash wait out the backoff and start again, until the
retries are spent and the state is `error`. Manual start, stop and restart are serialised by one
lock, so two control requests never interleave, and each runs to its end in a task of its own:
a caller that is cancelled (an HTTP request cut off at shutdown) never leaves a half-stopped
child behind.

A server found running on the port is adopted and never signalled: llamaherd did not start it,
so it never kills it. When an adopted server never becomes ready or stops answering while it
still holds the port, the state is `error`, naming the holder, and nothing is spawned on the
busy port; when it goes away, llamaherd starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from llamaherd.catalog.gguf import read_gguf_summary
from llamaherd.catalog.models import ModelInfo, models_from_listing
from llamaherd.errors import BinaryNotFoundError, ControlConflictError, ModelFileError
from llamaherd.supervisor.backoff import readiness_delays_s
from llamaherd.supervisor.health import Health, HealthProbe
from llamaherd.supervisor.output import EVIDENCE_LINES, LogRing, main_complaint
from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.ports import Listener, find_listener
from llamaherd.supervisor.process import LlamaProcess, exit_info
from llamaherd.supervisor.states import (
    ExitInfo,
    InvalidTransitionError,
    ServiceState,
    Status,
    check_transition,
)

logger = logging.getLogger("llamaherd.supervisor")

StateListener = Callable[[ServiceState], Awaitable[None] | None]
Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

# Where start() and wait_settled() return: the supervisor is not going to change by itself.
SETTLED = frozenset({Status.READY, Status.ERROR, Status.INITIAL})


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
        self._control_tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._proc: LlamaProcess | None = None
        self._output_mark = 0  # where the current process's output begins in the ring
        self._probe: HealthProbe | None = None
        # Set and replaced on every transition: whoever waits for a state change awaits the
        # current one (a notify-all without a lock).
        self._changed = asyncio.Event()

    @property
    def launch(self) -> tuple[object, ...]:
        """How it starts its server: equal launches start the same server."""
        return (self.host, self.port, self.model_path, self.server_args, self.binary)

    def take_launch(self, other: LlamaService) -> None:
        """Start as `other` would from now on (a reloaded config): its policy at once (read at
        each step), its launch (host, port, model, arguments, binary) only while no server is
        supervised, so the one running is never mistaken for the new one."""
        self.policy = other.policy
        if self.launch == other.launch:
            return
        if self._state.status is not Status.INITIAL or self._task is not None:
            raise ControlConflictError(
                f"llama-server on port {self.port} is supervised: stop it before changing how "
                "it starts"
            )
        self.host, self.port, self.model_path = other.host, other.port, other.model_path
        self.server_args, self.binary = other.server_args, other.binary

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

    async def answers_health(self) -> bool:
        """One /health probe now, beside the supervision's own: whether the server answers
        ready. False when it is not supervised."""
        probe = self._probe
        return probe is not None and await probe.check() is Health.READY

    @property
    def control_in_progress(self) -> bool:
        return bool(self._control_tasks)

    # ---- control ---------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> ServiceState:
        """Start supervising; idempotent. Returns once ready, or once the supervisor gives up
        (`error`), or if it is stopped meanwhile; with `wait=False`, as soon as supervision
        has begun. A start while another control action runs waits its turn.
        """
        await self._control_action(self._start_locked)
        return await self.wait_settled() if wait else self.get_state()

    async def stop(self) -> ServiceState:
        """Stop supervising; a server we started gets SIGTERM, then SIGKILL after the timeout.

        A server that was adopted (found running) is left running: it is not ours to stop.
        The stop runs to its end even if the caller is cancelled meanwhile.
        """
        await self._control_action(self._stop_locked)
        return self.get_state()

    async def restart(self, *, wait: bool = True) -> ServiceState:
        """Stop, then start with a fresh retry count; the way out of `error`."""

        async def stop_then_start() -> None:
            await self._stop_locked()
            await self._start_locked()

        await self._control_action(stop_then_start)
        return await self.wait_settled() if wait else self.get_state()

    async def wait_settled(self, timeout: float | None = None) -> ServiceState:
        """Wait until the state is `ready`, `error` or `initial` (never started, or stopped).

        On timeout, returns the state as it is then."""
        try:
            async with asyncio.timeout(timeout):
                while self._state.status not in SETTLED:
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self.get_state()

    async def _control_action(self, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `action` under the control lock, in a task that outlives a cancelled caller.

        The caller waits for it (shielded): if the caller is cancelled, the action still runs
        to its end (a stop still SIGKILLs after the timeout and reaches `initial`), and the
        next action waits for the lock it holds until then."""

        async def locked() -> None:
            async with self._control:
                await action()

        task = asyncio.create_task(locked(), name=f"llamaherd-control-{self.port}")
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)
        await asyncio.shield(task)

    async def _start_locked(self) -> None:
        if self._task is not None and not self._task.done():
            return
        # Synchronously, so a waiter that looks at the state right after start() sees it.
        self._transition(Status.CHECKING, retries=0)
        self._task = asyncio.create_task(self._supervise(), name=f"llamaherd-supervise-{self.port}")

    async def _stop_locked(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._state.status is Status.INITIAL and self._proc is None:
            return
        self._transition(Status.STOPPING)
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                logger.info("Stopping llama-server (pid %d)", proc.pid)
                code = await proc.terminate(self.policy.stop_timeout_s)
                logger.info("llama-server stopped (%s)", exit_info(code).describe())
            elif self._state.adopted:
                logger.info("Leaving the adopted llama-server on port %d running", self.port)
        finally:
            await self._close_probe()
            self._transition(
                Status.INITIAL, models=(), pid=None, started_at=None, adopted=False, retries=0
            )

    # ---- the transition function -----------------------------------------------------------

    def _transition(self, status: Status, **changes: Any) -> None:
        old = self._state.status
        check_transition(old, status)
        if status is Status.READY and old is not Status.READY:
            self._ready_since = time.monotonic()
        elif status is not Status.READY:
            self._ready_since = None
        if status is not Status.CRASHED:
            changes["next_retry_at"] = None  # only a crashed server waits for a retry
        self._state = replace(self._state, status=status, **changes)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
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
        try:
            if self._probe is None:  # kept across a start from `error`; closed by stop()
                self._probe = HealthProbe(self.base_url, self.policy.health_timeout_ms / 1000)
            crash = await self._first_life()
            while crash is not None:
                crash = await self._after_crash(crash)
        except _Fatal as exc:
            logger.error("llama-server: %s", exc)
            await self._kill_child()
            self._give_up(str(exc))
        except Exception as exc:
            # A bug must not leave a child unwatched, nor callers of start() waiting forever.
            logger.exception("the llama-server supervisor failed")
            await self._kill_child()
            self._give_up(f"internal error: {exc!r}")

    def _give_up(self, message: str, exit: ExitInfo | None = None) -> None:
        # No exit: the evidence of an older crash would sit beside an unrelated reason.
        changes: dict[str, Any] = {
            "last_error": message,
            "pid": None,
            "models": (),
            "last_exit": exit,
        }
        try:
            self._transition(Status.ERROR, started_at=None, **changes)
        except InvalidTransitionError:  # pragma: no cover - would be a bug in the table
            logger.critical("cannot record the error state from %s", self._state.status)

    async def _kill_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            await proc.kill()

    async def _first_life(self) -> _Crash | None:
        health = await self._probe_once()
        if health is Health.READY or health is Health.LOADING:
            return await self._life(adopt=True)
        if health is Health.REFUSED:
            return await self._life(adopt=False)
        raise _Fatal(await self._port_held(health))

    async def _port_held(self, health: Health) -> str:
        """Why the port cannot be used: who holds it and what it answered."""
        holder = await self._holder()
        assert self._probe is not None
        what = {
            Health.TIMEOUT: "does not answer (hung or stopped?)",
            Health.READY: "is another llama-server",
            Health.LOADING: "is another llama-server, still loading",
        }.get(health, "does not answer like llama-server")
        return (
            f"port {self.port} on {self.host} is held by {holder or 'another program'}, which "
            f"{what} ({self._probe.last_detail}). llamaherd did not start it and will not stop "
            "it: stop that program (or resume it), or give this server another port, then "
            "restart."
        )

    async def _holder(self) -> Listener | None:
        # Walks /proc/*/fd: thousands of entries on a busy machine; keep it off the loop.
        return await asyncio.to_thread(find_listener, self.port)

    async def _after_crash(self, crash: _Crash) -> _Crash | None:
        """Record the crash, then wait out the backoff and start again, or give up."""
        self._proc = None
        retries = self._state.retries
        max_retries = self.policy.max_retries
        if retries >= max_retries:
            message = (
                f"{crash.reason}. Gave up after {max_retries} retries; fix the cause, then "
                "restart it."
            )
            logger.error("%s", message)
            self._give_up(message, crash.exit)
            return None
        retry = retries + 1
        delay = self.policy.backoff.delay_s(retry)
        logger.warning("%s; retry %d/%d in %s", crash.reason, retry, max_retries, _human(delay))
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
        # Something may have taken the port meanwhile (the old server's orphan, a server
        # started by hand): a spawn could not bind, and would only fail with misleading
        # evidence. Never spawn onto a held port.
        health = await self._probe_once()
        if health is not Health.REFUSED:
            raise _Fatal(await self._port_held(health))
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
        argv = await self._argv()
        logger.info("Starting llama-server: %s", " ".join(argv))
        # Shielded: a stop() arriving while the process is being created must not lose it.
        self._output_mark = self.output.appended
        spawning = asyncio.ensure_future(LlamaProcess.spawn(argv, self.output))
        try:
            proc = await asyncio.shield(spawning)
        except BinaryNotFoundError as exc:
            raise _Fatal(str(exc)) from exc
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await (await spawning).kill()
            raise
        self._proc = proc
        self._transition(Status.STARTING, pid=proc.pid, adopted=False)
        return proc

    async def _argv(self) -> list[str]:
        if self.model_path is None:
            raise _Fatal(
                "no llama-server answers on the port and no model file was given to start one"
            )
        try:
            # The header, checked before every launch: a file that is not a model costs a
            # clear error now rather than a crash loop. Off the loop: it reads the disk.
            await asyncio.to_thread(read_gguf_summary, self.model_path)
        except ModelFileError as exc:
            raise _Fatal(str(exc)) from exc
        binary = self.binary or shutil.which("llama-server")
        if binary is None:
            raise _Fatal(
                "no llama-server binary was given and none is on PATH; give the path of an "
                "executable llama-server"
            )
        model, port = str(self.model_path), str(self.port)
        return [binary, "-m", model, "--host", self.host, "--port", port, *self.server_args]

    async def _await_ready(self, proc: LlamaProcess | None, ended: asyncio.Future[Any]) -> None:
        """Poll /health until 200: quickly at first, then every readiness interval.

        A small model is ready in a tenth of a second; polling only once a second would add
        up to a second to every start and every recovery. The budget is unchanged:
        readiness_max_attempts x readiness_interval_ms (60 s by default).

        Our own server also says when it is ready ("model loaded", "listening on ..."): such
        a line cuts the current wait short, so a start is noticed within a millisecond of the
        server saying so rather than at the next poll (a switch between two small models is
        then the server's own start time, not the poll's schedule)."""
        policy = self.policy
        budget_s = policy.readiness_max_attempts * policy.readiness_interval_ms / 1000
        delays = readiness_delays_s(policy.readiness_initial_ms, policy.readiness_interval_ms)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        hint = asyncio.Event()

        def on_line(line: str) -> None:
            if _READY_HINT.search(line):
                hint.set()

        unsubscribe = self.output.subscribe(on_line) if proc is not None else None
        checks = 0
        try:
            while True:
                checks += 1
                if await self._race(self._probe_once(), ended) is Health.READY:
                    return
                if loop.time() >= deadline:
                    break
                await self._race(_nap(next(delays), hint), ended)
        finally:
            if unsubscribe is not None:
                unsubscribe()
        if proc is None:
            holder = await self._holder()
            raise _Fatal(
                f"the llama-server already running on port {self.port} "
                f"({holder or 'pid unknown'}) did not become ready within {budget_s:g} s "
                f"({checks} health checks). llamaherd did not start it, so it will not kill "
                "it: wait for it or stop it, then restart."
            )
        await proc.kill()
        raise _Crash(
            f"llama-server did not become ready within {budget_s:g} s ({checks} health "
            "checks); killed it"
        )

    async def _become_ready(self, proc: LlamaProcess | None, *, adopted: bool) -> None:
        models = await self._fetch_models()
        listener = None if proc else await self._holder()
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
        # Reads the GGUF header of the model file: off the loop.
        return await asyncio.to_thread(models_from_listing, listing, self.model_path)

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
        silence = f"stopped answering /health ({failures} probes failed in a row)"
        if proc is None:
            if await self._probe_once() is Health.REFUSED:
                raise _Crash(f"the adopted llama-server went away ({silence}); starting our own")
            holder = await self._holder()
            raise _Fatal(
                f"the adopted llama-server on port {self.port} ({holder or 'pid unknown'}) "
                f"{silence}. llamaherd did not start it, so it will not kill it, and cannot "
                "start its own while it holds the port: resume or stop it, then restart."
            )
        reason = f"llama-server {silence}"
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
        complaint = main_complaint(evidence.last_output)
        reason = f"llama-server {evidence.describe()} {during}" + (
            f": {complaint}" if complaint else ""
        )
        raise _Crash(reason, evidence)

    def _evidence(self, code: int | None) -> ExitInfo:
        # This run's output only: the ring also holds the runs before it.
        return exit_info(code, self.output.since(self._output_mark, EVIDENCE_LINES * 4))

    async def _probe_once(self) -> Health:
        assert self._probe is not None
        return await self._probe.check()

    async def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.aclose()


# What llama-server prints once it serves: "srv  llama_server: model loaded", "... listening
# on http://127.0.0.1:8134", "all slots are idle".
_READY_HINT = re.compile(r"model loaded|listening on http|all slots are idle")


async def _nap(seconds: float, hint: asyncio.Event) -> None:
    """Sleep `seconds`, or less if `hint` is set meanwhile (and clear it)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await hint.wait()
    hint.clear()


def _human(seconds: float) -> str:
    """0.1 -> "100 ms", 2.0 -> "2 s": a backoff delay as a person reads it."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:g} s"
