"""The commands: one method per ``job_command`` name, packets in, responses out.

A command reads the packet's variables, asks the engine, and returns a
``Response``: the text of the ``R0000000`` reply and, for a monitored job, the
stream the connection should follow.  Refusals are ``RequestError``s; the
connection turns them into error replies.  Nothing here touches a socket.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import __version__
from .codes import Reply
from .engine import Engine
from .errors import RequestError
from .job import Job
from .packet import Packet
from .stream import JobStream

__all__ = ["Commands", "Response", "parse_bool", "SYSTEM_PREFIX"]

SYSTEM_PREFIX = "_sys_"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


@dataclass(frozen=True, slots=True)
class Response:
    """What a command answers: reply text, and optionally a stream to follow."""

    text: str
    follow: JobStream | None = None
    from_line: int = 1


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
    raise RequestError(Reply.INVALID_VALUE, f"{name} must be true or false, got {raw!r}")


def required(packet: Packet, name: str) -> str:
    """Read a variable that must be present and not blank.

    Raises:
        RequestError: MISSING_VARIABLE.
    """
    value = packet.variables.get(name, "").strip()
    if not value:
        raise RequestError(Reply.MISSING_VARIABLE, name)
    return value


def key_values(pairs: list[tuple[str, object]]) -> str:
    """Format ``Key: value`` reply lines; a value's own newlines are escaped."""
    return "\n".join(f"{key}: {_one_line(value)}" for key, value in pairs)


def _one_line(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def iso_time(timestamp: float | None) -> str:
    """ISO 8601 UTC with a ``Z``, or "" for no time."""
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class Commands:
    """Executes command packets against an engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._table: dict[str, Callable[[Packet], Awaitable[Response]]] = {
            "SubmitJob": self.submit_job,
            "CancelJob": self.cancel_job,
            "GetJobStatus": self.get_job_status,
            "GetJobQueueLen": self.get_job_queue_len,
            "GetBuildString": self.get_build_string,
        }

    @property
    def names(self) -> list[str]:
        return sorted(self._table)

    async def run(self, packet: Packet) -> Response:
        """Execute one packet.

        Raises:
            RequestError: the command is unknown or refused.
        """
        method = self._table.get(packet.command)
        if method is None:
            raise RequestError(Reply.UNKNOWN_COMMAND, packet.command)
        return await method(packet)

    def _job(self, packet: Packet) -> Job:
        return self._engine.find(required(packet, "_sys_TransactionID"))

    async def submit_job(self, packet: Packet) -> Response:
        project = required(packet, "ProjectName")
        monitor = parse_bool(packet, "_sys_ClientJobMonitor")
        params = {k: v for k, v in packet.variables.items() if not k.startswith(SYSTEM_PREFIX)}
        job = await self._engine.submit(project, params, packet.doc_variables)
        return Response(job.transaction_id, job.stream if monitor else None)

    async def cancel_job(self, packet: Packet) -> Response:
        job = self._job(packet)
        self._engine.cancel(job)
        return Response(job.transaction_id)

    async def get_job_status(self, packet: Packet) -> Response:
        return Response(key_values(status_pairs(self._job(packet))))

    async def get_job_queue_len(self, packet: Packet) -> Response:
        engine = self._engine
        return Response(key_values([("Queued", engine.queued_count),
                                    ("Running", engine.running_count)]))

    async def get_build_string(self, packet: Packet) -> Response:
        return Response(build_string())


def build_string() -> str:
    """The server's version and build, as GetBuildString answers it."""
    return (f"jobmonitor {__version__} (Python {platform.python_version()}, "
            f"{platform.system() or 'unknown OS'})")


def progress_text(job: Job) -> str:
    done, total = job.progress_done, job.progress_total
    if not total:
        return f"{done}" if done else ""
    return f"{done}/{total} ({done * 100 // total}%)"


def status_pairs(job: Job) -> list[tuple[str, object]]:
    """The readable fields of a job, in the order GetJobStatus lists them."""
    return [
        ("Transaction", job.transaction_id),
        ("Project", job.project),
        ("Job name", job.job_name),
        ("Status", job.state.value),
        ("Progress", progress_text(job)),
        ("Created", iso_time(job.created)),
        ("Started", iso_time(job.started)),
        ("Updated", iso_time(job.updated)),
        ("Completed", iso_time(job.completed)),
        ("Last message", job.status_message),
    ]
