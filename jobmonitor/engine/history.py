"""The words of a job's own history, and how to read them back.

Each change of a job's state adds one event of the stage ``job`` to its
history (``lifecycle`` adds them); a handler's ``job.stage(...)`` adds events
of its own stages.  The event names below are what ``GetJobInformation`` and
the task log (``GetTaskLog``) show, so they are part of the protocol: spelled
here once.
"""

from __future__ import annotations

from ..wire.records import HistoryEvent, JobRecord
from ..wire.states import Outcome

__all__ = ["JOB_STAGE", "QUEUED_EVENT", "SCHEDULED_EVENT", "RERUN_EVENT", "START_EVENT",
           "SUSPEND_EVENT", "RESUME_EVENT", "RETRY_EVENT", "REQUEUE_EVENT", "ESTIMATE_EVENT",
           "FINISH_EVENTS", "count_events", "last_job_event"]

#: The stage of the events the server records about the job itself.
JOB_STAGE = "job"
#: A new job waits for a slot.
QUEUED_EVENT = "queued"
#: A new job waits for its due time (the event's ``date``), ``Created`` until then.
SCHEDULED_EVENT = "scheduled"
#: A new job runs a finished one again (``RerunJob``; the event's ``info`` names it).
RERUN_EVENT = "rerun"
#: A run starts (each run has one).
START_EVENT = "start"
#: The job paused (at a checkpoint, at once in ``Job.pausable``) or left the queue.
SUSPEND_EVENT = "suspended"
RESUME_EVENT = "resumed"
#: A failed job is queued to run again (its handler's ``retries``; see ``Job.attempt``).
RETRY_EVENT = "retry"
#: A job a server restart interrupted is queued to run again (``retry_on_restart``).
REQUEUE_EVENT = "requeued"
#: The job gave an estimated completion time (``Job.estimate``; the event's ``date``).
ESTIMATE_EVENT = "estimate"
#: The last event, by outcome.
FINISH_EVENTS = {
    Outcome.SUCCESS: "complete",
    Outcome.PARTIAL: "complete",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
}


def count_events(record: JobRecord, name: str) -> int:
    """How many ``job`` events named ``name`` the job's history holds."""
    return sum(1 for event in record.history
               if event.stage == JOB_STAGE and event.status == name)


def last_job_event(record: JobRecord) -> HistoryEvent | None:
    """The job's latest ``job`` event (its latest change of state), if any."""
    return next((event for event in reversed(record.history) if event.stage == JOB_STAGE), None)
