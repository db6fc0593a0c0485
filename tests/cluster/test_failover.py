"""Failover at the front: a request moves on to the next replica only when it cannot have reached
a llama-server, and a peer that refused a connection leaves routing at once. A worker and a
front in this process (tests/cluster/inprocess.py): `gone` is a peer nothing listens on, made to
look like it serves a model so that the front tries it first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llamaherd.cluster.peers import Peer
from llamaherd.gateway.scheduler import Phase
from tests.cluster.inprocess import Pair

pytestmark = pytest.mark.timeout(60)


def ready(model: str) -> dict[str, Any]:
    """A model entry as a peer's llamaModels would show it: loaded, with a free slot."""
    return {"id": model, "phase": "ready", "state": "ready", "inFlight": 0, "maxConcurrency": 1}


def seems_up(link: dict[str, Any], models: dict[str, Any]) -> None:
    """Make a peer link look reachable with `models`, as if its feed had just said so (its
    failed probes forgotten, so one more does not take it out before the request is sent)."""
    link.update(models=models, reachable=True, problem=None, _failures=0)


async def test_a_peer_that_refuses_the_connection_leaves_routing_and_the_next_serves(
    pair: Pair,
) -> None:
    assert pair.front.cluster is not None
    gone = pair.front.cluster.links["gone"]
    # As if `gone` had served m1 until a moment ago: ready with a free slot, it ranks before
    # w1's cold m1, and its probes have not failed yet.
    seems_up(gone.__dict__, {"m1": ready("m1")})
    assert [r.host for r in pair.front.cluster.plan("m1", None)] == ["gone", "w1"]

    async with pair.front.http() as http:
        answer = await http.post("/v1/completions", json={"model": "m1", "prompt": "x"})
    assert answer.status_code == 200, answer.text
    assert pair.worker.herd.view("m1").phase is Phase.READY  # served by w1
    assert not gone.reachable and "refused a connection" in (gone.problem or "")
    assert [r.host for r in pair.front.cluster.plan("m1", None)] == ["w1"]


async def test_when_every_replica_refuses_the_client_gets_a_503_naming_them(pair: Pair) -> None:
    assert pair.front.cluster is not None
    gone = pair.front.cluster.links["gone"]
    seems_up(gone.__dict__, {"gone-only": ready("gone-only")})
    async with pair.front.http() as http:
        answer = await http.post("/v1/completions", json={"model": "gone-only", "prompt": "x"})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    message = answer.json()["error"]["message"]
    assert "gone-only" in message and "gone (refused a connection" in message


async def test_a_peer_that_no_longer_has_the_model_sends_the_request_on(pair: Pair) -> None:
    """Its list was a moment old: its 404 comes before any byte, so the next replica (here,
    the front's own copy) serves the request."""
    assert pair.front.cluster is not None
    w1 = pair.front.cluster.links["w1"]
    w1.models = {**w1.models, "here": ready("here")}  # w1 has no model "here"
    assert [r.host for r in pair.front.cluster.plan("here", "here")] == ["w1", ""]

    async with pair.front.http() as http:
        answer = await http.post("/v1/completions", json={"model": "here", "prompt": "x"})
    assert answer.status_code == 200, answer.text
    assert pair.front.herd.view("here").phase is Phase.READY


async def test_a_peer_that_drops_a_request_leaves_routing_at_once(pair: Pair) -> None:
    """As a worker killed with keep-alive connections open: the request was sent, so it fails
    (it may have reached a llama-server), and the peer leaves routing for the next ones."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()  # the head read, no answer

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert pair.front.cluster is not None
    gone = pair.front.cluster.links["gone"]
    gone.peer = Peer("gone", f"http://127.0.0.1:{port}")
    seems_up(gone.__dict__, {"m1": ready("m1")})
    async with server, pair.front.http() as http:
        answer = await http.post("/v1/completions", json={"model": "m1", "prompt": "x"})
    assert answer.status_code == 502
    assert "closed the connection" in answer.json()["error"]["message"]
    assert not gone.reachable and "failed a request" in (gone.problem or "")
    assert [r.host for r in pair.front.cluster.plan("m1", None)] == ["w1"]
