"""The numbers that govern one supervised llama-server: retries, backoff, probes, stop."""

from __future__ import annotations

from dataclasses import dataclass

from llamaherd.supervisor.backoff import Backoff


@dataclass(frozen=True, slots=True)
class SupervisorPolicy:
    max_retries: int = 5
    backoff_initial_ms: int = 1000
    backoff_max_ms: int = 30_000
    health_timeout_ms: int = 5000
    readiness_initial_ms: int = 50  # first poll delay, doubling up to readiness_interval_ms
    readiness_interval_ms: int = 1000
    readiness_max_attempts: int = 60
    liveness_interval_ms: int = 5000
    liveness_failures: int = 3  # consecutive failed probes that make a ready server "hung"
    stable_after_s: float = 60.0  # ready this long resets the retry count
    stop_timeout_s: float = 5.0  # SIGTERM, then SIGKILL after this
    log_lines: int = 2000

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_initial_ms, self.backoff_max_ms, self.max_retries)
