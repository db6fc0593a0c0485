"""GET /api/history: the history store's payload over HTTP, validated and documented."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from llamaherd.api.errors import install_error_handlers
from llamaherd.api.history_routes import create_history_router
from llamaherd.gateway.records import RequestRecord
from llamaherd.store.history import HistoryStore
from llamaherd.supervisor.states import ExitInfo, ServiceState, Status
from tests.clock import FakeClock

pytestmark = pytest.mark.timeout(30)

T0 = 1_800_000_000.0


def record(model: str, at: float, status: int | None = 200) -> RequestRecord:
    return RequestRecord(
        model=model,
        endpoint="/v1/completions",
        status=status,
        started_at=at,
        latency_s=0.25,
        queue_wait_s=0.0,
        ttft_s=None,
        stream=False,
        completion_tokens=8,
        generation_tps=80.0,
    )


@contextlib.asynccontextmanager
async def client_for(store: HistoryStore) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)  # the error shape clients get from llamaherd
    app.include_router(create_history_router(store))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


def without_host(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "host"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[HistoryStore]:
    clock = FakeClock(T0 + 1)
    history = HistoryStore(tmp_path / "history.db", clock=clock, flush_interval_s=3600)
    await history.start()
    for n in range(5):
        clock.now = T0 + n
        history.record_request(record("a" if n % 2 == 0 else "b", T0 + n))
        history.record_transition(
            "a",
            "ready",
            ServiceState(status=Status.CRASHED, last_error="boom", last_exit=ExitInfo(1, None)),
        )
    await history.flush()
    yield history
    await history.aclose()


@pytest.fixture
async def http(store: HistoryStore) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as client:
        yield client


async def test_history_is_served_as_the_store_answers(
    http: httpx.AsyncClient, store: HistoryStore
) -> None:
    response = await http.get("/api/history")
    assert response.status_code == 200
    body = response.json()
    # Every row says where it happened (a front merges its peers'); here, this llamaherd.
    lists = ("transitions", "starts", "minutes", "requests")
    assert {row["host"] for name in lists for row in body[name]} == {"local"}
    unmarked = {name: [without_host(row) for row in body[name]] for name in lists}
    assert {**body, **unmarked, "peers": None} == {
        **await store.query(None, None, None, 1000),
        "peers": None,
    }
    assert set(body) == {"transitions", "starts", "minutes", "requests", "store", "peers"}
    assert body["peers"] == []
    assert body["transitions"][0] == {
        "host": "local",
        "model": "a",
        "at": T0,
        "from": "ready",
        "to": "crashed",
        "reason": "boom",
        "exitCode": 1,
        "signal": None,
    }
    assert len(body["requests"]) == 5
    assert body["store"] == {"ok": True, "warning": None}


async def test_model_since_until_and_limit_select_rows(http: httpx.AsyncClient) -> None:
    params: dict[str, Any] = {"model": "a", "since": T0 + 1, "until": T0 + 4, "limit": 1}
    body = (await http.get("/api/history", params=params)).json()
    assert [(r["model"], r["at"]) for r in body["requests"]] == [("a", T0 + 4)]
    assert [t["at"] for t in body["transitions"]] == [T0 + 4]
    everything = (await http.get("/api/history", params={"limit": 100_000})).json()
    assert len(everything["transitions"]) == 5


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 100_001}, {"since": "yesterday"}, {"until": "x"}]
)
async def test_bad_parameters_are_refused(http: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await http.get("/api/history", params=params)
    assert response.status_code == 422


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity"])
@pytest.mark.parametrize("name", ["since", "until"])
async def test_a_time_that_is_not_a_finite_number_is_refused(
    http: httpx.AsyncClient, name: str, value: str
) -> None:
    response = await http.get("/api/history", params={name: value})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == f"query.{name}: Input should be a finite number"


async def test_a_store_that_cannot_write_says_so(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("")
    store = HistoryStore(tmp_path / "file.txt" / "history.db", flush_interval_s=3600)
    await store.start()
    store.record_request(record("a", T0))
    try:
        async with client_for(store) as http:
            body = (await http.get("/api/history")).json()
    finally:
        await store.aclose()
    assert body["store"]["ok"] is False
    assert "cannot be written" in body["store"]["warning"]
    assert len(body["requests"]) == 1


async def test_the_openapi_schema_documents_the_route(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    operation = schema["paths"]["/api/history"]["get"]
    assert operation["tags"] == ["history"]
    assert {p["name"] for p in operation["parameters"]} == {"model", "since", "until", "limit"}
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100_000 and limit["schema"]["default"] == 1000
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/HistoryOut"}
    models = schema["components"]["schemas"]
    assert set(models["HistoryOut"]["properties"]) == {
        "transitions",
        "starts",
        "minutes",
        "requests",
        "store",
        "peers",
    }
    assert "host" in models["RequestOut"]["properties"]
    assert "from" in models["TransitionOut"]["properties"]
    assert "from_" not in models["TransitionOut"]["properties"]
    assert "byStatus" in models["MinuteOut"]["properties"]
