"""GatewayMetrics: requests and herd gauges in our own registry, and llama-servers' own series
re-exported with a model label, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from llamaherd.gateway.herd import Herd
from llamaherd.gateway.records import RequestRecord
from llamaherd.gateway.registry import ModelRegistry, ModelSpec
from llamaherd.gateway.scheduler import Limits, Phase
from llamaherd.metrics.prometheus import (
    CONTENT_TYPE,
    GatewayMetrics,
    merge_peer_expositions,
    relabel_expositions,
)
from llamaherd.metrics.sampler import ServerSampler, StartRecord
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import Status
from tests.conftest import FAST_POLICY, free_port

pytestmark = pytest.mark.timeout(60)


def upstream_metrics(prompt_tokens: int) -> str:
    """The shape of llama-server's --metrics exposition, with a labelled gauge and a histogram."""
    return f"""# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total {prompt_tokens}
# HELP llamacpp:n_tokens_max Largest observed sequence length (prompt + generation)
# TYPE llamacpp:n_tokens_max counter
llamacpp:n_tokens_max 23
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing{{slot="0"}} 1
llamacpp:requests_processing{{slot="1",model="inner \\"x\\""}} 0
# TYPE llamacpp:wait_seconds histogram
llamacpp:wait_seconds_bucket{{le="0.5"}} 1
llamacpp:wait_seconds_bucket{{le="+Inf"}} 2
llamacpp:wait_seconds_sum 1.5
llamacpp:wait_seconds_count 2
"""


class FakeUpstream:
    """A tiny llama-server look-alike (found running, so adopted): /health, /v1/models, /props,
    /slots, and /metrics that answers, fails, or never answers."""

    def __init__(self, metrics: str = "", *, hang: bool = False, status: int = 200) -> None:
        self.metrics = metrics
        self.hang = hang
        self.status = status
        self.port = free_port()
        self.released = asyncio.Event()
        self.scrapes = 0
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/props", self._props)
        app.router.add_get("/slots", self._slots)
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        self.released.set()
        await self.runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "llamacpp"}]}
        )

    async def _props(self, request: web.Request) -> web.Response:
        return web.json_response({"total_slots": 2})

    async def _slots(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": 0, "is_processing": True}, {"id": 1}])

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.hang:
            await self.released.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="Internal Server Error")
        return web.Response(text=self.metrics, content_type="text/plain")


@dataclass
class Rig:
    herd: Herd
    metrics: GatewayMetrics
    upstreams: dict[str, FakeUpstream]


RigFactory = Callable[..., Any]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    async def factory(upstreams: dict[str, FakeUpstream], **kwargs: Any) -> Rig:
        for upstream in upstreams.values():
            await upstream.start()
        specs = [ModelSpec(id=model, path=None) for model in upstreams]
        services = {
            model: LlamaService(port=upstream.port, policy=FAST_POLICY)
            for model, upstream in upstreams.items()
        }
        herd = Herd(ModelRegistry(specs, specs[0].id), services, Limits(max_loaded=9))
        herd.start()
        metrics = GatewayMetrics(herd, **kwargs)
        metrics.start()
        rig = Rig(herd, metrics, upstreams)
        rigs.append(rig)
        for service in services.values():
            state = await service.start()  # adopted: it answers /health like llama-server
            assert state.status is Status.READY and state.adopted
        return rig

    yield factory
    for rig in rigs:
        await rig.metrics.aclose()
        await rig.herd.aclose()
        for upstream in rig.upstreams.values():
            await upstream.close()


def parse(exposition: bytes) -> dict[str, list[Sample]]:
    """Every sample by its name, from prometheus_client's own parser (which rejects bad text)."""
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(key) == want for key, want in labels.items())
    ]
    assert len(matching) == 1, f"{name}{labels}: {samples.get(name)}"
    return matching[0]


def record(**fields: Any) -> RequestRecord:
    defaults: dict[str, Any] = {
        "model": "a",
        "endpoint": "/v1/chat/completions",
        "status": 200,
        "started_at": time.time(),
        "latency_s": 0.4,
        "queue_wait_s": 0.01,
        "ttft_s": None,
        "stream": False,
    }
    return RequestRecord(**{**defaults, **fields})


