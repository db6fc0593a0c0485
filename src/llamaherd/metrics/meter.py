"""Measuring one request as its answer goes by, without slowing it down.

The relay calls the meter for every chunk it passes on (proxy.ChunkObserver). Nothing is
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

from llamaherd.gateway.proxy import RawHeaders
from llamaherd.metrics.records import RequestRecord, RequestSink

STREAM_TAIL_BYTES = 16 * 1024  # the last chunk with timings is about 1 KiB
BODY_LIMIT_BYTES = 1024 * 1024  # embeddings of a large batch are not worth parsing whole


class RequestMeter:
    """One request's measurements, from arrival to its last byte (a proxy.ChunkObserver)."""

    __slots__ = (
        "_body",
        "_clock",
        "_dispatched",
        "_first_byte",
        "_sink",
        "_status",
        "_stream",
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
        self.arrived = clock()
        self.started_at = time.time()
        self._dispatched: float | None = None
        self._first_byte: float | None = None
        self._status: int | None = None
        self._body = bytearray()

    def dispatched(self) -> None:
        self._dispatched = self._clock()

    # ---- proxy.ChunkObserver ---------------------------------------------------------------

    def on_start(self, status: int, headers: RawHeaders) -> None:
        self._status = status

    def on_chunk(self, data: bytes) -> None:
        if self._first_byte is None:
            self._first_byte = self._clock()
        body = self._body
        body += data
        if self._stream:
            if len(body) > 2 * STREAM_TAIL_BYTES:
                del body[:-STREAM_TAIL_BYTES]  # amortised: trimmed once per 16 KiB
        elif len(body) > BODY_LIMIT_BYTES:
            body.clear()
            self._stream = True  # too big to parse whole: treat its tail like a stream's

    def on_end(self, error: str | None) -> None:
        disconnected = error == "client disconnected"
        self._finish(
            self._status,
            error=None if disconnected else error,
            client_disconnected=disconnected,
            counts=_counts(bytes(self._body), stream=self._stream) if self._body else {},
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


def _counts(body: bytes, *, stream: bool) -> dict[str, Any]:
    """Token counts and speeds from an answer: its JSON, or its stream's last report."""
    payload = _last_report(body) if stream else _json(body)
    if not isinstance(payload, dict):
        return {}
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    timings = payload.get("timings") if isinstance(payload.get("timings"), dict) else {}
    assert isinstance(usage, dict) and isinstance(timings, dict)
    prompt = _int(
        usage.get("prompt_tokens"), payload.get("tokens_evaluated"), timings.get("prompt_n")
    )
    completion = _int(
        usage.get("completion_tokens"), payload.get("tokens_predicted"), timings.get("predicted_n")
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tps": _float(timings.get("prompt_per_second")),
        "generation_tps": _float(timings.get("predicted_per_second")),
    }


def _last_report(tail: bytes) -> Any:
    """The last `data:` event of a stream that carries `timings` or `usage`."""
    for line in reversed(tail.split(b"\n")):
        if not line.startswith(b"data:") or (b'"timings"' not in line and b'"usage"' not in line):
            continue
        payload = _json(line[5:].strip())
        if isinstance(payload, dict):
            return payload
    return None


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
