"""Twenty config reloads under continuous load (issue 15), `llamaherd serve` as a process of its
own with the real llama-server: the reloads alternate between two configs, in which model `a`
is launched differently (its context size) and renamed by its aliases, and model `b` is removed
and added back.

- `a`'s clients lose nothing and see no failure: its requests in flight finish on the old
  server, those that arrive during its restart wait for the new one;
- `b`'s clients lose nothing: while `b` is out of the config they get a clear 404 (or a 503
  for a request that was queued when it was removed), and it serves again once it is back.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.conftest import Figures
from tests.chaos.load import Load
from tests.conftest import free_port
from tests.serving import ServedLlamaherd, write_config

pytestmark = pytest.mark.real_server

RELOADS = 20


def config(binary: Path, model: Path, state: Path, turn: int) -> dict[str, Any]:
    models: dict[str, Any] = {
        "a": {
            "path": str(model),
            "args": ["--parallel", "2", "-c", "2048" if turn % 2 == 0 else "1024"],
            "aliases": [f"a-{turn % 2}"],
        }
    }
    if turn % 2 == 0:
        models["b"] = {"path": str(model), "args": ["--parallel", "2"]}
    return {
        "llama_server_binary": str(binary),
        "llama_server_port": free_port(),
        "state_dir": str(state),
        "max_loaded": 2,
        "readiness_interval_ms": 50,
        "models": models,
    }


@pytest.mark.timeout(300)
async def test_twenty_reloads_under_load_lose_no_request(
    tmp_path: Path, real_binary: Path, demo_model: Path, figures: Figures
) -> None:
    settings = config(real_binary, demo_model, tmp_path / "state", 0)
    settings["app_port"] = free_port()
    path = write_config(tmp_path, settings)
    changes: Counter[str] = Counter()
    async with ServedLlamaherd(path) as served:
        await served.wait_ready("a")
        await served.wait_ready("b")
        async with (
            served.http(timeout=60) as control,
            Load(served.url, "a", clients=3, timeout_s=60) as load_a,
            Load(served.url, "b", clients=2, timeout_s=60) as load_b,
        ):
            await load_a.successes(3)
            await load_b.successes(2)
            for turn in range(1, RELOADS + 1):
                new = config(real_binary, demo_model, tmp_path / "state", turn)
                path.write_text(json.dumps({**new, "app_port": settings["app_port"]}))
                answer = await control.post("/api/config/reload")
                assert answer.status_code == 200, answer.text
                report = answer.json()
                assert report["ok"] and not report["needsRestart"], report
                changes.update(line.split(";")[0] for line in report["changes"])
                await load_a.successes(2, timeout=60)  # a serves between two reloads
            await load_b.successes(2, timeout=60)  # b is back (turn 20 is even)
        a, b = load_a.figures(), load_b.figures()
        b_failures = Counter(d.split(":")[0] for d in load_b.details("failed_clearly", 100_000))

    figures["reloads"] = RELOADS
    figures["changes"] = ", ".join(f"{k} x{v}" for k, v in sorted(changes.items()))
    figures.update({f"a_{key}": value for key, value in a.items()})
    figures.update({f"b_{key}": value for key, value in b.items()})
    figures["b_failures"] = ", ".join(f"{k} x{v}" for k, v in sorted(b_failures.items()))

    assert a["lost"] == 0, load_a.details("lost")
    assert a["failed_clearly"] == 0, load_a.details("failed_clearly")
    assert b["lost"] == 0, load_b.details("lost")
    assert set(b_failures) <= {"HTTP 404", "HTTP 503"}, load_b.details("failed_clearly")
    for detail in load_b.details("failed_clearly", 100_000):
        assert "does not exist" in detail or "removed from the config" in detail, detail
    assert changes["a: launched differently"] == RELOADS
    assert changes["b: removed"] == RELOADS // 2
    assert changes["b: added"] + changes["b: added (its removal is called off)"] == RELOADS // 2
