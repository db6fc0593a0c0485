"""Schedules of waits: the backoff between automatic restarts (1 s, 2 s, 4 s, 8 s, 16 s by
default), and the readiness poll (quick at first, then every interval)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Built from a SupervisorPolicy, which holds the defaults."""

    initial_ms: int
    max_ms: int
    max_retries: int

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, got {retry}")
        delay_ms: int = min(self.initial_ms * 2 ** (retry - 1), self.max_ms)
        return delay_ms / 1000


def readiness_delays_s(initial_ms: int, interval_ms: int) -> Iterator[float]:
    """initial, doubling, then the interval for ever: 50, 100, 200, 400, 800, 1000, 1000 ms..."""
    delay_ms = min(initial_ms, interval_ms)
    while True:
        yield delay_ms / 1000
        delay_ms = min(delay_ms * 2, interval_ms)
