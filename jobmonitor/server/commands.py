"""The commands: one method per ``job_command`` name, packets in, responses out.

A command reads the packet's variables, asks the engine, and returns a
``Response``: the text of the ``R0000000`` reply and, for a monitored job, the
transaction whose stream the connection should follow.  Refusals are
``RequestError``s; the connection turns them into error replies.  Nothing here
touches a socket.
"""

from __future__ import annotations

import asyncio
import difflib
import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from sys import intern
from typing import Any

from .._version import __version__
from ..engine.engine import Engine
from ..engine.job import Job
from ..engine.queues import QueueRow
from ..errors import ConfigError, RequestError
from ..store.shared import Action
from ..users import User
from ..wire.codes import Reply
from ..wire.formats import (
    FORMATS,
    ListRenderer,
    cell,
    iso_time,
    job_dict,
    key_values,
    outputs_header,
    render,
    render_table,
    to_json,
)
from ..wire.lines import clip
from ..wire.packet import Packet
from ..wire.records import JobRecord
from ..wire.variables import (
    AFTER,
    CLIENT_JOB_MONITOR,
    FILTER,
    FORMAT,
    FROM_LINE,
    JOB_TOKEN,
    LIMIT,
    PASSWORD,
    PROJECT_NAME,
    SYSTEM_PREFIX,
    TRANSACTION_ID,
    USER,
    USER_TOKEN,
    parse_bool,
    parse_choice,
    parse_count,
    parse_line_number,
    parse_transaction_id,
    required,
)
from .auth import Authenticator
from .placement import placement_of, queue_name_of

__all__ = ["Commands", "Caller", "Response"]

