"""The decisions: which events a state change raises, and which of them may go out now.

Both are pure: they take the time as an argument and keep only what they need to remember, so
tests feed them snapshots and times without any process or clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from llamaherd.supervisor.states import ServiceState, Status

Event = Literal["error", "crash_loop", "recovered"]


@dataclass(slots=True)
class _Watch:
    """What the rules remember about one model."""

    status: Status
    crashes: deque[float]  # times of the latest transitions into `crashed` (at most N)
    looping: bool = False  # crash_loop was raised for the loop going on now
    alerted: bool = False  # error or crash_loop was raised and the model has not been ready since


class AlertRules:
    """Which events one state change raises, from the model's history and the time.

    - `error`: the state becomes `error`.
    - `crash_loop`: `crashes` transitions into `crashed` within `within_s`; once per loop. A
      loop is over when a whole window passes without a crash, or when the model is ready
      with no retries counted (the supervisor resets them once a server has stayed ready for
      its stable_after_s, and a manual start begins at zero).
    - `recovered`: a model that raised `error` or `crash_loop` becomes ready again.
    """

    def __init__(self, crashes: int, within_s: float) -> None:
        self.crashes = crashes
        self.within_s = within_s
        self._watches: dict[str, _Watch] = {}

    def track(self, model: str, status: Status) -> None:
        """Start following `model`, now in `status`."""
        self._watches[model] = _Watch(status, deque(maxlen=self.crashes))

    def observe(self, model: str, state: ServiceState, now: float) -> list[Event]:
        if model not in self._watches:
            self.track(model, Status.INITIAL)
        watch = self._watches[model]
        old, new = watch.status, state.status
        watch.status = new
        if new is Status.CRASHED and old is not Status.CRASHED:
            return ["crash_loop"] if self._crashed(watch, now) else []
        if new is Status.ERROR and old is not Status.ERROR:
            watch.alerted = True
            return ["error"]
        if new is Status.READY:
            if state.retries == 0:
                watch.crashes.clear()
                watch.looping = False
            if old is not Status.READY and watch.alerted:
                watch.alerted = False
                return ["recovered"]
        return []

    def _crashed(self, watch: _Watch, now: float) -> bool:
        crashes = watch.crashes
        while crashes and now - crashes[0] >= self.within_s:
            crashes.popleft()
        if not crashes:
            watch.looping = False  # a whole window without a crash: any loop is over
        crashes.append(now)
        if watch.looping or len(crashes) < self.crashes:
            return False
        watch.looping = watch.alerted = True
        return True


class RateLimit:
    """At most one alert per (model, event) every `min_interval_s`; counts the ones it holds
    back, so that the next one sent can say how many there were."""

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self.suppressed_total = 0
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def admit(self, key: tuple[str, str], now: float) -> int | None:
        """None if this one must not go out; else how many were held back before it."""
        last = self._last.get(key)
        if last is not None and now - last < self.min_interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            self.suppressed_total += 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
