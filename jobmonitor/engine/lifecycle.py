"""A job's life: which state may follow which, and the one place a job's state changes.

Every change of a job's state goes through one function here (``start``,
``suspend``, ``resume``, ``retry``, ``requeue``, ``finish``), and each is one
of the ``MOVES``: the table of the states a move may start from and the state
it leads to (``TRANSITIONS``, which state may follow which, is made from it).
A function checks its move against the table, then records together what the
change means: the record's state and update time, the ``job`` history event
(``history``), the server's status line, and a word to the job's hooks (the
store, the task log).  A move the table does not allow raises
``IllegalTransition`` and records nothing: that is a bug in the engine, never
a client's doing, because a command is checked first with ``can_transition``
and refused with ``R0005010`` (``Engine._check``).

A job is born queued (``queue``, on its record, before anyone can see it) and
ends through ``finish``, which records exactly one completion line and the
``Transaction ... ended`` line and closes the stream.  A cancel is a
``finish(..., Outcome.CANCELLED, reason)``: the reason says whether someone
asked for it or the server is shutting down (``J0005004`` then comes before
``J0000023``).  A job the server stops with its run left to the next start
(``leave_to_recovery``) keeps its state: the store has it as it was.

The per-run side (cancel requested, suspend requested, time limit) is
``run.Run``'s; this module only records.
"""

from __future__ import annotations

import enum
import time

from ..wire.codes import NODE_STOPPED, Status
from ..wire.lines import format_line, format_lines
from ..wire.records import HistoryEvent, JobRecord
from ..wire.states import JobState, Outcome
from .history import (
    FINISH_EVENTS,
    JOB_STAGE,
    QUEUED_EVENT,
    REQUEUE_EVENT,
    RERUN_EVENT,
    RESUME_EVENT,
    RETRY_EVENT,
    SCHEDULED_EVENT,
    START_EVENT,
    SUSPEND_EVENT,
)
from .job import Job

__all__ = ["Move", "MOVES", "TRANSITIONS", "IllegalTransition", "CancelReason", "SHUTDOWN_INFO",
           "can_transition", "queue", "schedule", "rerun_of", "fall_due", "start", "suspend",
           "resume", "retry", "interrupt", "machine", "requeue", "finish", "leave_to_recovery",
           "notice", "handler_raised"]


class Move(enum.Enum):
    """A change of a job's state (``MOVES`` says from where to where)."""

    QUEUE = "queue"
    START = "start"
    SUSPEND = "suspend"
    RESUME = "resume"
    RESUME_QUEUED = "resume to the queue"
    RESUME_WAITING = "resume to wait for its time"
    RETRY = "retry"
    REQUEUE = "requeue"
    COMPLETE = "complete"
    COMPLETE_PARTLY = "complete partly"
    FAIL = "fail"
    CANCEL = "cancel"

    # Members are singletons: the identity's hash (in C) serves ``MOVES[move]``,
    # where Enum's own __hash__ is a Python-level call, three per job.
    __hash__ = object.__hash__


_S = JobState
_RAN = frozenset({_S.PROCESSING, _S.SUSPENDED})  # (a paused run may still end any way)
_ACTIVE = frozenset({_S.CREATED, _S.QUEUED, _S.PROCESSING, _S.SUSPENDED})

#: Every move a job can make: the states it may start from, and the state it
#: leads to.  A job fails from the queue when its handler is gone (a reload, a
#: restart); a job paused at once (``Job.pausable``) may still complete, its work
#: having ended as the pause came, or fail and be queued to run again.
MOVES: dict[Move, tuple[frozenset[JobState], JobState]] = {
    Move.QUEUE: (frozenset({_S.CREATED}), _S.QUEUED),  # a new job, or one now due
    Move.START: (frozenset({_S.QUEUED}), _S.PROCESSING),
    # (a job waiting for its due time may be suspended too)
    Move.SUSPEND: (frozenset({_S.CREATED, _S.QUEUED, _S.PROCESSING}), _S.SUSPENDED),
    Move.RESUME: (frozenset({_S.SUSPENDED}), _S.PROCESSING),  # its run was paused
    Move.RESUME_QUEUED: (frozenset({_S.SUSPENDED}), _S.QUEUED),  # it was not running
    Move.RESUME_WAITING: (frozenset({_S.SUSPENDED}), _S.CREATED),  # not due yet: waits again
    Move.RETRY: (_RAN, _S.QUEUED),  # a failed run, for the handler's ``retries``
    Move.REQUEUE: (_RAN, _S.QUEUED),  # a run a server restart interrupted
    Move.COMPLETE: (_RAN, _S.COMPLETED),
    Move.COMPLETE_PARTLY: (_RAN, _S.COMPLETED_WITH_ERRORS),
    Move.FAIL: (_ACTIVE, _S.FAILED),
    Move.CANCEL: (_ACTIVE, _S.CANCELLED),
}

