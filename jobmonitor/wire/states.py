"""Job states, outcomes, and the one table of allowed state transitions."""

from __future__ import annotations

import enum

from .codes import Status

__all__ = ["JobState", "Outcome", "TRANSITIONS", "can_transition"]


class JobState(str, enum.Enum):
    """Where a job is in its life.  The value is the word used on the wire."""

    CREATED = "Created"
    QUEUED = "Queued"
    PROCESSING = "Processing"
    SUSPENDED = "Suspended"
    COMPLETED = "Completed"
    COMPLETED_WITH_ERRORS = "CompletedWithErrors"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def number(self) -> int:
        """The number used for this state in JSON representations."""
        return _NUMBERS[self]


_FINAL = frozenset(
    {JobState.COMPLETED, JobState.COMPLETED_WITH_ERRORS, JobState.FAILED, JobState.CANCELLED}
)
_NUMBERS = {
    JobState.CREATED: 0,
    JobState.QUEUED: 1,
    JobState.PROCESSING: 2,
    JobState.COMPLETED: 3,
    JobState.COMPLETED_WITH_ERRORS: 4,
    JobState.FAILED: 5,
    JobState.CANCELLED: 6,
    JobState.SUSPENDED: 7,
}

#: state -> the states it may move to.  Anything else is an invalid-state error.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.CREATED: frozenset({JobState.QUEUED, JobState.CANCELLED, JobState.FAILED}),
    JobState.QUEUED: frozenset({JobState.PROCESSING, JobState.SUSPENDED, JobState.CANCELLED}),
    JobState.PROCESSING: frozenset(
        {JobState.SUSPENDED, JobState.CANCELLED, JobState.FAILED, JobState.COMPLETED,
         JobState.COMPLETED_WITH_ERRORS, JobState.QUEUED}
    ),
    JobState.SUSPENDED: frozenset({JobState.QUEUED, JobState.PROCESSING, JobState.CANCELLED,
                                   JobState.FAILED}),
    JobState.COMPLETED: frozenset(),
    JobState.COMPLETED_WITH_ERRORS: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(current: JobState, new: JobState) -> bool:
    """Return True when the table allows moving from ``current`` to ``new``."""
    return new in TRANSITIONS[current]


class Outcome(str, enum.Enum):
    """How a job ended.  A handler returns one (or None for SUCCESS)."""

    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def status(self) -> Status:
        """The completion line's code."""
        return _OUTCOME_STATUS[self]

    @property
    def state(self) -> JobState:
        """The final state a job with this outcome ends in."""
        return _OUTCOME_STATE[self]


_OUTCOME_STATUS = {
    Outcome.SUCCESS: Status.SUCCESS,
    Outcome.PARTIAL: Status.PARTIAL,
    Outcome.FAILED: Status.FAILED,
    Outcome.CANCELLED: Status.CANCELLED,
}
_OUTCOME_STATE = {
    Outcome.SUCCESS: JobState.COMPLETED,
    Outcome.PARTIAL: JobState.COMPLETED_WITH_ERRORS,
    Outcome.FAILED: JobState.FAILED,
    Outcome.CANCELLED: JobState.CANCELLED,
}
