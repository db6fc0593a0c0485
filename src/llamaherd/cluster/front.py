"""The front: this llamaherd's own models and its peers' as one service.

`Cluster` holds a `PeerLink` per peer (listed in `peers`, or found through `peers_dns`), and
answers three questions for the gateway route: which models there are (`listing`, for
/v1/models: every model once, with its replicas), where a request for one should go
(`plan`: the replicas ranked, see routing.py), and how to send it to a peer (`forward`).

Failover never generates twice: a request goes on to the next replica only when it cannot have
reached a llama-server (the peer refused the connection, or answered 404, 429 or 503 before any
byte of an answer). Once an answer has begun, a failure ends that request (a 502, or an error
event in its stream), as for a local model. A peer that refused a connection, or lost one,
leaves routing at once (see `PeerLink.failed_request`), so the requests that follow do not
knock on it too; its next good probe brings it back.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from llamaherd.cluster.dns import SrvTarget, SrvWatcher
from llamaherd.cluster.peers import HOP_HEADER, Peer, PeerLink
from llamaherd.cluster.routing import LOCAL, Replica, rank
from llamaherd.gateway.asgi import Receive, Scope, Send
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.relay import RelayOutcome, relay
from llamaherd.gateway.replies import send_error
from llamaherd.gateway.route import path_with_query
from llamaherd.gateway.views import model_listing, models_data

logger = logging.getLogger("llamaherd.cluster")

# A peer's refusals before an answer began: try the next replica. 404: the peer no longer has
# the model (its list changed since the front last heard it).
HELD = frozenset({404, 429, 503})
_CLIENT_KEYS = frozenset({b"authorization", b"x-api-key", HOP_HEADER.encode()})


class Cluster:
    def __init__(self, herd: Herd, peers: Iterable[Peer] = ()) -> None:
        self.herd = herd
        self.links: dict[str, PeerLink] = {}
        self._listeners: list[Callable[[], None]] = []
        self._outstanding: Counter[tuple[str, str]] = Counter()  # (host, model): ours in flight
        self._started = False
        self.discovery: SrvWatcher | None = None
        for peer in peers:
            self.add(peer)

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        for link in self.links.values():
            link.start()
        if self.discovery is not None:
            self.discovery.start()

    async def aclose(self) -> None:
        if self.discovery is not None:
            await self.discovery.aclose()
        for link in list(self.links.values()):
            await link.aclose()

    def discover(
        self, name: str, *, key: str | None, server: str | None, interval_s: float
    ) -> None:
        """Follow the targets of the DNS SRV `name` as peers (a Kubernetes headless Service),
        each with the workers' admin `key`: added and removed as the records change."""

        async def on_change(added: list[SrvTarget], removed: list[SrvTarget]) -> None:
            for target in removed:
                await self.remove(_peer_name(target))
            for target in added:
                self.add(Peer(name=_peer_name(target), url=target.url, key=key))

        self.discovery = SrvWatcher(name, on_change, server=server, interval_s=interval_s)

    def add(self, peer: Peer) -> None:
        """Follow one more peer (a DNS change, or start-up)."""
        if peer.name in self.links:
            return
        link = self.links[peer.name] = PeerLink(peer, self._changed)
        if self._started:
            link.start()
        self._changed()

    async def remove(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            await link.aclose()
            self._changed()

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                logger.exception("a cluster listener failed")

    # ---- what there is ---------------------------------------------------------------------

    def hosts(self) -> list[dict[str, Any]]:
        return [link.status() for link in self.links.values()]

    def peer_models(self) -> list[dict[str, Any]]:
        """Every peer's models as its llamaModels says, each with `host` (for llamaModels)."""
        return [
            {**facts, "host": name, "reachable": link.serving}
            for name, link in self.links.items()
            for facts in link.models.values()
        ]

    def listing(self, *, admin: bool = True) -> dict[str, Any]:
        """`GET /v1/models` of a front: every model once (its own first, then the peers' in
        the order they are listed), with its replicas under `meta.replicas`."""
        local = model_listing(self.herd, admin=admin)
        entries: dict[str, dict[str, Any]] = {}
        for entry in local["data"]:
            entry["meta"]["replicas"] = [_replica_facts(LOCAL, entry["meta"], True)]
            entries[entry["id"]] = entry
        for name, link in self.links.items():
            for model, facts in link.models.items():
                replica = _replica_facts(name, facts, link.serving)
                if model in entries:
                    entries[model]["meta"]["replicas"].append(replica)
                    continue
                meta = {k: v for k, v in facts.items() if k != "path" or admin}
                entries[model] = {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "llamaherd",
                    "meta": {**meta, "replicas": [replica]},
                }
        return {"object": "list", "data": list(entries.values())}

    def knows(self, name: str) -> bool:
        """Whether a peer serves a model by this id or alias."""
        return any(self._peer_id(link, name) is not None for link in self.links.values())

    def hosts_of(self, name: str) -> list[str]:
        """The peers that serve a model by this id or alias, in the order they are listed."""
        return [host for host, link in self.links.items() if self._peer_id(link, name)]

    # ---- where a request goes --------------------------------------------------------------

    def plan(self, name: str | None, local_id: str | None) -> list[Replica]:
        """The replicas of the model a request names, best first. `local_id`: the model's
        id here, when this llamaherd serves it (resolved by the caller)."""
        replicas: list[Replica] = []
        if local_id is not None:
            facts = next(m for m in models_data(self.herd) if m["id"] == local_id)
            replicas.append(self._replica(LOCAL, local_id, facts, True))
        for host, link in self.links.items():
            model = self._peer_id(link, name) if name else None
            if model is not None:
                replicas.append(self._replica(host, model, link.models[model], link.serving))
        return rank(replicas)

    def refusal(self, name: str | None, local_id: str | None) -> str:
        """Why no replica is left, naming the hosts."""
        hosts = []
        for host, link in self.links.items():
            if name and self._peer_id(link, name) is not None:
                hosts.append(f"{host} ({link.problem or 'refused'})")
        where = ", ".join(hosts) or "no reachable host"
        return f"no host can serve model {name!r} now: {where}"

    def _replica(self, host: str, model: str, facts: dict[str, Any], reachable: bool) -> Replica:
        ours = self._outstanding[(host, model)]
        others = models_data(self.herd) if host == LOCAL else self.links[host].models.values()
        busy = sum(1 for m in others if m.get("inFlight") and m.get("id") != model)
        return Replica(
            host=host,
            model=model,
            phase=str(facts.get("phase", "unloaded")),
            # What the host said (up to 250 ms old), or what this front sent it since, if more.
            in_flight=max(int(facts.get("inFlight") or 0), ours),
            max_concurrency=int(facts.get("maxConcurrency") or 1),
            queued=int(facts.get("queued") or 0),
            draining=bool(facts.get("draining")),
            stopped=bool(facts.get("stopped")),
            busy_models=busy,
            reachable=reachable,
        )

    @staticmethod
    def _peer_id(link: PeerLink, name: str | None) -> str | None:
        if not name:
            return None
        if name in link.models:
            return name
        for model, facts in link.models.items():
            if name in (facts.get("aliases") or ()):
                return model
        return None

    # ---- sending it there ------------------------------------------------------------------

    async def forward(
        self,
        replica: Replica,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
    ) -> RelayOutcome:
        """Send the request to `replica`'s host, as its own llamaherd would get it from a
        client: with the peer's key (never the client's) and the hop header. A refused
        connection (`outcome.refused`, the peer leaves routing) or a HELD status
        (`outcome.held`) sends nothing to the client: the caller tries the next replica."""
        link = self.links[replica.host]
        peer = link.peer
        headers = [(k, v) for k, v in scope["headers"] if k not in _CLIENT_KEYS]
        headers += [(k.encode(), v.encode()) for k, v in peer.headers().items()]
        headers.append((HOP_HEADER.encode(), b"1"))
        key = (replica.host, replica.model)
        self._outstanding[key] += 1
        try:
            outcome = await relay(
                scope,
                receive,
                send,
                session=self.herd.upstreams.session(peer.base_url),
                base_url=peer.base_url,
                path_qs=path_with_query(scope),
                method=scope["method"],
                headers=headers,
                body=_with_model(body, replica.model),
                label=f"llamaherd {peer.name}",
                hold_refused=True,
                hold_statuses=HELD,
            )
        finally:
            self._outstanding[key] -= 1
            if not self._outstanding[key]:
                del self._outstanding[key]
        if outcome.refused:
            link.failed_request("refused a connection (nothing listens at its address)")
        elif outcome.upstream_failed:
            link.failed_request(f"failed a request ({outcome.error})")
        return outcome


def _peer_name(target: SrvTarget) -> str:
    """A pod's name (the first label of its DNS name), or host:port for an address."""
    if target.host.replace(".", "").isdigit() or ":" in target.host:
        return f"{target.host}:{target.port}"
    return target.host.split(".")[0]


def _with_model(body: bytes, model: str) -> bytes:
    """The body with "model" set to the peer's own id (the client may have used an alias
    that only the front knows)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if isinstance(payload, dict) and payload.get("model") != model:
        payload["model"] = model
        return json.dumps(payload).encode()
    return body


def _replica_facts(host: str, facts: dict[str, Any], reachable: bool) -> dict[str, Any]:
    return {
        "host": host or "local",
        "reachable": reachable,
        "state": facts.get("state"),
        "phase": facts.get("phase"),
        "inFlight": facts.get("inFlight"),
        "queued": facts.get("queued"),
    }


async def send_last_held(
    send: Send, held: tuple[int, Sequence[tuple[bytes, bytes]], bytes]
) -> None:
    """Every replica refused: the last refusal, as its host sent it (with its Retry-After)."""
    status, headers, data = held
    kept = [(k, v) for k, v in headers if k in (b"content-type", b"retry-after")]
    kept.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": data})


async def send_no_replica(send: Send, message: str) -> None:
    await send_error(send, 503, message, "service_unavailable", headers=[(b"retry-after", b"5")])
