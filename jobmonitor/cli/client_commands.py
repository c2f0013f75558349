"""The client commands of ``jobmonitor``: submit, watch, status, info, cancel, ...

Each command builds a ``Client`` from ``--host``/``--port`` (or
``JOBMONITOR_HOST``/``JOBMONITOR_PORT``), ``--user`` (or ``JOBMONITOR_USER``;
the password comes from ``JOBMONITOR_PASSWORD`` or a prompt) and ``--tls`` /
``--cafile``, calls the library, and prints.  Every
failure becomes one line on stderr and an exit status (see ``EXIT_CODES``):
0 success, 1 the job failed, 3 partial, 4 cancelled, 2 a usage error, an
unreachable server or an error reply.  While ``submit`` or ``watch`` follows a
job whose connection was lost, a line on stderr says so, and another when it
has re-attached (the library's ``on_reattach`` hook).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from ..client import Client, JobStatus, ProtocolError, Reattach, ReplyError, Transaction
from ..wire.codes import Reply
from .output import (EXIT_CODES, JsonPrinter, LivePrinter, PlainPrinter, StreamPrinter,
                         display_text, display_width)
from ..wire import DEFAULT_PORT

__all__ = ["add_client_commands", "EXIT_CODES", "USAGE_ERROR"]

#: Exit status for a usage error, an unreachable server or an error reply.
USAGE_ERROR = 2
_BROKEN_PIPE = 141  # what a shell reports for a process killed by SIGPIPE

Action = Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]]


class UsageError(Exception):
    """A bad option value found after parsing (e.g. in the environment)."""


class OutputError(Exception):
    """Standard output cannot be written (a full disk): not the server's fault."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause) or type(cause).__name__)


class _Output:
    """Standard output, whose failures are told apart from the connection's:
    both are ``OSError``, and "cannot reach the server: No space left on
    device" would send the user looking in the wrong place.  A closed pipe
    stays a ``BrokenPipeError`` (the reader has gone: a quiet exit)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    @staticmethod
    def _guarded(call: Callable[..., Any], *args: Any) -> Any:
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
        parser.error = _one_line_error(parser)  # type: ignore[method-assign,assignment]
        return parser

    _add_submit(add)
    _add_watch(add)
    _add_queries(add)
    listing = add("list", _list, "list active jobs")
    listing.add_argument("--all", action="store_true", help="include jobs that have ended")
    listing.add_argument("--user-token", help="only this user's jobs")
    listing.add_argument("--json", action="store_true", help="print the server's JSON list")
    outputs = add("outputs", _outputs, "list what a job produced")
    outputs.add_argument("transaction_id", metavar="TX")
    outputs.add_argument("--json", action="store_true", help="print the server's JSON list")
    add("projects", _projects, "list the projects the server runs")
    add("queue", _queue, "show how many jobs are queued and running")
    add("log", _log, "show the server's recent task log (administrators)")
    add("restart-server", _restart_server,
        "restart the job engine and reload its job modules (administrators)")


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
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return port


def _line_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a line number of 1 or more, got {text!r}")
    return int(text)


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
        client = _client(args)
        where = f"{client.host}:{client.port}"
        status = asyncio.run(action(client, args))
        sys.stdout.flush()  # here, where a failure is reported as ours
        return status
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


def _client(args: argparse.Namespace) -> Client:
    """A client from the options and the environment.

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
            try:
                password = getpass.getpass(f"Password for {user}: ")
            except EOFError:  # Ctrl-D at the prompt: end its line, then say why we stop
                print(file=sys.stderr)
                raise UsageError(f"no password for {user}") from None
    tls: ssl.SSLContext | None = None
    if args.tls or args.cafile:
        try:
            tls = ssl.create_default_context(cafile=args.cafile)
        except ssl.SSLError:
            raise UsageError(f"--cafile {args.cafile}: not a PEM certificate file") from None
        except OSError as exc:
            raise UsageError(f"--cafile {args.cafile}: {exc.strerror or exc}") from None
    # One connection per command, as the protocol's original format has it: a CLI
    # command sends one or two packets, and a kept connection would gain nothing.
    return Client(host, port, user=user, password=password, tls=tls, keep_open=False)


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
        user_token=args.user_token, job_token=args.job_token)
    if not args.monitor:
        if args.json:
            JsonPrinter(sys.stdout).begin(transaction.transaction_id, "submitted")
        else:
            print(transaction.transaction_id, flush=True)
        return 0
    return await _follow(client, transaction, _printer(args), "submitted")


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
    return EXIT_CODES[result.outcome]


