"""Every model's live output and state, as events: `llamaLog` batches of its llama-server's
output lines and `llamaModelStatus` on each change of its server's state.

Both go into the hub's one ordered queue (api/hub.py); the transports choose their audience:
Socket.IO sends a model's lines to the clients that subscribed to it (and the primary's to the
seed's log subscribers too), `/api/events` keeps to the primary's lines. A client that follows
one model's output over HTTP (`GET /api/models/{id}/logs?follow=1`) gets the batches from here
directly, with a tail that neither misses nor repeats a line.

Lines are batched per model over LOG_BATCH_S, so a flood is a few events a second; a batch of
more than LOG_BATCH_MAX_LINES keeps the newest and says how many it skipped. Models that a
reload adds are followed from then on (`Herd.follow_backends`); followers of a model a reload
removed are told the stream ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamaherd.api.payloads import (
    LOG_EVENT,
    MODEL_STATUS_EVENT,
    log_event,
    model_status_event,
    without_uptime,
)
from llamaherd.gateway.herd import Backend, Herd
from llamaherd.supervisor.output import LogRing
from llamaherd.supervisor.states import ServiceState, Status

LOG_BATCH_S = 0.1  # output lines are sent in batches: a flood is a few events a second
LOG_BATCH_MAX_LINES = 500
FOLLOW_QUEUE = 256  # batches a slow follower may fall behind before it loses the oldest

Publish = Callable[[str, dict[str, Any]], None]
# What a follower receives: a batch of new lines, or None once the stream has ended.
FollowQueue = asyncio.Queue[list[str] | None]


@dataclass(eq=False)
class _Followed:
    """One model's output and state, as this feed follows them."""

    output: LogRing
    pending: list[str] = field(default_factory=list)
    flush: asyncio.TimerHandle | None = None
    followers: set[FollowQueue] = field(default_factory=set)
    last_status: dict[str, Any] | None = None
    unsubscribes: list[Callable[[], None]] = field(default_factory=list)


class ModelStreams:
    def __init__(self, herd: Herd, publish: Publish) -> None:
        """`publish(name, payload)`: queue an event for every transport (`EventHub.publish`)."""
        self._herd = herd
        self._publish = publish
        self._models: dict[str, _Followed] = {}
        self._unsubscribes: list[Callable[[], None]] = []

    def start(self) -> None:
        self._unsubscribes = [
            self._herd.follow_backends(self._attach),
            self._herd.on_change(self._forget_removed),
        ]

    def close(self) -> None:
        """Stop following every model; every follower's stream ends."""
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes = []
        for model in list(self._models):
            self._detach(model)

    def end_follows(self) -> None:
        """Tell every follower's stream to end (a shutdown must not wait for them)."""
        for followed in self._models.values():
            for queue in followed.followers:
                _put_dropping_oldest(queue, None)
            followed.followers.clear()

    # ---- following a model -----------------------------------------------------------------

    def follow(self, model: str, lines: int) -> tuple[list[str], FollowQueue]:
        """The last `lines` lines of `model`'s output, and a queue of every batch after them:
        no line is in both, none is in neither. Call `unfollow` when done. KeyError if the
        model is not followed (not served)."""
        followed = self._models[model]
        # The lines not yet sent are the newest in the ring: they come in the first batch.
        waiting = len(followed.pending)
        tail = followed.output.tail(lines + waiting)
        queue: FollowQueue = asyncio.Queue(maxsize=FOLLOW_QUEUE)
        followed.followers.add(queue)
        return (tail[: len(tail) - waiting] if waiting else tail), queue

    def unfollow(self, model: str, queue: FollowQueue) -> None:
        followed = self._models.get(model)
        if followed is not None:
            followed.followers.discard(queue)

    def status_event(self, model: str) -> dict[str, Any]:
        """`model`'s `llamaModelStatus` event now. KeyError if it is not served."""
        return model_status_event(model, self._herd.backends[model].service.get_state())

    # ---- the herd's models -----------------------------------------------------------------

    def _attach(self, model: str, backend: Backend) -> Callable[[], None]:
        if model in self._models:  # served again after a reload removed it: a fresh start
            self._detach(model)
        service = backend.service
        followed = self._models[model] = _Followed(output=service.output)
        followed.unsubscribes = [
            service.output.subscribe_batches(lambda lines: self._on_lines(model, followed, lines)),
            service.on_state_change(lambda state: self._on_state(model, followed, state)),
        ]
        return lambda: self._detach(model, followed)

    def _forget_removed(self) -> None:
        """A model a reload removed (once its server stopped) is followed no more."""
        for model in [m for m in self._models if m not in self._herd.backends]:
            self._detach(model)

    def _detach(self, model: str, followed: _Followed | None = None) -> None:
        current = self._models.get(model)
        if current is None or (followed is not None and followed is not current):
            return
        del self._models[model]
        for unsubscribe in current.unsubscribes:
            unsubscribe()
        if current.flush is not None:
            current.flush.cancel()
            current.flush = None
        self._send(model, current)  # what it said last
        for queue in current.followers:
            _put_dropping_oldest(queue, None)
        current.followers.clear()

    # ---- events ----------------------------------------------------------------------------

    def _on_lines(self, model: str, followed: _Followed, lines: Sequence[str]) -> None:
        followed.pending.extend(lines)
        if followed.flush is None:
            loop = asyncio.get_running_loop()
            followed.flush = loop.call_later(LOG_BATCH_S, self._flush, model, followed)

    def _flush(self, model: str, followed: _Followed) -> None:
        followed.flush = None
        self._send(model, followed)

    def _send(self, model: str, followed: _Followed) -> None:
        lines, followed.pending = followed.pending, []
        if len(lines) > LOG_BATCH_MAX_LINES:
            skipped = len(lines) - LOG_BATCH_MAX_LINES
            lines = [f"[llamaherd: {skipped} lines skipped]", *lines[-LOG_BATCH_MAX_LINES:]]
        if not lines:
            return
        self._publish(LOG_EVENT, log_event(lines, model))
        for queue in followed.followers:
            _put_dropping_oldest(queue, lines)

    def _on_state(self, model: str, followed: _Followed, state: ServiceState) -> None:
        if state.status is Status.INITIAL:
            # A stopped model that a reload removed leaves the herd once the herd has heard
            # this (after us, maybe): look again when it has, not at its next change.
            asyncio.get_running_loop().call_soon(self._forget_removed)
        payload = model_status_event(model, state)
        essence = without_uptime(payload["data"])
        if essence == followed.last_status:
            return
        followed.last_status = essence
        self._publish(MODEL_STATUS_EVENT, payload)


def _put_dropping_oldest(queue: asyncio.Queue[Any], item: Any) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)
