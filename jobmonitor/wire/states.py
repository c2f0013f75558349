"""Job states and outcomes: the words and numbers status replies use for them.

Which state may follow which is the engine's rule (``engine.lifecycle``).
"""

from __future__ import annotations

import enum

from .codes import Status

__all__ = ["JobState", "Outcome"]


class JobState(str, enum.Enum):  # noqa: UP042 - a StrEnum's str() would change
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

class Outcome(str, enum.Enum):  # noqa: UP042 - a StrEnum's str() would change
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
