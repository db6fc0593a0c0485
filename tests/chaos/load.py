"""Load for the fault-injection tests, and an honest account of how every request ended.

`Load` runs several clients, each sending chat completions in a loop (plain and streamed in
turn) until it is stopped. Every request ends as exactly one of:

- succeeded: a 200 with a whole answer: a JSON completion with a message, or an event stream
  whose chunks parse and that ends with `data: [DONE]`;
- failed_clearly: an error a client can act on: an HTTP error status with an OpenAI-style JSON
  body (`{"error": {"message": ...}}`), or, once a stream has begun, one `data: {"error": ...}`
  event that ends it;
- lost: anything else: the connection dropped without an answer, an answer cut short or
  malformed, or no answer within the client's timeout (a timeout is a loss, not an error).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from tests.conftest import sse_lines

Kind = Literal["succeeded", "failed_clearly", "lost"]
KINDS: tuple[Kind, ...] = ("succeeded", "failed_clearly", "lost")
CHAT_PATH = "/v1/chat/completions"
PROMPT = [{"role": "user", "content": "Tell me about llamas."}]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request, from the moment it was sent to the moment it ended (loop time, seconds)."""

    kind: Kind
    stream: bool
    started: float
    ended: float
    status: int | None
    detail: str  # the error's message, or why it counts as lost


