"""REST for the gateway's models: their state, and manual load and unload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from llamaherd.api.hosted import HOST_ERRORS, Host, Hosts
from llamaherd.api.schemas import ErrorOut, GatewayModelOut, GatewayModelsOut
from llamaherd.cluster.front import Cluster
from llamaherd.gateway.control import Action, ModelControlError, control_model
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.views import models_data

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such model"}
}


def create_gateway_router(herd: Herd, cluster: Cluster | None = None) -> APIRouter:
    """`cluster`: a front's peers, whose models `?host=NAME` acts on (see api/hosted.py)."""
    router = APIRouter(tags=["models"])
    hosts = Hosts(herd, cluster)

    @router.get("/api/gateway/models", response_model=GatewayModelsOut)
    async def gateway_models() -> dict[str, Any]:
        """Every model, loaded or not: the `data` of the `llamaModels` event. On a front, its
        peers too (`peers`) and the models they serve (`peerModels`, each with its `host`)."""
        answer = {"models": models_data(herd)}
        if herd.peers_view is not None:
            answer.update(herd.peers_view())
        return answer

    @router.post(
        "/api/models/{model:path}/load",
        response_model=GatewayModelOut,
        responses={**NOT_FOUND, **HOST_ERRORS},
    )
    async def load(model: str, host: Host = None) -> Any:
        """Load a model now (an id or an alias); evicts others as `max_loaded` requires, but
        never one that is serving a request: it waits for that request to end."""
        return await hosts.elsewhere(host, model, "load") or _control(herd, "load", model)

    @router.post(
        "/api/models/{model:path}/unload",
        response_model=GatewayModelOut,
        responses={**NOT_FOUND, **HOST_ERRORS},
    )
    async def unload(model: str, host: Host = None) -> Any:
        """Unload a model once its requests in flight have ended (pinned models too)."""
        return await hosts.elsewhere(host, model, "unload") or _control(herd, "unload", model)

    return router


def _control(herd: Herd, action: Action, model: str) -> dict[str, Any]:
    try:
        return control_model(herd, action, model)
    except ModelControlError as exc:
        raise HTTPException(exc.status, str(exc)) from None
