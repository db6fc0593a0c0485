"""What the herd looks like from outside: OpenAI's model list and the `llamaModels` payload.

Built from the herd's snapshots and nothing else, like api/payloads.py for one server.
"""

from __future__ import annotations

import time
from typing import Any

from llamaherd.gateway.herd import Backend, Herd
from llamaherd.gateway.scheduler import ModelView, Phase
from llamaherd.supervisor.states import ServiceState

OWNER = "llamaherd"


def model_listing(herd: Herd, *, admin: bool = True) -> dict[str, Any]:
    """`GET /v1/models`: every model, loaded or not, in OpenAI's list shape; llamaherd's own
    facts under `meta`, beside what OpenAI clients read (`id`, `object`, `created`).
    `admin`: the caller may see where the models live on this machine (their files); an
    inference-only key may not."""
    return {
        "object": "list",
        "data": [
            {
                "id": backend.spec.id,
                "object": "model",
                "created": _created(backend),
                "owned_by": OWNER,
                "meta": _facts(herd, backend, view, state, admin=admin),
            }
            for backend, view, state in herd.views()
        ],
    }


def models_data(herd: Herd) -> list[dict[str, Any]]:
    """The `data.models` of the `llamaModels` event and of `GET /api/gateway/models`."""
    return [
        {"id": backend.spec.id, **_facts(herd, backend, view, state)}
        for backend, view, state in herd.views()
    ]


def _facts(
    herd: Herd, backend: Backend, view: ModelView, state: ServiceState, *, admin: bool = True
) -> dict[str, Any]:
    spec, meta = backend.spec, backend.spec.metadata
    now_mono, now_wall = herd.now(), time.time()
    last_used = None if view.last_used is None else now_wall - (now_mono - view.last_used)
    ttl_left = view.ttl_left_s(now_mono)
    return {
        "aliases": list(spec.aliases),
        "default": herd.registry.default is spec,
        "state": state.status.value,
        "phase": view.phase.value,
        "loaded": view.phase is Phase.READY,
        "draining": view.draining,
        "loadRequested": view.load_requested,
        "inFlight": view.in_flight,
        "queued": view.queued,
        "maxConcurrency": view.max_concurrency,
        "lastUsed": None if last_used is None else int(last_used * 1000),
        "ttlSeconds": spec.ttl_s,
        "ttlLeft": None if ttl_left is None else round(ttl_left, 1),
        "pinned": spec.pinned,
        "preload": spec.preload,
        "port": backend.service.port,
        "pid": state.pid,
        "retries": state.retries,
        "lastError": state.last_error,
        "waitingFor": view.waiting_for,
        # A manual stop's reason: requests are refused until it is started again.
        "stopped": view.stopped,
        "retryIn": None if view.retry_at is None else round(max(0.0, view.retry_at - now_mono), 1),
        "path": None if spec.path is None or not admin else str(spec.path),
        # Its files may be deleted once it is unloaded (a models_dir file, not the primary).
        "removable": spec.in_models_dir and herd.registry.default is not spec,
        "size": meta.size_bytes if meta else None,
        "architecture": meta.architecture if meta else None,
        "parameters": meta.parameter_count if meta else None,
        "quantisation": meta.quantisation if meta else None,
        "contextLength": meta.context_length if meta else None,
        # The estimate (file plus KV cache) until loaded, then the measured resident memory.
        "memoryMb": round(view.memory_mb, 1) if view.memory_mb else None,
    }


def _created(backend: Backend) -> int:
    meta = backend.spec.metadata
    return meta.modified_at if meta else 0
