"""Measuring one request as its answer goes by, without slowing it down.

The relay calls the meter for every chunk it passes on (relay.ChunkObserver). Nothing is
parsed while the answer flows: a stream keeps only its last few kilobytes (llama-server puts
`usage` and `timings` in the last chunk), a plain answer keeps its body up to a limit, and
both are parsed once, after the last byte has gone to the client.

What llama-server reports wins over anything we could count ourselves: `timings` has the
prompt and generation speeds it measured; `usage` (OpenAI) or `tokens_evaluated` and
`tokens_predicted` (its native /completion) have the token counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from llamaherd.gateway.asgi import RawHeaders
from llamaherd.gateway.records import RequestRecord, RequestSink

STREAM_TAIL_BYTES = 16 * 1024  # the last chunk with timings is about 1 KiB
BODY_LIMIT_BYTES = 1024 * 1024  # embeddings of a large batch are not worth parsing whole


class RequestMeter:
    """One request's measurements, from arrival to its last byte (a relay.ChunkObserver)."""

    __slots__ = (
        "_body",
        "_clock",
        "_dispatched",
        "_first_byte",
        "_sink",
        "_status",
        "_stream",
        "_tail_only",
        "arrived",
        "endpoint",
        "model",
        "started_at",
    )

    def __init__(
        self,
        sink: RequestSink,
        model: str,
        endpoint: str,
        *,
        stream: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self.model = model
        self.endpoint = endpoint
        self._stream = stream
        # Only the last few kilobytes are kept: a stream's, or a plain answer's that was too big
        # to keep whole. Apart from `_stream`, which is what the client asked for.
        self._tail_only = stream
        self.arrived = clock()
        self.started_at = time.time()
        self._dispatched: float | None = None
        self._first_byte: float | None = None
        self._status: int | None = None
        self._body = bytearray()

    def dispatched(self) -> None:
        self._dispatched = self._clock()

    # ---- relay.ChunkObserver ---------------------------------------------------------------

    def on_start(self, status: int, headers: RawHeaders) -> None:
        self._status = status

    def on_chunk(self, data: bytes) -> None:
        if self._first_byte is None:
            self._first_byte = self._clock()
        body = self._body
        body += data
        if self._tail_only:
            if len(body) > 2 * STREAM_TAIL_BYTES:
                del body[:-STREAM_TAIL_BYTES]  # amortised: trimmed once per 16 KiB
        elif len(body) > BODY_LIMIT_BYTES:
            del body[:-STREAM_TAIL_BYTES]
            self._tail_only = True  # too big to parse whole: only its tail is kept from now

    def on_end(self, error: str | None) -> None:
        disconnected = error == "client disconnected"
        self._finish(
            self._status,
            error=None if disconnected else error,
            client_disconnected=disconnected,
            counts=_counts(bytes(self._body), tail=self._tail_only) if self._body else {},
        )

    # ---- ends without an upstream answer ---------------------------------------------------

    def refused(self, status: int, message: str) -> None:
        """The gateway answered it itself (429 queue full, 503 timed out or unavailable)."""
        self._finish(status, error=message)

    def abandoned(self) -> None:
        """The client left while it waited for a server."""
        self._finish(None, client_disconnected=True)

    def _finish(
        self,
        status: int | None,
        *,
        error: str | None = None,
        client_disconnected: bool = False,
        counts: dict[str, Any] | None = None,
    ) -> None:
        end = self._clock()
        waited = (self._dispatched if self._dispatched is not None else end) - self.arrived
        ttft = None
        if self._stream and self._first_byte is not None:
            ttft = self._first_byte - self.arrived
        self._sink(
            RequestRecord(
                model=self.model,
                endpoint=self.endpoint,
                status=status,
                started_at=self.started_at,
                latency_s=end - self.arrived,
                queue_wait_s=waited,
                ttft_s=ttft,
                stream=self._stream,
                error=error,
                client_disconnected=client_disconnected,
                **(counts or {}),
            )
        )


def _counts(body: bytes, *, tail: bool) -> dict[str, Any]:
    """Token counts and speeds from an answer: its JSON, or the last reports of a stream. A
    plain answer too big to keep whole has only its tail left, which is no JSON: no counts."""
    payload = _last_report(body) if tail else _json(body)
    if not isinstance(payload, dict):
        return {}
    usage = _dict(payload.get("usage"))
    timings = _dict(payload.get("timings"))
    # timings.prompt_n counts only the tokens evaluated now; those reused from the KV cache
    # (cache_n) were part of the prompt too. usage.prompt_tokens and tokens_evaluated count both.
    prompt_n, cache_n = _int(timings.get("prompt_n")), _int(timings.get("cache_n"))
    from_timings = None if prompt_n is None else prompt_n + (cache_n or 0)
    prompt = _int(usage.get("prompt_tokens"), payload.get("tokens_evaluated"), from_timings)
    completion = _int(
        usage.get("completion_tokens"), payload.get("tokens_predicted"), timings.get("predicted_n")
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tps": _float(timings.get("prompt_per_second")),
        "generation_tps": _float(timings.get("predicted_per_second")),
    }


# What a stream's reports carry: llama-server puts `timings` (and, natively, the token counts)
# in its last chunk; asked for `stream_options.include_usage`, it adds `usage` there too.
_REPORT_KEYS = ("timings", "usage", "tokens_evaluated", "tokens_predicted")
_MARKS = {key: f'"{key}"'.encode() for key in _REPORT_KEYS}


def _last_report(tail: bytes) -> dict[str, Any] | None:
    """The latest value of each report key among a stream's `data:` events, merged: a server
    that sends `usage` in a chunk of its own after the one with `timings` loses neither."""
    merged: dict[str, Any] = {}
    for line in reversed(tail.split(b"\n")):
        if not line.startswith(b"data:") or not any(
            _MARKS[key] in line for key in _REPORT_KEYS if key not in merged
        ):
            continue
        payload = _json(line[5:].strip())
        if not isinstance(payload, dict):
            continue
        for key in _REPORT_KEYS:
            if key not in merged and payload.get(key) is not None:
                merged[key] = payload[key]
        if len(merged) == len(_REPORT_KEYS):
            break
    return merged or None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _int(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
