"""REST: `GET /api/history`, what the history store kept (transitions, starts, per-minute
figures, the last requests), for the dashboard's uptime and throughput graphs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from llamaherd.store.history import HistoryStore

MAX_LIMIT = 100_000


class TransitionOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    model: str
    at: float = Field(description="unix seconds")
    from_: str = Field(alias="from", description="the status it left")
    to: str = Field(description="initial|checking|starting|ready|crashed|stopping|error")
    reason: str | None = Field(description="the server's lastError at that moment")
    exitCode: int | None
    signal: str | None = Field(description="e.g. SIGKILL")


class StartOut(BaseModel):
    model: str
    at: float = Field(description="unix seconds, when the start ended (ready, crash or error)")
    loadTimeS: float | None = Field(description="seconds until it was ready")
    peakRssBytes: int | None
    ok: bool = Field(description="it became ready")


class MinuteOut(BaseModel):
    model: str
    minute: float = Field(description="unix seconds, a multiple of 60")
    requests: int = Field(description="requests that ended in this minute")
    errors: int = Field(description="answered 4xx or 5xx, failed, or left before any answer")
    byStatus: dict[str, int] = Field(
        description='requests by HTTP status: {"200": n}; "none": left before any answer'
    )
    promptTokens: int
    completionTokens: int
    tokensPerSecond: float | None = Field(description="mean of llama-server's generation speed")
    latencyP50Ms: float | None
    latencyP95Ms: float | None
    ttftP50Ms: float | None = Field(description="time to first token, streams only")
    ttftP95Ms: float | None
    rssBytes: int | None = Field(description="the largest resident memory sampled")


class RequestOut(BaseModel):
    model: str
    endpoint: str = Field(description="e.g. /v1/chat/completions")
    status: int | None = Field(description="null: the client left before any answer")
    at: float = Field(description="unix seconds, when it arrived")
    latencyMs: float
    queueWaitMs: float
    ttftMs: float | None
    promptTokens: int | None
    completionTokens: int | None
    tokensPerSecond: float | None = Field(description="llama-server's generation speed")
    error: str | None


class StoreOut(BaseModel):
    ok: bool = Field(description="false while the history file cannot be written")
    warning: str | None


class HistoryOut(BaseModel):
    transitions: list[TransitionOut]
    starts: list[StartOut]
    minutes: list[MinuteOut]
    requests: list[RequestOut]
    store: StoreOut


def create_history_router(store: HistoryStore) -> APIRouter:
    router = APIRouter(tags=["history"])

    @router.get("/api/history", response_model=HistoryOut)
    async def get_history(
        model: Annotated[str | None, Query(description="one model's id; all if absent")] = None,
        # Finite only: "nan" parses as a float, and every comparison with it is false.
        since: Annotated[
            float | None, Query(allow_inf_nan=False, description="unix seconds, inclusive")
        ] = None,
        until: Annotated[
            float | None, Query(allow_inf_nan=False, description="unix seconds, inclusive")
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="the most rows of each list, newest kept")
        ] = 1000,
    ) -> dict[str, Any]:
        """What happened: every status transition and start of each model's server, its
        per-minute request figures and memory, and its last requests; each list oldest first.
        Rows not yet written to the history file are included."""
        return await store.query(model, since, until, limit)

    return router
