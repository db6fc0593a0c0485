"""A worker and a front in the test's own event loop (uvicorn on free ports), built as `llamaherd
serve` builds them (settings from a mapping, `build_herd`, `build_cluster`, `Telemetry`), with
the fake llama-server: for what a front shows of its peers (control by host, /metrics,
/api/history, `llamaherd models`) without three processes and the real llama-server.

The worker has `m1` (alias `one`) and needs its admin key; the front has a model of its own,
`here`, and two peers: `w1` (the worker) and `gone` (a port nothing listens on)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llamaherd.api.app import Application, create_app
from llamaherd.cluster.front import Cluster
from llamaherd.config.settings import settings_from_mapping
from llamaherd.gateway.herd import Herd
from llamaherd.telemetry.assembly import Telemetry
from llamaherd.wiring.build import access_policy, build_cluster, build_herd, telemetry_options
from tests.client.test_cli import FAST_CONFIG
from tests.conftest import free_port
from tests.serving import serve_application

WORKER_KEY = "front-follows-worker-key-1"
WAIT_S = 20.0


@dataclass
class Node:
    url: str
    herd: Herd
    application: Application
    cluster: Cluster | None = None

    def http(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=WAIT_S, headers=headers)


@dataclass
class Pair:
    worker: Node
    front: Node
    gone_url: str


def _node_settings(tmp: Path, name: str, binary: Path, model: Path, **keys: Any) -> Any:
    copies = {}
    for model_id in keys.pop("models"):
        copies[model_id] = tmp / f"{name}-{model_id}.gguf"
        shutil.copyfile(model, copies[model_id])
    models = {
        model_id: {"path": str(path), **({"aliases": ["one"]} if model_id == "m1" else {})}
        for model_id, path in copies.items()
    }
    return settings_from_mapping(
        {
            "llama_server_binary": str(binary),
            "llama_server_port": free_port(),
            "state_dir": str(tmp / f"state-{name}"),
            "max_loaded": 2,
            "models": models,
            **FAST_CONFIG,
            **keys,
        }
    )


@contextlib.asynccontextmanager
async def worker_and_front(tmp: Path, binary: Path, model: Path) -> AsyncIterator[Pair]:
    keys = [{"name": "front", "key": WORKER_KEY, "scopes": ["admin"]}]
    worker_settings = _node_settings(tmp, "w1", binary, model, models=["m1"], api_keys=keys)
    worker_herd = build_herd(worker_settings)
    worker_app = create_app(
        worker_herd,
        start_service=False,
        access=access_policy(worker_settings),
        telemetry=Telemetry(worker_herd, telemetry_options(worker_settings)),
    )
    async with serve_application(worker_app, graceful_s=3) as worker_url:
        gone_url = f"http://127.0.0.1:{free_port()}"
        peers = [
            {"name": "w1", "url": worker_url, "key": WORKER_KEY},
            {"name": "gone", "url": gone_url},
        ]
        front_settings = _node_settings(tmp, "front", binary, model, models=["here"], peers=peers)
        front_herd = build_herd(front_settings)
        cluster = build_cluster(front_settings, front_herd)
        front_app = create_app(
            front_herd,
            start_service=False,
            telemetry=Telemetry(front_herd, telemetry_options(front_settings)),
            cluster=cluster,
        )
        async with serve_application(front_app, graceful_s=3) as front_url:
            pair = Pair(
                worker=Node(worker_url, worker_herd, worker_app),
                front=Node(front_url, front_herd, front_app, cluster),
                gone_url=gone_url,
            )
            await following(pair)
            yield pair


async def following(pair: Pair) -> None:
    """Until the front follows w1's models, and has given up on `gone` for now."""
    assert pair.front.cluster is not None
    links = pair.front.cluster.links
    async with asyncio.timeout(WAIT_S):
        while not (
            links["w1"].reachable
            and "m1" in links["w1"].models
            and not links["gone"].reachable
            and links["gone"].problem != "not reached yet"
        ):
            await asyncio.sleep(0.05)
