"""How long the store's commits take, in the buckets of a Prometheus histogram.

A commit adds one count to the first bucket its duration fits and to the
sum; a scrape makes the counts cumulative.  Plain numbers, updated on the
event loop after each commit.
"""

from __future__ import annotations

import bisect

__all__ = ["Durations", "COMMIT_BUCKETS_S"]

#: Upper bounds of the buckets, in seconds: from a commit without fsync (well
#: under a millisecond) to a disk that stalls for seconds.
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


class Durations:
    """Counts of durations per bucket (the last one past every bound), and their sum."""

    __slots__ = ("bounds", "counts", "total_s")

    def __init__(self, bounds: tuple[float, ...] = COMMIT_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total_s += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, count at or under it)`` per bucket, ending with infinity."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)
