"""Per-minute figures, as pure functions: the open minute's raw values, the row they make, and
how two rows of the same model and minute merge.

A request counts in the minute it ended (when the gateway published it), so a minute, once
past, receives nothing more and can be written once. Two rows of one minute meet only when
llamaherd restarts within that minute (the row written at shutdown, then the new process's),
or when the wall clock steps back. Counts and sums add; the mean speed is weighted by its
samples; a percentile keeps the larger of the two, an upper bound (exact when one process
saw the whole minute); the memory keeps its maximum.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from llamaherd.gateway.records import RequestRecord
from llamaherd.stats import percentile
from llamaherd.store.rows import MinuteRow

_N = TypeVar("_N", int, float)

NO_ANSWER = "none"  # the status key of requests whose client left before any answer


def minute_of(at: float) -> int:
    return int(math.floor(at / 60) * 60)


def is_error(record: RequestRecord) -> bool:
    return record.error is not None or record.status is None or record.status >= 400


@dataclass
class MinuteBucket:
    """The raw values of one model's open minute."""

    model: str
    minute: int
    requests: int = 0
    errors: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    speeds: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)
    rss_bytes: int | None = None

    def add_request(self, record: RequestRecord) -> None:
        self.requests += 1
        self.errors += is_error(record)
        self.by_status[NO_ANSWER if record.status is None else str(record.status)] += 1
        self.prompt_tokens += record.prompt_tokens or 0
        self.completion_tokens += record.completion_tokens or 0
        if record.generation_tps is not None:
            self.speeds.append(record.generation_tps)
        self.latencies_ms.append(record.latency_s * 1000)
        if record.ttft_s is not None:
            self.ttfts_ms.append(record.ttft_s * 1000)

    def add_memory(self, rss_bytes: int) -> None:
        self.rss_bytes = _larger(self.rss_bytes, rss_bytes)

    def row(self) -> MinuteRow:
        return MinuteRow(
            model=self.model,
            minute=self.minute,
            requests=self.requests,
            errors=self.errors,
            by_status=dict(self.by_status),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            tokens_per_second=sum(self.speeds) / len(self.speeds) if self.speeds else None,
            tps_samples=len(self.speeds),
            latency_p50_ms=percentile(self.latencies_ms, 50),
            latency_p95_ms=percentile(self.latencies_ms, 95),
            ttft_p50_ms=percentile(self.ttfts_ms, 50),
            ttft_p95_ms=percentile(self.ttfts_ms, 95),
            rss_bytes=self.rss_bytes,
        )


def merge_minutes(a: MinuteRow, b: MinuteRow) -> MinuteRow:
    """One row for the same model and minute seen twice (see the module's docstring)."""
    samples = a.tps_samples + b.tps_samples
    speed = None
    if samples:
        total = (a.tokens_per_second or 0) * a.tps_samples
        total += (b.tokens_per_second or 0) * b.tps_samples
        speed = total / samples
    return MinuteRow(
        model=a.model,
        minute=a.minute,
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        by_status=dict(Counter(a.by_status) + Counter(b.by_status)),
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        tokens_per_second=speed,
        tps_samples=samples,
        latency_p50_ms=_larger(a.latency_p50_ms, b.latency_p50_ms),
        latency_p95_ms=_larger(a.latency_p95_ms, b.latency_p95_ms),
        ttft_p50_ms=_larger(a.ttft_p50_ms, b.ttft_p50_ms),
        ttft_p95_ms=_larger(a.ttft_p95_ms, b.ttft_p95_ms),
        rss_bytes=_larger(a.rss_bytes, b.rss_bytes),
    )


def _larger(a: _N | None, b: _N | None) -> _N | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
