"""What a front shows of its peers beside its own: their `/metrics` series, labelled by `peer`,
and their `/api/history` rows, marked with their `host`. Each worker keeps its own store; the
front asks every reachable peer at once, each under a short timeout (cluster/calls.py), when it
is asked itself. A peer that fails is named in the answer, never the cause of an error.

A request that a front forwarded (the hop header) gets this llamaherd's own figures only: two
fronts that list each other never ask each other in a loop, and never count a row twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from pydantic import BaseModel, ValidationError

from llamaherd.api.hosted import LOCAL_HOST
from llamaherd.cluster.calls import ask_all
from llamaherd.cluster.front import Cluster
from llamaherd.metrics.prometheus import merge_peer_expositions

Lists = Mapping[str, tuple[type[BaseModel], str]]  # a list's name: its rows' schema, time field


async def with_peer_metrics(cluster: Cluster, own: bytes, timeout_s: float) -> bytes:
    """This llamaherd's exposition with every reachable peer's own, `peer="NAME"` added."""
    asked = await ask_all(cluster, "/metrics", timeout_s=timeout_s)
    texts = [
        (a.peer, None if a.answer is None else a.answer.body.decode("utf-8", "replace"))
        for a in asked
    ]
    return merge_peer_expositions(own.decode("utf-8"), texts).encode()


async def with_peer_history(
    cluster: Cluster, own: dict[str, Any], lists: Lists, params: dict[str, str], limit: int
) -> dict[str, Any]:
    """`own` history and every peer's, asked with the same `params`: each row of `lists` with
    its `host` (`local` for this llamaherd's), each list in time order cut to the newest
    `limit`, and in `peers` how each peer's part went."""
    asked = await ask_all(cluster, "/api/history", params=params)
    merged = {name: [{**row, "host": LOCAL_HOST} for row in own[name]] for name in lists}
    peers: list[dict[str, Any]] = []
    for part in asked:
        if part.answer is None:
            peers.append({"host": part.peer, "ok": False, "problem": part.problem})
            continue
        rows, problem = _peer_rows(part.answer.body, lists)
        for name, kept in rows.items():
            merged[name] += [{**row, "host": part.peer} for row in kept]
        peers.append({"host": part.peer, "ok": problem is None, "problem": problem})
    for name, (_schema, key) in lists.items():
        merged[name] = sorted(merged[name], key=itemgetter(key))[-limit:]
    return {**merged, "store": own["store"], "peers": peers}


def _peer_rows(body: bytes, lists: Lists) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """The rows of a peer's history answer that have the shape ours have, and what was wrong
    with the rest (a peer of another version, or not llamaherd), if anything."""
    try:
        payload = json.loads(body)
    except ValueError:
        return {}, "its /api/history answer is not JSON"
    if not isinstance(payload, dict):
        return {}, "its /api/history answer is not a JSON object"
    rows: dict[str, list[dict[str, Any]]] = {}
    dropped = 0
    for name, (schema, _key) in lists.items():
        listed = payload.get(name)
        rows[name] = []
        for row in listed if isinstance(listed, list) else []:
            try:
                schema.model_validate(row)
            except ValidationError:
                dropped += 1
                continue
            rows[name].append(row)
    store = payload.get("store")
    warning = store.get("warning") if isinstance(store, dict) else None
    if dropped:
        return rows, f"{dropped} row(s) of its history were not of this version's shape"
    return rows, f"its history store: {warning}" if warning else None
