"""The client commands of ``jobmonitor``: submit, watch, status, info, cancel, ...

Each command finds its ``Endpoint`` from ``--host``/``--port`` (or
``JOBMONITOR_HOST``/``JOBMONITOR_PORT``), ``--user`` (or ``JOBMONITOR_USER``;
the password comes from ``JOBMONITOR_PASSWORD`` or a prompt) and ``--tls`` /
``--cafile``, calls the library, and prints.  Every
failure becomes one line on stderr and an exit status (see ``EXIT_CODES``):
0 success, 1 the job failed, 3 partial, 4 cancelled, 5 cancelled because the
server shut down, 2 a usage error, an unreachable server or an error reply.
While ``submit`` or ``watch`` follows a job whose connection was lost, a line on
stderr says so, and another when it has re-attached (the library's
``on_reattach`` hook).

A command that asks one question (status, cancel, queue, ...) asks it on a
plain socket (``client.blocking``) and never imports asyncio: its start-up is
most of its time (``benchmarks/cli_startup.py``).  Only the commands that
follow a stream, or take typed results from ``Client`` (``list``), run an
event loop: an ``async def`` action is given a ``Client``, any other action
the ``Endpoint`` it asks.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, cast

from ..errors import ProtocolError, ReplyError
from ..wire import DEFAULT_PORT
from ..wire.codes import Reply
from ..wire.variables import AFTER, FILTER, FORMAT, QUEUE_NAME, TRANSACTION_ID, USER_TOKEN
from .output import (
    EXIT_CODES,
    JsonPrinter,
    LivePrinter,
    PlainPrinter,
    StreamPrinter,
    display_text,
    display_width,
    exit_status,
)

if TYPE_CHECKING:
    import datetime as dt
    import ssl

    from ..client import Client, JobStatus, Reattach, Transaction
    from ..wire.states import JobState

__all__ = ["add_client_commands", "EXIT_CODES", "USAGE_ERROR"]

#: Exit status for a usage error, an unreachable server or an error reply.
USAGE_ERROR = 2
_BROKEN_PIPE = 141  # what a shell reports for a process killed by SIGPIPE

#: What a command does: asks its ``Endpoint`` and returns the exit status, or (an
#: ``async def``) runs on an event loop with a ``Client``.
_AskAction = Callable[["Endpoint", argparse.Namespace], int]
_StreamAction = Callable[["Client", argparse.Namespace], Coroutine[Any, Any, int]]
Action = _AskAction | _StreamAction


class UsageError(Exception):
    """A bad option value found after parsing (e.g. in the environment)."""


class OutputError(Exception):
    """Standard output cannot be written (a full disk): not the server's fault."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause) or type(cause).__name__)


_Result = TypeVar("_Result")


class _Output:
    """Standard output, whose failures are told apart from the connection's:
    both are ``OSError``, and "cannot reach the server: No space left on
    device" would send the user looking in the wrong place.  A closed pipe
    stays a ``BrokenPipeError`` (the reader has gone: a quiet exit)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    @staticmethod
    def _guarded(call: Callable[..., _Result], *args: Any) -> _Result:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


Adder = Callable[[str, Action, str], argparse.ArgumentParser]


def add_client_commands(commands: Any) -> None:
    """Add the client subcommands to the ``jobmonitor`` parser's subparsers."""
    common = _common_options()

    def add(name: str, action: Action, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, parents=[common], help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".")
        parser.set_defaults(run=lambda args: _run(action, args), command_parser=parser)
        # One parser's error method replaced, for its one-line message.
        parser.error = _one_line_error(parser)  # type: ignore[method-assign,assignment]
        return parser

    _add_submit(add)
    _add_watch(add)
    _add_queries(add)
    listing = add("list", _list, "list active jobs")
    listing.add_argument("--all", action="store_true", help="include jobs that have ended")
    listing.add_argument("--user-token", help="only this user's jobs")
    listing.add_argument("--json", action="store_true", help="print the server's JSON list")
    listing.add_argument("--status", type=_job_state, metavar="STATUS",
                         help="only jobs in this state (Queued, Processing, Failed, ...)")
    listing.add_argument("--project", help="only this project's jobs")
    outputs = add("outputs", _outputs, "list what a job produced")
    outputs.add_argument("transaction_id", metavar="TX")
    outputs.add_argument("--json", action="store_true", help="print the server's JSON list")
    add("projects", _projects, "list the projects the server runs")
    add("queue", _queue, "show how many jobs are queued and running")
    add("log", _log, "show the server's recent task log (administrators)")
    nodes = add("nodes", _nodes, "list the cluster's nodes: address, start, heartbeat, "
                "jobs running (administrators)")
    nodes.add_argument("--json", action="store_true", help="print the server's JSON list")
    add("restart-server", _restart_server,
        "restart the job engine and reload its job modules (administrators)")
    _add_queue_commands(add)


