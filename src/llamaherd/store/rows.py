"""The rows of the history store, the same objects whether they wait in memory or were read
back from the file, and the JSON shape each one takes in `GET /api/history`.

Requests are kept as the `RequestRecord` the gateway published; the other rows are ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from llamaherd.gateway.records import RequestRecord


class StartLike(Protocol):
    """One start of a model's server, as the resource sampler measures it."""

    @property
    def model(self) -> str: ...
    @property
    def at(self) -> float: ...  # unix seconds, when the start ended (ready, crash or error)
    @property
    def load_time_s(self) -> float | None: ...
    @property
    def peak_rss_bytes(self) -> int | None: ...
    @property
    def ok(self) -> bool: ...


class SampleLike(Protocol):
    """One resource sample of a model's server, as the resource sampler publishes it."""

    @property
    def model(self) -> str: ...
    @property
    def rss_bytes(self) -> int | None: ...  # None: not measured (the server is not running)


@dataclass(frozen=True, slots=True)
class TransitionRow:
    model: str
    at: float
    from_status: str
    to_status: str
    reason: str | None
    exit_code: int | None
    signal: str | None

    def payload(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "at": self.at,
            "from": self.from_status,
            "to": self.to_status,
            "reason": self.reason,
            "exitCode": self.exit_code,
            "signal": self.signal,
        }


@dataclass(frozen=True, slots=True)
class StartRow:
    model: str
    at: float
    load_time_s: float | None
    peak_rss_bytes: int | None
    ok: bool

    def payload(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "at": self.at,
            "loadTimeS": self.load_time_s,
            "peakRssBytes": self.peak_rss_bytes,
            "ok": self.ok,
        }


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """One model's figures for one minute: the requests that ended in it, the largest
    resident memory sampled in it."""

    model: str
    minute: int  # unix seconds, a multiple of 60
    requests: int
    errors: int
    by_status: Mapping[str, int]  # "200": n; "none" for requests that ended before an answer
    prompt_tokens: int
    completion_tokens: int
    tokens_per_second: float | None  # mean of llama-server's generation speed
    tps_samples: int  # how many requests that mean is over (to merge two rows exactly)
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    rss_bytes: int | None

    @property
    def at(self) -> float:
        return float(self.minute)

    def payload(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "minute": float(self.minute),
            "requests": self.requests,
            "errors": self.errors,
            "byStatus": dict(self.by_status),
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "tokensPerSecond": self.tokens_per_second,
            "latencyP50Ms": self.latency_p50_ms,
            "latencyP95Ms": self.latency_p95_ms,
            "ttftP50Ms": self.ttft_p50_ms,
            "ttftP95Ms": self.ttft_p95_ms,
            "rssBytes": self.rss_bytes,
        }


def request_payload(record: RequestRecord) -> dict[str, Any]:
    return {
        "model": record.model,
        "endpoint": record.endpoint,
        "status": record.status,
        "at": record.started_at,
        "latencyMs": record.latency_s * 1000,
        "queueWaitMs": record.queue_wait_s * 1000,
        "ttftMs": None if record.ttft_s is None else record.ttft_s * 1000,
        "promptTokens": record.prompt_tokens,
        "completionTokens": record.completion_tokens,
        "tokensPerSecond": record.generation_tps,
        "error": record.error,
    }


Row = TransitionRow | StartRow | MinuteRow | RequestRecord
