"""The asyncio client: one method per server command, typed results.

A ``Client`` keeps its connection between calls (``keep_open``): each packet
carries ``_sys_KeepOpen``, and once its answer is complete (the reply, or a
stream's ended line) the connection waits, idle, for the next call.  Calls
made at the same time use connections of their own.  ``kept`` reuses them,
replaces one the server closed, and says when a command is sent again.  With
``keep_open=False`` every request opens its own connection, as the protocol's
original format has it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import ssl
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..errors import ProtocolError
from ..wire import DEFAULT_PORT
from ..wire.packet_build import build_packet
from ..wire.variables import (
    AFTER,
    CLIENT_JOB_MONITOR,
    DELAY_SECONDS,
    FILTER,
    FORMAT,
    FROM_LINE,
    JOB_NAME,
    JOB_TOKEN,
    KEEP_OPEN,
    LIMIT,
    PASSWORD,
    PRIORITY,
    PROJECT_NAME,
    QUEUE_NAME,
    RUN_AT,
    TRANSACTION_ID,
    USER,
    USER_TOKEN,
)
from .connection import Value, close_quietly
from .decoding import (
    info_from_json,
    job_page_from_json,
    load_json,
    nodes_from_json,
    outputs_from_json,
    projects_from_lines,
    queue_length_from_lines,
    queues_from_json,
    status_from_json,
    task_log_from_lines,
)
from .kept import KeptConnections
from .results import (
    Acknowledged,
    JobInfo,
    JobList,
    JobStatus,
    NodeInfo,
    Output,
    QueueInfo,
    QueueLength,
    Reattach,
    TaskLogEntry,
)
from .transaction import Transaction

__all__ = ["Client", "connect"]

_TRANSACTION_ID = re.compile("T[0-9]{7}")  # (\d would take any script's digits)


class Client:
    """Talks to one jobmonitor server.

    ``user`` and ``password`` are sent with every packet when the server has
    users (``_sys_User``, ``_sys_Password``).  ``tls`` is an
    ``ssl.SSLContext`` (or True for the system's trusted certificates) for a
    server started with ``--tls-cert``.  ``user_token`` is the identity sent
    with submits and job lists unless a call gives its own (a server with users
    uses the user's name instead).  ``reconnect_timeout_s`` bounds how long a
    transaction keeps trying to re-attach after its connection dropped.
    ``on_reattach``, if given, is called with a ``Reattach`` when a
    transaction's connection is lost and it starts re-attaching, and again
    when it has re-attached (never when the stream does not break): a
    program can tell its user why no line comes meanwhile.  It is called on
    the event loop, from inside the transaction's iteration, so it must not
    block, and what it raises comes out of that iteration.

    ``keep_open`` (the default) keeps the connection for the next call
    (see the module's docstring); close the client (``aclose``, or ``async
    with``) to close it.  A client that is never closed drops its idle
    connections when it is garbage-collected.

    Every method can raise ``ReplyError`` (an error reply: ``.code`` and
    ``.text``), ``OSError`` (the server cannot be reached: refused, timed out,
    reset) and ``ProtocolError`` (the server's answer is not the protocol).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 user: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | bool | None = None, user_token: str | None = None,
                 connect_timeout_s: float = 10.0, reply_timeout_s: float = 30.0,
                 reconnect_timeout_s: float = 60.0,
                 on_reattach: Callable[[Reattach], None] | None = None,
                 keep_open: bool = True) -> None:
        self.host = host
        self.port = port
        self.user = user
        self._password = password or ""
        self.tls = ssl.create_default_context() if tls is True else (tls or None)
        self.user_token = user_token
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.on_reattach = on_reattach
        self.keep_open = keep_open
        #: What ``GetBuildString`` answered, once ``connect()`` has asked.
        self.server_build: str | None = None
        self._transactions: weakref.WeakSet[Transaction] = weakref.WeakSet()
        self._connections = KeptConnections()
        weakref.finalize(self, self._connections.idle.abandon).atexit = False

    def __repr__(self) -> str:
        return f"<Client {self.host}:{self.port}>"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle kept connections, and drop the connections of this
        client's open transactions (their jobs run on).  The client can still be
        used: a later call opens a new connection."""
        for transaction in list(self._transactions):
            await transaction.aclose()
        await self._connections.idle.aclose()

    # -- the general request ------------------------------------------------------

    async def request(self, command: str, variables: Mapping[str, Value] | None = None,
                      doc_variables: Mapping[str, Value] | None = None) -> list[str]:
        """Send any command; return the text of each line of its reply.

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        return await self._request(command, variables, doc_variables, self.reply_timeout_s)

    async def _request(self, command: str, variables: Mapping[str, Value] | None,
                       doc_variables: Mapping[str, Value] | None,
                       reply_timeout_s: float | None) -> list[str]:
        reader, writer, lines = await self._connections.exchange(
            self, command, variables or {}, doc_variables, reply_timeout_s)
        await self._connections.done_with(self, reader, writer)
        return lines

    def _packet(self, command: str, variables: Mapping[str, Value],
                doc_variables: Mapping[str, Value] | None) -> bytes:
        """The packet of ``command``: with the credentials, and ``_sys_KeepOpen``
        unless ``keep_open`` is off (what every call sends).

        Raises:
            ValueError, TypeError: a name or value no packet can carry.
        """
        if self.user is not None:
            variables = {**variables, USER: self.user, PASSWORD: self._password}
        if self.keep_open:
            variables = {**variables, KEEP_OPEN: "true"}
        return build_packet(command, dict(variables),
                            None if doc_variables is None else dict(doc_variables))

    def _stream_ended(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A transaction read its stream's ended line: its connection is done with."""
        self._connections.stream_ended(self, reader, writer)

    async def _request_json(self, command: str, variables: Mapping[str, Value]) -> object:
        lines = await self.request(command, {**variables, FORMAT: "json"})
        return load_json("\n".join(lines))

    # -- jobs -------------------------------------------------------------------------

    async def submit(self, project: str, variables: Mapping[str, Value] | None = None, *,
                     job_name: str | None = None, monitor: bool = True,
                     user_token: str | None = None, job_token: str | None = None,
                     doc_variables: Mapping[str, Value] | None = None,
                     queue: str | None = None, priority: int | None = None,
                     run_at: dt.datetime | None = None,
                     delay_s: float | None = None) -> Transaction:
        """Submit a job of ``project`` with job ``variables``; return its handle.

        With ``monitor`` the handle follows the stream on the submit's own
        connection; without it, the handle attaches (``MonitorJob``) only if
        it is iterated or asked for its result.  Submitting again with the
        same ``user_token`` and ``job_token`` returns the existing job.
        ``queue`` and ``priority`` (1 to 9, higher first; the server's default
        is 5) say where it waits; ``run_at`` (a timezone-aware datetime) or
        ``delay_s`` when it is due: until then it is ``Created``.

        Raises:
            ValueError: ``run_at`` has no time zone, or both ``run_at`` and
            ``delay_s`` are given.
            ReplyError: ``R0005007`` for a value the server refuses; and see the class.
        """
        packet = {**(variables or {}), PROJECT_NAME: project,
                  CLIENT_JOB_MONITOR: "true" if monitor else "false",
                  **_placement(queue, priority, run_at, delay_s)}
        if job_name is not None:
            packet[JOB_NAME] = job_name
        user_token = user_token if user_token is not None else self.user_token
        if user_token is not None:
            packet[USER_TOKEN] = user_token
        if job_token is not None:
            packet[JOB_TOKEN] = job_token
        reader, writer, lines = await self._connections.exchange(
            self, "SubmitJob", packet, doc_variables, self.reply_timeout_s)
        try:
            transaction_id = _transaction_id(lines)
        except BaseException:
            await close_quietly(writer)
            raise
        if not monitor:
            await self._connections.done_with(self, reader, writer)
            return self._track(Transaction(self, transaction_id))
        return self._track(Transaction(self, transaction_id, reader, writer))

    async def rerun(self, transaction_id: str, *, monitor: bool = True) -> Transaction:
        """Run a finished job again (``RerunJob``): a new job with its project,
        variables, queue and priority; return the new job's handle (following
        its stream with ``monitor``, as ``submit`` does).

        Raises:
            ReplyError: ``R0005010`` while the job has not ended; and see the class.
        """
        packet = {TRANSACTION_ID: transaction_id,
                  CLIENT_JOB_MONITOR: "true" if monitor else "false"}
        reader, writer, lines = await self._connections.exchange(
            self, "RerunJob", packet, None, self.reply_timeout_s)
        try:
            new = _transaction_id(lines)
        except BaseException:
            await close_quietly(writer)
            raise
        if not monitor:
            await self._connections.done_with(self, reader, writer)
            return self._track(Transaction(self, new))
        return self._track(Transaction(self, new, reader, writer))

    async def watch(self, transaction_id: str, from_line: int = 1) -> Transaction:
        """Follow a job's stream from line ``from_line`` (1 is its first line).

        The handle re-attaches by itself after a dropped connection or a
        server restart and never repeats or skips a line.

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        # The server's spelling of the ID (t0000001 names T0000001), for the handle.
        transaction_id, reader, writer = await self._open_monitor(transaction_id, from_line)
        return self._track(Transaction(self, transaction_id, reader, writer,
                                       from_line=from_line))

    async def status(self, transaction_id: str) -> JobStatus:
        """The job's status (``GetJobStatus``).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        data = await self._request_json("GetJobStatus", {TRANSACTION_ID: transaction_id})
        return status_from_json(data)

    async def info(self, transaction_id: str) -> JobInfo:
        """The job's status and history (``GetJobInformation``).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        data = await self._request_json("GetJobInformation",
                                        {TRANSACTION_ID: transaction_id})
        return info_from_json(data)

    async def list_jobs(self, *, all: bool = False, user_token: str | None = None,
                        limit: int | None = None, after: str | None = None) -> JobList:
        """Active jobs (every kept job with ``all``), optionally only one user's, in
        transaction order (``ListJobs``).

        Without ``limit``, every such job after transaction ``after`` (from the
        first without), asked for a page at a time (see ``iter_jobs``).  With
        ``limit`` (1 to the server's maximum, 10 000), one request for at most
        that many; the list's ``next_after`` is then the ``after`` of the next
        page, or None when no job follows.

        Raises:
            ReplyError: ``R0005007`` for a ``limit`` or ``after`` the server
            refuses; and see the class.
        """
        if limit is not None:
            return await self._job_page(all, user_token, after, limit)
        return JobList([job async for job in self.iter_jobs(all=all, user_token=user_token,
                                                            after=after)])

    async def iter_jobs(self, *, all: bool = False, user_token: str | None = None,
                        after: str | None = None,
                        page_size: int | None = None) -> AsyncIterator[JobStatus]:
        """Like ``list_jobs`` without a ``limit``, one job at a time: a request
        per page of ``page_size`` jobs (the server's default, 1 000, without),
        the next one sent only when this one's jobs have been taken.  A job
        submitted meanwhile is met on a later page; one deleted is not.

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        while True:
            page = await self._job_page(all, user_token, after, page_size)
            for job in page:
                yield job
            if page.next_after is None:
                return
            after = page.next_after

    async def _job_page(self, all: bool, user_token: str | None, after: str | None,
                        limit: int | None) -> JobList:
        variables: dict[str, Value] = {FILTER: "all" if all else "active"}
        user_token = user_token if user_token is not None else self.user_token
        if user_token is not None:
            variables[USER_TOKEN] = user_token
        if limit is not None:
            variables[LIMIT] = limit
        if after is not None:
            variables[AFTER] = after
        jobs, next_after = job_page_from_json(await self._request_json("ListJobs", variables),
                                              after)
        return JobList((status_from_json(item) for item in jobs), next_after)

    async def outputs(self, transaction_id: str) -> tuple[Output, ...]:
        """What the job produced (``RetrieveJob``).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        data = await self._request_json("RetrieveJob", {TRANSACTION_ID: transaction_id})
        return outputs_from_json(data)

    async def cancel(self, transaction_id: str) -> Acknowledged:
        """Cancel a queued or running job (``CancelJob``).

        Raises:
            ReplyError: e.g. ``R0005010`` for a job that has ended; and see the class.
        """
        return await self._acknowledged("CancelJob", transaction_id)

    async def suspend(self, transaction_id: str) -> Acknowledged:
        """Suspend a job (``SuspendJob``); a running one pauses at its next checkpoint,
        or at once when it can (a program job; a handler inside ``Job.pausable``).

        Raises:
            ReplyError: ``R0005010`` when the job cannot be suspended; and see the class.
        """
        return await self._acknowledged("SuspendJob", transaction_id)

    async def resume(self, transaction_id: str) -> Acknowledged:
        """Resume a suspended job (``ResumeJob``).

        Raises:
            ReplyError: ``R0005010`` when the job is not suspended; and see the class.
        """
        return await self._acknowledged("ResumeJob", transaction_id)

    async def delete(self, transaction_id: str) -> Acknowledged:
        """Forget a job that has ended (``DeleteJob``).

        Raises:
            ReplyError: ``R0005010`` while the job is active; and see the class.
        """
        return await self._acknowledged("DeleteJob", transaction_id)

    # -- the server ------------------------------------------------------------------

    async def projects(self) -> list[str]:
        """The projects the server runs, sorted (``ListProjects``).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        return projects_from_lines(await self.request("ListProjects"))

    async def queue_length(self) -> QueueLength:
        """How many jobs wait for a slot and how many run (``GetJobQueueLen``).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        return queue_length_from_lines(await self.request("GetJobQueueLen"))

    async def queues(self) -> list[QueueInfo]:
        """Every queue, by name (``ListQueues``).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        return queues_from_json(await self._request_json("ListQueues", {}))

    async def list_nodes(self) -> list[NodeInfo]:
        """The cluster's live nodes, by name (``ListNodes``; a single server lists
        itself; for administrators on a server with users).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        return nodes_from_json(await self._request_json("ListNodes", {}))

    async def pause_queue(self, name: str) -> str:
        """Start no more jobs of queue ``name`` until ``resume_queue`` (``PauseQueue``;
        its running jobs go on); return the reply's text.

        Raises:
            ReplyError: ``R0005013`` for a user who is not an admin, ``R0005007``
            for a queue the server does not allow; and see the class.
        """
        return "\n".join(await self.request("PauseQueue", {QUEUE_NAME: name}))

    async def resume_queue(self, name: str) -> str:
        """Start jobs of queue ``name`` again (``ResumeQueue``); return the reply's text.

        Raises:
            ReplyError: as ``pause_queue``; and see the class.
        """
        return "\n".join(await self.request("ResumeQueue", {QUEUE_NAME: name}))

    async def task_log(self) -> list[TaskLogEntry]:
        """The server's recent task log, oldest first (``GetTaskLog``): the last
        ``wire.variables.TASK_LOG_SIZE`` (200) jobs queued, started, suspended,
        resumed and ended.

        Raises:
            ReplyError: ``R0005013`` for a user who is not an admin; and see the class.
        """
        return task_log_from_lines(await self.request("GetTaskLog"))

    async def restart_server(self) -> str:
        """Restart the server's job engine and reload its job modules
        (``RestartServer``); return the reply's text once it runs again.

        That takes as long as running jobs take to finish, up to the server's
        ``shutdown_grace_s``, so ``reply_timeout_s`` does not apply.

        Raises:
            ReplyError: ``R0005013`` for a user who is not an admin; and see the class.
        """
        return "\n".join(await self._request("RestartServer", None, None, None))

    async def build_string(self) -> str:
        """The server's version string (``GetBuildString``).

        Raises:
            ReplyError, OSError, ProtocolError: see the class.
        """
        return "\n".join(await self.request("GetBuildString"))

    # -- helpers ------------------------------------------------------------------------

    async def _acknowledged(self, command: str, transaction_id: str) -> Acknowledged:
        lines = await self.request(command, {TRANSACTION_ID: transaction_id})
        text = "\n".join(lines)
        return Acknowledged(text.split(" ", 1)[0] or transaction_id, text)

    async def _open_monitor(self, transaction_id: str, from_line: int
                            ) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
        """Attach to a job's stream; the transaction ID as the server answered it."""
        variables = {TRANSACTION_ID: transaction_id, FROM_LINE: str(from_line)}
        reader, writer, lines = await self._connections.exchange(
            self, "MonitorJob", variables, None, self.reply_timeout_s)
        try:
            answered = _transaction_id(lines)
        except BaseException:
            await close_quietly(writer)
            raise
        return answered, reader, writer

    def _track(self, transaction: Transaction) -> Transaction:
        self._transactions.add(transaction)
        return transaction


def _placement(queue: str | None, priority: int | None, run_at: dt.datetime | None,
               delay_s: float | None) -> dict[str, str]:
    """The submit variables of a job's queue, priority and due time."""
    if run_at is not None and delay_s is not None:
        raise ValueError("give run_at or delay_s, not both")
    placement = {}
    if queue is not None:
        placement[QUEUE_NAME] = queue
    if priority is not None:
        placement[PRIORITY] = str(priority)
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at must have a time zone (e.g. datetime.timezone.utc)")
        placement[RUN_AT] = run_at.isoformat()
    if delay_s is not None:
        placement[DELAY_SECONDS] = f"{delay_s:.6f}".rstrip("0").rstrip(".")
    return placement


def _transaction_id(lines: list[str]) -> str:
    text = lines[0].strip() if len(lines) == 1 else ""
    if not _TRANSACTION_ID.fullmatch(text):
        raise ProtocolError(f"expected a transaction ID, got {' / '.join(lines)[:80]!r}")
    return text


async def connect(host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options: Any) -> Client:
    """Make a ``Client`` and check the server answers (``GetBuildString``).

    ``options`` are the keyword arguments of ``Client``.  Use it as
    ``async with await connect(host, port) as client:``.

    Raises:
        OSError: the server cannot be reached.
        ReplyError, ProtocolError: it answered, but not as a jobmonitor server would.
    """
    client = Client(host, port, **options)
    client.server_build = await client.build_string()
    return client