def _one_line_error(parser: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
    """A bad argument is one line on stderr (not argparse's usage block), exit status 2."""

    def error(message: str) -> NoReturn:
        parser.exit(USAGE_ERROR, f"{parser.prog}: {message} (see {parser.prog} --help)\n")

    return error


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", help="server address (default: $JOBMONITOR_HOST or 127.0.0.1)")
    common.add_argument("--port", type=_port, help=f"server port (default: $JOBMONITOR_PORT "
                                                   f"or {DEFAULT_PORT})")
    common.add_argument("--user", help="user name for a server with users (default: "
                                       "$JOBMONITOR_USER); the password is read from "
                                       "$JOBMONITOR_PASSWORD, or asked for")
    common.add_argument("--tls", action="store_true", help="connect with TLS")
    common.add_argument("--cafile", metavar="FILE",
                        help="trust the certificates in this PEM file (implies --tls)")
    return common


def _add_submit(add: Adder) -> None:
    submit = add("submit", _submit, "submit a job and stream its status")
    submit.add_argument("project", help="the job's ProjectName")
    submit.add_argument("-v", "--var", dest="variables", action="append", default=[],
                        type=_assignment, metavar="NAME=VALUE", help="a job variable (repeatable)")
    submit.add_argument("--job-name", help="the job's JobName")
    submit.add_argument("--no-monitor", dest="monitor", action="store_false",
                        help="print the transaction ID and return at once")
    submit.add_argument("--user-token", help="who submits (default: anonymous)")
    submit.add_argument("--job-token", help="a key of your own: submitting it again "
                                            "returns the same job")
    submit.add_argument("--json", action="store_true", help="one JSON object per line")
    submit.add_argument("--queue", metavar="NAME", help="the queue it waits in (default: "
                                                       "its project's, else 'default')")
    submit.add_argument("--priority", type=_priority, metavar="N",
                        help="1 to 9, higher first (default 5)")
    due = submit.add_mutually_exclusive_group()
    due.add_argument("--at", type=_due_time, metavar="TIME", dest="run_at",
                     help="run it at this ISO 8601 time with a time zone, e.g. "
                          "2026-12-24T06:00:00Z (until then it is Created)")
    due.add_argument("--delay", type=_seconds, metavar="SECONDS", dest="delay_s",
                     help="run it this many seconds from now")


def _add_queue_commands(add: Adder) -> None:
    queues = add("queues", _queues, "list the queues: jobs waiting, running and scheduled")
    queues.add_argument("--json", action="store_true", help="print the server's JSON list")
    for name, text in (("pause-queue", "start no more jobs of a queue (administrators)"),
                       ("resume-queue", "start jobs of a paused queue again (administrators)")):
        add(name, _queue_control(name), text).add_argument(
            "queue", metavar="NAME")
    rerun = add("rerun", _rerun, "run a finished job again as a new job, and stream it")
    rerun.add_argument("transaction_id", metavar="TX")
    rerun.add_argument("--no-monitor", dest="monitor", action="store_false",
                       help="print the new transaction ID and return at once")
    rerun.add_argument("--json", action="store_true", help="one JSON object per line")


def _add_watch(add: Adder) -> None:
    watch = add("watch", _watch, "stream a job's status lines until it ends")
    watch.add_argument("transaction_id", metavar="TX")
    watch.add_argument("--from-line", type=_line_number, default=1, metavar="N",
                       help="start at line N (1 is the first line; default 1)")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")


def _add_queries(add: Adder) -> None:
    for name, command, text in (("status", "GetJobStatus", "show a job's status"),
                                ("info", "GetJobInformation", "show a job's status and history")):
        parser = add(name, _formatted(command), text)
        parser.add_argument("transaction_id", metavar="TX")
        parser.add_argument("--format", choices=("text", "xml", "json"), default="text")
    for name, text in (("cancel", "cancel a queued or running job"),
                       ("suspend", "suspend a job (a running one pauses at its next checkpoint)"),
                       ("resume", "resume a suspended job"),
                       ("delete", "forget a job that has ended: its record and its lines")):
        add(name, _control(name), text).add_argument("transaction_id", metavar="TX")


# -- argument types ------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        port = int(text) if text.isascii() else -1  # (int() reads any script's digits)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return port


def _line_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a line number of 1 or more, got {text!r}")
    return int(text)


def _priority(text: str) -> int:
    if not (len(text) == 1 and "1" <= text <= "9"):
        raise argparse.ArgumentTypeError(f"expected a priority 1 to 9, got {text!r}")
    return int(text)


def _due_time(text: str) -> dt.datetime:
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time with a time zone, such "
                                         f"as 2026-12-24T06:00:00Z, got {text!r}")
    return when


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e9:
        raise argparse.ArgumentTypeError(f"expected a number of seconds of 0 or more, "
                                         f"got {text!r}")
    return seconds


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


