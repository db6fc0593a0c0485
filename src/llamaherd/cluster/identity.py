"""What answers at a URL: llamaherd (and its version), or something else, told from its answer
to `GET /healthz`. A front asks it of its peers; the command line of the server it talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Identity:
    """What answered: llamaherd (its `version`), or something else (`evidence` says what)."""

    version: str | None
    evidence: str = ""


def identify(healthz: httpx.Response) -> Identity:
    """Decide, from the answer to `GET /healthz`, whether llamaherd answers, else what does."""
    body = json_object(healthz)
    if healthz.is_success and body is not None and body.get("name") == "llamaherd":
        return Identity(version=str(body.get("version", "?")))
    if _looks_like_llama_server(healthz, body):
        return Identity(None, "it looks like llama-server")
    server = printable(healthz.headers.get("server", ""))
    if server:
        return Identity(None, f"it answers as {server}")
    return Identity(
        None, f"its /healthz answered HTTP {healthz.status_code} {healthz.reason_phrase}"
    )


def _looks_like_llama_server(answer: httpx.Response, body: dict[str, Any] | None) -> bool:
    # llama-server answers a path it does not have with an OpenAI-style error that carries a
    # code (llamaherd's carry none), and every path with 503 "Loading model" while it loads.
    if answer.headers.get("server", "").startswith("llama.cpp"):
        return True
    error = (body or {}).get("error")
    if not isinstance(error, dict) or "code" not in error:
        return False
    return (error.get("type"), error.get("message")) in {
        ("not_found_error", "File Not Found"),
        ("unavailable_error", "Loading model"),
    }


def json_object(answer: httpx.Response) -> dict[str, Any] | None:
    try:
        body = answer.json()
    except (ValueError, RecursionError):  # not JSON, not text, or nested to no end
        return None
    return body if isinstance(body, dict) else None


def printable(text: str, limit: int = 60) -> str:
    return "".join(c for c in text if c.isprintable())[:limit].strip()