async def test_requests_become_counters_and_histograms(make_rig: RigFactory) -> None:
    rig = await make_rig({"a": FakeUpstream()})
    rig.metrics.record(
        record(prompt_tokens=20, completion_tokens=4, generation_tps=8000.0, prompt_tps=400.0)
    )
    rig.metrics.record(record(stream=True, ttft_s=0.05, latency_s=1.5, prompt_tokens=5))
    rig.metrics.record(record(status=429, queue_wait_s=0.0, latency_s=0.001))
    rig.metrics.record(record(status=None, client_disconnected=True, endpoint="/completion"))
    rig.metrics.record(record(endpoint="/upstream/a/slots?x=1"))
    rig.metrics.record(record(endpoint="/upstream/a/some/other/path"))

    samples = parse(await rig.metrics.render())
    requests = "llamaherd_requests_total"
    assert value(samples, requests, model="a", endpoint="/v1/chat/completions", code="200") == 2
    assert value(samples, requests, model="a", code="429") == 1
    assert value(samples, requests, model="a", endpoint="/completion", code="none") == 1
    assert value(samples, requests, model="a", endpoint="/upstream", code="200") == 2
    assert value(samples, "llamaherd_prompt_tokens_total", model="a") == 25
    assert value(samples, "llamaherd_completion_tokens_total", model="a") == 4
    duration = "llamaherd_request_duration_seconds"
    endpoint = "/v1/chat/completions"
    assert value(samples, f"{duration}_count", model="a", endpoint=endpoint) == 3
    assert value(samples, f"{duration}_bucket", model="a", endpoint=endpoint, le="0.5") == 2
    assert value(samples, "llamaherd_time_to_first_token_seconds_count", model="a") == 1
    assert value(samples, "llamaherd_queue_wait_seconds_count", model="a") == 6
    assert value(samples, "llamaherd_generation_tokens_per_second_sum", model="a") == 8000.0
    assert value(samples, "llamaherd_prompt_tokens_per_second_count", model="a") == 1


async def test_the_herd_is_read_at_scrape_time(make_rig: RigFactory) -> None:
    rig = await make_rig({"a": FakeUpstream(), "b": FakeUpstream()})
    await rig.herd.backends["b"].service.stop()
    async with asyncio.timeout(10):
        while rig.herd.view("a").phase is not Phase.READY:
            await asyncio.sleep(0.02)

    samples = parse(await rig.metrics.render())
    for state in Status:
        expected = 1.0 if state is Status.READY else 0.0
        assert value(samples, "llamaherd_model_state", model="a", state=state.value) == expected
    assert value(samples, "llamaherd_model_state", model="b", state="initial") == 1
    assert value(samples, "llamaherd_model_loaded", model="a") == 1
    assert value(samples, "llamaherd_model_loaded", model="b") == 0
    assert value(samples, "llamaherd_queue_depth", model="a") == 0
    assert value(samples, "llamaherd_in_flight", model="a") == 0
    assert value(samples, "llamaherd_restarts_total", model="a") == 0
    assert value(samples, "llamaherd_retries", model="b") == 0

    ticket = rig.herd.submit("a")
    await ticket.decision
    samples = parse(await rig.metrics.render())
    assert value(samples, "llamaherd_in_flight", model="a") == 1
    rig.herd.end(ticket)


async def test_sampler_figures_and_load_times_are_exported(make_rig: RigFactory) -> None:
    upstream = FakeUpstream()
    rig = await make_rig({"a": upstream})
    sampler = ServerSampler(rig.herd, interval_s=0.05)
    metrics = GatewayMetrics(rig.herd, sampler=sampler)
    metrics.start()
    sampler.start()  # "a" is ready (adopted): sampled at once
    try:
        async with asyncio.timeout(10):
            while "a" not in sampler.snapshot() or sampler.snapshot()["a"].cpu_percent is None:
                await asyncio.sleep(0.02)
        metrics.record_start(StartRecord("a", time.time(), 1.25, 50_000_000, ok=True))
        metrics.record_start(StartRecord("a", time.time(), 0.5, None, ok=False, error="crash"))

        samples = parse(await metrics.render())
        assert value(samples, "llamaherd_memory_rss_bytes", model="a") > 1_000_000
        assert value(samples, "llamaherd_cpu_percent", model="a") >= 0
        assert value(samples, "llamaherd_slots_busy", model="a") == 1
        assert value(samples, "llamaherd_slots_total", model="a") == 2
        assert value(samples, "llamaherd_load_duration_seconds_count", model="a") == 1
        assert value(samples, "llamaherd_load_duration_seconds_sum", model="a") == 1.25
        # Adopted: nobody saw it load, so there is no peak; and no GPU figure on a CPU host.
        assert "llamaherd_load_peak_rss_bytes" not in samples
        vram = samples.get("llamaherd_memory_vram_bytes", [])
        assert all(s.value >= 0 for s in vram)
    finally:
        await metrics.aclose()
        await sampler.aclose()


