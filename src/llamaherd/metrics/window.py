"""A rolling time window, and the few statistics the live feed takes over it.

Entries are appended in time order, so the oldest is always first: pruning is popping from the
left, and the moment the window next changes by itself (its oldest entry leaving) is known
without scanning. That moment is what lets the feed set one timer instead of polling.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RollingWindow(Generic[T]):
    """The entries of the last `span_s` seconds, stamped by the caller's clock."""

    def __init__(self, span_s: float) -> None:
        if span_s <= 0:
            raise ValueError("a window must span some time")
        self.span_s = span_s
        self._entries: collections.deque[tuple[float, T]] = collections.deque()

    def add(self, at: float, entry: T) -> None:
        """Add `entry`, stamped `at`; stamps must not go backwards (a monotonic clock)."""
        self._entries.append((at, entry))

    def prune(self, now: float) -> None:
        """Forget what is older than `span_s` at `now`."""
        entries, oldest_kept = self._entries, now - self.span_s
        while entries and entries[0][0] <= oldest_kept:
            entries.popleft()

    def next_expiry(self) -> float | None:
        """When the oldest entry leaves the window; None when it is empty."""
        return self._entries[0][0] + self.span_s if self._entries else None

    def __iter__(self) -> Iterator[T]:
        return (entry for _, entry in self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def mean(values: Iterable[float]) -> float | None:
    total, count = 0.0, 0
    for value in values:
        total += value
        count += 1
    return total / count if count else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """The `q`-th percentile (0..100), interpolated between the nearest ranks; None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
