"""Every decision of the gateway in one place: which model is loaded, which request is served,
which waits, which model is evicted. Pure Python: no asyncio, no I/O. Each event method takes the
time (monotonic seconds), updates the state and returns the actions to carry out, in order; one
owner carries them out and reports the outcomes back as further events (loaded, unloaded, ...).

    arrive ─► its model's queue ─► Dispatch          (READY, a free slot, not draining)
                   │
                   └─► its turn ─► Load               (room now)
                              └─► evict: victim draining ─► Unload ─► unloaded() ─► Load

Control. Every start, stop, restart, load and unload is an event here, never a call past the
scheduler to a server: a stop drains (requests in flight finish) and the model then refuses
requests until it is started again; a restart drains, then loads with a fresh retry count.

Failures. A start that fails does not make anyone wait through the supervisor's backoff: the
model's waiters get 503 with the reason at once, and so do its requests while it is retried.
Its slot is kept for the retry only while nobody else needs it: a model whose start is being
retried is the first to be evicted. Evicted so, or given up by its supervisor (retries spent),
it is FAILED: it holds no slot, and its requests are refused for `failure_cooldown_s`; the
first one after that gets one fresh attempt. A manual start, load or restart tries at once.

Turns. Models whose requests wait for a server take turns in the order of their oldest waiting
request. A loaded model keeps its turn while it still serves a request older than that: what
queued behind it meanwhile is dispatched with it, so arrivals A B A B (A loaded) are served
A A B B, and steady streams for two models alternate between them instead of starving one.

Capacity. At most `max_loaded` models are LOADING, READY or UNLOADING (an unloading server still
holds its memory), and with a memory budget their memory must fit too: one rule, before and
after loading. A model is planned with its estimate until its server is measured; a measured
size that breaks the budget drains idle models (least recently used first) until it holds
again, and a model that turns out bigger than the whole budget serves what it has, then
unloads and is refused from then on, like one whose estimate was too big from the start.
A candidate that does not fit evicts READY, unpinned models: idle ones first, then those whose
oldest pending request is newer than the candidate's oldest, least recently used first. A
victim is *draining*: it dispatches nothing new, its requests wait, and it is unloaded once its
last request ends, so a model serving a request is never stopped. Earlier candidates claim the
room being freed first.

      slots (max_loaded 2)                candidate C, oldest waiter #7
    ┌───────────────┬──────────────┐
    │ A serving  #3 │ B idle       │  ─► B drains ─► Unload B ─► unloaded(B) ─► Load C
    └───────────────┴──────────────┘      (A keeps its slot: #3 is older than #7)
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from llamaherd.errors import ConfigError

_RETRY_MAX_S = 60
_EWMA_WEIGHT = 0.2  # weight of the newest service time in the running mean
_REQUESTED = "requested"


class Phase(enum.StrEnum):
    """A model's server as the scheduler sees it. FAILED holds no capacity; requests for it are
    refused during the failure cool-down, and the first one after it starts a fresh Load: the
    person running it may have fixed the cause, and a quick 503 says so if not."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


_HELD = frozenset({Phase.LOADING, Phase.READY, Phase.UNLOADING})