ANONYMOUS = "anonymous"
#: Most recorded lines one GetTaskLog reply carries (page on with _sys_FromLine).
MAX_LOG_LINES = 10_000
#: Jobs one ListJobs reply carries unless _sys_Limit asks for fewer or more, and
#: the most it may ask for: a page is read, rendered and sent in one piece.
LIST_LIMIT = 1_000
MAX_LIST_LIMIT = 10_000
#: Longest a ListJobs page is rendered before the event loop gets a turn (a page
#: of 1 000 jobs takes tens of milliseconds in JSON, more in XML).
RENDER_TURN_S = 0.002
#: Longest unknown command name compared with the known ones for a suggestion.
MAX_SUGGESTED_LENGTH = 40


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a packet: the job identity to use, and what they may do."""

    identity: str
    #: True for a user who is not an admin: they see and act on their own jobs
    #: only.  False for an admin, and for everyone on an open server (no users).
    restricted: bool = False


#: The caller of every packet on an open server that names no user token (frozen:
#: one for all, not one per packet).
_ANONYMOUS_CALLER = Caller(ANONYMOUS)


@dataclass(frozen=True, slots=True)
class Response:
    """What a command answers: reply text, and optionally a job stream to follow."""

    text: str
    follow: str | None = None  # a transaction ID
    from_line: int = 1


class Commands:
    """Executes command packets against an engine."""

    def __init__(self, engine: Engine, *, auth: Authenticator | None = None,
                 restart: Callable[[], Awaitable[None]] | None = None,
                 max_monitors_per_job: int = 0) -> None:
        self._engine = engine
        self._auth = auth
        self._restart = restart
        self._max_monitors = max_monitors_per_job
        self._table: dict[str, Callable[[Packet, Caller], Awaitable[Response]]] = {
            "SubmitJob": self.submit_job,
            "MonitorJob": self.monitor_job,
            "CancelJob": self.cancel_job,
            "SuspendJob": self.suspend_job,
            "ResumeJob": self.resume_job,
            "DeleteJob": self.delete_job,
            "GetJobStatus": self.get_job_status,
            "GetJobInformation": self.get_job_information,
            "ListJobs": self.list_jobs,
            "ListProjects": self.list_projects,
            "RetrieveJob": self.retrieve_job,
            "GetTaskLog": self.get_task_log,
            "GetJobQueueLen": self.get_job_queue_len,
            "GetBuildString": self.get_build_string,
            "RestartServer": self.restart_server,
            # (queues and reruns: issue 20)
            "ListQueues": self.list_queues,
            "PauseQueue": self.pause_queue,
            "ResumeQueue": self.resume_queue,
            "RerunJob": self.rerun_job,
            # (the cluster: issue 18)
            "ListNodes": self.list_nodes,
        }

    @property
    def names(self) -> list[str]:
        return sorted(self._table)

    def configure(self, users: tuple[User, ...], max_monitors_per_job: int) -> None:
        """Check credentials against ``users`` and allow ``max_monitors_per_job``
        from now on (a reload)."""
        if self._auth is None:
            self._auth = Authenticator(users)
        else:
            self._auth.set_users(users)
        self._max_monitors = max_monitors_per_job

    async def caller(self, packet: Packet, peer: Callable[[], str] = str) -> Caller:
        """Who sent the packet, whose address ``peer()`` gives (asked only when
        credentials are checked: it may cost a system call).  The credentials'
        check may wait (see ``Authenticator.authenticate``); a connection lost
        meanwhile cancels it, where a command under way runs to its end: so
        ``caller`` and ``execute`` are two steps.

        Raises:
            RequestError: the command is unknown, or the credentials are missing
            or wrong when users are configured.
        """
        caller = self.open_caller(packet)
        if caller is not None:
            return caller
        return await self._authenticated(packet, peer())

    def open_caller(self, packet: Packet) -> Caller | None:
        """``caller``'s answer when no credentials are checked (no users are
        configured), without a coroutine; None when they must be (then await
        ``caller``).

        Raises:
            RequestError: the command is unknown.
        """
        if packet.command not in self._table:
            raise RequestError(Reply.UNKNOWN_COMMAND,
                               clip(packet.command, 80) + self._suggestion(packet.command))
        if self._auth is None or not self._auth.enabled:
            token = packet.variables.get(USER_TOKEN, "").strip()
            return Caller(token) if token else _ANONYMOUS_CALLER
        return None

    def _suggestion(self, command: str) -> str:
        """`` (did you mean GetJobStatus?)`` for a name close to a command's (in
        any case), else nothing.  A long name is no typo: it is not compared."""
        if len(command) > MAX_SUGGESTED_LENGTH:
            return ""
        by_folded = {name.casefold(): name for name in self._table}
        close = difflib.get_close_matches(command.strip().casefold(), by_folded, n=1)
        return f" (did you mean {by_folded[close[0]]}?)" if close else ""

    async def execute(self, packet: Packet, caller: Caller) -> Response:
        """Carry out a packet of a known command (``caller`` checked it) for ``caller``.

        Raises:
            RequestError: the command is refused.
        """
        return await self._table[packet.command](packet, caller)

    async def _authenticated(self, packet: Packet, peer: str) -> Caller:
        assert self._auth is not None
        name = packet.variables.get(USER, "")
        user = await self._auth.authenticate(name, packet.variables.get(PASSWORD, ""),
                                             peer)
        if user is None:
            # The password is never quoted back, even to its sender.
            hint = packet.value_hint(PASSWORD, quote=False)
            if not name:
                hint = packet.value_hint(USER) or hint
            detail = f"give {USER} and {PASSWORD}" if not name else "wrong user or password"
            raise RequestError(Reply.NOT_AUTHENTICATED, detail + hint)
        return Caller(user.name, restricted=not user.is_admin)

    @staticmethod
    def _require_admin(caller: Caller, what: str) -> None:
        if caller.restricted:
            raise RequestError(Reply.PERMISSION_DENIED, f"{what} is for administrators")

    # -- naming a job ------------------------------------------------------------------

    async def _transaction(self, packet: Packet, caller: Caller) -> str:
        """The job a packet names: ``_sys_TransactionID``, or user and job tokens.

        A restricted caller's view holds only their own jobs: another user's job
        is reported as unknown, so transaction IDs cannot be probed.  Anyone
        else (an admin) names another user's job token with ``_sys_UserToken``.
        """
        transaction_id = packet.variables.get(TRANSACTION_ID, "").strip()
        job_token = packet.variables.get(JOB_TOKEN, "").strip()
        if not transaction_id and not job_token:
            hint = packet.value_hint(TRANSACTION_ID) or packet.value_hint(JOB_TOKEN)
            raise RequestError(Reply.MISSING_VARIABLE,
                               f"{TRANSACTION_ID} (or {JOB_TOKEN})" + hint)
        owner = caller.identity
        if not caller.restricted:
            owner = packet.variables.get(USER_TOKEN, "").strip() or owner
        found = await self._engine.jobs.resolve(transaction_id, owner, job_token)
        if (caller.restricted
                and (await self._engine.jobs.record(found)).identity != caller.identity):
            raise RequestError(Reply.UNKNOWN_TRANSACTION, clip(found))
        return found

    def _check_monitors(self, transaction_id: str) -> None:
        limit = self._max_monitors
        if limit and self._engine.jobs.monitor_count(transaction_id) >= limit:
            raise RequestError(Reply.SERVER_BUSY, f"{transaction_id} already has {limit} monitors")

    async def _act(self, packet: Packet, caller: Caller, action: Action,
                   act: Callable[[Job], str]) -> Response:
        """``act`` on the live job a packet names (a finished one is an
        invalid-state error); in a cluster, a job another node holds is asked of
        that node, or held here first."""
        transaction_id = await self._transaction(packet, caller)
        engine = self._engine
        if engine.clustered and engine.jobs.live(transaction_id) is None:
            asked = await engine.act_elsewhere(transaction_id, action)
            if asked is not None:
                return Response(asked)
        job = await self._active_job(transaction_id)
        try:
            return Response(act(job))
        finally:  # (in a cluster: the other nodes read what the reply says)
            await engine.settle(job)

    async def _active_job(self, transaction_id: str) -> Job:
        """The live job ``transaction_id``; a finished one is an invalid-state error."""
        job = self._engine.jobs.live(transaction_id)
        if job is None or job.state.is_final:
            record = await self._engine.jobs.record(transaction_id)
            raise RequestError(Reply.INVALID_STATE,
                               f"{transaction_id} has already ended ({record.status.value})")
        return job

    # -- commands ---------------------------------------------------------------------

    async def submit_job(self, packet: Packet, caller: Caller) -> Response:
        project = intern(required(packet, PROJECT_NAME))
        monitor = parse_bool(packet, CLIENT_JOB_MONITOR)
        # Interned names: the same few variable names come with every job, and a
        # job kept waiting keeps its params (its project's name too: one string
        # for all its jobs, not one each).
        params = {intern(k): v for k, v in packet.variables.items()
                  if not k.startswith(SYSTEM_PREFIX)}
        if params.get(PROJECT_NAME) == project:
            params[PROJECT_NAME] = project
        transaction_id, job = await self._engine.submit(
            project, params, packet.doc_variables, identity=caller.identity,
            job_token=packet.variables.get(JOB_TOKEN, "").strip() or None,
            placement=placement_of(packet))
        if monitor and job is not None:
            self._check_monitors(transaction_id)
        return Response(transaction_id, transaction_id if monitor else None)

    async def monitor_job(self, packet: Packet, caller: Caller) -> Response:
        from_line = parse_line_number(packet, FROM_LINE)
        transaction_id = await self._transaction(packet, caller)
        await self._engine.jobs.record(transaction_id)  # unknown transaction: refused here
        self._check_monitors(transaction_id)
        return Response(transaction_id, transaction_id, from_line)

    async def cancel_job(self, packet: Packet, caller: Caller) -> Response:
        return await self._act(packet, caller, "cancel", self._cancel)

    def _cancel(self, job: Job) -> str:
        self._engine.cancel(job)
        return job.transaction_id

    async def suspend_job(self, packet: Packet, caller: Caller) -> Response:
        return await self._act(packet, caller, "suspend", self._engine.suspend)

    async def resume_job(self, packet: Packet, caller: Caller) -> Response:
        return await self._act(packet, caller, "resume", self._engine.resume)

    async def delete_job(self, packet: Packet, caller: Caller) -> Response:
        transaction_id = await self._transaction(packet, caller)
        await self._engine.delete(transaction_id)
        return Response(f"{transaction_id} deleted")

    async def get_job_status(self, packet: Packet, caller: Caller) -> Response:
        form = parse_choice(packet, FORMAT, FORMATS)
        record = await self._engine.jobs.record(await self._transaction(packet, caller))
        return Response(render(record, form))

    async def get_job_information(self, packet: Packet, caller: Caller) -> Response:
        form = parse_choice(packet, FORMAT, FORMATS)
        record = await self._engine.jobs.record(await self._transaction(packet, caller))
        return Response(render(record, form, history=True))

    async def list_jobs(self, packet: Packet, caller: Caller) -> Response:
        which = parse_choice(packet, FILTER, ("active", "all"))
        form = parse_choice(packet, FORMAT, FORMATS)
        limit = parse_count(packet, LIMIT, LIST_LIMIT, MAX_LIST_LIMIT)
        after = parse_transaction_id(packet, AFTER)
        identity = packet.variables.get(USER_TOKEN, "").strip() or None
        if caller.restricted:
            identity = caller.identity
        page = await self._engine.jobs.list_page(which == "active", identity, after=after,
                                                 limit=limit)
        return Response(await _rendered(page.records, page.next_after, form))

    async def list_projects(self, packet: Packet, caller: Caller) -> Response:
        names = self._engine.handler_names()
        return Response("\n".join([f"{len(names)} projects", *map(cell, names)]))

    async def retrieve_job(self, packet: Packet, caller: Caller) -> Response:
        form = parse_choice(packet, FORMAT, ("text", "json"))
        record = await self._engine.jobs.record(await self._transaction(packet, caller))
        if form == "json":
            return Response(to_json(job_dict(record)["JobData"]))
        header = outputs_header(record)
        if self._engine.clustered and record.worker:  # (its files are on that node)
            header += f" (on node {record.worker})"
        rows = [header] + [
            "\t".join((cell(o.name), cell(o.uri), cell(o.media_type or "")))
            for o in record.outputs]
        return Response("\n".join(rows))

    async def get_task_log(self, packet: Packet, caller: Caller) -> Response:
        if TRANSACTION_ID in packet.variables or JOB_TOKEN in packet.variables:
            return await self._job_log(packet, caller)
        self._require_admin(caller, "the server's task log")
        events = await self._engine.task_log()
        rows = [f"{len(events)} events"] + [
            "\t".join((iso_time(e.event.timestamp) or "", e.transaction_id, cell(e.project),
                       e.event.status)) for e in events]
        return Response("\n".join(rows))

    async def _job_log(self, packet: Packet, caller: Caller) -> Response:
        from_line = parse_line_number(packet, FROM_LINE)
        transaction_id = await self._transaction(packet, caller)
        total = (await self._engine.jobs.record(transaction_id)).line_count
        lines = await self._engine.jobs.read_lines(transaction_id, from_line, MAX_LOG_LINES)
        header = (f"Lines: {from_line}-{from_line + len(lines) - 1} of {total}" if lines
                  else f"Lines: 0 of {total}")
        return Response("\n".join([header] + [line.decode().rstrip("\r\n") for line in lines]))

    async def get_job_queue_len(self, packet: Packet, caller: Caller) -> Response:
        engine = self._engine
        return Response(key_values([("Queued", engine.queued_count),
                                    ("Running", engine.running_count)]))

    async def get_build_string(self, packet: Packet, caller: Caller) -> Response:
        return Response(build_string())

    async def restart_server(self, packet: Packet, caller: Caller) -> Response:
        self._require_admin(caller, "RestartServer")
        if self._restart is None:
            raise RequestError(Reply.INVALID_STATE, "this server cannot restart its engine")
        try:
            await self._restart()
        except ConfigError as exc:
            raise RequestError(Reply.INTERNAL_ERROR,
                               f"reloading job modules failed: {exc}") from None
        return Response("Job engine restarted")

    # -- queues and reruns ------------------------------------------------------------

    async def list_queues(self, packet: Packet, caller: Caller) -> Response:
        form = parse_choice(packet, FORMAT, ("text", "json"))
        rows = self._engine.queue_rows()
        if form == "json":
            return Response(to_json([queue_fields(row) for row in rows]))
        return Response("\n".join([f"{len(rows)} queues"] + [
            "\t".join((cell(r.name), str(r.waiting), str(r.running), str(r.max_running),
                       "true" if r.paused else "false", str(r.scheduled))) for r in rows]))

    async def list_nodes(self, packet: Packet, caller: Caller) -> Response:
        self._require_admin(caller, "ListNodes")
        form = parse_choice(packet, FORMAT, FORMATS)
        rows = [{"Name": node.name, "Address": node.address,
                 "Started": iso_time(node.started), "HeartbeatAge": round(node.heartbeat_age_s, 1),
                 "Running": node.running} for node in await self._engine.nodes()]
        return Response(render_table(rows, form, noun="nodes", root="Nodes", item="Node"))

    async def pause_queue(self, packet: Packet, caller: Caller) -> Response:
        self._require_admin(caller, "PauseQueue")
        name = queue_name_of(packet)
        await self._engine.pause_queue(name)
        return Response(f"Queue {name} paused")

    async def resume_queue(self, packet: Packet, caller: Caller) -> Response:
        self._require_admin(caller, "ResumeQueue")
        name = queue_name_of(packet)
        await self._engine.resume_queue(name)
        return Response(f"Queue {name} resumed")

    async def rerun_job(self, packet: Packet, caller: Caller) -> Response:
        monitor = parse_bool(packet, CLIENT_JOB_MONITOR)
        job = await self._engine.rerun(await self._transaction(packet, caller), caller.identity)
        if monitor:
            self._check_monitors(job.transaction_id)
        return Response(job.transaction_id, job.transaction_id if monitor else None)


def queue_fields(row: QueueRow) -> dict[str, Any]:
    """A queue as ``ListQueues`` shows it in JSON."""
    return {"Name": row.name, "Waiting": row.waiting, "Running": row.running,
            "MaxRunning": row.max_running, "Paused": row.paused, "Scheduled": row.scheduled}


async def _rendered(records: list[JobRecord], next_after: str | None, form: str) -> str:
    """A ListJobs page's reply text, made in turns of ``RENDER_TURN_S`` so that
    others' commands (a submit) are not held up for the whole page."""
    renderer = ListRenderer(form)
    loop = asyncio.get_running_loop()
    turn_ends = loop.time() + RENDER_TURN_S
    for start in range(0, len(records), _RENDER_STEP):
        if loop.time() > turn_ends:
            await asyncio.sleep(0)
            turn_ends = loop.time() + RENDER_TURN_S
        renderer.add(records[start:start + _RENDER_STEP])
    return renderer.text(next_after)


#: Jobs rendered between two looks at the clock.
_RENDER_STEP = 10


def build_string() -> str:
    """The server's version and build, as GetBuildString answers it."""
    return (f"jobmonitor {__version__} (Python {platform.python_version()}, "
            f"{platform.system() or 'unknown OS'})")
