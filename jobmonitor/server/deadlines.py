"""Coarse deadlines for many connections: one loop timer per tick, not one each.

Every connection gets a deadline when it opens (the idle and packet limits)
that is cancelled a moment later, when its packet arrives: tens of thousands
a second under load.  A loop timer each is dear for that (uvloop makes, starts,
stops and closes a libuv handle for every one: about a tenth of a tiny job's
time).  Here a deadline joins the bucket of the tick it falls in; a bucket
has one loop timer, made when its first deadline comes; setting and
cancelling a deadline is a set add and discard.  A deadline fires up to one
tick late.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

__all__ = ["Deadlines"]


class Deadlines:
    """Deadlines rounded up to the next multiple of ``tick_s`` of the loop's clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float) -> None:
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        self._loop = loop
        self._tick_s = tick_s
        self._buckets: dict[int, set[Callable[[], None]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, when: float, callback: Callable[[], None]) -> int:
        """Call ``callback`` once at loop time ``when`` (or up to a tick later);
        return the key that ``discard`` needs.  The same callback twice in one
        tick is called once."""
        key = math.ceil(when / self._tick_s)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            self._timers[key] = self._loop.call_at(key * self._tick_s, self._fire, key)
        bucket.add(callback)
        return key

    def discard(self, key: int, callback: Callable[[], None]) -> None:
        """Forget a deadline (gone already: nothing happens).  Its bucket's timer
        stays: it fires into an empty or smaller bucket."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(callback)

    def __len__(self) -> int:
        """How many deadlines are waiting."""
        return sum(len(bucket) for bucket in self._buckets.values())

    def close(self) -> None:
        """Forget every deadline and stop every timer."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._buckets.clear()

    def _fire(self, key: int) -> None:
        self._timers.pop(key, None)
        for callback in self._buckets.pop(key, ()):
            callback()
