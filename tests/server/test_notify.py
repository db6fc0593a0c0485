"""systemd's notify protocol: llamaherd's datagrams, received on a socket of the test's own, in
this process and from `llamaherd serve` run as systemd would run it (with $NOTIFY_SOCKET)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamaherd.server.notify import Notifier, socket_address
from tests.conftest import free_port
from tests.serving import ServedLlamaherd, write_config


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket at a path, as systemd makes one: the socket and $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        yield sock, str(path)


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace, which $NOTIFY_SOCKET writes as @name."""
    name = f"llamaherd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        yield sock, "@" + name


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def receive_from(served: ServedLlamaherd, sock: socket.socket, timeout_s: float) -> list[str]:
    """The next message llamaherd sends; fails at once if it exits first."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            return receive(sock)
        if served.proc is not None and served.proc.poll() is not None:
            with contextlib.suppress(TimeoutError):
                return receive(sock)  # sent just before it exited
            code = served.proc.returncode
            raise AssertionError(f"llamaherd exited with {code}:\n{served.tail()}")
    raise AssertionError(f"nothing on NOTIFY_SOCKET within {timeout_s} s:\n{served.tail()}")


def test_ready_and_stopping_reach_a_socket_at_a_path(
    listener: tuple[socket.socket, str],
) -> None:
    sock, address = listener
    notifier = Notifier(address)
    assert notifier.ready(status="serving 2 models")
    assert receive(sock) == ["READY=1", "STATUS=serving 2 models"]
    assert notifier.stopping()
    assert receive(sock) == ["STOPPING=1"]


def test_an_at_sign_names_an_abstract_socket(
    abstract_listener: tuple[socket.socket, str],
) -> None:
    sock, address = abstract_listener
    assert socket_address(address) == "\0" + address[1:]
    assert Notifier(address).ready()
    assert receive(sock) == ["READY=1"]


def test_a_status_keeps_to_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    assert Notifier(address).stopping(status="draining\n2 requests\r\nin flight")
    assert receive(sock) == ["STOPPING=1", "STATUS=draining 2 requests in flight"]


@pytest.mark.parametrize("address", [None, ""])
def test_without_notify_socket_nothing_is_sent(
    address: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(address)
    assert notifier.address is None
    assert not notifier.ready()
    assert not notifier.stopping()
    assert not caplog.records


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("/nonexistent/llamaherd-notify", "No such file or directory"),
        ("vsock:2:1234", "not a socket path or @name"),
    ],
)
def test_a_socket_that_cannot_be_reached_is_a_warning_never_an_error(
    address: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llamaherd.notify"):
        assert not Notifier(address).ready()
    assert says in caplog.text


def test_a_socket_that_refuses_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    # The file is left, nothing listens on it: the kernel refuses the datagram.
    with caplog.at_level(logging.WARNING, logger="llamaherd.notify"):
        assert not Notifier(str(path)).stopping()
    assert "cannot tell systemd STOPPING" in caplog.text


@pytest.mark.timeout(90)
async def test_serve_says_ready_once_it_answers_and_stopping_on_sigterm(
    listener: tuple[socket.socket, str], tmp_path: Path, fake_binary: Path, model_file: Path
) -> None:
    sock, address = listener
    config = write_config(
        tmp_path,
        {
            "llama_server_host": "127.0.0.1",
            "llama_server_port": free_port(),
            "llama_model_path": str(model_file),
            "llama_server_binary": str(fake_binary),
            "app_port": free_port(),
            "state_dir": str(tmp_path / "state"),
        },
    )
    served = ServedLlamaherd(config, env={"NOTIFY_SOCKET": address})
    try:
        served.start()
        ready = receive_from(served, sock, 60)
        # READY=1 means it serves: the first request after it is answered, without a retry.
        answer = httpx.get(f"{served.url}/healthz", timeout=5)
        assert ready[0] == "READY=1", served.tail()
        assert answer.status_code == 200
        assert any(line.startswith("STATUS=") and served.url in line for line in ready), ready
        served.send_signal(signal.SIGTERM)
        assert receive_from(served, sock, 30)[0] == "STOPPING=1", served.tail()
        assert await served.wait_exit(30) == 0, served.tail()
    finally:
        served.close()
