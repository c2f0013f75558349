"""A running job's time limit, which stops while the job is suspended."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..wire.states import JobState

__all__ = ["TimeLimit"]


class TimeLimit:
    """A running job's time limit: it runs while the job is processing and stops
    while the job is suspended; ``expire`` is called once the time is used up.
    Whoever stops the job for it sets ``timed_out``; a cancel while the job stops
    clears it (the job then ends cancelled)."""

    __slots__ = ("seconds", "timed_out", "_loop", "_left", "_since", "_timer", "_expire")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float,
                 expire: Callable[[], None]) -> None:
        self.seconds = seconds
        self.timed_out = False
        self._loop = loop
        self._left = seconds
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._expire = expire

    @property
    def reason(self) -> str:
        """The error line of a job stopped for its limit."""
        return f"Job timed out after {self.seconds:g} s"

    def follow(self, state: JobState) -> None:
        """Run while ``state`` is processing; stop otherwise."""
        if state is not JobState.PROCESSING:
            self.stop()
        elif self._timer is None and self._left > 0:
            self._since = self._loop.time()
            self._timer = self._loop.call_later(self._left, self._fire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._left -= self._loop.time() - self._since

    def _fire(self) -> None:
        self._timer = None
        self._left = 0.0
        self._expire()
