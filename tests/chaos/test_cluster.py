"""Faults of a cluster: two workers and a front, three `llamaherd serve` processes of their own
with the real llama-server (issue 16).

Each worker serves a model of its own and `shared` (two slots each, loaded at start); the front
has no model of its own and lists both workers as peers. The faults, each under continuous load
on `shared` through the front:

- a worker SIGKILLed (llamaherd and its llama-servers): nothing is lost, only the requests in
  flight on it fail (clearly), the other replica serves the next request at once, and the front
  marks the worker unreachable;
- a worker stopped (SIGSTOP to its llamaherd only): unreachable within 5 s while the other
  serves, and back in routing after SIGCONT, without a restart of the front;
- a worker restarted with another set of models: the front's list follows within 1 s of the
  new worker answering /healthz;
- peers that are not llamaherd (a llama-server, a port nobody listens on): each is named in
  the front's log, and the front serves the models of the peer that is.

The front learns of a peer by probing its /healthz every 0.75 s (unreachable after 2 failed
probes) and by its live `llamaModels` feed; these tests time what a client sees of that, by
asking the front's /v1/models every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import Figures
from tests.chaos.load import Load
from tests.cluster.test_front_real import WORKER_KEY, served_by
from tests.conftest import free_port
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(180)]

KEY = WORKER_KEY  # the workers' admin key, which the front holds
AUTH = {"authorization": f"Bearer {KEY}"}
CLIENTS = 4  # the load's concurrency: at most this many requests are in flight anywhere
SHARED = "shared"


# ---- the cluster ---------------------------------------------------------------------------------


def worker_settings(
    tmp: Path, binary: Path, model: Path, models: tuple[str, ...], app_port: int
) -> dict[str, Any]:
    args = ["--parallel", "2"]
    return {
        "llama_server_binary": str(binary),
        "llama_server_port": free_port(),
        "app_port": app_port,
        "state_dir": str(tmp / f"state-{app_port}"),
        "readiness_interval_ms": 50,
        "max_loaded": len(models),
        "api_keys": [{"name": "front", "key": KEY, "scopes": ["admin"]}],
        "models": {name: {"path": str(model), "args": args, "preload": True} for name in models},
    }


def front_settings(tmp: Path, peers: dict[str, int]) -> dict[str, Any]:
    return {
        "app_port": free_port(),
        "state_dir": str(tmp / "state-front"),
        "peers": [
            {"name": name, "url": f"http://127.0.0.1:{port}", "key": KEY}
            for name, port in peers.items()
        ],
    }


@dataclass
class Cluster:
    tmp: Path
    w1: ServedLlamaherd
    w2: ServedLlamaherd
    front: ServedLlamaherd


@pytest.fixture
async def c(tmp_path: Path, real_binary: Path, demo_model: Path) -> AsyncIterator[Cluster]:
    """w1 (m1, shared) and w2 (m2, shared), every model ready, and a front that lists all three
    with both replicas of `shared` reachable."""
    tmp, binary, model = tmp_path, real_binary, demo_model
    w1_cfg = write_config(
        tmp, worker_settings(tmp, binary, model, ("m1", SHARED), free_port()), "w1.json"
    )
    w2_cfg = write_config(
        tmp, worker_settings(tmp, binary, model, ("m2", SHARED), free_port()), "w2.json"
    )
    ports = {
        name: json.loads(cfg.read_text())["app_port"]
        for name, cfg in (("w1", w1_cfg), ("w2", w2_cfg))
    }
    front_cfg = write_config(tmp, front_settings(tmp, ports), "front.json")
    async with (
        ServedLlamaherd(w1_cfg) as w1,
        ServedLlamaherd(w2_cfg) as w2,
        ServedLlamaherd(front_cfg) as front,
    ):
        await asyncio.gather(
            *(w.wait_ready(m, headers=AUTH) for w in (w1, w2) for m in (SHARED,)),
            front.wait_healthy(),
        )
        await until(front, "both replicas of shared are ready and reachable", both_ready)
        yield Cluster(tmp, w1, w2, front)


async def front_models(front: ServedLlamaherd) -> dict[str, dict[str, Any]]:
    async with front.http(timeout=2) as http:
        answer = await http.get("/v1/models")
    return {m["id"]: m for m in answer.json()["data"]}


def replica(models: dict[str, dict[str, Any]], model: str, host: str) -> dict[str, Any] | None:
    entry = models.get(model)
    found = [r for r in (entry or {}).get("meta", {}).get("replicas", []) if r["host"] == host]
    return found[0] if found else None


async def both_ready(front: ServedLlamaherd) -> bool:
    models = await front_models(front)
    replicas = [replica(models, SHARED, host) for host in ("w1", "w2")]
    return all(r and r["reachable"] and r["phase"] == "ready" for r in replicas)


async def reachable(front: ServedLlamaherd, host: str, model: str = SHARED) -> bool | None:
    """Whether the front calls `host`'s replica of `model` reachable (None: it lists none)."""
    found = replica(await front_models(front), model, host)
    return None if found is None else bool(found["reachable"])


