"""The wire payloads, built from a ServiceState and nothing else (no transport in here).

`status_data` is the seed's `data` object; fields beyond the seed's are added, never changed,
so clients written for the seed keep working.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

# The event names have a module of their own (the command line's client needs them without the
# server); the server's modules take them from here, with the payloads.
from llamaherd.api.event_names import (
    LOAD_MODEL,
    LOG_EVENT,
    LOG_SUBSCRIBE,
    LOG_UNSUBSCRIBE,
    METRICS_REQUEST,
    MODEL_STATUS_EVENT,
    MODEL_STATUS_REQUEST,
    MODELS_EVENT,
    MODELS_REQUEST,
    RESTART_MODEL,
    START_MODEL,
    STATUS_EVENT,
    STATUS_REQUEST,
    STOP_MODEL,
    UNLOAD_MODEL,
)
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.views import models_data
from llamaherd.supervisor.output import telling_lines
from llamaherd.supervisor.states import ServiceState

__all__ = [
    "LOAD_MODEL",
    "LOG_EVENT",
    "LOG_SUBSCRIBE",
    "LOG_UNSUBSCRIBE",
    "METRICS_REQUEST",
    "MODELS_EVENT",
    "MODELS_REQUEST",
    "MODEL_STATUS_EVENT",
    "MODEL_STATUS_REQUEST",
    "RESTART_MODEL",
    "START_MODEL",
    "STATUS_EVENT",
    "STATUS_REQUEST",
    "STOP_MODEL",
    "UNLOAD_MODEL",
    "log_event",
    "model_status_data",
    "model_status_event",
    "models_event",
    "now_ms",
    "status_data",
    "status_event",
    "without_uptime",
]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    return int(time.time() * 1000)


def status_data(state: ServiceState) -> dict[str, Any]:
    last_exit = state.last_exit
    return {
        # The seed's fields.
        "status": state.status.value,
        "models": [model.to_wire() for model in state.models],
        "lastError": state.last_error,
        "retries": state.retries,
        "uptime": int(state.uptime),
        "startedAt": _iso(state.started_at),
        # Added fields.
        "maxRetries": state.max_retries,
        "pid": state.pid,
        "adopted": state.adopted,
        "nextRetryAt": _iso(state.next_retry_at),
        "restarts": state.restarts,
        "lastExit": None
        if last_exit is None
        else {
            # A death by signal has no exit code (asyncio's -9 is its way of saying SIGKILL).
            "code": None if last_exit.signal_name else last_exit.returncode,
            "signal": last_exit.signal_name,
            # What the dead server said that matters: its complaints, else its last lines.
            "lines": telling_lines(last_exit.last_output),
        },
    }


def status_event(state: ServiceState) -> dict[str, Any]:
    return {"type": "llama_status", "data": status_data(state), "timestamp": now_ms()}


def log_event(lines: list[str], model: str) -> dict[str, Any]:
    """New output lines of `model`'s llama-server (`model` was added to the seed's event)."""
    return {"type": "llama_log", "data": {"lines": lines, "model": model}, "timestamp": now_ms()}


def model_status_data(model: str, state: ServiceState) -> dict[str, Any]:
    """Any model's server, in the shape of `llamaStatus`'s data, with its id in `model`."""
    return {"model": model, **status_data(state)}


def model_status_event(model: str, state: ServiceState) -> dict[str, Any]:
    """`llamaModelStatus`: `model_status_data` in the envelope of the other events."""
    data = model_status_data(model, state)
    return {"type": "model_status", "data": data, "timestamp": now_ms()}


def without_uptime(data: dict[str, Any]) -> dict[str, Any]:
    """What makes two status payloads different: everything but the ticking uptime."""
    return {key: value for key, value in data.items() if key != "uptime"}


def models_event(herd: Herd) -> dict[str, Any]:
    """Every model the gateway serves, loaded or not, with its queue and its server's state."""
    data = {"models": models_data(herd), "config": herd.config_info or None}
    if herd.peers_view is not None:  # a front: its peers, and the models they serve
        data.update(herd.peers_view())
    return {"type": "llama_models", "data": data, "timestamp": now_ms()}
