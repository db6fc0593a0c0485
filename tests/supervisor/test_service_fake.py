"""LlamaService driven through every transition by the fake llama-server's fault switches."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from llamaherd.supervisor.states import ServiceState, Status
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


async def test_spawns_and_becomes_ready_with_models(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    recorder = StateRecorder(service)

    state = await service.start()

    assert state.status is Status.READY
    assert recorder.statuses == [Status.CHECKING, Status.STARTING, Status.READY]
    assert state.pid is not None and pid_alive(state.pid)
    assert not state.adopted
    assert state.started_at is not None
    assert [model.id for model in state.models] == ["fake-model.gguf"]
    assert state.models[0].size == 2048  # the file's size
    assert state.models[0].modified_at == int(model_file.stat().st_mtime)


async def test_start_is_idempotent(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    first = await service.start()
    second = await service.start()
    assert first.pid == second.pid
    assert second.status is Status.READY


async def test_stop_ends_the_process_and_returns_to_initial(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    recorder = StateRecorder(service)
    pid = (await service.start()).pid
    assert pid is not None

    state = await service.stop()

    assert state.status is Status.INITIAL
    assert state.pid is None and state.models == ()
    assert recorder.statuses[-2:] == [Status.STOPPING, Status.INITIAL]
    assert not pid_alive(pid)


async def test_crash_loop_backs_off_1_2_4_8_16_then_error(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    sleep = RecordingSleep()
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-exit-at-start", "3"],
        sleep=sleep,
    )
    recorder = StateRecorder(service)

    state = await service.start()

    assert state.status is Status.ERROR
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert state.retries == 5
    assert "Gave up after 5 retries" in (state.last_error or "")
    assert "exited with code 3 while starting" in (state.last_error or "")
    assert "failed to read magic" in (state.last_error or "")  # the cause, from its stderr
    assert state.last_exit is not None and state.last_exit.returncode == 3
    assert state.started_at is None and state.pid is None
    crashed = [s.retries for s in recorder.states if s.status is Status.CRASHED]
    assert crashed == [1, 2, 3, 4, 5]
    assert recorder.statuses == [
        Status.CHECKING,
        *[Status.STARTING, Status.CRASHED] * 5,
        Status.STARTING,
        Status.ERROR,
    ]


async def test_error_stays_until_restart_which_resets_retries(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, tmp_path: Path
) -> None:
    counter = tmp_path / "launches"
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        # Fails the first 6 launches: the first start and its 5 retries.
        server_args=["--fake-fail-first", "6", "--fake-state-file", str(counter)],
        sleep=RecordingSleep(),
        policy=FAST_POLICY,
    )
    assert (await service.start()).status is Status.ERROR
    await asyncio.sleep(0.3)
    assert service.get_state().status is Status.ERROR  # no automatic way out of error

    state = await service.restart()

    assert state.status is Status.READY
    assert state.retries == 0
    assert state.last_error is None


async def test_recovers_after_failed_starts(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, tmp_path: Path
) -> None:
    sleep = RecordingSleep()
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-fail-first", "2", "--fake-state-file", str(tmp_path / "n")],
        sleep=sleep,
    )
    state = await service.start()
    assert state.status is Status.READY
    assert state.retries == 2
    assert sleep.delays == [1.0, 2.0]


async def test_crash_while_ready_restarts_with_retry_1(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    sleep = RecordingSleep()
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-crash-after-s", "0.3"],
        sleep=sleep,
    )
    recorder = StateRecorder(service)
    first = await service.start()

    crashed = await recorder.wait_for(lambda s: s.status is Status.CRASHED)
    again = await recorder.wait_for(lambda s: s.status is Status.READY and s.pid != first.pid)

    assert crashed.retries == 1
    assert crashed.next_retry_at is not None
    assert "exited with code 1 unexpectedly" in (crashed.last_error or "")
    assert "GGML_ASSERT" in (crashed.last_error or "")
    assert again.retries == 1
    assert again.restarts == 1
    assert sleep.delays[0] == 1.0


async def test_crash_by_signal_is_reported_by_name(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-crash-after-s", "0.2", "--fake-crash-signal", "SIGSEGV"],
        sleep=RecordingSleep(real_s=5),
    )
    recorder = StateRecorder(service)
    await service.start()
    crashed = await recorder.wait_for(lambda s: s.status is Status.CRASHED)
    assert crashed.last_exit is not None
    assert crashed.last_exit.signal_name == "SIGSEGV"
    assert "killed by SIGSEGV" in (crashed.last_error or "")


async def test_hung_server_is_killed_and_restarted(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    policy = replace(FAST_POLICY, health_timeout_ms=300)
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-hang-after-s", "0.3"],
        sleep=RecordingSleep(),
        policy=policy,
    )
    recorder = StateRecorder(service)
    hung_pid = (await service.start()).pid
    assert hung_pid is not None

    crashed = await recorder.wait_for(lambda s: s.status is Status.CRASHED)

    assert "stopped answering /health (2 probes failed in a row); killed it" in (
        crashed.last_error or ""
    )
    assert crashed.last_exit is not None and crashed.last_exit.signal_name == "SIGKILL"
    assert wait_until_dead(hung_pid, 5)
    await recorder.wait_for(lambda s: s.status is Status.READY and s.pid != hung_pid)


async def test_slow_health_answers_are_not_a_hang(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    """Probes that answer late but within the timeout keep the server ready."""
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-health-delay-ms", "200"],
    )
    recorder = StateRecorder(service)
    await service.start()
    await asyncio.sleep(1.5)
    assert recorder.statuses[-1] is Status.READY
    assert Status.CRASHED not in recorder.statuses


async def test_sigterm_ignored_means_sigkill_after_the_timeout(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = replace(FAST_POLICY, stop_timeout_s=1.0)
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-ignore-sigterm"],
        policy=policy,
    )
    pid = (await service.start()).pid
    assert pid is not None
    with caplog.at_level(logging.WARNING, logger="llamaherd.supervisor"):
        loop = asyncio.get_running_loop()
        began = loop.time()
        await service.stop()
        took = loop.time() - began
    assert "Force killing llama server process" in caplog.text
    assert took >= 1.0  # it waited for SIGTERM to work first
    assert not pid_alive(pid)


async def test_slow_but_graceful_exit_is_not_force_killed(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service(
        binary=fake_binary, model_path=model_file, server_args=["--fake-slow-sigterm-s", "0.5"]
    )
    await service.start()
    with caplog.at_level(logging.INFO, logger="llamaherd.supervisor"):
        await service.stop()
    assert "Force killing" not in caplog.text
    assert "exited with code 0" in caplog.text


async def test_never_ready_counts_as_a_failed_start(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    policy = replace(FAST_POLICY, readiness_max_attempts=5, max_retries=1)
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-503-forever"],
        policy=policy,
        sleep=RecordingSleep(),
    )
    state = await service.start()
    assert state.status is Status.ERROR
    # The budget is 5 x 50 ms; the 1000 ms health timeout never fires against a 503.
    assert "did not become ready within 0.25 s" in (state.last_error or "")


async def test_adopts_a_server_already_running_and_never_stops_it(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    port: int,
    spawn_external: object,
) -> None:
    external = spawn_external(  # type: ignore[operator]
        [str(fake_binary), "-m", str(model_file), "--port", str(port), "--fake-load-s", "0"]
    )
    wait_http_ready(port)
    service = make_service(binary=fake_binary, model_path=model_file)
    recorder = StateRecorder(service)

    state = await service.start()

    assert recorder.statuses == [Status.CHECKING, Status.READY]
    assert state.adopted
    assert state.pid == external.pid
    assert [m.id for m in state.models] == ["fake-model.gguf"]
    await service.stop()
    assert external.poll() is None, "stop() killed a server llamaherd did not start"


async def test_port_held_by_another_program_is_a_clear_error(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    port: int,
    spawn_external: object,
) -> None:
    other = spawn_external(  # type: ignore[operator]
        [str(fake_binary), "--port", str(port), "--fake-wrong-service"]
    )
    await asyncio.to_thread(_wait_listening, port)
    service = make_service(binary=fake_binary, model_path=model_file, sleep=RecordingSleep())

    state = await service.start()

    assert state.status is Status.ERROR
    assert state.retries == 0  # no crash loop
    message = state.last_error or ""
    assert f"port {port} on 127.0.0.1 is held by pid {other.pid}" in message
    assert "does not answer like llama-server" in message
    assert "give this server another port" in message


def _wait_listening(port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


async def test_missing_binary_is_an_error_without_retries(
    make_service: ServiceFactory, model_file: Path, tmp_path: Path
) -> None:
    service = make_service(binary=tmp_path / "nope" / "llama-server", model_path=model_file)
    state = await service.start()
    assert state.status is Status.ERROR
    assert state.retries == 0
    assert "No such file or directory" in (state.last_error or "")


async def test_missing_model_is_an_error_without_retries(
    make_service: ServiceFactory, fake_binary: Path, tmp_path: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=tmp_path / "missing.gguf")
    state = await service.start()
    assert state.status is Status.ERROR
    assert "missing.gguf does not exist" in (state.last_error or "")


async def test_chatty_child_never_blocks(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    # 20,000 lines of 100 bytes on each pipe: far beyond a 64 KiB pipe buffer.
    service = make_service(
        binary=fake_binary, model_path=model_file, server_args=["--fake-spew-lines", "20000"]
    )
    state = await service.start()
    assert state.status is Status.READY
    assert len(service.output) == FAST_POLICY.log_lines  # bounded


async def test_staying_ready_resets_the_retry_count(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, tmp_path: Path
) -> None:
    policy = replace(FAST_POLICY, stable_after_s=0.5)
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-fail-first", "1", "--fake-state-file", str(tmp_path / "n")],
        sleep=RecordingSleep(),
        policy=policy,
    )
    recorder = StateRecorder(service)
    assert (await service.start()).retries == 1
    reset = await recorder.wait_for(lambda s: s.status is Status.READY and s.retries == 0)
    assert reset.restarts == 1  # the history survives the reset


async def test_listeners_sync_and_async_and_unsubscribe(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    seen_sync: list[Status] = []
    seen_async: list[Status] = []

    def on_sync(state: ServiceState) -> None:
        seen_sync.append(state.status)

    async def on_async(state: ServiceState) -> None:
        seen_async.append(state.status)

    def broken(state: ServiceState) -> None:
        raise RuntimeError("a listener bug must not break the supervisor")

    unsubscribe = service.on_state_change(on_sync)
    service.on_state_change(on_async)
    service.on_state_change(broken)
    await service.start()
    unsubscribe()
    await service.stop()
    await asyncio.sleep(0)

    assert seen_sync == [Status.CHECKING, Status.STARTING, Status.READY]
    assert seen_async[-2:] == [Status.STOPPING, Status.INITIAL]


async def test_control_actions_are_serialised(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(
        binary=fake_binary, model_path=model_file, server_args=["--fake-slow-sigterm-s", "0.5"]
    )
    recorder = StateRecorder(service)
    await service.start()
    stopping = asyncio.create_task(service.stop())
    await recorder.wait_status(Status.STOPPING)

    restarted = await service.start()  # waits for the stop to finish

    await stopping
    assert restarted.status is Status.READY
    after_ready = recorder.statuses[recorder.statuses.index(Status.STOPPING) :]
    assert after_ready == [
        Status.STOPPING,
        Status.INITIAL,
        Status.CHECKING,
        Status.STARTING,
        Status.READY,
    ]


async def test_stop_during_a_crash_loop_cancels_the_retries(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-exit-at-start", "1"],
        sleep=RecordingSleep(real_s=30),  # stuck in the first backoff wait
    )
    recorder = StateRecorder(service)
    starting = asyncio.create_task(service.start())
    await recorder.wait_status(Status.CRASHED)

    state = await service.stop()

    assert state.status is Status.INITIAL
    assert (await starting).status is Status.INITIAL
    assert recorder.statuses[-2:] == [Status.STOPPING, Status.INITIAL]


async def test_no_orphan_when_llamaherd_is_killed(
    fake_binary: Path, model_file: Path, port: int, tmp_path: Path
) -> None:
    """SIGKILL of llamaherd takes its llama-server down too (parent-death signal)."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from llamaherd import LlamaService
        async def main():
            svc = LlamaService(port={port}, model_path={str(model_file)!r},
                               binary={str(fake_binary)!r},
                               server_args=["--fake-pid-file", {str(pid_file)!r}])
            await svc.start()
            print("ready", flush=True)
            await asyncio.Event().wait()
        asyncio.run(main())
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 30)
        assert line.strip() == b"ready"
        child = int(pid_file.read_text())
        assert pid_alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_until_dead(child, 10), f"llama-server {child} outlived llamaherd"
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()


async def test_start_from_error_tries_again(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, tmp_path: Path
) -> None:
    """A plain start (not only restart) leaves `error`, with a fresh retry count."""
    policy = replace(FAST_POLICY, max_retries=1)
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-fail-first", "2", "--fake-state-file", str(tmp_path / "n")],
        sleep=RecordingSleep(),
        policy=policy,
    )
    assert (await service.start()).status is Status.ERROR
    state = await service.start()
    assert state.status is Status.READY
    assert state.retries == 0
