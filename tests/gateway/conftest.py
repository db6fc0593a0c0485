"""A whole llamaherd for the gateway's end-to-end tests: a config (as the JSON file would hold
it) becomes settings, `build_herd` turns them into one supervised llama-server per model, and
uvicorn serves `create_app(herd)` on a free port in the test's own event loop.

Every llama-server the herd starts is remembered (its pid, from the supervisor's own state
events) and every STARTING transition is counted, per model. At teardown the app shuts down
(which stops every server) and no process it started may be left alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llamaherd.api.app import Application, create_app
from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.config.settings import Settings, settings_from_mapping
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import ModelView, Phase
from llamaherd.supervisor.states import ServiceState, Status
from llamaherd.wiring.build import access_policy, build_herd, request_limits
from tests.conftest import free_port, pid_alive
from tests.serving import serve_application

# The supervisor's numbers, small enough for tests on two busy cores: loading is noticed
# within ~50 ms, a crash is restarted after 0.3 s, a stop escalates to SIGKILL after 3 s.
# Liveness stays lenient: a loaded machine must not make a busy server look hung.
FAST_POLICY: dict[str, Any] = {
    "readiness_initial_ms": 10,
    "readiness_interval_ms": 50,
    "readiness_max_attempts": 1200,
    "health_timeout_ms": 3000,
    "liveness_interval_ms": 1000,
    "liveness_failures": 5,
    "backoff_initial_ms": 300,
    "backoff_max_ms": 2000,
    "stop_timeout_s": 3,
    "stable_after_s": 3600,
}
WAIT_S = 30.0  # the longest any single wait in these tests may take


@dataclass(frozen=True)
class DemoModels:
    """Tiny real GGUF files; the fake llama-server takes them as its model path too."""

    alpha: Path
    beta: Path
    gamma: Path


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> DemoModels:
    folder = tmp_path_factory.mktemp("gateway-models")
    return DemoModels(
        alpha=write_demo_model(folder / "alpha.gguf", seed=1),
        beta=write_demo_model(folder / "beta.gguf", seed=2),
        gamma=write_demo_model(folder / "gamma.gguf", seed=3),
    )


def gateway_config(binary: Path, models: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """A config mapping: the fast policy, `binary` as llama_server_binary, `models` and any
    other keys (which win over the policy's)."""
    return {
        "llama_server_binary": str(binary),
        "llama_server_port": free_port(),
        **FAST_POLICY,
        "models": models,
        **keys,
    }


@dataclass(eq=False)
class Gateway:
    """A running llamaherd: its URL, its herd, and what its supervisors reported."""

    url: str
    herd: Herd
    starts: Counter[str] = field(default_factory=Counter)  # STARTING transitions per model
    pids: dict[str, list[int]] = field(default_factory=dict)  # every server pid, per model
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def openai(self) -> openai.AsyncOpenAI:
        """The official client (use it in `async with`); no retries, so a 429 or 503 reaches
        the test as it was sent."""
        return openai.AsyncOpenAI(
            base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=WAIT_S
        )

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=WAIT_S)

    def view(self, model: str) -> ModelView:
        return self.herd.view(model)

    def state(self, model: str) -> ServiceState:
        return self.herd.backends[model].service.get_state()

    def pid(self, model: str) -> int:
        pid = self.state(model).pid
        assert pid is not None, f"model {model} has no llama-server running: {self.state(model)}"
        return pid

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S
    ) -> None:
        """Until `predicate()` holds: re-checked on every change the herd or its supervisors
        announce, and at least every 50 ms for facts nobody announces (a process's death)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting until {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.05)):
                    await self.changed.wait()

    async def wait_phase(self, model: str, phase: Phase, timeout: float = WAIT_S) -> None:
        await self.wait_until(
            lambda: self.view(model).phase is phase, f"model {model} is {phase}", timeout
        )

    async def loaded(self, model: str) -> int:
        """Load `model` (as POST /api/models/{id}/load does), wait until it serves; its pid."""
        async with self.http() as client:
            answer = await client.post(f"/api/models/{model}/load")
        assert answer.status_code == 200, answer.text
        await self.wait_phase(model, Phase.READY)
        return self.pid(model)

    def _watch(self) -> None:
        for model, backend in self.herd.backends.items():
            self.pids[model] = []

            def on_state(state: ServiceState, model: str = model) -> None:
                if state.status is Status.STARTING:
                    self.starts[model] += 1
                pid = state.pid
                if pid is not None and not state.adopted and pid not in self.pids[model]:
                    self.pids[model].append(pid)
                self.changed.set()

            backend.service.on_state_change(on_state)
        self.herd.on_change(self.changed.set)

    def all_pids(self) -> list[int]:
        return [pid for pids in self.pids.values() for pid in pids]


Launch = Callable[..., Awaitable[Gateway]]


def serve(application: Application) -> contextlib.AbstractAsyncContextManager[str]:
    """uvicorn on a free port; at the end open requests get 3 s before the app's shutdown."""
    return serve_application(application, graceful_s=3)


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    """`await launch(config_mapping)` or `await launch(settings=...)`: a served llamaherd.

    Teardown shuts every one down and fails the test if any llama-server they started is
    still alive afterwards (after killing it, by pid)."""
    gateways: list[Gateway] = []
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            config: dict[str, Any] | None = None,
            *,
            settings: Settings | None = None,
            start_service: bool = False,
        ) -> Gateway:
            if settings is None:
                assert config is not None
                settings = settings_from_mapping(config)
            herd = build_herd(settings)
            application = create_app(
                herd,
                start_service=start_service,
                access=access_policy(settings),
                limits=request_limits(settings),
            )
            gateway = Gateway(url="", herd=herd)
            gateway._watch()  # before the lifespan starts anything
            gateway.url = await stack.enter_async_context(serve(application))
            gateways.append(gateway)
            return gateway

        yield start
    left = [pid for gateway in gateways for pid in gateway.all_pids() if pid_alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"llama-server processes left running after shutdown: {left}"


def live_llama_servers() -> set[int]:
    """Children of this process running a llama-server (real or fake), zombies excluded."""
    me = str(os.getpid())
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z" or fields[1] != me:
                continue
            argv = Path(entry.path, "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if b"llama-server" in argv or b"fake_llama_server" in argv:
            found.add(int(entry.name))
    return found


class ServerCensus:
    """Samples `live_llama_servers()` every 10 ms in the background; `most` is the largest
    number seen alive at once."""

    def __init__(self) -> None:
        self.most = 0
        self.samples = 0
        self.seen: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            alive = await asyncio.to_thread(live_llama_servers)
            self.samples += 1
            self.seen |= alive
            self.most = max(self.most, len(alive))
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> ServerCensus:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
