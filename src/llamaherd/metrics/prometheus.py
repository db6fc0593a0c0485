"""Prometheus: llamaherd's own series, and every ready llama-server's, on one `/metrics`.

Three kinds of series, each gathered the cheapest way for it:
- per request (counters and histograms): bumped by `record()`, a RequestLog sink;
- per model, right now (state, queue, in flight, restarts; memory, CPU, slots): read from the
  herd and the sampler at scrape time by a collector, so nothing polls between scrapes;
- llama-server's own `llamacpp:*` series (it runs with `--metrics`): fetched from each ready
  server when scraped, concurrently and each under `scrape_timeout_s`, and re-exported with a
  `model` label. A server that is slow to answer is left out of that scrape (and counted in
  `llamaherd_scrape_errors_total`); it never delays the others.

The registry is this object's own, never prometheus_client's global one: two apps in one
process (tests) must not share counters.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from llamaherd.gateway.herd import Herd
from llamaherd.gateway.records import RequestRecord
from llamaherd.gateway.scheduler import Phase
from llamaherd.metrics.sampler import ServerSampler, StartRecord
from llamaherd.supervisor.states import Status

logger = logging.getLogger("llamaherd.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
SCRAPE_LIMIT_BYTES = 4 * 1024 * 1024  # llama-server's /metrics is about 3 KiB
MODEL_LABEL = "model"
PEER_LABEL = "peer"  # a front's peers' series, re-exported (see merge_peer_expositions)
PEER_UP = "llamaherd_peer_up"
OWN_PREFIX = "llamaherd_"

# Buckets sized for local inference: from a cached prompt on a GPU to minutes on a CPU.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
GENERATION_TPS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
PROMPT_TPS_BUCKETS = (10, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class _ModelSeries:
    """The labelled children of one model's per-model series."""

    prompt_tokens: Any
    completion_tokens: Any
    queue_wait: Any
    ttft: Any
    generation_tps: Any
    prompt_tps: Any