async def until(
    front: ServedLlamaherd,
    what: str,
    check: Callable[[ServedLlamaherd], Awaitable[bool]],
    timeout_s: float = 30.0,
) -> float:
    """Ask again (every 50 ms) until `check` holds; the monotonic time it first did."""

    async def held() -> float | None:
        return time.monotonic() if await check(front) else None

    return await front.wait_until(what, held, timeout_s)


async def worker_models(worker: ServedLlamaherd) -> dict[str, dict[str, Any]]:
    return await worker.models(AUTH)


async def _served_some(worker: ServedLlamaherd, model: str) -> bool:
    return await served_by(worker, model) > 0


def loop_time() -> float:
    return asyncio.get_running_loop().time()


# ---- SIGKILL -------------------------------------------------------------------------------------


async def test_sigkill_of_a_worker_under_load_fails_only_its_in_flight(
    c: Cluster, figures: Figures
) -> None:
    async with Load(c.front.url, SHARED, clients=CLIENTS, timeout_s=60) as load:
        await load.successes(20, timeout=90)
        # The load is on both before the kill (on a starved machine w1 may take a moment).
        await until(c.w1, "w1 has served shared", lambda w: _served_some(w, SHARED))
        in_flight_w1 = int((await worker_models(c.w1))[SHARED]["inFlight"])
        c.w1.remember_servers()
        killed, killed_at = time.monotonic(), loop_time()
        c.w1.close()  # SIGKILL to w1's group, then to each of its llama-servers
        gone = asyncio.create_task(
            until(c.front, "w1 is unreachable", lambda f: _is(reachable(f, "w1"), False))
        )
        after = await load.next_success(after=killed_at, timeout=30)
        unreachable_at = await gone
        await load.successes(20, timeout=60)
    outcome = load.figures()
    failed = [o for o in load.outcomes if o.kind == "failed_clearly"]
    failed_sent_after = sum(1 for o in failed if o.started >= killed_at)
    figures.update(outcome)
    figures["w1_in_flight_before_kill"] = in_flight_w1
    figures["clients"] = CLIENTS
    figures["failed_sent_after_kill"] = failed_sent_after
    figures["kill_to_first_served_by_w2_s"] = round(after.ended - killed_at, 3)
    figures["kill_to_front_marks_unreachable_s"] = round(unreachable_at - killed, 3)
    figures["served_by_w2_after"] = await served_by(c.w2, SHARED)

    assert outcome["lost"] == 0, load.details("lost")
    # Only what was in flight on w1 can fail: never more than the load's concurrency (at most
    # CLIENTS requests are in flight anywhere), and never a request sent after the kill.
    assert outcome["failed_clearly"] <= CLIENTS, load.details("failed_clearly")
    assert failed_sent_after == 0, load.details("failed_clearly")
    assert after.ended - killed_at < 5
    assert unreachable_at - killed < 5


async def _is(value: Awaitable[bool | None], wanted: bool) -> bool:
    return (await value) is wanted


# ---- SIGSTOP, SIGCONT ----------------------------------------------------------------------------


async def test_sigstop_of_a_worker_is_unreachable_then_rejoins_after_sigcont(
    c: Cluster, figures: Figures
) -> None:
    async with Load(c.front.url, SHARED, clients=CLIENTS, timeout_s=60) as load:
        await load.successes(20, timeout=90)
        stopped = time.monotonic()
        c.w1.send_signal(signal.SIGSTOP)
        try:
            unreachable_at = await until(
                c.front,
                "w1 is unreachable",
                lambda f: _is(reachable(f, "w1"), False),
                timeout_s=10,
            )
            on_w2 = await served_by(c.w2, SHARED)
            # Requests sent now go to w2 alone, and succeed.
            served_while_stopped = await _successes_sent_after(load, loop_time(), 10)
            on_w2_after = await served_by(c.w2, SHARED)
        finally:
            c.w1.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        back_at = await until(
            c.front, "w1 is reachable again", lambda f: _is(reachable(f, "w1"), True)
        )
    first = load.figures()
    # The load's requests stuck on w1 while it was stopped have all ended now; a new load
    # shows whether new requests reach w1 again.
    on_w1_before = await served_by(c.w1, SHARED)
    async with Load(c.front.url, SHARED, clients=CLIENTS, timeout_s=60) as again:
        await again.successes(30, timeout=60)
    on_w1_after = await served_by(c.w1, SHARED)
    second = again.figures()
    figures.update(first)
    figures["stop_to_front_marks_unreachable_s"] = round(unreachable_at - stopped, 3)
    figures["served_by_w2_while_stopped"] = on_w2_after - on_w2
    figures["cont_to_reachable_s"] = round(back_at - resumed, 3)
    figures["after_rejoin"] = (
        f"sent {second['sent']}, succeeded {second['succeeded']}, lost {second['lost']}"
    )
    figures["served_by_w1_after_rejoin"] = on_w1_after - on_w1_before

    assert unreachable_at - stopped < 5
    assert served_while_stopped >= 10 and on_w2_after - on_w2 >= 10
    assert first["lost"] == 0, load.details("lost")
    assert first["failed_clearly"] == 0, load.details("failed_clearly")
    assert second["lost"] == 0 and second["failed_clearly"] == 0, again.details("lost")
    assert on_w1_after > on_w1_before, "no request reached w1 after it rejoined"


