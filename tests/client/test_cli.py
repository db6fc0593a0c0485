"""The remote commands (status, start, stop, restart, logs, models, load, unload) against the
real app over uvicorn, with the fake llama-server behind it. The CLI is synchronous, so it
runs in a thread while the server runs in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from llamaherd.api.app import create_app
from llamaherd.client.cli import main
from llamaherd.client.follow import drop_overlap
from llamaherd.client.remote import DEFAULT_URL, service_url
from llamaherd.client.render import (
    human_duration,
    human_size,
    model_outcome_line,
    render_models,
    render_status,
    status_line,
)
from llamaherd.client.sse import parse_sse
from llamaherd.client.waiting import ModelWait
from llamaherd.config.settings import settings_from_mapping
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import Status
from llamaherd.wiring.build import build_herd
from tests.api.conftest import serve_app
from tests.conftest import (
    RecordingSleep,
    ServiceFactory,
    StateRecorder,
    free_port,
    wait_http_ready,
)
from tests.serving import serve_application

pytestmark = pytest.mark.timeout(60)

COMMANDS = (
    "serve", "demo-model", "status", "start", "stop", "restart", "logs", "models", "load", "unload",
)  # fmt: skip


async def run_cli(*argv: str) -> int:
    """main() in a worker thread, so the server in this loop keeps answering."""
    return await asyncio.to_thread(main, list(argv))


async def wait_for_output(capsys: pytest.CaptureFixture[str], timeout: float = 20) -> str:
    """Poll the captured stdout until something was written (the CLI writes from a thread)."""
    async with asyncio.timeout(timeout):
        while not (out := capsys.readouterr().out):
            await asyncio.sleep(0.02)
    return out


async def quiet(service: LlamaService, still_s: float = 0.3) -> None:
    """Wait until llama-server has written nothing for `still_s` (it logs a little after ready)."""
    async with asyncio.timeout(20):
        while True:
            count = len(service.output)
            await asyncio.sleep(still_s)
            if len(service.output) == count:
                return


# ---- status ---------------------------------------------------------------------------------


async def test_status_table_and_json(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        assert await run_cli("status", "--url", url) == 0
        table = capsys.readouterr().out
        assert await run_cli("status", "--json", "--url", url) == 0
        data = json.loads(capsys.readouterr().out)

    assert data["status"] == "ready"
    assert data["models"][0]["name"] == "fake-model.gguf"
    rows = dict(line.split(None, 1) for line in table.splitlines()[:3])
    assert rows == {"status": "ready", "pid": str(data["pid"]), "adopted": "no"}
    assert f"retries     0/{data['maxRetries']}" in table
    assert "last error  -" in table
    model_row = next(line for line in table.splitlines() if "fake-model.gguf" in line)
    assert model_row.split()[-2:] == ["2.0", "KiB"]


async def test_status_address_from_config_file(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service, start_service=False) as url:
        config = tmp_path / "herd.json"
        # 0.0.0.0 is where serve listens, not an address to connect to: loopback is used.
        config.write_text(json.dumps({"app_host": "0.0.0.0", "app_port": int(url.rsplit(":")[-1])}))
        assert await run_cli("status", "--json", "--config", str(config)) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "initial"


def test_service_url_defaults(tmp_path: Path) -> None:
    assert service_url(None, tmp_path / "missing.json") == DEFAULT_URL
    assert service_url("http://127.0.0.1:9/", tmp_path / "missing.json") == "http://127.0.0.1:9"
    config = tmp_path / "c.json"
    config.write_text('{"app_host": "::", "app_port": 4000}')
    assert service_url(None, config) == "http://[::1]:4000"


def test_status_rendering() -> None:
    status = {
        "status": "error",
        "models": [{"id": "a", "name": "big.gguf", "size": 512 * 1024, "type": "llama"}],
        "lastError": "llama-server exited with code 1",
        "retries": 5,
        "maxRetries": 5,
        "uptime": 3723,
        "startedAt": "2024-01-01T00:00:00.000Z",
        "pid": 42,
        "adopted": True,
        "nextRetryAt": None,
        "restarts": 2,
        "lastExit": {"code": None, "signal": "SIGSEGV"},
    }
    table = render_status(status)
    assert "uptime      1h 02m 03s" in table
    assert "retries     5/5" in table
    assert "last exit   SIGSEGV" in table
    assert "big.gguf  llama  512.0 KiB" in table
    assert "next retry" not in table
    assert status_line(status) == (
        "llama-server: error (gave up; 'llamaherd restart' tries again), pid 42 (adopted), "
        "uptime 1h 02m 03s, retries 5/5, last error: llama-server exited with code 1"
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (512 * 1024, "512.0 KiB"), (1024**2 - 1, "1.0 MiB"),
     (int(4.5 * 1024**3), "4.5 GiB"), (3 * 1024**5, "3072.0 TiB")],
)  # fmt: skip
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (63, "1m 03s"), (3723, "1h 02m 03s"), (90061, "1d 01h 01m 01s")],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


# ---- start, stop, restart -------------------------------------------------------------------


async def test_stop_start_restart(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        first_pid = service.get_state().pid

        assert await run_cli("stop", "--url", url) == 0
        assert capsys.readouterr().out == "llama-server: initial (not running)\n"
        assert service.get_state().pid is None

        assert await run_cli("start", "--wait", "20", "--url", url) == 0
        started = capsys.readouterr().out
        assert started.startswith("llama-server: ready, pid ")

        assert await run_cli("restart", "--url", url) == 0
        restarted = capsys.readouterr().out
        new_pid = service.get_state().pid
        assert restarted.startswith(f"llama-server: ready, pid {new_pid}, uptime ")
        assert new_pid not in (None, first_pid)


@pytest.fixture
async def external(
    spawn_external: Callable[..., subprocess.Popen[bytes]],
    fake_binary: Path,
    model_file: Path,
    port: int,
) -> subprocess.Popen[bytes]:
    """A llama-server started outside llamaherd, on the port the service will use."""
    proc = spawn_external([str(fake_binary), "--port", str(port), "-m", str(model_file)])
    await asyncio.to_thread(wait_http_ready, port)
    return proc


async def test_stop_of_an_adopted_server_says_it_is_left_running(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    external: subprocess.Popen[bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        state = await service.wait_settled(20)
        assert state.adopted and state.pid == external.pid

        assert await run_cli("stop", "--url", url) == 0
        out = capsys.readouterr().out

        assert service.get_state().status is Status.INITIAL
    assert out == (
        f"llama-server: still running, pid {external.pid}: it was adopted (not started by "
        "llamaherd), so llamaherd stopped supervising it and left it running\n"
    )
    assert external.poll() is None


@pytest.mark.parametrize("action", ["start", "restart"])
async def test_wait_0_says_the_action_began_and_where_it_is_now(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    action: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(
        binary=fake_binary, model_path=model_file, server_args=["--fake-load-s", "5"]
    )
    async with serve_app(service, start_service=False) as url:
        assert await run_cli(action, "--wait", "0", "--url", url) == 0
        out = capsys.readouterr().out
    assert out.startswith(f"llama-server: {action} requested; now "), out
    assert "not running" not in out
    now = out.removeprefix(f"llama-server: {action} requested; now ").split(",")[0].strip()
    assert now in ("checking", "starting"), out


async def test_start_ending_in_error_exits_1(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        server_args=["--fake-exit-at-start", "1"],
        sleep=RecordingSleep(),
    )
    async with serve_app(service, start_service=False) as url:
        assert await run_cli("start", "--wait", "30", "--url", url) == 1
    out = capsys.readouterr().out
    assert out.startswith("llama-server: error (")
    assert "retries 5/5" in out
    assert "last error: " in out


async def test_a_restart_while_a_stop_runs_follows_it(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Controls are requests to the scheduler, carried out in order: a restart asked while a
    stop runs is neither refused nor mixed into it."""
    service = make_service(
        binary=fake_binary, model_path=model_file, server_args=["--fake-slow-sigterm-s", "1"]
    )
    recorder = StateRecorder(service)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        stop = asyncio.create_task(run_cli("stop", "--url", url))
        await recorder.wait_status(Status.STOPPING)
        code = await run_cli("restart", "--url", url, "--wait", "20")
        assert await stop == 0
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("llama-server: ready, pid ")


