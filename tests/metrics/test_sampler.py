"""ServerSampler: start records and live samples of supervised servers, the fake llama-server's
and, marked real_server, the real one's; GpuMemory against a stand-in NVML module."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from llamaherd.gateway.herd import Herd
from llamaherd.gateway.registry import ModelRegistry, ModelSpec
from llamaherd.gateway.scheduler import Limits
from llamaherd.metrics.gpu import GpuMemory
from llamaherd.metrics.sampler import ServerSample, ServerSampler, StartRecord
from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import Status
from tests.conftest import (
    FAKE_SERVER,
    FAST_POLICY,
    RecordingSleep,
    StateRecorder,
    free_port,
    wait_http_ready,
)

pytestmark = pytest.mark.timeout(60)

INTERVAL_S = 0.1


class Seen:
    """What a sampler told its subscribers, with a way to await what a test expects."""

    def __init__(self, sampler: ServerSampler) -> None:
        self.starts: list[StartRecord] = []
        self.samples: list[ServerSample] = []
        self._changed = asyncio.Event()
        sampler.on_start(self._add(self.starts))
        sampler.on_sample(self._add(self.samples))

    def _add(self, into: list[Any]) -> Callable[[Any], None]:
        def add(item: Any) -> None:
            into.append(item)
            self._changed.set()

        return add

    async def start(self, timeout: float = 15.0) -> StartRecord:
        await self._until(lambda: bool(self.starts), timeout)
        return self.starts[-1]

    async def sample(
        self, predicate: Callable[[ServerSample], bool], timeout: float = 15.0
    ) -> ServerSample:
        await self._until(lambda: any(predicate(s) for s in self.samples), timeout)
        return next(s for s in reversed(self.samples) if predicate(s))

    async def _until(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Rig:
    herd: Herd
    sampler: ServerSampler
    seen: Seen

    @property
    def service(self) -> LlamaService:
        return self.herd.backends["a"].service


RigFactory = Callable[..., Rig]


@pytest.fixture
async def make_rig(fake_binary: Path, model_file: Path) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    def factory(
        *,
        binary: Path = fake_binary,
        model: Path = model_file,
        server_args: tuple[str, ...] = (),
        policy: SupervisorPolicy = FAST_POLICY,
        port: int | None = None,
        start: bool = True,
        **service: Any,
    ) -> Rig:
        spec = ModelSpec(id="a", path=model)
        llama = LlamaService(
            port=port or free_port(),
            model_path=model,
            binary=binary,
            server_args=server_args,
            policy=policy,
            **service,
        )
        herd = Herd(ModelRegistry([spec], "a"), {"a": llama}, Limits())
        sampler = ServerSampler(herd, interval_s=INTERVAL_S, loading_interval_s=0.02)
        rig = Rig(herd, sampler, Seen(sampler))
        rigs.append(rig)
        if start:
            sampler.start()
        return rig

    yield factory
    for rig in rigs:
        await rig.sampler.aclose()
        await rig.herd.aclose()


async def test_a_start_is_recorded_then_the_ready_server_is_sampled(make_rig: RigFactory) -> None:
    rig = make_rig(server_args=("--fake-load-s", "0.3"))
    await rig.service.start()

    record = await rig.seen.start()
    assert record.model == "a" and record.ok and record.error is None
    assert record.load_time_s >= 0.3  # the fake answers 503 "Loading model" for 0.3 s
    assert record.peak_rss_bytes is not None and record.peak_rss_bytes > 1_000_000

    sample = await rig.seen.sample(lambda s: s.cpu_percent is not None)
    assert sample.rss_bytes is not None and sample.rss_bytes > 1_000_000
    assert sample.cpu_percent >= 0.0
    assert (sample.slots_busy, sample.slots_total) == (0, 1)
    assert sample.load_time_s == record.load_time_s
    assert sample.peak_load_rss_bytes == record.peak_rss_bytes
    assert sample.vram_bytes is None or sample.vram_bytes >= 0
    first = rig.seen.samples[0]
    assert first.cpu_percent is None  # one reading says nothing about CPU time
    assert rig.sampler.snapshot()["a"] == rig.seen.samples[-1]


async def test_busy_slots_are_seen(make_rig: RigFactory) -> None:
    rig = make_rig(server_args=("--fake-gen-ms", "20"))
    await rig.service.start()
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "stream": True}
    url = f"{rig.service.base_url}/v1/chat/completions"
    async with aiohttp.ClientSession() as client, client.post(url, json=body) as answer:
        assert answer.status == 200
        await answer.content.readline()  # generating now
        sample = await rig.seen.sample(lambda s: s.slots_busy == 1)
        assert sample.slots_total == 1
    # The client left: the fake stops generating, and the slot frees.
    await rig.seen.sample(lambda s: s.slots_busy == 0 and s.at > sample.at)


async def test_a_stop_ends_the_sampling_and_keeps_the_last_start(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.service.start()
    record = await rig.seen.start()
    await rig.seen.sample(lambda s: s.rss_bytes is not None)

    await rig.service.stop()
    idle = await rig.seen.sample(lambda s: s.rss_bytes is None)
    assert idle.cpu_percent is None and idle.slots_total is None and idle.vram_bytes is None
    assert idle.load_time_s == record.load_time_s
    assert rig.sampler.snapshot()["a"] == idle
    assert rig.sampler._servers["a"].task is None  # nothing samples a stopped server

    await rig.service.start()  # a second start is a second record
    await rig.seen._until(lambda: len(rig.seen.starts) == 2, 15.0)
    assert all(record.ok for record in rig.seen.starts)


async def test_a_start_that_crashes_is_a_failed_start_record(make_rig: RigFactory) -> None:
    rig = make_rig(
        server_args=("--fake-exit-at-start", "1"),
        policy=replace(FAST_POLICY, max_retries=1),
        sleep=RecordingSleep(),
    )
    states = StateRecorder(rig.service)
    await rig.service.start()
    await states.wait_status(Status.ERROR)

    # The first launch crashed, then its one retry: two failed starts, and no live sample.
    assert [record.ok for record in rig.seen.starts] == [False, False]
    assert all(record.error for record in rig.seen.starts)
    assert all(record.load_time_s >= 0 for record in rig.seen.starts)
    assert rig.seen.samples == []


async def test_a_port_held_by_another_program_is_a_failed_start(
    make_rig: RigFactory, spawn_external: Callable[..., Any]
) -> None:
    port = free_port()
    spawn_external([sys.executable, str(FAKE_SERVER), "--port", str(port), "--fake-wrong-service"])
    wait_answering(port)
    rig = make_rig(port=port)
    await rig.service.start()
    record = await rig.seen.start()
    assert not record.ok and record.error is not None and "held by" in record.error
    assert record.peak_rss_bytes is None  # nothing was launched


async def test_an_adopted_server_is_sampled_but_has_no_start_record(
    make_rig: RigFactory, spawn_external: Callable[..., Any], model_file: Path
) -> None:
    port = free_port()
    spawn_external([sys.executable, str(FAKE_SERVER), "--port", str(port), "-m", str(model_file)])
    wait_http_ready(port)
    rig = make_rig(port=port)
    await rig.service.start()
    assert rig.service.get_state().adopted

    sample = await rig.seen.sample(lambda s: s.rss_bytes is not None)
    assert sample.slots_total == 1 and sample.load_time_s is None
    assert rig.seen.starts == []


async def test_a_server_ready_before_the_sampler_starts_is_sampled_at_once(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(start=False)
    await rig.service.start()
    rig.sampler.start()
    sample = await rig.seen.sample(lambda s: s.rss_bytes is not None)
    assert sample.slots_total == 1
    assert rig.seen.starts == []  # it was not seen loading


async def test_aclose_cancels_the_sampling(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.service.start()
    await rig.seen.sample(lambda s: s.rss_bytes is not None)
    task = rig.sampler._servers["a"].task
    assert task is not None and not task.done()
    await rig.sampler.aclose()
    assert task.cancelled()
    count = len(rig.seen.samples)
    await rig.service.stop()
    assert len(rig.seen.samples) == count  # no longer subscribed


@pytest.mark.real_server
@pytest.mark.timeout(90)
async def test_the_real_llama_server_is_sampled(
    make_rig: RigFactory, real_binary: Path, demo_model: Path
) -> None:
    rig = make_rig(
        binary=real_binary,
        model=demo_model,
        server_args=("--threads", "1", "--ctx-size", "512", "--parallel", "2", "--metrics"),
    )
    await rig.service.start()
    record = await rig.seen.start()
    assert record.ok and record.load_time_s > 0
    assert record.peak_rss_bytes is not None and record.peak_rss_bytes > 0
    sample = await rig.seen.sample(lambda s: s.rss_bytes is not None and s.slots_total is not None)
    assert sample.rss_bytes is not None and sample.rss_bytes > 0
    assert sample.slots_total is not None and sample.slots_total >= 1
    assert sample.slots_busy == 0


def wait_answering(port: int, timeout_s: float = 10.0) -> None:
    """Block until something answers HTTP on `port`, whatever it says."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"nothing answered on port {port} within {timeout_s} s")


