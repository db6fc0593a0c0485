"""Which host an action on a model is for: `?host=NAME` on the model routes of a front.

`host` names one of the front's peers: the action goes to that peer's own route (the same path,
the same query but `host`), with the peer's key and the hop header, and the client gets what
the peer answered, its status and body as they were. Absent (or `local`), the action is this
llamaherd's own, as on any llamaherd; on a front, a model that only its peers serve is then
a 409 that names the hosts that have it, never a guess among them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import HTTPException, Query
from fastapi.responses import Response

from llamaherd.api.schemas import ErrorOut
from llamaherd.cluster.calls import call
from llamaherd.cluster.front import Cluster
from llamaherd.errors import PeerCallError
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.registry import UnknownModelError

LOCAL_HOST = "local"  # how a front's own models are named where hosts are
# What `?host=` can add to a model route's answers (in its OpenAPI `responses`).
HOST_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "no peer of that name (the peers are listed)"},
    409: {"model": ErrorOut, "description": "only peers serve that model: name the host"},
    502: {"model": ErrorOut, "description": "the peer named did not answer"},
}
ANSWER_MARGIN_S = 10.0  # beyond the action's own wait, for the peer's answer to come back

Host = Annotated[
    str | None,
    Query(
        description="a front's peer that serves the model (its name, as `peers` in "
        "llamaModels lists it): the action is that peer's, answered as it answered; "
        f"`{LOCAL_HOST}` or absent: this llamaherd's own"
    ),
]


class Hosts:
    """Sends an action to the peer `host` names, or leaves it to this llamaherd."""

    def __init__(self, herd: Herd, cluster: Cluster | None) -> None:
        self.herd = herd
        self.cluster = cluster

    async def elsewhere(
        self,
        host: str | None,
        model: str,
        action: str,
        *,
        method: str = "POST",
        params: Mapping[str, Any] | None = None,
        wait_s: float = 0,
    ) -> Response | None:
        """The peer's answer to `method /api/models/{model}/{action}` when `host` names a
        peer; None when the action is this llamaherd's (HTTPException 409 for a model only
        peers serve, 400 for a host there is not, 502 for a peer that does not answer)."""
        cluster = self.cluster
        if host is None or host == LOCAL_HOST:
            if host is None and cluster is not None and not self._local(model):
                hosts = cluster.hosts_of(model)
                if hosts:
                    raise HTTPException(
                        409,
                        f"model {model!r} is not served by this llamaherd but by its peers "
                        f"{', '.join(hosts)}: name one with ?host=NAME (on the command line, "
                        f"--host {hosts[0]})",
                    )
            return None
        link = cluster.links.get(host) if cluster is not None else None
        if cluster is None or link is None:
            peers = ", ".join(cluster.links) if cluster is not None else ""
            there = f"its peers are {peers}" if peers else "it has no peers"
            raise HTTPException(
                400,
                f"this llamaherd has no peer named {host!r} ({there}; '{LOCAL_HOST}' is "
                "its own models)",
            )
        query = {key: _text(value) for key, value in (params or {}).items()}
        try:
            answer = await call(
                cluster,
                link,
                method,
                f"/api/models/{_segment(model)}/{action}",
                params=query,
                timeout_s=wait_s + ANSWER_MARGIN_S,
            )
        except PeerCallError as exc:
            raise HTTPException(502, str(exc)) from None
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    def _local(self, name: str) -> bool:
        try:
            self.herd.registry.resolve(name)
        except UnknownModelError:
            return False
        return True


def _segment(name: str) -> str:
    """`name` as one path segment of the peer's URL (an id may hold a slash)."""
    return quote(name, safe="")


def _text(value: Any) -> str:
    """A query value as the peer's route reads it (`true`, not Python's `True`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
