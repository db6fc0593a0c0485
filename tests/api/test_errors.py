"""The REST routes' error answers: OpenAI's shape, never a traceback, whatever the body."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from llamaherd.api.errors import install_error_handlers

pytestmark = pytest.mark.timeout(30)


class Settings(BaseModel):
    name: str
    tags: list[object] = []


def app_with_a_json_body() -> FastAPI:
    """A route that takes a JSON body, as FastAPI reads one, behind llamaherd's handlers."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/api/settings")
    async def settings(body: Settings) -> dict[str, str]:
        return {"name": body.name}

    return app


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000, "the request body nests arrays or objects too deeply to be read"),
        (
            b'{"name": "x", "tags": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
            "the request body nests arrays or objects too deeply to be read",
        ),
        (b'{"name": "\xff"}', "There was an error parsing the body"),
    ],
)
async def test_a_body_that_cannot_be_read_is_a_400_in_openai_shape(
    body: bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    transport = httpx.ASGITransport(app=app_with_a_json_body())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        answer = await http.post(
            "/api/settings", content=body, headers={"content-type": "application/json"}
        )
        good = await http.post("/api/settings", json={"name": "x"})
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": {"message": message, "type": "invalid_request_error"}}
    assert good.json() == {"name": "x"}
    assert not caplog.records, [record.getMessage() for record in caplog.records]
