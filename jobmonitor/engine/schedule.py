"""Time: jobs waiting for their due time, and recurring schedules.

``DueJobs`` holds the ``Created`` jobs (``_sys_RunAt``, ``_sys_DelaySeconds``)
in a heap by due time, with one timer for the earliest; when a job's time
comes it is handed to the engine, which queues it.  ``Recurring`` keeps one
timer per ``[schedules.NAME]`` and asks the engine for a job at each due time;
it makes a job for a due time only once its last one (``last``, kept by the
store in the commit that stores the job) is older, so a restart never makes
the same one twice, and a time missed while the server was down is made once
at the start (``catch_up = "once"``) or skipped (``"skip"``).

Both read the time from a ``Clock``: the ``WallClock`` in a server, one that a
test moves by hand in the tests.  The wall clock wakes at least every
``WALL_CHECK_S`` to look again: the event loop's timers follow a monotonic
clock, and a due time is a time of the wall clock, which may be set.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..config import Config
from ..errors import ConfigError, RequestError, StoreUnavailable
from ..queueing import DEFAULT_QUEUE, ScheduleSettings, cron_times
from .handlers import Handler
from .job import Job

__all__ = ["Clock", "Timer", "WallClock", "DueJobs", "Recurring", "WALL_CHECK_S",
           "RETRY_AFTER_S", "check_queue_names"]

log = logging.getLogger("jobmonitor.engine")

#: The longest a wall-clock timer sleeps before it looks at the clock again.
WALL_CHECK_S = 60.0
#: How long a schedule waits to try again after the store refused its job.
RETRY_AFTER_S = 5.0


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the schedules read the time from (POSIX seconds, the wall clock's)."""

    def time(self) -> float:
        """Now."""

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` on the event loop once ``time()`` has reached ``when``."""


class WallClock:
    """The system's clock, and the running event loop's timers."""

    def time(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return _WallTimer(asyncio.get_running_loop(), when, callback)


class _WallTimer:
    __slots__ = ("_loop", "_when", "_callback", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float,
                 callback: Callable[[], None]) -> None:
        self._loop, self._when, self._callback = loop, when, callback
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        wait = min(max(self._when - time.time(), 0.0), WALL_CHECK_S)
        self._handle = self._loop.call_later(wait, self._check)

    def _check(self) -> None:
        if time.time() < self._when:
            self._arm()
        else:
            self._handle = None
            self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class DueJobs:
    """The jobs waiting for their due time, earliest first; ``on_due`` gets each
    when its time comes (while started)."""

    def __init__(self, clock: Clock, on_due: Callable[[Job], None]) -> None:
        self._clock = clock
        self._on_due = on_due
        self._heap: list[tuple[float, int, Job]] = []
        #: The jobs waiting, with their due time (heap entries of others are stale).
        self._due: dict[Job, float] = {}
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self._started = False

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, job: Job) -> bool:
        return job in self._due

    def jobs(self) -> list[Job]:
        return list(self._due)

    def add(self, job: Job) -> None:
        """Hold ``job`` until ``job.record.run_at``."""
        due = job.record.run_at
        assert due is not None
        self._due[job] = due
        heapq.heappush(self._heap, (due, job.record.number, job))
        if len(self._heap) > 2 * len(self._due) + 64:  # mostly withdrawn jobs: tidy up
            self._heap = [(when, number, held) for when, number, held in self._heap
                          if self._due.get(held) == when]
            heapq.heapify(self._heap)
        if self._started and (self._timer_at is None or due < self._timer_at):
            self._arm()

    def remove(self, job: Job) -> bool:
        """Stop holding ``job`` (cancelled, suspended); False if it was not held."""
        return self._due.pop(job, None) is not None

    def start(self) -> None:
        """Hand over what is due already, and wait for the rest."""
        self._started = True
        self._fire()

    def stop(self) -> None:
        self._started = False
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    def _arm(self) -> None:
        self._cancel_timer()
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # withdrawn since
        if heap:
            self._timer_at = heap[0][0]
            self._timer = self._clock.call_at(self._timer_at, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        if not self._started:
            return
        now = self._clock.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, job = heapq.heappop(heap)
            if self._due.get(job) == due:
                del self._due[job]
                self._on_due(job)
        self._arm()


@dataclass(slots=True)
class _Entry:
    settings: ScheduleSettings
    #: The last due time a job was made for (None: none yet).
    last: float | None
    #: Due times up to this one are not made (when the schedule was first seen,
    #: or skipped at a start).
    since: float
    timer: Timer | None = None
    making: bool = False


#: What makes a schedule's job: called with the schedule and the due time; returns
#: once the job is stored (raises ``StoreUnavailable`` to be tried again later).
MakeJob = Callable[[ScheduleSettings, float], Awaitable[None]]


class Recurring:
    """Every recurring schedule's next due time, and the job made at each."""

    def __init__(self, clock: Clock, make_job: MakeJob) -> None:
        self._clock = clock
        self._make_job = make_job
        self._entries: dict[str, _Entry] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    def start(self, schedules: tuple[ScheduleSettings, ...], marks: dict[str, float]) -> None:
        """Plan every schedule; a time missed since its mark is made now
        (``catch_up = "once"``) or skipped."""
        self._started = True
        now = self._clock.time()
        for settings in schedules:
            last = marks.get(settings.name)
            entry = self._entries[settings.name] = _Entry(settings, last, now if last is None
                                                          else last)
            if settings.catch_up == "skip":
                entry.since = now
            self._plan(entry)

    def configure(self, schedules: tuple[ScheduleSettings, ...]) -> None:
        """Use these schedules from now on (a reload): a new one counts from now,
        a changed one keeps its last due time."""
        old, self._entries = self._entries, {}
        now = self._clock.time()
        for settings in schedules:
            entry = old.pop(settings.name, None)
            if entry is None:
                entry = _Entry(settings, None, now)
            else:
                self._cancel(entry)
                entry.settings = settings
            self._entries[settings.name] = entry
            if self._started and not entry.making:
                self._plan(entry)
        for entry in old.values():
            self._cancel(entry)

    def stop(self) -> None:
        self._started = False
        for entry in self._entries.values():
            self._cancel(entry)
        for task in list(self._tasks):
            task.cancel()

    async def settled(self) -> None:
        """Return once no schedule is making a job (each it was making is stored,
        or has failed)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def marks(self) -> dict[str, float | None]:
        return {name: entry.last for name, entry in self._entries.items()}

    @staticmethod
    def _cancel(entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def _plan(self, entry: _Entry) -> None:
        """Make the job of the latest due time not yet made, if one has come; else
        wait for the next."""
        if not self._started or self._entries.get(entry.settings.name) is not entry:
            return
        now = self._clock.time()
        latest = next(cron_times(entry.settings, now, reverse=True), None)
        floor = entry.since if entry.last is None else max(entry.last, entry.since)
        if latest is not None and latest > floor:
            entry.making = True
            task = asyncio.get_running_loop().create_task(self._make(entry, latest))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        following = next(cron_times(entry.settings, max(now, floor)), None)
        if following is not None:
            entry.timer = self._clock.call_at(following, lambda: self._due(entry))

    def _due(self, entry: _Entry) -> None:
        entry.timer = None
        self._plan(entry)

    async def _make(self, entry: _Entry, due: float) -> None:
        name = entry.settings.name
        try:
            await self._make_job(entry.settings, due)
        except StoreUnavailable as exc:
            log.warning("schedule %s: the job due at %s waits for the store: %s", name,
                        _iso(due), exc)
            entry.making = False
            entry.timer = self._clock.call_at(self._clock.time() + RETRY_AFTER_S,
                                              lambda: self._due(entry))
            return
        except RequestError as exc:  # its project is gone, or refuses the variables
            log.error("schedule %s: no job made for %s: %s", name, _iso(due), exc)
            entry.since = max(entry.since, due)
        except Exception:
            log.exception("schedule %s: making the job due at %s failed", name, _iso(due))
            entry.since = max(entry.since, due)
        else:
            entry.last = due
        entry.making = False
        self._plan(entry)


def check_queue_names(config: Config, handlers: Mapping[str, Handler]) -> None:
    """Refuse schedules of projects the server does not run, and (without
    ``allow_new_queues``) projects whose queue is not configured.

    Raises:
        ConfigError: naming the schedule or the project.
    """
    for settings in config.schedules:
        if settings.project not in handlers:
            raise ConfigError(f"schedules.{settings.name}.project: no project "
                              f"{settings.project!r} (the server runs: "
                              f"{', '.join(sorted(handlers)) or 'none'})")
    if config.allow_new_queues:
        return
    known = {DEFAULT_QUEUE, *(queue.name for queue in config.queues)}
    for handler in handlers.values():
        if handler.queue is not None and handler.queue not in known:
            raise ConfigError(f"project {handler.project!r}: unknown queue {handler.queue!r} "
                              f"(allow_new_queues is false)")


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
