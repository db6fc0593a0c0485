"""The scheduler's decisions, event by event, with the owner played by the test: no processes,
no event loop, time passed in by hand."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from llamaherd.errors import ConfigError
from llamaherd.gateway.scheduler import (
    Action,
    Dispatch,
    Limits,
    Load,
    ModelPolicy,
    Phase,
    Reject,
    Scheduler,
    Unload,
)


def scheduler(*models: ModelPolicy | str, **limits: float | int | None) -> Scheduler:
    policies = [ModelPolicy(m) if isinstance(m, str) else m for m in models]
    return Scheduler(policies, Limits(**limits))  # type: ignore[arg-type]


def ready(s: Scheduler, *models: str, now: float = 0.0) -> None:
    """Brings models up one by one, as an owner answering each Load would."""
    for model in models:
        assert s.request_load(model, now) == [Load(model)]
        assert s.loaded(model, now) == []


def settle(s: Scheduler, actions: list[Action], now: float) -> list[Action]:
    """The owner answering everything in order, one second per answer: every Load with loaded(),
    every Unload with unloaded(), every Dispatch with finish(). Returns every action seen."""
    todo, seen = deque(actions), list[Action]()
    while todo:
        action = todo.popleft()
        seen.append(action)
        now += 1
        match action:
            case Load(model):
                todo += s.loaded(model, now)
            case Unload(model, _):
                todo += s.unloaded(model, now)
            case Dispatch(request_id, _):
                todo += s.finish(request_id, now)
        assert len(seen) < 10_000, "the scheduler never settles"
    return seen


def dispatched(actions: list[Action]) -> list[int]:
    return [a.request_id for a in actions if isinstance(a, Dispatch)]


def rejected(actions: list[Action]) -> Reject:
    """The one action, which must be a Reject."""
    assert len(actions) == 1 and isinstance(actions[0], Reject), actions
    return actions[0]


# ── loading and dispatching ─────────────────────────────────────────────────────────────────
def test_concurrent_cold_starts_share_one_load() -> None:
    s = scheduler(ModelPolicy("a", max_concurrency=2))
    actions = [a for rid in range(5) for a in s.arrive(rid, "a", now=rid)]
    assert actions == [Load("a")]
    assert s.view("a").phase is Phase.LOADING and s.view("a").queued == 5
    assert s.loaded("a", 10) == [Dispatch(0, "a"), Dispatch(1, "a")]
    assert s.finish(1, 11) == [Dispatch(2, "a")]
    assert [s.position(rid) for rid in range(5)] == [None, None, None, 1, 2]


def test_a_ready_model_with_a_free_slot_dispatches_at_once_and_queues_fifo() -> None:
    s = scheduler("a")
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    assert s.arrive(2, "a", 2) == []
    assert s.arrive(3, "a", 3) == []
    assert s.finish(1, 4) == [Dispatch(2, "a")]
    assert s.finish(2, 5) == [Dispatch(3, "a")]
    assert s.view("a").in_flight == 1 and s.view("a").queued == 0


def test_set_max_concurrency_dispatches_from_the_queue() -> None:
    s = scheduler("a")
    ready(s, "a")
    for rid in range(4):
        s.arrive(rid, "a", 1)
    assert s.set_max_concurrency("a", 3) == [Dispatch(1, "a"), Dispatch(2, "a")]
    assert s.view("a").max_concurrency == 3
    with pytest.raises(ValueError, match="at least 1"):
        s.set_max_concurrency("a", 0)


def test_queue_full_gets_429_for_loaded_and_unloaded_models_alike() -> None:
    s = scheduler("a", "b", max_loaded=2, queue_depth=2)
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    s.arrive(2, "a", 1)
    s.arrive(3, "a", 1)
    reject = rejected(s.arrive(4, "a", 1))
    assert (reject.request_id, reject.status, reject.retry_after_s) == (4, 429, 1)
    assert reject.message == "the queue for model 'a' is full (2 waiting); retry later"
    assert s.arrive(5, "b", 1) == [Load("b")]
    s.arrive(6, "b", 1)
    assert rejected(s.arrive(7, "b", 1)).status == 429
    assert s.position(4) is None and s.view("a").queued == 2


def test_queue_depth_zero_serves_only_what_can_start_now() -> None:
    s = scheduler("a", queue_depth=0)
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    assert rejected(s.arrive(2, "a", 1)).status == 429


def test_queue_timeout_rejects_with_503_naming_the_model_and_the_wait() -> None:
    s = scheduler("a", queue_timeout_s=30)
    ready(s, "a")
    s.arrive(1, "a", 0)
    s.arrive(2, "a", 5)
    assert s.next_deadline() == 35
    assert s.tick(34.9) == []
    reject = rejected(s.tick(35))
    assert (reject.request_id, reject.status) == (2, 503)
    assert reject.message == "waited 30 s for model 'a' (ready)"
    assert s.next_deadline() is None
    with pytest.raises(KeyError):
        s.finish(2, 36)


def test_retry_after_follows_the_mean_service_time() -> None:
    s = scheduler(ModelPolicy("a", max_concurrency=2), queue_depth=3, queue_timeout_s=1000)
    ready(s, "a")
    for rid in range(5):
        s.arrive(rid, "a", 0)
    assert rejected(s.arrive(9, "a", 0)).retry_after_s == 1  # nothing finished yet
    s.finish(0, 10)  # 10 s of service; 1 moves up: 4 requests ahead on 2 slots
    s.arrive(5, "a", 10)
    assert rejected(s.arrive(10, "a", 10)).retry_after_s == math.ceil(10 * 5 / 2)
    s.finish(1, 200)  # the mean rises past the cap
    assert 1 <= rejected(s.tick(1001)).retry_after_s == 60


# ── turns and eviction ──────────────────────────────────────────────────────────────────────
def test_arrivals_a_b_a_b_are_served_a_a_b_b() -> None:
    s = scheduler("a", "b", max_loaded=1)
    ready(s, "a")
    actions = [a for rid, m in enumerate("abab") for a in s.arrive(rid, m, now=rid)]
    seen = settle(s, actions, now=10)
    assert dispatched(seen) == [0, 2, 1, 3]
    assert Unload("a", "evicted for b") in seen
    assert s.view("b").phase is Phase.READY and s.view("a").phase is Phase.UNLOADED


def test_a_model_serving_a_request_is_never_stopped() -> None:
    s = scheduler("a", "b", max_loaded=1)
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    assert s.arrive(2, "b", 2) == []  # a serves #1, older than b's #2: b waits its turn
    assert s.arrive(3, "a", 3) == []  # queued behind #1
    assert s.finish(1, 4) == [Dispatch(3, "a")]  # a's turn takes #3 along, then a drains
    assert s.view("a").draining
    assert s.arrive(4, "a", 5) == []  # a draining model dispatches nothing new
    assert s.finish(3, 6) == [Unload("a", "evicted for b")]
    assert s.view("a").phase is Phase.UNLOADING
    assert s.unloaded("a", 7) == [Load("b")]
    assert s.loaded("b", 8) == [Dispatch(2, "b")]
    # a's waiter makes it the next turn: b drains once its request ends, then a comes back
    assert s.finish(2, 9) == [Unload("b", "evicted for a")]
    assert s.unloaded("b", 10) == [Load("a")]
    assert s.loaded("a", 11) == [Dispatch(4, "a")]


def test_a_draining_model_leaves_free_slots_empty_until_its_last_request_ends() -> None:
    s = scheduler(ModelPolicy("a", max_concurrency=2), "b", max_loaded=1)
    ready(s, "a")
    s.arrive(1, "a", 1)
    s.arrive(2, "a", 1)
    s.arrive(3, "b", 3)
    s.arrive(4, "a", 4)
    assert s.finish(1, 5) == [Dispatch(4, "a")]  # #2 is older than b's #3: a keeps its turn
    assert s.finish(2, 6) == []  # now all of a's work is newer than #3: a drains
    assert s.arrive(5, "a", 7) == []  # a slot is free, but a drains
    view = s.view("a")
    assert view.draining and view.in_flight == 1 and view.queued == 1
    assert s.finish(4, 8) == [Unload("a", "evicted for b")]


def test_the_least_recently_used_idle_model_is_evicted_first() -> None:
    s = scheduler("a", "b", "c", max_loaded=2)
    ready(s, "a", "b", now=0)
    s.arrive(1, "a", 5)
    s.finish(1, 6)
    assert s.arrive(2, "c", 7) == [Unload("b", "evicted for c")]
    assert s.unloaded("b", 8) == [Load("c")]


def test_a_busy_model_whose_waiters_are_newer_is_evicted_before_one_with_older_waiters() -> None:
    s = scheduler("a", "b", "c", max_loaded=2)
    ready(s, "a", "b")
    s.arrive(1, "a", 1)  # a serves #1 (older than c's)
    s.arrive(2, "b", 2)
    s.arrive(3, "c", 3)  # c waits: neither a nor b has only newer requests
    waiting_for = s.view("c").waiting_for
    assert waiting_for == (
        "max_loaded 2 is reached and nothing can be evicted now: 'a' (serving requests older"
        " than those for 'c'), 'b' (serving requests older than those for 'c')"
    )
    s.arrive(4, "b", 4)
    assert s.finish(2, 5) == [Dispatch(4, "b")]  # b's #4 is newer than c's #3: b drains
    assert s.view("b").draining and not s.view("a").draining
    assert s.finish(4, 6) == [Unload("b", "evicted for c")]


def test_pinned_models_are_never_evicted_and_the_timeout_says_why() -> None:
    s = scheduler(ModelPolicy("p", pinned=True, ttl_s=5), "b", max_loaded=1, queue_timeout_s=60)
    ready(s, "p")
    assert s.arrive(1, "b", 1) == []
    assert s.tick(50) == []  # and no TTL unload either
    reject = rejected(s.tick(61))
    assert reject.status == 503
    assert reject.message == (
        "waited 60 s for model 'b' (unloaded); max_loaded 1 is reached and nothing can be"
        " evicted now: 'p' (pinned)"
    )
    assert s.view("p").phase is Phase.READY and s.view("p").ttl_left_s(61) is None


def test_a_manual_unload_waits_for_in_flight_and_works_for_pinned_models() -> None:
    s = scheduler(ModelPolicy("p", pinned=True))
    ready(s, "p")
    s.arrive(1, "p", 1)
    assert s.request_unload("p", 2) == []
    assert s.view("p").draining
    assert s.finish(1, 3) == [Unload("p", "requested")]
    assert s.unloaded("p", 4) == []
    assert s.view("p").phase is Phase.UNLOADED


def test_a_manual_load_called_off_by_an_unload_and_back() -> None:
    s = scheduler("a")
    ready(s, "a")
    s.arrive(1, "a", 1)
    s.request_unload("a", 2)
    assert s.request_load("a", 3) == []  # changed its mind before the stop began
    assert s.finish(1, 4) == [] and s.view("a").phase is Phase.READY


def test_a_manual_load_evicts_an_idle_model() -> None:
    s = scheduler("a", "b", max_loaded=1)
    ready(s, "a")
    assert s.request_load("b", 1) == [Unload("a", "evicted for b")]
    assert s.unloaded("a", 2) == [Load("b")]


def test_candidates_in_one_pass_claim_the_room_being_freed_in_turn_order() -> None:
    s = scheduler("a", "b", "c", "d", max_loaded=2)
    ready(s, "a", "b")
    assert s.arrive(1, "c", 1) == [Unload("a", "evicted for c")]
    assert s.arrive(2, "d", 2) == [Unload("b", "evicted for d")]  # a's slot is c's already
    assert s.unloaded("b", 3) == [Load("c")]  # the first slot freed goes to the first turn
    assert s.unloaded("a", 4) == [Load("d")]


def test_max_loaded_counts_a_model_that_is_still_unloading() -> None:
    s = scheduler("a", "b", max_loaded=1)
    ready(s, "a")
    assert s.request_unload("a", 1) == [Unload("a", "requested")]
    assert s.arrive(1, "b", 2) == []
    assert s.unloaded("a", 3) == [Load("b")]


# ── memory ──────────────────────────────────────────────────────────────────────────────────
def test_memory_budget_evicts_only_what_it_must() -> None:
    a, b = ModelPolicy("a", memory_mb=2000), ModelPolicy("b", memory_mb=7000)
    c = ModelPolicy("c", memory_mb=5000)
    s = scheduler(a, b, c, max_loaded=3, memory_budget_mb=10_000)
    ready(s, "a", "b")  # a is used least recently, but evicting it alone does not make room
    assert s.arrive(1, "c", 5) == [Unload("b", "evicted for c")]
    assert s.unloaded("b", 6) == [Load("c")]


def test_a_candidate_waits_when_pinned_models_hold_the_memory() -> None:
    p, b = ModelPolicy("p", pinned=True, memory_mb=600), ModelPolicy("b", memory_mb=500)
    s = scheduler(p, b, max_loaded=2, memory_budget_mb=1000)
    ready(s, "p")
    assert s.arrive(1, "b", 1) == []
    assert s.view("b").waiting_for == (
        "it needs 500 MB and 600 MB of the 1000 MB budget are held by models that cannot be"
        " evicted now: 'p' (pinned)"
    )


def test_a_model_bigger_than_the_budget_is_rejected_at_once_and_never_loaded() -> None:
    s = scheduler(ModelPolicy("big", memory_mb=12_000), memory_budget_mb=8000)
    reject = rejected(s.arrive(1, "big", 0))
    assert reject.status == 503 and reject.retry_after_s == 60
    assert "12000 MB" in reject.message and "8000 MB" in reject.message
    assert "cannot fit" in reject.message
    with pytest.raises(ConfigError, match="12000 MB"):
        s.request_load("big", 1)


def test_a_measured_memory_replaces_the_estimate() -> None:
    s = scheduler(
        ModelPolicy("a", memory_mb=1000), ModelPolicy("b", memory_mb=1000),
        max_loaded=2, memory_budget_mb=4000,
    )  # fmt: skip
    ready(s, "a")
    assert s.set_memory("a", 3500) == []
    assert s.view("a").memory_mb == 3500
    assert s.arrive(1, "b", 1) == [Unload("a", "evicted for b")]
    reject = rejected(s.set_memory("b", 5000))  # too big: its waiters cannot be served
    assert (reject.request_id, reject.status) == (1, 503) and "cannot fit" in reject.message
    assert s.unloaded("a", 2) == []  # and it is never loaded


# ── ttl, crashes, failures ──────────────────────────────────────────────────────────────────
def test_ttl_unloads_an_idle_model_counting_from_its_last_use() -> None:
    s = scheduler(ModelPolicy("a", ttl_s=30))
    ready(s, "a", now=0)
    assert s.next_deadline() == 30 and s.view("a").ttl_left_s(10) == 20
    s.arrive(1, "a", 10)
    assert s.next_deadline() is None and s.view("a").ttl_left_s(10) is None
    s.finish(1, 20)
    assert s.next_deadline() == 50
    assert s.tick(49) == []
    assert s.tick(50) == [Unload("a", "idle for 30 s (ttl)")]


def test_a_restarting_model_keeps_its_queue_and_serves_it_when_back() -> None:
    s = scheduler("a")
    ready(s, "a")
    s.arrive(1, "a", 1)
    assert s.restarting("a", 2) == []
    assert s.arrive(2, "a", 3) == []  # no second Load, no dispatch to a server that is down
    assert s.finish(1, 4) == []  # the proxy answered #1 with 502
    assert s.view("a").phase is Phase.LOADING
    assert s.loaded("a", 5) == [Dispatch(2, "a")]


def test_failed_rejects_the_queue_frees_the_slot_and_a_later_request_retries() -> None:
    s = scheduler("a", "b", max_loaded=1, failure_cooldown_s=10)
    assert s.arrive(1, "a", 0) == [Load("a")]
    s.arrive(2, "a", 0)
    s.arrive(3, "b", 0)
    actions = s.failed("a", "llama-server exited with code 1", 1)
    assert actions[-1] == Load("b")
    rejects = [a for a in actions if isinstance(a, Reject)]
    assert [(r.request_id, r.status) for r in rejects] == [(1, 503), (2, 503)]
    assert rejects[0].message == "model 'a' is unavailable: llama-server exited with code 1"
    assert s.view("a").phase is Phase.FAILED
    s.loaded("b", 2)
    s.finish(3, 3)
    assert s.arrive(4, "a", 11) == [Unload("b", "evicted for a")]
    assert s.unloaded("b", 12) == [Load("a")]


def test_a_failed_model_is_refused_during_its_cool_down_then_tried_once() -> None:
    """Issue 14.1: a model in error must not start a full load cycle per request: for
    failure_cooldown_s every request gets 503 with the reason at once, holding nothing; then
    one request gets one fresh attempt, whose waiters share it."""
    s = scheduler("bad", "good", max_loaded=1, failure_cooldown_s=30)
    assert s.arrive(1, "bad", 0) == [Load("bad")]
    s.failed("bad", "llama-server exited with code 1 while starting", 2)
    reject = rejected(s.arrive(2, "bad", 12))
    assert (reject.status, reject.retry_after_s) == (503, 20)
    assert reject.message == (
        "model 'bad' is unavailable: llama-server exited with code 1 while starting; llamaherd"
        " tries it again in 20 s, or at once when it is started by hand"
    )
    view = s.view("bad")
    assert (view.failure, view.retry_at) == ("llama-server exited with code 1 while starting", 32)
    assert s.arrive(3, "good", 13) == [Load("good")]  # the slot is free for others
    s.loaded("good", 14)
    assert s.arrive(4, "bad", 33) == []  # one fresh attempt, once "good" is idle...
    assert s.finish(3, 34) == [Unload("good", "evicted for bad")]
    assert s.arrive(5, "bad", 35) == []  # ...which later arrivals wait for
    assert s.unloaded("good", 36) == [Load("bad")]
    s.loaded("bad", 37)
    assert s.view("bad").failure is None


def test_a_failed_start_answers_at_once_and_keeps_its_room_only_while_nobody_needs_it() -> None:
    """Issue 14.1: a model whose start failed held the only slot through the supervisor's
    whole backoff (about 31 s) while requests for the others waited."""
    s = scheduler("bad", "good", max_loaded=1, failure_cooldown_s=30)
    assert s.arrive(1, "bad", 0) == [Load("bad")]
    actions = s.start_failed("bad", "llama-server exited with code 1 while starting", 1, 1)
    assert rejected(actions).message == (
        "model 'bad' is unavailable: llama-server exited with code 1 while starting"
    )
    refused = rejected(s.arrive(2, "bad", 1.5))
    assert (refused.status, refused.retry_after_s) == (503, 1)
    assert refused.message.endswith("; its llama-server is retried in 1 s")
    assert s.view("bad").phase is Phase.LOADING  # nobody else waits: the retry keeps its room
    assert s.arrive(3, "good", 3) == [Unload("bad", "evicted for good")]
    assert s.unloaded("bad", 4) == [Load("good")]
    view = s.view("bad")
    assert (view.phase, view.retry_at) == (Phase.FAILED, 34)  # the cool-down begins
    assert "tries it again in 30 s" in rejected(s.arrive(4, "bad", 4)).message


def test_a_failed_start_that_then_comes_up_serves_again() -> None:
    s = scheduler("a")
    s.request_load("a", 0)
    s.start_failed("a", "exited", 1, 1)
    assert s.loaded("a", 2) == []
    assert s.arrive(1, "a", 3) == [Dispatch(1, "a")]
    assert s.view("a").failure is None


def test_a_manual_load_or_restart_calls_off_the_cool_down() -> None:
    s = scheduler("a", failure_cooldown_s=30)
    s.arrive(1, "a", 0)
    s.failed("a", "no", 1)
    assert s.request_load("a", 2) == [Load("a")]
    s.failed("a", "no", 3)
    assert s.request_restart("a", 4) == [Load("a")]


def test_the_true_reason_while_a_model_loads() -> None:
    """Issue 14.1: a candidate behind a model that is still loading was told that 'every slot
    is held by models serving requests older than its own', though nothing was served."""
    s = scheduler("slow", "b", max_loaded=1, queue_timeout_s=30)
    assert s.request_load("slow", 0) == [Load("slow")]
    s.arrive(2, "b", 1)
    reject = rejected(s.tick(31))
    assert reject.message == (
        "waited 30 s for model 'b' (unloaded); max_loaded 1 is reached and nothing can be"
        " evicted now: 'slow' (loading)"
    )


