"""Asking peers directly, for what their live feed does not carry: an action on one of their
models (`call`), and their `/metrics` and `/api/history` for the front's own (`ask_all`).

Every call goes out as the front's forwarded requests do: with the peer's key (never the
client's) and the hop header, so a peer that is itself a front answers for its own models
alone and never asks its peers in turn. `ask_all` asks every reachable peer at once, each
under a short timeout: a slow or failing peer is named in the result, never waited for long,
and never an error of the whole answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from llamaherd.cluster.front import Cluster
from llamaherd.cluster.peers import HOP_HEADER, PeerLink
from llamaherd.errors import PeerCallError

ASK_TIMEOUT_S = 2.0  # /metrics and /api/history of one peer
ANSWER_LIMIT_BYTES = 64 * 1024 * 1024  # the largest history (100,000 rows of each list) fits


@dataclass(frozen=True)
class PeerAnswer:
    """What a peer answered: its status, its body, its content type."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Asked:
    """One peer's part of `ask_all`: its answer, or why there is none (`problem`)."""

    peer: str
    answer: PeerAnswer | None = None
    problem: str | None = None


async def call(
    cluster: Cluster,
    link: PeerLink,
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    timeout_s: float,
) -> PeerAnswer:
    """`method path?params` on the peer of `link`, with its key and the hop header; whatever
    status it answers. PeerCallError when it does not answer within `timeout_s`."""
    peer = link.peer
    headers = {**peer.headers(), HOP_HEADER: "1", "accept-encoding": "identity"}
    url = f"{peer.base_url}{path}"
    session = cluster.herd.upstreams.session(peer.base_url)
    try:
        async with asyncio.timeout(timeout_s):
            async with session.request(
                method, url, params=dict(params or {}), headers=headers
            ) as answer:
                body = bytearray()
                async for chunk in answer.content.iter_any():
                    body += chunk
                    if len(body) > ANSWER_LIMIT_BYTES:
                        raise PeerCallError(
                            f"peer {peer.name} answered {method} {path} with more than "
                            f"{ANSWER_LIMIT_BYTES} bytes"
                        )
                content_type = answer.headers.get("content-type", "application/octet-stream")
                return PeerAnswer(answer.status, bytes(body), content_type)
    except TimeoutError:
        raise PeerCallError(
            f"peer {peer.name} ({peer.base_url}) did not answer {method} {path} within "
            f"{timeout_s:g} s"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        why = str(exc) or type(exc).__name__
        raise PeerCallError(
            f"peer {peer.name} ({peer.base_url}) could not be asked {method} {path}: {why}"
        ) from None


async def ask_all(
    cluster: Cluster,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    timeout_s: float = ASK_TIMEOUT_S,
) -> list[Asked]:
    """`GET path?params` on every peer at once, in the order they are listed. An unreachable
    peer is not asked (its problem is its link's); an answer other than 200 is a problem."""
    links = list(cluster.links.values())

    async def ask(link: PeerLink) -> Asked:
        name = link.peer.name
        if not link.reachable:
            return Asked(name, problem=f"unreachable: {link.problem or 'not reached yet'}")
        try:
            answer = await call(cluster, link, "GET", path, params=params, timeout_s=timeout_s)
        except PeerCallError as exc:
            return Asked(name, problem=str(exc))
        if answer.status != 200:
            said = answer.body[:200].decode("utf-8", errors="replace")
            return Asked(name, problem=f"answered {path} with HTTP {answer.status}: {said}")
        return Asked(name, answer=answer)

    return list(await asyncio.gather(*(ask(link) for link in links)))
