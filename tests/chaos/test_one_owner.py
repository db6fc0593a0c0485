"""One owner for every model's life, under load (issue 14): against the real llama-server.

- A storm of stop, start and restart on the model that clients are using: no request is lost
  and none gets a 502 (a stop drains what is in flight); the only failures are the clear 503s
  of requests that arrive while the model is stopped; never two llama-servers at once.
- A model that cannot load, asked for again and again beside a model under load (max_loaded
  1): the healthy model's clients lose nothing and see no failure; the broken model costs one
  start per cool-down, not one backoff cycle per request.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from llamaherd.gateway.scheduler import Phase
from tests.chaos.conftest import Figures
from tests.chaos.load import Load
from tests.gateway.conftest import DemoModels, Launch, ServerCensus, gateway_config
from tests.gateway.test_one_owner_real import unloadable_copy

pytestmark = pytest.mark.real_server

MODEL = "demo"
CLIENTS = 5
CONTROLS = 30
CLIENT_TIMEOUT_S = 60.0
STOPPED = "model 'demo' is stopped (stopped by an operator)"


@pytest.mark.timeout(240)
async def test_a_storm_of_stop_start_restart_under_load_loses_nothing(
    launch: Launch, real_binary: Path, demo_models: DemoModels, figures: Figures
) -> None:
    models = {MODEL: {"path": str(demo_models.alpha), "args": ["--parallel", "2"]}}
    gw = await launch(gateway_config(real_binary, models))
    await gw.loaded(MODEL)
    rng = random.Random(14)
    done: Counter[str] = Counter()
    async with (
        ServerCensus() as census,
        gw.http() as control,
        Load(gw.url, MODEL, clients=CLIENTS, timeout_s=CLIENT_TIMEOUT_S) as load,
    ):
        await load.successes(CLIENTS)
        for _ in range(CONTROLS):
            action = rng.choice(["stop", "start", "restart"])
            answer = await control.post(f"/api/llama/{action}")
            assert answer.status_code == 200, answer.text
            done[action] += 1
            await asyncio.sleep(rng.uniform(0, 0.3))  # a storm: controls at random moments
        started = await control.post("/api/llama/start", params={"wait": 30})
        assert started.json()["status"]["status"] == "ready"
        await load.successes(CLIENTS * 2)
    outcome = load.figures()
    details = load.details("failed_clearly", 100_000)
    statuses = Counter(detail.split(":")[0] for detail in details)

    figures["controls"] = ", ".join(f"{a} x{done[a]}" for a in ("stop", "start", "restart"))
    figures.update(outcome)
    figures["failures"] = ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items())) or "none"
    figures["server_starts"] = gw.starts[MODEL]
    figures["most_servers_at_once"] = census.most

    assert outcome["lost"] == 0, load.details("lost")
    assert not [d for d in details if STOPPED not in d], details  # no 502, nothing else
    assert census.most == 1


@pytest.mark.timeout(120)
async def test_a_model_that_cannot_load_never_takes_the_slot_from_a_busy_one(
    launch: Launch, real_binary: Path, demo_models: DemoModels, figures: Figures, tmp_path: Path
) -> None:
    models = {
        MODEL: {"path": str(demo_models.alpha), "args": ["--parallel", "2"]},
        "broken": {"path": str(unloadable_copy(demo_models.beta, tmp_path))},
    }
    gw = await launch(gateway_config(real_binary, models, max_loaded=1))
    await gw.loaded(MODEL)
    asks = 20
    answers: Counter[int] = Counter()
    async with (
        gw.http() as hostile,
        Load(gw.url, MODEL, clients=3, timeout_s=CLIENT_TIMEOUT_S) as load,
    ):
        await load.successes(3)
        for _ in range(asks):
            answer = await hostile.post("/completion", json={"model": "broken", "prompt": "x"})
            answers[answer.status_code] += 1
            await load.successes(1)  # the healthy model serves between two attempts
        await gw.wait_phase(MODEL, Phase.READY)
        await load.successes(6)
    outcome = load.figures()

    figures["broken_asked"] = asks
    figures["broken_answers"] = ", ".join(f"{k} x{v}" for k, v in sorted(answers.items()))
    figures["broken_starts"] = gw.starts["broken"]
    figures.update({f"healthy_{key}": value for key, value in outcome.items()})
    figures["healthy_starts"] = gw.starts[MODEL]

    assert answers == {503: asks}
    assert gw.starts["broken"] == 1, "one start per cool-down (30 s), not one per request"
    assert outcome["lost"] == 0, load.details("lost")
    assert outcome["failed_clearly"] == 0, load.details("failed_clearly")
    assert gw.starts[MODEL] == 2  # evicted once for the broken model's one attempt
