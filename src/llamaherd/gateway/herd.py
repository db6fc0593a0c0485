"""The herd: every model's supervised server, and the one owner of every scheduling decision.

`Herd` feeds the scheduler each event (a request arrives or ends, a server becomes ready,
crashes, gives up or stops) and carries out what it decides: it answers waiting requests,
starts and stops servers. Everything runs on the event loop, and nothing awaits between
reading the scheduler's state and acting on it, so the scheduler needs no lock: asyncio gives
llama-swap's "one goroutine owns the state" for free. Effects that take time (a start, a stop)
run in tasks, and come back as events through the supervisor's state changes, never by polling.

The herd does not know HTTP: a request is a `Ticket` whose decision (dispatch or reject) is
awaited by the route that holds the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psutil

from llamaherd.errors import ConfigError
from llamaherd.gateway.registry import ModelRegistry, ModelSpec
from llamaherd.gateway.scheduler import (
    Action,
    Dispatch,
    Limits,
    Load,
    ModelPolicy,
    ModelView,
    Phase,
    Reject,
    Scheduler,
    Unload,
)
from llamaherd.gateway.upstreams import Upstreams
from llamaherd.supervisor.process import resident_bytes
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import ServiceState, Status

logger = logging.getLogger("llamaherd.gateway")

Decision = Dispatch | Reject
ChangeListener = Callable[[], None]
# Follows one model's backend; returns how to stop following it (or None).
BackendAttacher = Callable[[str, "Backend"], Callable[[], None] | None]
PROPS_TIMEOUT_S = 5.0
STOP_ALL_ROUNDS = 3
_RUNNING = frozenset({Status.CHECKING, Status.STARTING, Status.READY, Status.CRASHED})
NO_MODEL = "(none)"  # the primary of a front that serves no model of its own


@dataclass(eq=False)
class Ticket:
    """One request's place in the herd, from arrival to its end."""

    id: int
    model: str
    arrived: float  # monotonic
    decision: asyncio.Future[Decision] = field(repr=False)
    dispatched: bool = False
    ended: bool = False


@dataclass(eq=False)
class Backend:
    """One model: what the config says about it and the supervisor that runs its server."""

    spec: ModelSpec
    service: LlamaService
    last_status: Status = Status.INITIAL
    unsubscribe: Callable[[], None] | None = field(default=None, repr=False)
    relaunch: LlamaService | None = field(default=None, repr=False)  # applied once stopped
    retiring: bool = False  # removed from the config, still finishing its requests
    # Starts and stops asked of its supervisor that have not finished: until they have, its
    # state is not yet what the scheduler asked for (a start spawned a moment ago may not
    # have begun, and a stop must still be sent after it).
    pending_controls: int = 0

    @property
    def base_url(self) -> str:
        return self.service.base_url


