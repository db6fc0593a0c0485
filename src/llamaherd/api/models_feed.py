"""The `llamaModels` event: every model's state, pushed when it changes, at most a few times a
second.

The herd changes on every request (in flight, queued), so at a thousand requests a second a
push per change would cost more than the requests. Changes are coalesced: the first change
after a quiet spell is sent at once, later ones at most every MIN_INTERVAL_S, and a payload
equal to the last one sent (the ticking TTL and "last used" aside) is not sent at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from llamaherd.api.hub import EventHub
from llamaherd.api.payloads import MODELS_EVENT, models_event
from llamaherd.gateway.herd import Herd

MIN_INTERVAL_S = 0.25
_TICKING = ("ttlLeft", "lastUsed")


class ModelsFeed:
    def __init__(self, herd: Herd, hub: EventHub) -> None:
        self._herd = herd
        self._hub = hub
        self._pending: asyncio.TimerHandle | None = None
        self._last_sent_at = 0.0
        self._last_essence: dict[str, Any] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self._herd.on_change(self._on_change)
        self._publish()

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _on_change(self) -> None:
        if self._pending is not None:
            return
        loop = asyncio.get_running_loop()
        wait = max(0.0, self._last_sent_at + MIN_INTERVAL_S - loop.time())
        self._pending = loop.call_later(wait, self._publish)

    def _publish(self) -> None:
        self._pending = None
        self._last_sent_at = asyncio.get_running_loop().time()
        payload = models_event(self._herd)
        data = payload["data"]
        essence = {
            "models": _steady(data["models"]),
            # A front's peers and their models, and the config's last reload, change too.
            "peerModels": _steady(data.get("peerModels", [])),
            "peers": data.get("peers"),
            "config": data.get("config"),
        }
        if essence == self._last_essence:
            return
        self._last_essence = essence
        self._hub.publish(MODELS_EVENT, payload)


def _steady(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries without the fields that tick by themselves (a new event for those only
    would be noise: the page ticks them)."""
    return [{k: v for k, v in model.items() if k not in _TICKING} for model in models]
