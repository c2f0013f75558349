"""Plain records of jobs: what a store keeps and what status replies are made from.

A live ``Job`` turns itself into a ``JobRecord`` snapshot; a store returns
``JobRecord``s for jobs that are not in memory.  Nothing here runs anything.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from .states import JobState, Outcome

__all__ = ["JobRecord", "HistoryEvent", "Output", "parse_transaction_id"]

# "T" and seven ASCII digits: str.isdigit and int() also take other scripts'
# digits ("T\u0660\u0660\u0660\u0660\u0660\u0660\u0661" would be job 1).
_TRANSACTION_ID = re.compile(r"[Tt][0-9]{7}")


def parse_transaction_id(text: str) -> str | None:
    """The transaction ID ``text`` names ("T0000042"; a lowercase "t" and
    surrounding whitespace are allowed), or None if it names none."""
    text = text.strip(" \t\r\n")
    return "T" + text[1:] if _TRANSACTION_ID.fullmatch(text) else None


class HistoryEvent(NamedTuple):
    """One entry of a job's history: a stage reaching a status at a time.

    (Named tuples, not frozen dataclasses: a few are made for every job.)
    """

    stage: str
    status: str
    timestamp: float
    date: float | None = None  # e.g. an estimated completion time
    info: str | None = None


class Output(NamedTuple):
    """Something a job produced, by reference."""

    name: str
    uri: str
    media_type: str | None = None


@dataclass(slots=True)
class JobRecord:
    """Everything recorded about one job except its lines."""

    transaction_id: str
    project: str
    params: dict[str, str]
    doc_variables: dict[str, str]
    identity: str = "anonymous"
    job_token: str | None = None
    status: JobState = JobState.CREATED
    outcome: Outcome | None = None
    progress_done: int = 0
    progress_total: int = 0
    progress_message: str = ""
    status_message: str = ""
    worker: str = ""
    created: float = 0.0
    started: float | None = None
    updated: float = 0.0
    completed: float | None = None
    estimated: float | None = None
    line_count: int = 0
    history: list[HistoryEvent] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    # -- queues and schedules (issue 20) --
    #: The queue the job waits in, and its priority there (1..9, higher first).
    queue: str = "default"
    priority: int = 5
    #: When the job is due (POSIX seconds): a job whose time has not come is
    #: ``Created``; None for a job that runs as soon as a slot is free.
    run_at: float | None = None
    #: The recurring schedule that made the job, if one did.
    schedule: str | None = None
    #: When a failed job waiting out its retry's delay may run again (POSIX
    #: seconds); None for any other job.  (A cluster's claims skip it until then.)
    retry_at: float | None = None

    def copy(self) -> JobRecord:
        """A shallow copy (the lists and dicts are shared), several times faster
        than ``copy.copy`` on a slotted dataclass."""
        return JobRecord(*_ALL_FIELDS(self))

    @property
    def job_name(self) -> str:
        return self.params.get("JobName", "")

    @property
    def number(self) -> int:
        """The numeric part of the transaction ID."""
        return int(self.transaction_id[1:])


_ALL_FIELDS = operator.attrgetter(*(f.name for f in fields(JobRecord)))
