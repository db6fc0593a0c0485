"""A rolling time window kept as buckets, and the few statistics the live feed takes over it.

Why buckets: the feed reads the window once a second, and at 1,500 requests a second a window
of single entries held 90,000 of them, each read to sum means and sorted for medians: about
47 ms of the event loop every second, per model. Here the window is `BUCKETS` time slices;
each keeps running sums (for the means) and a histogram of its latencies, so a read costs the
same at 1 request a second or 10,000, and a record is a few additions.

Medians are exact while the window holds at most `EXACT_VALUES` values of a kind (each slice
keeps its values until then), and beyond that read from the histograms, whose bins are about
1% wide: a dashboard's "p50 12.3 ms" within a tenth of a millisecond or so.

Entries leave a whole slice at a time: an entry stays between `span_s` and `span_s` plus one
slice (a sixtieth of the span). The moment the window next changes by itself (its oldest slice
leaving) is known without scanning, which lets the feed set one timer instead of polling.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

from llamaherd.stats import percentile

BUCKETS = 60
EXACT_VALUES = 2048  # up to this many values of a kind in the window, medians are exact
_BINS_PER_E = 100  # histogram bins per factor e: neighbouring bins about 1% apart


class Distribution:
    """Values of one kind (latencies, say) in one slice: their count, sum, and either the
    values themselves or, past `EXACT_VALUES`, only their histogram."""

    __slots__ = ("count", "histogram", "total", "values")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.values: list[float] | None = []
        self.histogram: collections.Counter[int] = collections.Counter()

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.histogram[_bin(value)] += 1
        if self.values is not None:
            if len(self.values) < EXACT_VALUES:
                self.values.append(value)
            else:
                self.values = None  # too many to keep: the histogram answers from now


class Slice:
    """What one slice of the window holds: how many requests ended, and their figures."""

    __slots__ = ("figures", "index", "requests")

    def __init__(self, index: int, kinds: int) -> None:
        self.index = index  # its start is index * the slice's width
        self.requests = 0
        self.figures = tuple(Distribution() for _ in range(kinds))


class BucketWindow:
    """The last `span_s` seconds of records, in `BUCKETS` slices; each record carries `kinds`
    optional figures (a latency, a speed...), stamped by the caller's monotonic clock."""

    def __init__(self, span_s: float, kinds: int) -> None:
        if span_s <= 0:
            raise ValueError("a window must span some time")
        self.span_s = span_s
        self.width_s = span_s / BUCKETS
        self._kinds = kinds
        self._slices: collections.deque[Slice] = collections.deque()

    def add(self, at: float, figures: Iterable[float | None]) -> None:
        """One record at `at` (stamps must not go backwards), with one figure of each kind
        (None where it has none)."""
        index = math.floor(at / self.width_s)
        slices = self._slices
        if not slices or slices[-1].index != index:
            slices.append(Slice(index, self._kinds))
        current = slices[-1]
        current.requests += 1
        for distribution, value in zip(current.figures, figures, strict=True):
            if value is not None:
                distribution.add(value)

    def prune(self, now: float) -> None:
        """Forget the slices that ended `span_s` or more before `now`."""
        slices = self._slices
        while slices and self._leaves(slices[0]) <= now:
            slices.popleft()

    def next_expiry(self) -> float | None:
        """When the oldest slice leaves the window; None when it is empty."""
        return self._leaves(self._slices[0]) if self._slices else None

    def requests(self) -> int:
        return sum(s.requests for s in self._slices)

    def mean(self, kind: int) -> float | None:
        count = total = 0.0
        for s in self._slices:
            figures = s.figures[kind]
            count += figures.count
            total += figures.total
        return total / count if count else None

    def percentile(self, kind: int, q: float) -> float | None:
        """The `q`-th percentile (0..100) of one kind's figures: exact while every slice kept
        its values and there are at most EXACT_VALUES of them, else from the histograms."""
        figures = [s.figures[kind] for s in self._slices]
        count = sum(f.count for f in figures)
        if count == 0:
            return None
        if count <= EXACT_VALUES and all(f.values is not None for f in figures):
            return percentile((v for f in figures for v in f.values or ()), q)
        merged: collections.Counter[int] = collections.Counter()
        for f in figures:
            merged.update(f.histogram)
        rank, seen = (count - 1) * q / 100, 0
        for key in sorted(merged):
            seen += merged[key]
            if seen > rank:
                return math.exp((key + 0.5) / _BINS_PER_E)
        return math.exp((max(merged) + 0.5) / _BINS_PER_E)

    def __len__(self) -> int:
        return self.requests()

    def _leaves(self, s: Slice) -> float:
        return (s.index + 1) * self.width_s + self.span_s


def _bin(value: float) -> int:
    # Latencies and speeds are positive; a zero (or less) goes to the lowest bin there is.
    return math.floor(math.log(value) * _BINS_PER_E) if value > 0 else -(2**31)
