"""Many machines on one: two workers and a front, three `llamaherd serve` processes of their
own with the real llama-server (issue 16). Each worker has a model of its own and both have
`shared`; the front has none, and lists the workers as peers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.load import Load
from tests.cluster.test_dns import LoopbackDNS
from tests.conftest import free_port
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(180)]

WORKER_KEY = "cluster-test-worker-key-1"


@dataclass
class Cluster:
    w1: ServedLlamaherd
    w2: ServedLlamaherd
    front: ServedLlamaherd


def worker_config(
    tmp: Path, binary: Path, model: Path, own: str, max_loaded: int = 2
) -> dict[str, Any]:
    args = ["--parallel", "2"]
    return {
        "llama_server_binary": str(binary),
        "llama_server_port": free_port(),
        "app_port": free_port(),
        "state_dir": str(tmp / f"state-{own}"),
        "readiness_interval_ms": 50,
        "max_loaded": max_loaded,
        "api_keys": [{"name": "front", "key": WORKER_KEY, "scopes": ["admin"]}],
        "models": {
            own: {"path": str(model), "args": args},
            "shared": {"path": str(model), "args": args},
        },
    }


@contextlib.asynccontextmanager
async def cluster(
    tmp: Path, binary: Path, model: Path, *, w1_key: str = WORKER_KEY, w1_max_loaded: int = 2
) -> AsyncIterator[Cluster]:
    w1 = worker_config(tmp, binary, model, "m1", max_loaded=w1_max_loaded)
    w1_cfg = write_config(tmp, w1, "w1.json")
    w2_cfg = write_config(tmp, worker_config(tmp, binary, model, "m2"), "w2.json")
    ports = [json.loads(p.read_text())["app_port"] for p in (w1_cfg, w2_cfg)]
    front_cfg = write_config(
        tmp,
        {
            "app_port": free_port(),
            "state_dir": str(tmp / "state-front"),
            "peers": [
                {"name": "w1", "url": f"http://127.0.0.1:{ports[0]}", "key": w1_key},
                {"name": "w2", "url": f"http://127.0.0.1:{ports[1]}", "key": WORKER_KEY},
            ],
        },
        "front.json",
    )
    async with (
        ServedLlamaherd(w1_cfg) as w1,
        ServedLlamaherd(w2_cfg) as w2,
        ServedLlamaherd(front_cfg) as front,
    ):
        await asyncio.gather(w1.wait_healthy(), w2.wait_healthy(), front.wait_healthy())
        yield Cluster(w1, w2, front)


def _notable(output: str, chars: int = 3000) -> str:
    """A llamaherd's log without its access lines for answered requests, for failure messages."""
    lines = [line for line in output.splitlines() if 'HTTP/1.1" 200' not in line]
    return "\n".join(lines)[-chars:]


async def front_models(front: ServedLlamaherd) -> dict[str, dict[str, Any]]:
    async with front.http() as http:
        answer = await http.get("/v1/models")
    return {m["id"]: m for m in answer.json()["data"]}


async def until_listed(front: ServedLlamaherd, ids: set[str]) -> dict[str, dict[str, Any]]:
    async def listed() -> dict[str, dict[str, Any]] | None:
        models = await front_models(front)
        return models if ids <= set(models) else None

    return await front.wait_until(f"the front lists {sorted(ids)}", listed, timeout_s=30)


async def until_replicated(front: ServedLlamaherd, model: str, hosts: set[str]) -> None:
    """Until the front routes `model` to every one of `hosts` (each followed and reachable)."""

    async def replicated() -> bool:
        replicas = (await front_models(front)).get(model, {}).get("meta", {}).get("replicas", [])
        return hosts <= {r["host"] for r in replicas if r["reachable"]}

    await front.wait_until(f"the front routes {model} to {sorted(hosts)}", replicated, 30)


async def served_by(worker: ServedLlamaherd, model: str) -> int:
    """How many requests for `model` the worker answered 200, from its /metrics."""
    async with worker.http({"authorization": f"Bearer {WORKER_KEY}"}) as http:
        text = (await http.get("/metrics")).text
    total = 0.0
    for labels, value in re.findall(r"^llamaherd_requests_total{([^}]*)} (\S+)", text, re.M):
        if f'model="{model}"' in labels and 'code="200"' in labels:
            total += float(value)
    return int(total)


