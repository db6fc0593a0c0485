"""`llamaherd load/unload/start/stop/restart --wait`: polling a model's entry until the action
has settled (ready, unloaded, stopped, failed), backing off from 50 ms to 500 ms."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from llamaherd.client.remote import ModelAction, RemoteClient
from llamaherd.errors import (
    LlamaherdError,
)

# How often a load/unload is checked on while the CLI waits for it: soon at first (a small
# model is ready in about 0.1 s), then at doubling intervals up to twice a second.
MODEL_POLL_INITIAL_S = 0.05


MODEL_POLL_MAX_S = 0.5


@dataclass(frozen=True)
class ModelWait:
    """How a wait for a load or unload ended: `outcome` "done" (the model is ready, or not
    loaded), "failed" (its llama-server gave up), or "pending" (the time ran out first);
    `entry` is the model as last seen."""

    outcome: Literal["done", "failed", "pending"]
    entry: dict[str, Any]


def model_settled(
    action: ModelAction, entry: dict[str, Any], *, stale_failure: bool = False
) -> Literal["done", "failed"] | None:
    """Whether a load or unload of the model `entry` describes is over, and how.

    A load is done when the model is ready and not about to be unloaded (draining: evicted or
    idle, it will be loaded again afterwards). Its failure counts unless `stale_failure`: a
    model that had failed before keeps that phase while its new load waits for room. An unload
    is done once the model is unloaded, or failed: a failed model has no server and holds no
    room, which is what an unload is for."""
    phase = entry.get("phase")
    if action == "unload":
        return "done" if phase in ("unloaded", "failed") else None
    if phase == "ready" and not entry.get("draining"):
        return "done"
    if phase == "failed" and not stale_failure:
        return "failed"
    return None


def wait_for_model(
    client: RemoteClient,
    action: ModelAction,
    entry: dict[str, Any],
    wait_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    host: str | None = None,
) -> ModelWait:
    """Follow the model of `entry` (the answer to its load or unload) until that is over, or
    `wait_s` seconds have passed.

    Polls `GET /api/gateway/models`, quickly at first, rather than following the llamaModels
    events on `/api/events`: the API's load and unload answer at once (they take no wait), and
    a blocking read of that stream could not be held to this deadline; a poll can."""
    model = entry["id"]
    stale_failure = action == "load" and entry.get("phase") == "failed"
    deadline = clock() + wait_s
    delay = MODEL_POLL_INITIAL_S
    while True:
        settled = model_settled(action, entry, stale_failure=stale_failure)
        if settled is not None:
            return ModelWait(settled, entry)
        remaining = deadline - clock()
        if remaining <= 0:
            return ModelWait("pending", entry)
        sleep(min(delay, remaining))
        delay = min(delay * 2, MODEL_POLL_MAX_S)
        entry = _find_model(client, model, host)
        stale_failure = stale_failure and entry.get("phase") == "failed"


def _find_model(client: RemoteClient, model: str, host: str | None = None) -> dict[str, Any]:
    """`model`'s entry: this llamaherd's, or as a front sees it on its peer `host`."""
    if host is None:
        entries = client.gateway_models()
    else:
        entries = [e for e in client.gateway_listing().get("peerModels", []) if e["host"] == host]
    for entry in entries:
        if entry["id"] == model:
            return entry
    where = "" if host is None else f" on host {host}"
    raise LlamaherdError(
        f"llamaherd at {client.base_url} no longer lists model {model!r}{where}; was it "
        "restarted with another config? 'llamaherd models' lists what it has"
    )
