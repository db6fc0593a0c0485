"""Manual load and unload of a model, shared by REST, Socket.IO and the command line."""

from __future__ import annotations

from typing import Any

from llamaherd.errors import LlamaherdError
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.registry import UnknownModelError
from llamaherd.gateway.views import models_data


class ModelControlError(LlamaherdError):
    """A load or unload named no model, or one that is not served."""


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
        herd.load(spec.id)
    else:
        herd.unload(spec.id)
    return next(entry for entry in models_data(herd) if entry["id"] == spec.id)
