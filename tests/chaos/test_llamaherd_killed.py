"""llamaherd itself killed with SIGKILL while it serves a herd of two models under load.

Nothing of llamaherd runs after SIGKILL: no shutdown, no stop of its llama-servers. Those run in
sessions of their own (so a signal to llamaherd's group never reaches them), and would live on,
unseen, holding their ports and their memory, were it not for the parent-death signal each gets
at launch (PR_SET_PDEATHSIG, see supervisor/process.py): the kernel kills them with llamaherd.
`llamaherd serve` runs its event loop, which launches every llama-server, on its main thread,
whose end is the process's end; the signal is tied to the thread that launched the child.

What the test holds llamaherd to:
- every request in flight at the kill ends at once: answered if its answer was already on its
  way, else with a broken connection (`cut_by_kill`: llamaherd cannot answer once it is dead),
  never left hanging until the client's timeout;
- no llama-server it started outlives it;
- a new `llamaherd serve` with the same config starts again on the same ports, with servers of
  its own, and serves both models without losing a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.chaos.conftest import Figures
from tests.chaos.load import Load, Outcome
from tests.conftest import free_port, pid_alive
from tests.gateway.conftest import FAST_POLICY
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(120)]

MODELS = ("alpha", "beta")
CLIENT_TIMEOUT_S = 30.0


def herd_config(folder: Path, model: Path, binary: Path) -> Path:
    """Two models, both loaded at once, each on a fixed port: a second llamaherd with the same
    config looks for its servers exactly where the first one ran them."""
    models = {name: {"path": str(model), "port": free_port()} for name in MODELS}
    settings = {
        "llama_server_binary": str(binary),
        "llama_server_port": free_port(),
        "app_port": free_port(),
        "models": models,
        "max_loaded": len(MODELS),
        "state_dir": str(folder / "state"),
        **FAST_POLICY,
    }
    return write_config(folder, settings)


async def ready_herd(herd: ServedLlamaherd) -> dict[str, int]:
    """Every model ready; their pids, by model."""
    pids = {}
    for model in MODELS:
        facts = await herd.wait_ready(model)
        pids[model] = int(facts["pid"])
    return pids


def has_in_flight(load: Load) -> bool:
    return load.in_flight >= 1


async def kill_under_load(herd: ServedLlamaherd, loads: Sequence[Load]) -> tuple[float, int]:
    """Once every load has had answers and has a request in flight: SIGKILL llamaherd.
    When it was killed (loop time), and how many requests were in flight then."""
    for load in loads:
        await load.successes(5)
        await load.wait_for(functools.partial(has_in_flight, load), "a request in flight")
    for load in loads:
        load.halt()
    in_flight = sum(load.in_flight for load in loads)
    killed_at = asyncio.get_running_loop().time()
    herd.send_signal(signal.SIGKILL)
    return killed_at, in_flight


async def wait_all_dead(pids: Sequence[int], timeout_s: float = 10.0) -> list[int]:
    """Those of `pids` still alive after `timeout_s` (checked every 10 ms until then)."""
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return sorted(pid for pid in pids if pid_alive(pid))


def check_cut(cut: Sequence[Outcome], killed_at: float) -> None:
    for outcome in cut:
        # Answered (it was on its way), or a broken connection at once: never a timeout.
        assert outcome.kind in ("succeeded", "lost"), outcome
        assert "within" not in outcome.detail, outcome
        assert outcome.ended - killed_at < 5.0, outcome


async def test_sigkill_of_llamaherd_leaves_no_llama_server_and_a_new_one_serves(
    tmp_path: Path, demo_model: Path, real_binary: Path, figures: Figures
) -> None:
    config = herd_config(tmp_path, demo_model, real_binary)
    first, second = ServedLlamaherd(config), ServedLlamaherd(config)
    try:
        first.start()
        servers = await ready_herd(first)
        assert set(servers.values()) == first.remember_servers(), "not its own children"

        loads = [Load(first.url, model, clients=3, timeout_s=CLIENT_TIMEOUT_S) for model in MODELS]
        async with contextlib.AsyncExitStack() as stack:
            for load in loads:
                await stack.enter_async_context(load)
            killed_at, in_flight = await kill_under_load(first, loads)
        code = await first.wait_exit(10)
        survivors = await wait_all_dead(list(servers.values()))
        servers_gone_s = asyncio.get_running_loop().time() - killed_at

        outcomes = [outcome for load in loads for outcome in load.outcomes]
        early = [o for o in outcomes if o.ended < killed_at]
        cut = [o for o in outcomes if o.ended >= killed_at]
        figures["models"] = len(MODELS)
        figures["sent"] = len(outcomes)
        figures["succeeded"] = sum(1 for o in outcomes if o.kind == "succeeded")
        figures["in_flight_at_kill"] = in_flight
        figures["cut_by_kill"] = sum(1 for o in cut if o.kind == "lost")
        figures["longest_cut_wait_s"] = max((o.ended - killed_at for o in cut), default=0.0)
        figures["llama_servers_alive_after_kill"] = len(survivors)
        figures["llama_servers_gone_after_s"] = servers_gone_s

        assert code == -signal.SIGKILL
        assert not survivors, f"llama-server {survivors} outlived llamaherd's SIGKILL"
        assert [o for o in early if o.kind != "succeeded"] == []
        assert len(cut) == in_flight
        check_cut(cut, killed_at)

        # The same config again: the same ports, free, and servers of its own.
        began = time.monotonic()
        second.start()
        new_servers = await ready_herd(second)
        figures["second_llamaherd_ready_s"] = time.monotonic() - began
        assert set(new_servers.values()) == second.remember_servers()
        assert not set(new_servers.values()) & set(servers.values())
        again = [Load(second.url, model, clients=2, timeout_s=CLIENT_TIMEOUT_S) for model in MODELS]
        async with contextlib.AsyncExitStack() as stack:
            for load in again:
                await stack.enter_async_context(load)
            await asyncio.gather(*(load.successes(5) for load in again))
        figures["second_sent"] = sum(load.sent for load in again)
        figures["second_lost"] = sum(load.count("lost") for load in again)
        for load in again:
            assert load.count("lost") == load.count("failed_clearly") == 0, load.details("lost")

        assert await second.stop(30) == 0, second.tail()
        assert await wait_all_dead(list(new_servers.values()), 5.0) == []
    finally:
        left = first.close() + second.close()
        assert not left, f"llama-server processes left running: {left}"