# ---- GpuMemory, with a stand-in for pynvml -------------------------------------------------


class FakeNvml:
    """The few pynvml calls GpuMemory makes, over two GPUs."""

    class NVMLError(Exception):
        pass

    @dataclass
    class Proc:
        pid: int
        usedGpuMemory: int | None

    def __init__(self, *, init_fails: bool = False) -> None:
        self.init_fails = init_fails
        self.inits = 0
        self.shutdowns = 0
        self.compute = {0: [self.Proc(10, 100), self.Proc(11, None)], 1: [self.Proc(10, 50)]}
        self.graphics = {0: [self.Proc(10, 100)], 1: [self.Proc(12, 7)]}

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Proc]:
        return self.compute[handle]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Proc]:
        return self.graphics[handle]


def test_gpu_memory_sums_a_process_over_every_gpu() -> None:
    nvml = FakeNvml()
    gpu = GpuMemory(load=lambda: nvml)
    assert gpu.used_bytes(10) == 150  # 100 on GPU 0 (listed twice, counted once) + 50
    assert gpu.used_bytes(12) == 7
    assert gpu.used_bytes(11) is None  # the driver does not say
    assert gpu.used_bytes(99) is None  # not seen by NVML
    assert nvml.inits == 1
    gpu.close()
    assert nvml.shutdowns == 1


def test_gpu_memory_without_nvml_is_unknown_and_not_retried() -> None:
    nvml = FakeNvml(init_fails=True)
    gpu = GpuMemory(load=lambda: nvml)
    assert gpu.used_bytes(10) is None
    assert gpu.used_bytes(10) is None
    assert nvml.inits == 1
    gpu.close()
    assert nvml.shutdowns == 0


def test_gpu_memory_without_the_library_is_unknown() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    assert GpuMemory(load=missing).used_bytes(1) is None


def test_gpu_memory_errors_while_listing_are_unknown() -> None:
    nvml = FakeNvml()

    def broken(handle: int) -> list[Any]:
        raise nvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetComputeRunningProcesses = broken  # type: ignore[method-assign]
    assert GpuMemory(load=lambda: nvml).used_bytes(10) is None


def test_gpu_memory_on_this_machine_never_raises() -> None:
    gpu = GpuMemory()
    value = gpu.used_bytes(1)
    assert value is None or value >= 0
    gpu.close()
