"""A clock the tests move by hand, for due times and schedules (``engine.schedule.Clock``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable


class _Timer:
    def __init__(self, clock: ManualClock, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False
        self._clock = clock

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Starts at ``start`` (a UTC time) and moves only by ``advance``, which calls
    the timers whose time has come, earliest first."""

    def __init__(self, start: str = "2026-01-01T00:00:00+00:00") -> None:
        self.now = dt.datetime.fromisoformat(start).timestamp()
        self._timers: list[_Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self, when, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move on ``seconds``, calling each timer due by then (a timer set by one
        of them for a time already reached is called too)."""
        target = self.now + seconds
        while True:
            due = [t for t in self._timers if not t.cancelled and t.when <= target]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self._timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = target
        self._timers = [t for t in self._timers if not t.cancelled]

    @property
    def pending(self) -> int:
        """Timers waiting (not cancelled)."""
        return sum(1 for t in self._timers if not t.cancelled)

    def iso(self, offset_s: float = 0) -> str:
        """The time ``offset_s`` from now, as ``_sys_RunAt`` takes it."""
        when = dt.datetime.fromtimestamp(self.now + offset_s, dt.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
