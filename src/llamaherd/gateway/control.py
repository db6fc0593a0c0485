"""Manual control of any model, shared by REST, Socket.IO and the command line: load and
unload, start, stop and restart, and the waits for their outcome.

Every action is a request to the scheduler (through the herd), never a call to a server, so
`max_loaded`, the memory budget and "never stop a busy model" hold whoever asks. Start is a
load, under the name the seed's controls use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from llamaherd.errors import ConfigError, LlamaherdError
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.registry import UnknownModelError
from llamaherd.gateway.scheduler import Phase
from llamaherd.gateway.views import models_data
from llamaherd.supervisor.service import SETTLED
from llamaherd.supervisor.states import ServiceState

Action = Literal["load", "unload", "start", "stop", "restart"]
ACTIONS: tuple[Action, ...] = ("load", "unload", "start", "stop", "restart")


class ModelControlError(LlamaherdError):
    """An action named no model, one that is not served (`status` 404), or one that cannot fit
    the memory budget (409)."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


def resolve_model(herd: Herd, name: object) -> str:
    """The id of the model `name` names (an id or an alias); ModelControlError (404) if none."""
    if not isinstance(name, str) or not name:
        raise ModelControlError('name the model: {"id": "MODEL"}')
    try:
        return herd.registry.resolve(name).id
    except UnknownModelError as exc:
        raise ModelControlError(str(exc)) from None


def request_action(herd: Herd, action: Action, model: str) -> None:
    """Ask the scheduler to carry out `action` on `model` (an id) in its turn. Load, start and
    restart raise ModelControlError (409) for a model that cannot fit the budget on its own."""
    if model not in herd.backends:
        raise ModelControlError(
            f"this llamaherd serves no model {model!r} of its own; a front's peers' models are "
            "controlled on the peers"
        )
    try:
        if action in ("load", "start"):
            herd.load(model)
        elif action == "restart":
            herd.restart(model)
        elif action == "stop":
            herd.stop(model)
        else:
            herd.unload(model)
    except ConfigError as exc:  # too large for memory_budget_mb on its own
        raise ModelControlError(str(exc), status=409) from None


def control_model(herd: Herd, action: Action, name: object) -> dict[str, Any]:
    """Ask for `action` on the model `name` (an id or an alias); returns the model's entry as
    `llamaModels` shows it, at once. An unload or a stop waits for its requests in flight."""
    model = resolve_model(herd, name)
    request_action(herd, action, model)
    return model_entry(herd, model)


def model_entry(herd: Herd, model: str) -> dict[str, Any]:
    """`model`'s entry as `llamaModels` shows it."""
    return next(entry for entry in models_data(herd) if entry["id"] == model)


def model_state(herd: Herd, model: str) -> ServiceState:
    """The state of `model`'s llama-server."""
    return herd.backends[model].service.get_state()


async def until_settled(herd: Herd, model: str, wait: float) -> ServiceState:
    """After a start or a restart: wait up to `wait` seconds until `model`'s server is ready or
    has given up, and the scheduler has nothing left to do for it (no drain, no load waiting
    for its turn). The state then."""

    def settled() -> bool:
        view = herd.view(model)
        busy = view.draining or view.load_requested or view.phase is Phase.UNLOADING
        # The herd's tasks may not have run yet: the server may still look as it was.
        return model_state(herd, model).status in SETTLED and not busy

    return await _until(herd, model, settled, wait)


async def until_stopped(herd: Herd, model: str, wait: float) -> ServiceState:
    """After a stop: wait up to `wait` seconds until `model` has drained and its server has
    stopped (or a start called the stop off). The state then."""

    def stopped() -> bool:
        view = herd.view(model)
        return view.phase in (Phase.UNLOADED, Phase.FAILED) or view.stopped is None

    return await _until(herd, model, stopped, wait)


async def _until(herd: Herd, model: str, done: Callable[[], bool], wait: float) -> ServiceState:
    """Wait up to `wait` seconds until `done()`, checked after every change of the herd. A model
    that leaves the herd meanwhile (a reload removed it) ends the wait with its last state."""
    backend = herd.backends[model]

    def over() -> bool:
        return herd.backends.get(model) is not backend or done()

    if wait > 0 and not over():
        changed = asyncio.Event()
        unsubscribe = herd.on_change(changed.set)
        try:
            async with asyncio.timeout(wait):
                while not over():
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            pass
        finally:
            unsubscribe()
    return backend.service.get_state()
