"""Smoke tests of the fake llama-server's switches, so supervisor tests can trust the fake."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

FAKE = Path(__file__).with_name("fake_llama_server.py")


@dataclass
class Fake:
    """One running fake and where to find its output."""

    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    stdout_path: Path
    # One client per test: httpx.get() builds a fresh SSL context each call, slow enough on a
    # loaded machine to miss the short windows these tests look into.
    client: httpx.Client

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_exit(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def wait_bound(self, timeout: float = 10.0) -> httpx.Response:
        """Poll /health until the port answers; returns that first answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.client.get(self.url("/health"), timeout=2.0)
            except httpx.ConnectError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.wait_bound(timeout).status_code != 200:
            assert time.monotonic() < deadline, "fake never became ready"
            time.sleep(0.02)


Launcher = Callable[..., Fake]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    """Start fakes as the supervisor would; whatever is still running is SIGKILLed at the end."""
    started: list[Fake] = []
    client = httpx.Client(timeout=10.0)

    def _launch(*args: str, port: int | None = None) -> Fake:
        port = free_port() if port is None else port
        n = len(started)
        stderr_path = tmp_path / f"fake{n}.stderr"
        stdout_path = tmp_path / f"fake{n}.stdout"
        # Files rather than pipes: nothing has to drain them while a test waits.
        with stderr_path.open("wb") as err, stdout_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(FAKE), "--port", str(port), *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        fake = Fake(proc, port, stderr_path, stdout_path, client)
        started.append(fake)
        return fake

    try:
        yield _launch
    finally:
        for fake in started:
            if fake.proc.poll() is None:
                # Our own child, by pid.
                os.kill(fake.proc.pid, signal.SIGKILL)
            fake.proc.wait(timeout=10)
        client.close()


@pytest.mark.timeout(30)
def test_loading_then_ready_and_unknown_flags_ignored(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "1.0", "--threads", "4", "-c", "2048", "--metrics", "-mg", "0")
    first = fake.wait_bound()
    assert first.status_code == 503
    assert first.json() == {
        "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
    }
    fake.wait_ready()
    response = fake.client.get(fake.url("/health"))
    assert response.json() == {"status": "ok"}
    assert response.headers["server"] == "llama.cpp"
    stderr = fake.stderr()
    assert f"server is listening on http://127.0.0.1:{fake.port} - starting the main loop" in stderr
    assert "all slots are idle" in stderr
    assert "GET /health" not in stderr, "/health must stay out of the access log"


@pytest.mark.timeout(30)
def test_models_list_shape(launch: Launcher, tmp_path: Path) -> None:
    model = tmp_path / "tiny-q4.gguf"
    model.write_bytes(b"GGUF" + bytes(2996))
    fake = launch("-m", str(model), "--fake-load-s", "0")
    fake.wait_ready()
    for path in ("/v1/models", "/models"):
        body = fake.client.get(fake.url(path)).json()
        assert body["object"] == "list"
        [entry] = body["data"]
        assert entry["id"] == "tiny-q4.gguf"
        assert entry["owned_by"] == "llamacpp"
        assert entry["meta"]["size"] == 3000
        assert entry["meta"]["n_ctx_train"] == 2048
        assert body["models"][0]["name"] == "tiny-q4.gguf"
        assert body["models"][0]["details"]["format"] == "gguf"
    assert fake.client.get(fake.url("/props")).json()["model_path"] == str(model)
    assert fake.client.get(fake.url("/slots")).json()[0]["is_processing"] is False
    missing = fake.client.get(fake.url("/no/such/path"))
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "File Not Found"


