"""Regressions from the issue "Supervisor correctness": each test jammed the supervisor before.

Numbers in the names are the issue's: 1 an adopted server that never becomes ready, 2 a
cancelled stop(), 3 start() during backoff, 4 an adopted server that hangs, 5 unexpected
failures, 7 blocking work on the event loop (6, UTF-8, is in test_output.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llamaherd.supervisor import service as service_module
from llamaherd.supervisor.states import Status
from tests.conftest import (
    FAST_POLICY,
    RecordingSleep,
    ServiceFactory,
    StateRecorder,
    pid_alive,
    wait_http_ready,
    wait_until_dead,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def stopped_pids() -> Iterator[list[int]]:
    """Processes a test SIGSTOPs: resumed at teardown whatever happens, so they can be killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)


async def test_1_adopted_server_loading_forever_is_an_error_and_never_killed(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    port: int,
    spawn_external: Any,
) -> None:
    external = spawn_external([str(fake_binary), "--port", str(port), "--fake-503-forever"])
    await asyncio.to_thread(_wait_listening, port)
    policy = replace(FAST_POLICY, readiness_max_attempts=4, readiness_interval_ms=50)
    service = make_service(binary=fake_binary, model_path=model_file, policy=policy)
    recorder = StateRecorder(service)

    async with asyncio.timeout(10):
        state = await service.start()

    assert state.status is Status.ERROR
    message = state.last_error or ""
    assert f"already running on port {port} (pid {external.pid}" in message
    assert "did not become ready within 0.2 s" in message
    assert "will not kill it" in message
    assert Status.STARTING not in recorder.statuses  # nothing spawned onto the busy port
    async with asyncio.timeout(10):
        again = await service.start()  # hung forever before
    assert again.status is Status.ERROR
    await service.stop()
    assert external.poll() is None, "llamaherd killed a server it did not start"


async def test_2_cancelled_stop_still_kills_the_child_and_reaches_initial(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    policy = replace(FAST_POLICY, stop_timeout_s=1.0)
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-ignore-sigterm"],
        policy=policy,
    )
    recorder = StateRecorder(service)
    pid = (await service.start()).pid
    assert pid is not None

    stopping = asyncio.create_task(service.stop())
    await recorder.wait_status(Status.STOPPING)
    stopping.cancel()  # what uvicorn does to a request still running at its shutdown deadline
    with pytest.raises(asyncio.CancelledError):
        await stopping

    await recorder.wait_status(Status.INITIAL, timeout=10)
    assert await asyncio.to_thread(wait_until_dead, pid, 5), "the child outlived a stop()"
    assert (await service.start()).status is Status.READY  # hung before
    assert (await service.stop()).status is Status.INITIAL  # raised stopping -> stopping


async def test_3_start_during_backoff_returns_only_when_settled(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(
        binary=fake_binary, model_path=model_file, sleep=RecordingSleep(real_s=0.5)
    )
    recorder = StateRecorder(service)
    early = asyncio.create_task(service.wait_settled())  # before any start: never woken before
    async with asyncio.timeout(5):
        assert (await early).status is Status.INITIAL

    pid = (await service.start()).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await recorder.wait_status(Status.CRASHED)
    waiter = asyncio.create_task(service.wait_settled())
    during_backoff = await service.start()  # returned `crashed` at once before

    assert during_backoff.status is Status.READY
    assert (await waiter).status is Status.READY


async def test_4_adopted_server_that_hangs_is_not_replaced_on_its_port(
    *,
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    port: int,
    spawn_external: Any,
    stopped_pids: list[int],
) -> None:
    external = spawn_external([str(fake_binary), "--port", str(port), "--fake-load-s", "0"])
    await asyncio.to_thread(wait_http_ready, port)
    policy = replace(FAST_POLICY, health_timeout_ms=300)
    service = make_service(
        binary=fake_binary, model_path=model_file, policy=policy, sleep=RecordingSleep()
    )
    recorder = StateRecorder(service)
    assert (await service.start()).adopted

    os.kill(external.pid, signal.SIGSTOP)
    stopped_pids.append(external.pid)
    state = await recorder.wait_status(Status.ERROR, timeout=15)

    message = state.last_error or ""
    assert f"adopted llama-server on port {port} (pid {external.pid}" in message
    assert "will not kill it" in message
    assert "Address already in use" not in message
    assert Status.STARTING not in recorder.statuses, "spawned onto a port that is held"
    assert pid_alive(external.pid)

    os.kill(external.pid, signal.SIGCONT)
    again = await service.restart()
    assert again.status is Status.READY
    assert again.adopted and again.pid == external.pid


async def test_4_no_spawn_after_a_crash_when_a_foreign_program_took_the_port(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    port: int,
    spawn_external: Any,
) -> None:
    """The port changes hands during the backoff: a clear error, no doomed spawns."""
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-crash-after-s", "0.2"],
        sleep=_TakePortDuringBackoff(lambda: _take_port(spawn_external, fake_binary, port)),
    )
    recorder = StateRecorder(service)
    await service.start()

    state = await recorder.wait_status(Status.ERROR)

    message = state.last_error or ""
    assert f"port {port} on 127.0.0.1 is held by pid" in message
    assert "Gave up after" not in message  # no retries were spent on it
    assert state.retries == 1
    assert state.next_retry_at is None
    assert recorder.statuses.count(Status.STARTING) == 1


