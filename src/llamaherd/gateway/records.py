"""What one proxied request was, once it has ended, and the fan-out to whoever keeps count.

A `RequestRecord` is built once per request, after its last byte, and handed to every
subscriber synchronously: the Prometheus counters, the live feed, the history store's batch.
Subscribers must be quick (append to a buffer, bump a counter); slow work goes elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("llamaherd.metrics")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    model: str
    endpoint: str  # the path, e.g. "/v1/chat/completions"
    status: int | None  # what the client was sent; None when it left before any answer
    started_at: float  # unix seconds, when it arrived
    latency_s: float  # arrival to the last byte (or to the refusal)
    queue_wait_s: float  # arrival to dispatch (includes a model load); the whole wait if refused
    ttft_s: float | None  # arrival to the first body byte of a stream
    stream: bool
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tps: float | None = None  # llama-server's own timings, when it reported them
    generation_tps: float | None = None
    error: str | None = None
    client_disconnected: bool = False


RequestSink = Callable[[RequestRecord], None]


class RequestLog:
    """The fan-out of finished requests to their subscribers."""

    def __init__(self) -> None:
        self._sinks: list[RequestSink] = []

    def subscribe(self, sink: RequestSink) -> Callable[[], None]:
        self._sinks.append(sink)
        return lambda: self._sinks.remove(sink) if sink in self._sinks else None

    def publish(self, record: RequestRecord) -> None:
        for sink in list(self._sinks):
            try:
                sink(record)
            except Exception:
                logger.exception("a request subscriber failed; it stays subscribed")
