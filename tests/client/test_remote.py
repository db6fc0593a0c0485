"""The client commands against things that are not a well llamaherd: a server that answers
JSON llamaherd never sends, llama-server itself, another web server, a server that never
answers. Each ends as one line on stderr and exit 1, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamaherd import __version__
from llamaherd.client.cli import main
from llamaherd.client.parser import DEFAULT_WAIT_S, build_parser
from llamaherd.client.remote import DEFAULT_URL, RemoteClient
from llamaherd.client.waiting import model_settled, wait_for_model
from llamaherd.errors import LlamaherdError
from tests.conftest import free_port, wait_http_ready

pytestmark = pytest.mark.timeout(60)

LLAMAHERD_HEALTHZ = (200, {"status": "ok", "name": "llamaherd", "version": "9.9.9"})
GOOD_STATUS: dict[str, Any] = {
    "status": "ready",
    "models": [],
    "lastError": None,
    "retries": 0,
    "uptime": 5,
    "startedAt": "2026-01-01T00:00:00.000Z",
    "maxRetries": 5,
    "pid": 42,
    "adopted": False,
    "nextRetryAt": None,
    "restarts": 0,
    "lastExit": None,
}

MODEL: dict[str, Any] = {
    "id": "coder", "aliases": ["c"], "default": False, "state": "initial", "phase": "unloaded",
    "loaded": False, "draining": False, "inFlight": 0, "queued": 0, "maxConcurrency": 1,
    "lastUsed": None, "ttlSeconds": None, "ttlLeft": None, "pinned": False, "port": 41234,
    "pid": None, "retries": 0, "lastError": None, "waitingFor": None, "path": "/m/coder.gguf",
    "size": 2048, "architecture": None, "parameters": None, "quantisation": None,
    "contextLength": None, "memoryMb": 0.0,
}  # fmt: skip
UNKNOWN_MODEL = {
    "error": {
        "message": "The model 'x' does not exist. Available models: coder",
        "type": "not_found",
    }
}

Routes = dict[str, tuple[int, Any]]
HANG = object()  # as a body: never answer (until the test ends)


@pytest.fixture
def odd_server() -> Iterator[Callable[[Routes], str]]:
    """A tiny HTTP server answering each path with a fixed (status, JSON body); 404 otherwise."""
    servers: list[ThreadingHTTPServer] = []
    done = threading.Event()

    def start(routes: Routes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                status, body = routes.get(self.path.split("?")[0], (404, {"detail": "nope"}))
                if body is HANG:
                    done.wait(30)
                    return
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def version_string(self) -> str:
                return "OddServer/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    done.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    assert err.startswith("llamaherd: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.removeprefix("llamaherd: error: ").rstrip("\n")


# ---- JSON that llamaherd never sends --------------------------------------------------------


def test_status_with_a_wrong_type_is_one_line(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = odd_server(
        {"/api/status": (200, GOOD_STATUS | {"uptime": "abc"}), "/healthz": LLAMAHERD_HEALTHZ}
    )
    for argv in (["status"], ["status", "--json"]):
        code, out, err = run(capsys, *argv, "--url", url)
        assert (code, out) == (1, "")
        assert one_error_line(err) == (
            f"{url} answered GET /api/status with something llamaherd does not send "
            "(uptime: input should be a valid integer, got 'abc'); it says it is llamaherd "
            f"9.9.9, this command is llamaherd {__version__}: use the same version of both"
        )


def test_logs_with_a_wrong_type_is_one_line(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = odd_server({"/api/llama/logs": (200, {"lines": 7}), "/healthz": LLAMAHERD_HEALTHZ})
    code, out, err = run(capsys, "logs", "--url", url)
    assert (code, out) == (1, "")
    message = one_error_line(err)
    assert message.startswith(f"{url} answered GET /api/llama/logs with something llamaherd")
    assert "(lines: input should be a valid list, got 7)" in message


def test_a_control_answer_without_a_status_is_one_line(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = odd_server(
        {
            "/api/llama/start": (200, {"status": {"status": 5}}),
            "/api/status": (200, GOOD_STATUS),
            "/healthz": LLAMAHERD_HEALTHZ,
        }
    )
    code, out, err = run(capsys, "start", "--url", url)
    assert (code, out) == (1, "")
    assert "answered POST /api/llama/start with something llamaherd does not send" in err
    one_error_line(err)


def test_a_models_list_with_a_wrong_type_is_one_line(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = odd_server(
        {
            "/api/gateway/models": (200, {"models": [MODEL | {"inFlight": "2"}]}),
            "/healthz": LLAMAHERD_HEALTHZ,
        }
    )
    for argv in (["models"], ["models", "--json"]):
        code, out, err = run(capsys, *argv, "--url", url)
        assert (code, out) == (1, "")
        message = one_error_line(err)
        assert message.startswith(f"{url} answered GET /api/gateway/models with something")
        assert "(models.0.inFlight: input should be a valid integer, got '2')" in message


def test_a_load_answer_that_is_no_model_is_one_line(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = odd_server(
        {"/api/models/coder/load": (200, {"status": "ok"}), "/healthz": LLAMAHERD_HEALTHZ}
    )
    code, out, err = run(capsys, "load", "coder", "--url", url)
    assert (code, out) == (1, "")
    assert "answered POST /api/models/coder/load with something llamaherd does not send (id: " in (
        one_error_line(err)
    )


def test_unknown_model_from_something_else_says_it_is_not_llamaherd(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A 404 shaped like llamaherd's "no such model" is only believed from llamaherd."""
    url = odd_server({"/api/models/x/load": (404, UNKNOWN_MODEL)})  # /healthz: 404
    code, out, err = run(capsys, "load", "x", "--url", url)
    assert (code, out) == (1, "")
    assert one_error_line(err) == (
        f"{url} is not llamaherd (it answers as OddServer/1.0); point --url at llamaherd's "
        f"address (default {DEFAULT_URL})"
    )
    url = odd_server({"/api/models/x/load": (404, UNKNOWN_MODEL), "/healthz": LLAMAHERD_HEALTHZ})
    code, out, err = run(capsys, "load", "x", "--url", url)
    assert (code, out) == (1, "")
    assert one_error_line(err) == "The model 'x' does not exist. Available models: coder"


