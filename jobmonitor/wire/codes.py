"""The one table of reply (R) and status (J) codes.

Every coded line on the wire is ``<letter><7 digits><sep> <text>\\r\\n``.  ``R`` lines
answer a command packet; ``J`` lines are a job's status stream.  Numbers under
5000 are informational, 5000 and up are errors.  The server, the client and the
tests all take codes and their standard texts from here; ``docs/protocol.md``
documents the same table.
"""

from __future__ import annotations

import enum

__all__ = ["Reply", "Status", "ERROR_THRESHOLD", "is_error_code", "NODE_STOPPED"]

#: Codes at or above this number are errors, below it informational.
ERROR_THRESHOLD = 5000


def is_error_code(number: int) -> bool:
    """Return True when ``number`` is in the error range."""
    return number >= ERROR_THRESHOLD


class _Coded(enum.IntEnum):
    """An int code that carries its standard text as ``.text``."""

    text: str

    def __new__(cls, number: int, text: str) -> _Coded:
        member = int.__new__(cls, number)
        member._value_ = number
        member.text = text
        return member

    @property
    def is_error(self) -> bool:
        return self.value >= ERROR_THRESHOLD


class Reply(_Coded):
    """R codes: the answer to a command packet."""

    OK = 0, "OK"
    MALFORMED_PACKET = 5000, "Malformed command packet"
    UNSUPPORTED_ENCODING = 5001, "Unsupported packet encoding"
    DOCTYPE_REFUSED = 5002, "DOCTYPE not allowed in a command packet"
    PACKET_TOO_LARGE = 5003, "Command packet too large"
    PACKET_TIMEOUT = 5004, "Command packet not complete in time"
    UNKNOWN_COMMAND = 5005, "Unknown command"
    MISSING_VARIABLE = 5006, "Missing required variable"
    INVALID_VALUE = 5007, "Invalid variable value"
    UNKNOWN_PROJECT = 5008, "Unknown project"
    UNKNOWN_TRANSACTION = 5009, "Unknown transaction"
    INVALID_STATE = 5010, "Invalid state for this request"
    SERVER_BUSY = 5011, "Server busy"
    NOT_AUTHENTICATED = 5012, "Not authenticated"
    PERMISSION_DENIED = 5013, "Permission denied"
    IDLE_TIMEOUT = 5014, "Connection idle too long"
    INTERNAL_ERROR = 5999, "Internal server error"


class Status(_Coded):
    """J codes: lines of a job's status stream."""

    ENDED = 1, "Transaction {transaction_id} ended"
    SUCCESS = 20, "Job completed successfully."
    PARTIAL = 21, "Job only partially completed."
    FAILED = 22, "Job failed."
    CANCELLED = 23, "Job cancelled by user."
    INFO = 100, "Information"
    PROGRESS = 110, "Progress"
    STAGE = 120, "Stage"
    SUSPENDED = 130, "Job suspended."
    RESUMED = 131, "Job resumed."
    REQUEUED = 132, "Job queued to run again."
    SCHEDULED = 133, "Job scheduled to run at {due}."
    RERUN = 134, "Job runs {transaction_id} again."
    NOTICE = 190, "Server notice"
    ERROR = 5000, "Error"
    HANDLER_EXCEPTION = 5001, "Unexpected error in job"
    INTERRUPTED = 5002, "Job interrupted by a server restart"
    MONITOR_BEHIND = 5003, "Monitor fell too far behind"
    #: Before ``CANCELLED`` for a job the server cancelled because it stops.
    SHUTDOWN = 5004, "Job cancelled: the server is shutting down."


#: ``INTERRUPTED``'s text in a cluster, when the node that ran the job stopped
#: (another node took the job over).
NODE_STOPPED = "Job interrupted: node {node} stopped"


#: The status codes only the server says: a stream's end, its outcome, the
#: suspend and restart notices, the server's own errors (a shutdown's cancel
#: among them) and the notice that tells a monitor to re-attach.  Clients act
#: on them, so a job may not send them.
SERVER_CODES = frozenset(int(status) for status in (
    Status.ENDED, Status.SUCCESS, Status.PARTIAL, Status.FAILED, Status.CANCELLED,
    Status.SUSPENDED, Status.RESUMED, Status.REQUEUED, Status.SCHEDULED, Status.RERUN,
    Status.NOTICE,
    Status.HANDLER_EXCEPTION, Status.INTERRUPTED, Status.MONITOR_BEHIND, Status.SHUTDOWN))
