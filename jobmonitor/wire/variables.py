"""The variables of a command packet that the protocol itself defines, and how
their values are read; and the facts about them both sides must agree on.

A packet's variables are the job's parameters, except those named with the
``_sys_`` prefix, which steer the server (who asks, which job, which format)
and are never handed to a job.  Their names are spelled here once: the server's
commands read them and the client library and the CLI send them.

The parsers read one variable of a ``Packet`` and refuse a bad value with the
``RequestError`` (and so the reply code) the protocol gives for it.

Two facts that involve a variable: a monitor that fell behind is told, in the
``J0005003`` notice this module formats and parses, which ``FROM_LINE`` to send
``MonitorJob`` again with; and ``GetTaskLog`` answers the last
``TASK_LOG_SIZE`` events.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import RequestError
from .codes import Reply, Status
from .lines import clip, format_line

if TYPE_CHECKING:
    from .packet import Packet

__all__ = [
    "SYSTEM_PREFIX", "PROJECT_NAME", "JOB_NAME", "USER", "PASSWORD", "USER_TOKEN", "JOB_TOKEN",
    "TRANSACTION_ID", "CLIENT_JOB_MONITOR", "FROM_LINE", "FORMAT", "FILTER", "LIMIT", "AFTER",
    "QUEUE_NAME", "PRIORITY", "RUN_AT", "DELAY_SECONDS", "KEEP_OPEN",
    "MAX_LINE_DIGITS", "TASK_LOG_SIZE", "parse_bool", "parse_choice", "parse_line_number",
    "parse_count", "parse_transaction_id", "required", "behind_notice", "behind_notice_line",
]

#: Variables named with it steer the server and are not the job's parameters.
SYSTEM_PREFIX = "_sys_"

#: ``SubmitJob``: the project (handler) to run, and the job's name.
PROJECT_NAME = "ProjectName"
JOB_NAME = "JobName"
#: Credentials, checked when the server has users.
USER = "_sys_User"
PASSWORD = "_sys_Password"
#: Whose jobs: the submitter's identity on an open server, or the user an admin
#: acts for.
USER_TOKEN = "_sys_UserToken"
#: The client's own key for a job: a second submit with it finds the first job.
JOB_TOKEN = "_sys_JobToken"
#: The job a command is about.
TRANSACTION_ID = "_sys_TransactionID"
#: ``SubmitJob``: follow the job's stream on this connection (true/false).
CLIENT_JOB_MONITOR = "_sys_ClientJobMonitor"
#: ``MonitorJob``, ``GetTaskLog``: the first line wanted (from 1).
FROM_LINE = "_sys_FromLine"
#: Status replies: text, json (or xml, where a status offers it).
FORMAT = "_sys_Format"
#: ``ListJobs``: active or all.
FILTER = "_sys_Filter"
#: ``ListJobs``: the most jobs on one page, and the last transaction ID seen
#: (the page starts after it).
LIMIT = "_sys_Limit"
AFTER = "_sys_After"
#: ``SubmitJob``: the queue the job waits in and its priority there (1 to 9);
#: ``PauseQueue``, ``ResumeQueue``: the queue.
QUEUE_NAME = "_sys_QueueName"
PRIORITY = "_sys_Priority"
#: ``SubmitJob``: when the job is due, as an ISO 8601 time or in seconds from now.
RUN_AT = "_sys_RunAt"
DELAY_SECONDS = "_sys_DelaySeconds"
#: Any command: once its answer is complete (the reply, or a monitored stream's
#: ended line), the server reads the next packet on the same connection (true/false).
KEEP_OPEN = "_sys_KeepOpen"

#: Most digits a line number may have: ten reach far past any job's length and stay
#: well inside the store's 64-bit integers (and int()'s limit on digits).
MAX_LINE_DIGITS = 10
#: Events of the server-wide task log kept, and so the most ``GetTaskLog`` answers.
TASK_LOG_SIZE = 200

_TRANSACTION_ID = re.compile("T[0-9]{7}")  # (not \d, which other scripts' digits match)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def parse_bool(packet: Packet, name: str, default: bool = False) -> bool:
    """Read a boolean variable: true/false, 1/0, yes/no, any case.

    Raises:
        RequestError: INVALID_VALUE for anything else.
    """
    raw = packet.variables.get(name)
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise RequestError(Reply.INVALID_VALUE, f"{name} must be true or false, got {clip(raw)!r}")


def parse_choice(packet: Packet, name: str, choices: tuple[str, ...]) -> str:
    """Read a variable that is one of ``choices`` (the first is the default).

    Raises:
        RequestError: INVALID_VALUE.
    """
    value = packet.variables.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise RequestError(Reply.INVALID_VALUE,
                           f"{name} must be one of {', '.join(choices)}, got {clip(value)!r}")
    return value


def parse_line_number(packet: Packet, name: str) -> int:
    """Read a line number (1 or more, in at most ``MAX_LINE_DIGITS`` ASCII digits,
    nothing else, not even a space; default 1 when absent or empty).

    Raises:
        RequestError: INVALID_VALUE.
    """
    raw = packet.variables.get(name) or "1"
    # ASCII only: str.isdigit() also passes digits such as "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_LINE_DIGITS) or int(raw) < 1:
        # (clip() folds white space away: say that it was there)
        spaced = " with white space around it" if raw != raw.strip() else ""
        raise RequestError(Reply.INVALID_VALUE,
                           f"{name} must be a line number from 1, got {clip(raw)!r}{spaced}")
    return int(raw)


def parse_count(packet: Packet, name: str, default: int, most: int) -> int:
    """Read a count from 1 to ``most`` in ASCII digits (``default`` when absent or blank).

    Raises:
        RequestError: INVALID_VALUE.
    """
    raw = packet.variables.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_LINE_DIGITS
            and 1 <= int(raw) <= most):
        raise RequestError(Reply.INVALID_VALUE,
                           f"{name} must be a number from 1 to {most}, got {clip(raw)!r}")
    return int(raw)


def parse_transaction_id(packet: Packet, name: str) -> str | None:
    """Read a transaction ID (``T`` and seven ASCII digits, any case), or None when
    absent or blank.

    Raises:
        RequestError: INVALID_VALUE.
    """
    raw = packet.variables.get(name, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and _TRANSACTION_ID.fullmatch(raw.upper())):
        raise RequestError(Reply.INVALID_VALUE,
                           f"{name} must be a transaction ID such as T0000001, got {clip(raw)!r}")
    return raw.upper()


def required(packet: Packet, name: str) -> str:
    """Read a variable that must be present and not blank.

    Raises:
        RequestError: MISSING_VARIABLE.
    """
    value = packet.variables.get(name, "").strip()
    if not value:
        raise RequestError(Reply.MISSING_VARIABLE, name + packet.value_hint(name))
    return value


# -- the notice that names the line to re-attach from ------------------------------------

_BEHIND_TEXT = f"{Status.MONITOR_BEHIND.text}: re-attach with MonitorJob from line "
_BEHIND_PREFIX = f"J{Status.MONITOR_BEHIND.value:07d}: ".encode()
_BEHIND = re.compile(re.escape(_BEHIND_PREFIX + _BEHIND_TEXT.encode()) + rb"(\d+)")


def behind_notice(next_line: int) -> bytes:
    """The line that tells a monitor it fell too far behind, and to send
    ``MonitorJob`` again with ``FROM_LINE`` set to ``next_line``.

    >>> behind_notice(3)
    b'J0005003: Monitor fell too far behind: re-attach with MonitorJob from line 3\\r\\n'
    """
    return format_line("J", Status.MONITOR_BEHIND, f"{_BEHIND_TEXT}{next_line}")


def behind_notice_line(raw: bytes) -> int | None:
    """The line to re-attach from, if ``raw`` (with or without its CRLF) is the
    notice ``behind_notice`` makes; else None (a job's own line)."""
    if not raw.startswith(_BEHIND_PREFIX):  # (every line of a stream is asked)
        return None
    match = _BEHIND.fullmatch(raw.rstrip(b"\r\n"))
    return int(match.group(1)) if match is not None else None
