"""The hot path: relay one request to a llama-server, and its answer back as it arrives.

Why it is built this way:
- aiohttp upstream, one `ClientSession` (one connection pool) per llama-server base URL, kept
  for the server's life (gateway/upstreams.py).
- Pure ASGI: `relay` takes `scope, receive, send` and sends ASGI messages itself, with no
  framework Request/Response objects or middleware between the two sockets.
- Nothing is buffered: each piece aiohttp reads from the socket is sent on at once with
  `more_body=True`, and uvicorn writes it out inside `send()`. Bytes pass unchanged (no
  decompression), so the upstream's Content-Length and Content-Encoding stay true.
- llama-server stops generating, and frees its slot, only when its socket closes. So a client
  that leaves (`http.disconnect` from `receive()`, or `send()` raising) makes us close the
  upstream connection at once, rather than read the answer to its end for nobody.
- Every wait ends: an upstream read ends when its socket closes (a crashed or killed server; a
  hung one is killed by the supervisor's liveness probe), a client's wait when it leaves.
  There is no read timeout by default: a non-streaming answer arrives only when the whole
  generation is done, which can take minutes on a CPU.

Errors the client sees are OpenAI-shaped: `{"error": {"message", "type", "code"}}`; once an
event stream has started, one `data: {"error": ...}` event ends it instead.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from llamaherd.gateway.asgi import Message, RawHeaders, Receive, Scope, Send, until_disconnect
from llamaherd.gateway.headers import downstream_headers, is_event_stream, upstream_headers
from llamaherd.gateway.replies import send_error, send_sse_error
from llamaherd.gateway.upstreams import UPSTREAM_ERRORS, describe_failure

# How much of a failed upstream answer is read to quote its error in a started stream.
ERROR_BODY_LIMIT = 64 * 1024
DEFAULT_LABEL = "llama-server"
STREAM_DONE = b"data: [DONE]\n\n"  # the last event of an OpenAI-style stream
UPSTREAM_ERROR = "upstream_error"


class _ClientGone(Exception):
    """send() failed: the client's socket is gone. Internal; never escapes relay()."""


class ChunkObserver(Protocol):
    """Sees a relayed answer go by, for measurements. Called on the hot path, in order:
    `on_start` at most once (when the upstream's answer starts to be relayed; not for a
    refusal turned into an error event), `on_chunk` for every body piece passed on, then
    `on_end` exactly once. Each must be quick and must not raise."""

    def on_start(self, status: int, headers: RawHeaders) -> None: ...

    def on_chunk(self, data: bytes) -> None: ...

    def on_end(self, error: str | None) -> None:
        """`error` is None only when the whole answer reached the client."""


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """What happened to one relayed request, for the scheduler and the metrics."""

    # The status the client was sent: the upstream's, 502, 200 for a stream the caller had
    # already started, or None when the client left before anything was sent.
    status: int | None
    upstream_status: int | None  # None when the upstream never answered
    body_bytes: int  # bytes of the upstream's body passed to the client
    chunks: int  # pieces those bytes arrived in
    client_disconnected: bool
    error: str | None  # why the answer was cut short or replaced; None otherwise
    # `hold_refused` was given and the upstream refused the connection: nothing reached the
    # upstream and nothing was sent to the client, so the request can be tried again.
    refused: bool = False
    # The upstream failed on the connection (it died, closed it, or stopped answering): the
    # caller may wait for its supervisor to notice before giving its slot to the next request.
    upstream_failed: bool = False
    # `hold_statuses` was given and the upstream answered one of them: nothing was sent to the
    # client; the answer is here (status, headers, body) for a caller that tries elsewhere
    # first and sends it only if nothing else serves.
    held: tuple[int, RawHeaders, bytes] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.client_disconnected


def upstream_error_fields(
    payload: bytes, status: int, who: str
) -> tuple[str, str, str | int | None]:
    """Message, type and code of a non-2xx upstream answer: its own OpenAI-style error when
    it sent one (llama-server does), else its status and the start of its body."""
    try:
        error = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type")
        code = error.get("code", status)
        return (
            error["message"],
            kind if isinstance(kind, str) else UPSTREAM_ERROR,
            code if isinstance(code, str | int) else status,
        )
    text = payload[:200].decode("utf-8", "replace")
    return f"{who} answered HTTP {status}: {text}", UPSTREAM_ERROR, status