# ── control: stop, start, restart ───────────────────────────────────────────────────────────
def test_stop_drains_then_refuses_until_started() -> None:
    """Issue 14.2: a stop lets requests in flight finish, fails the queued ones with the
    reason, stops the server, and the next request does not load it again."""
    s = scheduler("a")
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    s.arrive(2, "a", 1)
    actions = s.request_stop("a", "stopped by an operator", 2)
    assert rejected(actions).request_id == 2
    assert actions[0].message == (  # type: ignore[union-attr]
        "model 'a' is stopped (stopped by an operator); start or load it to serve it again"
    )
    assert s.view("a").phase is Phase.READY and s.view("a").draining
    assert s.finish(1, 3) == [Unload("a", "requested")]
    assert s.unloaded("a", 4) == []
    refused = rejected(s.arrive(3, "a", 5))
    assert (refused.status, refused.retry_after_s) == (503, 60)
    assert s.request_load("a", 6) == [Load("a")]  # a start
    s.loaded("a", 7)
    assert s.arrive(4, "a", 8) == [Dispatch(4, "a")]


def test_stop_of_a_loading_model_stops_it_at_once() -> None:
    s = scheduler("a")
    assert s.arrive(1, "a", 0) == [Load("a")]
    actions = s.request_stop("a", "stopped", 1)
    assert [type(a) for a in actions] == [Reject, Unload]
    assert s.loaded("a", 2) == []  # it came up as the stop began: the stop goes on
    assert s.view("a").phase is Phase.UNLOADING