@dataclass(frozen=True, slots=True)
class Limits:
    max_loaded: int = 1
    memory_budget_mb: float | None = None
    queue_depth: int = 64  # waiting requests per model, loaded or not
    queue_timeout_s: float = 120.0
    failure_cooldown_s: float = 30.0  # a failed model refuses requests this long, then retries

    def __post_init__(self) -> None:
        if (
            self.max_loaded < 1
            or self.queue_depth < 0
            or self.queue_timeout_s <= 0
            or self.failure_cooldown_s < 0
        ):
            raise ValueError(f"limits out of range: {self}")
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be positive, got {self.memory_budget_mb}")


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    id: str
    max_concurrency: int = 1
    pinned: bool = False  # never evicted, never unloaded for idleness; a manual unload works
    ttl_s: float | None = None  # unload after this long idle
    memory_mb: float = 0.0  # estimated memory when loaded

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.memory_mb < 0 or (self.ttl_s or 1) <= 0:
            raise ValueError(f"model policy out of range: {self}")


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send the request upstream now; it is in flight until finish()."""

    request_id: int
    model: str


@dataclass(frozen=True, slots=True)
class Load:
    model: str


@dataclass(frozen=True, slots=True)
class Unload:
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    request_id: int
    model: str
    status: int
    retry_after_s: int
    message: str


Action: TypeAlias = Dispatch | Load | Unload | Reject


@dataclass(frozen=True, slots=True)
class ModelView:
    """A read-only snapshot of one model, for status pages and tests."""

    id: str
    phase: Phase
    in_flight: int
    queued: int
    last_used: float | None
    draining: bool
    pinned: bool
    ttl_s: float | None
    max_concurrency: int
    memory_mb: float
    waiting_for: str | None  # why its waiters cannot get a server yet, when known
    load_requested: bool = False  # a manual load waits for its turn (for room to be made)
    stopped: str | None = None  # why it refuses requests until started (a manual stop)
    failure: str | None = None  # why it failed, while it is FAILED
    retry_at: float | None = None  # when a failed model may be tried again (monotonic)

    def ttl_left_s(self, now: float) -> float | None:
        """Seconds until the idle unload; None when none is due (no TTL, pinned, busy...)."""
        idle = self.phase is Phase.READY and not (self.in_flight or self.queued or self.draining)
        if self.ttl_s is None or self.pinned or not idle or self.last_used is None:
            return None
        return max(0.0, self.last_used + self.ttl_s - now)


@dataclass(slots=True)
class _Request:
    id: int
    seq: int  # arrival order: turns compare these, never float times
    arrived: float
    dispatched: float = 0.0


@dataclass(slots=True, eq=False)
class _Model:
    policy: ModelPolicy
    concurrency: int
    memory_mb: float
    phase: Phase = Phase.UNLOADED
    queue: deque[_Request] = field(default_factory=deque)
    in_flight: dict[int, _Request] = field(default_factory=dict)
    last_used: float | None = None
    draining: str | None = None  # the Unload reason, once it must stop
    wanted: int | None = None  # arrival number of a manual load not yet carried out
    waiting_for: str | None = None
    mean_service_s: float | None = None
    stopped: str | None = None  # a manual stop: refuse requests until started again
    failure: str | None = None  # the reason it is FAILED
    retry_at: float = -math.inf  # a FAILED model refuses requests until then
    crashed: bool = False  # LOADING again because its server crashed and is restarting
    retrying: bool = False  # LOADING, its start failed, and the supervisor backs off to retry
    retired: bool = False  # removed from the config: it goes once its server has stopped
    stopping_supervisor: bool = False  # a failed model's Unload, not answered yet: no Load

    def turn(self) -> float:
        """A candidate's place in turn order: its oldest waiter, or its manual load."""
        keys = [self.queue[0].seq] if self.queue else []
        return min([*keys, self.wanted] if self.wanted is not None else keys, default=math.inf)

    def oldest_pending(self) -> float:
        """Arrival number of its oldest request queued or in flight (inf when idle)."""
        keys = [r.seq for r in self.in_flight.values()]
        return min([*keys, self.queue[0].seq] if self.queue else keys, default=math.inf)

    def open(self) -> bool:
        ready = self.phase is Phase.READY and not self.draining
        return ready and len(self.in_flight) < self.concurrency


