"""The JSON API under ``/api/v1/``: each call is a command packet.

A request becomes the ``Packet`` the TCP parser would have made (its
``_sys_User``/``_sys_Password`` from HTTP Basic credentials) and goes through
``Commands.caller`` and ``Commands.execute``, so who may do what, how a job
token resolves, and every refusal are the TCP port's, to the letter.  The
reply's JSON (``_sys_Format=json``) is passed on with the job's ``Address``
added.  Refusals are ``RequestError``s; the connection turns them into
problem documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from ..engine.engine import Engine
from ..errors import RequestError
from ..server.commands import Commands, Response, queue_fields
from ..server.refusals import RefusalLog
from ..wire.codes import Reply
from ..wire.packet import Packet
from ..wire.variables import (
    AFTER,
    CLIENT_JOB_MONITOR,
    FILTER,
    FORMAT,
    FROM_LINE,
    JOB_TOKEN,
    LIMIT,
    QUEUE_NAME,
    TRANSACTION_ID,
)
from .caller import UNSAFE_METHODS, credentials, same_origin
from .events import JobEvents
from .messages import (
    HttpRefusal,
    HttpResponse,
    Request,
    json_response,
    json_text_response,
    negotiate,
    text_response,
)
from .submission import json_object, submit_variables

__all__ = ["JobsApi", "PREFIX"]

PREFIX = "/api/v1/"
_LINES_HEADER = re.compile(r"Lines: (?:\d+-\d+|0) of (\d+)")
#: The query parameters of a page of jobs, and what they must be.
_LIMIT = (re.compile("[0-9]{1,10}"), "a number of jobs")
_AFTER = (re.compile("T[0-9]{7}"), "a transaction ID such as T0000001")
_ACTIONS = {"cancel": "CancelJob", "suspend": "SuspendJob", "resume": "ResumeJob"}
_QUEUE_ACTIONS = {"pause": "PauseQueue", "resume": "ResumeQueue"}
_JOB_FORMATS = ("application/json", "application/xml", "text/xml")
_LINE_FORMATS = ("application/json", "text/plain")


class JobsApi:
    """Answers ``/api/v1/...`` requests through a server's ``Commands``."""

    def __init__(self, commands: Commands, engine: Engine, refusals: RefusalLog,
                 openapi: bytes) -> None:
        self._commands = commands
        self._engine = engine
        self._refusals = refusals
        self._openapi = openapi

    async def run(self, request: Request, command: str, variables: Mapping[str, str],
                  doc_variables: Mapping[str, str] | None = None) -> Response:
        """Carry out one command packet for the request's caller.

        Raises:
            RequestError: as the same packet over TCP would be refused, and logged
            as it would be (``server.refusals``): a permission refused, or Basic
            credentials refused.  A request that sent none is not logged: asking
            for them is how a browser is told to log in.
        """
        given = credentials(request)
        packet = Packet(command, {**variables, **given}, doc_variables or {})
        try:
            caller = await self._commands.caller(packet, lambda: request.peer)
            return await self._commands.execute(packet, caller)
        except RequestError as exc:
            if given or exc.code is not Reply.NOT_AUTHENTICATED:
                self._refusals.refused(exc.code, lambda: request.peer, packet)
            raise

    async def handle(self, request: Request) -> HttpResponse | JobEvents:
        parts = _path_parts(request)
        method = request.method
        if method in UNSAFE_METHODS:
            same_origin(request)
        route, allowed = self._route(parts, "GET" if method == "HEAD" else method)
        if route is None:
            if not allowed:
                raise HttpRefusal(Reply.UNKNOWN_COMMAND, f"no such resource: "
                                                         f"{request.path[:80]}", 404)
            raise HttpRefusal(Reply.UNKNOWN_COMMAND, f"{method[:10]} is not allowed here", 405,
                              (("Allow", ", ".join(allowed)),))
        response: HttpResponse | JobEvents = await route(request, *parts[1:2])
        return response

    def _route(self, parts: list[str], method: str) -> tuple[Any, tuple[str, ...]]:
        """The handler for a path and method, and the methods the path allows."""
        table: dict[str, Any]
        tables: dict[str, dict[str, Any]]
        if parts == ["jobs"]:
            table = {"GET": self.list_jobs, "POST": self.submit}
        elif len(parts) == 2 and parts[0] == "jobs" and parts[1]:
            table = {"GET": self.job_status, "DELETE": self.delete}
        elif len(parts) == 3 and parts[0] == "jobs" and parts[1]:
            action = parts[2]
            if action in _ACTIONS:
                table = {"POST": lambda request, tid: self.act(request, tid, _ACTIONS[action])}
            elif action == "rerun":
                table = {"POST": self.rerun}
            else:
                tables = {"outputs": {"GET": self.outputs}, "lines": {"GET": self.lines},
                          "events": {"GET": self.events}}
                table = tables.get(action, {})
        elif len(parts) == 3 and parts[0] == "queues" and parts[1] and parts[2] in _QUEUE_ACTIONS:
            command = _QUEUE_ACTIONS[parts[2]]
            table = {"POST": lambda request, name: self.queue_action(request, name, command)}
        elif len(parts) == 1:
            tables = {"projects": {"GET": self.projects}, "queue": {"GET": self.queue},
                      "queues": {"GET": self.queues}, "nodes": {"GET": self.nodes},
                      "openapi.json": {"GET": self.openapi}}
            table = tables.get(parts[0], {})
        else:
            table = {}
        return table.get(method), tuple(table)

    # -- jobs -----------------------------------------------------------------------------

    async def list_jobs(self, request: Request) -> HttpResponse:
        """A page of jobs: ``{"Jobs": [...], "Next": ...}`` as ListJobs pages them
        (``limit``, and ``after`` the ``Next`` of the page before)."""
        variables = {FILTER: request.query.get("filter", "active"), FORMAT: "json"}
        # Exactly as the OpenAPI document has them (ListJobs itself lets white space
        # and a blank through); ListJobs checks the limit's range.
        for name, variable, (form, what) in (("limit", LIMIT, _LIMIT), ("after", AFTER, _AFTER)):
            value = request.query.get(name)
            if value is None:
                continue
            if not form.fullmatch(value):
                raise RequestError(Reply.INVALID_VALUE, f"{name} must be {what}, got "
                                                        f"{value[:20]!r}")
            variables[variable] = value
        reply = await self.run(request, "ListJobs", variables)
        page = json.loads(reply.text)
        return json_response({"Jobs": [_addressed(job) for job in page["Jobs"]],
                              "Next": page["Next"]})

    async def submit(self, request: Request) -> HttpResponse:
        fields = json_object(request)
        variables, doc_variables, token = submit_variables(fields)
        if token:
            try:  # the job this token already names, if any: 200 with it, as it is
                return await self._status(request, {JOB_TOKEN: token})
            except RequestError as exc:
                if exc.code is not Reply.UNKNOWN_TRANSACTION:
                    raise
            variables[JOB_TOKEN] = token
        reply = await self.run(request, "SubmitJob", variables, doc_variables)
        response = await self._status(request, {TRANSACTION_ID: reply.text}, status=201)
        response.headers.append(("Location", _address(reply.text)))
        return response

    async def job_status(self, request: Request, transaction_id: str) -> HttpResponse:
        form = negotiate(request.headers.get("accept"), _JOB_FORMATS)
        if form is None:
            raise _not_acceptable(_JOB_FORMATS)
        history = _flag(request, "history")
        if form == "application/json":
            return await self._status(request, {TRANSACTION_ID: transaction_id},
                                      history=history)
        command = "GetJobInformation" if history else "GetJobStatus"
        reply = await self.run(request, command, {TRANSACTION_ID: transaction_id,
                                                  FORMAT: "xml"})
        xml = _xml_with_address(reply.text)
        return text_response(xml, f"{form}; charset=utf-8")

    async def _status(self, request: Request, names: dict[str, str], *, status: int = 200,
                      history: bool = False) -> HttpResponse:
        command = "GetJobInformation" if history else "GetJobStatus"
        reply = await self.run(request, command, {**names, FORMAT: "json"})
        return json_text_response(_status_with_address(reply.text), status)

    async def act(self, request: Request, transaction_id: str, command: str) -> HttpResponse:
        names = {TRANSACTION_ID: transaction_id}
        await self.run(request, command, names)
        return await self._status(request, names)

    async def rerun(self, request: Request, transaction_id: str) -> HttpResponse:
        """A finished job run again as a new one: ``201`` with the new job's status."""
        reply = await self.run(request, "RerunJob", {TRANSACTION_ID: transaction_id,
                                                     CLIENT_JOB_MONITOR: "false"})
        response = await self._status(request, {TRANSACTION_ID: reply.text}, status=201)
        response.headers.append(("Location", _address(reply.text)))
        return response

    async def delete(self, request: Request, transaction_id: str) -> HttpResponse:
        await self.run(request, "DeleteJob", {TRANSACTION_ID: transaction_id})
        return HttpResponse(204, [])

    async def outputs(self, request: Request, transaction_id: str) -> HttpResponse:
        reply = await self.run(request, "RetrieveJob", {TRANSACTION_ID: transaction_id,
                                                        FORMAT: "json"})
        return json_text_response(reply.text.encode())

    async def lines(self, request: Request, transaction_id: str) -> HttpResponse:
        form = negotiate(request.headers.get("accept"), _LINE_FORMATS)
        if form is None:
            raise _not_acceptable(_LINE_FORMATS)
        first = request.query.get("from", "1")
        reply = await self.run(request, "GetTaskLog", {TRANSACTION_ID: transaction_id,
                                                       FROM_LINE: first})
        header, *lines = reply.text.split("\n")
        if form == "text/plain":
            return text_response("".join(line + "\r\n" for line in lines))
        found = _LINES_HEADER.fullmatch(header)
        start = int(first.strip() or "1")
        return json_response({"From": start, "Next": start + len(lines),
                              "Total": int(found.group(1)) if found else None, "Lines": lines})

    async def events(self, request: Request, transaction_id: str) -> HttpResponse | JobEvents:
        last_seen = request.headers.get("last-event-id", "").strip()
        if last_seen:  # an EventSource reconnecting: the header wins over ?from=
            if not (last_seen.isascii() and last_seen.isdigit() and len(last_seen) <= 10):
                raise RequestError(Reply.INVALID_VALUE, f"Last-Event-ID must be a line number, "
                                                        f"got {last_seen[:20]!r}")
            first = str(int(last_seen) + 1)
        else:
            first = request.query.get("from", "1")
        reply = await self.run(request, "MonitorJob", {TRANSACTION_ID: transaction_id,
                                                       FROM_LINE: first})
        assert reply.follow is not None  # (MonitorJob always names the job to follow)
        engine = self._engine
        record = await engine.jobs.record(reply.follow)
        if record.status.is_final and reply.from_line > record.line_count:
            return HttpResponse(204, [("Cache-Control", "no-store")])
        return JobEvents(engine, reply.follow, reply.from_line)

    # -- the server -----------------------------------------------------------------------

    async def projects(self, request: Request) -> HttpResponse:
        await self.run(request, "ListProjects", {})
        return json_response(self._engine.handler_names())

    async def queue(self, request: Request) -> HttpResponse:
        reply = await self.run(request, "GetJobQueueLen", {})
        pairs = (line.split(": ", 1) for line in reply.text.split("\n"))
        return json_response({key: int(value) for key, value in pairs})

    async def queues(self, request: Request) -> HttpResponse:
        reply = await self.run(request, "ListQueues", {FORMAT: "json"})
        return json_text_response(reply.text.encode())

    async def queue_action(self, request: Request, name: str, command: str) -> HttpResponse:
        """Pause or resume a queue: its row of ``GET queues`` after the change."""
        await self.run(request, command, {QUEUE_NAME: name})
        name = name.strip()  # (as the command takes it)
        (row,) = [row for row in self._engine.queue_rows(also=(name,)) if row.name == name]
        return json_response(queue_fields(row))

    async def nodes(self, request: Request) -> HttpResponse:
        reply = await self.run(request, "ListNodes", {FORMAT: "json"})
        return json_text_response(reply.text.encode())

    async def openapi(self, request: Request) -> HttpResponse:
        return json_text_response(self._openapi)


