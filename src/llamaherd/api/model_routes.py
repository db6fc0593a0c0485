"""REST for any model's server, as `/api/llama/*` is for the primary's: its status, its
output (the tail, or followed as Server-Sent Events), and start, stop and restart.

A model is named by its id or an alias; 404 names the models there are. Every action goes
through the scheduler (gateway/control.py), with the seed's `wait` semantics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from llamaherd.api.hosted import HOST_ERRORS, Host, Hosts
from llamaherd.api.model_streams import ModelStreams
from llamaherd.api.payloads import LOG_EVENT, log_event, model_status_data
from llamaherd.api.routes import TOO_BIG, StopWaitSeconds, WaitSeconds
from llamaherd.api.schemas import ErrorOut, ModelControlOut, ModelLogsOut, ModelStatusOut
from llamaherd.api.sse import event_stream, frame
from llamaherd.cluster.front import Cluster
from llamaherd.gateway.control import (
    Action,
    ModelControlError,
    model_state,
    request_action,
    resolve_model,
    until_settled,
    until_stopped,
)
from llamaherd.gateway.herd import Herd
from llamaherd.supervisor.states import ServiceState

Until = Callable[[Herd, str, float], Awaitable[ServiceState]]  # until_settled, until_stopped
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such model"}
}
FOLLOWED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the tail as JSON; with `follow=true`, `llamaLog` Server-Sent Events",
        "content": {"text/event-stream": {}},
    },
    **NOT_FOUND,
}
TailLines = Annotated[
    int, Query(ge=0, le=100_000, description="how many lines of the tail (0: none)")
]
Follow = Annotated[
    bool,
    Query(
        description="then keep the answer open, sending each batch of new lines as a "
        "`llamaLog` Server-Sent Event (the tail is the first)"
    ),
]


def create_model_router(
    herd: Herd, streams: ModelStreams, cluster: Cluster | None = None
) -> APIRouter:
    """`cluster`: a front's peers, whose models `?host=NAME` acts on (see api/hosted.py)."""
    router = APIRouter(tags=["models"])
    hosts = Hosts(herd, cluster)

    @router.get(
        "/api/models/{model:path}/status",
        response_model=ModelStatusOut,
        responses={**NOT_FOUND, **HOST_ERRORS},
    )
    async def status(model: str, host: Host = None) -> Any:
        """The model's llama-server, as `llamaStatus` describes the primary's: the `data` of its
        latest `llamaModelStatus` event."""
        if (answer := await hosts.elsewhere(host, model, "status", method="GET")) is not None:
            return answer
        model = _resolve(model)
        return model_status_data(model, model_state(herd, model))

    @router.get(
        "/api/models/{model:path}/logs",
        response_model=ModelLogsOut,
        responses=FOLLOWED,
    )
    async def logs(model: str, lines: TailLines = 200, follow: Follow = False) -> Any:
        """The tail of the model's llama-server output (stdout and stderr, every run of it).
        With `follow=true`: the tail as the first `llamaLog` event, then each batch of new lines
        as they come (no line twice, none missed), a comment every 15 s while quiet, until the
        client leaves or llamaherd stops."""
        model = _resolve(model)
        if not follow:
            return {"model": model, "lines": herd.backends[model].service.output.tail(lines)}
        tail, queue = streams.follow(model, lines)
        return event_stream(
            frame(LOG_EVENT, log_event(tail, model)),
            queue,
            lambda batch: frame(LOG_EVENT, log_event(batch, model)),
            lambda: streams.unfollow(model, queue),
        )

    @router.post(
        "/api/models/{model:path}/start",
        response_model=ModelControlOut,
        responses={**NOT_FOUND, **HOST_ERRORS, **TOO_BIG},
    )
    async def start(model: str, wait: WaitSeconds = 0, host: Host = None) -> Any:
        """Start the model in its turn: a load, under the seed's name (within `max_loaded` and
        the memory budget, evicting only idle models; calls off a stop and a failure's
        cool-down). Answers at once, or once it is ready or has given up, within `wait`."""
        return await _act("start", model, wait, host, until_settled)

    @router.post(
        "/api/models/{model:path}/stop",
        response_model=ModelControlOut,
        responses={**NOT_FOUND, **HOST_ERRORS},
    )
    async def stop(model: str, wait: StopWaitSeconds = 60, host: Host = None) -> Any:
        """Stop the model once its requests in flight have finished; it then refuses requests
        (503) until started or loaded again. Answers once stopped, or after `wait` seconds with
        its state then. An adopted server is left running."""
        return await _act("stop", model, wait, host, until_stopped)

    @router.post(
        "/api/models/{model:path}/restart",
        response_model=ModelControlOut,
        responses={**NOT_FOUND, **HOST_ERRORS, **TOO_BIG},
    )
    async def restart(model: str, wait: WaitSeconds = 0, host: Host = None) -> Any:
        """Stop the model once its requests in flight have finished, then start it with a fresh
        retry count (the way out of `error`); requests that arrive meanwhile wait for the new
        server. Answers at once, or once it is ready or has given up, within `wait`."""
        return await _act("restart", model, wait, host, until_settled)

    def _resolve(name: str) -> str:
        try:
            return resolve_model(herd, name)
        except ModelControlError as exc:
            raise HTTPException(exc.status, str(exc)) from None

    def _request(action: Action, name: str) -> str:
        model = _resolve(name)
        try:
            request_action(herd, action, model)
        except ModelControlError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return model

    def _answer(model: str, state: ServiceState) -> dict[str, Any]:
        return {"status": model_status_data(model, state)}

    async def _act(action: Action, name: str, wait: float, host: str | None, until: Until) -> Any:
        """The action on the peer `host` names (its answer), or here, answered after `until`."""
        peer = await hosts.elsewhere(host, name, action, params={"wait": wait}, wait_s=wait)
        if peer is not None:
            return peer
        model = _request(action, name)
        return _answer(model, await until(herd, model, wait))

    return router
