"""Observability end to end, through the whole app as `llamaherd serve` builds it: settings
from a config mapping, `build_herd`, `Telemetry(herd, telemetry_options(settings))` and
`create_app`, served by uvicorn on a free port (or `llamaherd serve` itself, as a process,
where a restart of llamaherd is the point).

- real chat requests, then `/metrics` parsed as Prometheus does: our counters and histograms,
  the herd's gauges, llama-server's own series, and the speed each answer itself reported;
- history written, llamaherd stopped and started again, history read back; log files;
- a crash loop alerting a webhook, and the rate limit holding back a second `error`;
- a history folder that cannot be written: serving goes on, the API and the log say why;
- metrics and history switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from llamaherd.api.app import Application, create_app
from llamaherd.config.settings import settings_from_mapping
from llamaherd.supervisor.states import ServiceState, Status
from llamaherd.telemetry.assembly import Telemetry
from llamaherd.wiring.build import build_herd, telemetry_options
from tests.conftest import (
    CHAT_PATH,
    free_port,
    pid_alive,
    post_chat,
    sse_lines,
    wait_until_dead,
)
from tests.gateway.conftest import FAST_POLICY, gateway_config, serve
from tests.serving import ServedLlamaherd, write_config
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

WAIT_S = 30.0  # the longest any one wait may take
CHAT = [{"role": "user", "content": "Say hello."}]


# ---- a served llamaherd, in this process ------------------------------------------------------


@dataclass(eq=False)
class Served:
    url: str
    application: Application
    states: dict[str, list[ServiceState]] = field(default_factory=dict)

    @property
    def telemetry(self) -> Telemetry:
        return self.application.telemetry

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=WAIT_S)

    def count(self, model: str, status: Status) -> int:
        """How many times `model`'s server entered `status`."""
        return sum(state.status is status for state in self.states[model])


