"""REST: `GET /api/history`, what the history store kept (transitions, starts, per-minute
figures, the last requests), for the dashboard's uptime and throughput graphs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from llamaherd.api.front_views import with_peer_history
from llamaherd.cluster.front import Cluster
from llamaherd.cluster.peers import HOP_HEADER
from llamaherd.store.history import HistoryStore

MAX_LIMIT = 100_000


HostField = Field(
    default="local", description="where it happened: `local`, or on a front the peer's name"
)


class TransitionOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    model: str
    host: str = HostField
    at: float = Field(description="unix seconds")
    from_: str = Field(alias="from", description="the status it left")
    to: str = Field(description="initial|checking|starting|ready|crashed|stopping|error")
    reason: str | None = Field(description="the server's lastError at that moment")
    exitCode: int | None
    signal: str | None = Field(description="e.g. SIGKILL")


class StartOut(BaseModel):
    model: str
    host: str = HostField
    at: float = Field(description="unix seconds, when the start ended (ready, crash or error)")
    loadTimeS: float | None = Field(description="seconds until it was ready")
    peakRssBytes: int | None
    ok: bool = Field(description="it became ready")


class MinuteOut(BaseModel):
    model: str
    host: str = HostField
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
    host: str = HostField
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


class PeerHistoryOut(BaseModel):
    host: str = Field(description="the peer's name")
    ok: bool = Field(description="its rows are all in this answer")
    problem: str | None = Field(description="why not (unreachable, no answer in time...)")


class HistoryOut(BaseModel):
    transitions: list[TransitionOut]
    starts: list[StartOut]
    minutes: list[MinuteOut]
    requests: list[RequestOut]
    store: StoreOut = Field(description="this llamaherd's own store")
    peers: list[PeerHistoryOut] = Field(
        default_factory=list, description="a front: how asking each of its peers went"
    )


# Each list of the history, the schema of its rows, and the field that orders it.
HISTORY_LISTS: dict[str, tuple[type[BaseModel], str]] = {
    "transitions": (TransitionOut, "at"),
    "starts": (StartOut, "at"),
    "minutes": (MinuteOut, "minute"),
    "requests": (RequestOut, "at"),
}
NO_HISTORY = {"ok": True, "warning": "history_enabled is false: this llamaherd keeps none"}


def create_history_router(store: HistoryStore | None, cluster: Cluster | None = None) -> APIRouter:
    """`store`: this llamaherd's history (None: it keeps none); `cluster`: a front's peers,
    whose history is merged into the answer (see api/front_views.py)."""
    router = APIRouter(tags=["history"])

    @router.get("/api/history", response_model=HistoryOut)
    async def get_history(
        request: Request,
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
        Rows not yet written to the history file are included. On a front, its peers' rows
        too (each with its `host`), asked with the same query; `peers` names any that failed."""
        if store is not None:
            own = await store.query(model, since, until, limit)
        else:
            own = {
                "transitions": [],
                "starts": [],
                "minutes": [],
                "requests": [],
                "store": NO_HISTORY,
            }
        if cluster is None or HOP_HEADER in request.headers:
            return own
        asked = {"model": model, "since": since, "until": until, "limit": limit}
        params = {key: str(value) for key, value in asked.items() if value is not None}
        return await with_peer_history(cluster, own, HISTORY_LISTS, params, limit)

    return router
