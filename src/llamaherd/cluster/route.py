"""The front's door: in front of the gateway route, for llamaherds that have peers.

For an inference request it reads the body once, finds the model's replicas (here and on the
peers), and hands the request to the best one: this llamaherd's own gateway route (with the
body replayed), or a peer (see `Cluster.forward`), moving on to the next replica only when the
request cannot have reached a llama-server. `/v1/models` lists every model once, with its
replicas. A request that a front already forwarded (the hop header) is served here or refused,
never forwarded again: two fronts that list each other cannot bounce a request between them.

Without peers this class is not in the chain at all: a single llamaherd pays nothing for it.
"""

from __future__ import annotations

import json
from typing import Any

from llamaherd.cluster.front import Cluster, send_last_held, send_no_replica
from llamaherd.cluster.peers import HOP_HEADER
from llamaherd.gateway.asgi import Message, Receive, Scope, Send
from llamaherd.gateway.registry import UnknownModelError
from llamaherd.gateway.route import (
    ADMIN_SCOPE_KEY,
    INFERENCE_PATHS,
    MODEL_LIST_PATHS,
    GatewayRoute,
    send_json,
)

_HOP = HOP_HEADER.encode()


class ClusterRoute:
    def __init__(self, gateway: GatewayRoute, cluster: Cluster) -> None:
        self.gateway = gateway
        self.cluster = cluster

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _forwarded(scope):
            path, method = scope["path"], scope["method"]
            if path in INFERENCE_PATHS and method == "POST":
                await self._inference(scope, receive, send)
                return
            if path in MODEL_LIST_PATHS and method in ("GET", "HEAD"):
                await self._models(scope, send)
                return
        await self.gateway(scope, receive, send)

    async def _inference(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self.gateway.read_body(receive, send)
        if body is None:
            return
        name = _model_name(body)
        replay = _Replay(body, receive)
        if name is _UNREADABLE or not self.cluster.knows(name):
            await self.gateway(scope, replay, send)  # its own models, and its own 400s/404s
            return
        local_id = self._local_id(name)
        tried: set[str] = set()
        held = None
        # The best replica not tried yet, ranked again after each refusal: a peer that refused
        # the connection has left routing, and the others' queues may have moved meanwhile.
        while plan := [r for r in self.cluster.plan(name, local_id) if r.host not in tried]:
            replica = plan[0]
            if replica.local:
                await self.gateway(scope, replay, send)
                return
            tried.add(replica.host)
            outcome = await self.cluster.forward(replica, scope, receive, send, body)
            if outcome.held is not None:
                held = outcome.held  # its 404/429/503: sent only if no other replica serves
            elif not outcome.refused:
                return
        if held is not None:
            await send_last_held(send, held)
        else:
            await send_no_replica(send, self.cluster.refusal(name, local_id))

    def _local_id(self, name: str | None) -> str | None:
        try:
            return self.gateway.herd.registry.resolve(name).id
        except UnknownModelError:
            return None

    async def _models(self, scope: Scope, send: Send) -> None:
        await send_json(send, self.cluster.listing(admin=scope.get(ADMIN_SCOPE_KEY, True)))


_UNREADABLE: Any = object()


def _model_name(body: bytes) -> Any:
    """The body's "model" (None when it names none), or _UNREADABLE for a body the gateway
    route must refuse itself (not JSON, not an object, "model" not a string)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return _UNREADABLE
    if not isinstance(payload, dict):
        return _UNREADABLE
    name = payload.get("model")
    return name if isinstance(name, str | None) else _UNREADABLE


def _forwarded(scope: Scope) -> bool:
    return any(key == _HOP for key, _ in scope["headers"])


class _Replay:
    """receive() for the gateway route after the body was read here: the body once, then the
    client's own receive (which tells of a disconnect)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()
