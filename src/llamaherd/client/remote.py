"""A small synchronous client of a running `llamaherd serve`, for the command line.

It speaks the REST API (status, logs, start/stop/restart, the gateway's models and their
load/unload) and reads `/api/events`, the Server-Sent-Events stream. Every failure ends as a
LlamaherdError with a one-line message: ServiceUnreachableError when nothing answers,
ControlConflictError for a 409, LlamaherdError with the server's own message for any other
error answer (an unknown model's 404 among them: its message lists the models there are).

Every answer is checked against the API's own response schemas (api/schemas.py) before the
command line reads it. An answer llamaherd would not send (a 404, JSON of another shape, an
HTML page) costs one more request, `GET /healthz`, to say what answers instead: "is not
llamaherd (it looks like llama-server)" rather than llama-server's "File Not Found". Only the
unexpected answer pays for that round trip.
"""

from __future__ import annotations

import contextlib
import json
import re
import reprlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from llamaherd.api.event_names import LOG_EVENT
from llamaherd.api.schemas import (
    ControlOut,
    GatewayModelOut,
    GatewayModelsOut,
    LogsOut,
    ModelControlOut,
    ModelLogsOut,
    ModelStatusOut,
    ReloadOut,
    StatusOut,
)
from llamaherd.cluster.identity import Identity, identify, json_object
from llamaherd.config.defaults import DEFAULT_URL, ENV_API_KEY
from llamaherd.errors import (
    ConfigError,
    ControlConflictError,
    LlamaherdError,
    ServiceUnreachableError,
)
from llamaherd.version import __version__

REQUEST_TIMEOUT_S = 10.0
# A start/restart answers after up to `wait` seconds; the margin covers the request itself.
ANSWER_MARGIN_S = 30.0
# Stop answers once the requests in flight have finished and llama-server has exited, or after
# the `wait` it is given, with the state then (the CLI's `stop --wait`).
DEFAULT_STOP_WAIT_S = 60.0
STOP_ANSWER_MARGIN_S = 5.0  # the server answers at `wait` at the latest
# The one extra request that finds out what answers when the answer was not llamaherd's.
IDENTIFY_TIMEOUT_S = 5.0
RELOAD_TIMEOUT_S = 60.0  # a reload reads every model file's header first
# The server sends a keep-alive every 15 s; four missed ones mean the connection is dead.
STREAM_READ_TIMEOUT_S = 60.0
# Lines written just before the tail was fetched may arrive again in the first log event.
OVERLAP_WINDOW_S = 1.0
# Compared against that batch: more lines than a short -n gives, so a match is real evidence.
OVERLAP_CONTEXT_LINES = 200

# How often a load/unload is checked on while the CLI waits for it: soon at first (a small
# model is ready in about 0.1 s), then at doubling intervals up to twice a second.
MODEL_POLL_INITIAL_S = 0.05
MODEL_POLL_MAX_S = 0.5
# The message of the 404 for a path the app does not have (Starlette's), as opposed to the
# 404 of a path it has about a model it does not serve.
NO_SUCH_PATH = "Not Found"

Action = Literal["start", "stop", "restart"]
ModelAction = Literal["load", "unload"]
Event = tuple[str, dict[str, Any]]

# Wildcard listen addresses are not addresses one can connect to; loopback reaches them.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}

# Quoting a wrong value in a message: short, whatever the server sent.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 40, 40, 40


