"""The waiting lines: one per queue, each ordered by priority, then age.

A queued job waits in its queue's line (``job.record.queue``), behind the
jobs of a higher ``priority`` and those of its own priority that came first:
each queue keeps one first-in, first-out deque per priority in use.  The
runner asks ``pop_next`` for the job to start whenever a slot is free (the
server-wide ``max_running`` is the runner's check); it gets the head of the
highest priority among the queues that may start one now (not paused, under
their own ``max_running``), the oldest job (lowest transaction number) among
equals.  With one queue in use that is the old single first-in, first-out
line, at the cost of a dictionary look-up or two per job.

Queues named in the configuration always exist; a queue a job names ad hoc
(``allow_new_queues``) exists while it holds a waiting or running job, or is
paused, so a stream of made-up names cannot fill memory.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Config
from ..queueing import DEFAULT_PRIORITY, DEFAULT_QUEUE, QueueSettings
from .job import Job

__all__ = ["Placement", "QueueRow", "WaitingLines"]

#: A queue without a limit of its own (only the server-wide cap applies).
_NO_LIMIT = sys.maxsize


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and when a submitted job is to run (``_sys_QueueName``,
    ``_sys_Priority``, ``_sys_RunAt`` or ``_sys_DelaySeconds``); None: the default."""

    queue: str | None = None
    priority: int = DEFAULT_PRIORITY
    #: POSIX seconds.
    run_at: float | None = None
    delay_s: float | None = None


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue as ``ListQueues`` shows it."""

    name: str
    waiting: int
    running: int
    max_running: int
    paused: bool
    scheduled: int


class _Queue:
    __slots__ = ("name", "limit", "paused", "configured", "lines", "top", "waiting", "running")

    def __init__(self, name: str) -> None:
        self.name = name
        self.limit = _NO_LIMIT
        self.paused = False
        self.configured = False
        #: priority -> its jobs, oldest first; only priorities with jobs waiting.
        self.lines: dict[int, collections.deque[Job]] = {}
        #: The highest priority with jobs waiting (0: none).
        self.top = 0
        self.waiting = 0
        self.running = 0

    @property
    def kept(self) -> bool:
        """Whether the queue must stay when it holds no job."""
        return self.configured or self.paused or self.name == DEFAULT_QUEUE


class WaitingLines:
    """Every queue's waiting line, its running count, limit and pause."""

    def __init__(self, config: Config) -> None:
        self._queues: dict[str, _Queue] = {DEFAULT_QUEUE: _Queue(DEFAULT_QUEUE)}
        #: The queues with jobs waiting (whether or not they may start one now).
        self._active: dict[str, _Queue] = {}
        #: Jobs waiting in all lines.
        self.count = 0
        self._cap = config.max_running
        self.allow_new = config.allow_new_queues
        #: What the configuration said of each queue's pause at the last (re)load:
        #: a reload changes a pause only where the configuration changed it.
        self._configured_pause: dict[str, bool] = {}
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take the queues' limits and pauses from ``config`` (at start, and at a
        reload: a pause set by ``PauseQueue`` stays unless the file changed it)."""
        self._cap = config.max_running
        self.allow_new = config.allow_new_queues
        settings: dict[str, QueueSettings] = {queue.name: queue for queue in config.queues}
        for queue in list(self._queues.values()):
            if queue.name not in settings:
                queue.configured, queue.limit = False, _NO_LIMIT
                self._drop_if_idle(queue)
        pauses = {}
        for name, setting in settings.items():
            queue = self._get(name)
            queue.configured = True
            queue.limit = setting.max_running or _NO_LIMIT
            if self._configured_pause.get(name) != setting.paused:
                queue.paused = setting.paused
            pauses[name] = setting.paused
        self._configured_pause = pauses

    # -- names ------------------------------------------------------------------------

    def refusal(self, name: str) -> str | None:
        """Why a new job may not go to queue ``name`` (None: it may)."""
        if self.allow_new or name in self._configured_pause or name == DEFAULT_QUEUE:
            return None
        known = ", ".join(sorted({DEFAULT_QUEUE, *self._configured_pause}))
        return f"unknown queue {name!r} (this server's queues: {known})"

    def _get(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name)
        return queue

    def _drop_if_idle(self, queue: _Queue) -> None:
        # (the default queue, the usual one, is always kept: no property call for it)
        if not (queue.waiting or queue.running) and queue.name != DEFAULT_QUEUE and not queue.kept:
            self._queues.pop(queue.name, None)

    # -- waiting ----------------------------------------------------------------------

    def push(self, job: Job) -> None:
        """Put a job at the end of its priority's line in its queue."""
        record = job.record
        queue = self._queues.get(record.queue) or self._get(record.queue)
        priority = record.priority
        line = queue.lines.get(priority)
        if line is None:
            line = queue.lines[priority] = collections.deque()
            if priority > queue.top:
                queue.top = priority
        line.append(job)
        if not queue.waiting:
            self._active[queue.name] = queue
        queue.waiting += 1
        self.count += 1

    def __contains__(self, job: Job) -> bool:
        queue = self._queues.get(job.record.queue)
        line = queue.lines.get(job.record.priority) if queue is not None else None
        return line is not None and job in line

    def remove(self, job: Job) -> bool:
        """Take a waiting job out of its line; False if it was not in one."""
        queue = self._queues.get(job.record.queue)
        line = queue.lines.get(job.record.priority) if queue is not None else None
        if queue is None or line is None or job not in line:
            return False
        line.remove(job)
        self._taken(queue, job.record.priority, line)
        return True

    def pop_next(self) -> Job | None:
        """Take the job to start now, or None when no queue may start one."""
        active = self._active
        if len(active) == 1:  # the common case: one queue has jobs waiting
            for only in active.values():
                if only.paused or only.running >= only.limit:
                    return None
                line = only.lines[only.top]
                job = line.popleft()
                self._taken(only, only.top, line)
                return job
        best: _Queue | None = None
        best_priority = 0
        best_id = ""
        for queue in active.values():
            if queue.paused or queue.running >= queue.limit:
                continue
            priority = queue.top
            if best is None:
                best, best_priority = queue, priority
                continue
            if priority < best_priority:
                continue
            # Transaction IDs have one width (T and seven digits): as strings they
            # sort as their numbers do, without making an int of each.
            head_id = queue.lines[priority][0].record.transaction_id
            if not best_id:  # (looked up only once there is something to compare)
                best_id = best.lines[best_priority][0].record.transaction_id
            if priority > best_priority or head_id < best_id:
                best, best_priority, best_id = queue, priority, head_id
        if best is None:
            return None
        line = best.lines[best_priority]
        job = line.popleft()
        self._taken(best, best_priority, line)
        return job

    def _taken(self, queue: _Queue, priority: int, line: collections.deque[Job]) -> None:
        if not line:
            del queue.lines[priority]
            if priority == queue.top:
                queue.top = max(queue.lines) if queue.lines else 0
        queue.waiting -= 1
        self.count -= 1
        if not queue.waiting:
            del self._active[queue.name]
            self._drop_if_idle(queue)

    # -- running ----------------------------------------------------------------------

    def may_start_now(self, job: Job) -> bool:
        """Whether ``job``, not queued yet, would be the next to start: no job waits
        in any line, and its queue is neither paused nor at its limit.  (Then
        pushing it and taking the next job would give it back: the runner skips both.)"""
        if self.count:
            return False
        queue = self._queues.get(job.record.queue)
        return queue is None or (not queue.paused and queue.running < queue.limit)

    def started(self, job: Job) -> None:
        """A job of this queue started running (it counts against its limit)."""
        queue = self._queues.get(job.record.queue)
        if queue is None:
            queue = self._get(job.record.queue)
        queue.running += 1

    def stopped(self, job: Job) -> None:
        """A running job of this queue stopped."""
        queue = self._queues.get(job.record.queue)
        if queue is not None and queue.running > 0:
            queue.running -= 1
            if (not (queue.running or queue.waiting) and queue.name != DEFAULT_QUEUE
                    and not queue.kept):
                del self._queues[queue.name]

    def has_room(self, name: str) -> bool:
        """Whether queue ``name`` may start a job now (not paused, under its limit)."""
        queue = self._queues.get(name)
        return queue is None or not (queue.paused or queue.running >= queue.limit)

    def open_queues(self) -> list[str] | None:
        """The queues a node may claim jobs of now: None for all (no queue is
        paused or at its limit), else those that may start one (jobs of a queue
        never seen here wait for a node that knows it, or for the others to open)."""
        shut = {queue.name for queue in self._queues.values()
                if queue.paused or queue.running >= queue.limit}
        if not shut:
            return None
        return sorted(set(self._queues) - shut)

    # -- pausing ----------------------------------------------------------------------

    def pause(self, name: str) -> None:
        """Start no job of queue ``name`` until ``resume`` (its running jobs go on)."""
        self._get(name).paused = True

    def resume(self, name: str) -> None:
        queue = self._queues.get(name)
        if queue is not None:
            queue.paused = False
            self._drop_if_idle(queue)

    # -- reporting --------------------------------------------------------------------

    def rows(self, delayed: Iterable[Job], scheduled: Iterable[Job],
             also: Iterable[str] = ()) -> list[QueueRow]:
        """Every queue, by name: ``delayed`` (waiting out a retry's delay) count
        as waiting, ``scheduled`` (not due yet) as scheduled; the queues named in
        ``also`` too, idle ones included (an idle queue is not kept)."""
        waiting = collections.Counter(job.record.queue for job in delayed)
        later = collections.Counter(job.record.queue for job in scheduled)
        names = sorted({*self._queues, *waiting, *later, *also})
        rows = []
        for name in names:
            queue = self._queues.get(name) or _Queue(name)
            limit = self._cap if queue.limit == _NO_LIMIT else queue.limit
            rows.append(QueueRow(name, queue.waiting + waiting[name], queue.running, limit,
                                 queue.paused, later[name]))
        return rows