def test_stop_of_a_failed_model_stops_its_supervisor_too() -> None:
    s = scheduler("a")
    s.arrive(1, "a", 0)
    s.failed("a", "no", 1)
    assert s.request_stop("a", "stopped", 2) == [Unload("a", "requested")]
    assert s.unloaded("a", 3) == []
    assert rejected(s.arrive(2, "a", 100)).message.startswith("model 'a' is stopped")


def test_start_respects_max_loaded_and_never_stops_a_busy_model() -> None:
    """Issue 14.3: a start while another model streams, with max_loaded 1, waited for nothing
    and ran a second server. Now it takes its turn: the busy model finishes first."""
    s = scheduler("a", "b", max_loaded=1)
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    assert s.request_load("b", 2) == []
    assert s.view("b").load_requested
    assert s.finish(1, 3) == [Unload("a", "evicted for b")]
    assert s.unloaded("a", 4) == [Load("b")]


def test_start_of_a_model_too_big_for_the_budget_is_refused() -> None:
    s = scheduler(ModelPolicy("big", memory_mb=900), memory_budget_mb=500)
    with pytest.raises(ConfigError, match="cannot fit"):
        s.request_load("big", 0)
    with pytest.raises(ConfigError, match="cannot fit"):
        s.request_restart("big", 0)


