"""REST: status, models, logs, and start/stop/restart of the primary model's llama-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

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
from llamaherd.errors import ConfigError
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.service import SETTLED
from llamaherd.supervisor.states import ServiceState

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


def create_router(herd: Herd) -> APIRouter:
    """The seed's routes, for the primary model; its start, stop and restart go through the
    scheduler like every other model's, never to its server directly."""
    router = APIRouter()
    primary = herd.primary
    service = primary.service

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

    @router.post("/api/llama/start", response_model=ControlOut, responses=TOO_BIG, tags=["control"])
    async def start(wait: WaitSeconds = 0) -> dict[str, Any]:
        """Start the primary model in its turn, as a load does: within `max_loaded` and the
        memory budget, evicting only idle models. Calls off a stop and a failure's cool-down."""
        _control(herd.load)
        return await _answer(wait)

    @router.post("/api/llama/stop", response_model=ControlOut, tags=["control"])
    async def stop(wait: StopWaitSeconds = 60) -> dict[str, Any]:
        """Stop the primary model once its requests in flight have finished (SIGTERM, then
        SIGKILL after the stop timeout); it then refuses requests until started again. Answers
        once it has stopped, or after `wait` seconds with its state then. An adopted server is
        left running."""
        herd.stop(primary.spec.id)
        return {"status": status_data(await _until_stopped(wait))}

    @router.post(
        "/api/llama/restart", response_model=ControlOut, responses=TOO_BIG, tags=["control"]
    )
    async def restart(wait: WaitSeconds = 0) -> dict[str, Any]:
        """Stop once its requests in flight have finished, then start with a fresh retry count
        (the way out of `error`); requests that arrive meanwhile wait for the new server."""
        _control(herd.restart)
        return await _answer(wait)

    def _control(action: Callable[[str], None]) -> None:
        try:
            action(primary.spec.id)
        except ConfigError as exc:  # too large for memory_budget_mb on its own
            raise HTTPException(409, str(exc)) from None

    async def _answer(wait: float) -> dict[str, Any]:
        if wait > 0:
            # The herd's tasks have not run yet: the server may still look as it was.
            await _until(lambda: service.get_state().status in SETTLED and _settled(), wait)
        return {"status": status_data(service.get_state())}

    def _settled() -> bool:
        view = herd.view(primary.spec.id)
        return not (view.draining or view.load_requested or view.phase is Phase.UNLOADING)

    async def _until_stopped(wait: float) -> ServiceState:
        def stopped() -> bool:
            view = herd.view(primary.spec.id)
            return view.phase in (Phase.UNLOADED, Phase.FAILED) or view.stopped is None

        await _until(stopped, wait)
        return service.get_state()

    async def _until(done: Callable[[], bool], wait: float) -> None:
        if done():
            return
        changed = asyncio.Event()
        unsubscribe = herd.on_change(changed.set)
        try:
            async with asyncio.timeout(wait):
                while not done():
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            pass
        finally:
            unsubscribe()

    return router
