"""What the client hands back: typed results (``decoding`` reads replies into them).

Sans-I/O: these know nothing of sockets.  Job states are the server's own ``JobState``; the
completion codes are the server's own ``Status`` members.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..wire.codes import ERROR_THRESHOLD, Status
from ..wire.states import JobState, Outcome

__all__ = [
    "StreamLine",
    "JobResult",
    "Reattach",
    "Progress",
    "Output",
    "HistoryEntry",
    "JobStatus",
    "JobInfo",
    "JobList",
    "Acknowledged",
    "QueueLength",
    "QueueInfo",
    "TaskLogEntry",
    "NodeInfo",
]

_COMPLETIONS = {outcome.status.value: outcome for outcome in Outcome}
_PROGRESS = re.compile(r"Progress: (\d+)/(\d+)(?: \((\d+)%\))?(?: (.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job has got: ``done`` of ``total`` steps (``total`` 0: unknown)."""

    done: int = 0
    total: int = 0
    percent: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class StreamLine:
    """One wire line of a job's status stream.

    ``number`` is the line's place in the job's stream (1 is the
    ``Machine name`` line); ``more`` is True on every line of a several-line
    message but its last.
    """

    number: int
    code: int
    text: str
    more: bool = False

    @property
    def is_error(self) -> bool:
        return self.code >= ERROR_THRESHOLD

    @property
    def outcome(self) -> Outcome | None:
        """The outcome a completion line (``J0000020`` to ``J0000023``) announces."""
        return None if self.more else _COMPLETIONS.get(self.code)

    @property
    def is_end(self) -> bool:
        """True for the ``Transaction ... ended`` line, the last of every stream."""
        return self.code == Status.ENDED and self.text.startswith("Transaction ")

    @property
    def progress(self) -> Progress | None:
        """The progress a ``J0000110`` line reports, or None for other lines."""
        if self.code != Status.PROGRESS:
            return None
        match = _PROGRESS.fullmatch(self.text)
        if match is None:
            return None
        done, total = int(match.group(1)), int(match.group(2))
        percent = int(match.group(3)) if match.group(3) else (done * 100 // total if total else 0)
        return Progress(done, total, percent, match.group(4) or "")

    def wire_text(self) -> str:
        """The line as the server sent it, without the CRLF."""
        return f"J{self.code:07d}{'-' if self.more else ':'} {self.text}"


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job ended, as seen through one transaction handle.

    ``cancelled_by_shutdown`` is True for a job the server cancelled because it
    was shutting down: its stream said so (``J0005004``) before ``J0000023``.
    It is False for a cancel someone asked for, and for a watch that began past
    the job's end (no line was seen)."""

    transaction_id: str
    outcome: Outcome
    lines: int
    errors: tuple[str, ...] = ()
    cancelled_by_shutdown: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


@dataclass(frozen=True, slots=True)
class Reattach:
    """A transaction's connection ended before the job's ``ended`` line
    (``reattached`` False: re-attaching starts), or it has re-attached
    (``reattached`` True).  ``from_line`` is the line it asks the server for,
    the one after the last it received."""

    transaction_id: str
    from_line: int
    reattached: bool


@dataclass(frozen=True, slots=True)
class Output:
    """Something a job produced, by reference.  ``partial`` is True when the job
    failed or was cancelled: the file may be cut short, not a result."""

    name: str
    uri: str
    media_type: str | None = None
    partial: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One step of a job's history."""

    stage: str
    status: str
    timestamp: str | None
    date: str | None = None
    info: str | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's status, as ``GetJobStatus`` and ``ListJobs`` report it.

    ``status`` is None when the server reports a state this client does not
    know (``Unknown``).  Times are timezone-aware UTC datetimes, or None;
    ``estimated`` is the job's own estimate of when it will complete.
    ``queue`` and ``priority`` say where it waits; ``due`` is when it is due
    (a job whose time has not come is ``Created``); ``schedule`` names the
    recurring schedule that made it.
    """

    transaction_id: str
    project: str
    job_name: str
    status: JobState | None
    identity: str
    worker_id: str
    status_message: str
    created: dt.datetime | None
    started: dt.datetime | None
    updated: dt.datetime | None
    completed: dt.datetime | None
    estimated: dt.datetime | None
    progress: Progress
    outputs: tuple[Output, ...]
    parameters: Mapping[str, str]
    poll_after_s: float
    lines: int
    queue: str = "default"
    priority: int = 5
    due: dt.datetime | None = None
    schedule: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status is not None and self.status.is_final


@dataclass(frozen=True, slots=True)
class JobInfo(JobStatus):
    """A job's status and history, as ``GetJobInformation`` reports it."""

    history: tuple[HistoryEntry, ...] = ()


class JobList(list[JobStatus]):
    """Jobs in transaction order, as ``list_jobs`` returns them: a list, and
    ``next_after``, the cursor of the jobs that follow (None when none do)."""

    __slots__ = ("next_after",)

    def __init__(self, jobs: Iterable[JobStatus] = (), next_after: str | None = None) -> None:
        super().__init__(jobs)
        self.next_after = next_after

    def __repr__(self) -> str:
        return f"JobList({list.__repr__(self)}, next_after={self.next_after!r})"


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The server's answer to cancel, suspend, resume or delete.

    ``requested`` is True when the server only took note (a running job that is
    suspended at its next checkpoint).
    """

    transaction_id: str
    text: str

    @property
    def requested(self) -> bool:
        return self.text.endswith(" requested")


@dataclass(frozen=True, slots=True)
class QueueLength:
    """How many jobs wait for a slot and how many run (``GetJobQueueLen``)."""

    queued: int
    running: int


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue, as ``ListQueues`` reports it: jobs waiting and running, its
    ``max_running``, whether it is paused, and its jobs not due yet."""

    name: str
    waiting: int
    running: int
    max_running: int
    paused: bool
    scheduled: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of a cluster, as ``ListNodes`` reports it (a single server is a
    cluster of one): its name and address, when it started (an ISO 8601 time),
    seconds since its last heartbeat, and the jobs it runs."""

    name: str
    address: str
    started: str
    heartbeat_age_s: float
    running: int


@dataclass(frozen=True, slots=True)
class TaskLogEntry:
    """One event of the server's task log: a job queued, started, suspended,
    resumed or ended (``event`` is the history status: ``queued``, ``start``,
    ``complete``...).  ``timestamp`` is a timezone-aware UTC datetime, to the second."""

    timestamp: dt.datetime | None
    transaction_id: str
    project: str
    event: str
