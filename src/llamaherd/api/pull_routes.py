"""REST for models from the Hugging Face Hub: pull one into models_dir (progress as `modelPull`
events), list and cancel pulls, delete a pulled model's files once it is unloaded.

    POST   /api/models/pull          {"source": "owner/repo:Q4_K_M"}: 202 and the pull
    GET    /api/models/pulls         every pull running and the latest finished ones
    DELETE /api/models/pulls/{id}    cancel: the partial files are removed
    DELETE /api/models/{id}          delete a model's files from models_dir (409 if loaded)

A pull is resolved before it is answered (what is wrong with it is the answer: 400, 404,
401/403, 409, 507), then downloads in the background (catalog/pulls.py). Every refusal is
llamaherd's JSON error, with a `code` for scripts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from llamaherd.api.config_routes import Reload
from llamaherd.api.errors import error_response
from llamaherd.api.schemas import ErrorOut
from llamaherd.catalog.hub import EXAMPLE
from llamaherd.catalog.pulls import PullManager, delete_files, pulled_model_files
from llamaherd.errors import PullError
from llamaherd.gateway.control import ModelControlError, resolve_model
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.states import Status


class PullIn(BaseModel):
    """What to pull: `source` (`owner/repo:QUANT` or `owner/repo/FILE.gguf`), or `repo` with
    `quant` or `file`."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, examples=[EXAMPLE])
    repo: str | None = None
    quant: str | None = None
    file: str | None = None

    def text(self) -> str | None:
        if self.source is not None:
            return self.source
        if self.repo is None:
            return None
        if self.file:
            return f"{self.repo}/{self.file}"
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


class PullOut(BaseModel):
    """One pull, as the `modelPull` event carries it."""

    id: str
    source: str
    repo: str
    files: list[str] = Field(description="their names in models_dir")
    model: str = Field(description="the model id it is served as")
    state: str = Field(description="downloading, done, failed or cancelled")
    bytes: int
    total: int
    error: str | None
    startedAt: float = Field(description="unix seconds")  # the wire's name


class PullsOut(BaseModel):
    pulls: list[PullOut]


class RemovedOut(BaseModel):
    model: str
    files: list[str] = Field(description="the files deleted")
    reloaded: bool = Field(description="whether the config reload that follows went well")
    error: str | None = Field(default=None, description="why the reload failed, if it did")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "not a source: OWNER/REPO[:QUANT] or OWNER/REPO/FILE.gguf",
        401: "a gated repository, and no token (HF_TOKEN)",
        403: "a gated repository the token has no access to",
        404: "no such repository or file",
        409: "a tag that matches several files (listed), or files in the way",
        502: "the Hub did not answer",
        507: "not enough disk space",
    }.items()
}


def create_pull_router(herd: Herd, pulls: PullManager, reload: Reload | None) -> APIRouter:
    """`reload`: what makes a deleted model's removal take effect (none: no reload)."""
    router = APIRouter(tags=["models"])

    @router.post("/api/models/pull", status_code=202, response_model=PullOut, responses=ERRORS)
    async def pull(body: PullIn) -> Any:
        """Pull a model from the Hugging Face Hub into models_dir: answers 202 with the pull once
        its files are known and fit on the disk; the download runs on (`modelPull` events).
        A pull of files already being pulled answers with that pull."""
        try:
            started = await pulls.pull(body.text() or "")
        except PullError as exc:
            return _refusal(exc)
        return started.as_dict()

    @router.get("/api/models/pulls", response_model=PullsOut)
    async def list_pulls() -> dict[str, Any]:
        """Every pull running, and the latest finished ones."""
        return {"pulls": pulls.pulls()}

    @router.delete(
        "/api/models/pulls/{pull_id}",
        response_model=PullOut,
        responses={404: {"model": ErrorOut, "description": "no such pull"}},
    )
    async def cancel_pull(pull_id: str) -> Any:
        """Cancel a pull: its download stops and its partial files are removed."""
        try:
            return (await pulls.cancel(pull_id)).as_dict()
        except PullError as exc:
            return _refusal(exc)

    @router.delete(
        "/api/models/{model:path}",
        response_model=RemovedOut,
        responses={
            404: {"model": ErrorOut, "description": "no such model"},
            409: {"model": ErrorOut, "description": "loaded, busy, or not a file of models_dir"},
        },
    )
    async def remove_model(model: str) -> Any:
        """Delete a model's files from models_dir (a pulled model), once it is unloaded; the
        config is then reloaded, so it is no longer served."""
        try:
            model_id = resolve_model(herd, model)
        except ModelControlError as exc:
            return error_response(exc.status, str(exc), "not_found", code="no_such_model")
        try:
            files = await _files_to_delete(herd, pulls, model_id)
            _check_unloaded(herd, model_id)  # then at once, with no wait in between: delete
            delete_files(files)
        except PullError as exc:
            return _refusal(exc)
        answer: dict[str, Any] = {"model": model_id, "files": [f.name for f in files]}
        if reload is None:
            return answer | {"reloaded": False, "error": "no config to reload"}
        report = await reload("model deleted")
        return answer | {"reloaded": report.ok, "error": report.error}

    return router


async def _files_to_delete(herd: Herd, pulls: PullManager, model: str) -> list[Path]:
    backend = herd.backends.get(model)
    folder = pulls.models_dir()
    if backend is None or backend.spec.path is None or folder is None:
        raise PullError(
            f"{model} is not a model file in models_dir; only those can be deleted here",
            status=409,
            code="not_in_models_dir",
        )
    if model == herd.primary.spec.id:
        raise PullError(
            f"{model} is the primary model (llamaStatus and /api/llama/* speak of it), which "
            "stays while llamaherd runs: set default_model to another model and restart, or "
            "stop llamaherd and run 'llamaherd rm' then",
            status=409,
            code="primary_model",
        )
    return await asyncio.to_thread(pulled_model_files, folder, model, backend.spec.path)


def _check_unloaded(herd: Herd, model: str) -> None:
    backend = herd.backends[model]
    view = herd.view(model)
    status = backend.service.get_state().status
    idle = view.phase in (Phase.UNLOADED, Phase.FAILED) and status in (Status.INITIAL, Status.ERROR)
    if not idle or view.in_flight or view.queued:
        raise PullError(
            f"{model} is {view.phase.value} (its server {status.value}, {view.in_flight} "
            f"request(s) in flight, {view.queued} queued): unload it first (llamaherd unload "
            f"{model}), then delete it",
            status=409,
            code="model_loaded",
        )


def _refusal(exc: PullError) -> JSONResponse:
    kind = "not_found" if exc.status == 404 else "pull_error"
    return error_response(exc.status, str(exc), kind, code=exc.code)


def create_no_pull_router() -> APIRouter:
    """For an app built without pulls (a front, an app in a test): the list is empty and a
    pull is refused with what to do, so a dashboard asks the same routes of every llamaherd."""
    router = APIRouter(tags=["models"])

    @router.post("/api/models/pull", status_code=202, response_model=PullOut, responses=ERRORS)
    async def pull(body: PullIn) -> Any:
        """Refused: this llamaherd pulls no models."""
        return error_response(
            409,
            "this llamaherd pulls no models: pull into a llamaherd started by `llamaherd serve` "
            'with "models_dir" in its config',
            "pull_error",
            code="no_models_dir",
        )

    @router.get("/api/models/pulls", response_model=PullsOut)
    async def list_pulls() -> dict[str, Any]:
        """None: this llamaherd pulls no models."""
        return {"pulls": []}

    return router
