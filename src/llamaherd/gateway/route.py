"""The inference front door: a pure ASGI app for the OpenAI and llama.cpp paths.

It sits in front of everything else (the REST API, Socket.IO, the dashboard) and answers only
its own paths, passing every other request on untouched. No framework request objects and no
middleware stand between the client's socket and the upstream's: the hot path is read the
body, find the model, wait for the herd's decision, relay.

A streaming request that waits more than a second (queued, or its model loading) gets its
200 and SSE comment lines every second until the first token: OpenAI clients ignore comments,
a person with curl sees why it is slow, and proxies in between do not time out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote

from llamaherd.gateway.asgi import (
    TOO_DEEP,
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    until_disconnect,
)
from llamaherd.gateway.herd import Herd, Ticket
from llamaherd.gateway.registry import ModelSpec, UnknownModelError
from llamaherd.gateway.relay import ChunkObserver, relay
from llamaherd.gateway.replies import send_error, send_sse_error, send_sse_start
from llamaherd.gateway.scheduler import Dispatch, Phase, Reject
from llamaherd.gateway.views import model_listing

logger = logging.getLogger("llamaherd.gateway")

# Routed by the body's "model": OpenAI's and Anthropic's paths, and llama.cpp's own.
INFERENCE_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/v1/embeddings",
        "/embeddings",
        "/v1/rerank",
        "/rerank",
        "/v1/reranking",
        "/reranking",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/completion",
        "/embedding",
        "/tokenize",
        "/detokenize",
        "/infill",
        "/apply-template",
    }
)
# The paths whose answer can be an event stream ("stream": true): only a request to one of
# these gets its 200 and comment lines while it waits. On any other path llama-server answers
# plain JSON whatever the body says, and an event-stream start would make that answer a
# broken stream.
STREAMING_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/v1/messages",
        "/completion",
        "/infill",
    }
)
MODEL_LIST_PATHS = frozenset({"/v1/models", "/models"})
# Set in the ASGI scope by the API's key check (api/access.py) when keys are configured:
# whether the request's key has the admin scope. Absent without keys, where everyone who can
# connect may do everything (on loopback only, unless told otherwise).
ADMIN_SCOPE_KEY = "llamaherd.admin"
UPSTREAM_PREFIX = "/upstream/"


class RequestObserver(ChunkObserver, Protocol):
    """Measures one inference request (metrics/meter.py's RequestMeter): the relay reports its
    chunks; the route reports the dispatch, a refusal, or a client that left while waiting."""

    def dispatched(self) -> None: ...

    def refused(self, status: int, message: str) -> None: ...

    def abandoned(self) -> None: ...


# (model id, endpoint path, stream?) -> the observer of that request; injected by the app, so
# the gateway knows nothing of what is measured or where it goes.
ObserverFactory = Callable[[str, str, bool], RequestObserver]
DEFAULT_BODY_LIMIT = 16 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 60.0  # a client that sends its body slower than this is cut off
HEARTBEAT_S = 1.0
RETRIES_ON_REFUSED = 1  # a refused connection is retried once, after the supervisor noticed
REFUSED_SETTLE_S = 2.0  # how long to wait for that


@dataclass(frozen=True)
class RequestLimits:
    """How large a request body may be, and how long its client may take to send it."""

    body_limit: int = DEFAULT_BODY_LIMIT
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S


class GatewayRoute:
    def __init__(
        self,
        herd: Herd,
        app: Any,
        *,
        limits: RequestLimits | None = None,
        observe: ObserverFactory | None = None,
    ) -> None:
        self.herd = herd
        self.app = app  # everything that is not inference
        limits = limits or RequestLimits()
        self.body_limit = limits.body_limit
        self.body_timeout_s = limits.body_timeout_s
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path in INFERENCE_PATHS:
                if scope["method"] == "POST":
                    await self._inference(scope, receive, send)
                    return
                await send_error(
                    send,
                    405,
                    f"{path} takes POST",
                    "invalid_request_error",
                    headers=[(b"allow", b"POST")],
                )
                return
            if path in MODEL_LIST_PATHS:
                await self._models(scope, send)
                return
            if path.startswith(UPSTREAM_PREFIX):
                await self._upstream(scope, receive, send)
                return
        await self.app(scope, receive, send)

    # ---- the routes ------------------------------------------------------------------------

    async def _inference(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._body(receive, send)
        if body is None:
            return
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            await send_error(
                send, 400, f"the request body is not valid JSON: {exc}", "invalid_request_error"
            )
            return
        except RecursionError:
            await send_error(send, 400, f"the request body {TOO_DEEP}", "invalid_request_error")
            return
        problem = _wrong_type(payload)
        if problem is not None:
            # Valid JSON of the wrong shape: 422, as FastAPI answers for the REST routes.
            await send_error(send, 422, problem, "invalid_request_error")
            return
        name = payload.get("model")
        spec = await self._resolve(name, send)
        if spec is None:
            return
        stream = payload.get("stream") is True and scope["path"] in STREAMING_PATHS
        await self._serve(scope, receive, send, spec, body, stream=stream)

    async def _upstream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/upstream/{model}/{path}`: passed unchanged to that model's own llama-server (its
        web UI, /slots, /props, /metrics), loading it first if needed. The target is always
        that server's base URL: the path is appended to it, never parsed as a URL."""
        name, tail = _upstream_parts(scope)
        spec = await self._resolve(name, send) if name else None
        if spec is None:
            if not name:
                await send_error(send, 404, "use /upstream/{model}/{path}", "not_found_error")
            return
        body = await self._body(receive, send)
        if body is None:
            return
        path_qs = "/" + tail + _query(scope)
        backend = self.herd.backends[spec.id]
        looking = scope["method"] in ("GET", "HEAD")
        if looking and self.herd.view(spec.id).phase is Phase.READY:
            # Not through the queue: a look at /slots must not wait behind inference. Anything
            # else (a completion POSTed here) is a request in flight like any other, so its
            # server is never evicted under it.
            await relay(
                scope,
                receive,
                send,
                session=self.herd.upstreams.session(backend.base_url),
                base_url=backend.base_url,
                path_qs=path_qs,
                method=scope["method"],
                headers=scope["headers"],
                body=body,
                label=f"llama-server for model {spec.id}",
            )
            return
        await self._serve(scope, receive, send, spec, body, stream=False, path_qs=path_qs)

    async def _models(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(
                send,
                405,
                "/v1/models takes GET",
                "invalid_request_error",
                headers=[(b"allow", b"GET")],
            )
            return
        admin = scope.get(ADMIN_SCOPE_KEY, True)
        await send_json(send, model_listing(self.herd, admin=admin))

    # ---- one request's life ----------------------------------------------------------------

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        spec: ModelSpec,
        body: bytes,
        *,
        stream: bool,
        path_qs: str | None = None,
    ) -> None:
        observer = self.observe(spec.id, scope["path"], stream) if self.observe else None
        started = False
        for attempt in range(RETRIES_ON_REFUSED + 1):
            ticket = self.herd.submit(spec.id)
            try:
                waited = await self._wait(ticket, receive, send, stream=stream, started=started)
                if waited is None:
                    if observer is not None:
                        observer.abandoned()
                    return  # the client left while it waited
                decision, started = waited
                if isinstance(decision, Reject):
                    if observer is not None:
                        observer.refused(decision.status, decision.message)
                    await _refuse(send, decision, started=started)
                    return
                if observer is not None:
                    observer.dispatched()
                backend = self.herd.backends[spec.id]
                outcome = await relay(
                    scope,
                    receive,
                    send,
                    session=self.herd.upstreams.session(backend.base_url),
                    base_url=backend.base_url,
                    path_qs=path_qs or scope["path"] + _query(scope),
                    method=scope["method"],
                    headers=scope["headers"],
                    body=body,
                    started=started,
                    observer=observer,
                    label=f"llama-server for model {spec.id}",
                    hold_refused=attempt < RETRIES_ON_REFUSED,
                )
                if outcome.upstream_failed:
                    # Its server died under it (the client has its 502). The supervisor may not
                    # know yet: until it does, the herd would give this slot to the next queued
                    # request, sending it to the dead server too. Keep the slot until then
                    # (not when the server still answers: one connection was dropped).
                    await self.herd.settle_after_failure(spec.id, REFUSED_SETTLE_S)
            finally:
                self.herd.end(ticket)
            if not outcome.refused:
                return
            # Refused: its server died an instant ago, and the supervisor has not said so
            # yet (a queued request is dispatched the moment the one before it fails).
            # Nothing reached it, so wait for the supervisor to notice, then queue again:
            # a request queued behind a crash waits for the restart instead of failing.
            await self.herd.next_change(spec.id, REFUSED_SETTLE_S)

    async def _wait(
        self, ticket: Ticket, receive: Receive, send: Send, *, stream: bool, started: bool
    ) -> tuple[Dispatch | Reject, bool] | None:
        """The herd's decision, or None if the client left first; and whether an event stream
        was started meanwhile (a stream that waited more than a second)."""
        if ticket.decision.done():  # the usual case on a warm server: no task, no timer
            return ticket.decision.result(), started
        gone = asyncio.ensure_future(until_disconnect(receive))
        began = time.monotonic()
        try:
            while True:
                timeout = HEARTBEAT_S if stream else None
                done, _ = await asyncio.wait(
                    (ticket.decision, gone), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if ticket.decision in done:
                    return ticket.decision.result(), started
                if gone in done:
                    return None
                if not started:
                    await send_sse_start(send)
                    started = True
                note = self._waiting_note(ticket, time.monotonic() - began)
                await send({"type": "http.response.body", "body": note, "more_body": True})
        except OSError:
            return None  # the client's socket broke while we wrote to it
        finally:
            gone.cancel()

    def _waiting_note(self, ticket: Ticket, waited_s: float) -> bytes:
        view = self.herd.view(ticket.model)
        position = self.herd.position(ticket)
        if view.phase in (Phase.LOADING, Phase.UNLOADED, Phase.FAILED) or view.draining:
            what = f"loading {ticket.model}, {waited_s:.1f} s"
        else:
            what = f"queued, position {position}" if position else f"waiting, {waited_s:.1f} s"
        return f": llamaherd: {what}\n\n".encode()

    # ---- helpers ---------------------------------------------------------------------------

    async def read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The request body within the limits, or None once the client has its error."""
        return await self._body(receive, send)

    async def _body(self, receive: Receive, send: Send) -> bytes | None:
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await read_body(receive, self.body_limit)
        except TimeoutError:
            await send_error(
                send,
                408,
                f"the request body did not arrive within {self.body_timeout_s:g} s "
                "(body_timeout_s)",
                "invalid_request_error",
                headers=[(b"connection", b"close")],
            )
        except BodyTooLarge as exc:
            await send_error(
                send,
                413,
                f"the request body is larger than {exc.limit} bytes (max_body_mb)",
                "invalid_request_error",
            )
        except ClientDisconnected:
            pass
        return None

    async def _resolve(self, name: str | None, send: Send) -> ModelSpec | None:
        try:
            return self.herd.registry.resolve(name)
        except UnknownModelError as exc:
            status = 404 if exc.name else 400
            await send_error(
                send, status, str(exc), "invalid_request_error", code="model_not_found"
            )
            return None


async def _refuse(send: Send, decision: Reject, *, started: bool) -> None:
    kind = {429: "rate_limit_error", 404: "invalid_request_error"}.get(
        decision.status, "service_unavailable"
    )
    if started:
        await send_sse_error(send, decision.message, kind, code=decision.status)
        return
    retry = str(max(1, math.ceil(decision.retry_after_s))).encode()
    await send_error(
        send, decision.status, decision.message, kind, headers=[(b"retry-after", retry)]
    )


def _upstream_parts(scope: Scope) -> tuple[str, str]:
    """The model id and the rest of `/upstream/{model}/{rest}`. The rest is taken from the raw
    path, still percent-encoded as the client sent it: decoded, "%0d%0a" would become a line
    break in the request to llama-server, and "%2F" a path separator the client did not send.
    Whatever it holds, it is appended to the model's own base URL (never parsed as a URL), so
    no path, host or scheme in it can point llamaherd anywhere else."""
    raw = scope.get("raw_path") or quote(scope["path"]).encode("latin-1")
    rest = raw.decode("latin-1")[len(UPSTREAM_PREFIX) :]
    name, _, tail = rest.partition("/")
    return unquote(name), tail


def _wrong_type(payload: Any) -> str | None:
    """What is wrong with the types of the fields llamaherd itself reads, if anything. The rest
    of the body is llama-server's to judge."""
    if not isinstance(payload, dict):
        return f"the request body must be a JSON object, not {_json_type(payload)}"
    if "model" in payload and not isinstance(payload["model"], str | None):
        return f'"model" must be a string (a model id), not {_json_type(payload["model"])}'
    if "stream" in payload and not isinstance(payload["stream"], bool | None):
        return f'"stream" must be true or false, not {_json_type(payload["stream"])}'
    return None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def path_with_query(scope: Scope) -> str:
    """The request's path and query string as the client sent them ("/v1/x?a=1")."""
    path: str = scope["path"]
    return path + _query(scope)


async def send_json(send: Send, payload: Any) -> None:
    """A 200 with `payload` as its JSON body."""
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _query(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    return "?" + query.decode("latin-1") if query else ""
