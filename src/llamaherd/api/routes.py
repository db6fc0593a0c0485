"""REST: status, models, logs, and start/stop/restart of the primary model's llama-server."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from llamaherd.api.payloads import status_data
from llamaherd.api.schemas import (
    ControlOut,
    ErrorOut,
    HealthzOut,
    LogsOut,
    ModelsOut,
    StatusOut,
)
from llamaherd.gateway.control import (
    Action,
    ModelControlError,
    request_action,
    until_settled,
    until_stopped,
)
from llamaherd.gateway.herd import Herd
from llamaherd.version import __version__

TOO_BIG: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "the model cannot fit the memory budget on its own"}
}
WaitSeconds = Annotated[
    float,
    Query(ge=0, le=600, description="wait up to this long for ready or error (0: answer at once)"),
]
StopWaitSeconds = Annotated[
    float,
    Query(ge=0, le=3600, description="wait up to this long for the drain and the stop"),
]
LogLines = Annotated[int, Query(ge=1, le=100_000, description="how many lines")]


def create_router(herd: Herd) -> APIRouter:
    """The seed's routes, for the primary model; its start, stop and restart go through the
    scheduler like every other model's (see api/model_routes.py), never to its server directly.
    The primary is looked up on each request."""
    router = APIRouter()

    @router.get("/healthz", response_model=HealthzOut, tags=["llamaherd"])
    async def healthz() -> dict[str, Any]:
        """llamaherd itself is up (whatever llama-server is doing)."""
        return {"status": "ok", "name": "llamaherd", "version": __version__}

    @router.get("/api/status", response_model=StatusOut, tags=["status"])
    async def get_status() -> dict[str, Any]:
        """The same `data` as the latest `llamaStatus` event."""
        return status_data(herd.primary.service.get_state())

    @router.get("/api/models", response_model=ModelsOut, tags=["status"])
    async def get_models() -> dict[str, Any]:
        """The models llama-server lists (empty unless ready)."""
        return {"models": status_data(herd.primary.service.get_state())["models"]}

    @router.get("/api/llama/logs", response_model=LogsOut, tags=["status"])
    async def get_logs(lines: LogLines = 200) -> dict[str, Any]:
        """The tail of llama-server's stdout and stderr."""
        return {"lines": herd.primary.service.output.tail(lines)}

    @router.post("/api/llama/start", response_model=ControlOut, responses=TOO_BIG, tags=["control"])
    async def start(wait: WaitSeconds = 0) -> dict[str, Any]:
        """Start the primary model in its turn, as a load does: within `max_loaded` and the
        memory budget, evicting only idle models. Calls off a stop and a failure's cool-down."""
        model = _request("start")
        return {"status": status_data(await until_settled(herd, model, wait))}

    @router.post("/api/llama/stop", response_model=ControlOut, tags=["control"])
    async def stop(wait: StopWaitSeconds = 60) -> dict[str, Any]:
        """Stop the primary model once its requests in flight have finished (SIGTERM, then
        SIGKILL after the stop timeout); it then refuses requests until started again. Answers
        once it has stopped, or after `wait` seconds with its state then. An adopted server is
        left running."""
        model = _request("stop")
        return {"status": status_data(await until_stopped(herd, model, wait))}

    @router.post(
        "/api/llama/restart", response_model=ControlOut, responses=TOO_BIG, tags=["control"]
    )
    async def restart(wait: WaitSeconds = 0) -> dict[str, Any]:
        """Stop once its requests in flight have finished, then start with a fresh retry count
        (the way out of `error`); requests that arrive meanwhile wait for the new server."""
        model = _request("restart")
        return {"status": status_data(await until_settled(herd, model, wait))}

    def _request(action: Action) -> str:
        model = herd.primary.spec.id
        try:
            request_action(herd, action, model)
        except ModelControlError as exc:  # too large for memory_budget_mb on its own
            raise HTTPException(exc.status, str(exc)) from None
        return model

    return router