async def test_every_model_through_the_front_and_shared_load_on_both_workers(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    async with cluster(tmp_path, real_binary, demo_model) as c:
        models = await until_listed(c.front, {"m1", "m2", "shared"})
        hosts = sorted(r["host"] for r in models["shared"]["meta"]["replicas"])
        assert hosts == ["w1", "w2"]
        async with c.front.http(timeout=60) as http:
            for model in ("m1", "m2"):
                answer = await http.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": 4},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
                assert answer.json()["model"] == model
            async with Load(c.front.url, "shared", clients=6, timeout_s=60) as load:
                await load.successes(40, timeout=90)
            outcome = load.figures()
        assert outcome["lost"] == 0 and outcome["failed_clearly"] == 0, load.details("lost")
        on_w1, on_w2 = await served_by(c.w1, "shared"), await served_by(c.w2, "shared")
        assert on_w1 > 0 and on_w2 > 0, (on_w1, on_w2)
        assert on_w1 + on_w2 >= 40


async def test_a_forwarded_request_is_never_forwarded_again(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    async with cluster(tmp_path, real_binary, demo_model) as c:
        await until_listed(c.front, {"m1", "m2"})
        async with c.front.http() as http:
            # As if another front had sent it here: the front has no model of its own.
            looped = await http.post(
                "/v1/completions",
                json={"model": "m1", "prompt": "x", "max_tokens": 2},
                headers={"x-llamaherd-hop": "1"},
            )
        assert looped.status_code == 404
        assert "does not exist" in looped.json()["error"]["message"]


async def test_a_wrong_peer_key_is_named_and_the_front_serves_the_rest(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    async with cluster(tmp_path, real_binary, demo_model, w1_key="not-the-right-key-123") as c:
        await until_listed(c.front, {"m2"})
        async with c.front.http(timeout=30) as http:
            answer = await http.post(
                "/v1/completions", json={"model": "m2", "prompt": "x", "max_tokens": 2}
            )
            assert answer.status_code == 200, answer.text
            unknown = await http.post(
                "/v1/completions", json={"model": "m1", "prompt": "x", "max_tokens": 2}
            )
            assert unknown.status_code == 404  # w1 lists nothing to a front it refuses
        await c.front.wait_until(
            "the front says why w1 is not followed",
            lambda: asyncio.sleep(0, "peer w1" in c.front.output and "key" in c.front.output),
        )


async def test_a_killed_worker_fails_only_what_it_had_in_flight(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    async with cluster(tmp_path, real_binary, demo_model) as c:
        await until_replicated(c.front, "shared", {"w1", "w2"})
        async with Load(c.front.url, "shared", clients=4, timeout_s=60) as load:
            await load.successes(8, timeout=90)
            c.w1.remember_servers()
            killed_at = asyncio.get_running_loop().time()
            c.w1.close()  # SIGKILL to w1 and its llama-servers
            after = await load.next_success(after=killed_at, timeout=30)
            await load.successes(8, timeout=60)
        outcome = load.figures()
        assert outcome["lost"] == 0, load.details("lost")
        # Only what was in flight on w1 (4 clients: at most 4) fails, and clearly.
        logs = f"\nthe front:\n{_notable(c.front.output)}\nw2:\n{_notable(c.w2.output)}"
        assert outcome["failed_clearly"] <= 4, f"{load.details('failed_clearly')}{logs}"
        assert after.ended - killed_at < 5, logs

        async def unreachable() -> bool:
            async with c.front.http() as http:
                models = (await http.get("/v1/models")).json()["data"]
            shared = next(m for m in models if m["id"] == "shared")
            w1 = [r for r in shared["meta"]["replicas"] if r["host"] == "w1"]
            return bool(w1) and not w1[0]["reachable"]

        await c.front.wait_until("w1 is unreachable", unreachable, timeout_s=5)


async def test_workers_found_through_dns_srv_come_and_go_with_their_records(
    tmp_path: Path, real_binary: Path, demo_model: Path, dns_server: LoopbackDNS
) -> None:
    """A Kubernetes headless Service, played by a DNS server of the test's own: the front
    follows whatever workers its SRV name lists."""
    name = "_http._tcp.llamaherd-workers.llm.svc.cluster.local"
    worker_cfg = write_config(tmp_path, worker_config(tmp_path, real_binary, demo_model, "m1"))
    port = json.loads(worker_cfg.read_text())["app_port"]
    front_cfg = write_config(
        tmp_path,
        {
            "app_port": free_port(),
            "state_dir": str(tmp_path / "state-front"),
            "peers_dns": name,
            "peers_dns_server": dns_server.address,
            "peers_dns_interval_s": 1,
            "peers_dns_key_env": "WORKERS_KEY",
        },
        "front.json",
    )
    env = {"WORKERS_KEY": WORKER_KEY}
    async with ServedLlamaherd(worker_cfg) as worker, ServedLlamaherd(front_cfg, env=env) as front:
        await asyncio.gather(worker.wait_healthy(), front.wait_healthy())
        assert "m1" not in await front_models(front)
        dns_server.records[name] = [(0, 100, port, "127.0.0.1.")]
        models = await until_listed(front, {"m1", "shared"})
        assert [r["host"] for r in models["m1"]["meta"]["replicas"]] == [f"127.0.0.1:{port}"]

        dns_server.records.pop(name)

        async def gone() -> bool:
            return "m1" not in await front_models(front)

        await front.wait_until("the front forgets the worker", gone, timeout_s=15)


async def test_a_busy_model_is_never_evicted_and_the_front_moves_its_load(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    """w1 can hold one model at a time. Under load on `shared`, a request for m1 (only w1 has
    it) makes w1 swap: its `shared` drains (every request in flight on it finishes) and the
    front sends `shared` elsewhere meanwhile, when it sees the drain in time. Nothing is cut,
    nothing is lost."""
    async with cluster(tmp_path, real_binary, demo_model, w1_max_loaded=1) as c:
        await until_listed(c.front, {"m1", "shared"})
        async with Load(c.front.url, "shared", clients=4, timeout_s=60) as load:
            await load.successes(8, timeout=90)
            async with c.front.http(timeout=90) as http:
                m1 = await http.post(
                    "/v1/completions", json={"model": "m1", "prompt": "x", "max_tokens": 2}
                )
            assert m1.status_code == 200, m1.text
            await load.successes(8, timeout=90)
        outcome = load.figures()
        assert outcome["lost"] == 0, load.details("lost")
        assert outcome["failed_clearly"] == 0, load.details("failed_clearly")
