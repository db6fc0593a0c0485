"""The numbers that govern one supervised llama-server: retries, backoff, probes, stop.

This is the one place where their defaults and their bounds are declared: the config file's keys
of the same names take both from here, and a policy built in code is checked against the same
bounds, so a value that would overflow a timer (1e15 ms) is refused before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from llamaherd.supervisor.backoff import Backoff

HOUR_MS = 3_600_000

# Inclusive (low, high) for every field. The upper bounds are far beyond any sensible setting
# and far below anything that overflows a datetime or an event-loop timer.
POLICY_BOUNDS: dict[str, tuple[float, float]] = {
    "max_retries": (0, 100),
    "backoff_initial_ms": (1, HOUR_MS),
    "backoff_max_ms": (1, 24 * HOUR_MS),
    "health_timeout_ms": (1, 10 * 60_000),
    "readiness_initial_ms": (1, HOUR_MS),
    "readiness_interval_ms": (1, HOUR_MS),
    "readiness_max_attempts": (1, 100_000),
    "liveness_interval_ms": (1, HOUR_MS),
    "liveness_failures": (1, 1000),
    "stable_after_s": (0, 7 * 24 * 3600),
    "stop_timeout_s": (0.001, 3600),
    "log_lines": (10, 1_000_000),
}


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

    def __post_init__(self) -> None:
        for field in fields(self):
            low, high = POLICY_BOUNDS[field.name]
            value = getattr(self, field.name)
            if isinstance(value, bool) or not low <= value <= high:
                raise ValueError(
                    f"{field.name} must be between {low:g} and {high:g}, got {value!r}"
                )

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_initial_ms, self.backoff_max_ms, self.max_retries)
