"""Faults before a server ever serves: one that crashes at every start, and a port that some
other program holds.

- A llama-server that dies at start is retried after 1, 2, 4, 8 and 16 s (the default policy,
  measured on the real clock, each within 20%) and then left in `error`: six launches, not
  seven, and no crash loop for ever.
- A model whose port another program listens on is an `error` that names that program, for
  every request a clear 503: nothing is launched onto the port, and the program is never
  signalled. Once it is gone, the next request starts the model and is served.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.states import ServiceState, Status
from tests.chaos.conftest import Figures
from tests.chaos.load import Load
from tests.conftest import ServiceFactory, StateRecorder, free_port, pid_alive
from tests.gateway.conftest import DemoModels, Launch, gateway_config
from tests.supervisor.test_backoff import schedule

TOLERANCE = 0.2


@pytest.mark.timeout(60)
async def test_a_server_that_crashes_at_start_gives_up_after_1_2_4_8_16_s(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, figures: Figures
) -> None:
    policy = SupervisorPolicy()  # the defaults, as a user gets them
    expected = schedule(policy.backoff)
    assert expected == [1.0, 2.0, 4.0, 8.0, 16.0]
    service = make_service(
        model_path=model_file,
        binary=fake_binary,
        server_args=["--fake-exit-at-start", "1"],
        policy=policy,
    )
    loop = asyncio.get_running_loop()
    timeline: list[tuple[Status, float]] = []
    service.on_state_change(lambda state: timeline.append((state.status, loop.time())))
    recorder = StateRecorder(service)

    began = loop.time()
    await service.start(wait=False)
    final = await recorder.wait_status(Status.ERROR, timeout=sum(expected) * 1.2 + 10)
    took = loop.time() - began

    crashes = [at for status, at in timeline if status is Status.CRASHED]
    launches = [at for status, at in timeline if status is Status.STARTING]
    # Each delay: from the moment a crash was recorded to the next launch.
    delays = [start - crash for crash, start in zip(crashes, launches[1:], strict=False)]
    figures["launches"] = len(launches)
    figures["retries"] = final.retries
    figures["backoff_delays_s"] = ", ".join(f"{delay:.3g}" for delay in delays)
    figures["to_error_s"] = took

    assert len(launches) == 1 + policy.max_retries == 6
    assert len(crashes) == policy.max_retries == 5
    assert final.retries == 5
    assert final.last_error is not None and "Gave up after 5 retries" in final.last_error
    assert final.last_exit is not None and final.last_exit.returncode == 1
    for delay, want in zip(delays, expected, strict=True):
        assert abs(delay - want) <= TOLERANCE * want, (delays, expected)
    # And then nothing: `error` stays until a person starts it again.
    assert recorder.statuses[-1] is Status.ERROR
    assert service.get_state().pid is None


def foreign_program(port: int) -> list[str]:
    """Python's own web server on `port`: a program that is not llama-server (GET /health is a
    404 page)."""
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def wait_listening(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout_s} s")


@pytest.mark.real_server
@pytest.mark.timeout(90)
async def test_a_port_held_by_another_program_is_a_clear_error_never_a_launch(
    launch: Launch,
    real_binary: Path,
    demo_models: DemoModels,
    spawn_external: Callable[[list[str]], subprocess.Popen[bytes]],
    figures: Figures,
) -> None:
    port = free_port()
    holder = spawn_external(foreign_program(port))
    await asyncio.to_thread(wait_listening, port)
    models = {"held": {"path": str(demo_models.alpha), "port": port}}
    # A short cool-down: each attempt finds the port held and fails; the cool-down bounds how
    # often that happens (one attempt per 2 s, not one per request), and ends soon after
    # the holder has gone.
    gw = await launch(gateway_config(real_binary, models, failure_cooldown_s=2))
    errors: list[ServiceState] = []
    gw.herd.backends["held"].service.on_state_change(
        lambda state: errors.append(state) if state.status is Status.ERROR else None
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    async with Load(gw.url, "held", clients=3, timeout_s=30.0) as load:
        await load.wait_for(lambda: len(load.outcomes) >= 20, "20 requests have ended")
        while_held = load.figures()
        launches_while_held = gw.starts["held"]
        holder_alive = pid_alive(holder.pid)
        holder.send_signal(signal.SIGTERM)
        await asyncio.to_thread(holder.wait, 10)
        freed_at = loop.time()
        answered = await load.next_success(after=freed_at, timeout=30.0)
        await load.successes(3)
    outcome = load.figures()

    figures["while_held"] = ", ".join(f"{key} {value}" for key, value in while_held.items())
    figures["launches_while_held"] = launches_while_held
    figures.update(outcome)
    figures["served_after_freed_s"] = answered.ended - freed_at
    figures["attempts_while_held"] = len(errors)

    assert while_held["succeeded"] == 0
    assert while_held["lost"] == 0, load.details("lost")
    assert while_held["failed_clearly"] >= 20
    assert launches_while_held == 0, "a llama-server was launched onto a port another holds"
    assert holder_alive, "llamaherd signalled a program it did not start"
    assert errors, "the model never reached `error`"
    assert len(errors) <= 2 + int(freed_at - started) // 2, (
        "more attempts than the cool-down allows"
    )
    for state in errors:
        assert state.last_error is not None
        assert f"port {port} on 127.0.0.1 is held by pid {holder.pid}" in state.last_error
        assert "http.server" in state.last_error
    refusals = [o for o in load.outcomes if o.kind == "failed_clearly"]
    assert refusals and all(o.status == 503 for o in refusals)
    assert all(f"held by pid {holder.pid}" in o.detail for o in refusals), refusals[0].detail
    # Once the port is free, the next request starts the model and is served; nothing lost.
    assert outcome["lost"] == 0, load.details("lost")
    assert gw.starts["held"] == 1
    assert gw.state("held").status is Status.READY
