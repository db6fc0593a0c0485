"""REST for the config: reload it while serving, and when it was last loaded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException

from llamaherd.api.schemas import ConfigInfoOut, ErrorOut, ReloadOut
from llamaherd.gateway.herd import Herd


class ReloadReport(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    def as_dict(self) -> dict[str, Any]: ...


# The reloader's reload(trigger): composition (server/reload.py) hands it to the app.
Reload = Callable[[str], Awaitable[ReloadReport]]


def create_config_router(herd: Herd, reload: Reload) -> APIRouter:
    router = APIRouter(tags=["config"])

    @router.post(
        "/api/config/reload",
        response_model=ReloadOut,
        responses={422: {"model": ErrorOut, "description": "the file is wrong: nothing changed"}},
    )
    async def reload_config() -> dict[str, Any]:
        """Read the config file again and apply it without dropping a request (as SIGHUP
        does). The whole file is checked first: if anything is wrong, nothing changes (422
        with the reason). Otherwise: what changed, and which keys need a restart."""
        report = await reload("api")
        if not report.ok:
            raise HTTPException(
                422, f"config not reloaded: {report.error}; the config in use stays"
            )
        return report.as_dict()

    @router.get("/api/config", response_model=ConfigInfoOut)
    async def config_info() -> dict[str, Any]:
        """When the config was loaded, and how the last reload went (also in `llamaModels`)."""
        return herd.config_info

    return router