# -- running a command ------------------------------------------------------------------


def _run(action: Action, args: argparse.Namespace) -> int:
    """Run one client command; turn every failure into one line and an exit status."""
    where = "the server"
    stdout, sys.stdout = sys.stdout, _Output(sys.stdout)
    try:
        endpoint = _endpoint(args)
        where = f"{endpoint.host}:{endpoint.port}"
        if inspect.iscoroutinefunction(action):
            import asyncio

            status = asyncio.run(cast(_StreamAction, action)(endpoint.client(), args))
        else:
            status = cast(_AskAction, action)(endpoint, args)
        sys.stdout.flush()  # here, where a failure is reported as ours
        return int(status)
    except UsageError as exc:
        return _fail(str(exc))
    except OutputError as exc:
        _silence_stdout()  # what is still buffered cannot be written either
        return _fail(f"cannot write the output: {display_text(str(exc))}")
    except ReplyError as exc:
        hint = ""
        if exc.reply is Reply.NOT_AUTHENTICATED and not (
                args.user or os.environ.get("JOBMONITOR_USER")):
            hint = " (give --user NAME, or set JOBMONITOR_USER and JOBMONITOR_PASSWORD)"
        return _fail(display_text(str(exc)) + hint)
    except ProtocolError as exc:
        return _fail(f"{where} did not answer as a jobmonitor server: {display_text(str(exc))}")
    except BrokenPipeError:
        _silence_stdout()
        return _BROKEN_PIPE
    except ConnectionRefusedError:
        return _fail(f"cannot connect to {where}: connection refused (is the server running?)")
    except OSError as exc:
        hint = ""
        if isinstance(exc, ConnectionError) and not (args.tls or args.cafile):
            hint = " (if the server uses TLS, add --tls)"
        reason = exc.strerror or str(exc) or (
            "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__)
        return _fail(f"cannot reach {where}: {display_text(reason)}{hint}")
    except ValueError as exc:  # a value no packet can carry (the packet builder's words)
        return _fail(display_text(str(exc)))  # (after OSError: ssl's errors are both)
    finally:
        sys.stdout = stdout


def _fail(message: str) -> int:
    print(f"jobmonitor: {message}", file=sys.stderr)
    return USAGE_ERROR


def _silence_stdout() -> None:
    # Whoever read our output has gone; keep Python's exit-time flush quiet.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class Endpoint:
    """The server a command asks, and as whom: from the options and the environment."""

    def __init__(self, host: str, port: int, user: str | None, password: str | None,
                 tls: ssl.SSLContext | None) -> None:
        self.host, self.port = host, port
        self._user, self._password, self._tls = user, password, tls

    def request(self, command: str, variables: Mapping[str, str] | None = None, *,
                reply_timeout_s: float | None = 30.0) -> list[str]:
        """Ask once, on a plain socket; the reply's lines (``blocking.request``).

        Raises:
            ReplyError, ProtocolError, OSError, ValueError: see ``blocking.request``.
        """
        from ..client.blocking import request

        return request(self.host, self.port, command, variables or {}, user=self._user,
                       password=self._password, tls=self._tls,
                       reply_timeout_s=reply_timeout_s)

    def client(self) -> Client:
        """The asyncio client, for the commands that follow a stream.  One connection
        per packet, as the protocol's original format has it: a CLI command sends
        one or two packets, and a kept connection would gain nothing."""
        from ..client.api import Client

        return Client(self.host, self.port, user=self._user, password=self._password,
                      tls=self._tls, keep_open=False)


def _endpoint(args: argparse.Namespace) -> Endpoint:
    """The server to ask, from the options and the environment.

    Raises:
        UsageError: a bad value, no password for ``--user``, or a ``--cafile``
        file that cannot be read.
    """
    host, port = _address(args)
    user = args.user or os.environ.get("JOBMONITOR_USER") or None
    password = None
    if user is not None:
        password = os.environ.get("JOBMONITOR_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise UsageError(f"no password for {user}: set JOBMONITOR_PASSWORD")
            import getpass

            try:
                password = getpass.getpass(f"Password for {user}: ")
            except EOFError:  # Ctrl-D at the prompt: end its line, then say why we stop
                print(file=sys.stderr)
                raise UsageError(f"no password for {user}") from None
    tls: ssl.SSLContext | None = None
    if args.tls or args.cafile:
        import ssl

        try:
            tls = ssl.create_default_context(cafile=args.cafile)
        except ssl.SSLError:
            raise UsageError(f"--cafile {args.cafile}: not a PEM certificate file") from None
        except OSError as exc:
            raise UsageError(f"--cafile {args.cafile}: {exc.strerror or exc}") from None
    return Endpoint(host, port, user, password, tls)


def _address(args: argparse.Namespace) -> tuple[str, int]:
    """The server address from the options, else the environment, else the default.

    Raises:
        UsageError: JOBMONITOR_PORT is not a port number.
    """
    host = args.host or os.environ.get("JOBMONITOR_HOST") or "127.0.0.1"
    if args.port is not None:
        return host, args.port
    raw = os.environ.get("JOBMONITOR_PORT", "")
    if not raw:
        return host, DEFAULT_PORT
    try:
        return host, _port(raw)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"JOBMONITOR_PORT: {exc}") from None


# -- the commands ---------------------------------------------------------------------------


def _printer(args: argparse.Namespace) -> StreamPrinter:
    if args.json:
        return JsonPrinter(sys.stdout, sys.stderr)
    live = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    return (LivePrinter if live else PlainPrinter)(sys.stdout, sys.stderr)


async def _submit(client: Client, args: argparse.Namespace) -> int:
    transaction = await client.submit(
        args.project, dict(args.variables), job_name=args.job_name, monitor=args.monitor,
        user_token=args.user_token, job_token=args.job_token, queue=args.queue,
        priority=args.priority, run_at=args.run_at, delay_s=args.delay_s)
    return await _started(client, transaction, args, "submitted")


async def _rerun(client: Client, args: argparse.Namespace) -> int:
    transaction = await client.rerun(args.transaction_id, monitor=args.monitor)
    return await _started(client, transaction, args, "rerun")


async def _started(client: Client, transaction: Transaction, args: argparse.Namespace,
                   event: str) -> int:
    """A new job's ID (``--no-monitor``), or its stream to its end."""
    if not args.monitor:
        if args.json:
            JsonPrinter(sys.stdout).begin(transaction.transaction_id, event)
        else:
            print(transaction.transaction_id, flush=True)
        return 0
    return await _follow(client, transaction, _printer(args), event)


async def _watch(client: Client, args: argparse.Namespace) -> int:
    transaction = await client.watch(args.transaction_id, args.from_line)
    return await _follow(client, transaction, _printer(args), "watching")


async def _follow(client: Client, transaction: Transaction, printer: StreamPrinter,
                  event: str) -> int:
    client.on_reattach = lambda reattach: printer.notice(_reattach_notice(client, reattach))
    try:
        async with transaction:
            printer.begin(transaction.transaction_id, event)
            async for line in transaction:
                printer.line(line)
            result = await transaction.result()
        printer.result(result)
    finally:
        printer.close()
    return exit_status(result)


def _reattach_notice(client: Client, reattach: Reattach) -> str:
    """The stderr line for a transaction that lost its connection, or is back."""
    if reattach.reattached:
        return f"jobmonitor: re-attached to {reattach.transaction_id}"
    return (f"jobmonitor: lost the connection to {client.host}:{client.port}; re-attaching "
            f"to {reattach.transaction_id} from line {reattach.from_line} "
            f"(for up to {client.reconnect_timeout_s:g} s)")


def _formatted(command: str) -> Action:
    def show(endpoint: Endpoint, args: argparse.Namespace) -> int:
        _print_lines(endpoint.request(command, {TRANSACTION_ID: args.transaction_id,
                                                FORMAT: args.format}))
        return 0

    return show


#: The command each control command sends.
_CONTROLS = {"cancel": "CancelJob", "suspend": "SuspendJob", "resume": "ResumeJob",
             "delete": "DeleteJob"}


def _control(name: str) -> Action:
    def control(endpoint: Endpoint, args: argparse.Namespace) -> int:
        text = "\n".join(endpoint.request(_CONTROLS[name],
                                          {TRANSACTION_ID: args.transaction_id}))
        if text and " " not in text:  # CancelJob answers with the transaction ID alone
            text += f" {name} requested"
        _print_lines([text])
        return 0

    return control


async def _list(client: Client, args: argparse.Namespace) -> int:
    # (--status and --project are kept here: ListJobs lists by owner and page only)
    if args.json:
        _print_lines([await _jobs_json(client, args.all, args.user_token,
                                       args.status, args.project)])
        return 0
    jobs = [job async for job in client.iter_jobs(all=args.all, user_token=args.user_token)
            if (args.status is None or job.status is args.status)
            and (args.project is None or job.project == args.project)]
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    _print_lines(job_table(jobs, width))
    return 0


def _job_state(word: str) -> JobState:
    """``--status``: a job state's name, in any case.

    Raises:
        argparse.ArgumentTypeError: no state has that name.
    """
    from ..wire.states import JobState

    for state in JobState:
        if state.value.lower() == word.lower():
            return state
    names = ", ".join(state.value for state in JobState)
    raise argparse.ArgumentTypeError(f"{word!r} is not a job state (one of {names})")


async def _jobs_json(client: Client, every: bool, user_token: str | None,
                     status: JobState | None = None, project: str | None = None) -> str:
    """The jobs of every page as one JSON list: what the server sent before its
    list had pages (only those in ``status`` and of ``project``, when given)."""
    from ..client.results import job_page_from_json, load_json
    from ..wire.formats import to_json

    variables = {FILTER: "all" if every else "active", FORMAT: "json"}
    if user_token:
        variables[USER_TOKEN] = user_token
    items: list[str] = []
    after: str | None = None
    while True:
        cursor = {AFTER: after} if after else {}
        reply = load_json("\n".join(await client.request("ListJobs", {**variables, **cursor})))
        jobs, after = job_page_from_json(reply, after)
        items.extend(to_json(job) for job in jobs
                     if (status is None or job.get("Status") == status.number)
                     and (project is None or job.get("Type") == project))
        if after is None:
            return f"[{','.join(items)}]"


def _outputs(endpoint: Endpoint, args: argparse.Namespace) -> int:
    lines = endpoint.request("RetrieveJob", {TRANSACTION_ID: args.transaction_id,
                                             FORMAT: "json"})
    if args.json:
        _print_lines(lines)
        return 0
    from ..client.results import load_json, outputs_from_json

    outputs = outputs_from_json(load_json("\n".join(lines)))
    _print_lines(table(("NAME", "MEDIA TYPE", "URI"),
                       [(o.name, o.media_type or "-", o.uri) for o in outputs]))
    if any(output.partial for output in outputs):
        # On stderr, where a person sees it and a script reading the table does not trip.
        print("jobmonitor: the job failed or was cancelled: these outputs are partial",
              file=sys.stderr)
    return 0


def _projects(endpoint: Endpoint, args: argparse.Namespace) -> int:
    from ..client.results import projects_from_lines

    _print_lines(projects_from_lines(endpoint.request("ListProjects")))
    return 0


def _queue(endpoint: Endpoint, args: argparse.Namespace) -> int:
    from ..client.results import queue_length_from_lines

    counts = queue_length_from_lines(endpoint.request("GetJobQueueLen"))
    _print_lines([f"Queued: {counts.queued}", f"Running: {counts.running}"])
    return 0


def _queues(endpoint: Endpoint, args: argparse.Namespace) -> int:
    lines = endpoint.request("ListQueues", {FORMAT: "json"})
    if args.json:
        _print_lines(lines)
        return 0
    from ..client.results import load_json, queues_from_json

    queues = queues_from_json(load_json("\n".join(lines)))
    _print_lines(table(("QUEUE", "WAITING", "RUNNING", "MAX RUNNING", "PAUSED", "SCHEDULED"), [
        (q.name, str(q.waiting), str(q.running), str(q.max_running),
         "yes" if q.paused else "no", str(q.scheduled)) for q in queues]))
    return 0


def _nodes(endpoint: Endpoint, args: argparse.Namespace) -> int:
    lines = endpoint.request("ListNodes", {FORMAT: "json"})
    if args.json:
        _print_lines(lines)
        return 0
    from ..client.results import load_json, nodes_from_json

    nodes = nodes_from_json(load_json("\n".join(lines)))
    _print_lines(table(("NODE", "ADDRESS", "STARTED", "HEARTBEAT AGE", "RUNNING"), [
        (n.name, n.address, n.started, f"{n.heartbeat_age_s:.1f} s", str(n.running))
        for n in nodes]))
    return 0


#: The command each queue control command sends.
_QUEUE_CONTROLS = {"pause-queue": "PauseQueue", "resume-queue": "ResumeQueue"}


def _queue_control(name: str) -> Action:
    def control(endpoint: Endpoint, args: argparse.Namespace) -> int:
        _print_lines(["\n".join(endpoint.request(_QUEUE_CONTROLS[name],
                                                 {QUEUE_NAME: args.queue}))])
        return 0

    return control


def _log(endpoint: Endpoint, args: argparse.Namespace) -> int:
    from ..client.results import task_log_from_lines

    entries = task_log_from_lines(endpoint.request("GetTaskLog"))
    _print_lines(table(("TIME", "TRANSACTION", "PROJECT", "EVENT"), [
        (e.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ") if e.timestamp else "-",
         e.transaction_id, e.project, e.event) for e in entries]))
    return 0


def _restart_server(endpoint: Endpoint, args: argparse.Namespace) -> int:
    # As long as running jobs take to finish (the server's grace): no reply timeout.
    _print_lines(["\n".join(endpoint.request("RestartServer", reply_timeout_s=None))])
    return 0


def job_table(jobs: list[JobStatus], width: int | None = None) -> list[str]:
    """Aligned columns: transaction, status, project, job name (and a header);
    with a terminal ``width``, a job name that would not fit is cut to it, with
    an ellipsis (the other columns are short)."""
    lines = table(("TRANSACTION", "STATUS", "PROJECT", "JOB NAME"), [
        (job.transaction_id, job.status.value if job.status else "Unknown", job.project,
         job.job_name) for job in jobs])
    return lines if width is None else [_cut(line, width) for line in lines]


def _cut(line: str, width: int) -> str:
    """``line`` in at most ``width`` terminal cells, ending in "…" when cut."""
    if display_width(line) <= width:
        return line
    kept, cells = [], 0
    for char in line:
        cells += display_width(char)
        if cells > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "\u2026"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A header and rows in columns two spaces apart (in terminal cells: a wide
    character fills two); the last column is not padded."""
    rows = [header, *(tuple(display_text(cell).replace("\t", "\\x09") for cell in row)
                      for row in rows)]
    widths = [max(display_width(row[column]) for row in rows)
              for column in range(len(header) - 1)]
    return ["  ".join([*(cell + " " * (width - display_width(cell))
                         for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in rows]


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(display_text(line), flush=True)
