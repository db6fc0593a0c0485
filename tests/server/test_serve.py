"""`llamaherd serve` as a user runs it: a real process, a real llama-server, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, pid_alive, serve_once, wait_until_dead
from tests.serving import ServedLlamaherd

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(90)]


@pytest.fixture
def config(tmp_path: Path, demo_model: Path, real_binary: Path) -> Path:
    path = tmp_path / ".llama-proxy-config.json"
    path.write_text(
        json.dumps(
            {
                "llama_server_host": "127.0.0.1",
                "llama_server_port": free_port(),
                "llama_model_path": str(demo_model),
                "llama_server_binary": str(real_binary),
                "app_port": free_port(),
            }
        )
    )
    return path


@pytest.fixture
def serve(config: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    app_port = json.loads(config.read_text())["app_port"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamaherd", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, f"http://127.0.0.1:{app_port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


def wait_ready(url: str, timeout_s: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/api/status", timeout=2).json()
            if status["status"] == "ready":
                return dict(status)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"llamaherd at {url} did not report ready within {timeout_s} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_llama_server_gracefully_and_exits_0(
    serve: tuple[subprocess.Popen[str], str], sig: signal.Signals
) -> None:
    proc, url = serve
    status = wait_ready(url)
    child = status["pid"]
    assert isinstance(child, int) and pid_alive(child)

    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=20)

    assert proc.returncode == 0, output
    assert wait_until_dead(child, 5)
    assert "Stopping llama-server" in output
    assert "llama-server stopped (exited with code 0)" in output
    assert "Force killing" not in output
    assert "Traceback" not in output


def test_log_lines_a_user_sees(serve: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = serve
    status = wait_ready(url)
    assert isinstance(status["pid"], int)
    os.kill(status["pid"], signal.SIGKILL)
    time.sleep(0.5)
    wait_ready(url)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=20)
    assert "Starting llama-server:" in output
    assert "with 1 model(s)" in output
    assert "retry 1/5 in 1 s" in output
    assert "Stopping llama-server" in output


def test_app_port_in_use_is_one_clear_line(config: Path) -> None:
    app_port = json.loads(config.read_text())["app_port"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", app_port))
        holder.listen()
        result = serve_once(config)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{app_port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (  # TEST-NET-1 is not ours; the unsafe flag lets it past the check for keys
            {"app_host": "192.0.2.1", "unsafe_expose_without_keys": True},
            ["cannot listen on 192.0.2.1", "Use an address of this machine"],
        ),
        (
            {"app_host": "0.0.0.0"},
            ["refusing to listen on 0.0.0.0 without API keys", "--unsafe-expose-without-keys"],
        ),
        (
            {"api_keys": [{"name": "ci", "key": "short-secret"}]},
            ["api_keys[0] (ci): the key is 12 characters long; use at least 16"],
        ),
    ],
    ids=["not-our-address", "exposed-without-keys", "weak-key"],
)
def test_a_start_up_mistake_is_one_clear_line(
    config: Path, extra: dict[str, object], expected: list[str]
) -> None:
    config.write_text(json.dumps({**json.loads(config.read_text()), **extra}))
    result = serve_once(config)
    assert result.returncode == 1
    for words in expected:
        assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert "short-secret" not in result.stderr + result.stdout  # a key is never echoed


async def test_a_second_llamaherd_on_the_same_state_dir_refuses_naming_the_first(
    config: Path, tmp_path: Path
) -> None:
    """Two would write one history and rotate the same log files: the second says who holds
    the folder and how to get past it, and leaves the first serving."""
    state = tmp_path / "state"
    data = {**json.loads(config.read_text()), "state_dir": str(state)}
    config.write_text(json.dumps(data))
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps({**data, "app_port": free_port(), "llama_server_port": free_port()})
    )
    async with ServedLlamaherd(config) as first:
        await first.wait_healthy()
        result = await asyncio.to_thread(serve_once, other)
        assert result.returncode == 1, result.stderr
        assert (
            f"another llamaherd (pid {first.pid}) already uses the state folder {state}"
            in result.stderr
        )
        assert "Stop the other llamaherd, or give this one another state_dir" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        await first.wait_healthy(timeout_s=5)


async def test_serve_caps_connections_and_cuts_silent_ones(config: Path) -> None:
    """The settings reach uvicorn: a third connection from one address is a 503 naming the key
    to raise, a connection that never sends its headers is closed after header_timeout_s, and
    one that drips a body to /healthz is closed body_timeout_s after its headers."""
    data = json.loads(config.read_text())
    config.write_text(
        json.dumps(
            {
                **data,
                "max_connections_per_client": 2,
                "header_timeout_s": 1.0,
                "body_timeout_s": 1.0,
            }
        )
    )
    async with ServedLlamaherd(config) as served:
        await served.wait_healthy()
        await asyncio.to_thread(check_caps, served.port)
        await asyncio.to_thread(check_body_deadline, served.port)


async def test_serve_bounds_socketio_sessions_waiting_for_a_connect(config: Path) -> None:
    """The settings reach Socket.IO: a third handshake from one address with two sessions
    waiting for their connect is a 503 naming the key; at their deadline they are closed."""
    data = json.loads(config.read_text())
    config.write_text(
        json.dumps(
            {**data, "max_socketio_pending_per_client": 2, "socketio_connect_timeout_s": 1.0}
        )
    )
    handshake = {"EIO": "4", "transport": "polling"}
    async with ServedLlamaherd(config) as served, served.http() as http:
        await served.wait_healthy()
        answers = [await http.get("/socket.io/", params=handshake) for _ in range(3)]
        assert [answer.status_code for answer in answers] == [200, 200, 503]
        message = answers[2].json()["error"]["message"]
        assert "(2 open; max_socketio_pending_per_client)" in message

        async def admitted() -> bool:
            return (await http.get("/socket.io/", params=handshake)).status_code == 200

        await served.wait_until("a handshake is admitted again", admitted, timeout_s=5)


def check_caps(port: int) -> None:
    with contextlib.ExitStack() as sockets:
        silent = [
            sockets.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(2)
        ]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            third.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_until_closed(third)  # it says connection: close
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"max_connections_per_client" in answer
        started = time.monotonic()
        for conn in silent:
            said = read_until_closed(conn)  # raises socket.timeout if the server holds it
            assert said == b"" or said.startswith(b"HTTP/1.1 408"), said
        waited = time.monotonic() - started
        assert waited < 8, f"silent connections were held {waited:.1f} s"
    # With the silent ones gone, the address is served again.
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def check_body_deadline(port: int) -> None:
    """`GET /healthz` with a megabyte announced and a byte sent every 0.1 s: answered, then
    closed a second after its headers, not held for as long as the bytes come."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
        started = time.monotonic()
        conn.settimeout(0.1)
        said = b""
        while time.monotonic() - started < 10:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                with contextlib.suppress(ConnectionError):  # it may close as the byte goes
                    conn.sendall(b"x")
                continue
            except ConnectionResetError:
                break  # a byte sent as it closed the connection: closed all the same
            if not chunk:
                break
            said += chunk
        held = time.monotonic() - started
    assert said.startswith(b"HTTP/1.1 200"), said
    assert 0.9 <= held < 4, f"a dripped body held the connection {held:.1f} s"


def read_until_closed(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def test_the_own_log_file_on_a_full_disk_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/full refuses every write with ENOSPC, as a full disk does."""
    from llamaherd.server.serve import _LogFile

    handler = _LogFile("/dev/full", maxBytes=1024, backupCount=1)
    try:
        for n in range(5):
            handler.handle(
                logging.LogRecord("llamaherd", logging.INFO, __file__, 1, f"line {n}", None, None)
            )
    finally:
        with contextlib.suppress(OSError):
            handler.close()
    err = capsys.readouterr().err
    assert err.count("cannot write its log file /dev/full (No space left on device)") == 1, err
    assert "Logging error" not in err and "Traceback" not in err
