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
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

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
from llamaherd.client.sse import parse_sse
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
