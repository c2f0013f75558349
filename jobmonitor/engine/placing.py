"""What the engine does for queues, due times, schedules and reruns (issue 20).

``Placing`` is a part of ``Engine`` kept in its own module: pausing and
listing queues, queueing a scheduled job when it falls due, making the job of
a recurring schedule, and running a finished job again.  The engine's own
parts it uses (its runner, its table of jobs, how a job is numbered, admitted
and stored) are declared in ``parts`` and defined by ``Engine``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from ..errors import RequestError
from ..queueing import DEFAULT_QUEUE, ScheduleSettings
from ..store.shared import TokenTaken
from ..wire.codes import Reply, Status
from ..wire.lines import clip, format_line
from ..wire.records import JobRecord
from ..wire.variables import QUEUE_NAME
from . import lifecycle
from .handlers import Handler
from .job import Job
from .parts import EngineParts
from .queues import Placement, QueueRow

__all__ = ["Placing"]


class Placing(EngineParts):
    """Queues, due times, schedules and reruns: a part of ``Engine``."""

    async def schedules_settled(self) -> None:
        """Return once no recurring schedule is making a job (after a clock moved)."""
        await self._schedules.settled()

    def queue_rows(self, also: Iterable[str] = ()) -> list[QueueRow]:
        """Every queue: jobs waiting, running, its limit, pause, and jobs not due
        yet; and the queues named in ``also``, idle or not."""
        return self._runner.lines.rows(self._runner.delayed_jobs(), self._due.jobs(), also)

    async def pause_queue(self, name: str) -> None:
        """Start no more jobs of queue ``name`` (those running go on); in a
        cluster, on every node.

        Raises:
            RequestError: INVALID_VALUE for a queue the server does not allow.
            StoreUnavailable: a cluster's store cannot be reached (nothing changed).
        """
        self._queue_for(name, None)
        if self._shared is not None:  # (the other nodes hear of it: queues_paused)
            await self._shared.set_paused(name, True)
        self._runner.lines.pause(name)

    async def resume_queue(self, name: str) -> None:
        """Start jobs of queue ``name`` again; in a cluster, on every node.

        Raises:
            RequestError: INVALID_VALUE for a queue the server does not allow.
            StoreUnavailable: a cluster's store cannot be reached (nothing changed).
        """
        self._queue_for(name, None)
        if self._shared is not None:
            await self._shared.set_paused(name, False)
        self._runner.lines.resume(name)
        self._runner.start_ready()
        self._claim_soon()  # (a cluster's node: that queue's jobs may wait in the store)

    async def rerun(self, transaction_id: str, identity: str) -> Job:
        """A new job like the finished job ``transaction_id``: its project, variables,
        doc variables, queue and priority (not its due time: it is queued now).
        Its history starts with a ``rerun`` event naming the job it runs again.

        Raises:
            RequestError: UNKNOWN_TRANSACTION; INVALID_STATE while the job has not
            ended; UNKNOWN_PROJECT when its project is gone; what ``submit`` raises.
        """
        await self._reserve_number()
        earlier = await self.jobs.record(transaction_id)
        if not earlier.status.is_final:
            raise RequestError(Reply.INVALID_STATE, f"{transaction_id} is "
                               f"{earlier.status.value}; only a job that has ended runs again")
        handler = self._runner.handlers.get(earlier.project)
        if handler is None:
            raise RequestError(Reply.UNKNOWN_PROJECT, clip(earlier.project, 80))
        if handler.check is not None:
            handler.check(earlier.params)
        self._queue_for(earlier.queue, None)
        self._admit()
        now = time.time()
        record = JobRecord(self._next_transaction_id(), earlier.project, dict(earlier.params),
                           dict(earlier.doc_variables), identity=identity,
                           worker=self.machine_name, created=now,
                           queue=earlier.queue, priority=earlier.priority)
        lifecycle.rerun_of(record, now, transaction_id)
        line = format_line("J", Status.RERUN, Status.RERUN.text.format(
            transaction_id=transaction_id))
        return await self._accept(record, line)

    def _placed(self, record: JobRecord, placement: Placement | None,
                now: float) -> tuple[bytes, ...]:
        """Give a new job's record its first state at ``now``, its priority and
        due time: a job due later stays ``Created``, with a ``scheduled`` event
        dated at the due time, and the line that says so (returned) after its
        machine line; any other is queued."""
        if placement is None:
            lifecycle.queue(record, now)
            return ()
        record.priority = placement.priority
        clock_now = self.clock.time()
        due = placement.run_at if placement.delay_s is None else clock_now + placement.delay_s
        record.run_at = due
        if due is None or due <= clock_now:
            lifecycle.queue(record, now)
            return ()
        lifecycle.schedule(record, now, due)
        return (_scheduled_line(due),)

    def _queue_for(self, asked: str | None, handler: Handler | None) -> str:
        """The queue a job goes to: the one it asks for, else its project's.

        Raises:
            RequestError: INVALID_VALUE for a queue the server does not allow.
        """
        name = asked or (handler.queue if handler is not None else None) or DEFAULT_QUEUE
        refusal = self._runner.lines.refusal(name)
        if refusal is not None:
            raise RequestError(Reply.INVALID_VALUE, f"{QUEUE_NAME}: {refusal}")
        return name

    def _now_due(self, job: Job) -> None:
        """A scheduled job's time has come: queue it."""
        lifecycle.fall_due(job)
        self._runner.enqueue(job)

    async def _make_scheduled(self, settings: ScheduleSettings, due: float) -> None:
        """Make and store the job of schedule ``settings`` due at ``due`` (the
        store keeps the schedule's mark in the same commit).

        Raises:
            RequestError: the project is gone, or refuses the variables, or the
            server is stopping; StoreUnavailable: the store cannot write it now.
        """
        handler = self._runner.handlers.get(settings.project)
        if handler is None:
            raise RequestError(Reply.UNKNOWN_PROJECT, clip(settings.project, 80))
        params = settings.params()
        if handler.check is not None:
            handler.check(params)
        if not self._accepting:
            raise RequestError(Reply.SERVER_BUSY, "the server is shutting down")
        await self._reserve_number()
        now = time.time()
        # In a cluster every node runs the schedules: the job token makes one job
        # per due time, whichever node stores it first.
        token = f"schedule:{settings.name}:{due:.0f}" if self.clustered else None
        record = JobRecord(self._next_transaction_id(), settings.project, params, {},
                           identity=f"schedule:{settings.name}", job_token=token,
                           worker=self.machine_name, created=now,
                           queue=settings.queue or handler.queue or DEFAULT_QUEUE,
                           priority=settings.priority, run_at=due, schedule=settings.name)
        lifecycle.queue(record, now, due, f"schedule {settings.name}")
        with contextlib.suppress(TokenTaken):  # another node made this due time's job
            await self._accept(record)


def _scheduled_line(due: float) -> bytes:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    return format_line("J", Status.SCHEDULED, Status.SCHEDULED.text.format(due=when))
