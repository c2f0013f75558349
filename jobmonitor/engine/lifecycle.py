"""A job's life: the one table of allowed state transitions.

The engine asks ``can_transition`` before a command (cancel, suspend,
resume, ...) changes a job's state; a change the table does not allow is
answered with an invalid-state error.
"""

from __future__ import annotations

from ..wire.states import JobState

__all__ = ["TRANSITIONS", "can_transition"]


#: state -> the states it may move to.  Anything else is an invalid-state error.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # (issue 20) a job waiting for its due time may be suspended, and waits again
    # when resumed before that time
    JobState.CREATED: frozenset({JobState.QUEUED, JobState.CANCELLED, JobState.FAILED,
                                 JobState.SUSPENDED}),
    JobState.QUEUED: frozenset({JobState.PROCESSING, JobState.SUSPENDED, JobState.CANCELLED}),
    JobState.PROCESSING: frozenset(
        {JobState.SUSPENDED, JobState.CANCELLED, JobState.FAILED, JobState.COMPLETED,
         JobState.COMPLETED_WITH_ERRORS, JobState.QUEUED}
    ),
    JobState.SUSPENDED: frozenset({JobState.QUEUED, JobState.PROCESSING, JobState.CANCELLED,
                                   JobState.FAILED, JobState.CREATED}),
    JobState.COMPLETED: frozenset(),
    JobState.COMPLETED_WITH_ERRORS: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(current: JobState, new: JobState) -> bool:
    """Return True when the table allows moving from ``current`` to ``new``."""
    return new in TRANSITIONS[current]
