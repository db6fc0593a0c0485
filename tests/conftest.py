"""Shared fixtures: free ports, the fake and the real llama-server, the demo model, and a
recorder of state changes that tests await instead of sleeping."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.config.binaries import cached_llama_server
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.registry import ModelRegistry, ModelSpec
from llamaherd.gateway.scheduler import Limits
from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import ServiceState, Status

FAKE_SERVER = Path(__file__).parent / "fakes" / "fake_llama_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def raw_http(url: str, request: bytes, timeout_s: float = 10.0) -> tuple[bytes, bytes]:
    """Send `request` byte for byte (httpx would normalise a path or refuse a short body) to
    the server at `url`; its whole answer, read until it closes: (head, body)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


_SSE_LINE_END = re.compile(rb"\r\n|\n|\r")


async def sse_lines(answer: httpx.Response) -> AsyncIterator[str]:
    """The lines of an event stream. Not httpx's `aiter_lines`: it splits on every Unicode
    line break (str.splitlines: U+0085, U+2028, ...), which a model's text, and so the JSON
    of an SSE event, may hold; SSE lines end only with CR LF, LF or CR."""
    pending = b""
    async for chunk in answer.aiter_bytes():
        *lines, pending = _SSE_LINE_END.split(pending + chunk)
        for line in lines:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def sse_lines_sync(answer: httpx.Response) -> Iterator[str]:
    """`sse_lines` for a synchronous httpx stream."""
    pending = b""
    for chunk in answer.iter_bytes():
        *lines, pending = _SSE_LINE_END.split(pending + chunk)
        for line in lines:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def pid_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie counts as gone: it no longer serves anything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_dead(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    """Run `llamaherd serve --config CONFIG` to its end (for start-up errors)."""
    return subprocess.run(
        [sys.executable, "-m", "llamaherd", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="session", autouse=True)
def _state_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """History and log files of every llamaherd the tests start (in-process or as a command)
    go to a folder of the test session, never to the user's ~/.local/state."""
    folder = tmp_path_factory.mktemp("state")
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(folder)
    yield
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous


@pytest.fixture(scope="session", autouse=True)
def _no_api_key_from_the_shell() -> Iterator[None]:
    """A LLAMAHERD_API_KEY in the developer's shell would make every llamaherd the tests start
    require a key: the tests that want keys configure them."""
    previous = os.environ.pop("LLAMAHERD_API_KEY", None)
    yield
    if previous is not None:
        os.environ["LLAMAHERD_API_KEY"] = previous


@pytest.fixture(scope="session", autouse=True)
def _no_real_hugging_face(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reaches huggingface.co: every llamaherd the tests start (in-process or as a
    command) is pointed at a closed port on loopback unless a test gives its own Hub
    (tests/catalog/hub_server.py), with no token from the shell and no `hf auth login`."""
    names = ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME")
    previous = {name: os.environ.get(name) for name in names}
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # discard: nothing listens
    os.environ.pop("HF_TOKEN", None)
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf-home"))
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def fake_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable that runs the fake llama-server with this interpreter (exec keeps the pid)."""
    path = tmp_path_factory.mktemp("bin") / "fake-llama-server"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "$@"\n')
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def real_binary() -> Path:
    """The real llama-server: $LLAMA_SERVER, else the cache scripts/build-llama-server fills."""
    env = os.environ.get("LLAMA_SERVER")
    path = Path(env) if env else cached_llama_server()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"no real llama-server at {path}: run scripts/build-llama-server "
            "(scripts/test does this) or set LLAMA_SERVER"
        )
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A model file for the fake llama-server: a valid, empty GGUF header padded to 2 KiB."""
    path = tmp_path / "fake-model.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)  # version 3, no tensors, no metadata
    path.write_bytes(header.ljust(2048, b"\0"))
    return path


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_model(tmp_path_factory.mktemp("models") / "demo.gguf")


FAST_POLICY = SupervisorPolicy(
    readiness_interval_ms=50,
    readiness_max_attempts=100,
    health_timeout_ms=1000,
    liveness_interval_ms=100,
    liveness_failures=2,
    stop_timeout_s=2.0,
    stable_after_s=3600.0,
)


class RecordingSleep:
    """Stands in for asyncio.sleep in backoff waits: records each delay, waits `real_s`."""

    def __init__(self, real_s: float = 0.0) -> None:
        self.delays: list[float] = []
        self.real_s = real_s

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(self.real_s)


class StateRecorder:
    """Every state a service publishes, in order, with a way to await the one a test expects.

    The callback is synchronous so that each state is recorded the moment it is published."""

    def __init__(self, service: LlamaService) -> None:
        self.states: list[ServiceState] = []
        self._changed = asyncio.Event()
        self.unsubscribe = service.on_state_change(self._on_change)

    def _on_change(self, state: ServiceState) -> None:
        self.states.append(state)
        self._changed.set()

    @property
    def statuses(self) -> list[Status]:
        return [state.status for state in self.states]

    async def wait_for(
        self, predicate: Callable[[ServiceState], bool], timeout: float = 20.0
    ) -> ServiceState:
        async with asyncio.timeout(timeout):
            while True:
                for state in self.states:
                    if predicate(state):
                        return state
                self._changed.clear()
                await self._changed.wait()

    async def wait_status(self, status: Status, timeout: float = 20.0) -> ServiceState:
        return await self.wait_for(lambda state: state.status is status, timeout)


ServiceFactory = Callable[..., LlamaService]


@pytest.fixture
async def make_service(port: int) -> AsyncIterator[ServiceFactory]:
    """Build services; at teardown stop them all and check no process they started lives on."""
    services: list[LlamaService] = []
    pids: set[int] = set()

    def factory(**kwargs: object) -> LlamaService:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", port)
        kwargs.setdefault("policy", FAST_POLICY)
        service = LlamaService(**kwargs)  # type: ignore[arg-type]

        def remember(state: ServiceState) -> None:
            if state.pid is not None and not state.adopted:
                pids.add(state.pid)

        service.on_state_change(remember)
        services.append(service)
        return service

    yield factory
    for service in services:
        await service.stop()
    orphans = [pid for pid in pids if pid_alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"processes left running after stop(): {orphans}"


@pytest.fixture
def spawn_external() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a server outside llamaherd (to be adopted); killed by pid at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_http_ready(port: int, timeout_s: float = 30.0) -> None:
    """Block until GET /health on `port` answers 200 (for servers started outside llamaherd)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"nothing became ready on port {port} within {timeout_s} s")


# ---- herds of fake llama-servers ----------------------------------------------------------

HerdFactory = Callable[..., Herd]


@pytest.fixture
async def make_herd(fake_binary: Path, model_file: Path) -> AsyncIterator[HerdFactory]:
    """make_herd(ids=("a", "b"), *, args=(), policy=FAST_POLICY, max_concurrency=None,
    **limits): a started herd of these models (the first is the primary), each a fake
    llama-server launched with `args`; `limits` are the scheduler's (Limits)."""
    herds: list[Herd] = []

    def factory(
        ids: Sequence[str] = ("a", "b"),
        *,
        args: Sequence[str] = (),
        policy: SupervisorPolicy = FAST_POLICY,
        max_concurrency: int | None = None,
        **limits: Any,
    ) -> Herd:
        specs = [ModelSpec(id=m, path=model_file, max_concurrency=max_concurrency) for m in ids]
        services = {
            spec.id: LlamaService(
                port=free_port(),
                model_path=model_file,
                server_args=tuple(args),
                binary=fake_binary,
                policy=policy,
            )
            for spec in specs
        }
        herd = Herd(ModelRegistry(specs, ids[0]), services, Limits(**limits))
        herds.append(herd)
        herd.start()
        return herd

    yield factory
    for herd in herds:
        await herd.aclose()


# ---- a chat completion ---------------------------------------------------------------------

CHAT_PATH = "/v1/chat/completions"


def chat_body(
    model: str, tokens: int = 8, *, content: str = "Hello there", **extra: Any
) -> dict[str, Any]:
    """The body of a chat completion for `model`, at most `tokens` tokens; `extra` adds keys
    (stream, ignore_eos...)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
        **extra,
    }


async def post_chat(http: httpx.AsyncClient, model: str, tokens: int = 8) -> dict[str, Any]:
    """One chat completion through `http` (a client on llamaherd), which must succeed."""
    answer = await http.post(CHAT_PATH, json=chat_body(model, tokens))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result