def test_restart_drains_stops_and_loads_again_while_requests_wait() -> None:
    s = scheduler("a", "b", max_loaded=2)
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    assert s.request_restart("a", 2) == []
    assert s.arrive(2, "a", 3) == []  # waits for the new server
    assert s.finish(1, 4) == [Unload("a", "restart requested")]
    assert s.unloaded("a", 5) == [Load("a")]
    assert s.loaded("a", 6) == [Dispatch(2, "a")]


def test_restart_of_a_model_that_is_not_running_loads_it() -> None:
    s = scheduler("a")
    assert s.request_restart("a", 0) == [Load("a")]


# ── a reload: models added, removed, re-policed; limits changed ───────────────────────────
def test_a_retired_model_finishes_in_flight_fails_its_queue_then_goes() -> None:
    s = scheduler("a", "b", max_loaded=2)
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    s.arrive(2, "a", 1)
    actions = s.retire("a", 2)
    assert rejected(actions).message.startswith("model 'a' is stopped (removed from the config)")
    assert s.finish(1, 3) == [Unload("a", "removed from the config")]
    assert s.unloaded("a", 4) == []
    assert not s.has("a")
    s.retire("b", 5)  # nothing ran: gone at once
    assert not s.has("b")


def test_a_model_back_in_the_config_while_retiring_stays() -> None:
    s = scheduler("a")
    ready(s, "a")
    s.arrive(1, "a", 1)
    s.retire("a", 2)
    assert s.restore("a", 3) == []
    assert s.finish(1, 4) == []  # no unload: it stays
    assert s.arrive(2, "a", 5) == [Dispatch(2, "a")]