async def test_upstream_series_are_re_exported_with_a_model_label(make_rig: RigFactory) -> None:
    rig = await make_rig(
        {"a": FakeUpstream(upstream_metrics(30)), "b": FakeUpstream(upstream_metrics(7))}
    )
    text = await rig.metrics.render()
    samples = parse(text)

    assert value(samples, "llamacpp:prompt_tokens_total", model="a") == 30
    assert value(samples, "llamacpp:prompt_tokens_total", model="b") == 7
    assert value(samples, "llamacpp:requests_processing", model="b", slot="0") == 1
    # An upstream label named like ours is kept under Prometheus's exported_ prefix.
    assert (
        value(samples, "llamacpp:requests_processing", model="a", exported_model='inner "x"') == 0
    )
    assert value(samples, "llamacpp:wait_seconds_bucket", model="a", le="+Inf") == 2
    assert value(samples, "llamacpp:wait_seconds_count", model="b") == 2
    lines = text.decode().splitlines()
    for family in ("llamacpp:prompt_tokens_total", "llamacpp:wait_seconds"):
        assert sum(line.startswith(f"# TYPE {family} ") for line in lines) == 1
    assert sum(line.startswith("# HELP llamacpp:prompt_tokens_total ") for line in lines) == 1
    assert 'llamacpp:n_tokens_max{model="a"} 23' in lines  # names pass unchanged


async def test_a_slow_upstream_is_skipped_and_counted(make_rig: RigFactory) -> None:
    slow = FakeUpstream(upstream_metrics(1), hang=True)
    broken = FakeUpstream(upstream_metrics(2), status=500)
    rig = await make_rig(
        {"a": FakeUpstream(upstream_metrics(30)), "slow": slow, "broken": broken},
        scrape_timeout_s=0.5,
    )
    began = time.monotonic()
    samples = parse(await rig.metrics.render())
    elapsed = time.monotonic() - began

    assert elapsed < 1.5, f"render took {elapsed:.2f} s with a 0.5 s scrape timeout"
    assert slow.scrapes == 1
    assert value(samples, "llamacpp:prompt_tokens_total", model="a") == 30
    exported = {s.labels["model"] for s in samples["llamacpp:prompt_tokens_total"]}
    assert exported == {"a"}
    assert value(samples, "llamaherd_scrape_errors_total", model="slow") == 1
    assert value(samples, "llamaherd_scrape_errors_total", model="broken") == 1
    assert not any(s.labels.get("model") == "a" for s in samples["llamaherd_scrape_errors_total"])


async def test_stopped_servers_are_not_scraped(make_rig: RigFactory) -> None:
    upstream = FakeUpstream(upstream_metrics(3))
    rig = await make_rig({"a": upstream})
    await rig.herd.backends["a"].service.stop()
    samples = parse(await rig.metrics.render())
    assert upstream.scrapes == 0 and "llamacpp:prompt_tokens_total" not in samples


def test_two_metrics_objects_do_not_share_counters() -> None:
    spec = ModelSpec(id="a", path=None)
    herd = Herd(ModelRegistry([spec], "a"), {"a": LlamaService(port=free_port())}, Limits())
    first, second = GatewayMetrics(herd), GatewayMetrics(herd)
    first.record(record())
    assert first.registry is not second.registry
    assert (
        first.registry.get_sample_value(
            "llamaherd_requests_total",
            {"model": "a", "endpoint": "/v1/chat/completions", "code": "200"},
        )
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "llamaherd_requests_total",
            {"model": "a", "endpoint": "/v1/chat/completions", "code": "200"},
        )
        is None
    )
    assert CONTENT_TYPE.startswith("text/plain")


# ---- relabel_expositions, the pure part ----------------------------------------------------


