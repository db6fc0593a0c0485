"""The supervisor against the real llama-server, built from llama.cpp source, and the demo model."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamaherd.supervisor import health as health_module
from llamaherd.supervisor.health import Health
from llamaherd.supervisor.states import Status
from tests.conftest import (
    FAST_POLICY,
    ServiceFactory,
    StateRecorder,
    pid_alive,
    wait_http_ready,
    wait_until_dead,
)

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(90)]

# The real server prints its progress; a bigger context lets one request generate for seconds.
SERVER_ARGS = ["--threads", "2", "--ctx-size", "2048", "--parallel", "1"]


async def test_spawns_real_server_and_lists_the_model(
    make_service: ServiceFactory, real_binary: Path, demo_model: Path
) -> None:
    service = make_service(binary=real_binary, model_path=demo_model, server_args=SERVER_ARGS)
    state = await service.start()

    assert state.status is Status.READY, state.last_error
    assert state.pid is not None and pid_alive(state.pid)
    (model,) = state.models
    assert model.id == str(demo_model)
    assert model.name == "llamaherd-demo"
    assert model.type == "llama"
    assert model.size == demo_model.stat().st_size
    assert model.modified_at == int(demo_model.stat().st_mtime)
    assert any("listening on http://127.0.0.1" in line for line in service.output)


async def test_adopts_a_running_real_server(
    make_service: ServiceFactory,
    real_binary: Path,
    demo_model: Path,
    port: int,
    spawn_external: Callable[[list[str]], Any],
) -> None:
    external = spawn_external(
        [str(real_binary), "-m", str(demo_model), "--host", "127.0.0.1", "--port", str(port)]
    )
    await asyncio.to_thread(wait_http_ready, port)
    service = make_service(binary=real_binary, model_path=demo_model)

    state = await service.start()

    assert state.status is Status.READY and state.adopted
    assert state.pid == external.pid
    assert state.models[0].type == "llama"
    await service.stop()
    assert external.poll() is None, "an adopted server must survive stop()"


async def test_kill_9_is_a_crash_then_ready_again_with_retry_1(
    make_service: ServiceFactory, real_binary: Path, demo_model: Path
) -> None:
    service = make_service(binary=real_binary, model_path=demo_model, server_args=SERVER_ARGS)
    recorder = StateRecorder(service)
    first = await service.start()
    assert first.pid is not None
    loop = asyncio.get_running_loop()

    killed_at = loop.time()
    os.kill(first.pid, signal.SIGKILL)
    crashed = await recorder.wait_status(Status.CRASHED)
    ready = await recorder.wait_for(lambda s: s.status is Status.READY and s.pid != first.pid)
    recovered_in = loop.time() - killed_at

    assert crashed.last_exit is not None and crashed.last_exit.signal_name == "SIGKILL"
    assert "killed by SIGKILL unexpectedly" in (crashed.last_error or "")
    assert ready.retries == 1
    assert ready.models[0].id == str(demo_model)
    # One second of backoff, then a fresh load of the tiny model.
    assert recovered_in >= 1.0
    assert recorder.statuses[-3:] == [Status.CRASHED, Status.STARTING, Status.READY]


async def test_sigstopped_server_is_detected_as_hung_and_replaced(
    make_service: ServiceFactory, real_binary: Path, demo_model: Path
) -> None:
    policy = replace(FAST_POLICY, liveness_interval_ms=200, health_timeout_ms=500)
    service = make_service(
        binary=real_binary, model_path=demo_model, server_args=SERVER_ARGS, policy=policy
    )
    recorder = StateRecorder(service)
    first = await service.start()
    assert first.pid is not None

    os.kill(first.pid, signal.SIGSTOP)
    crashed = await recorder.wait_status(Status.CRASHED)
    ready = await recorder.wait_for(lambda s: s.status is Status.READY and s.pid != first.pid)

    assert "stopped answering /health" in (crashed.last_error or "")
    assert wait_until_dead(first.pid, 5), "the hung server must be killed, not left stopped"
    assert ready.retries == 1


async def test_a_server_busy_on_every_slot_is_left_alone(
    make_service: ServiceFactory,
    real_binary: Path,
    demo_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Liveness probes go around the inference queue: a busy server still answers /health."""
    probes: list[tuple[float, Health]] = []
    original_check = health_module.HealthProbe.check

    async def recording_check(self: health_module.HealthProbe) -> Health:
        result = await original_check(self)
        probes.append((asyncio.get_running_loop().time(), result))
        return result

    monkeypatch.setattr(health_module.HealthProbe, "check", recording_check)
    policy = replace(FAST_POLICY, liveness_interval_ms=100, health_timeout_ms=1000)
    busy_args = ["--threads", "1", "--ctx-size", "16384", "--parallel", "1"]
    service = make_service(
        binary=real_binary, model_path=demo_model, server_args=busy_args, policy=policy
    )
    recorder = StateRecorder(service)
    first = await service.start()

    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=service.base_url, timeout=60, trust_env=False) as http:
        began = loop.time()
        answer = await http.post(
            "/completion",
            json={"prompt": "hello", "n_predict": 16000, "ignore_eos": True, "temperature": 1.0},
        )
        ended = loop.time()
    answer.raise_for_status()
    generated = answer.json()["tokens_predicted"]
    during = [result for at, result in probes if began < at < ended]

    assert generated > 1000
    assert ended - began > 0.5, "the generation must outlast several liveness intervals"
    assert len(during) >= 3, f"probes while busy: {during}"
    assert all(result is Health.READY for result in during)
    assert Status.CRASHED not in recorder.statuses
    assert service.get_state().pid == first.pid


async def test_graceful_stop_uses_sigterm(
    make_service: ServiceFactory,
    real_binary: Path,
    demo_model: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service(binary=real_binary, model_path=demo_model, server_args=SERVER_ARGS)
    pid = (await service.start()).pid
    assert pid is not None
    with caplog.at_level(logging.INFO, logger="llamaherd.supervisor"):
        await service.stop()
    assert "Force killing" not in caplog.text
    assert "llama-server stopped (exited with code 0)" in caplog.text
    assert not pid_alive(pid)


async def test_a_server_that_ignores_sigterm_is_killed_after_the_timeout(
    make_service: ServiceFactory,
    real_binary: Path,
    demo_model: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stopped (SIGSTOP) process cannot act on SIGTERM: the real server then needs SIGKILL."""
    policy = replace(FAST_POLICY, stop_timeout_s=5.0, liveness_interval_ms=60_000)
    service = make_service(
        binary=real_binary, model_path=demo_model, server_args=SERVER_ARGS, policy=policy
    )
    pid = (await service.start()).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.INFO, logger="llamaherd.supervisor"):
        began = loop.time()
        await service.stop()
        took = loop.time() - began
    assert "Force killing llama server process" in caplog.text
    assert 5.0 <= took < 10.0
    assert not pid_alive(pid)