async def test_5_unexpected_failure_is_an_error_told_to_subscribers_child_killed(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(self: object) -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(service_module.LlamaService, "_fetch_models", broken)
    service = make_service(binary=fake_binary, model_path=model_file)
    recorder = StateRecorder(service)

    async with asyncio.timeout(10):
        state = await service.start()

    assert state.status is Status.ERROR
    assert state.last_error == "internal error: RuntimeError('boom')"
    assert recorder.statuses[-1] is Status.ERROR  # through the transition function
    spawned = [s.pid for s in recorder.states if s.status is Status.STARTING]
    assert spawned and spawned[0] is not None
    assert await asyncio.to_thread(wait_until_dead, spawned[0], 5), "child left unwatched"
    assert state.pid is None


async def test_5_failure_before_supervision_begins_still_releases_waiters(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_probe(*args: object, **kwargs: object) -> None:
        raise OSError("too many open files")

    monkeypatch.setattr(service_module, "HealthProbe", no_probe)
    service = make_service(binary=fake_binary, model_path=model_file)

    async with asyncio.timeout(10):
        state = await service.start()

    assert state.status is Status.ERROR
    assert state.last_error == "internal error: OSError('too many open files')"


async def test_7_port_holder_lookup_and_gguf_parsing_run_off_the_event_loop(
    *,
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    port: int,
    spawn_external: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_loop: list[str] = []

    def spy(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                on_loop.append(name)
            return real(*args, **kwargs)

        return wrapper

    for name in ("find_listener", "read_gguf_summary", "models_from_listing"):
        monkeypatch.setattr(service_module, name, spy(name, getattr(service_module, name)))
    external = spawn_external(
        [str(fake_binary), "-m", str(model_file), "--port", str(port), "--fake-load-s", "0"]
    )
    await asyncio.to_thread(wait_http_ready, port)
    adopted = make_service(binary=fake_binary, model_path=model_file)
    assert (await adopted.start()).pid == external.pid  # found through find_listener
    await adopted.stop()
    external.kill()
    external.wait()
    spawned = make_service(binary=fake_binary, model_path=model_file)
    assert (await spawned.start()).status is Status.READY  # read the GGUF header

    assert on_loop == []


async def test_backoff_under_a_second_is_logged_in_milliseconds(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-exit-at-start", "1"],
        policy=replace(FAST_POLICY, backoff_initial_ms=100, max_retries=1),
        sleep=RecordingSleep(),
    )
    with caplog.at_level(logging.WARNING, logger="llamaherd.supervisor"):
        state = await service.start()
    assert state.status is Status.ERROR
    assert state.next_retry_at is None  # was left stale
    assert "retry 1/1 in 100 ms" in caplog.text


# ---- helpers -------------------------------------------------------------------------------


class _TakePortDuringBackoff(RecordingSleep):
    def __init__(self, take: Any) -> None:
        super().__init__()
        self._take = take

    async def __call__(self, delay: float) -> None:
        await super().__call__(delay)
        await asyncio.to_thread(self._take)


def _take_port(spawn_external: Any, fake_binary: Path, port: int) -> None:
    spawn_external([str(fake_binary), "--port", str(port), "--fake-wrong-service"])
    _wait_listening(port)


def _wait_listening(port: int, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port}")