def _path_parts(request: Request) -> list[str]:
    """The path's segments after ``/api/v1/``, each decoded on its own: a queue
    name's ``/`` comes as ``%2F`` and stays in its segment."""
    raw_path = request.target.partition("?")[0]
    if not raw_path.startswith(PREFIX):  # (a prefix sent encoded: rare, and no name has a /)
        return request.path[len(PREFIX):].split("/")
    return [unquote(part, errors="replace") if "%" in part else part
            for part in raw_path[len(PREFIX):].split("/")]


def _flag(request: Request, name: str) -> bool:
    """A boolean query parameter: ``true`` or ``false`` (absent: false)."""
    value = request.query.get(name, "false")
    if value not in ("true", "false"):
        raise RequestError(Reply.INVALID_VALUE, f"{name} must be true or false, got "
                                                f"{value[:20]!r}")
    return value == "true"


def _address(transaction_id: str) -> str:
    return f"{PREFIX}jobs/{transaction_id}"


def _status_with_address(text: str) -> bytes:
    """A job's JSON status (``{"Id":"T...",...}``, as ``formats.to_json`` writes it)
    with its ``Address`` added at the end, without parsing it again."""
    if not (text.startswith('{"Id":"') and text.endswith("}")):
        return json.dumps(_addressed(json.loads(text)), ensure_ascii=False).encode()
    transaction_id = text[7:text.index('"', 7)]
    return f'{text[:-1]},"Address":"{_address(transaction_id)}"}}'.encode()


def _addressed(job: dict[str, Any]) -> dict[str, Any]:
    job["Address"] = _address(job["Id"])
    return job


def _xml_with_address(xml: str) -> str:
    """The JobStatus XML with an ``Address`` element before its end tag."""
    body, _, _ = xml.rpartition("</JobStatus>")
    found = re.search(r"<Id>(T\d+)</Id>", body)
    address = _address(found.group(1)) if found else ""
    return f"{body}  <Address>{address}</Address>\n</JobStatus>\n"


def _not_acceptable(offered: tuple[str, ...]) -> RequestError:
    return HttpRefusal(Reply.INVALID_VALUE, f"Accept: this resource is {' or '.join(offered)}",
                       406)