def test_an_added_model_is_served_and_a_new_policy_applies_at_once() -> None:
    s = scheduler("a")
    assert s.add_model(ModelPolicy("b"), 0) == []
    assert s.arrive(1, "b", 1) == [Load("b")]
    with pytest.raises(ValueError, match="listed twice"):
        s.add_model(ModelPolicy("b"), 1)
    s.loaded("b", 2)
    s.update_policy(ModelPolicy("b", max_concurrency=2), 3, slots=2)
    assert s.view("b").max_concurrency == 2
    s.update_policy(ModelPolicy("b", pinned=True), 4, slots=None)  # a learned count stays
    assert s.view("b").max_concurrency == 2 and s.view("b").pinned


def test_lower_limits_unload_idle_models_and_never_a_busy_one() -> None:
    s = scheduler("a", "b", "c", max_loaded=3)
    ready(s, "a", "b", "c")
    s.arrive(1, "c", 1)  # c is busy
    actions = s.set_limits(Limits(max_loaded=1), 2)
    assert actions == [Unload("a", "max_loaded is 1"), Unload("b", "max_loaded is 1")]
    assert s.view("c").phase is Phase.READY


def test_a_relaunch_ends_the_cool_down_of_the_old_launch() -> None:
    s = scheduler("a", failure_cooldown_s=30)
    s.arrive(1, "a", 0)
    s.failed("a", "no", 1)
    s.relaunched("a", 2)
    assert s.view("a").phase is Phase.UNLOADED
    assert s.arrive(2, "a", 3) == [Load("a")]