#: state -> the states it may move to (made from ``MOVES``).  Commands are
#: checked against it (``CancelJob``, ``SuspendJob``): anything else is an
#: invalid-state reply.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    state: frozenset(new for sources, new in MOVES.values() if state in sources)
    for state in JobState
}

#: The move that ends a job with each outcome.
_FINISH_MOVES = {Outcome.SUCCESS: Move.COMPLETE, Outcome.PARTIAL: Move.COMPLETE_PARTLY,
                 Outcome.FAILED: Move.FAIL, Outcome.CANCELLED: Move.CANCEL}


class IllegalTransition(RuntimeError):
    """A move ``MOVES`` does not allow from the job's state was attempted.

    A ``RuntimeError``, outside the ``JobMonitorError`` tree on purpose: it is a
    bug in the engine, not something a client or a handler can cause, and no
    ``except JobMonitorError`` should swallow it.  Nothing was recorded.
    """

    def __init__(self, transaction_id: str, move: Move, current: JobState) -> None:
        super().__init__(f"{transaction_id}: a {current.value} job cannot {move.value}")
        self.transaction_id = transaction_id
        self.move = move
        self.current = current


class CancelReason(enum.Enum):
    """Why a job ends cancelled."""

    #: Someone asked: ``CancelJob``, a ``RestartServer`` that could not wait for
    #: the job, or the handler itself returned ``Outcome.CANCELLED``.
    USER = "user"
    #: The server is shutting down (``J0005004`` before ``J0000023``).
    SHUTDOWN = "shutdown"


#: The ``info`` of the ``cancelled`` history event of a job the shutdown cancelled.
SHUTDOWN_INFO = "server shutdown"


def can_transition(current: JobState, new: JobState) -> bool:
    """Return True when the table allows moving from ``current`` to ``new``."""
    return new in TRANSITIONS[current]


# -- the transitions -----------------------------------------------------------------


def queue(record: JobRecord, now: float, date: float | None = None,
          info: str | None = None) -> None:
    """A new job's first state at ``now``: queued, with its history's first
    event (``date`` and ``info``: a recurring schedule's due time and name).
    Made on the record before the job has hooks (the engine logs the event
    once the job is stored: a refused submit leaves nothing)."""
    _check(record, Move.QUEUE)
    record.status = _S.QUEUED
    record.updated = now
    record.history.append(_new_tuple(HistoryEvent, (JOB_STAGE, QUEUED_EVENT, now, date, info)))


def schedule(record: JobRecord, now: float, due: float) -> None:
    """A new job due later stays created until ``due``: its history's first
    event is ``scheduled``, dated at the due time (made on the record, as ``queue``)."""
    if record.status is not _S.CREATED:
        raise IllegalTransition(record.transaction_id, Move.QUEUE, record.status)
    record.updated = now
    record.history.append(_new_tuple(HistoryEvent, (JOB_STAGE, SCHEDULED_EVENT, now, due, None)))


def rerun_of(record: JobRecord, now: float, earlier: str) -> None:
    """A new job that runs the finished job ``earlier`` again: a ``rerun`` event
    naming it, then queued (made on the record, as ``queue``)."""
    record.history.append(_new_tuple(HistoryEvent, (JOB_STAGE, RERUN_EVENT, now, None, earlier)))
    queue(record, now)


def fall_due(job: Job) -> None:
    """A job waiting for its due time is due now: created -> queued."""
    _check(job.record, Move.QUEUE)
    _record_state(job, _S.QUEUED, QUEUED_EVENT)


def start(job: Job) -> None:
    """A run starts: queued -> processing."""
    _check(job.record, Move.START)
    now = job.record.started = time.time()
    _record_state(job, _S.PROCESSING, START_EVENT, now=now)  # (one float: a job may wait long)


def suspend(job: Job) -> None:
    """The job pauses, or leaves the queue: ``J0000130``."""
    _check(job.record, Move.SUSPEND)
    job.record.retry_at = None  # (resumed, it is queued at once: no retry's delay)
    _record_state(job, _S.SUSPENDED, SUSPEND_EVENT)
    job.stream.append(_SUSPENDED_LINE)


def resume(job: Job, *, running: bool, waiting: bool = False) -> None:
    """A suspended job goes on (``running``: its run is paused), back to the
    queue, or (``waiting``: it is not due yet) back to wait for its time:
    ``J0000131``."""
    move = Move.RESUME if running else Move.RESUME_WAITING if waiting else Move.RESUME_QUEUED
    new = _check(job.record, move)
    job.stream.append(_RESUMED_LINE)
    _record_state(job, new, RESUME_EVENT)


def retry(job: Job, text: str) -> None:
    """A failed run is over and the job waits to run again: ``J0000132`` with
    ``text`` (which says the attempt and the delay)."""
    _check(job.record, Move.RETRY)
    job.record.started = None  # queued, not interrupted, if the server restarts now
    _say(job, Status.REQUEUED, text)
    _record_state(job, _S.QUEUED, RETRY_EVENT)