@contextlib.asynccontextmanager
async def served(config: dict[str, Any], *, start_service: bool = False) -> AsyncIterator[Served]:
    """The app `llamaherd serve` would build from `config`; afterwards, no llama-server it
    started may be alive."""
    settings = settings_from_mapping(config)
    herd = build_herd(settings)
    telemetry = Telemetry(herd, telemetry_options(settings))
    application = create_app(herd, start_service=start_service, telemetry=telemetry)
    states: dict[str, list[ServiceState]] = {}
    pids: set[int] = set()
    for model, backend in herd.backends.items():
        states[model] = []

        def on_state(state: ServiceState, seen: list[ServiceState] = states[model]) -> None:
            seen.append(state)
            if state.pid is not None and not state.adopted:
                pids.add(state.pid)

        backend.service.on_state_change(on_state)
    async with serve(application) as url:
        yield Served(url, application, states)
    left = [pid for pid in pids if pid_alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"llama-server processes left running after shutdown: {left}"


async def chat_stream(http: httpx.AsyncClient, model: str, tokens: int = 8) -> dict[str, Any]:
    """A streamed chat; its last data chunk (the one llama-server puts `timings` in)."""
    body = {"model": model, "messages": CHAT, "max_tokens": tokens, "stream": True}
    chunks: list[dict[str, Any]] = []
    async with http.stream("POST", CHAT_PATH, json=body) as answer:
        assert answer.status_code == 200
        async for line in sse_lines(answer):
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunks.append(json.loads(line[5:]))
    assert chunks, "the stream carried no data"
    return chunks[-1]


# ---- /metrics as Prometheus reads it ----------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    samples: list[Sample]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        families = text_string_to_metric_families(text)
        return cls([sample for family in families for sample in family.samples])

    def find(self, name: str, **labels: str) -> list[Sample]:
        return [
            sample
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample of `name` with these labels (among others); None if there is none."""
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name}{labels} matches several samples: {found}"
        return found[0].value if found else None


async def scrape_until(
    http: httpx.AsyncClient, condition: Callable[[Scrape], bool], what: str
) -> Scrape:
    """GET /metrics until `condition` holds: a request is counted just after its last byte
    went to the client, so the client may see its answer a moment before /metrics does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        answer = await http.get("/metrics")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        scrape = Scrape.parse(answer.text)
        if condition(scrape):
            return scrape
        if loop.time() > deadline:
            raise AssertionError(f"/metrics never showed {what}:\n{answer.text}")
        await asyncio.sleep(0.05)


@pytest.mark.real_server
async def test_metrics_after_real_chat_requests(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    config = gateway_config(
        real_binary, {"alpha": {"path": str(demo_model)}}, state_dir=str(tmp_path / "state")
    )
    async with served(config) as app, app.http() as http:
        plain = await post_chat(http, "alpha")
        plain_tps = plain["timings"]["predicted_per_second"]
        first = await scrape_until(
            http,
            lambda s: s.value("llamaherd_generation_tokens_per_second_count", model="alpha") == 1,
            "the first request's speed",
        )
        first_sum = first.value("llamaherd_generation_tokens_per_second_sum", model="alpha")
        assert first_sum == pytest.approx(plain_tps, rel=1e-12)

        last_chunk = await chat_stream(http, "alpha")
        assert "timings" in last_chunk, f"the last chunk carries no timings: {last_chunk}"
        stream_tps = last_chunk["timings"]["predicted_per_second"]
        stream_tokens = (last_chunk.get("usage") or {}).get(
            "completion_tokens", last_chunk["timings"]["predicted_n"]
        )
        completion = plain["usage"]["completion_tokens"] + stream_tokens
        scrape = await scrape_until(
            http,
            lambda s: (
                s.value("llamaherd_generation_tokens_per_second_count", model="alpha") == 2
                and s.value("llamacpp:tokens_predicted_total", model="alpha") == completion
                and (s.value("llamaherd_memory_rss_bytes", model="alpha") or 0) > 0
            ),
            "both requests, llama-server's own counters and the memory sample",
        )

    second_sum = scrape.value("llamaherd_generation_tokens_per_second_sum", model="alpha")
    assert second_sum is not None and first_sum is not None
    assert second_sum - first_sum == pytest.approx(stream_tps, rel=1e-9)

    labels = {"model": "alpha", "endpoint": CHAT_PATH}
    assert scrape.value("llamaherd_requests_total", **labels, code="200") == 2
    assert scrape.value("llamaherd_completion_tokens_total", model="alpha") == completion
    prompt = scrape.value("llamaherd_prompt_tokens_total", model="alpha")
    assert prompt is not None and prompt >= plain["usage"]["prompt_tokens"] > 0
    # Histograms with a model label: every request's duration, the stream's time to first token.
    assert scrape.value("llamaherd_request_duration_seconds_count", **labels) == 2
    assert scrape.value("llamaherd_request_duration_seconds_bucket", **labels, le="+Inf") == 2
    assert scrape.value("llamaherd_time_to_first_token_seconds_count", model="alpha") == 1
    assert scrape.value("llamaherd_time_to_first_token_seconds_bucket", model="alpha", le="+Inf")
    assert scrape.value("llamaherd_load_duration_seconds_count", model="alpha") == 1
    # The herd and the sampler, read at scrape time.
    assert scrape.value("llamaherd_model_state", model="alpha", state="ready") == 1
    assert scrape.value("llamaherd_model_state", model="alpha", state="error") == 0
    assert scrape.value("llamaherd_model_loaded", model="alpha") == 1
    assert (scrape.value("llamaherd_load_peak_rss_bytes", model="alpha") or 0) > 0
    # llama-server's own series, each with the model it came from.
    upstream = [sample for sample in scrape.samples if sample.name.startswith("llamacpp:")]
    assert {sample.labels.get("model") for sample in upstream} == {"alpha"}
    assert scrape.value("llamacpp:prompt_tokens_total", model="alpha") is not None


# ---- llamaherd restarted: history and log files survive ---------------------------------------


async def _reports_ready(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/api/status")).json()["status"] == "ready")


@pytest.mark.real_server
@pytest.mark.timeout(90)
async def test_history_and_log_files_survive_a_restart_of_llamaherd(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    state = tmp_path / "state"
    app_port, llama_port = free_port(), free_port()
    config = write_config(
        tmp_path,
        {
            "llama_server_binary": str(real_binary),
            "llama_server_port": llama_port,
            "llama_model_path": str(demo_model),  # the model "demo", loaded at start
            "app_port": app_port,
            "state_dir": str(state),
            **FAST_POLICY,
        },
    )
    model = demo_model.name.removesuffix(".gguf")
    body = {"model": model, "messages": CHAT, "max_tokens": 8}

    async with ServedLlamaherd(config) as first, first.http(timeout=WAIT_S) as http:
        await first.wait_until("llamaherd reports ready", lambda: _reports_ready(http), WAIT_S)
        pid = (await http.get("/api/status")).json()["pid"]
        plain = await http.post(CHAT_PATH, json=body)
        assert plain.status_code == 200, plain.text
        stream = {**body, "stream": True}
        async with http.stream("POST", CHAT_PATH, json=stream) as answer:
            assert answer.status_code == 200
            chunks = [line async for line in sse_lines(answer) if line.startswith("data: {")]
        assert await first.stop(WAIT_S) == 0, first.output
    assert await asyncio.to_thread(wait_until_dead, pid), "llama-server outlived llamaherd"
    stopped_at = time.time()
    speeds = [  # as each answer reported it, in the order they were sent
        plain.json()["timings"]["predicted_per_second"],
        json.loads(chunks[-1][6:])["timings"]["predicted_per_second"],
    ]

    async with ServedLlamaherd(config) as second, second.http(timeout=WAIT_S) as http:
        await second.wait_until("llamaherd reports ready", lambda: _reports_ready(http), WAIT_S)
        answer = await http.get("/api/history", params={"model": model})
        assert answer.status_code == 200, answer.text
        history = answer.json()
        assert await second.stop(WAIT_S) == 0, second.output

    check_history_of_two_runs(history, stopped_at, speeds)
    # Log files: llama-server's output per model, llamaherd's own lines, both runs in each.
    logs = state / "logs"
    server_log = (logs / f"{model}.log").read_text()
    assert server_log.count(f"loading model '{demo_model}'") == 2, server_log
    assert server_log.count(f"listening on http://127.0.0.1:{llama_port}") == 2, server_log
    own_log = (logs / "llamaherd.log").read_text()
    assert own_log.count(f"llamaherd on http://127.0.0.1:{app_port}") == 2, own_log
    assert f"Stopping llama-server (pid {pid})" in own_log
    assert own_log.count("llama-server stopped (exited with code 0)") == 2, own_log
    assert f"loading model '{demo_model}'" not in own_log  # llama-server's lines go elsewhere
    assert "Traceback" not in first.output + second.output


def check_history_of_two_runs(
    history: dict[str, Any], stopped_at: float, speeds: list[float]
) -> None:
    """The history a second run of llamaherd serves: the first run's two chat requests (a
    plain one, then a stream, answered at `speeds`), its whole life until `stopped_at`, and
    the second run's start."""
    assert history["store"] == {"ok": True, "warning": None}
    earlier = [row for row in history["requests"] if row["at"] < stopped_at]
    assert [(row["endpoint"], row["status"]) for row in earlier] == [(CHAT_PATH, 200)] * 2
    assert [row["tokensPerSecond"] for row in earlier] == pytest.approx(speeds, rel=1e-12)
    assert [row["ttftMs"] is None for row in earlier] == [True, False]  # only the stream's

    moves = [(row["from"], row["to"]) for row in history["transitions"]]
    one_life = [
        ("initial", "checking"),
        ("checking", "starting"),
        ("starting", "ready"),
        ("ready", "stopping"),
        ("stopping", "initial"),
    ]
    assert moves[:5] == one_life, moves  # the first run, stop included
    assert moves[5:8] == one_life[:3], moves  # the second run's start
    assert all(row["at"] < stopped_at for row in history["transitions"][:5])

    starts = history["starts"]
    assert len(starts) == 2 and all(start["ok"] for start in starts)
    assert starts[0]["at"] < stopped_at < starts[1]["at"]
    assert all(0 < start["loadTimeS"] < WAIT_S for start in starts)
    assert all(start["peakRssBytes"] > 0 for start in starts)

    minutes = history["minutes"]
    assert minutes and all(row["minute"] % 60 == 0 for row in minutes)
    assert sum(row["requests"] for row in minutes) == 2
    assert sum(row["byStatus"].get("200", 0) for row in minutes) == 2
    assert sum(row["errors"] for row in minutes) == 0
    assert any(row["rssBytes"] for row in minutes)


# ---- alerts: a crash loop reaches a webhook, once -----------------------------------------------


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook: the URL to POST to, and every JSON body it received, in order."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def test_a_crash_loop_alerts_a_webhook_and_the_rate_limit_holds_a_second_error(
    tmp_path: Path, fake_binary: Path, demo_model: Path
) -> None:
    async with webhook_receiver() as (hook, received):
        models = {"flaky": {"path": str(demo_model), "args": ["--fake-exit-at-start", "1"]}}
        config = gateway_config(
            fake_binary,
            models,
            max_retries=2,
            backoff_initial_ms=20,
            backoff_max_ms=50,
            state_dir=str(tmp_path / "state"),
            alerts={"webhooks": [hook], "crash_loop": {"crashes": 2}, "retries": 0},
        )
        async with served(config, start_service=True) as app, app.http() as http:
            alerter = app.telemetry.alerter
            assert alerter is not None
            await until(lambda: len(received) >= 2, "the webhook received two alerts")
            assert [alert["event"] for alert in received] == ["crash_loop", "error"]
            assert {alert["model"] for alert in received} == {"flaky"}
            assert [alert["state"] for alert in received] == ["crashed", "error"]
            assert all(alert["suppressed"] == 0 for alert in received)
            assert received[1]["lastError"] and received[1]["retries"] == 2
            assert app.count("flaky", Status.ERROR) == 1

            answer = await http.post("/api/llama/restart")
            assert answer.status_code == 200, answer.text
            await until(lambda: app.count("flaky", Status.ERROR) == 2, "flaky is in error again")
            # The rate limit decides as the state changes: held back, nothing left to send.
            assert alerter.suppressed == 1
            await until(lambda: alerter.pending == 0, "no delivery is under way")
            assert alerter.delivered == 2 and alerter.failed == 0
            # Nor a second crash_loop: the restart's crashes fall in the same window, the same
            # loop (one ends only after a quiet window, or ready with no retries counted).
            assert [alert["event"] for alert in received] == ["crash_loop", "error"]

            scrape = Scrape.parse((await http.get("/metrics")).text)
            assert scrape.value("llamaherd_model_state", model="flaky", state="error") == 1
            assert scrape.value("llamaherd_model_loaded", model="flaky") == 0
            history = (await http.get("/api/history", params={"model": "flaky"})).json()
            assert history["starts"] and not any(start["ok"] for start in history["starts"])
            crashes = [row for row in history["transitions"] if row["to"] == "crashed"]
            assert crashes and all(row["exitCode"] == 1 for row in crashes)
            assert [row["to"] for row in history["transitions"]].count("error") == 2


# ---- a history folder that cannot be written --------------------------------------------------


async def test_an_unwritable_history_folder_does_not_stop_serving(
    tmp_path: Path, fake_binary: Path, demo_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="llamaherd.store")
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, where a folder would have to be\n")
    database = blocker / "state" / "history.db"
    config = gateway_config(
        fake_binary, {"alpha": {"path": str(demo_model)}}, state_dir=str(blocker / "state")
    )

    def complaints(level: int, about: str) -> list[str]:
        return [
            record.getMessage()
            for record in caplog.records
            if record.name == "llamaherd.store"
            and record.levelno == level
            and record.getMessage().startswith(about)
            and "cannot be written" in record.getMessage()
        ]

    def history_complaints(level: int) -> list[str]:
        return complaints(level, f"history store {database}")

    async with served(config) as app, app.http() as http:
        for _ in range(3):
            await post_chat(http, "alpha", tokens=4)
        answer = await http.get("/api/history")
        assert answer.status_code == 200, answer.text
        history = answer.json()
        assert history["store"]["ok"] is False
        assert str(database) in history["store"]["warning"]
        # What cannot be written is still kept, and served, from memory.
        assert [row["status"] for row in history["requests"]] == [200] * 3
        assert [row["to"] for row in history["transitions"]][:3] == [
            "checking",
            "starting",
            "ready",
        ]
        # A later flush fails too (logged at debug level), and says nothing new.
        await until(lambda: history_complaints(logging.DEBUG) != [], "a second flush failed")
        assert len(history_complaints(logging.WARNING)) == 1, caplog.text
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
    assert len(history_complaints(logging.WARNING)) == 1, caplog.text
    # The llama-server log files beside it cannot be written either: one warning as well.
    logs = blocker / "state" / "logs"
    assert len(complaints(logging.WARNING, f"llama-server log files in {logs}")) == 1
    assert blocker.read_text().startswith("a regular file")


# ---- metrics and history switched off ---------------------------------------------------------


async def test_without_metrics_and_history_inference_still_works(
    tmp_path: Path, fake_binary: Path, demo_model: Path
) -> None:
    state = tmp_path / "state"
    config = gateway_config(
        fake_binary,
        {"alpha": {"path": str(demo_model)}},
        state_dir=str(state),
        metrics_enabled=False,
        history_enabled=False,
    )
    async with served(config) as app, app.http() as http:
        assert app.telemetry.metrics is None and app.telemetry.history is None
        assert not app.telemetry.measuring
        answer = await post_chat(http, "alpha", tokens=4)
        assert answer["usage"]["completion_tokens"] == 4
        last_chunk = await chat_stream(http, "alpha", tokens=4)
        assert "timings" in last_chunk
        assert (await http.get("/metrics")).status_code == 404
        assert (await http.get("/api/history")).status_code == 404
        assert (await http.get("/api/status")).status_code == 200
    assert not (state / "history.db").exists()
