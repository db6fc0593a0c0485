"""What a front shows of its workers, with three `llamaherd serve` processes and the real
llama-server (the cluster of test_front_real.py): a load on a worker by host, that worker's
llama-server's own series in the front's /metrics under its `peer`, and the request it served
in the front's /api/history under its host."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.test_front_real import cluster, until_listed

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(180)]


async def test_a_worker_model_loaded_by_host_shows_in_the_front_metrics_and_history(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    """`shared` is on both workers: the load by host reaches the one named."""
    async with cluster(tmp_path, real_binary, demo_model) as c:
        await until_listed(c.front, {"m1", "m2", "shared"})
        async with c.front.http(timeout=60) as http:
            refused = await http.post("/api/models/shared/load")
            assert refused.status_code == 409
            assert "w1, w2" in refused.json()["error"]["message"]
            loaded = await http.post("/api/models/shared/load", params={"host": "w2"})
            assert loaded.status_code == 200, loaded.text

            async def phases() -> dict[str, str] | None:
                body = (await http.get("/api/gateway/models")).json()
                found = {m["host"]: m["phase"] for m in body["peerModels"] if m["id"] == "shared"}
                return found if found.get("w2") == "ready" else None

            # Each worker loaded its first model at start; only w2 was asked to load shared.
            assert await c.front.wait_until("w2 loads shared", phases) == {
                "w1": "unloaded",
                "w2": "ready",
            }
            answer = await http.post(
                "/v1/completions", json={"model": "m1", "prompt": "x", "max_tokens": 2}
            )
            assert answer.status_code == 200, answer.text
            text = (await http.get("/metrics")).text
            history = (await http.get("/api/history", params={"model": "m1"})).json()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = [
        s
        for s in families["llamaherd_requests"].samples
        if s.name == "llamaherd_requests_total" and s.labels.get("peer") == "w1"
    ]
    assert [(s.labels["model"], s.labels["code"], s.value) for s in served] == [("m1", "200", 1.0)]
    # The worker's llama-server's own series, re-exported by the worker, then by the front.
    llamacpp = [f for name, f in families.items() if name.startswith("llamacpp:")]
    assert llamacpp
    assert {(s.labels["peer"], s.labels["model"]) for s in llamacpp[0].samples} == {
        ("w1", "m1"),
        ("w2", "m2"),
        ("w2", "shared"),
    }
    up = {s.labels["peer"]: s.value for s in families["llamaherd_peer_up"].samples}
    assert up == {"w1": 1.0, "w2": 1.0}
    assert [(r["host"], r["model"], r["status"]) for r in history["requests"]] == [
        ("w1", "m1", 200)
    ]
    assert {"w1", "w2"} == {p["host"] for p in history["peers"] if p["ok"]}