# ---- logs -----------------------------------------------------------------------------------


async def test_logs_tail(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        assert await run_cli("logs", "-n", "3", "--url", url) == 0
        # Before shutdown adds the goodbye lines. The server may log a line (a probe's
        # request) between the command's answer and this look: the three it printed are
        # three consecutive lines at the end of the output, not necessarily the very last.
        recent = service.output.tail(10)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3
    assert any(recent[i : i + 3] == printed for i in range(len(recent) - 2)), (printed, recent)


async def test_logs_follow_prints_new_lines(
    make_service: ServiceFactory,
    fake_binary: Path,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        await quiet(service)
        capsys.readouterr()
        expected_tail = service.output.tail(2)
        follow = asyncio.create_task(
            run_cli("logs", "-f", "-n", "2", "--max-events", "1", "--url", url)
        )
        # The tail is written only once the event stream is open, so nothing after it is lost.
        tail = await wait_for_output(capsys)
        await service.restart()
        async with asyncio.timeout(20):
            assert await follow == 0
        new = capsys.readouterr().out

    assert tail.splitlines() == expected_tail
    # The first lines after the tail: the old llama-server saying goodbye on SIGTERM.
    assert "cleaning up before exit" in new


async def test_logs_follow_ends_on_ctrl_c_without_traceback(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llamaherd",
            "logs",
            "-f",
            "-n",
            "1",
            "--url",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Buffered, like a pipe to `grep`: the CLI must flush each followed batch itself.
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(20):
                first = await proc.stdout.readline()  # following: the tail is out
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(20):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert first.strip()
    assert proc.returncode == 0
    assert err == b""


def test_parse_sse_and_drop_overlap() -> None:
    stream = [": keep-alive", "", "event: llamaLog", 'data: {"a": 1}', "", "data: x", "data: y", ""]
    assert list(parse_sse(stream)) == [("llamaLog", '{"a": 1}'), ("message", "x\ny")]
    tail = ["a", "b", "c"]
    assert drop_overlap(tail, ["b", "c", "d"]) == ["d"]
    assert drop_overlap(tail, ["c"]) == []
    # Lines from before a short tail: the batch's old part ends with the tail's end.
    assert drop_overlap(["b", "c"], ["a", "b", "c", "d"]) == ["d"]
    assert drop_overlap(tail, ["d", "c"]) == ["d", "c"]
    assert drop_overlap(tail, ["d"]) == ["d"]
    assert drop_overlap([], ["d"]) == ["d"]


# ---- models, load, unload -------------------------------------------------------------------

# The supervisor's numbers the fake llama-server needs to be quick (see FAST_POLICY).
FAST_CONFIG = {
    "readiness_interval_ms": 50,
    "readiness_max_attempts": 100,
    "health_timeout_ms": 1000,
    "stop_timeout_s": 2.0,
    "stable_after_s": 3600.0,
}


@contextlib.asynccontextmanager
async def serve_herd(
    tmp_path: Path, binary: Path, model_file: Path, **config: Any
) -> AsyncIterator[tuple[str, Herd]]:
    """llamaherd serving a herd: `chat` (the seed's model, the default, loaded at start),
    `coder` (alias `c`), and the models of `config["models"]`; one loaded at a time unless
    `config` says otherwise. Every model file is a copy of `model_file`."""
    chat = tmp_path / "chat.gguf"
    coder = tmp_path / "coder.gguf"
    for copy in (chat, coder):
        shutil.copyfile(model_file, copy)
    models = {"coder": {"path": str(coder), "aliases": ["c"]}}
    for name, entry in config.pop("models", {}).items():
        path = tmp_path / f"{name}.gguf"
        shutil.copyfile(model_file, path)
        models[name] = {"path": str(path), **entry}
    settings = settings_from_mapping(
        {
            "llama_server_binary": str(binary),
            "llama_server_port": free_port(),
            "llama_model_path": str(chat),
            "models": models,
            "max_loaded": 1,
            **FAST_CONFIG,
            **config,
        }
    )
    herd = build_herd(settings)
    async with serve_application(create_app(herd)) as url:
        yield url, herd
    # The app's shutdown stopped every llama-server it started.
    assert [b.service.get_state().pid for b in herd.backends.values()] == [None] * (len(models) + 1)


async def cli_output(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await run_cli(*argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_models_table_and_json(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_herd(tmp_path, fake_binary, model_file, models={}) as (url, herd):
        await herd.primary.service.wait_settled(20)
        code, table, _ = await cli_output(capsys, "models", "--url", url)
        assert code == 0
        code, out, _ = await cli_output(capsys, "models", "--json", "--url", url)
        assert code == 0
        chat_pid = herd.backends["chat"].service.get_state().pid
        ports = {model: backend.service.port for model, backend in herd.backends.items()}

    models = json.loads(out)
    assert [(m["id"], m["default"], m["phase"], m["pid"]) for m in models] == [
        ("chat", True, "ready", chat_pid),
        ("coder", False, "unloaded", None),
    ]
    assert models[1]["aliases"] == ["c"]
    lines = table.splitlines()
    assert lines[0].split() == [
        "MODEL", "STATE", "IN", "FLIGHT", "QUEUED", "LAST", "USED", "TTL", "LEFT", "SIZE",
        "QUANT", "PORT", "PID",
    ]  # fmt: skip
    assert lines[1].startswith("* chat ")
    assert lines[1].split()[1:4] == ["chat", "ready", "0/1"]
    assert lines[1].split()[-2:] == [str(ports["chat"]), str(chat_pid)]
    assert lines[2].startswith("  coder ")
    assert lines[2].split() == [
        "coder", "unloaded", "0/1", "0", "-", "-", "2.0", "KiB", "-", str(ports["coder"]), "-",
    ]  # fmt: skip
    assert lines[3:] == ["    aliases: c"]


async def test_load_evicts_the_other_then_unload(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_herd(tmp_path, fake_binary, model_file) as (url, herd):
        await herd.primary.service.wait_settled(20)
        code, out, err = await cli_output(capsys, "load", "c", "--url", url)  # by its alias
        coder = herd.backends["coder"].service.get_state()
        assert (code, err) == (0, "")
        assert (
            out == f"coder: ready on port {herd.backends['coder'].service.port} (pid {coder.pid})\n"
        )
        assert coder.status is Status.READY
        # max_loaded 1: the default model made room.
        assert herd.view("chat").phase is Phase.UNLOADED
        assert herd.backends["chat"].service.get_state().pid is None

        code, out, _ = await cli_output(capsys, "unload", "coder", "--url", url)
        assert (code, out) == (0, "coder: unloaded\n")
        assert herd.view("coder").phase is Phase.UNLOADED
        assert herd.backends["coder"].service.get_state().status is Status.INITIAL

        # Already there: said at once, whatever --wait.
        code, out, _ = await cli_output(capsys, "unload", "coder", "--wait", "0", "--url", url)
        assert (code, out) == (0, "coder: unloaded\n")


# Every command that names a model (start, stop, restart, status and logs take one too).
@pytest.mark.parametrize("action", ["load", "unload", "start", "stop", "restart", "status", "logs"])
async def test_unknown_model_is_one_line_with_the_models_there_are(
    tmp_path: Path,
    fake_binary: Path,
    model_file: Path,
    action: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with serve_herd(tmp_path, fake_binary, model_file) as (url, _):
        code, out, err = await cli_output(capsys, action, "nope", "--url", url)
    assert (code, out) == (1, "")
    assert err == (
        "llamaherd: error: The model 'nope' does not exist. Available models: chat, coder\n"
    )


async def test_load_wait_0_says_it_began(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_herd(tmp_path, fake_binary, model_file) as (url, herd):
        await herd.primary.service.wait_settled(20)
        code, out, _ = await cli_output(capsys, "load", "coder", "--wait", "0", "--url", url)
    # The answer comes before `chat` has made room.
    assert (code, out) == (0, "coder: load requested; now unloaded (waiting for room)\n")


async def test_load_not_ready_within_wait_exits_1(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = {"slow": {"args": ["--fake-load-s", "30"]}}
    async with serve_herd(tmp_path, fake_binary, model_file, models=slow, max_loaded=3) as (
        url,
        herd,
    ):
        code, out, _ = await cli_output(capsys, "load", "slow", "--wait", "0.3", "--url", url)
        assert herd.view("slow").phase is Phase.LOADING
    assert (code, out) == (1, "slow: not ready after 0.3 s, still loading\n")


async def test_a_failed_load_exits_1_and_a_new_one_is_not_taken_for_it(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flaky` fails its first launch only. Its second load must wait for `chat` to make room,
    and meanwhile still shows the first one's `failed`: the CLI waits for the new outcome."""
    flaky = {
        "flaky": {
            "args": ["--fake-fail-first", "1", "--fake-state-file", str(tmp_path / "launches")]
        }
    }
    async with serve_herd(tmp_path, fake_binary, model_file, models=flaky, max_retries=0) as (
        url,
        herd,
    ):
        code, out, _ = await cli_output(capsys, "load", "flaky", "--url", url)
        assert code == 1
        assert out.startswith("flaky: failed: llama-server exited with code 1 while starting"), out
        assert out.count("\n") == 1

        code, _, _ = await cli_output(capsys, "load", "chat", "--url", url)
        assert code == 0
        code, out, _ = await cli_output(capsys, "load", "flaky", "--url", url)
        pid = herd.backends["flaky"].service.get_state().pid
        assert (code, out.split(" (pid")[0]) == (
            0,
            f"flaky: ready on port {herd.backends['flaky'].service.port}",
        )
        assert out.endswith(f"(pid {pid})\n")


def test_models_rendering() -> None:
    now_ms = 1_800_000_000_000
    entry = {
        "id": "coder", "aliases": ["c", "code"], "default": False, "state": "ready",
        "phase": "ready", "loaded": True, "draining": False, "inFlight": 2, "queued": 3,
        "maxConcurrency": 4, "lastUsed": now_ms - 12_400, "ttlSeconds": 300.0, "ttlLeft": 287.6,
        "pinned": False, "port": 41234, "pid": 4242, "retries": 0, "lastError": None,
        "waitingFor": None, "path": "/m/coder.gguf", "size": int(4.5 * 1024**3),
        "architecture": "llama", "parameters": 7_000_000_000, "quantisation": "Q4_K_M",
        "contextLength": 8192, "memoryMb": 5000.0,
    }  # fmt: skip
    waiting = entry | {
        "id": "big", "aliases": [], "default": True, "state": "error", "phase": "failed",
        "loaded": False, "inFlight": 0, "queued": 1, "lastUsed": None, "ttlLeft": None,
        "pid": None, "size": None, "quantisation": None, "retries": 5,
        "lastError": "llama-server exited with code 1\n  out of memory",
        "waitingFor": "every slot is held",
    }  # fmt: skip
    table = render_models([entry, waiting], now_ms=now_ms).splitlines()
    assert table == [
        "  MODEL  STATE   IN FLIGHT  QUEUED  LAST USED  TTL LEFT  SIZE     QUANT   PORT   PID",
        "  coder  ready   2/4        3       12s ago    4m 48s    4.5 GiB  Q4_K_M  41234  4242",
        "    aliases: c, code",
        "* big    failed  0/4        1       -          -         -        -       41234  -",
        "    waiting: every slot is held",
        "    last error: llama-server exited with code 1 | out of memory",
    ]
    assert render_models([]) == "no models"
    assert (
        render_models([entry | {"draining": True}], now_ms=now_ms).splitlines()[1].split()[1]
        == "draining"
    )
    restarting = entry | {"phase": "loading", "state": "crashed", "retries": 2}
    assert "loading (retry 2)" in render_models([restarting], now_ms=now_ms)
    # In error the count is the last run's: a new load has not started its first step yet.
    assert "retry" not in render_models([restarting | {"state": "error"}], now_ms=now_ms)


@pytest.mark.parametrize(
    ("action", "outcome", "changes", "wait", "line"),
    [
        ("load", "done", {}, 60, "coder: ready on port 41234 (pid 4242)"),
        ("load", "done", {"pid": None}, 60, "coder: ready on port 41234"),
        ("unload", "done", {"phase": "unloaded"}, 60, "coder: unloaded"),
        ("unload", "done", {"phase": "failed", "lastError": "exited\nboom"}, 60,
         "coder: not loaded (its last load failed: exited | boom)"),
        ("load", "failed", {"phase": "failed", "lastError": "exited with code 1"}, 60,
         "coder: failed: exited with code 1"),
        ("load", "pending", {"phase": "loading"}, 60, "coder: not ready after 60 s, still loading"),
        ("load", "pending", {"phase": "unloaded", "waitingFor": "pinned models hold every slot"},
         2.5, "coder: not ready after 2.5 s, still unloaded; pinned models hold every slot"),
        ("unload", "pending", {"draining": True}, 60,
         "coder: not unloaded after 60 s, still draining"),
        ("unload", "pending", {"draining": True}, 0, "coder: unload requested; now draining"),
        ("load", "pending", {"phase": "failed"}, 0,
         "coder: load requested; now failed (its last load failed; the new one is waiting for "
         "room)"),
    ],
)  # fmt: skip
def test_model_outcome_lines(
    action: str, outcome: Any, changes: dict[str, Any], wait: float, line: str
) -> None:
    entry = {
        "id": "coder", "phase": "ready", "draining": False, "port": 41234, "pid": 4242,
        "lastError": None, "waitingFor": None, "retries": 0, "state": "ready",
    }  # fmt: skip
    result = ModelWait(outcome, entry | changes)
    assert model_outcome_line(action, result, wait=wait) == line


# ---- errors and help ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["status"], ["status", "--json"], ["start"], ["stop"], ["restart"], ["logs"], ["logs", "-f"],
     ["models"], ["models", "--json"], ["load", "coder"], ["unload", "coder"]],
)  # fmt: skip
async def test_unreachable_service_is_one_line_and_exit_1(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert await run_cli(*argv, "--url", url) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"llamaherd: error: cannot reach llamaherd at {url} (connection refused); "
        "is 'llamaherd serve' running?\n"
    )


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"\n    {command}" in out, command
    assert "--max-events" not in out
