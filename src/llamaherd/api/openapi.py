"""The gateway's routes in the OpenAPI schema (`/openapi.json`, `/docs`).

The inference paths, `/v1/models` and `/upstream/{model}/{path}` are answered by a pure ASGI
route in front of FastAPI (gateway/route.py), so FastAPI never sees them and its schema would
not list them. This module describes them as data: one table of paths, and one set of answers
every routed request can get. `document_gateway(api)` adds them to whatever FastAPI builds,
so a client generator, `/docs` and a schema fuzzer see the whole service.

What is documented is what the route does: a body that is not JSON is a 400, valid JSON of the
wrong shape (not an object, a `model` or `stream` of the wrong type) a 422, an unknown model a
404, a body over the limit a 413 and one too slow to arrive a 408, a full queue a 429 and a
model that cannot be served a 503 (both with `Retry-After`), an unreachable llama-server a 502.
Anything else a routed request gets is llama-server's own answer, relayed unchanged
(`default`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from llamaherd.api.access import required_scope
from llamaherd.gateway.route import INFERENCE_PATHS, UPSTREAM_PREFIX

TAG = "inference"
ERROR_NAME = "OpenAIError"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_NAME}"}
REQUEST_NAME = "InferenceRequest"

# The shape of every error llamaherd's gateway writes (gateway/replies.py, error_json), and of
# llama-server's own errors.
ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_NAME,
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "description": "e.g. invalid_request_error"},
                "code": {
                    "type": ["string", "integer", "null"],
                    "description": "the HTTP status, or a word such as model_not_found",
                },
            },
        }
    },
}

# What the gateway itself reads of a body; every other field goes to llama-server untouched.
REQUEST_SCHEMA: dict[str, Any] = {
    "title": REQUEST_NAME,
    "type": "object",
    "properties": {
        "model": {
            "type": ["string", "null"],
            "description": "a model id or alias; absent or null: the default model",
        },
        "stream": {
            "type": ["boolean", "null"],
            "description": "answer as server-sent events (`text/event-stream`)",
        },
    },
    "additionalProperties": True,
}

# Each inference path, with what it is. A path of INFERENCE_PATHS missing here is still
# documented, with the generic summary.
SUMMARIES = {
    "/v1/chat/completions": "OpenAI chat completion",
    "/chat/completions": "OpenAI chat completion (without /v1)",
    "/v1/completions": "OpenAI text completion",
    "/completions": "OpenAI text completion (without /v1)",
    "/v1/embeddings": "OpenAI embeddings (the model's server needs --embeddings)",
    "/embeddings": "OpenAI embeddings (without /v1)",
    "/v1/rerank": "rerank documents (the model's server needs --reranking)",
    "/rerank": "rerank documents (without /v1)",
    "/v1/reranking": "rerank documents",
    "/reranking": "rerank documents (without /v1)",
    "/v1/messages": "Anthropic messages",
    "/v1/messages/count_tokens": "Anthropic token count",
    "/completion": "llama.cpp's native completion",
    "/embedding": "llama.cpp's native embedding",
    "/tokenize": "llama.cpp: text to tokens",
    "/detokenize": "llama.cpp: tokens to text",
    "/infill": "llama.cpp: fill in the middle",
    "/apply-template": "llama.cpp: the chat template applied to messages",
}
GENERIC_SUMMARY = "relayed to the model's llama-server"
MODELS_PATHS = ("/v1/models", "/models")
UPSTREAM_PATH = UPSTREAM_PREFIX + "{model}/{path}"
UPSTREAM_METHODS = ("get", "post")

RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds until a retry may succeed",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _error(description: str, *, retry: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if retry:
        answer["headers"] = RETRY_AFTER
    return answer


# The answers a request can get before it reaches a llama-server, and when none answers.
AUTH_ERRORS = {
    "401": _error("no valid API key (only when API keys are configured)"),
    "403": _error(
        "the API key lacks the scope this route needs, or a browser's cross-origin request"
    ),
}
ROUTED_ERRORS = {
    **AUTH_ERRORS,
    "404": _error("no model of that name (an id or an alias)"),
    "408": _error("the request body did not arrive within body_timeout_s"),
    "413": _error("the request body is larger than max_body_mb"),
    "429": _error("the model's queue is full; retry later", retry=True),
    "502": _error("the model's llama-server could not be reached or failed mid-answer"),
    "503": _error(
        "the model cannot be served now: it failed to load, does not fit the memory budget, "
        "or the request waited longer than queue_timeout_s",
        retry=True,
    ),
    "default": {
        "description": "llama-server's own answer, relayed unchanged (its errors are "
        "OpenAI-style too, e.g. 501 for an endpoint the server was not started for)",
    },
}
INFERENCE_ERRORS = {
    "400": _error("the body is not valid JSON, or it names no model and there is no default model"),
    "422": _error(
        "valid JSON of the wrong shape: not an object, or a `model` or `stream` of the wrong "
        "type (the gateway reads only these; llama-server judges the rest)"
    ),
    **ROUTED_ERRORS,
}


def _inference_operation(path: str) -> dict[str, Any]:
    return {
        "tags": [TAG],
        "summary": SUMMARIES.get(path, GENERIC_SUMMARY),
        "description": (
            "Routed by the body's `model` to that model's llama-server, loading it first if "
            "needed, and queued while its slots are busy. A stream that waits more than a "
            "second starts at once and carries SSE comment lines until the first token."
        ),
        "operationId": "post" + _slug(path),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{REQUEST_NAME}"}}
            },
        },
        "responses": {
            "200": {
                "description": "llama-server's answer",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **INFERENCE_ERRORS,
        },
    }


MODEL_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer", "description": "unix seconds"},
                    "owned_by": {"type": "string"},
                    "meta": {
                        "type": "object",
                        "description": (
                            "llamaherd's facts: the `llamaModels` event's fields (`path`, the "
                            "model file, is null unless the key has the admin scope)"
                        ),
                    },
                },
            },
        },
    },
}


def _models_operation(path: str) -> dict[str, Any]:
    return {
        "tags": [TAG],
        "summary": "every model, loaded or not, in OpenAI's list shape",
        "operationId": "get" + _slug(path),
        "responses": {
            "200": {
                "description": "the models",
                "content": {"application/json": {"schema": MODEL_LIST_SCHEMA}},
            },
            **AUTH_ERRORS,
        },
    }


def _upstream_operation(method: str) -> dict[str, Any]:
    return {
        "tags": [TAG],
        "summary": "passed unchanged to the model's own llama-server",
        "description": (
            "Its web UI, /slots, /props, /metrics, or anything else, at that server's base URL "
            "(the path is appended, never parsed as a URL). The model is loaded first if "
            "needed. Every method is relayed; a GET or HEAD of a ready model skips the queue, "
            "anything else waits its turn like an inference request."
        ),
        "operationId": method + _slug(UPSTREAM_PREFIX + "model_path"),
        "parameters": [
            {
                "name": "model",
                "in": "path",
                "required": True,
                "description": "a model id or alias",
                "schema": {"type": "string"},
            },
            {
                "name": "path",
                "in": "path",
                "required": True,
                "description": "the path on llama-server; it may contain `/`",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": {"description": "llama-server's answer"},
            **ROUTED_ERRORS,
        },
    }


def _slug(path: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in path)


def gateway_paths() -> dict[str, dict[str, Any]]:
    """The gateway's path items, keyed by path, as OpenAPI 3.1 writes them (a fresh copy on
    every call: whoever reads a schema may change it in place)."""
    paths: dict[str, dict[str, Any]] = {
        path: {"post": _inference_operation(path)} for path in sorted(INFERENCE_PATHS)
    }
    paths.update({path: {"get": _models_operation(path)} for path in MODELS_PATHS})
    paths[UPSTREAM_PATH] = {method: _upstream_operation(method) for method in UPSTREAM_METHODS}
    return copy.deepcopy(paths)


def add_gateway_paths(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the gateway's paths, their schemas and their tag to an OpenAPI `schema` (in place,
    and returned). Adding them twice changes nothing; a path already there is kept as it is."""
    paths = schema.setdefault("paths", {})
    for path, item in gateway_paths().items():
        paths.setdefault(path, item)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_NAME, copy.deepcopy(ERROR_SCHEMA))
    schemas.setdefault(REQUEST_NAME, copy.deepcopy(REQUEST_SCHEMA))
    tags = schema.setdefault("tags", [])
    if not any(tag.get("name") == TAG for tag in tags):
        tags.append(
            {
                "name": TAG,
                "description": "OpenAI-compatible and llama.cpp endpoints, routed by `model`",
            }
        )
    return schema


SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key from api_keys or LLAMAHERD_API_KEY",
    },
    "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}
# Either scheme, or none at all: a llamaherd without api_keys asks for no key.
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"x-api-key": []}, {}]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def add_access(schema: dict[str, Any]) -> dict[str, Any]:
    """Say which operations take an API key (every one but the open pages, api/access.py) and
    that they can answer 401 and 403; `/docs` then offers an Authorize button."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(copy.deepcopy(SECURITY_SCHEMES))
    components.setdefault("schemas", {}).setdefault(ERROR_NAME, copy.deepcopy(ERROR_SCHEMA))
    for path, item in schema.get("paths", {}).items():
        if required_scope(path, metrics_public=False) is None:
            continue
        for method, operation in item.items():
            if method in HTTP_METHODS and isinstance(operation, dict):
                operation.setdefault("security", copy.deepcopy(SECURITY))
                answers = operation.setdefault("responses", {})
                for status, answer in AUTH_ERRORS.items():
                    answers.setdefault(status, copy.deepcopy(answer))
    return schema


def document_gateway(api: FastAPI) -> None:
    """Make `api.openapi()` (and so `/openapi.json` and `/docs`) include the gateway's routes.

    FastAPI builds its schema once and keeps it; the gateway's paths are added to that one
    dict, so calling this twice, or after the schema was first built, is harmless."""
    build: Callable[[], dict[str, Any]] = api.openapi

    def openapi() -> dict[str, Any]:
        return add_access(add_gateway_paths(build()))

    api.openapi = openapi  # type: ignore[method-assign]