class _Verdict(Exception):
    """Internal: how a request ended, raised from wherever that became clear."""

    def __init__(self, kind: Kind, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status
        self.detail = detail


def _error_message(payload: Any) -> str | None:
    """The message of an OpenAI-style error object, or None if `payload` is not one."""
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return None


def classify_plain(status: int, body: bytes) -> tuple[Kind, str]:
    """A whole (non-streamed) answer: a completion, a clear error, or neither."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "lost", f"HTTP {status} with a body that is not JSON: {body[:120]!r}"
    if status == 200:
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0].get("message"), dict):
            return "succeeded", ""
        return "lost", f"HTTP 200 without a completion: {body[:120]!r}"
    message = _error_message(payload)
    if status >= 400 and message is not None:
        return "failed_clearly", f"HTTP {status}: {message}"
    return "lost", f"HTTP {status} without an OpenAI-style error: {body[:120]!r}"


class StreamReader:
    """The events of one streamed answer, fed line by line; `verdict()` once it has ended."""

    def __init__(self) -> None:
        self.chunks = 0
        self.done = False
        self.error: str | None = None
        self.malformed: str | None = None

    def feed(self, line: str) -> None:
        if not line or line.startswith(":"):
            return  # an event boundary, or a comment (llamaherd's "still waiting" notes)
        if self.done or self.error is not None:
            self.malformed = self.malformed or f"data after the end of the stream: {line[:120]}"
            return
        if not line.startswith("data: "):
            self.malformed = self.malformed or f"not an SSE data line: {line[:120]}"
            return
        data = line[len("data: ") :]
        if data == "[DONE]":
            self.done = True
            return
        try:
            payload = json.loads(data)
        except ValueError:
            self.malformed = self.malformed or f"an event that is not JSON: {data[:120]}"
            return
        message = _error_message(payload)
        if message is not None:
            self.error = message
        elif isinstance(payload, dict) and isinstance(payload.get("choices"), list):
            self.chunks += 1
        else:
            self.malformed = self.malformed or f"an event without choices: {data[:120]}"

    def verdict(self) -> tuple[Kind, str]:
        if self.malformed is not None:
            return "lost", self.malformed
        if self.error is not None:
            return "failed_clearly", f"stream error event: {self.error}"
        if self.done and self.chunks:
            return "succeeded", ""
        return "lost", f"the stream ended without [DONE] or an error ({self.chunks} chunks)"


@dataclass
class Load:
    """`clients` loops of chat completions against `url` for `model`, until `stop()`.

    Every request has `timeout_s` to end, all of it (connect, wait, every chunk); past that it
    is cancelled and counted as lost."""

    url: str
    model: str
    clients: int = 4
    timeout_s: float = 30.0
    max_tokens: int = 12
    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: int = 0
    _halted: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Load:
        self._client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(None),  # the whole request's deadline is asyncio.timeout's
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )
        self._tasks = [
            asyncio.create_task(self._client_loop(n), name=f"chaos-client-{n}")
            for n in range(self.clients)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def halt(self) -> None:
        """Send no new request; those in flight go on."""
        self._halted = True

    async def stop(self) -> None:
        """Halt, and wait for every request in flight to end (each within its timeout)."""
        self.halt()
        if self._tasks:
            async with asyncio.timeout(self.timeout_s + 10):
                await asyncio.gather(*self._tasks)
            self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ---- what happened ---------------------------------------------------------------------

    @property
    def sent(self) -> int:
        return len(self.outcomes) + self.in_flight

    def count(self, kind: Kind) -> int:
        return sum(1 for outcome in self.outcomes if outcome.kind == kind)

    def figures(self) -> dict[str, int]:
        """sent / succeeded / failed_clearly / lost, for the figures table."""
        return {"sent": self.sent, **{kind: self.count(kind) for kind in KINDS}}

    def details(self, kind: Kind, most: int = 5) -> list[str]:
        """What the first `most` requests of `kind` said (for assertion messages)."""
        return [o.detail for o in self.outcomes if o.kind == kind][:most]

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float = 30.0
    ) -> None:
        """Until `predicate()` holds, re-checked whenever a request ends."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout} s waiting until {what}; so far {self.figures()}"
            ) from None

    def first_success_sent_after(self, moment: float) -> Outcome | None:
        """The first request sent at or after `moment` (loop time) to succeed, by its end."""
        ok = [o for o in self.outcomes if o.kind == "succeeded" and o.started >= moment]
        return min(ok, key=lambda o: o.ended, default=None)

    async def next_success(self, after: float, timeout: float = 30.0) -> Outcome:
        """Wait for a request sent at or after `after` to succeed; the first that did."""
        await self.wait_for(
            lambda: self.first_success_sent_after(after) is not None,
            "a request sent after the fault succeeds",
            timeout,
        )
        found = self.first_success_sent_after(after)
        assert found is not None
        return found

    async def successes(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` more requests than now have succeeded."""
        target = self.count("succeeded") + count
        await self.wait_for(
            lambda: self.count("succeeded") >= target, f"{count} more successes", timeout
        )

    # ---- the clients -----------------------------------------------------------------------

    async def _client_loop(self, number: int) -> None:
        sent = 0
        while not self._halted:
            stream = (number + sent) % 2 == 1
            sent += 1
            await self._one(stream)

    async def _one(self, stream: bool) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                kind, status, detail = await self._exchange(stream)
        except TimeoutError:
            kind, status, detail = "lost", None, f"no answer within {self.timeout_s} s"
        except httpx.HTTPError as exc:
            kind, status, detail = "lost", None, f"{type(exc).__name__}: {exc}"
        finally:
            self.in_flight -= 1
        self.outcomes.append(Outcome(kind, stream, started, loop.time(), status, detail))
        self._changed.set()

    async def _exchange(self, stream: bool) -> tuple[Kind, int | None, str]:
        assert self._client is not None
        body: dict[str, Any] = {
            "model": self.model,
            "messages": PROMPT,
            "max_tokens": self.max_tokens,
            "stream": stream,
        }
        if not stream:
            answer = await self._client.post(CHAT_PATH, json=body)
            kind, detail = classify_plain(answer.status_code, answer.content)
            return kind, answer.status_code, detail
        async with self._client.stream("POST", CHAT_PATH, json=body) as answer:
            if answer.status_code != 200:
                kind, detail = classify_plain(answer.status_code, await answer.aread())
                return kind, answer.status_code, detail
            reader = StreamReader()
            async for line in sse_lines(answer):
                reader.feed(line)
            kind, detail = reader.verdict()
            return kind, answer.status_code, detail
