"""What the client hands back: typed results, and how replies are read into them.

Sans-I/O: functions here turn reply lines and JSON text into dataclasses and
know nothing of sockets.  Job states are the server's own ``JobState``; the
completion codes are the server's own ``Status`` members.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import ProtocolError
from ..wire.codes import ERROR_THRESHOLD, Status
from ..wire.formats import split_parameters
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
    "status_from_json",
    "queues_from_json",
    "nodes_from_json",
    "NodeInfo",
    "info_from_json",
    "job_page_from_json",
    "outputs_from_json",
    "queue_length_from_lines",
    "projects_from_lines",
    "task_log_from_lines",
]

_COMPLETIONS = {outcome.status.value: outcome for outcome in Outcome}
_PROGRESS = re.compile(r"Progress: (\d+)/(\d+)(?: \((\d+)%\))?(?: (.*))?", re.DOTALL)
_STATES_BY_NUMBER = {state.number: state for state in JobState}
_TRANSACTION_ID = re.compile("T[0-9]{7}")


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


# -- reading text replies -----------------------------------------------------------


def queue_length_from_lines(lines: list[str]) -> QueueLength:
    """Read ``Queued: N`` and ``Running: N``.

    Raises:
        ProtocolError: either is missing or not a number.
    """
    counts = dict(line.partition(": ")[::2] for line in lines)
    try:
        return QueueLength(int(counts["Queued"]), int(counts["Running"]))
    except (KeyError, ValueError):
        raise ProtocolError(f"not a queue length: {lines!r}") from None


def projects_from_lines(lines: list[str]) -> list[str]:
    """Read ``N projects`` and then one name per line.

    Raises:
        ProtocolError: the count is missing or does not match the names.
    """
    if not lines or lines[0] != f"{len(lines) - 1} projects":
        raise ProtocolError(f"not a list of projects: {lines[:1]!r}")
    return lines[1:]


def task_log_from_lines(lines: list[str]) -> list[TaskLogEntry]:
    """Read ``N events`` and then one tab-separated line per event.

    Raises:
        ProtocolError: the count or a line is not as the protocol says.
    """
    if not lines or not lines[0].endswith(" events"):
        raise ProtocolError(f"not a task log: {lines[:1]!r}")
    entries = []
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != 4:
            raise ProtocolError(f"not a task log line: {line!r}")
        try:
            when = _time(fields[0])
        except ValueError:
            raise ProtocolError(f"not a time: {fields[0]!r}") from None
        entries.append(TaskLogEntry(when, fields[1], fields[2], fields[3]))
    if lines[0] != f"{len(entries)} events":
        raise ProtocolError(f"{lines[0]!r}, but {len(entries)} lines followed")
    return entries


# -- reading JSON replies ---------------------------------------------------------


def load_json(text: str) -> Any:
    """Parse a JSON reply.

    Raises:
        ProtocolError: the text is not JSON.
    """
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"reply is not JSON: {exc}") from None


def status_from_json(data: Any) -> JobStatus:
    """Build a ``JobStatus`` from the object ``GetJobStatus`` sends with ``_sys_Format=json``.

    Raises:
        ProtocolError: the object lacks a field or has one of the wrong type.
    """
    return JobStatus(**_status_fields(_object(data)))


def info_from_json(data: Any) -> JobInfo:
    """Build a ``JobInfo`` from ``GetJobInformation``'s JSON object.

    Raises:
        ProtocolError: the object lacks a field or has one of the wrong type.
    """
    data = _object(data)
    history = tuple(_history_entry(item) for item in _list(data.get("History") or []))
    return JobInfo(**_status_fields(data), history=history)


def job_page_from_json(data: Any, after: str | None) -> tuple[list[Any], str | None]:
    """The job objects and the next page's cursor of a ``ListJobs`` JSON reply
    (``{"Jobs": [...], "Next": ...}``) to a request for the jobs after ``after``.
    A plain list, what a server without pages answers, is all there is.

    Raises:
        ProtocolError: not that shape, or a cursor that does not move forward
        (following it could go on for ever).
    """
    if isinstance(data, list):
        return data, None
    data = _object(data)
    jobs, next_after = _list(data.get("Jobs")), data.get("Next")
    if next_after is None:
        return jobs, None
    if not (isinstance(next_after, str) and _TRANSACTION_ID.fullmatch(next_after)
            and (after is None or next_after > after.upper())):
        raise ProtocolError(f"bad next page cursor {str(next_after)[:40]!r} after {after!r}")
    return jobs, next_after


def outputs_from_json(data: Any) -> tuple[Output, ...]:
    """Read a list of ``{Name, Uri, MediaType, Partial}`` objects (``Partial``
    may be missing: a server before it said nothing of it).

    Raises:
        ProtocolError: not such a list.
    """
    return tuple(_output(item) for item in _list(data))


def _status_fields(data: dict[str, Any]) -> dict[str, Any]:
    try:
        return {
            "transaction_id": str(data["Id"]),
            "project": str(data.get("Type") or ""),
            "job_name": str(data.get("JobName") or ""),
            "status": _STATES_BY_NUMBER.get(int(data["Status"])),
            "identity": str(data.get("Identity") or ""),
            "worker_id": str(data.get("WorkerId") or ""),
            "status_message": str(data.get("StatusMessage") or ""),
            "created": _time(data.get("Created")),
            "started": _time(data.get("Started")),
            "updated": _time(data.get("Updated")),
            "completed": _time(data.get("Completed")),
            "estimated": _time(data.get("Estimated")),
            "progress": _progress(data.get("Progress") or {}),
            "outputs": outputs_from_json(data.get("JobData") or []),
            "parameters": MappingProxyType(split_parameters(str(data.get("Parameters") or ""))),
            "poll_after_s": float(data.get("PollAfter") or 0),
            "lines": int(data.get("Lines") or 0),
            "queue": str(data.get("Queue") or "default"),
            "priority": int(data.get("Priority") or 5),
            "due": _time(data.get("Due")),
            "schedule": None if data.get("Schedule") is None else str(data["Schedule"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bad job status object: {exc!r}") from None


def queues_from_json(data: Any) -> list[QueueInfo]:
    """Read ``ListQueues``'s JSON list.

    Raises:
        ProtocolError: not such a list.
    """
    queues = []
    for item in _list(data):
        item = _object(item)
        try:
            queues.append(QueueInfo(str(item["Name"]), int(item["Waiting"]),
                                    int(item["Running"]), int(item["MaxRunning"]),
                                    bool(item["Paused"]), int(item["Scheduled"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad queue object: {exc!r}") from None
    return queues


def nodes_from_json(data: Any) -> list[NodeInfo]:
    """Read ``ListNodes``'s JSON list.

    Raises:
        ProtocolError: not such a list.
    """
    nodes = []
    for item in _list(data):
        item = _object(item)
        try:
            nodes.append(NodeInfo(str(item["Name"]), str(item["Address"]),
                                  str(item["Started"]), float(item["HeartbeatAge"]),
                                  int(item["Running"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad node object: {exc!r}") from None
    return nodes


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _list(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"expected a JSON list, got {type(data).__name__}")
    return data


def _time(value: Any) -> dt.datetime | None:
    if value in (None, ""):
        return None
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _progress(data: Any) -> Progress:
    data = _object(data)
    return Progress(int(data.get("Done") or 0), int(data.get("Total") or 0),
                    int(data.get("Percent") or 0), str(data.get("Message") or ""))


def _output(data: Any) -> Output:
    data = _object(data)
    try:
        media_type = data.get("MediaType")
        return Output(str(data["Name"]), str(data["Uri"]),
                      None if media_type is None else str(media_type),
                      data.get("Partial") is True)
    except KeyError as exc:
        raise ProtocolError(f"output without {exc.args[0]}") from None


def _history_entry(data: Any) -> HistoryEntry:
    data = _object(data)

    def optional(key: str) -> str | None:
        value = data.get(key)
        return None if value is None else str(value)

    return HistoryEntry(str(data.get("Stage") or ""), str(data.get("Status") or ""),
                        optional("Timestamp"), optional("Date"), optional("Info"))
