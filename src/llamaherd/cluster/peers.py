"""Following one peer: is it reachable, is it llamaherd, which models does it serve, how busy.

Two things run per peer, each a task the link owns:

- a health loop: `GET /healthz` every HEALTH_INTERVAL_S with a short timeout. A peer that fails
  UNREACHABLE_AFTER probes in a row (or is not llamaherd) is unreachable: its models leave
  routing within about 5 s; the first good answer brings them back. This is the authority on
  reachability, whatever the feed does;
- the live feed: a Socket.IO client on the peer (the dashboard's own `llamaModels` events,
  with the peer's admin key), reconnecting with backoff. Every event replaces what the front
  knows of the peer's models.

What went wrong is kept as one sentence (`problem`), for the log (once per distinct problem),
the front's status and its dashboard: a wrong key, a peer that is llama-server or nginx, a
peer that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import socketio

from llamaherd.cluster.identity import identify

logger = logging.getLogger("llamaherd.cluster")

HEALTH_INTERVAL_S = 0.75
HEALTH_TIMEOUT_S = 1.0
UNREACHABLE_AFTER = 2  # probes failed in a row
FEED_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
MODELS_EVENT = "llamaModels"
CLOSE_TIMEOUT_S = 2.0
HOP_HEADER = "x-llamaherd-hop"  # on every request a front forwards; never forwarded again


@dataclass(frozen=True)
class Peer:
    """Another llamaherd: its name (shown and used in routing), its URL, its admin key."""

    name: str
    url: str
    key: str | None = None

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}


class PeerLink:
    """What the front knows of one peer; `on_change()` is called whenever that changes."""

    def __init__(self, peer: Peer, on_change: Callable[[], None]) -> None:
        self.peer = peer
        self._on_change = on_change
        self.reachable = False
        self.problem: str | None = "not reached yet"
        self.version: str | None = None
        self.models: dict[str, dict[str, Any]] = {}
        self._failures = 0
        self._feed_problem: str | None = None
        self._logged: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sio: socketio.AsyncClient | None = None
        self._feed_up = False
        self._wake = asyncio.Event()  # a probe saw the peer answer while its feed was down

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> None:
        name = self.peer.name
        self._tasks = [
            asyncio.create_task(self._health_loop(), name=f"llamaherd-peer-health-{name}"),
            asyncio.create_task(self._feed_loop(), name=f"llamaherd-peer-feed-{name}"),
        ]

    async def aclose(self) -> None:
        if self._sio is not None:
            # shutdown() also ends its reconnection loop (disconnect() may wait for it).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._sio.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def serving(self) -> bool:
        """Whether its models are routed to: whenever it answers. Its list may be a moment old
        (a feed that dropped under load, a peer back as another process before its feed is):
        a model it no longer has answers 404 before any byte, and the front tries the next
        replica, so an old list costs a hop, never a failed request."""
        return self.reachable

    def failed_request(self, problem: str) -> None:
        """A request to it found nothing listening, or lost its connection: unreachable at
        once, without waiting for two probes (at a worker's death, every request sent before
        the probes notice would fail too, some on keep-alive connections the dead process
        left behind). Its next good probe brings it back."""
        self._failures = UNREACHABLE_AFTER
        self._set(False, problem)

    def status(self) -> dict[str, Any]:
        """For the front's status and dashboard."""
        return {
            "name": self.peer.name,
            "url": self.peer.base_url,
            "reachable": self.reachable,
            "problem": self.problem,
            "version": self.version,
            "models": sorted(self.models),
        }

    # ---- reachability ----------------------------------------------------------------------

    async def _health_loop(self) -> None:
        async with httpx.AsyncClient(base_url=self.peer.base_url, timeout=HEALTH_TIMEOUT_S) as http:
            while True:
                await self._probe(http)
                await asyncio.sleep(HEALTH_INTERVAL_S)

    async def _probe(self, http: httpx.AsyncClient) -> None:
        try:
            answer = await http.get("/healthz")
        except httpx.HTTPError as exc:
            self._failures += 1
            if self._failures >= UNREACHABLE_AFTER or not self.reachable:
                self._set(False, f"does not answer ({type(exc).__name__}: {exc or 'no answer'})")
            return
        identity = identify(answer)
        if identity.version is None:
            self._failures = UNREACHABLE_AFTER
            self._set(False, f"is not llamaherd ({identity.evidence}); check its url")
            return
        self._failures, self.version = 0, identity.version
        if not self._feed_up:
            self._wake.set()  # it answers again: its feed need not wait out its backoff
        self._set(True, self._feed_problem)

    def _set(self, reachable: bool, problem: str | None) -> None:
        changed = (reachable, problem) != (self.reachable, self.problem)
        self.reachable, self.problem = reachable, problem
        if problem is not None and problem != self._logged:
            logger.warning("peer %s (%s) %s", self.peer.name, self.peer.base_url, problem)
        elif problem is None and self._logged is not None:
            logger.info("peer %s (%s) is reachable again", self.peer.name, self.peer.base_url)
        self._logged = problem
        if changed:
            self._on_change()

    # ---- the live feed ---------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        """Connect, follow until the connection drops, connect again: after a backoff, or at
        once when a probe finds the peer answering again (a restarted worker's new models are
        followed within moments of its start, not at the client's next reconnect)."""
        attempt = 0
        while True:
            # Its own reconnection off: this loop decides when, and starts a fresh session.
            sio = self._sio = socketio.AsyncClient(reconnection=False)
            sio.on(MODELS_EVENT, self._on_models)
            try:
                await sio.connect(
                    self.peer.base_url,
                    auth={"token": self.peer.key} if self.peer.key else None,
                    headers={HOP_HEADER: "1"},
                    transports=["websocket"],
                    wait_timeout=5,
                )
            except Exception as exc:  # whatever the client raises, the follower goes on
                self._feed_problem = _feed_refusal(exc)
                if self.reachable:
                    self._set(True, self._feed_problem)
                with contextlib.suppress(Exception):
                    await sio.disconnect()
                # A refused key does not come right by retrying at once: only the backoff.
                early = "key" not in self._feed_problem
                await self._rest(FEED_BACKOFF_S[min(attempt, len(FEED_BACKOFF_S) - 1)], early)
                attempt += 1
                continue
            # Its live feed answers: it is reachable now, whatever the last probe said.
            attempt, self._feed_problem, self._failures = 0, None, 0
            self._feed_up = True
            self._set(True, None)
            with contextlib.suppress(Exception):
                await sio.wait()  # until the connection drops
            self._feed_up = False
            self._on_change()
            await self._rest(FEED_BACKOFF_S[0], early=True)

    async def _rest(self, seconds: float, early: bool) -> None:
        """Wait `seconds`, or less when `early` and a probe finds the peer answering."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                if early:
                    await self._wake.wait()
                else:
                    await asyncio.Event().wait()

    async def _on_models(self, payload: Any) -> None:
        data = payload.get("data") if isinstance(payload, dict) else None
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            return
        self.models = {
            str(m["id"]): m for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)
        }
        self._on_change()


def _feed_refusal(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "key" in text.lower():
        return f"refused its live feed: {text}; check this peer's key"
    return f"its live feed failed: {text}"
