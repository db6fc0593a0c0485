"""A small synchronous client of a running `llamaherd serve`, for the command line.

It speaks the REST API (status, logs, start/stop/restart) and reads `/api/events`, the
Server-Sent-Events stream. Every failure ends as a LlamaherdError with a one-line message:
ServiceUnreachableError when nothing answers, ControlConflictError for a 409, LlamaherdError
with the server's own message for any other error answer.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from llamaherd.api.payloads import LOG_EVENT
from llamaherd.config import load_config
from llamaherd.errors import (
    ConfigError,
    ControlConflictError,
    LlamaherdError,
    ServiceUnreachableError,
)

DEFAULT_URL = "http://127.0.0.1:3000"
REQUEST_TIMEOUT_S = 10.0
# A start/restart answers after up to `wait` seconds; the margin covers the request itself.
ANSWER_MARGIN_S = 30.0
# Stop answers once llama-server has exited: SIGTERM, then SIGKILL after stop_timeout_s.
STOP_TIMEOUT_S = 120.0
# The server sends a keep-alive every 15 s; four missed ones mean the connection is dead.
STREAM_READ_TIMEOUT_S = 60.0
# Lines written just before the tail was fetched may arrive again in the first log event.
OVERLAP_WINDOW_S = 1.0
# Compared against that batch: more lines than a short -n gives, so a match is real evidence.
OVERLAP_CONTEXT_LINES = 200

Action = Literal["start", "stop", "restart"]
Event = tuple[str, dict[str, Any]]

# Wildcard listen addresses are not addresses one can connect to; loopback reaches them.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def service_url(url: str | None, config_path: Path) -> str:
    """--url if given, else app_host:app_port from the config file, else the default."""
    if url:
        return _checked_url(url)
    if not config_path.exists():
        return DEFAULT_URL
    settings = load_config(config_path, check_files=False)
    host = _WILDCARDS.get(settings.app_host, settings.app_host)
    if ":" in host:  # an IPv6 address must be bracketed in a URL
        host = f"[{host}]"
    return f"http://{host}:{settings.app_port}"


def _checked_url(url: str) -> str:
    # httpx would otherwise fail later with an error that does not name --url.
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"--url {url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"--url {url!r}: use http://HOST:PORT, e.g. {DEFAULT_URL}")
    return url.rstrip("/")


class RemoteClient:
    """The REST API and event stream of one llamaherd; use it as a context manager."""

    def __init__(self, base_url: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url
        # trust_env=False: a proxy from the environment must not intercept local traffic.
        self._http = httpx.Client(
            base_url=base_url, timeout=REQUEST_TIMEOUT_S, trust_env=False, transport=transport
        )

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/api/status")

    def logs(self, lines: int) -> list[str]:
        answer = self._call("GET", "/api/llama/logs", params={"lines": lines})
        return [str(line) for line in answer.get("lines", [])]

    def control(self, action: Action, wait: float | None = None) -> dict[str, Any]:
        """POST start, stop or restart; returns the status the server answers with."""
        params = {} if wait is None else {"wait": wait}
        timeout = STOP_TIMEOUT_S if action == "stop" else (wait or 0) + ANSWER_MARGIN_S
        answer = self._call("POST", f"/api/llama/{action}", params=params, timeout=timeout)
        status = answer.get("status")
        if not isinstance(status, dict):
            raise LlamaherdError(f"{self.base_url} answered {action} without a status")
        return status

    @contextlib.contextmanager
    def events(self) -> Iterator[Iterator[Event]]:
        """The open `/api/events` stream, as (event name, payload) pairs."""
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        with self._reaching(), self._http.stream("GET", "/api/events", timeout=timeout) as answer:
            if answer.status_code != 200:
                answer.read()
                self._checked(answer)
            yield self._decoded(parse_sse(answer.iter_lines()))

    def _decoded(self, frames: Iterator[tuple[str, str]]) -> Iterator[Event]:
        # Reading the stream can fail at any moment; the same one-line error applies.
        with self._reaching():
            for name, data in frames:
                with contextlib.suppress(ValueError):
                    payload = json.loads(data)
                    # An event we cannot read must not end a follow; skip it.
                    if isinstance(payload, dict):
                        yield name, payload

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        with self._reaching():
            answer = self._http.request(
                method, path, params=params, timeout=timeout or REQUEST_TIMEOUT_S
            )
        return self._checked(answer)

    def _checked(self, answer: httpx.Response) -> dict[str, Any]:
        """The JSON object of a 2xx answer; an error answer raises with the server's message."""
        body = _json_object(answer)
        if answer.is_success and body is not None:
            return body
        message = _error_message(body)
        if message is None:
            raise LlamaherdError(
                f"{self.base_url} answered HTTP {answer.status_code} {answer.reason_phrase}, "
                "not like llamaherd; check --url"
            )
        if answer.status_code == 409:
            raise ControlConflictError(message)
        raise LlamaherdError(message)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise ServiceUnreachableError(
                f"cannot reach llamaherd at {self.base_url} ({_reason(exc)}); "
                "is 'llamaherd serve' running?"
            ) from None


def _json_object(answer: httpx.Response) -> dict[str, Any] | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error_message(body: dict[str, Any] | None) -> str | None:
    error = (body or {}).get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return None


def _reason(exc: httpx.TransportError) -> str:
    """'connection refused' rather than '[Errno 111] Connection refused'."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed"
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip()
    if not text:
        return type(exc).__name__
    return text[0].lower() + text[1:]


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) for each Server-Sent Event; comments (keep-alives) are skipped."""
    name = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


def drop_overlap(tail: list[str], lines: list[str]) -> list[str]:
    """`lines` without its first lines when they were already in `tail`.

    The follow subscribes before it fetches the tail, so no line is lost; lines written just
    before the fetch (the server sends lines in batches) then come twice: as the end of the tail
    and as the start of the first batch. That start ends with the tail's last lines, so the
    shortest such start is dropped. Shortest: on repeated lines, a duplicate beats a lost line.
    """
    for count in range(1, len(lines) + 1):
        compared = min(count, len(tail))
        if compared and lines[count - compared : count] == tail[-compared:]:
            return lines[count:]
    return lines


def follow_logs(
    client: RemoteClient, tail_lines: int, *, max_events: int | None = None
) -> Iterator[list[str]]:
    """The last `tail_lines` lines, then each new batch of lines as llama-server writes them.

    Ends after `max_events` batches of new lines when given (tests use it), else only when
    the server ends the stream, which raises ServiceUnreachableError.
    """
    with client.events() as events:
        # The stream starts with a status event: from then on, no new line can be missed.
        next(events, None)
        context = client.logs(max(tail_lines, OVERLAP_CONTEXT_LINES))
        yield context[-tail_lines:]
        fetched_at = time.monotonic()
        count = 0
        for index, batch in enumerate(_log_batches(events)):
            early = index == 0 and time.monotonic() - fetched_at < OVERLAP_WINDOW_S
            new = drop_overlap(context, batch) if early else batch
            if not new:
                continue
            yield new
            count += 1
            if max_events is not None and count >= max_events:
                return
    raise ServiceUnreachableError(
        f"llamaherd at {client.base_url} ended the event stream; is it shutting down?"
    )


def _log_batches(events: Iterator[Event]) -> Iterator[list[str]]:
    for name, payload in events:
        data = payload.get("data")
        if name == LOG_EVENT and isinstance(data, dict):
            yield [str(line) for line in data.get("lines", [])]
