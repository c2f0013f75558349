"""A run's time limit: it counts down while the job runs and stands still while
it is suspended.

One limit serves every handler, program projects included: ``Run`` starts it
when the job starts or is resumed, and stops it when the job pauses or its run
ends.  What the job is then told (``Job timed out after 60 s``, or a program's
``make timed out after 60 s``) is the run's business, not the timer's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["TimeLimit"]


class TimeLimit:
    """``seconds`` of running time; ``expire`` is called (once, on ``loop``) when
    they are used up."""

    __slots__ = ("seconds", "_loop", "_left", "_since", "_timer", "_expire")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float,
                 expire: Callable[[], None]) -> None:
        self.seconds = seconds
        self._loop = loop
        self._left = seconds
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._expire = expire

    @property
    def running(self) -> bool:
        """True while the time counts down."""
        return self._timer is not None

    @property
    def left_s(self) -> float:
        """Seconds of running time left (0 once expired)."""
        if self._timer is None:
            return max(self._left, 0.0)
        return max(self._left - (self._loop.time() - self._since), 0.0)

    def start(self) -> None:
        """Count down (again); nothing if it already does or has expired."""
        if self._timer is None and self._left > 0:
            self._since = self._loop.time()
            self._timer = self._loop.call_later(self._left, self._fire)

    def stop(self) -> None:
        """Stand still, keeping what is left; nothing if it already does."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._left -= self._loop.time() - self._since

    def _fire(self) -> None:
        self._timer = None
        self._left = 0.0
        self._expire()