class Herd:
    def __init__(
        self,
        registry: ModelRegistry,
        services: Mapping[str, LlamaService],
        limits: Limits,
        *,
        upstreams: Upstreams | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.upstreams = upstreams or Upstreams()
        self.backends = {spec.id: Backend(spec, services[spec.id]) for spec in registry}
        self.scheduler = Scheduler((_policy(spec) for spec in registry), limits)
        self._clock = clock
        self._ids = itertools.count(1)
        self._tickets: dict[int, Ticket] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[ChangeListener] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._closed = False
        self._stopping_all = False
        self.config_info: dict[str, Any] = {}  # when the config was loaded, the last reload
        self._attachers: list[tuple[BackendAttacher, list[Callable[[], None]]]] = []
        # The model of llamaStatus and /api/llama/*: fixed for the process's life, so a reload
        # that changes default_model does not move the seed's contract under its clients.
        default = registry.default
        self._primary_id = default.id if default else next(iter(self.backends), NO_MODEL)
        # A front with no models of its own still answers the seed's status: never started.
        self._no_model = Backend(ModelSpec(id=NO_MODEL, path=None), LlamaService(port=0))
        self.peers_view: Callable[[], dict[str, Any]] | None = None  # a front's peers

    # ---- life ------------------------------------------------------------------------------

    def start(self, preload: Iterable[str] = ()) -> None:
        """Follow every server's state; preload `preload` (ids, in order) as far as they fit."""
        for backend in self.backends.values():
            self._follow(backend)
        self.preload(preload)

    def preload(self, models: Iterable[str]) -> list[str]:
        """Load `models` in order, each only if it fits beside those before it (max_loaded,
        the memory budget) without evicting anything; returns those asked to load."""
        loading: list[str] = []
        for model in models:
            if not self.scheduler.room_for(model):
                logger.warning(
                    "not preloading model %s: max_loaded or the memory budget is taken by %s",
                    model,
                    ", ".join(loading) or "the models loaded already",
                )
                continue
            try:
                self.load(model)
            except ConfigError as exc:  # it cannot fit the memory budget: say so, serve on
                logger.error("not preloading model %s: %s", model, exc)
                continue
            loading.append(model)
        return loading

    def preload_order(self) -> list[str]:
        """The models to load at start, in order: those the config marks, else the primary
        (the seed's one model was started with llamaherd)."""
        marked = sorted((s for s in self.registry if s.preload is not None), key=_preload_key)
        return [s.id for s in marked] or [m for m in (self._primary_id,) if m in self.backends]

    def follow_backends(self, attach: BackendAttacher) -> Callable[[], None]:
        """Call `attach(model, backend)` for every model served now and for every model a
        reload adds later (history, alerts, log files, the sampler follow each server this
        way); returns an unsubscribe that also calls what each attach returned."""
        entry: tuple[BackendAttacher, list[Callable[[], None]]] = (attach, [])
        self._attachers.append(entry)
        for model, backend in self.backends.items():
            self._attach(entry, model, backend)

        def unsubscribe() -> None:
            if entry in self._attachers:
                self._attachers.remove(entry)
            for detach in entry[1]:
                detach()
            entry[1].clear()

        return unsubscribe

    @staticmethod
    def _attach(
        entry: tuple[BackendAttacher, list[Callable[[], None]]], model: str, backend: Backend
    ) -> None:
        detach = entry[0](model, backend)
        if detach is not None:
            entry[1].append(detach)

    def _follow(self, backend: Backend) -> None:
        backend.last_status = backend.service.get_state().status
        listener = self._state_listener(backend.spec.id)
        backend.unsubscribe = backend.service.on_state_change(listener)

    async def stop_all(self) -> None:
        """Stop every server now (gracefully, all at once), whatever it serves: the shutdown's
        last step, or a second Ctrl-C. Requests in flight end with a clear error (a 502, or
        an error event in their stream), never a cut connection."""
        self._stopping_all = True  # and nothing is started from now on (see _load)
        for _ in range(STOP_ALL_ROUNDS):
            now = self._clock()
            for model in list(self.backends):  # nothing more is sent to a server being stopped
                self._apply(self.scheduler.stopping(model, now))
            services = [backend.service for backend in list(self.backends.values())]
            await asyncio.gather(*(s.stop() for s in services), return_exceptions=True)
            # A start asked before (a restart's second half) may have been waiting for the
            # control lock behind the stop: stop again until none is left.
            if not any(s.control_in_progress or s.get_state().status in _RUNNING for s in services):
                return

    async def aclose(self) -> None:
        """Stop every server (gracefully, all at once) and close the upstream pools."""
        await self.stop_all()
        self._closed = True
        for backend in self.backends.values():
            if backend.unsubscribe is not None:
                backend.unsubscribe()
        if self._timer is not None:
            self._timer.cancel()
        for ticket in list(self._tickets.values()):
            if not ticket.decision.done():
                ticket.decision.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstreams.aclose()

    def notify_changed(self) -> None:
        """Something the views show changed outside the scheduler (the config's info)."""
        self._changed()

    def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        """Call `listener()` after every event that may change what `views()` shows."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    @property
    def primary(self) -> Backend:
        """The model `llamaStatus` and `/api/llama/*` speak of: the default model, else the
        first one configured (the seed's `llama_model_path` comes first)."""
        return self.backends.get(self._primary_id, self._no_model)

    # ---- requests --------------------------------------------------------------------------

    def submit(self, model: str) -> Ticket:
        """A request for `model` (an id, already resolved) arrives; await `ticket.decision`."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(next(self._ids), model, self._clock(), loop.create_future())
        if not self.scheduler.has(model):  # removed by a reload since it was resolved
            message = f"model {model!r} was removed from the config"
            ticket.decision.set_result(Reject(ticket.id, model, 404, 1, message))
            return ticket
        self._tickets[ticket.id] = ticket
        self._apply(self.scheduler.arrive(ticket.id, model, self._clock()))
        return ticket

    def end(self, ticket: Ticket) -> None:
        """The request is over, however it ended (answered, failed, or the client left)."""
        if ticket.ended:
            return
        ticket.ended = True
        self._tickets.pop(ticket.id, None)
        now = self._clock()
        if ticket.dispatched:
            self._apply(self.scheduler.finish(ticket.id, now))
        elif not ticket.decision.done():
            ticket.decision.cancel()
            self._apply(self.scheduler.cancel(ticket.id, now))

    async def next_change(self, model: str, timeout: float) -> None:
        """Wait until `model`'s server changes state, or `timeout` seconds pass; at once if it
        is not ready now (the change already happened)."""
        if self.backends[model].service.get_state().status is not Status.READY:
            return
        changed = asyncio.get_running_loop().create_future()

        def on_state(state: ServiceState) -> None:
            if not changed.done():
                changed.set_result(None)

        unsubscribe = self.backends[model].service.on_state_change(on_state)
        try:
            async with asyncio.timeout(timeout):
                await changed
        except TimeoutError:
            pass
        finally:
            unsubscribe()

    async def settle_after_failure(self, model: str, timeout: float) -> None:
        """A request to `model`'s server failed. If the server died, the supervisor says so
        within moments; until then the caller keeps its slot, so that no queued request is
        sent to a dead server. A server that still answers /health (the failure was one
        dropped connection) lets it go at once."""
        service = self.backends[model].service
        if service.get_state().status is not Status.READY:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if await service.answers_health():
                    return
        await self.next_change(model, max(0.0, deadline - loop.time()))

    def position(self, ticket: Ticket) -> int | None:
        return self.scheduler.position(ticket.id)

    # ---- manual control --------------------------------------------------------------------

    # Every start, stop, restart, load and unload is a request to the scheduler: none reaches a
    # server past it, so max_loaded, the budget and "never stop a busy model" always hold.

    def load(self, model: str) -> None:
        """Load (or start) it in its turn; calls off a stop and a failure's cool-down. Raises
        ConfigError when it cannot fit the memory budget on its own."""
        self._apply(self.scheduler.request_load(model, self._clock()))

    def unload(self, model: str) -> None:
        """Unload it once its requests in flight end; the next request loads it again."""
        self._apply(self.scheduler.request_unload(model, self._clock()))

    def stop(self, model: str, reason: str = "stopped by an operator") -> None:
        """Unload it once its requests in flight end, and refuse requests for it (503 naming
        `reason`) until it is started or loaded again."""
        self._apply(self.scheduler.request_stop(model, reason, self._clock()))

    def restart(self, model: str) -> None:
        """Drain, stop, and start it again with a fresh retry count (the way out of `error`);
        requests waiting for it wait for the new server. Raises ConfigError as load() does."""
        self._apply(self.scheduler.request_restart(model, self._clock()))

    # ---- a reload -------------------------------------------------------------------------

    def reconfigure(
        self, registry: ModelRegistry, services: Mapping[str, LlamaService], limits: Limits
    ) -> list[str]:
        """Serve `registry` from now on. `services` holds a LlamaService, never started, for
        each of its models: how that model's server should start. Returns what changed, a
        line each. Per model: unchanged, it is untouched; launched differently (file, args,
        port), it drains and restarts with the new launch while new requests wait; removed,
        it drains and stops (the registry no longer names it: new requests get 404); added,
        it is served at once (and loaded, if preloaded); routed differently (aliases, ttl,
        pinned, concurrency), that applies at once. New limits evict only idle models. The
        caller keeps the primary model in `registry`."""
        now = self._clock()
        changes: list[str] = []
        self.registry = registry
        for model in [m for m in self.backends if m not in services]:
            changes.append(f"{model}: removed; stops once its requests in flight end")
            self._retire(model, now)
        for spec in registry:
            backend = self.backends.get(spec.id)
            if backend is None:
                changes.append(f"{spec.id}: added")
                self._add(spec, services[spec.id], now)
                if spec.preload is not None:
                    self.preload([spec.id])
                continue
            old, backend.spec = backend.spec, spec
            if backend.retiring:  # removed by the reload before, still finishing: it stays
                changes.append(f"{spec.id}: added (its removal is called off)")
                backend.retiring = False
                self._apply(self.scheduler.restore(spec.id, now))
            desired = services[spec.id]
            planned = backend.relaunch.launch if backend.relaunch else backend.service.launch
            if planned != desired.launch:
                changes.append(f"{spec.id}: launched differently; restarts once drained")
                self._relaunch(backend, desired, now)
            elif backend.relaunch is not None:
                backend.relaunch = desired  # the same new launch, with this config's policy
            else:
                backend.service.take_launch(desired)  # the policy only
            if _routing(old) != _routing(spec):
                changes.append(f"{spec.id}: routed differently (applied at once)")
            slots = spec.max_concurrency
            self._apply(self.scheduler.update_policy(_policy(spec), now, slots=slots))
        if limits != self.limits:
            changes.append("limits: " + _limits_change(self.limits, limits))
            self.limits = limits
            self._apply(self.scheduler.set_limits(limits, now))
        self._changed()
        return changes

    def _add(self, spec: ModelSpec, service: LlamaService, now: float) -> None:
        backend = self.backends[spec.id] = Backend(spec, service)
        self._follow(backend)
        self._apply(self.scheduler.add_model(_policy(spec), now))
        for entry in self._attachers:
            self._attach(entry, spec.id, backend)

    def _relaunch(self, backend: Backend, desired: LlamaService, now: float) -> None:
        model, service = backend.spec.id, backend.service
        status = service.get_state().status
        if status is Status.INITIAL:
            service.take_launch(desired)
            self._apply(self.scheduler.relaunched(model, now))
            return
        backend.relaunch = desired  # taken once its server has stopped (see _on_service_state)
        phase = self.scheduler.view(model).phase
        if phase in (Phase.READY, Phase.LOADING):
            try:
                self._apply(self.scheduler.request_restart(model, now))
            except ConfigError:  # the new launch cannot fit the budget: stop, do not restart
                self._apply(self.scheduler.request_unload(model, now))
        elif phase is Phase.FAILED:
            # Its supervisor gave up: no server runs. Stopping it lets the new launch in.
            self._spawn(service.stop(), f"relaunch-{model}")

    def _retire(self, model: str, now: float) -> None:
        self.backends[model].retiring = True
        self._apply(self.scheduler.retire(model, now))
        if not self.scheduler.has(model):  # no server ran: gone at once
            self._forget(model)

    def _forget(self, model: str) -> None:
        backend = self.backends.pop(model)
        if backend.unsubscribe is not None:
            backend.unsubscribe()
        self._spawn(self.upstreams.forget(backend.base_url), f"forget-{model}")
        logger.info("model %s is no longer served", model)

    # ---- what the herd looks like ----------------------------------------------------------

    def view(self, model: str) -> ModelView:
        return self.scheduler.view(model)

    def views(self) -> list[tuple[Backend, ModelView, ServiceState]]:
        return [
            (backend, self.scheduler.view(model), backend.service.get_state())
            for model, backend in self.backends.items()
        ]

    def now(self) -> float:
        return self._clock()

    # ---- events from the supervisors -------------------------------------------------------

    def _state_listener(self, model: str) -> Callable[[ServiceState], None]:
        def on_state(state: ServiceState) -> None:
            self._on_service_state(model, state)

        return on_state

    def _on_service_state(self, model: str, state: ServiceState) -> None:
        backend = self.backends.get(model)
        if backend is None or not self.scheduler.has(model):
            return  # removed by a reload
        previous, backend.last_status = backend.last_status, state.status
        now = self._clock()
        phase = self.scheduler.view(model).phase
        if state.status is Status.READY and previous is not Status.READY:
            self._on_ready(backend, state, phase, now)
        elif state.status is Status.CRASHED and previous is not Status.CRASHED:
            if phase is Phase.LOADING:  # a start that failed: nobody waits through the backoff
                message = state.last_error or "its llama-server failed to start"
                self._apply(self.scheduler.start_failed(model, message, _until(state), now))
            else:
                self._apply(self.scheduler.restarting(model, now))
        elif state.status is Status.ERROR and previous is not Status.ERROR:
            message = state.last_error or "its llama-server gave up"
            self._apply(self.scheduler.failed(model, message, now))
        elif state.status is Status.INITIAL and previous is not Status.INITIAL:
            self._spawn(self.upstreams.forget(backend.base_url), f"forget-{model}")
            if backend.relaunch is not None:  # a reload changed how it starts: from now on
                backend.service.take_launch(backend.relaunch)
                backend.relaunch = None
                self._apply(self.scheduler.relaunched(model, now))
            self._apply(self.scheduler.unloaded(model, now))
            if not self.scheduler.has(model):  # removed by a reload, and now stopped
                self._forget(model)
        else:
            self._changed()

    def _on_ready(self, backend: Backend, state: ServiceState, phase: Phase, now: float) -> None:
        model = backend.spec.id
        if phase is Phase.UNLOADING:
            return  # it finished starting just as its stop began; the stop goes on
        if phase is Phase.LOADING:
            self._apply(self.scheduler.loaded(model, now))
        elif phase is not Phase.READY:
            # Ready without a Load (nothing here starts one, but a supervisor that adopts a
            # server again might): kept only if it fits beside the others as they are.
            actions = self.scheduler.claim(model, now)
            if actions is None:
                logger.warning(
                    "model %s: its llama-server became ready without being loaded, and does "
                    "not fit beside the loaded models; stopping it",
                    model,
                )
                self._control(backend, backend.service.stop(), f"unload-{model}")
                return
            self._apply(actions)
        if backend.spec.max_concurrency is None:
            self._spawn(self._learn_slots(backend, state.pid), f"props-{model}")
        if state.pid is not None:
            self._spawn(self._measure_memory(backend, state.pid), f"memory-{model}")

    async def _learn_slots(self, backend: Backend, pid: int | None) -> None:
        """Upstream concurrency defaults to the server's slot count (`total_slots` in /props):
        more would only queue inside llama-server, where nobody can see or bound it."""
        session = self.upstreams.session(backend.base_url)
        try:
            async with asyncio.timeout(PROPS_TIMEOUT_S):
                async with session.get(f"{backend.base_url}/props") as answer:
                    props = await answer.json(content_type=None)
            slots = int(props["total_slots"])
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "model %s: could not read its slot count from /props: %s", backend.spec.id, exc
            )
            return
        # The answer is only this process's: the server may have been restarted meanwhile.
        if slots >= 1 and not self._closed and self._still_serving(backend, pid):
            self._apply(self.scheduler.set_max_concurrency(backend.spec.id, slots))

    async def _measure_memory(self, backend: Backend, pid: int) -> None:
        """Once loaded, the server's measured resident memory replaces the estimate the memory
        budget was planned with (file size plus KV cache)."""
        try:
            rss = await asyncio.to_thread(resident_bytes, pid)
        except (psutil.Error, OSError) as exc:
            logger.debug(
                "model %s: cannot read the memory of pid %d: %s", backend.spec.id, pid, exc
            )
            return
        if not self._closed and self._still_serving(backend, pid):
            self._apply(self.scheduler.set_memory(backend.spec.id, rss / 2**20))

    def _still_serving(self, backend: Backend, pid: int | None) -> bool:
        """Whether the server that was measured (`pid`) is still the model's ready one."""
        state = backend.service.get_state()
        return state.status is Status.READY and state.pid == pid

    # ---- carrying out decisions ------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Dispatch | Reject):
                self._decide(action)
            elif isinstance(action, Load):
                self._load(self.backends[action.model])
            elif isinstance(action, Unload):
                self._unload(self.backends[action.model], action.reason)
        self._arm_timer()
        self._changed()

    def _load(self, backend: Backend) -> None:
        model = backend.spec.id
        if self._stopping_all:
            logger.info("not loading model %s: llamaherd is stopping", model)
            return
        if backend.service.get_state().status is Status.READY and not backend.pending_controls:
            # Already up (started by hand): no state change will come to say so.
            asyncio.get_running_loop().call_soon(self._report, model, Status.READY)
            return
        logger.info("loading model %s", model)
        self._control(backend, backend.service.start(wait=False), f"load-{model}")

    def _unload(self, backend: Backend, reason: str) -> None:
        model = backend.spec.id
        if backend.service.get_state().status is Status.INITIAL and not backend.pending_controls:
            asyncio.get_running_loop().call_soon(self._report, model, Status.INITIAL)
            return
        logger.info("unloading model %s: %s", model, reason)
        self._control(backend, backend.service.stop(), f"unload-{model}")

    def _control(self, backend: Backend, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a start or stop of its supervisor (they run in order, under its control lock),
        counted until it ends."""

        async def counted() -> None:
            try:
                await work
            finally:
                backend.pending_controls -= 1

        backend.pending_controls += 1
        self._spawn(counted(), name)

    def _report(self, model: str, status: Status) -> None:
        """Tell the scheduler what a server already is, when asking for it changed nothing."""
        if self._closed or self.backends[model].service.get_state().status is not status:
            return  # it moved on meanwhile; that change reaches the scheduler by itself
        now = self._clock()
        if status is Status.READY:
            self._apply(self.scheduler.loaded(model, now))
        else:
            self._apply(self.scheduler.unloaded(model, now))

    def _decide(self, action: Dispatch | Reject) -> None:
        ticket = self._tickets.get(action.request_id)
        if ticket is None or ticket.decision.done():
            # The client left between the decision and now: give the slot straight back.
            if isinstance(action, Dispatch):
                self._apply(self.scheduler.finish(action.request_id, self._clock()))
            return
        if isinstance(action, Dispatch):
            ticket.dispatched = True
        ticket.decision.set_result(action)

    def _arm_timer(self) -> None:
        """One timer, for the scheduler's next deadline (a queue timeout, a TTL unload); left
        alone when the deadline did not move (most events: a request arrives or ends)."""
        deadline = None if self._closed else self.scheduler.next_deadline()
        if deadline == self._timer_deadline and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is None:
            return
        delay = max(0.0, deadline - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer, self._timer_deadline = None, None
        self._apply(self.scheduler.tick(self._clock()))

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                logger.exception("a herd listener failed")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=f"llamaherd-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        with contextlib.suppress(asyncio.CancelledError):
            exc = task.exception()
            if exc is not None:
                logger.error("%s failed", task.get_name(), exc_info=exc)


def _policy(spec: ModelSpec) -> ModelPolicy:
    return ModelPolicy(
        id=spec.id,
        max_concurrency=spec.max_concurrency or 1,
        pinned=spec.pinned,
        ttl_s=spec.ttl_s,
        memory_mb=spec.memory_mb or 0.0,
    )


def _preload_key(spec: ModelSpec) -> int:
    return spec.preload or 0


def _routing(spec: ModelSpec) -> tuple[object, ...]:
    return (spec.aliases, spec.ttl_s, spec.pinned, spec.max_concurrency, spec.preload)


def _limits_change(old: Limits, new: Limits) -> str:
    names = (
        "max_loaded",
        "memory_budget_mb",
        "queue_depth",
        "queue_timeout_s",
        "failure_cooldown_s",
    )
    return ", ".join(
        f"{name} {getattr(old, name)} -> {getattr(new, name)}"
        for name in names
        if getattr(old, name) != getattr(new, name)
    )


def _until(state: ServiceState) -> float:
    """Seconds until a crashed server's next start (0 when not known)."""
    if state.next_retry_at is None:
        return 0.0
    return max(0.0, (state.next_retry_at - datetime.now(UTC)).total_seconds())


def herd_of_one(service: LlamaService, limits: Limits | None = None) -> Herd:
    """A herd of the one server `service` supervises: its model file's stem is the model id
    ("default" when it has none and is only ever adopted)."""
    path = service.model_path
    model_id = path.name.removesuffix(".gguf") if path is not None else "default"
    spec = ModelSpec(id=model_id, path=path)
    return Herd(ModelRegistry([spec], model_id), {model_id: service}, limits or Limits())