@pytest.mark.parametrize("argv", [["models"], ["load", "coder"], ["unload", "coder"]])
def test_a_llamaherd_without_the_gateway_says_to_use_one_version(
    argv: list[str], odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An older llamaherd answers its 404 for a path it does not have, not for a model."""
    no_path = {"error": {"message": "Not Found", "type": "not_found"}}
    routes = {
        "/api/gateway/models": (404, no_path),
        "/api/models/coder/load": (404, no_path),
        "/api/models/coder/unload": (404, no_path),
        "/healthz": LLAMAHERD_HEALTHZ,
    }
    code, out, err = run(capsys, *argv, "--url", odd_server(routes))
    assert (code, out) == (1, "")
    message = one_error_line(err)
    assert "with something llamaherd does not send (HTTP 404 Not Found: Not Found)" in message
    assert message.endswith(
        f"it says it is llamaherd 9.9.9, this command is llamaherd {__version__}: use the same "
        "version of both"
    )


def test_odd_json_from_something_else_says_it_is_not_llamaherd(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = odd_server({"/api/status": (200, {"hello": "world"})})  # /healthz: 404
    code, out, err = run(capsys, "status", "--url", url)
    assert (code, out) == (1, "")
    assert one_error_line(err) == (
        f"{url} is not llamaherd (it answers as OddServer/1.0); point --url at llamaherd's "
        f"address (default {DEFAULT_URL})"
    )


# ---- llama-server, or some other program, at --url ------------------------------------------


def wait_listening(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {timeout_s} s")


@pytest.fixture(params=["loading", "ready"])
def llama_server_url(
    request: pytest.FixtureRequest,
    spawn_external: Callable[..., object],
    fake_binary: Path,
    model_file: Path,
    port: int,
) -> str:
    """The fake llama-server, started outside llamaherd, as a user might mistake it for it:
    still loading (503 "Loading model" on every path), or ready (404 "File Not Found")."""
    load_s = "600" if request.param == "loading" else "0"
    argv = [str(fake_binary), "--port", str(port), "-m", str(model_file), "--fake-load-s", load_s]
    spawn_external(argv)
    if request.param == "loading":
        wait_listening(port)
    else:
        wait_http_ready(port)
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    "argv",
    [["status"], ["start"], ["stop"], ["restart", "--wait", "0"], ["logs"], ["logs", "-f"],
     ["models"], ["load", "coder"], ["unload", "coder", "--wait", "0"]],
)  # fmt: skip
def test_pointed_at_llama_server_says_so(
    argv: list[str], llama_server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = llama_server_url
    code, out, err = run(capsys, *argv, "--url", url)
    assert (code, out) == (1, "")
    assert one_error_line(err) == (
        f"{url} is not llamaherd (it looks like llama-server); point --url at llamaherd's "
        f"address (default {DEFAULT_URL})"
    )


def test_pointed_at_another_web_server_names_it(
    spawn_external: Callable[..., object],
    fake_binary: Path,
    port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spawn_external([str(fake_binary), "--port", str(port), "--fake-wrong-service"])
    wait_listening(port)
    url = f"http://127.0.0.1:{port}"
    code, _, err = run(capsys, "status", "--url", url)
    assert code == 1
    assert one_error_line(err).startswith(
        f"{url} is not llamaherd (it answers as nginx/1.24.0 (Ubuntu)); point --url at"
    )


# ---- a server that never answers ------------------------------------------------------------


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_stop_that_is_never_answered_is_bounded(
    odd_server: Callable[[Routes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The stop's wait is bounded by --wait (60 s by default, like start and restart)."""
    assert build_parser().parse_args(["stop"]).wait == DEFAULT_WAIT_S == 60
    url = odd_server({"/api/status": (200, GOOD_STATUS), "/api/llama/stop": (200, HANG)})
    started = time.monotonic()
    code, out, err = run(capsys, "stop", "--wait", "1", "--url", url)
    elapsed = time.monotonic() - started
    assert (code, out) == (1, "")
    assert one_error_line(err) == (
        f"llamaherd at {url} did not answer the stop within 6 s; llama-server may still be "
        "stopping: 'llamaherd status' shows where it is, and --wait SECONDS waits longer"
    )
    assert elapsed < 10


def test_stop_against_a_silent_port_is_bounded(
    silent_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, err = run(capsys, "stop", "--wait", "1", "--url", silent_url)
    assert time.monotonic() - started < 10
    assert (code, out) == (1, "")
    assert one_error_line(err) == (
        f"{silent_url} accepted the connection but did not answer GET /api/status within 1 s; "
        "check --url, or restart 'llamaherd serve' if it hangs"
    )


def test_restart_against_a_silent_server_says_what_it_waited_for(
    silent_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llamaherd.client.remote.ANSWER_MARGIN_S", 0.5)
    code, _, err = run(capsys, "restart", "--wait", "0.5", "--url", silent_url)
    assert code == 1
    assert one_error_line(err) == (
        f"llamaherd at {silent_url} did not answer the restart within 1 s although it answers "
        "within --wait 0.5 s when well; 'llamaherd status' shows where llama-server is"
    )


def test_a_free_port_is_still_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "stop", "--url", url)
    assert code == 1
    assert "cannot reach llamaherd at" in one_error_line(err)


def test_a_closed_stdout_is_no_traceback(odd_server: Callable[[Routes], str]) -> None:
    """`llamaherd status | head -0`: the reader is gone before anything is written."""
    url = odd_server({"/api/status": (200, GOOD_STATUS)})
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "llamaherd", "status", "--url", url],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, "")