def test_relabelling_escapes_ids_and_drops_lines_that_are_not_samples() -> None:
    text = relabel_expositions(
        [
            (
                'we"ird\\id',
                '# TYPE x gauge\nx 1\nnot a sample\n{broken 2\nx{a="1" 3\n'
                'y{a="}",b="c\\"d"} 4 1700000000000\n# just a comment\n',
            )
        ]
    )
    lines = text.splitlines()
    assert lines == [
        "# TYPE x gauge",
        'x{model="we\\"ird\\\\id"} 1',
        'y{model="we\\"ird\\\\id",a="}",b="c\\"d"} 4 1700000000000',
    ]
    samples = parse(text.encode())
    assert value(samples, "y", a="}", b='c"d') == 4
    assert samples["x"][0].labels["model"] == 'we"ird\\id'


def test_relabelling_skips_families_that_would_clash_with_ours() -> None:
    text = relabel_expositions(
        [("a", "# TYPE llamaherd_x gauge\nllamaherd_x 1\nz 2\n")], skip_prefix="llamaherd_"
    )
    assert text == 'z{model="a"} 2\n'


def test_relabelling_groups_a_family_from_several_sources() -> None:
    first = "# HELP g first help\n# TYPE g gauge\ng 1\n# TYPE h counter\nh_total 5\n"
    second = "# HELP g other help\n# TYPE g gauge\ng 2\n"
    lines = relabel_expositions([("a", first), ("b", second)]).splitlines()
    assert lines == [
        "# HELP g first help",
        "# TYPE g gauge",
        'g{model="a"} 1',
        'g{model="b"} 2',
        "# TYPE h counter",
        'h_total{model="a"} 5',
    ]


@pytest.mark.real_server
@pytest.mark.timeout(90)
async def test_the_real_llama_server_series_are_re_exported(
    real_binary: Path, demo_model: Path
) -> None:
    spec = ModelSpec(id="demo", path=demo_model)
    service = LlamaService(
        port=free_port(),
        model_path=demo_model,
        binary=real_binary,
        server_args=("--threads", "1", "--ctx-size", "512", "--metrics"),
        policy=FAST_POLICY,
    )
    herd = Herd(ModelRegistry([spec], "demo"), {"demo": service}, Limits())
    metrics = GatewayMetrics(herd, scrape_timeout_s=5.0)
    try:
        await service.start()
        samples = parse(await metrics.render())
        assert value(samples, "llamacpp:prompt_tokens_total", model="demo") >= 0
        assert value(samples, "llamaherd_model_state", model="demo", state="ready") == 1
        assert "llamaherd_scrape_errors_total" not in samples
    finally:
        await metrics.aclose()
        await herd.aclose()


def test_a_front_merges_its_peers_expositions_family_by_family() -> None:
    own = (
        "# HELP llamaherd_in_flight Requests.\n# TYPE llamaherd_in_flight gauge\n"
        'llamaherd_in_flight{model="here"} 1.0\n'
        "# HELP llamaherd_requests_total Ended.\n# TYPE llamaherd_requests_total counter\n"
    )
    peer = (
        "# HELP llamaherd_in_flight Requests.\n# TYPE llamaherd_in_flight gauge\n"
        'llamaherd_in_flight{model="m1"} 2.0\n'
        'llamaherd_in_flight{model="m2",peer="inner"} 3.0\n'
    )
    merged = merge_peer_expositions(own, [("w1", peer), ("gone", None)])
    assert merged.splitlines() == [
        "# HELP llamaherd_in_flight Requests.",
        "# TYPE llamaherd_in_flight gauge",
        'llamaherd_in_flight{model="here"} 1.0',
        'llamaherd_in_flight{peer="w1",model="m1"} 2.0',
        'llamaherd_in_flight{peer="w1",model="m2",exported_peer="inner"} 3.0',
        "# HELP llamaherd_requests_total Ended.",  # ours, with no sample yet: kept
        "# TYPE llamaherd_requests_total counter",
        "# HELP llamaherd_peer_up 1 when the peer's series are in this exposition, 0 when it is "
        "unreachable or did not answer in time.",
        "# TYPE llamaherd_peer_up gauge",
        'llamaherd_peer_up{peer="w1"} 1',
        'llamaherd_peer_up{peer="gone"} 0',
    ]