def interrupt(job: Job, dead_node: str | None = None) -> None:
    """A recovered job was running when the server stopped: ``J0005002``; in a
    cluster, when the node ``dead_node`` that ran it stopped.  The engine then
    ``requeue``\\ s it (``retry_on_restart``) or fails it (``finish``)."""
    if dead_node is None:
        job.stream.append(_INTERRUPTED_LINE)
    else:
        job.stream.append(format_line("J", Status.INTERRUPTED,
                                      NODE_STOPPED.format(node=dead_node)))


def machine(job: Job, name: str) -> None:
    """A job claimed by a cluster's node other than the one that stored it: the
    machine it runs on now (``J0000100``, as every stream's first line)."""
    job.stream.append(format_line("J", Status.INFO, f"Machine name: {name}"))


def requeue(job: Job) -> None:
    """An interrupted job is queued to run again: ``J0000132``."""
    _check(job.record, Move.REQUEUE)
    job.record.started = None
    job.stream.append(_REQUEUED_LINE)
    _record_state(job, _S.QUEUED, REQUEUE_EVENT)


def finish(job: Job, outcome: Outcome, reason: CancelReason = CancelReason.USER) -> None:
    """The job ends: its completion line and the ended line, its final state,
    and no more lines.  A cancel for ``SHUTDOWN`` says so first (``J0005004``),
    in the history and as the job's last message too."""
    record = job.record
    _check(record, _FINISH_MOVES[outcome])
    record.outcome = outcome
    record.completed = time.time()
    # The two last lines never vary but for the transaction ID: made here, not
    # formatted from their texts each time.
    ended = _ENDED_HEAD + job.transaction_id.encode() + _ENDED_TAIL
    info = None
    if outcome is Outcome.CANCELLED and reason is CancelReason.SHUTDOWN:
        job.stream.extend([_SHUTDOWN_LINE, _COMPLETION_LINES[outcome], ended])
        job.last_message = Status.SHUTDOWN.text
        info = SHUTDOWN_INFO
    else:
        job.stream.extend([_COMPLETION_LINES[outcome], ended])
    _record_state(job, outcome.state, FINISH_EVENTS[outcome], info)
    _close(job)


def leave_to_recovery(job: Job) -> None:
    """The server stops with the job's run unfinished, for the next start to run
    it again (``retry_on_restart``): no more lines now, the state stays as the
    store has it."""
    _close(job)


# -- the server's other lines -----------------------------------------------------------


def notice(job: Job, text: str) -> None:
    """A server notice to the job's monitors (``J0000190``)."""
    _say(job, Status.NOTICE, text)


def handler_raised(job: Job, exc: BaseException) -> None:
    """The handler raised something unexpected (``J0005001``)."""
    _say(job, Status.HANDLER_EXCEPTION, f"{type(exc).__name__}: {exc}")


# -- recording ------------------------------------------------------------------------

# tuple.__new__ skips the named tuple's Python-level constructor: every job
# changes state at least twice.
_new_tuple = tuple.__new__


def _check(record: JobRecord, move: Move) -> JobState:
    """The state ``move`` leads to from the record's.

    Raises:
        IllegalTransition: the table does not allow it.
    """
    sources, new = MOVES[move]
    if record.status not in sources:
        raise IllegalTransition(record.transaction_id, move, record.status)
    return new


def _record_state(job: Job, state: JobState, event: str, info: str | None = None,
                  now: float | None = None) -> None:
    """Move to ``state`` (the caller has checked the move) with the ``job``
    history event ``event`` (at ``now``, by default the time now)."""
    if now is None:
        now = time.time()
    record = job.record
    record.status = state
    record.updated = now
    entry = _new_tuple(HistoryEvent, (JOB_STAGE, event, now, None, info))
    record.history.append(entry)
    if job.on_event is not None:
        job.on_event(job, entry)
    if job.on_change is not None:
        job.on_change(job, job.stream.watcher_count > 0)


def _say(job: Job, status: Status, text: str) -> None:
    job.stream.extend(format_lines("J", status, text))


def _close(job: Job) -> None:
    job.stream.close()
    job.stream.on_flush = None  # no more lines; and no Job <-> stream cycle for the GC


def _standard(status: Status) -> bytes:
    return format_line("J", status, status.text)


_COMPLETION_LINES = {outcome: _standard(outcome.status) for outcome in Outcome}
_ENDED_HEAD, _ENDED_TAIL = (part.encode() for part in format_line(
    "J", Status.ENDED, Status.ENDED.text).decode().split("{transaction_id}"))
_SUSPENDED_LINE = _standard(Status.SUSPENDED)
_RESUMED_LINE = _standard(Status.RESUMED)
_REQUEUED_LINE = _standard(Status.REQUEUED)
_INTERRUPTED_LINE = _standard(Status.INTERRUPTED)
_SHUTDOWN_LINE = _standard(Status.SHUTDOWN)
