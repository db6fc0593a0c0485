"""What an alert says: the JSON payload, its one-line message, and URLs as logs may show them.

The payload's field names are a contract with whoever receives it (and with the dashboard):
event, model, state, lastError, retries, restarts, timestamp (unix ms), host, message,
suppressed. New information goes into new fields, never by changing these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llamaherd.alerts.rules import AlertRules, Event
from llamaherd.supervisor.states import ServiceState

MESSAGE_MAX_CHARS = 500


@dataclass(frozen=True, slots=True)
class Alert:
    event: Event
    model: str
    payload: dict[str, Any]
    body: bytes = field(repr=False)  # the payload as JSON, encoded once for every destination


def build_alert(
    event: Event,
    model: str,
    state: ServiceState,
    rules: AlertRules,
    *,
    host: str,
    suppressed: int,
    timestamp_ms: int,
) -> Alert:
    payload: dict[str, Any] = {
        "event": event,
        "model": model,
        "state": str(state.status),
        "lastError": state.last_error,
        "retries": state.retries,
        "restarts": state.restarts,
        "timestamp": timestamp_ms,
        "host": host,
        "message": alert_message(event, model, state, rules),
        "suppressed": suppressed,
    }
    return Alert(event, model, payload, json.dumps(payload).encode())


def alert_message(event: Event, model: str, state: ServiceState, rules: AlertRules) -> str:
    """One line a person reads in a chat channel or a mail subject."""
    why = state.last_error or "no reason recorded"
    if event == "error":
        text = f"llamaherd: model {model} is in error: {why} ({state.retries} retries)"
    elif event == "crash_loop":
        text = (
            f"llamaherd: model {model} is crash-looping: {rules.crashes} crashes within "
            f"{rules.within_s:g} s, retry {state.retries}/{state.max_retries}: {why}"
        )
    else:
        text = f"llamaherd: model {model} recovered: ready again ({state.restarts} restarts so far)"
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX_CHARS else text[: MESSAGE_MAX_CHARS - 3] + "..."


def redact_url(url: str) -> str:
    """The URL as a log may show it: scheme, host, port and the first path segment.

    Webhook URLs carry their secret in the userinfo, the query or (Slack, Discord) the path."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    segments = [segment for segment in parts.path.split("/") if segment]
    path = f"/{segments[0]}" if segments else ""
    return f"{parts.scheme}://{host}{port}{path}{'/...' if len(segments) > 1 else ''}"