# ── servers that come up without a Load ─────────────────────────────────────────────────────
def test_a_server_that_fits_is_claimed_and_one_that_does_not_is_not() -> None:
    s = scheduler("a", "b", max_loaded=1)
    assert s.claim("a", 0) == []
    assert s.view("a").phase is Phase.READY
    assert s.claim("b", 1) is None  # it would break max_loaded: the owner stops it
    assert s.view("b").phase is Phase.UNLOADED
    assert s.request_stop("a", "stopped", 2) == [Unload("a", "requested")]
    assert s.claim("a", 3) == []  # held (being unloaded): nothing changes
    assert s.view("a").phase is Phase.UNLOADING


def test_a_stopped_model_is_not_claimed() -> None:
    s = scheduler("a")
    s.request_stop("a", "stopped", 0)
    assert s.claim("a", 1) is None


# ── the memory budget, one rule before and after loading ────────────────────────────────────
def test_a_model_measured_over_the_budget_serves_what_it_has_then_unloads() -> None:
    """Issue 14.4: with a budget between the estimate and the measured size, one model was
    refused as too big while the other stayed loaded over budget for ever."""
    a, b = ModelPolicy("a", memory_mb=5), ModelPolicy("b", memory_mb=5)
    s = scheduler(a, b, max_loaded=2, memory_budget_mb=10)
    ready(s, "a")
    assert s.arrive(1, "a", 1) == [Dispatch(1, "a")]
    assert s.set_memory("a", 20) == []  # busy: it finishes its request first
    assert "more than the whole memory budget" in rejected(s.arrive(2, "a", 2)).message
    assert s.finish(1, 3) == [Unload("a", "measured at 20 MB, more than the memory budget")]
    s.unloaded("a", 4)
    assert "needs 20 MB" in rejected(s.arrive(3, "a", 5)).message
    ready(s, "b", now=6)
    assert s.set_memory("b", 20) == [Unload("b", "measured at 20 MB, more than the memory budget")]


def test_measured_sizes_that_break_the_budget_evict_idle_models_first() -> None:
    a, b, c = (ModelPolicy(m, memory_mb=30) for m in "abc")
    s = scheduler(a, b, c, max_loaded=3, memory_budget_mb=100)
    ready(s, "a", "b")
    s.arrive(1, "a", 1)  # a is busy, b idle
    assert s.set_memory("a", 60) == []  # 90 of 100: fits
    reason = "the loaded models' measured memory exceeds the 100 MB budget"
    assert s.set_memory("a", 80) == [Unload("b", reason)]
    assert s.view("a").phase is Phase.READY


# ── bookkeeping ─────────────────────────────────────────────────────────────────────────────
def test_cancel_removes_a_waiter_and_ignores_the_rest() -> None:
    s = scheduler("a")
    ready(s, "a")
    s.arrive(1, "a", 0)
    s.arrive(2, "a", 0)
    s.arrive(3, "a", 0)
    assert s.position(3) == 2
    assert s.cancel(2, 1) == []
    assert s.position(3) == 1
    assert s.cancel(99, 1) == [] and s.cancel(1, 1) == []  # unknown, in flight
    assert s.finish(1, 2) == [Dispatch(3, "a")]


def test_unknown_models_raise_key_error() -> None:
    s = scheduler("a")
    with pytest.raises(KeyError):
        s.arrive(1, "nope", 0)
    for event in (s.loaded, s.unloaded, s.restarting, s.request_load, s.request_unload):
        with pytest.raises(KeyError):
            event("nope", 0)
    with pytest.raises(KeyError):
        s.view("nope")


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Limits(max_loaded=0)
    with pytest.raises(ValueError):
        ModelPolicy("a", max_concurrency=0)
    with pytest.raises(ValueError, match="twice"):
        scheduler("a", "a")
    s = scheduler("a")
    s.arrive(1, "a", 0)
    with pytest.raises(ValueError, match="already"):
        s.arrive(1, "a", 0)