async def _successes_sent_after(load: Load, moment: float, count: int) -> int:
    def enough() -> bool:
        return _count_sent_after(load, moment) >= count

    await load.wait_for(enough, f"{count} requests sent after {moment} succeed", timeout=30)
    return _count_sent_after(load, moment)


def _count_sent_after(load: Load, moment: float) -> int:
    return sum(1 for o in load.outcomes if o.kind == "succeeded" and o.started >= moment)


# ---- another set of models -----------------------------------------------------------------------


async def test_a_worker_restarted_with_other_models_is_followed_within_1_s(
    c: Cluster, demo_model: Path, figures: Figures
) -> None:
    await c.w1.stop()
    c.w1.close()
    settings = json.loads(c.w1.config.read_text())
    settings["models"] = {
        name: {"path": str(demo_model), "args": ["--parallel", "2"]} for name in ("m3", "m4")
    }
    settings["max_loaded"] = 2
    c.w1.config.write_text(json.dumps(settings))
    async with ServedLlamaherd(c.w1.config) as again:

        async def answers(_: ServedLlamaherd) -> bool:
            async with again.http(timeout=1) as http:
                return (await http.get("/healthz")).status_code == 200

        async def follows(front: ServedLlamaherd) -> bool:
            models = await front_models(front)
            hosts = {
                model: {r["host"] for r in entry["meta"]["replicas"]}
                for model, entry in models.items()
            }
            return (
                "w1" in hosts.get("m3", set())
                and "w1" in hosts.get("m4", set())
                and "m1" not in hosts
                and hosts.get(SHARED) == {"w2"}
            )

        healthy_at, followed_at = await asyncio.gather(
            until(again, "the new w1 answers /healthz", answers),
            until(c.front, "the front lists w1's new models", follows),
        )
        async with c.front.http(timeout=30) as http:
            answer = await http.post(
                "/v1/chat/completions",
                json={"model": "m3", "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 4},
            )  # fmt: skip
        figures["healthz_to_front_lists_new_models_s"] = round(followed_at - healthy_at, 3)
        figures["m3_through_front"] = answer.status_code

    assert answer.status_code == 200, answer.text
    assert followed_at - healthy_at < 1.0


# ---- peers that are not llamaherd ----------------------------------------------------------------


async def test_peers_that_are_llama_server_or_nothing_are_named_and_the_rest_is_served(
    tmp_path: Path, real_binary: Path, demo_model: Path, figures: Figures
) -> None:
    llama_port, nothing_port = free_port(), free_port()
    worker_cfg = write_config(
        tmp_path,
        worker_settings(tmp_path, real_binary, demo_model, ("m1",), free_port()),
        "w1.json",
    )
    worker_port = json.loads(worker_cfg.read_text())["app_port"]
    front_cfg = write_config(
        tmp_path,
        front_settings(tmp_path, {"ls": llama_port, "void": nothing_port, "w1": worker_port}),
        "front.json",
    )
    llama_server = subprocess.Popen(
        [str(real_binary), "-m", str(demo_model), "--host", "127.0.0.1", "--port", str(llama_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{llama_port}/health")).is_success:
                        break
                await asyncio.sleep(0.05)
        async with ServedLlamaherd(worker_cfg) as worker, ServedLlamaherd(front_cfg) as front:
            started = time.monotonic()
            await asyncio.gather(worker.wait_ready("m1", headers=AUTH), front.wait_healthy())
            said = {
                "ls": f"peer ls (http://127.0.0.1:{llama_port}) is not llamaherd "
                "(it looks like llama-server)",
                "void": f"peer void (http://127.0.0.1:{nothing_port}) does not answer",
            }
            for name, line in said.items():

                async def logged(_: ServedLlamaherd, line: str = line) -> bool:
                    return line in front.output

                at = await until(front, f"the front's log names {name}", logged)
                figures[f"{name}_named_after_s"] = round(at - started, 3)

            async def m1_listed(f: ServedLlamaherd) -> bool:
                return await _is(reachable(f, "w1", "m1"), True)

            await until(front, "the front lists m1 of w1", m1_listed)
            async with front.http(timeout=30) as http:
                answer = await http.post(
                    "/v1/chat/completions",
                    json={"model": "m1", "messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": 4},
                )  # fmt: skip
            figures["m1_through_front"] = answer.status_code
            figures["front_lists"] = ", ".join(sorted(await front_models(front)))
            figures["front_log"] = " / ".join(said.values())
    finally:
        with contextlib.suppress(ProcessLookupError):
            llama_server.kill()
        llama_server.wait(timeout=10)

    assert answer.status_code == 200, answer.text
    assert figures["front_lists"] == "m1"
