"""The gateway's routes in the OpenAPI schema: every routed path is listed, the schema is valid
OpenAPI, and what the gateway really answers matches what the schema says it answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.core.result import Ok

from llamaherd.api.app import create_app
from llamaherd.api.openapi import (
    ERROR_SCHEMA,
    MODEL_LIST_SCHEMA,
    TAG,
    UPSTREAM_PATH,
    add_access,
    add_gateway_paths,
    document_gateway,
    gateway_paths,
)
from llamaherd.gateway.herd import herd_of_one
from llamaherd.gateway.route import INFERENCE_PATHS
from llamaherd.gateway.scheduler import Limits
from tests.conftest import ServiceFactory
from tests.serving import serve_application

pytestmark = pytest.mark.timeout(60)

ROUTED_STATUSES = {"401", "403", "404", "408", "413", "429", "502", "503", "default"}
INFERENCE_STATUSES = {"200", "400", "422"} | ROUTED_STATUSES


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    found: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    assert isinstance(found, dict)
    return found


async def _served_schema(service: Any, limits: Limits | None = None) -> dict[str, Any]:
    application = create_app(herd_of_one(service, limits), start_service=False)
    document_gateway(application.api)  # harmless where create_app already does it
    async with (
        serve_application(application) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        answer = await http.get("/openapi.json")
        docs = await http.get("/docs")
    assert answer.status_code == 200, answer.text
    assert docs.status_code == 200
    schema: dict[str, Any] = answer.json()
    return schema


async def test_every_gateway_route_is_documented(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    schema = await _served_schema(make_service(binary=fake_binary, model_path=model_file))
    paths = schema["paths"]
    assert "/api/status" in paths  # FastAPI's own routes are still there
    assert any(tag["name"] == TAG for tag in schema["tags"])

    for path in INFERENCE_PATHS:
        assert set(paths[path]) == {"post"}, path
        operation = paths[path]["post"]
        assert operation["tags"] == [TAG]
        assert set(operation["responses"]) == INFERENCE_STATUSES, path
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        body = _resolve(schema, body)
        assert body["type"] == "object" and body["additionalProperties"] is True
        assert body["properties"]["model"]["type"] == ["string", "null"]
        assert body["properties"]["stream"]["type"] == ["boolean", "null"]
        assert "required" not in body  # no model: the default model
        for status in ("429", "503"):
            assert "Retry-After" in operation["responses"][status]["headers"]
        for status, answer in operation["responses"].items():
            if status in ("200", "default"):
                continue
            error = answer["content"]["application/json"]["schema"]
            assert _resolve(schema, error) == ERROR_SCHEMA, (path, status)

    for path in ("/v1/models", "/models"):
        operation = paths[path]["get"]
        assert operation["tags"] == [TAG]
        assert {"200", "401", "403"} <= set(operation["responses"])

    upstream = paths[UPSTREAM_PATH]
    assert set(upstream) == {"get", "post"}
    names = [parameter["name"] for parameter in upstream["get"]["parameters"]]
    assert names == ["model", "path"]
    assert set(upstream["post"]["responses"]) == ROUTED_STATUSES | {"200"}

    ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


async def test_the_schema_is_valid_openapi(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    schema = await _served_schema(make_service(binary=fake_binary, model_path=model_file))
    loaded = schemathesis.openapi.from_dict(schema)
    labels = set()
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result.err()
        labels.add(result.ok().label)
    assert {f"POST {path}" for path in INFERENCE_PATHS} <= labels
    assert {"GET /v1/models", "GET /models", f"GET {UPSTREAM_PATH}"} <= labels


def test_adding_twice_changes_nothing() -> None:
    schema: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}}
    once = add_gateway_paths(schema)
    snapshot = repr(once)
    assert repr(add_gateway_paths(once)) == snapshot
    assert [tag["name"] for tag in once["tags"]].count(TAG) == 1
    # Each call hands out its own copy: one reader changing its schema changes no other.
    gateway_paths()["/v1/models"]["get"]["responses"].clear()
    assert gateway_paths()["/v1/models"]["get"]["responses"]


async def test_the_gateway_answers_as_documented(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    """Real answers of a gateway whose one model takes no waiting request (queue_depth 0), so
    nothing here starts a server: each status is the one the schema lists, each error body
    is the documented shape, and the 429 carries Retry-After."""
    service = make_service(binary=fake_binary, model_path=model_file)
    herd = herd_of_one(service, Limits(queue_depth=0))
    application = create_app(herd, start_service=False)
    document_gateway(application.api)
    is_error = jsonschema_rs.validator_for(ERROR_SCHEMA)
    is_list = jsonschema_rs.validator_for(MODEL_LIST_SCHEMA)
    chat = "/v1/chat/completions"
    async with (
        serve_application(application) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        documented = (await http.get("/openapi.json")).json()["paths"]
        answers = {
            "not JSON": await http.post(chat, content=b"{not json"),
            "not an object": await http.post(chat, json=[1, 2]),
            "model not a string": await http.post(chat, json={"model": 7}),
            "stream not a boolean": await http.post(chat, json={"stream": "yes"}),
            "unknown model": await http.post(chat, json={"model": "no-such-model"}),
            "queue full": await http.post(chat, json={"messages": []}),
            "unknown upstream model": await http.get("/upstream/no-such-model/props"),
        }
        listing = await http.get("/v1/models")

    expected = {
        "not JSON": 400,
        "not an object": 422,
        "model not a string": 422,
        "stream not a boolean": 422,
        "unknown model": 404,
        "queue full": 429,
        "unknown upstream model": 404,
    }
    assert {what: answer.status_code for what, answer in answers.items()} == expected
    for what, answer in answers.items():
        path = UPSTREAM_PATH if "upstream" in what else chat
        method = "get" if "upstream" in what else "post"
        assert str(answer.status_code) in documented[path][method]["responses"], what
        assert answer.headers["content-type"] == "application/json", what
        assert is_error.is_valid(answer.json()), (what, answer.text)
    assert int(answers["queue full"].headers["retry-after"]) >= 1
    assert listing.status_code == 200
    assert is_list.is_valid(listing.json()), listing.text
    assert [model["id"] for model in listing.json()["data"]] == ["fake-model"]


def test_every_keyed_operation_declares_its_keys_and_401_403() -> None:
    schema = add_access(
        add_gateway_paths(
            {
                "paths": {
                    "/healthz": {"get": {"responses": {"200": {}}}},
                    "/api/status": {"get": {"responses": {"200": {}}}},
                }
            }
        )
    )
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["x-api-key"]["in"] == "header"
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert {"401", "403"} - set(schema["paths"]["/healthz"]["get"]["responses"]) == {"401", "403"}
    for path in ("/api/status", "/v1/chat/completions", UPSTREAM_PATH):
        for operation in schema["paths"][path].values():
            assert {"bearer": []} in operation["security"] and {} in operation["security"]
            assert {"401", "403"} <= set(operation["responses"])