def test_two_busy_streams_alternate_and_neither_starves() -> None:
    """a gets a request every second and, with 2 s per request, is never idle on its own; b gets
    one every 12 s. Loads and unloads take half a second. b must still get turns (it would wait
    for ever if only idle models were evicted), and a must get them back."""
    s = scheduler(
        ModelPolicy("a", max_concurrency=4), "b",
        max_loaded=1, queue_depth=1000, queue_timeout_s=60,
    )  # fmt: skip
    takes = {"a": 2.0, "b": 0.5}
    answers: list[tuple[float, int, Callable[[float], list[Action]]]] = []  # the owner's to-do
    order = itertools.count()
    arrived: dict[int, float] = {}
    waits: dict[str, list[float]] = {"a": [], "b": []}
    served: list[str] = []

    def later(when: float, answer: Callable[[float], list[Action]]) -> None:
        heapq.heappush(answers, (when, next(order), answer))

    def carry_out(actions: list[Action], now: float) -> None:
        for action in actions:
            match action:
                case Dispatch(rid, model):
                    waits[model].append(now - arrived[rid])
                    served.append(model)
                    later(now + takes[model], partial(s.finish, rid))
                case Load(model):
                    later(now + 0.5, partial(s.loaded, model))
                case Unload(model, _):
                    later(now + 0.5, partial(s.unloaded, model))
                case Reject() as reject:
                    pytest.fail(f"nothing should be rejected: {reject}")

    for step in range(4 * 600):  # ten minutes in quarter seconds
        now = step / 4
        while answers and answers[0][0] <= now:
            carry_out(heapq.heappop(answers)[2](now), now)
        for rid, model, every in ((2 * step, "a", 4), (2 * step + 1, "b", 48)):
            if step % every == 0:
                arrived[rid] = now
                carry_out(s.arrive(rid, model, now), now)
    switches = sum(1 for x, y in itertools.pairwise(served) if x != y)
    assert switches >= 80  # about one turn each per request for b
    assert max(waits["a"]) <= 10 and max(waits["b"]) <= 10
    assert len(waits["a"]) >= 595 and len(waits["b"]) == 50


# ── random sequences of events ──────────────────────────────────────────────────────────────
MODELS = ("a", "b", "c")