class _Relay:
    """The state of one relayed request; `run` is the work that a client disconnect cancels."""

    def __init__(
        self,
        send: Send,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        label: str,
        observer: ChunkObserver | None,
        started: bool,
        hold_refused: bool = False,
        hold_statuses: frozenset[int] = frozenset(),
    ) -> None:
        self.asgi_send = send
        self.hold_refused = hold_refused
        self.hold_statuses = hold_statuses
        self.held: tuple[int, RawHeaders, bytes] | None = None
        self.refused = False
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.who = f"{label} at {self.base_url}"
        self.observer = observer
        self.started = started
        self.status: int | None = 200 if started else None
        self.upstream_status: int | None = None
        self.event_stream = started
        self.body_bytes = 0
        self.chunks = 0
        self.last_chunk = b""
        self.error: str | None = None
        self.upstream_failed = False
        self.client_disconnected = False
        # Set just before the final send: from then on a disconnect notice is only the
        # server telling us the response is complete.
        self.finishing = False
        self.over = False  # the exchange has returned: nothing is left to cancel

    def outcome(self) -> RelayOutcome:
        return RelayOutcome(
            status=self.status,
            upstream_status=self.upstream_status,
            body_bytes=self.body_bytes,
            chunks=self.chunks,
            client_disconnected=self.client_disconnected,
            error=self.error,
            refused=self.refused,
            upstream_failed=self.upstream_failed,
            held=self.held,
        )

    async def send(self, message: Message) -> None:
        try:
            await self.asgi_send(message)
        except OSError as exc:  # uvicorn's ClientDisconnected is an OSError
            raise _ClientGone from exc

    async def run(self, method: str, path_qs: str, headers: RawHeaders, body: bytes) -> None:
        try:
            await self._exchange(method, path_qs, headers, body)
        except _ClientGone:
            self.client_disconnected = True

    async def _exchange(self, method: str, path_qs: str, headers: RawHeaders, body: bytes) -> None:
        if self.session.closed:  # Upstreams.forget() ran: the server stopped
            if self._hold("is no longer served (its session was closed)"):
                return
            await self._upstream_failed("is no longer served (its session was closed)")
            return
        try:
            resp = await self.session.request(
                method,
                URL(self.base_url + path_qs, encoded=True),
                headers=upstream_headers(headers),
                data=body or None,
                allow_redirects=False,
            )
        except UPSTREAM_ERRORS as exc:
            cause = describe_failure(exc, answering=False)
            if isinstance(exc, aiohttp.ClientConnectorError) and self._hold(cause):
                return
            await self._upstream_failed(cause)
            return
        self.upstream_status = resp.status
        if resp.status in self.hold_statuses:
            try:
                data = await resp.read()
            except UPSTREAM_ERRORS:
                data = b""
            resp.release()
            headers = [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
            ]
            self.held = (resp.status, headers, data)
            return
        try:
            if self.started:
                await self._into_started_stream(resp)
            else:
                await self._pass_through(resp)
        except UPSTREAM_ERRORS as exc:
            resp.close()
            await self._upstream_failed(describe_failure(exc, answering=True))
        except BaseException:
            # The client left (cancelled, or _ClientGone): closing the socket is what makes
            # llama-server stop generating and free the slot.
            resp.close()
            raise
        else:
            resp.release()

    async def _pass_through(self, resp: aiohttp.ClientResponse) -> None:
        self.event_stream = is_event_stream(resp.headers.get("Content-Type"))
        headers = downstream_headers(resp.raw_headers, event_stream=self.event_stream)
        if self.observer is not None:
            self.observer.on_start(resp.status, headers)
        await self.send({"type": "http.response.start", "status": resp.status, "headers": headers})
        self.status = resp.status
        await self._stream_body(resp.content)

    async def _into_started_stream(self, resp: aiohttp.ClientResponse) -> None:
        """The client already has a 200 event stream: relay a good answer's body, or turn a
        refusal into one error event."""
        if not 200 <= resp.status < 300:
            payload = await _read_limited(resp.content, ERROR_BODY_LIMIT)
            message, kind, code = upstream_error_fields(payload, resp.status, self.who)
            self.error = message
            self.finishing = True
            await send_sse_error(self.send, message, kind, code=code)
            return
        if self.observer is not None:
            headers = downstream_headers(resp.raw_headers, event_stream=True)
            self.observer.on_start(resp.status, headers)
        await self._stream_body(resp.content)

    async def _stream_body(self, content: aiohttp.StreamReader) -> None:
        send = self.send
        observer = self.observer
        while True:
            # readany() is what iter_any() awaits: whatever has arrived, as soon as it has.
            data = await content.readany()
            if not data:
                self.finishing = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            # Everything buffered was just taken; at EOF this piece is the last, and one
            # message both carries it and ends the body.
            last = content.is_eof()
            self.body_bytes += len(data)
            self.chunks += 1
            self.last_chunk = data
            if observer is not None:
                observer.on_chunk(data)
            self.finishing = last
            await send({"type": "http.response.body", "body": data, "more_body": not last})
            if last:
                return

    def _hold(self, cause: str) -> bool:
        """A refused connection, when the caller would rather try again than answer 502."""
        if not self.hold_refused:
            return False
        self.refused = True
        self.error = f"{self.who} {cause}"
        return True

    async def _upstream_failed(self, cause: str) -> None:
        self.upstream_failed = True
        self.error = f"{self.who} {cause}"
        if self.status is None:
            self.status = 502
            self.finishing = True
            await send_error(self.send, 502, self.error, UPSTREAM_ERROR, code=502)
        elif self.event_stream:
            if self.last_chunk.endswith(STREAM_DONE):
                # The answer is whole: its last event is through, and only the end of the
                # chunked body was lost (a server killed or hung right after writing [DONE]).
                # An error event after [DONE] would contradict it, and a client that reads
                # on would take a complete answer for a broken one.
                self.error = None
                self.finishing = True
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            # End a half-sent event first, so the error is an event of its own.
            if self.last_chunk and not self.last_chunk.endswith(b"\n\n"):
                await self.send({"type": "http.response.body", "body": b"\n\n", "more_body": True})
            self.finishing = True
            await send_sse_error(self.send, self.error, UPSTREAM_ERROR, code=502)
        # Else a plain answer was cut short. Ending its body would pass the truncated answer
        # off as complete; left unfinished, the server closes the connection and the client
        # sees the answer fail (the one way HTTP/1.1 has to say so).