def service_url(url: str | None, config_path: Path) -> str:
    """--url if given, else app_host:app_port from the config file, else the default."""
    if url:
        return _checked_url(url)
    if not config_path.exists():
        return DEFAULT_URL
    # Only here: validating a config costs pydantic's models, which `status --url` need not pay.
    from llamaherd.config.settings import load_config

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

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """`api_key`: sent as a Bearer token to a llamaherd that requires one (the command
        line passes LLAMAHERD_API_KEY)."""
        self.base_url = base_url
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env=False: a proxy from the environment must not intercept local traffic.
        # Certificates only for https: loading the CA bundle costs an http:// command (every
        # `llamaherd status` on the machine) about 20 to 50 ms for nothing (bench/cli_startup.py).
        self._http = httpx.Client(
            base_url=base_url,
            timeout=REQUEST_TIMEOUT_S,
            trust_env=False,
            transport=transport,
            headers=headers,
            verify=httpx.URL(base_url).scheme == "https",
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

    def status(
        self,
        model: str | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT_S,
        host: str | None = None,
    ) -> dict[str, Any]:
        """The primary model's server (`GET /api/status`), or `model`'s (an id or an alias;
        its id is in the answer's `model`), on a front's peer `host` if given."""
        if model is None:
            return self._call("GET", "/api/status", schema=StatusOut, timeout=timeout)
        path = f"/api/models/{_path_segment(model)}/status"
        return self._call(
            "GET",
            path,
            schema=ModelStatusOut,
            timeout=timeout,
            answers_404=True,
            params=_on_host(host),
        )

    def logs(self, lines: int, *, model: str | None = None) -> list[str]:
        """The tail of the primary model's server output, or of `model`'s."""
        params = {"lines": lines}
        if model is None:
            answer = self._call("GET", "/api/llama/logs", schema=LogsOut, params=params)
        else:
            path = f"/api/models/{_path_segment(model)}/logs"
            answer = self._call("GET", path, schema=ModelLogsOut, params=params, answers_404=True)
        return list(answer["lines"])

    def control(
        self,
        action: Action,
        wait: float | None = None,
        *,
        model: str | None = None,
        host: str | None = None,
    ) -> dict[str, Any]:
        """POST start, stop or restart of the primary model, or of `model` (an id or an alias;
        on a front's peer `host`, if given); returns the status the server answers with (with
        the model's id in `model`).

        Each passes `wait` to the server, which answers within it: start and restart once
        ready or error, stop once drained and stopped (default DEFAULT_STOP_WAIT_S).
        """
        if action == "stop":
            wait = DEFAULT_STOP_WAIT_S if wait is None else wait
            params: dict[str, Any] = {"wait": wait}
            answer_s = wait + STOP_ANSWER_MARGIN_S
            unanswered = (
                f"llamaherd at {self.base_url} did not answer the stop within {answer_s:g} s; "
                "llama-server may still be stopping: 'llamaherd status' shows where it is, "
                "and --wait SECONDS waits longer"
            )
        else:
            params = {} if wait is None else {"wait": wait}
            answer_s = (wait or 0) + ANSWER_MARGIN_S
            unanswered = (
                f"llamaherd at {self.base_url} did not answer the {action} within "
                f"{answer_s:g} s although it answers within --wait {wait or 0:g} s when well; "
                "'llamaherd status' shows where llama-server is"
            )
        path = f"/api/llama/{action}"
        if model is not None:
            path = f"/api/models/{_path_segment(model)}/{action}"
        answer = self._call(
            "POST",
            path,
            schema=ControlOut if model is None else ModelControlOut,
            params={**params, **_on_host(host)},
            timeout=answer_s,
            unanswered=unanswered,
            answers_404=model is not None,
        )
        status: dict[str, Any] = answer["status"]
        return status

    def reload_config(self) -> dict[str, Any]:
        """POST /api/config/reload: what changed and what needs a restart. A config that is
        wrong raises LlamaherdError with the server's one-line reason (nothing changed)."""
        return self._call("POST", "/api/config/reload", schema=ReloadOut, timeout=RELOAD_TIMEOUT_S)

    def gateway_models(self) -> list[dict[str, Any]]:
        """Every model of the gateway, loaded or not (`GET /api/gateway/models`)."""
        return list(self.gateway_listing()["models"])

    def gateway_listing(self) -> dict[str, Any]:
        """`GET /api/gateway/models` whole: `models`, and on a front `peers` and `peerModels`
        (the models its peers serve, each with its `host`)."""
        return self._call("GET", "/api/gateway/models", schema=GatewayModelsOut)

    def control_model(
        self, action: ModelAction, model: str, *, host: str | None = None
    ) -> dict[str, Any]:
        """POST load or unload for `model` (an id or an alias; on a front's peer `host`, if
        given): the model's entry as the server answers at once, before the load or unload is
        done. An unknown model raises LlamaherdError with the server's message, which lists
        the models it has."""
        return self._call(
            "POST",
            f"/api/models/{_path_segment(model)}/{action}",
            schema=GatewayModelOut,
            answers_404=True,
            params=_on_host(host),
        )

    @contextlib.contextmanager
    def events(self) -> Iterator[Iterator[Event]]:
        """The open `/api/events` stream, as (event name, payload) pairs."""
        with self._stream("/api/events") as events:
            yield events

    @contextlib.contextmanager
    def followed_logs(self, model: str, lines: int) -> Iterator[Iterator[Event]]:
        """`model`'s output followed (`GET /api/models/{id}/logs?follow=true`): `llamaLog`
        events, the first with the last `lines` lines, then each batch of new ones."""
        path = f"/api/models/{_path_segment(model)}/logs"
        params = {"follow": "true", "lines": lines}
        with self._stream(path, params=params, answers_404=True) as events:
            yield events

    @contextlib.contextmanager
    def _stream(
        self, path: str, *, params: dict[str, Any] | None = None, answers_404: bool = False
    ) -> Iterator[Iterator[Event]]:
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        with (
            self._reaching(),
            self._http.stream("GET", path, params=params, timeout=timeout) as answer,
        ):
            if answer.status_code != 200:
                answer.read()
                self._checked(answer, schema=None, answers_404=answers_404)
            yield self._decoded(parse_sse(answer.iter_lines()))

    def _decoded(self, frames: Iterator[tuple[str, str]]) -> Iterator[Event]:
        # Reading the stream can fail at any moment; the same one-line error applies.
        with self._reaching():
            for name, data in frames:
                with contextlib.suppress(ValueError, RecursionError):
                    payload = json.loads(data)
                    # An event we cannot read must not end a follow; skip it.
                    if isinstance(payload, dict):
                        yield name, payload

    def _call(
        self,
        method: str,
        path: str,
        *,
        schema: type[BaseModel],
        params: dict[str, Any] | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
        unanswered: str | None = None,
        answers_404: bool = False,
    ) -> dict[str, Any]:
        """The answer's JSON object, checked against `schema`; `unanswered` is the message for
        a connection that was accepted but never answered within `timeout`; `answers_404`: the
        path names something (a model) that llamaherd may answer 404 for, with its message."""
        with self._reaching():
            try:
                answer = self._http.request(
                    method,
                    path,
                    params=params,
                    timeout=httpx.Timeout(REQUEST_TIMEOUT_S, read=timeout),
                )
            except httpx.ReadTimeout:
                raise LlamaherdError(
                    unanswered
                    or f"{self.base_url} accepted the connection but did not answer "
                    f"{method} {path} within {timeout:g} s; check --url, or restart "
                    "'llamaherd serve' if it hangs"
                ) from None
        return self._checked(answer, schema=schema, answers_404=answers_404)

    def _checked(
        self, answer: httpx.Response, *, schema: type[BaseModel] | None, answers_404: bool = False
    ) -> dict[str, Any]:
        """The JSON object of a 2xx answer in llamaherd's shape; an error answer raises with the
        server's message; anything else raises saying what answers instead of llamaherd."""
        body = json_object(answer)
        if answer.is_success and body is not None:
            problem = None if schema is None else _schema_problem(schema, body)
            if problem is None:
                return body
            raise self._unexpected(answer, problem)
        message = _error_message(body)
        reason = f"HTTP {answer.status_code} {answer.reason_phrase}"
        if answer.status_code == 404 and answers_404 and message not in (None, NO_SUCH_PATH):
            # "The model 'x' does not exist. Available models: ...": but only llamaherd's word
            # is worth repeating, and another server's 404 can look alike; ask which it is.
            identity = self._identify()
            if identity.version is not None:
                raise LlamaherdError(message)
            raise self._unexpected(answer, f"{reason}: {message}", identity)
        # Otherwise llamaherd answers 404 only for a path it does not have, which this client
        # never asks for; llama-server and most other servers answer 404 to every path of ours.
        if message is None or answer.status_code == 404:
            raise self._unexpected(answer, f"{reason}: {message}" if message else reason)
        if answer.status_code == 409:
            raise ControlConflictError(message)
        if answer.status_code in (401, 403):
            raise LlamaherdError(f"{message} (the command line sends {ENV_API_KEY}, if set)")
        raise LlamaherdError(message)

    def _unexpected(
        self, answer: httpx.Response, detail: str, identity: Identity | None = None
    ) -> LlamaherdError:
        """The error for an answer llamaherd does not send, after asking what answered it
        (unless `identity` already says)."""
        identity = identity or self._identify()
        if identity.version is None:
            return LlamaherdError(
                f"{self.base_url} is not llamaherd ({identity.evidence}); point --url at "
                f"llamaherd's address (default {DEFAULT_URL})"
            )
        asked = f"{answer.request.method} {answer.request.url.path}"
        if identity.version == __version__:
            why = "so something between them (a proxy?) changed the answer"
            said = f"it says it is llamaherd {identity.version} like this command, {why}"
        else:
            said = (
                f"it says it is llamaherd {identity.version}, this command is llamaherd "
                f"{__version__}: use the same version of both"
            )
        return LlamaherdError(
            f"{self.base_url} answered {asked} with something llamaherd does not send "
            f"({detail}); {said}"
        )

    def _identify(self) -> Identity:
        try:
            answer = self._http.get("/healthz", timeout=IDENTIFY_TIMEOUT_S)
        except httpx.TransportError as exc:
            return Identity(None, f"its /healthz did not answer: {_reason(exc)}")
        return identify(answer)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise ServiceUnreachableError(
                f"cannot reach llamaherd at {self.base_url} ({_reason(exc)}); "
                "is 'llamaherd serve' running?"
            ) from None


def _on_host(host: str | None) -> dict[str, str]:
    """The query that names a front's peer (none: the llamaherd asked)."""
    return {} if host is None else {"host": host}


def _path_segment(text: str) -> str:
    """`text` as one segment of a URL path: "/" escaped, and "." or ".." escaped too, since
    clients would otherwise resolve them as the current or the parent folder."""
    segment = quote(text, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _schema_problem(schema: type[BaseModel], body: dict[str, Any]) -> str | None:
    """None if `body` is what llamaherd sends as `schema`, else the first thing that is not.

    Strict: the command line reads the JSON as it came, so a type must not be merely coercible
    (a "5" where llamaherd sends 5)."""
    try:
        schema.model_validate(body, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the answer"
        msg = error["msg"][:1].lower() + error["msg"][1:]
        got = "" if error["type"] == "missing" else f", got {_SHORT.repr(error.get('input'))}"
        return f"{where}: {msg}{got}"
    return None


def _error_message(body: dict[str, Any] | None) -> str | None:
    """The message of an error in llamaherd's shape, {"error": {"message", "type"}}; None for
    any other. llama-server's OpenAI-style errors look alike but carry a numeric "code"
    (llamaherd's refusals of a key carry a word: "missing_api_key")."""
    error = (body or {}).get("error")
    if not isinstance(error, dict) or not isinstance(error.get("code", ""), str):
        return None
    message, kind = error.get("message"), error.get("type")
    return message if isinstance(message, str) and isinstance(kind, str) else None


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
    client: RemoteClient,
    tail_lines: int,
    *,
    max_events: int | None = None,
    model: str | None = None,
) -> Iterator[list[str]]:
    """The last `tail_lines` lines, then each new batch of lines as llama-server writes them:
    the primary model's, or `model`'s (an id or an alias).

    Ends after `max_events` batches of new lines when given (tests use it), else only when
    the server ends the stream, which raises ServiceUnreachableError.
    """
    if model is not None:
        yield from _follow_model(client, model, tail_lines, max_events)
        return
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


def _follow_model(
    client: RemoteClient, model: str, tail_lines: int, max_events: int | None
) -> Iterator[list[str]]:
    # The server sends the tail and then every batch after it, none twice: nothing to drop.
    with client.followed_logs(model, tail_lines) as events:
        for count, batch in enumerate(_log_batches(events)):
            yield batch
            if max_events is not None and count >= max_events:
                return
    raise ServiceUnreachableError(
        f"llamaherd at {client.base_url} ended the log stream of {model}; is it shutting down, "
        "or did a reload remove the model?"
    )


def _log_batches(events: Iterator[Event]) -> Iterator[list[str]]:
    for name, payload in events:
        data = payload.get("data")
        lines = data.get("lines") if isinstance(data, dict) else None
        if name == LOG_EVENT and isinstance(lines, list):
            yield [str(line) for line in lines]


@dataclass(frozen=True)
class ModelWait:
    """How a wait for a load or unload ended: `outcome` "done" (the model is ready, or not
    loaded), "failed" (its llama-server gave up), or "pending" (the time ran out first);
    `entry` is the model as last seen."""

    outcome: Literal["done", "failed", "pending"]
    entry: dict[str, Any]


def model_settled(
    action: ModelAction, entry: dict[str, Any], *, stale_failure: bool = False
) -> Literal["done", "failed"] | None:
    """Whether a load or unload of the model `entry` describes is over, and how.

    A load is done when the model is ready and not about to be unloaded (draining: evicted or
    idle, it will be loaded again afterwards). Its failure counts unless `stale_failure`: a
    model that had failed before keeps that phase while its new load waits for room. An unload
    is done once the model is unloaded, or failed: a failed model has no server and holds no
    room, which is what an unload is for."""
    phase = entry.get("phase")
    if action == "unload":
        return "done" if phase in ("unloaded", "failed") else None
    if phase == "ready" and not entry.get("draining"):
        return "done"
    if phase == "failed" and not stale_failure:
        return "failed"
    return None


def wait_for_model(
    client: RemoteClient,
    action: ModelAction,
    entry: dict[str, Any],
    wait_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    host: str | None = None,
) -> ModelWait:
    """Follow the model of `entry` (the answer to its load or unload) until that is over, or
    `wait_s` seconds have passed.

    Polls `GET /api/gateway/models`, quickly at first, rather than following the llamaModels
    events on `/api/events`: the API's load and unload answer at once (they take no wait), and
    a blocking read of that stream could not be held to this deadline; a poll can."""
    model = entry["id"]
    stale_failure = action == "load" and entry.get("phase") == "failed"
    deadline = clock() + wait_s
    delay = MODEL_POLL_INITIAL_S
    while True:
        settled = model_settled(action, entry, stale_failure=stale_failure)
        if settled is not None:
            return ModelWait(settled, entry)
        remaining = deadline - clock()
        if remaining <= 0:
            return ModelWait("pending", entry)
        sleep(min(delay, remaining))
        delay = min(delay * 2, MODEL_POLL_MAX_S)
        entry = _find_model(client, model, host)
        stale_failure = stale_failure and entry.get("phase") == "failed"


def _find_model(client: RemoteClient, model: str, host: str | None = None) -> dict[str, Any]:
    """`model`'s entry: this llamaherd's, or as a front sees it on its peer `host`."""
    if host is None:
        entries = client.gateway_models()
    else:
        entries = [e for e in client.gateway_listing().get("peerModels", []) if e["host"] == host]
    for entry in entries:
        if entry["id"] == model:
            return entry
    where = "" if host is None else f" on host {host}"
    raise LlamaherdError(
        f"llamaherd at {client.base_url} no longer lists model {model!r}{where}; was it "
        "restarted with another config? 'llamaherd models' lists what it has"
    )