class Scheduler:
    """The state behind every routing decision. Unknown model ids raise KeyError; `now` is
    monotonic seconds and must not go backwards. A late loaded() or restarting() that no longer
    fits the model's phase (after failed(), say) changes nothing."""

    def __init__(self, models: Iterable[ModelPolicy], limits: Limits) -> None:
        self._limits = limits
        self._models: dict[str, _Model] = {}
        for p in models:
            if p.id in self._models:
                raise ValueError(f"model {p.id!r} is listed twice")
            self._models[p.id] = _Model(p, p.max_concurrency, p.memory_mb)
        self._requests: dict[int, _Model] = {}  # queued or in flight
        self._seq = itertools.count()
        self._now = -math.inf  # the latest time seen, for events that carry none
        # Set by each full decision: nothing waits anywhere (no queue, no manual load, no
        # drain, no load or unload under way, the limits hold), so a request for an open model
        # and the end of one that leaves no queue behind change nothing but that model, until
        # `_quiet_until` (the earliest idle unload then due; never later than the truth).
        self._calm = False
        self._quiet_until = -math.inf

    # ── events ────────────────────────────────────────────────────────────────────────────
    def arrive(self, request_id: int, model: str, now: float) -> list[Action]:
        m = self._models[model]
        if request_id in self._requests:
            raise ValueError(f"request {request_id} is already queued or in flight")
        if self._calm and now < self._quiet_until and not m.queue and m.open() and not m.stopped:
            # The fast path, most requests on a warm server: dispatched at once. A full
            # decision would find nothing else to do (see `_calm`).
            self._now = max(self._now, now)
            r = _Request(request_id, next(self._seq), now, now)
            m.in_flight[request_id], m.last_used = r, now
            self._requests[request_id] = m
            return [Dispatch(request_id, model)]
        actions = self._expire(now)
        refusal = self._refusal(m, now)
        if refusal is not None:
            actions.append(Reject(request_id, model, 503, refusal[0], refusal[1]))
        elif len(m.queue) >= self._limits.queue_depth and not (m.open() and not m.queue):
            msg = f"the queue for model {model!r} is full ({len(m.queue)} waiting); retry later"
            actions.append(Reject(request_id, model, 429, self._retry_after(m), msg))
        else:
            m.queue.append(_Request(request_id, next(self._seq), now))
            self._requests[request_id] = m
        return actions + self._decide(now)

    def finish(self, request_id: int, now: float) -> list[Action]:
        """A dispatched request ended, whatever the outcome."""
        m = self._requests.get(request_id)
        if m is None or request_id not in m.in_flight:
            raise KeyError(f"request {request_id} is not in flight")
        took = now - m.in_flight.pop(request_id).dispatched
        del self._requests[request_id]
        mean = m.mean_service_s
        m.mean_service_s = took if mean is None else mean + _EWMA_WEIGHT * (took - mean)
        m.last_used = now
        if self._calm and now < self._quiet_until and not m.queue and not m.draining:
            # Nothing waits anywhere: this end frees a slot nobody asks for. Only the idle
            # unload it may bring closer is noted.
            self._now = max(self._now, now)
            due = self._ttl_due(m)
            if due is not None:
                self._quiet_until = min(self._quiet_until, due)
            return []
        return self._decide(now)

    def cancel(self, request_id: int, now: float) -> list[Action]:
        """The client left while queued. A no-op for unknown ids, and for in-flight ones: the
        owner calls finish() for those once the upstream request is closed."""
        m = self._requests.get(request_id)
        if m is not None and request_id not in m.in_flight:
            m.queue.remove(next(r for r in m.queue if r.id == request_id))
            del self._requests[request_id]
        return self._decide(now)

    def loaded(self, model: str, now: float) -> list[Action]:
        """Its server is ready: the first load, or back after a crash."""
        m = self._models[model]
        if m.phase is Phase.LOADING:
            self._apply_loaded(m, now)
        return self._decide(now)

    def _apply_loaded(self, m: _Model, now: float) -> None:
        m.phase, m.last_used, m.wanted, m.waiting_for = Phase.READY, now, None, None
        m.failure, m.retry_at, m.crashed, m.retrying = None, -math.inf, False, False

    def unloaded(self, model: str, now: float) -> list[Action]:
        """Its server stopped (after an Unload, after stopping(), or behind the scheduler's
        back while READY); waiters left behind make it a candidate again. While LOADING it
        changes nothing: that Load came after the stop, and its start runs after it."""
        m = self._models[model]
        m.stopping_supervisor = False
        if m.retired and m.phase in (Phase.UNLOADING, Phase.READY):
            del self._models[model]
            return self._decide(now)
        if m.phase in (Phase.UNLOADING, Phase.READY):
            m.phase, m.draining = Phase.UNLOADED, None
            if m.retrying:  # evicted while its failed start waited for a retry
                m.phase, m.retrying = Phase.FAILED, False
                m.retry_at = now + self._limits.failure_cooldown_s
        return self._decide(now)

    def stopping(self, model: str, now: float) -> list[Action]:
        """Its server is being stopped by something other than an Unload (a shutdown): nothing
        more is dispatched to it; unloaded() follows."""
        m = self._models[model]
        if m.phase in (Phase.LOADING, Phase.READY):
            m.phase, m.draining = Phase.UNLOADING, None
        return self._decide(now)

    def claim(self, model: str, now: float) -> list[Action] | None:
        """A server became ready that no Load asked for. If it fits beside the held models
        without evicting anything (and is not stopped), it is READY from now; otherwise None:
        the owner must stop it, or `max_loaded` and the budget would no longer hold."""
        m = self._models[model]
        if m.phase not in _HELD:
            held = [x for x in self._models.values() if x.phase in _HELD]
            if m.stopped or not self._fits(held, m):
                return None
            self._apply_loaded(m, now)
        return self._decide(now)

    def restarting(self, model: str, now: float) -> list[Action]:
        """It crashed and the supervisor restarts it: its queue keeps waiting. Requests in flight
        are the proxy's to fail; the owner calls finish() for each."""
        m = self._models[model]
        if m.phase is Phase.READY:
            m.phase, m.crashed = Phase.LOADING, True
        return self._decide(now)

    def start_failed(self, model: str, message: str, retry_in_s: float, now: float) -> list[Action]:
        """Its server failed to start and the supervisor retries it in `retry_in_s`: waiters
        get 503 with the message at once, as do new requests until it is up. It keeps its
        room for the retry only until another model needs it (it is evicted first)."""
        m = self._models[model]
        if m.phase is not Phase.LOADING:
            return self._decide(now)
        m.retrying, m.failure, m.retry_at = True, message, now + retry_in_s
        text = f"model {model!r} is unavailable: {message}"
        actions = [self._drop(m, r, 503, text) for r in list(m.queue)]
        return actions + self._decide(now)

    def failed(self, model: str, message: str, now: float) -> list[Action]:
        """It gave up: every waiter gets a 503 with the message, and its capacity is freed."""
        m = self._models[model]
        m.phase, m.draining, m.wanted = Phase.FAILED, None, None
        m.crashed = m.retrying = False
        m.failure, m.retry_at = message, now + self._limits.failure_cooldown_s
        text = f"model {model!r} is unavailable: {message}"
        actions = [self._drop(m, r, 503, text) for r in list(m.queue)]
        return actions + self._decide(now)

    def request_load(self, model: str, now: float) -> list[Action]:
        """A manual load (or start) takes its turn like a request arriving now. It calls off a
        manual stop and a failure's cool-down: the person asking may have fixed the cause."""
        m = self._operator_asks(model)
        if m.draining == _REQUESTED:
            m.draining = None  # a manual unload not yet begun is called off
        elif (m.phase not in (Phase.LOADING, Phase.READY) or m.draining) and m.wanted is None:
            m.wanted = next(self._seq)
        return self._decide(now)

    def request_unload(self, model: str, now: float) -> list[Action]:
        """Stops it once its in-flight requests end; works for pinned models too."""
        m = self._models[model]
        m.wanted = None
        if m.phase in (Phase.LOADING, Phase.READY) and not m.draining:
            m.draining = _REQUESTED
        return self._decide(now)

    def request_stop(self, model: str, reason: str, now: float) -> list[Action]:
        """Like an unload, and then it stays down: its waiters and every later request get 503
        with `reason` until request_load() (a start) or request_restart()."""
        m = self._models[model]
        m.stopped, m.wanted = reason, None
        actions: list[Action] = [self._drop(m, r, 503, self._stopped(m)) for r in list(m.queue)]
        if m.phase in (Phase.LOADING, Phase.READY) and not m.draining:
            m.draining = _REQUESTED
        elif m.phase is Phase.FAILED:
            # Its supervisor still says `error`: stop that too. No server runs, so it holds no
            # room meanwhile; it is not loaded again before the unloaded() that answers.
            m.phase, m.stopping_supervisor = Phase.UNLOADED, True
            actions.append(Unload(model, _REQUESTED))
        return actions + self._decide(now)

    def request_restart(self, model: str, now: float) -> list[Action]:
        """Drain, stop, then load again (a fresh start for its supervisor, and retries from
        zero); its waiters wait for the new server. A model that is not running just loads."""
        m = self._operator_asks(model)
        if m.wanted is None:
            m.wanted = next(self._seq)
        if m.phase in (Phase.LOADING, Phase.READY):
            m.draining = "restart requested"
        return self._decide(now)

    def _operator_asks(self, model: str) -> _Model:
        """A person asks for `model` to run (a load, start or restart): ConfigError if it can
        never fit; otherwise a manual stop and a failure's cool-down are called off."""
        m = self._models[model]
        if not self._fits_alone(m):
            raise ConfigError(self._too_big(m))
        m.stopped, m.retry_at = None, -math.inf
        return m

    # ── a reload changes the set of models and the limits ─────────────────────────────────────
    def add_model(self, policy: ModelPolicy, now: float) -> list[Action]:
        if policy.id in self._models:
            raise ValueError(f"model {policy.id!r} is listed twice")
        self._models[policy.id] = _Model(policy, policy.max_concurrency, policy.memory_mb)
        return self._decide(now)

    def update_policy(self, policy: ModelPolicy, now: float, *, slots: int | None) -> list[Action]:
        """How a model is routed changed (pinned, ttl, its estimate): applied at once, to the
        requests already queued too. `slots`: its new concurrency, or None to keep the one in
        force (a slot count learned from its server)."""
        m = self._models[policy.id]
        m.policy = policy
        if slots is not None:
            m.concurrency = slots
        if m.phase not in _HELD or not self._fits_alone(m):
            m.memory_mb = policy.memory_mb  # a measurement stands while its server runs
        return self._decide(now)

    def relaunched(self, model: str, now: float) -> list[Action]:
        """It will start differently from now on (new file, arguments, port): a failure of the
        old launch says nothing about the new one, so its cool-down ends."""
        m = self._models[model]
        if m.phase is Phase.FAILED:
            m.phase, m.failure, m.retry_at = Phase.UNLOADED, None, -math.inf
        return self._decide(now)

    def retire(self, model: str, now: float) -> list[Action]:
        """It was removed from the config: requests in flight finish, queued ones get 503, and
        it is forgotten once its server has stopped (unloaded()), or at once if none runs.
        The owner stops routing new requests to it first."""
        m = self._models[model]
        m.retired, m.stopped, m.wanted = True, "removed from the config", None
        actions: list[Action] = [self._drop(m, r, 503, self._stopped(m)) for r in list(m.queue)]
        if m.phase in (Phase.LOADING, Phase.READY):
            m.draining = "removed from the config"
        elif m.phase is not Phase.UNLOADING:
            del self._models[model]
        return actions + self._decide(now)

    def restore(self, model: str, now: float) -> list[Action]:
        """A model being retired is in the config again: it stays, serving as before (its
        drain for the removal is called off)."""
        m = self._models[model]
        if m.retired:
            m.retired, m.stopped = False, None
            if m.draining == "removed from the config":
                m.draining = None
        return self._decide(now)

    def has(self, model: str) -> bool:
        return model in self._models

    def room_for(self, model: str) -> bool:
        """Whether `model` would load beside the models held or already asked for, evicting
        nothing (preloading takes only what fits)."""
        m = self._models[model]
        claimed = [x for x in self._models.values() if x.phase in _HELD or x.wanted is not None]
        return m in claimed or self._fits([x for x in claimed if x is not m], m)

    def set_limits(self, limits: Limits, now: float) -> list[Action]:
        """New max_loaded, budget, queue settings: held models beyond them are unloaded once
        idle (never a busy one); queued requests keep their place."""
        self._limits = limits
        return self._decide(now)

    def tick(self, now: float) -> list[Action]:
        """Queue timeouts and idle unloads; run it at next_deadline()."""
        return self._decide(now)

    def set_max_concurrency(self, model: str, n: int) -> list[Action]:
        """The server's real slot count (from /props). Requests already in flight above a
        lowered limit end normally; nothing new is dispatched until they do."""
        if n < 1:
            raise ValueError(f"max concurrency must be at least 1, got {n}")
        self._models[model].concurrency = n
        return self._decide(self._now)

    def set_memory(self, model: str, mb: float) -> list[Action]:
        """A measured size replaces the estimate. No server is stopped merely because it turned
        out bigger: candidates see the new size and evict by the usual rules."""
        if mb < 0:
            raise ValueError(f"memory must not be negative, got {mb}")
        self._models[model].memory_mb = mb
        return self._decide(self._now)

    # ── queries ───────────────────────────────────────────────────────────────────────────
    def next_deadline(self) -> float | None:
        """When tick() must run next: the earliest queue timeout or idle unload."""
        timeout = self._limits.queue_timeout_s
        times = [m.queue[0].arrived + timeout for m in self._models.values() if m.queue]
        times += [t for m in self._models.values() if (t := self._ttl_due(m)) is not None]
        return min(times, default=None)

    def position(self, request_id: int) -> int | None:
        """1-based place in its model's queue; None once dispatched, or if unknown."""
        m = self._requests.get(request_id)
        queued = [] if m is None else [r.id for r in m.queue]
        return queued.index(request_id) + 1 if request_id in queued else None

    def view(self, model: str) -> ModelView:
        m = self._models[model]
        p = m.policy
        return ModelView(
            p.id, m.phase, len(m.in_flight), len(m.queue), m.last_used, m.draining is not None,
            p.pinned, p.ttl_s, m.concurrency, m.memory_mb, m.waiting_for,
            m.wanted is not None and m.phase is not Phase.READY,
            m.stopped, m.failure if m.phase is Phase.FAILED or m.retrying else None,
            m.retry_at if m.phase is Phase.FAILED or m.retrying else None,
        )  # fmt: skip

    # ── the decision ──────────────────────────────────────────────────────────────────────
    def _decide(self, now: float) -> list[Action]:
        """Run after every event: expire waiters, fill free slots, start idle unloads, take
        turns, then stop every draining model that has nothing in flight."""
        self._now = max(self._now, now)
        actions = self._expire(now)
        for m in self._models.values():
            while m.queue and m.open():
                r = m.queue.popleft()
                r.dispatched, m.last_used = now, now
                m.in_flight[r.id] = r
                actions.append(Dispatch(r.id, m.policy.id))
            due = self._ttl_due(m)
            if due is not None and due <= now:
                m.draining = f"idle for {m.policy.ttl_s:g} s (ttl)"
        self._drain_over_limits()
        actions += self._take_turns()
        for m in self._models.values():
            if m.draining and m.phase in (Phase.READY, Phase.LOADING) and not m.in_flight:
                actions.append(Unload(m.policy.id, m.draining))
                m.phase, m.draining = Phase.UNLOADING, None
        self._note_calm()
        return actions

    def _note_calm(self) -> None:
        """Whether the fast paths of arrive() and finish() may skip the full decision."""
        models = self._models.values()
        held = [m for m in models if m.phase in _HELD]
        budget = self._limits.memory_budget_mb
        self._calm = (
            all(
                not m.queue
                and m.wanted is None
                and not m.draining
                and m.phase is not Phase.LOADING
                and m.phase is not Phase.UNLOADING
                for m in models
            )
            and len(held) <= self._limits.max_loaded
            and (budget is None or sum(m.memory_mb for m in held) <= budget)
        )
        deadline = self.next_deadline() if self._calm else None
        self._quiet_until = math.inf if deadline is None else deadline

    def _drain_over_limits(self) -> None:
        """The limits hold after loading as before: when measured sizes break the budget (or a
        reload lowers max_loaded or the budget), a model bigger than the whole budget drains,
        then idle models (least recently used first) until the rest fits. Busy ones are left
        until they are idle; pinned ones are kept."""
        budget, limit = self._limits.memory_budget_mb, self._limits.max_loaded
        staying = [
            m for m in self._models.values() if m.phase in _HELD and m.phase is not Phase.UNLOADING
        ]
        for m in staying:
            too_big = budget is not None and not self._fits_alone(m)
            if too_big and not (m.draining or m.policy.pinned):
                m.draining = f"measured at {m.memory_mb:g} MB, more than the memory budget"
        kept = [m for m in staying if not m.draining]
        idle = [
            m
            for m in kept
            if m.phase is Phase.READY and not (m.policy.pinned or m.queue or m.in_flight)
        ]
        idle.sort(key=lambda m: m.last_used or 0.0)
        while idle and (
            len(kept) > limit or (budget is not None and sum(m.memory_mb for m in kept) > budget)
        ):
            victim = idle.pop(0)
            victim.draining = (
                f"max_loaded is {limit}"
                if len(kept) > limit
                else f"the loaded models' measured memory exceeds the {budget:g} MB budget"
            )
            kept.remove(victim)

    def _take_turns(self) -> list[Action]:
        """Each model waiting for a server, in turn order: load if there is room, else claim the
        room being freed, else evict; a candidate nothing can make room for waits unclaimed."""
        actions: list[Action] = []
        held = [m for m in self._models.values() if m.phase in _HELD]
        staying = [m for m in held if m.phase is not Phase.UNLOADING and not m.draining]
        waiting = [
            m
            for m in self._models.values()
            if m.phase not in _HELD and m.turn() < math.inf and not m.stopping_supervisor
        ]
        for m in self._models.values():
            m.waiting_for = None
        for c in sorted(waiting, key=_Model.turn):
            if not self._fits_alone(c):
                actions += [self._drop(c, r, 503, self._too_big(c)) for r in list(c.queue)]
                c.wanted = None
                continue
            if self._fits(held, c):
                c.phase = Phase.LOADING
                held.append(c)
                actions.append(Load(c.policy.id))
            elif not self._fits(staying, c):
                victims = self._victims(staying, c)
                if victims is None:
                    c.waiting_for = self._why_waiting(staying, c)
                    continue
                for v in victims:
                    v.draining = f"evicted for {c.policy.id}"
                    staying.remove(v)
            staying.append(c)
        return actions

    def _victims(self, staying: list[_Model], c: _Model) -> list[_Model] | None:
        """The fewest models to evict so `c` fits, or None: idle ones first (least recently used
        first), then those whose oldest pending request is newer than c's oldest."""
        eligible = [
            v
            for v in staying
            if (v.phase is Phase.READY or v.retrying)
            and not v.policy.pinned
            and v.oldest_pending() > c.turn()
        ]
        # A failed start waiting for its retry first: it serves nobody.
        eligible.sort(
            key=lambda v: (not v.retrying, v.oldest_pending() < math.inf, v.last_used or 0.0)
        )
        taken: list[_Model] = []
        for v in eligible:
            if self._fits([s for s in staying if s not in taken], c):
                break
            taken.append(v)
        rest = [s for s in staying if s not in taken]
        if not self._fits(rest, c):
            return None
        for v in reversed(taken[:-1]):  # a later, bigger victim may have made it unneeded
            if self._fits([*rest, v], c):
                taken.remove(v)
                rest.append(v)
        return taken

    # ── helpers ───────────────────────────────────────────────────────────────────────────
    def _expire(self, now: float) -> list[Action]:
        timeout = self._limits.queue_timeout_s
        actions: list[Action] = []
        for m in self._models.values():
            while m.queue and m.queue[0].arrived + timeout <= now:
                r = m.queue[0]
                why = f"; {m.waiting_for}" if m.waiting_for else ""
                msg = f"waited {now - r.arrived:g} s for model {m.policy.id!r} ({m.phase}){why}"
                actions.append(self._drop(m, r, 503, msg))
        return actions

    def _drop(self, m: _Model, r: _Request, status: int, message: str) -> Reject:
        """Takes a queued request out and says why."""
        retry_after = _RETRY_MAX_S if not self._fits_alone(m) else self._retry_after(m)
        m.queue.remove(r)
        del self._requests[r.id]
        return Reject(r.id, m.policy.id, status, retry_after, message)

    def _refusal(self, m: _Model, now: float) -> tuple[int, str] | None:
        """Retry-After and the reason, when a request for `m` is refused on arrival."""
        if m.stopped:
            return _RETRY_MAX_S, self._stopped(m)
        wait = min(_RETRY_MAX_S, max(1, math.ceil(max(m.retry_at, now) - now)))
        if m.phase is Phase.FAILED and now < m.retry_at:
            return wait, (
                f"model {m.policy.id!r} is unavailable: {m.failure}; llamaherd tries it again"
                f" in {wait} s, or at once when it is started by hand"
            )
        if m.retrying:
            when = f"in {wait} s" if m.retry_at > now else "now"
            return wait, (
                f"model {m.policy.id!r} is unavailable: {m.failure}; its llama-server is"
                f" retried {when}"
            )
        if not self._fits_alone(m):
            return _RETRY_MAX_S, self._too_big(m)
        return None

    def _stopped(self, m: _Model) -> str:
        return f"model {m.policy.id!r} is stopped ({m.stopped}); start or load it to serve it again"

    def _retry_after(self, m: _Model) -> int:
        """Whole seconds until a retry may succeed: the model's mean service time (an
        exponentially weighted mean over finished requests) times the requests ahead per
        slot, rounded up and clamped to 1..60. 1 while nothing has finished: its load time is
        not known here, and a client retrying soon only queues again."""
        if m.mean_service_s is None:
            return 1
        ahead = (len(m.queue) + len(m.in_flight)) / m.concurrency
        return min(_RETRY_MAX_S, max(1, math.ceil(m.mean_service_s * ahead)))

    def _ttl_due(self, m: _Model) -> float | None:
        ttl, idle = m.policy.ttl_s, not (m.queue or m.in_flight or m.draining)
        if ttl is None or m.policy.pinned or m.phase is not Phase.READY or not idle:
            return None
        return None if m.last_used is None else m.last_used + ttl

    def _fits(self, others: list[_Model], c: _Model) -> bool:
        budget = self._limits.memory_budget_mb
        if len(others) + 1 > self._limits.max_loaded:
            return False
        return budget is None or sum(m.memory_mb for m in others) + c.memory_mb <= budget

    def _fits_alone(self, m: _Model) -> bool:
        return self._fits([], m)

    def _too_big(self, m: _Model) -> str:
        return (
            f"model {m.policy.id!r} needs {m.memory_mb:g} MB, more than the whole memory budget"
            f" of {self._limits.memory_budget_mb:g} MB: it cannot fit and is never loaded"
        )

    def _why_waiting(self, staying: list[_Model], c: _Model) -> str:
        """The true reason a candidate waits: what each model holding the room is doing."""
        holders = ", ".join(f"{m.policy.id!r} ({self._holding(m, c)})" for m in staying)
        limit = self._limits.max_loaded
        if len(staying) >= limit:
            return f"max_loaded {limit} is reached and nothing can be evicted now: {holders}"
        used, budget = sum(m.memory_mb for m in staying), self._limits.memory_budget_mb
        return (
            f"it needs {c.memory_mb:g} MB and {used:g} MB of the {budget:g} MB budget are held"
            f" by models that cannot be evicted now: {holders}"
        )

    @staticmethod
    def _holding(m: _Model, c: _Model) -> str:
        if m.policy.pinned:
            return "pinned"
        if m.phase is Phase.LOADING:
            if m.retrying:
                return "retrying a failed start"
            return "restarting after a crash" if m.crashed else "loading"
        if m.oldest_pending() < c.turn():
            return f"serving requests older than those for {c.policy.id!r}"
        return "busy"