# ---- waiting for a load or an unload --------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "changes", "stale", "expected"),
    [
        ("load", {"phase": "ready"}, False, "done"),
        ("load", {"phase": "ready", "draining": True}, False, None),  # evicted: loads again later
        ("load", {"phase": "loading"}, False, None),
        ("load", {"phase": "unloaded"}, False, None),  # waiting for room
        ("load", {"phase": "failed"}, False, "failed"),
        ("load", {"phase": "failed"}, True, None),  # the last load's, while the new one waits
        ("unload", {"phase": "unloaded"}, False, "done"),
        ("unload", {"phase": "failed"}, False, "done"),  # no server, no room held
        ("unload", {"phase": "ready", "draining": True}, False, None),
        ("unload", {"phase": "unloading"}, False, None),
    ],
)
def test_model_settled(
    action: Any, changes: dict[str, Any], stale: bool, expected: str | None
) -> None:
    assert model_settled(action, MODEL | changes, stale_failure=stale) == expected


class ScriptedModels:
    """llamaherd's /api/gateway/models answering each poll with the next of `phases`, on a
    clock that only sleeping moves."""

    def __init__(self, phases: list[str | None]) -> None:
        self.phases = phases
        self.polls = 0
        self.now = 0.0
        self.sleeps: list[float] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/api/gateway/models")
        phase = self.phases[min(self.polls, len(self.phases) - 1)]
        self.polls += 1
        models = [] if phase is None else [MODEL | {"phase": phase}]
        return httpx.Response(200, json={"models": [MODEL | {"id": "other"}, *models]})

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wait(self, action: Any, first_phase: str, wait_s: float = 60) -> Any:
        transport = httpx.MockTransport(self.handler)
        with RemoteClient("http://llamaherd.test", transport=transport) as client:
            return wait_for_model(
                client,
                action,
                MODEL | {"phase": first_phase},
                wait_s,
                clock=lambda: self.now,
                sleep=self.sleep,
            )


