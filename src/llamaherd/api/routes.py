"""REST: status, models, logs, and start/stop/restart of llama-server."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from llamaherd import __version__
from llamaherd.api.payloads import status_data
from llamaherd.api.schemas import (
    ControlOut,
    ErrorOut,
    HealthzOut,
    LogsOut,
    ModelsOut,
    StatusOut,
)
from llamaherd.supervisor.service import LlamaService

CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "another start, stop or restart is running"}
}
WaitSeconds = Annotated[
    float,
    Query(ge=0, le=600, description="wait up to this long for ready or error (0: answer at once)"),
]


def create_router(service: LlamaService) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", response_model=HealthzOut, tags=["llamaherd"])
    async def healthz() -> dict[str, Any]:
        """llamaherd itself is up (whatever llama-server is doing)."""
        return {"status": "ok", "name": "llamaherd", "version": __version__}

    @router.get("/api/status", response_model=StatusOut, tags=["status"])
    async def get_status() -> dict[str, Any]:
        """The same `data` as the latest `llamaStatus` event."""
        return status_data(service.get_state())

    @router.get("/api/models", response_model=ModelsOut, tags=["status"])
    async def get_models() -> dict[str, Any]:
        """The models llama-server lists (empty unless ready)."""
        return {"models": status_data(service.get_state())["models"]}

    @router.get("/api/llama/logs", response_model=LogsOut, tags=["status"])
    async def get_logs(
        lines: Annotated[int, Query(ge=1, le=100_000, description="how many lines")] = 200,
    ) -> dict[str, Any]:
        """The tail of llama-server's stdout and stderr."""
        return {"lines": service.output.tail(lines)}

    @router.post(
        "/api/llama/start", response_model=ControlOut, responses=CONFLICT, tags=["control"]
    )
    async def start(wait: WaitSeconds = 0) -> dict[str, Any]:
        """Start (or adopt) llama-server; does nothing if it is already supervised."""
        await service.start(exclusive=True, wait=False)
        return await _answer(wait)

    @router.post("/api/llama/stop", response_model=ControlOut, responses=CONFLICT, tags=["control"])
    async def stop() -> dict[str, Any]:
        """Stop llama-server: SIGTERM, then SIGKILL after the stop timeout. An adopted server is
        left running."""
        return {"status": status_data(await service.stop(exclusive=True))}

    @router.post(
        "/api/llama/restart", response_model=ControlOut, responses=CONFLICT, tags=["control"]
    )
    async def restart(wait: WaitSeconds = 0) -> dict[str, Any]:
        """Stop, then start with a fresh retry count; the way out of `error`."""
        await service.restart(exclusive=True, wait=False)
        return await _answer(wait)

    async def _answer(wait: float) -> dict[str, Any]:
        state = await service.wait_settled(wait) if wait > 0 else service.get_state()
        return {"status": status_data(state)}

    return router