class GatewayMetrics:
    """The `/metrics` exposition: build it, subscribe `record` to the RequestLog, `start()`,
    and answer `GET /metrics` with `await render()` as `CONTENT_TYPE`."""

    def __init__(
        self,
        herd: Herd,
        *,
        sampler: ServerSampler | None = None,
        scrape_timeout_s: float = 1.0,
    ) -> None:
        self._herd = herd
        self._sampler = sampler
        self.scrape_timeout_s = scrape_timeout_s
        self._unsubscribe: Callable[[], None] | None = None
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._duration_children: dict[tuple[str, str], Any] = {}
        self._per_model: dict[str, _ModelSeries] = {}
        self.registry = registry = CollectorRegistry()
        by_model = ["model"]
        self._requests = Counter(
            "llamaherd_requests",
            "Inference requests that ended, by the HTTP status the client was sent "
            '(code "none": the client left before any answer).',
            ["model", "endpoint", "code"],
            registry=registry,
        )
        self._prompt_tokens = Counter(
            "llamaherd_prompt_tokens",
            "Prompt tokens of finished requests, as llama-server counted them.",
            by_model,
            registry=registry,
        )
        self._completion_tokens = Counter(
            "llamaherd_completion_tokens",
            "Generated tokens of finished requests, as llama-server counted them.",
            by_model,
            registry=registry,
        )
        self._duration = Histogram(
            "llamaherd_request_duration_seconds",
            "Arrival to last byte (or to the refusal), queueing and loading included.",
            ["model", "endpoint"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._ttft = Histogram(
            "llamaherd_time_to_first_token_seconds",
            "Arrival to the first byte of a streamed answer.",
            by_model,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self._queue_wait = Histogram(
            "llamaherd_queue_wait_seconds",
            "Arrival to dispatch to a llama-server (a model load included); the whole wait "
            "of a refused request.",
            by_model,
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self._generation_tps = Histogram(
            "llamaherd_generation_tokens_per_second",
            "Generation speed of each request, as llama-server measured it "
            "(timings.predicted_per_second).",
            by_model,
            buckets=GENERATION_TPS_BUCKETS,
            registry=registry,
        )
        self._prompt_tps = Histogram(
            "llamaherd_prompt_tokens_per_second",
            "Prompt processing speed of each request, as llama-server measured it "
            "(timings.prompt_per_second).",
            by_model,
            buckets=PROMPT_TPS_BUCKETS,
            registry=registry,
        )
        self._load_duration = Histogram(
            "llamaherd_load_duration_seconds",
            "Successful starts of a model's llama-server, from checking (or a retry's start) "
            "to ready.",
            by_model,
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self._scrape_errors = Counter(
            "llamaherd_scrape_errors",
            "Scrapes of a llama-server's own /metrics that failed or took longer than the "
            "scrape timeout; its series were left out of that exposition.",
            by_model,
            registry=registry,
        )
        registry.register(_HerdCollector(herd, sampler))

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Count the sampler's start records in the load duration histogram."""
        if self._sampler is not None and self._unsubscribe is None:
            self._unsubscribe = self._sampler.on_start(self.record_start)

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # ---- sinks -----------------------------------------------------------------------------

    def record(self, rec: RequestRecord) -> None:
        """A RequestLog sink: count one finished request."""
        model, endpoint = rec.model, endpoint_label(rec.endpoint)
        code = "none" if rec.status is None else str(rec.status)
        self._requests_child(model, endpoint, code).inc()
        series = self._model_series(model)
        if rec.prompt_tokens:
            series.prompt_tokens.inc(rec.prompt_tokens)
        if rec.completion_tokens:
            series.completion_tokens.inc(rec.completion_tokens)
        self._duration_child(model, endpoint).observe(rec.latency_s)
        series.queue_wait.observe(rec.queue_wait_s)
        if rec.ttft_s is not None:
            series.ttft.observe(rec.ttft_s)
        if rec.generation_tps is not None:
            series.generation_tps.observe(rec.generation_tps)
        if rec.prompt_tps is not None:
            series.prompt_tps.observe(rec.prompt_tps)

    # `labels()` looks its child up under a lock and checks every value on each call: the
    # children are fetched once per label set and kept (at every request, it cost as much as
    # the rest of the measurement).

    def _requests_child(self, model: str, endpoint: str, code: str) -> Any:
        key = (model, endpoint, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(model, endpoint, code)
        return child

    def _duration_child(self, model: str, endpoint: str) -> Any:
        key = (model, endpoint)
        child = self._duration_children.get(key)
        if child is None:
            child = self._duration_children[key] = self._duration.labels(model, endpoint)
        return child

    def _model_series(self, model: str) -> _ModelSeries:
        series = self._per_model.get(model)
        if series is None:
            series = self._per_model[model] = _ModelSeries(
                prompt_tokens=self._prompt_tokens.labels(model),
                completion_tokens=self._completion_tokens.labels(model),
                queue_wait=self._queue_wait.labels(model),
                ttft=self._ttft.labels(model),
                generation_tps=self._generation_tps.labels(model),
                prompt_tps=self._prompt_tps.labels(model),
            )
        return series

    def record_start(self, start: StartRecord) -> None:
        """A ServerSampler start sink (`start()` subscribes it)."""
        if start.ok:
            self._load_duration.labels(start.model).observe(start.load_time_s)

    # ---- exposition ------------------------------------------------------------------------

    async def render(self) -> bytes:
        """Our series, then every ready llama-server's own, each with its `model` label."""
        targets = [
            (backend.spec.id, backend.base_url)
            for backend, _view, state in self._herd.views()
            if state.status is Status.READY
        ]
        # Scraped first, so a failure shows in this very exposition's error counter.
        texts = await asyncio.gather(*(self._scrape(model, url) for model, url in targets))
        scraped = [
            (model, text) for (model, _url), text in zip(targets, texts, strict=True) if text
        ]
        own = _generate_latest(self.registry)
        return own + relabel_expositions(scraped, skip_prefix=OWN_PREFIX).encode()

    async def _scrape(self, model: str, base_url: str) -> str | None:
        url = f"{base_url}/metrics"
        try:
            session = self._herd.upstreams.session(base_url)
            async with asyncio.timeout(self.scrape_timeout_s):
                async with session.get(url) as answer:
                    if answer.status != 200:
                        raise _ScrapeError(f"HTTP {answer.status}")
                    body = bytearray()
                    async for chunk in answer.content.iter_any():
                        body += chunk
                        if len(body) > SCRAPE_LIMIT_BYTES:
                            raise _ScrapeError(f"more than {SCRAPE_LIMIT_BYTES} bytes")
        except (aiohttp.ClientError, OSError, TimeoutError, _ScrapeError) as exc:
            what = "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            logger.debug("model %s: scraping %s failed: %s", model, url, what)
            self._scrape_errors.labels(model).inc()
            return None
        return body.decode("utf-8", errors="replace")


class _ScrapeError(Exception):
    pass


def endpoint_label(path: str) -> str:
    """The `endpoint` label of a request path. The inference paths are a fixed set, but
    `/upstream/{model}/{anything}` is not: every path a client invents there would be a new
    series forever, so they are all one."""
    return "/upstream" if path.startswith("/upstream/") else path


class _HerdCollector:
    """Per-model gauges read at scrape time from the herd and the sampler's latest samples."""

    def __init__(self, herd: Herd, sampler: ServerSampler | None) -> None:
        self._herd = herd
        self._sampler = sampler

    def describe(self) -> list[Metric]:
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for backend, view, state in self._herd.views():
            model = [backend.spec.id]
            for status in Status:
                families["state"].add_metric(
                    [*model, status.value], 1.0 if state.status is status else 0.0
                )
            families["loaded"].add_metric(model, 1.0 if view.phase is Phase.READY else 0.0)
            families["queued"].add_metric(model, view.queued)
            families["in_flight"].add_metric(model, view.in_flight)
            families["restarts"].add_metric(model, state.restarts)
            families["retries"].add_metric(model, state.retries)
        samples = self._sampler.snapshot() if self._sampler is not None else {}
        for model_id, sample in samples.items():
            model = [model_id]
            for key, value in (
                ("rss", sample.rss_bytes),
                ("vram", sample.vram_bytes),
                ("cpu", sample.cpu_percent),
                ("slots_busy", sample.slots_busy),
                ("slots_total", sample.slots_total),
                ("peak_rss", sample.peak_load_rss_bytes),
            ):
                if value is not None:
                    families[key].add_metric(model, value)
        yield from families.values()


_Gauges = GaugeMetricFamily | CounterMetricFamily


def _families() -> dict[str, _Gauges]:
    by_model = ["model"]

    def gauge(name: str, documentation: str, labels: list[str] = by_model) -> _Gauges:
        return GaugeMetricFamily(name, documentation, labels=labels)

    return {
        "state": gauge(
            "llamaherd_model_state",
            "1 for the state the model's llama-server is in, 0 for the others.",
            ["model", "state"],
        ),
        "loaded": gauge("llamaherd_model_loaded", "1 when the model is loaded and serving."),
        "queued": gauge("llamaherd_queue_depth", "Requests waiting for the model."),
        "in_flight": gauge("llamaherd_in_flight", "Requests the model's server is answering."),
        "restarts": CounterMetricFamily(
            "llamaherd_restarts",
            "Automatic restarts of the model's llama-server since llamaherd started.",
            labels=by_model,
        ),
        "retries": gauge("llamaherd_retries", "Retries in the current crash streak."),
        "rss": gauge("llamaherd_memory_rss_bytes", "Resident memory of the llama-server."),
        "vram": gauge(
            "llamaherd_memory_vram_bytes",
            "GPU memory of the llama-server (NVML); absent when unknown.",
        ),
        "cpu": gauge(
            "llamaherd_cpu_percent",
            "CPU use of the llama-server between two samples (100 is one core).",
        ),
        "slots_busy": gauge("llamaherd_slots_busy", "Slots of the llama-server processing."),
        "slots_total": gauge("llamaherd_slots_total", "Slots of the llama-server."),
        "peak_rss": gauge(
            "llamaherd_load_peak_rss_bytes",
            "Peak resident memory while the llama-server loaded, at its last start.",
        ),
    }


# ---- re-exporting llama-server's own series ------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*')
_VALUE = re.compile(r"[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")  # a value, maybe a timestamp
# The samples that belong to a family declared as NAME: NAME itself, or NAME with one of these.
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info", "_gsum", "_gcount")


@dataclass
class _Exported:
    help: str | None = None
    type: str | None = None
    samples: list[str] = field(default_factory=list)


def relabel_expositions(
    expositions: Iterable[tuple[str, str]],
    *,
    label: str = MODEL_LABEL,
    skip_prefix: str | None = None,
) -> str:
    """Several Prometheus text expositions, as one: every sample gets `label="<id>"` (an
    upstream label of that name is kept as `exported_<label>`, Prometheus's own convention),
    and each family appears once, its first HELP and TYPE on top, every source's samples
    below. Lines that are not valid samples are dropped; families named with `skip_prefix`
    (which would clash with our own) too. The text is not otherwise rewritten: names, values
    and timestamps pass as the servers wrote them."""
    families: dict[str, _Exported] = {}
    for source, text in expositions:
        _gather(families, text, label, source)
    return _written(families, skip_prefix=skip_prefix)


def merge_peer_expositions(own: str, peers: Iterable[tuple[str, str | None]]) -> str:
    """A front's exposition: its `own` as it is (no `peer` label), and every peer's whole
    exposition (its llamaherd_* series and the llama-server series it re-exports), each sample
    with `peer="<name>"` added, merged family by family (Prometheus wants a family's samples
    together, under one HELP and TYPE). A family of ours with no samples yet keeps its HELP
    and TYPE. `llamaherd_peer_up` says whose series are in: a peer whose text is None (not
    reachable, or no answer in time) is 0."""
    peers = list(peers)
    families: dict[str, _Exported] = {}
    _gather(families, own, None, "")
    up = families[PEER_UP] = _Exported(
        help=f"# HELP {PEER_UP} 1 when the peer's series are in this exposition, 0 when it is "
        "unreachable or did not answer in time.",
        type=f"# TYPE {PEER_UP} gauge",
    )
    for peer, text in peers:
        up.samples.append(f'{PEER_UP}{{{PEER_LABEL}="{_escape(peer)}"}} {int(text is not None)}')
        if text is not None:
            _gather(families, text, PEER_LABEL, peer)
    return _written(families, keep_empty=True)


def _gather(families: dict[str, _Exported], text: str, label: str | None, value: str) -> None:
    """The families of one exposition into `families`, its samples with `label="value"`
    (unless `label` is None: as they are, if valid)."""
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                current = parts[2]
                family = families.setdefault(current, _Exported())
                if parts[1] == "HELP" and family.help is None:
                    family.help = line
                elif parts[1] == "TYPE" and family.type is None:
                    family.type = line
            continue
        relabelled = _relabel(line, label, value) if label is not None else _as_is(line)
        if relabelled is None:
            continue
        name, sample = relabelled
        key = current if current is not None and _belongs(name, current) else name
        families.setdefault(key, _Exported()).samples.append(sample)


def _written(
    families: dict[str, _Exported], *, skip_prefix: str | None = None, keep_empty: bool = False
) -> str:
    lines: list[str] = []
    for name, family in families.items():
        if (not family.samples and not keep_empty) or (
            skip_prefix and name.startswith(skip_prefix)
        ):
            continue
        lines.extend(line for line in (family.help, family.type) if line is not None)
        lines.extend(family.samples)
    return "".join(f"{line}\n" for line in lines)


def _as_is(line: str) -> tuple[str, str] | None:
    match = _NAME.match(line)
    return None if match is None else (match.group(), line)


def _belongs(name: str, family: str) -> bool:
    return name == family or (name.startswith(family) and name[len(family) :] in _SUFFIXES)


def _relabel(line: str, label: str, value: str) -> tuple[str, str] | None:
    """(name, the sample line with `label="value"` first among its labels), or None."""
    match = _NAME.match(line)
    if match is None:
        return None
    name, rest = match.group(), line[match.end() :]
    ours = f'{label}="{_escape(value)}"'
    if rest.startswith("{"):
        parsed = _labels(rest)
        if parsed is None:
            return None
        pairs, rest = parsed
        labels = [ours] + [
            f'{"exported_" + key if key == label else key}="{raw}"' for key, raw in pairs
        ]
        return (name, f"{name}{{{','.join(labels)}}}{rest}") if _is_value(rest) else None
    return (name, f"{name}{{{ours}}}{rest}") if _is_value(rest) else None


def _is_value(text: str) -> bool:
    match = _VALUE.fullmatch(text)
    if match is None:
        return False
    try:
        float(match.group(1))  # also "+Inf", "-Inf" and "NaN"
    except ValueError:
        return False
    return True


def _labels(text: str) -> tuple[list[tuple[str, str]], str] | None:
    """The label pairs of `{a="1",b="2"} 3` (values still escaped), and what follows `}`."""
    pairs: list[tuple[str, str]] = []
    position = 1
    while True:
        while position < len(text) and text[position] in " \t":
            position += 1
        if text.startswith("}", position):
            return pairs, text[position + 1 :]
        match = _LABEL.match(text, position)
        if match is None:
            return None
        pairs.append((match.group(1), match.group(2)))
        position = match.end()
        if text.startswith(",", position):
            position += 1
        elif not text.startswith("}", position):
            return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
