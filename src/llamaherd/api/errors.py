"""Every error answer is `{"error": {"message": ..., "type": ...}}`; never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llamaherd.errors import ControlConflictError, LlamaherdError
from llamaherd.gateway.asgi import TOO_DEEP

logger = logging.getLogger("llamaherd.api")


def error_response(
    status: int, message: str, kind: str, *, code: str | None = None
) -> JSONResponse:
    error: dict[str, str] = {"message": message, "type": kind}
    if code is not None:
        error["code"] = code
    return JSONResponse({"error": error}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "There was an error parsing the body", raised from why.
            return error_response(400, _bad_body(exc), "invalid_request_error")
        kind = "not_found" if exc.status_code == 404 else "http_error"
        return error_response(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        # 422, as OpenAI-style clients expect for a well-formed request of the wrong shape.
        return error_response(422, problems or "invalid request", "invalid_request_error")

    @app.exception_handler(ControlConflictError)
    async def conflict(request: Request, exc: ControlConflictError) -> JSONResponse:
        return error_response(409, str(exc), "conflict")

    @app.exception_handler(LlamaherdError)
    async def ours(request: Request, exc: LlamaherdError) -> JSONResponse:
        return error_response(500, str(exc), type(exc).__name__)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal error; see llamaherd's log", "internal_error")


def _bad_body(exc: HTTPException) -> str:
    if isinstance(exc.__cause__, RecursionError):
        return f"the request body {TOO_DEEP}"
    return str(exc.detail)
