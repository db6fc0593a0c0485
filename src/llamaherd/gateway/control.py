"""Manual load and unload of a model, shared by REST, Socket.IO and the command line."""

from __future__ import annotations

from typing import Any

from llamaherd.errors import ConfigError, LlamaherdError
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.registry import UnknownModelError
from llamaherd.gateway.views import models_data


class ModelControlError(LlamaherdError):
    """A load or unload named no model, one that is not served (`status` 404), or one that
    cannot fit the memory budget (409)."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


def control_model(herd: Herd, action: str, name: object) -> dict[str, Any]:
    """Ask the scheduler to load or unload the model `name` (an id or an alias); returns the
    model's entry as `llamaModels` shows it. An unload waits for its requests in flight."""
    if not isinstance(name, str) or not name:
        raise ModelControlError('name the model: {"id": "MODEL"}')
    try:
        spec = herd.registry.resolve(name)
    except UnknownModelError as exc:
        raise ModelControlError(str(exc)) from None
    if action == "load":
        try:
            herd.load(spec.id)
        except ConfigError as exc:  # too large for memory_budget_mb on its own
            raise ModelControlError(str(exc), status=409) from None
    else:
        herd.unload(spec.id)
    return next(entry for entry in models_data(herd) if entry["id"] == spec.id)
