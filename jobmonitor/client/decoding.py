"""How the client reads replies into its results: reply lines and JSON text
in, the dataclasses of ``results`` out.  Sans-I/O: nothing here knows of
sockets, and every reply that is not as the protocol says is one
``ProtocolError``."""

from __future__ import annotations

import datetime as dt
import json
import re
from types import MappingProxyType
from typing import Any

from ..errors import ProtocolError
from ..wire.formats import split_parameters
from ..wire.states import JobState
from .results import (
    HistoryEntry,
    JobInfo,
    JobStatus,
    NodeInfo,
    Output,
    Progress,
    QueueInfo,
    QueueLength,
    TaskLogEntry,
)

__all__ = [
    "load_json",
    "status_from_json",
    "info_from_json",
    "job_page_from_json",
    "outputs_from_json",
    "queues_from_json",
    "nodes_from_json",
    "queue_length_from_lines",
    "projects_from_lines",
    "task_log_from_lines",
]

_STATES_BY_NUMBER = {state.number: state for state in JobState}
_TRANSACTION_ID = re.compile("T[0-9]{7}")


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
