"""What a front shows of its peers and does on them (issue 16, "everything else follows"): the
hosts in /api/gateway/models, load/unload/start/stop/restart/status on a peer's model by
`?host=NAME`, its peers' /metrics with a `peer` label, their /api/history merged, and
`llamaherd models` and `llamaherd load --host`. A worker and a front in this process, with the
fake llama-server (tests/cluster/inprocess.py)."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llamaherd.gateway.records import RequestRecord
from llamaherd.gateway.scheduler import Phase
from tests.client.test_cli import cli_output
from tests.cluster.inprocess import Pair
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)


async def test_the_gateway_models_of_a_front_name_its_peers_and_their_models(pair: Pair) -> None:
    async with pair.front.http() as http:
        body = (await http.get("/api/gateway/models")).json()
    assert [m["id"] for m in body["models"]] == ["here"]
    peers = {p["name"]: p for p in body["peers"]}
    assert peers["w1"]["reachable"] is True and peers["w1"]["models"] == ["m1"]
    assert peers["gone"]["reachable"] is False and "does not answer" in peers["gone"]["problem"]
    assert [(m["id"], m["host"], m["reachable"]) for m in body["peerModels"]] == [
        ("m1", "w1", True)
    ]
    assert body["peerModels"][0]["aliases"] == ["one"]  # the peer's entry, whole


async def test_an_action_on_a_peer_model_goes_to_the_host_named(pair: Pair) -> None:
    worker = pair.worker.herd
    async with pair.front.http() as http:
        # Without a host, a model only the peers serve is no guess: the hosts are named.
        refused = await http.post("/api/models/m1/load")
        assert refused.status_code == 409
        message = refused.json()["error"]["message"]
        assert "w1" in message and "?host=NAME" in message and "--host w1" in message
        assert worker.view("m1").phase is Phase.UNLOADED

        loaded = await http.post("/api/models/one/load", params={"host": "w1"})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["id"] == "m1"  # the worker's own answer: its entry
        await until(lambda: worker.view("m1").phase is Phase.READY, "w1 loaded m1")

        status = await http.get("/api/models/m1/status", params={"host": "w1"})
        assert status.status_code == 200 and status.json()["status"] == "ready"
        assert status.json()["pid"] == worker.backends["m1"].service.get_state().pid

        stopped = await http.post("/api/models/m1/stop", params={"host": "w1", "wait": 10})
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"]["model"] == "m1"
        assert worker.view("m1").phase is Phase.UNLOADED and worker.view("m1").stopped

        started = await http.post("/api/models/m1/start", params={"host": "w1", "wait": 10})
        assert started.status_code == 200 and started.json()["status"]["status"] == "ready"
        restarted = await http.post("/api/models/m1/restart", params={"host": "w1", "wait": 10})
        assert restarted.status_code == 200 and restarted.json()["status"]["status"] == "ready"
        unloaded = await http.post("/api/models/m1/unload", params={"host": "w1"})
        assert unloaded.status_code == 200 and unloaded.json()["id"] == "m1"
        await until(lambda: worker.view("m1").phase is Phase.UNLOADED, "w1 unloaded m1")

        # What the peer answered, as it answered: its 404 names its models.
        unknown = await http.post("/api/models/nope/load", params={"host": "w1"})
        assert unknown.status_code == 404
        assert "m1" in unknown.json()["error"]["message"]

        no_host = await http.post("/api/models/m1/load", params={"host": "w9"})
        assert no_host.status_code == 400
        assert "w9" in no_host.json()["error"]["message"]
        assert "w1, gone" in no_host.json()["error"]["message"]

        silent = await http.post("/api/models/m1/load", params={"host": "gone"})
        assert silent.status_code == 502
        assert "peer gone" in silent.json()["error"]["message"]

        # Its own model acts here, with or without host=local; the worker never hears of it.
        own = await http.post("/api/models/here/load")
        assert own.status_code == 200 and own.json()["id"] == "here"
        again = await http.post("/api/models/here/unload", params={"host": "local"})
        assert again.status_code == 200
    assert "here" not in worker.backends


async def test_the_front_metrics_carry_every_peer_series_with_its_name(pair: Pair) -> None:
    async with pair.front.http() as http:
        text = (await http.get("/metrics")).text
        alone = (await http.get("/metrics", headers={"x-llamaherd-hop": "1"})).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    states = families["llamaherd_model_state"].samples
    ours = {(s.labels.get("peer"), s.labels["model"]) for s in states}
    assert ours == {(None, "here"), ("w1", "m1")}
    up = {s.labels["peer"]: s.value for s in families["llamaherd_peer_up"].samples}
    assert up == {"w1": 1.0, "gone": 0.0}
    # One family, one TYPE line: the peer's samples sit under the front's own.
    assert text.count("# TYPE llamaherd_model_state gauge") == 1
    assert 'peer="w1"' not in alone and "llamaherd_peer_up" not in alone


def request_row(model: str, at: float) -> RequestRecord:
    return RequestRecord(
        model=model,
        endpoint="/v1/completions",
        status=200,
        started_at=at,
        latency_s=0.1,
        queue_wait_s=0.0,
        ttft_s=None,
        stream=False,
    )


async def test_the_front_history_merges_its_peers_rows_in_time(pair: Pair) -> None:
    worker_history = pair.worker.application.telemetry.history
    front_history = pair.front.application.telemetry.history
    assert worker_history is not None and front_history is not None
    now = time.time()
    worker_history.record_request(request_row("m1", now - 30))
    front_history.record_request(request_row("here", now - 20))
    worker_history.record_request(request_row("m1", now - 10))
    async with pair.front.http() as http:
        answer = await http.get("/api/history")
        newest = (await http.get("/api/history", params={"limit": 1})).json()
        only_m1 = (await http.get("/api/history", params={"model": "m1"})).json()
        alone = (await http.get("/api/history", headers={"x-llamaherd-hop": "1"})).json()
    assert answer.status_code == 200
    body = answer.json()
    assert [(r["host"], r["model"]) for r in body["requests"]] == [
        ("w1", "m1"),
        ("local", "here"),
        ("w1", "m1"),
    ]
    peers = {p["host"]: p for p in body["peers"]}
    assert peers["w1"] == {"host": "w1", "ok": True, "problem": None}
    assert peers["gone"]["ok"] is False and "unreachable" in peers["gone"]["problem"]
    assert [(r["host"], r["at"]) for r in newest["requests"]] == [("w1", now - 10)]
    assert {r["host"] for r in only_m1["requests"]} == {"w1"} and len(only_m1["requests"]) == 2
    assert [r["host"] for r in alone["requests"]] == ["local"] and alone["peers"] == []


async def test_models_command_has_a_host_column_and_load_takes_the_host(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pair.front.url
    code, table, _ = await cli_output(capsys, "models", "--url", url)
    assert code == 0
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "HOST", "STATE"]
    assert lines[1].split()[:4] == ["*", "here", "local", "unloaded"]  # the front's default
    assert lines[2].split()[:3] == ["m1", "w1", "unloaded"]  # the peer's default is not marked
    assert lines[3] == "    aliases: one"
    assert lines[-1].startswith(f"peer gone ({pair.gone_url}): unreachable: does not answer")

    code, out, err = await cli_output(capsys, "load", "m1", "--url", url)
    assert code == 1 and "--host w1" in err
    code, out, _ = await cli_output(capsys, "load", "m1", "--host", "w1", "--url", url)
    assert code == 0, out
    port = pair.worker.herd.backends["m1"].service.port
    assert out.startswith(f"m1: ready on port {port}")
    code, out, _ = await cli_output(capsys, "stop", "one", "--host", "w1", "--url", url)
    assert code == 0 and out.strip() == "m1: initial (not running)", out
    assert pair.worker.herd.view("m1").stopped