@pytest.mark.timeout(30)
def test_chat_completion_usage_stream_and_bad_json(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "0", "--fake-gen-ms", "1")
    fake.wait_ready()
    request = {"messages": [{"role": "user", "content": "say three words"}], "max_tokens": 5}
    body = fake.client.post(fake.url("/v1/chat/completions"), json=request).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"] == {"completion_tokens": 5, "prompt_tokens": 3, "total_tokens": 8}
    assert body["timings"]["predicted_n"] == 5
    assert body["timings"]["predicted_per_second"] > 0

    with fake.client.stream(
        "POST", fake.url("/v1/chat/completions"), json={**request, "stream": True}
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["timings"]["predicted_n"] == 5
    content = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert len([c for c in content if c]) == 5

    native = fake.client.post(
        fake.url("/completion"), json={"prompt": "a b", "n_predict": 2}
    ).json()
    assert native["stop"] is True
    assert native["tokens_predicted"] == 2
    assert native["timings"]["prompt_n"] == 2

    bad = fake.client.post(
        fake.url("/v1/chat/completions"),
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.timeout(30)
def test_slot_busy_while_generating(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "0", "--fake-gen-ms", "50")
    fake.wait_ready()
    request = {"prompt": "x", "n_predict": 100, "stream": True}
    with fake.client.stream("POST", fake.url("/completion"), json=request) as response:
        assert next(response.iter_lines()).startswith("data: ")
        # The generation is still running, and /health and /slots still answer meanwhile.
        assert fake.client.get(fake.url("/health")).status_code == 200
        assert fake.client.get(fake.url("/slots")).json()[0]["is_processing"] is True
    # Leaving the block hung up mid-stream; the fake notices at its next token and frees the slot.
    deadline = time.monotonic() + 5.0
    while fake.client.get(fake.url("/slots")).json()[0]["is_processing"]:
        assert time.monotonic() < deadline, "slot still busy after the client went away"
        time.sleep(0.05)
    assert "POST /completion 127.0.0.1 aborted" in fake.stderr()


@pytest.mark.timeout(30)
def test_crash_after_exits_1_with_assert_line(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "0", "--fake-crash-after-s", "0.3")
    assert fake.wait_exit() == 1
    stderr = fake.stderr()
    # Counted from readiness: the crash follows the "ready" lines.
    assert stderr.index("all slots are idle") < stderr.index("GGML_ASSERT(")


@pytest.mark.timeout(30)
def test_crash_signal_kills_with_that_signal(launch: Launcher) -> None:
    fake = launch(
        "--fake-load-s", "0", "--fake-crash-after-s", "0.1", "--fake-crash-signal", "SEGV"
    )
    assert fake.wait_exit() == -signal.SIGSEGV


@pytest.mark.timeout(30)
def test_exit_at_start(launch: Launcher, tmp_path: Path) -> None:
    model = tmp_path / "broken.gguf"
    fake = launch("-m", str(model), "--fake-exit-at-start", "3")
    assert fake.wait_exit() == 3
    assert f"error: failed to load model '{model}'" in fake.stderr()
    with pytest.raises(httpx.ConnectError):
        fake.client.get(fake.url("/health"))


@pytest.mark.timeout(30)
def test_fail_first_then_recover(launch: Launcher, tmp_path: Path) -> None:
    state_file = tmp_path / "launches"
    pid_file = tmp_path / "fake.pid"
    args = ("--fake-fail-first", "2", "--fake-state-file", str(state_file), "--fake-load-s", "0")
    for _ in range(2):
        failed = launch(*args)
        assert failed.wait_exit() == 1
        assert "failed to load model" in failed.stderr()
    fake = launch(*args, "--fake-pid-file", str(pid_file))
    fake.wait_ready()
    assert state_file.read_text().strip() == "3"
    assert int(pid_file.read_text()) == fake.proc.pid


@pytest.mark.timeout(30)
def test_hang_makes_health_time_out(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "0", "--fake-hang-after-s", "0.3")
    fake.wait_ready()
    time.sleep(0.5)
    with pytest.raises(httpx.ReadTimeout):
        fake.client.get(fake.url("/health"), timeout=0.5)
    assert fake.proc.poll() is None, "a hung server is still alive"
    # Signals still work on a hung server.
    os.kill(fake.proc.pid, signal.SIGTERM)
    assert fake.wait_exit() == 0


@pytest.mark.timeout(30)
def test_sigterm_exits_0_with_cleanup_line(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "0")
    fake.wait_ready()
    os.kill(fake.proc.pid, signal.SIGTERM)
    assert fake.wait_exit(timeout=5) == 0
    assert "cleaning up before exit..." in fake.stderr()


@pytest.mark.timeout(30)
def test_ignore_sigterm_needs_sigkill(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "0", "--fake-ignore-sigterm")
    fake.wait_ready()
    os.kill(fake.proc.pid, signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        fake.wait_exit(timeout=0.5)
    os.kill(fake.proc.pid, signal.SIGKILL)
    assert fake.wait_exit() == -signal.SIGKILL


@pytest.mark.timeout(30)
def test_slow_sigterm(launch: Launcher) -> None:
    fake = launch("--fake-load-s", "0", "--fake-slow-sigterm-s", "0.6")
    fake.wait_ready()
    os.kill(fake.proc.pid, signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        fake.wait_exit(timeout=0.3)
    assert fake.wait_exit(timeout=5) == 0


@pytest.mark.timeout(30)
def test_port_in_use_exits_1(launch: Launcher) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        fake = launch(port=port)
        assert fake.wait_exit() == 1
    expected = f"couldn't bind HTTP server socket, hostname: 127.0.0.1, port: {port}"
    assert expected in fake.stderr()


@pytest.mark.timeout(30)
def test_wrong_service_answers_html_404(launch: Launcher) -> None:
    fake = launch("--fake-wrong-service")
    response = fake.wait_bound()
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "nginx" in response.text


@pytest.mark.timeout(30)
def test_503_forever_and_spew(launch: Launcher) -> None:
    fake = launch("--fake-503-forever", "--fake-load-s", "0", "--fake-spew-lines", "500")
    assert fake.wait_bound().status_code == 503
    time.sleep(0.1)
    assert fake.client.get(fake.url("/health")).status_code == 503
    assert fake.stdout_path.read_text().count("spew stdout") == 500
    assert fake.stderr().count("spew stderr") == 500