def _reattach_notice(client: Client, reattach: Reattach) -> str:
    """The stderr line for a transaction that lost its connection, or is back."""
    if reattach.reattached:
        return f"jobmonitor: re-attached to {reattach.transaction_id}"
    return (f"jobmonitor: lost the connection to {client.host}:{client.port}; re-attaching "
            f"to {reattach.transaction_id} from line {reattach.from_line} "
            f"(for up to {client.reconnect_timeout_s:g} s)")


def _formatted(command: str) -> Action:
    async def show(client: Client, args: argparse.Namespace) -> int:
        lines = await client.request(command, {"_sys_TransactionID": args.transaction_id,
                                               "_sys_Format": args.format})
        _print_lines(lines)
        return 0

    return show


def _control(name: str) -> Action:
    async def control(client: Client, args: argparse.Namespace) -> int:
        acknowledged = await getattr(client, name)(args.transaction_id)
        _print_lines([acknowledged.text])
        return 0

    return control


async def _list(client: Client, args: argparse.Namespace) -> int:
    if args.json:
        variables = {"_sys_Filter": "all" if args.all else "active", "_sys_Format": "json"}
        if args.user_token:
            variables["_sys_UserToken"] = args.user_token
        _print_lines(await client.request("ListJobs", variables))
        return 0
    jobs = await client.list_jobs(all=args.all, user_token=args.user_token)
    _print_lines(job_table(jobs))
    return 0


async def _outputs(client: Client, args: argparse.Namespace) -> int:
    if args.json:
        _print_lines(await client.request("RetrieveJob", {
            "_sys_TransactionID": args.transaction_id, "_sys_Format": "json"}))
        return 0
    outputs = await client.outputs(args.transaction_id)
    _print_lines(table(("NAME", "MEDIA TYPE", "URI"),
                       [(o.name, o.media_type or "-", o.uri) for o in outputs]))
    return 0


async def _projects(client: Client, args: argparse.Namespace) -> int:
    _print_lines(await client.projects())
    return 0


async def _queue(client: Client, args: argparse.Namespace) -> int:
    counts = await client.queue_length()
    _print_lines([f"Queued: {counts.queued}", f"Running: {counts.running}"])
    return 0


async def _log(client: Client, args: argparse.Namespace) -> int:
    entries = await client.task_log()
    _print_lines(table(("TIME", "TRANSACTION", "PROJECT", "EVENT"), [
        (e.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ") if e.timestamp else "-",
         e.transaction_id, e.project, e.event) for e in entries]))
    return 0


async def _restart_server(client: Client, args: argparse.Namespace) -> int:
    _print_lines([await client.restart_server()])
    return 0


def job_table(jobs: list[JobStatus]) -> list[str]:
    """Aligned columns: transaction, status, project, job name (and a header)."""
    return table(("TRANSACTION", "STATUS", "PROJECT", "JOB NAME"), [
        (job.transaction_id, job.status.value if job.status else "Unknown", job.project,
         job.job_name) for job in jobs])


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A header and rows in columns two spaces apart (in terminal cells: a wide
    character fills two); the last column is not padded."""
    rows = [header, *(tuple(display_text(cell).replace("\t", "\\x09") for cell in row)
                      for row in rows)]
    widths = [max(display_width(row[column]) for row in rows)
              for column in range(len(header) - 1)]
    return ["  ".join([*(cell + " " * (width - display_width(cell))
                         for cell, width in zip(row, widths)), row[-1]]).rstrip()
            for row in rows]


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(display_text(line), flush=True)