def test_a_load_that_failed_before_waits_for_its_new_outcome() -> None:
    script = ScriptedModels(["failed", "unloaded", "loading", "ready"])
    result = script.wait("load", "failed")
    assert (result.outcome, result.entry["phase"], script.polls) == ("done", "ready", 4)
    # Quick at first, then less often.
    assert script.sleeps == [0.05, 0.1, 0.2, 0.4]


def test_a_new_load_that_fails_again_is_seen() -> None:
    script = ScriptedModels(["failed", "loading", "failed"])
    assert script.wait("load", "failed").outcome == "failed"
    assert script.polls == 3


def test_the_wait_ends_at_its_deadline() -> None:
    script = ScriptedModels(["loading"])
    result = script.wait("load", "loading", wait_s=3)
    assert (result.outcome, result.entry["phase"]) == ("pending", "loading")
    assert sum(script.sleeps) == pytest.approx(3)
    assert max(script.sleeps) == 0.5
    # Already there, or --wait 0: no poll at all.
    script = ScriptedModels(["ready"])
    assert script.wait("unload", "unloaded").outcome == "done"
    assert script.wait("load", "loading", wait_s=0).outcome == "pending"
    assert script.polls == 0


def test_a_model_that_vanishes_while_waited_for_is_one_error() -> None:
    script = ScriptedModels([None])
    with pytest.raises(LlamaherdError, match="no longer lists model 'coder'"):
        script.wait("unload", "unloading")


@pytest.mark.parametrize(
    ("model", "path"),
    [("coder", "/api/models/coder/load"), ("..", "/api/models/%2E%2E/load"),
     ("a/b c", "/api/models/a%2Fb%20c/load"), ("qwen2.5", "/api/models/qwen2.5/load")],
)  # fmt: skip
def test_the_model_is_one_segment_of_the_path(model: str, path: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=MODEL)

    with RemoteClient("http://llamaherd.test", transport=httpx.MockTransport(handler)) as client:
        assert client.control_model("load", model) == MODEL
    assert seen == [path]
