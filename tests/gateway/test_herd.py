"""The herd, the scheduler's one owner, with fake llama-servers: events in, effects out."""

from __future__ import annotations

import asyncio

import pytest

from llamaherd.gateway.scheduler import Dispatch, Phase, Reject
from llamaherd.supervisor.states import Status
from tests.conftest import HerdFactory
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)


async def test_requests_load_their_model_and_evict_the_other(make_herd: HerdFactory) -> None:
    herd = make_herd(max_concurrency=1)
    first = herd.submit("a")
    assert isinstance(await first.decision, Dispatch)
    assert herd.backends["a"].service.get_state().status is Status.READY
    herd.end(first)

    second = herd.submit("b")
    assert isinstance(await second.decision, Dispatch)
    assert herd.view("a").phase is Phase.UNLOADED
    assert herd.backends["a"].service.get_state().status is Status.INITIAL
    herd.end(second)


async def test_a_server_started_behind_the_schedulers_back_serves_at_once(
    make_herd: HerdFactory,
) -> None:
    herd = make_herd(ids=("a",), max_concurrency=1)
    await herd.backends["a"].service.start()  # what POST /api/llama/start does

    await until(lambda: herd.view("a").phase is Phase.READY)
    ticket = herd.submit("a")
    assert isinstance(ticket.decision.result(), Dispatch)  # no wait for a load
    herd.end(ticket)


async def test_unloading_a_model_whose_server_is_already_stopped_completes(
    make_herd: HerdFactory,
) -> None:
    herd = make_herd(ids=("a",), max_concurrency=1)
    herd.load("a")
    await until(lambda: herd.view("a").phase is Phase.READY)
    herd.stop("a")  # what POST /api/llama/stop does
    await until(lambda: herd.view("a").phase is Phase.UNLOADED)
    assert herd.backends["a"].service.get_state().status is Status.INITIAL

    herd.load("a")
    await until(lambda: herd.view("a").phase is Phase.READY)
    herd.unload("a")
    await until(lambda: herd.view("a").phase is Phase.UNLOADED)


async def test_an_unload_right_after_a_load_stops_the_server_the_load_starts(
    make_herd: HerdFactory,
) -> None:
    """The load's start is spawned but has not run when the unload comes: its supervisor still
    says `initial`. The stop must still follow the start (not be taken as done already), or
    the server comes up while the scheduler waits for a stop that nobody sent."""
    herd = make_herd(ids=("a",), max_concurrency=1)
    for _ in range(3):
        herd.load("a")
        herd.unload("a")  # the same tick: the start has not begun
    await until(lambda: herd.view("a").phase is Phase.UNLOADED)
    await until(lambda: herd.backends["a"].service.get_state().status is Status.INITIAL)

    herd.load("a")
    herd.unload("a")
    herd.load("a")
    await until(lambda: herd.view("a").phase is Phase.READY)
    assert herd.backends["a"].service.get_state().status is Status.READY
    await asyncio.sleep(0.3)  # nothing stops it behind the scheduler's back
    assert herd.view("a").phase is Phase.READY


async def test_a_client_that_leaves_while_queued_frees_its_place(make_herd: HerdFactory) -> None:
    herd = make_herd(ids=("a",), max_concurrency=1, queue_depth=1)
    busy = herd.submit("a")
    assert isinstance(await busy.decision, Dispatch)
    queued = herd.submit("a")
    assert herd.position(queued) == 1
    overflow = herd.submit("a")
    assert isinstance(await overflow.decision, Reject) and overflow.decision.result().status == 429
    herd.end(overflow)

    herd.end(queued)  # the client left
    assert herd.view("a").queued == 0
    again = herd.submit("a")
    assert herd.position(again) == 1
    herd.end(busy)
    assert isinstance(await again.decision, Dispatch)
    herd.end(again)


async def test_queue_timeout_rejects_with_503(make_herd: HerdFactory) -> None:
    herd = make_herd(ids=("a",), max_concurrency=1, queue_timeout_s=1.5)
    busy = herd.submit("a")
    assert isinstance(await busy.decision, Dispatch)
    waiting = herd.submit("a")
    decision = await waiting.decision
    assert isinstance(decision, Reject)
    assert decision.status == 503
    assert decision.retry_after_s >= 1
    herd.end(waiting)
    herd.end(busy)


async def test_views_follow_changes(make_herd: HerdFactory) -> None:
    herd = make_herd(ids=("a",), max_concurrency=1)
    changes = 0

    def count() -> None:
        nonlocal changes
        changes += 1

    herd.on_change(count)
    ticket = herd.submit("a")
    await ticket.decision
    herd.end(ticket)
    assert changes >= 3  # queued, loading..., dispatched, ended
    backend, view, state = herd.views()[0]
    assert backend.spec.id == "a" and view.phase is Phase.READY and state.status is Status.READY
