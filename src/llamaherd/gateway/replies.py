"""Answers the gateway writes itself, OpenAI-shaped: `{"error": {"message", "type", "code"}}`
as a whole response, or as one `data:` event once an event stream has started; and the start
of an event stream sent before the upstream answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from llamaherd.gateway.asgi import Send


def error_json(message: str, kind: str, code: str | int | None) -> bytes:
    """`{"error": {"message", "type", "code"}}`, the shape OpenAI clients parse."""
    error = {"message": message, "type": kind, "code": code}
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def sse_error_event(message: str, kind: str, code: str | int | None) -> bytes:
    return b"data: " + error_json(message, kind, code) + b"\n\n"


async def send_error(
    send: Send,
    status: int,
    message: str,
    kind: str,
    *,
    code: str | int | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """A whole OpenAI-style error response; `code` defaults to the status. Pass e.g.
    `[(b"retry-after", b"5")]` as `headers` for a 429 or 503."""
    body = error_json(message, kind, status if code is None else code)
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_sse_start(
    send: Send, *, status: int = 200, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Start an event stream before the upstream answers (to keep a waiting client company
    with comment lines); hand the rest to `relay(..., started=True)` or `send_sse_error`."""
    start_headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})


async def send_sse_error(
    send: Send, message: str, kind: str, *, code: str | int | None = None, end: bool = True
) -> None:
    """One `data: {"error": ...}` event on a started event stream, ending it unless `end` is
    false. The event must begin at an event boundary (after a blank line)."""
    event = sse_error_event(message, kind, code)
    await send({"type": "http.response.body", "body": event, "more_body": not end})
