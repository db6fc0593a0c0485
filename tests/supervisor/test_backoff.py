from __future__ import annotations

import pytest

from llamaherd.supervisor.backoff import Backoff, readiness_delays_s
from llamaherd.supervisor.policy import SupervisorPolicy


def test_default_schedule_is_1_2_4_8_16_seconds() -> None:
    assert schedule(SupervisorPolicy().backoff) == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_delays_are_capped() -> None:
    backoff = Backoff(initial_ms=1000, max_ms=30_000, max_retries=8)
    assert schedule(backoff) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        SupervisorPolicy().backoff.delay_s(0)


def test_readiness_polls_fast_then_settles_on_the_interval() -> None:
    delays = readiness_delays_s(50, 1000)
    assert [next(delays) for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert next(readiness_delays_s(5000, 1000)) == 1.0  # never slower than the interval


def schedule(backoff: Backoff) -> list[float]:
    """Every delay, in order: what a crash loop waits before giving up."""
    return [backoff.delay_s(n) for n in range(1, backoff.max_retries + 1)]