class SchedulerMachine(RuleBasedStateMachine):
    """Random events with the owner's obvious reactions; the invariants hold after each step,
    and once arrivals stop and the owner answers everything, every queue drains."""

    @initialize(
        max_loaded=st.integers(1, 3),
        budget=st.sampled_from([None, 100.0, 150.0]),
        depth=st.integers(0, 4),
        cooldown=st.sampled_from([0.0, 15.0]),
        policies=st.tuples(*[
            st.builds(
                ModelPolicy,
                id=st.just(m),
                max_concurrency=st.integers(1, 3),
                pinned=st.booleans(),
                ttl_s=st.sampled_from([None, 5.0, 20.0]),
                memory_mb=st.sampled_from([0.0, 40.0, 60.0, 120.0]),
            )
            for m in MODELS
        ]),
    )  # fmt: skip
    def setup(
        self,
        max_loaded: int,
        budget: float | None,
        depth: int,
        cooldown: float,
        policies: tuple[ModelPolicy, ...],
    ) -> None:
        self.limits = Limits(
            max_loaded, budget, depth, queue_timeout_s=30.0, failure_cooldown_s=cooldown
        )
        self.policies = {p.id: p for p in policies}
        self.s = Scheduler(policies, self.limits)
        self.now, self.next_id = 0.0, 0
        self.waiting: dict[int, str] = {}  # queued, by our own record
        self.in_flight: dict[int, str] = {}
        self.ended: set[int] = set()
        self.loading: set[str] = set()  # owes loaded() or failed()
        self.unloading: set[str] = set()  # owes unloaded()

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Dispatch(rid, model):
                    assert self.waiting.pop(rid) == model
                    self.in_flight[rid] = model
                case Reject(rid, model, status, retry_after, _):
                    assert rid not in self.ended and rid not in self.in_flight
                    assert status in (429, 503) and 1 <= retry_after <= 60
                    self.waiting.pop(rid, None)
                    self.ended.add(rid)
                case Load(model):
                    assert model not in self.loading, "a second Load"
                    assert model not in self.unloading, "a Load before the Unload's answer"
                    self.loading.add(model)
                case Unload(model, reason):
                    assert model not in self.in_flight.values(), "stopped a busy server"
                    assert model not in self.unloading
                    assert reason in ("requested", "restart requested") or not (
                        self.policies[model].pinned
                    )
                    # A stop while loading: the owner stops the start; unloaded() answers.
                    self.loading.discard(model)
                    self.unloading.add(model)

    def advance(self, dt: int) -> float:
        self.now += dt
        return self.now

    @rule(model=st.sampled_from(MODELS), dt=st.integers(0, 10))
    def arrive(self, model: str, dt: int) -> None:
        rid, self.next_id = self.next_id, self.next_id + 1
        self.waiting[rid] = model
        self.apply(self.s.arrive(rid, model, self.advance(dt)))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), dt=st.integers(0, 10))
    def finish(self, data: st.DataObject, dt: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.in_flight)))
        del self.in_flight[rid]
        self.ended.add(rid)
        self.apply(self.s.finish(rid, self.advance(dt)))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from([*sorted(self.waiting), 10_000]))
        if self.waiting.pop(rid, None) is not None:
            self.ended.add(rid)
        self.apply(self.s.cancel(rid, self.now))

    @precondition(lambda self: self.loading)
    @rule(data=st.data(), ok=st.booleans(), dt=st.integers(0, 10))
    def answer_load(self, data: st.DataObject, ok: bool, dt: int) -> None:
        model = data.draw(st.sampled_from(sorted(self.loading)))
        self.loading.remove(model)
        if ok:
            self.apply(self.s.loaded(model, self.advance(dt)))
        else:
            self.apply(self.s.failed(model, "gave up", self.advance(dt)))

    @precondition(lambda self: self.unloading)
    @rule(data=st.data(), dt=st.integers(0, 10))
    def answer_unload(self, data: st.DataObject, dt: int) -> None:
        model = data.draw(st.sampled_from(sorted(self.unloading)))
        self.unloading.remove(model)
        self.apply(self.s.unloaded(model, self.advance(dt)))

    @rule(model=st.sampled_from(MODELS))
    def crash(self, model: str) -> None:
        if self.s.view(model).phase is Phase.READY:
            self.loading.add(model)  # the supervisor restarts it and will answer
            self.apply(self.s.restarting(model, self.now))

    @precondition(lambda self: self.loading)
    @rule(data=st.data(), retry_in=st.integers(0, 16))
    def start_fails(self, data: st.DataObject, retry_in: int) -> None:
        """A start failed and the supervisor backs off; it still owes loaded() or failed()."""
        model = data.draw(st.sampled_from(sorted(self.loading)))
        self.apply(self.s.start_failed(model, "exited while starting", retry_in, self.now))

    @rule(dt=st.integers(0, 40))
    def tick(self, dt: int) -> None:
        self.apply(self.s.tick(self.advance(dt)))

    @rule(
        model=st.sampled_from(MODELS),
        action=st.sampled_from(["load", "unload", "stop", "restart"]),
        dt=st.integers(0, 5),
    )
    def control(self, model: str, action: str, dt: int) -> None:
        """The operator's controls (REST, CLI, dashboard): every one an event here."""
        now = self.advance(dt)
        if action == "unload":
            self.apply(self.s.request_unload(model, now))
            return
        if action == "stop":
            self.apply(self.s.request_stop(model, "stopped by an operator", now))
            assert self.s.view(model).queued == 0
            return
        request = self.s.request_load if action == "load" else self.s.request_restart
        try:
            self.apply(request(model, now))
        except ConfigError:
            assert self.limits.memory_budget_mb is not None
            assert self.s.view(model).memory_mb > self.limits.memory_budget_mb

    @precondition(lambda self: self.limits.memory_budget_mb is not None)
    @rule(model=st.sampled_from(MODELS), mb=st.sampled_from([20.0, 70.0, 160.0]))
    def measure(self, model: str, mb: float) -> None:
        """A loaded server's measured memory replaces its estimate."""
        if self.s.view(model).phase is Phase.READY:
            self.apply(self.s.set_memory(model, mb))

    @invariant()
    def capacity_and_queues_hold(self) -> None:
        views = [self.s.view(m) for m in MODELS]
        held = [v for v in views if v.phase in (Phase.LOADING, Phase.READY, Phase.UNLOADING)]
        assert len(held) <= self.limits.max_loaded
        budget = self.limits.memory_budget_mb
        if budget is not None and sum(v.memory_mb for v in held) > budget:
            # Only a measurement breaks it, and then every model that could give memory back
            # is already on its way out: what is left is busy, pinned, or loading.
            for v in held:
                idle = v.phase is Phase.READY and not (v.in_flight or v.queued or v.pinned)
                assert not idle or v.draining, f"{v.id} idle while over budget"
        for v in views:
            if v.queued:
                # Nobody waits while a slot is free for them.
                assert not (v.phase is Phase.READY and not v.draining) or (
                    v.in_flight >= v.max_concurrency
                ), f"{v.id} has a free slot and a queue"
                assert v.stopped is None, "a stopped model keeps a queue"
            if v.stopped is not None:
                assert v.queued == 0
            assert v.in_flight <= v.max_concurrency
            assert v.queued <= self.limits.queue_depth
            assert v.in_flight == sum(1 for m in self.in_flight.values() if m == v.id)
            assert v.queued == sum(1 for m in self.waiting.values() if m == v.id)

    def answer_everything(self) -> None:
        for _ in range(10_000):
            if self.in_flight:
                self.finish_one()
            elif self.loading:
                model = min(self.loading)
                self.loading.remove(model)
                self.apply(self.s.loaded(model, self.advance(1)))
            elif self.unloading:
                model = min(self.unloading)
                self.unloading.remove(model)
                self.apply(self.s.unloaded(model, self.advance(1)))
            else:
                return
        pytest.fail("the owner answered 10,000 times and the scheduler still asks for more")

    def finish_one(self) -> None:
        rid = min(self.in_flight)
        del self.in_flight[rid]
        self.ended.add(rid)
        self.apply(self.s.finish(rid, self.advance(1)))

    def teardown(self) -> None:
        if not hasattr(self, "s"):
            return
        self.answer_everything()
        if not any(p.pinned for p in self.policies.values()):
            assert not self.waiting, f"waiting for ever without a pinned model: {self.waiting}"
        self.apply(self.s.tick(self.advance(31)))  # what is left times out
        self.answer_everything()
        assert not self.waiting
        assert self.ended == set(range(self.next_id)), "a request was never answered"


SchedulerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_random_event_sequences = SchedulerMachine.TestCase
