"""Telling llamaherd from llama-server, nginx and the rest by their answer to /healthz."""

from __future__ import annotations

import httpx
import pytest

from llamaherd.cluster.identity import Identity, identify


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (200, {"status": "ok", "name": "llamaherd", "version": "1.2.3"}, {}, Identity("1.2.3")),
        (
            404,
            {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}},
            {"server": "whatever"},
            Identity(None, "it looks like llama-server"),
        ),
        (
            503,
            {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
            {},
            Identity(None, "it looks like llama-server"),
        ),
        (
            200,
            {"status": "ok"},
            {"server": "llama.cpp"},
            Identity(None, "it looks like llama-server"),
        ),
        (
            404,
            None,
            {"server": "nginx\x1b[31m/1.24"},
            Identity(None, "it answers as nginx[31m/1.24"),
        ),
        (
            200,
            {"status": "ok", "name": "other"},
            {},
            Identity(None, "its /healthz answered HTTP 200 OK"),
        ),
    ],
)
def test_identify(status: int, body: object, headers: dict[str, str], expected: Identity) -> None:
    answer = httpx.Response(status, json=body, headers=headers)
    assert identify(answer) == expected