async def _read_limited(content: aiohttp.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit and (data := await content.readany()):
        parts.append(data)
        size += len(data)
    return b"".join(parts)[:limit]


async def relay(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    session: aiohttp.ClientSession,
    base_url: str,
    path_qs: str,
    method: str,
    headers: RawHeaders,
    body: bytes,
    observer: ChunkObserver | None = None,
    started: bool = False,
    label: str = DEFAULT_LABEL,
    hold_refused: bool = False,
    hold_statuses: frozenset[int] = frozenset(),
) -> RelayOutcome:
    """Send `method path_qs` with `headers` and `body` to `base_url`, and stream the answer
    to the client as it arrives. Call it after the request body was read (`read_body`).

    `path_qs` is the path with its query string, as the client sent it ("/v1/x?a=1"): it is
    not re-encoded. `started`: the caller already sent a 200 event-stream start (see
    `send_sse_start`), so only the body is relayed, and a non-2xx answer becomes one SSE error
    event. `label` names the upstream in error messages ("llama-server for model qwen").
    `scope` is the client's ASGI scope, for the route's sake; the relay needs nothing from it.
    `hold_refused`: a refused connection is not answered 502 but returned as
    `outcome.refused`, for a caller that will try again (nothing reached the upstream).
    `hold_statuses`: an answer with one of these statuses (a peer's 429 or 503, given before
    any byte of an answer) is not relayed but returned as `outcome.held`.

    Never raises for an upstream failure or a client that left: see `RelayOutcome`.
    """
    state = _Relay(
        send,
        session,
        base_url=base_url,
        label=label,
        observer=observer,
        started=started,
        hold_refused=hold_refused,
        hold_statuses=hold_statuses,
    )
    # The exchange runs in this task; one watcher task waits for the client to leave and then
    # cancels it (a second task for the exchange, and asyncio.wait over both, cost more per
    # request than the whole scheduler).
    current = asyncio.current_task()
    assert current is not None
    cut = False

    def client_left(watcher: asyncio.Task[None]) -> None:
        nonlocal cut
        if watcher.cancelled():
            return
        watcher.exception()  # retrieved, so asyncio does not log it as forgotten
        # The client left, unless the response was complete (after which uvicorn's receive()
        # reports a disconnect too) and the exchange is only finishing up.
        if not state.finishing and not state.over:
            state.client_disconnected = cut = True
            current.cancel()

    watcher = asyncio.create_task(until_disconnect(receive))
    watcher.add_done_callback(client_left)
    try:
        await state.run(method, path_qs, headers, body)
    except asyncio.CancelledError:
        # Ours (the client left) is taken back; any other cancellation goes on.
        if not cut or current.uncancel() > 0:
            raise
    finally:
        state.over = True
        watcher.remove_done_callback(client_left)
        watcher.cancel()
    outcome = state.outcome()
    if observer is not None and not outcome.refused:
        end_error = outcome.error
        if end_error is None and outcome.client_disconnected:
            end_error = "client disconnected"
        observer.on_end(end_error)
    return outcome
