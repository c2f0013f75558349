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

This module builds the commands' options and runs one: ``actions`` holds what
each command does, ``endpoint`` where it connects and as whom, ``output`` and
``tables`` how it prints.  A command that asks one question (status, cancel,
queue, ...) asks it on a plain socket (``client.blocking``) and never imports
asyncio: its start-up is most of its time (``benchmarks/cli_startup.py``).
Only the commands that follow a stream, or take typed results from ``Client``
(``list``), run an event loop: an ``async def`` action is given a ``Client``,
any other action the ``Endpoint`` it asks.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, cast

from ..errors import ProtocolError, ReplyError
from ..wire import DEFAULT_PORT
from ..wire.codes import Reply
from . import actions
from .actions import Action, AskAction, StreamAction
from .endpoint import UsageError, endpoint_from, port_number
from .output import EXIT_CODES, display_text

if TYPE_CHECKING:
    import datetime as dt

    from ..wire.states import JobState

__all__ = ["add_client_commands", "EXIT_CODES", "USAGE_ERROR"]

#: Exit status for a usage error, an unreachable server or an error reply.
USAGE_ERROR = 2
_BROKEN_PIPE = 141  # what a shell reports for a process killed by SIGPIPE


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
    listing = add("list", actions.list_jobs, "list active jobs")
    listing.add_argument("--all", action="store_true", help="include jobs that have ended")
    listing.add_argument("--user-token", help="only this user's jobs")
    listing.add_argument("--json", action="store_true", help="print the server's JSON list")
    listing.add_argument("--status", type=_job_state, metavar="STATUS",
                         help="only jobs in this state (Queued, Processing, Failed, ...)")
    listing.add_argument("--project", help="only this project's jobs")
    outputs = add("outputs", actions.outputs, "list what a job produced")
    outputs.add_argument("transaction_id", metavar="TX")
    outputs.add_argument("--json", action="store_true", help="print the server's JSON list")
    add("projects", actions.projects, "list the projects the server runs")
    add("queue", actions.queue, "show how many jobs are queued and running")
    add("log", actions.log, "show the server's recent task log (administrators)")
    nodes = add("nodes", actions.nodes, "list the cluster's nodes: address, start, heartbeat, "
                "jobs running (administrators)")
    nodes.add_argument("--json", action="store_true", help="print the server's JSON list")
    add("restart-server", actions.restart_server,
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
    common.add_argument("--port", type=port_number,
                        help=f"server port (default: $JOBMONITOR_PORT or {DEFAULT_PORT})")
    common.add_argument("--user", help="user name for a server with users (default: "
                                       "$JOBMONITOR_USER); the password is read from "
                                       "$JOBMONITOR_PASSWORD, or asked for")
    common.add_argument("--tls", action="store_true", help="connect with TLS")
    common.add_argument("--cafile", metavar="FILE",
                        help="trust the certificates in this PEM file (implies --tls)")
    return common


def _add_submit(add: Adder) -> None:
    submit = add("submit", actions.submit, "submit a job and stream its status")
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
    queues = add("queues", actions.queues, "list the queues: jobs waiting, running and scheduled")
    queues.add_argument("--json", action="store_true", help="print the server's JSON list")
    for name, text in (("pause-queue", "start no more jobs of a queue (administrators)"),
                       ("resume-queue", "start jobs of a paused queue again (administrators)")):
        add(name, actions.queue_control(name), text).add_argument(
            "queue", metavar="NAME")
    rerun = add("rerun", actions.rerun, "run a finished job again as a new job, and stream it")
    rerun.add_argument("transaction_id", metavar="TX")
    rerun.add_argument("--no-monitor", dest="monitor", action="store_false",
                       help="print the new transaction ID and return at once")
    rerun.add_argument("--json", action="store_true", help="one JSON object per line")


def _add_watch(add: Adder) -> None:
    watch = add("watch", actions.watch, "stream a job's status lines until it ends")
    watch.add_argument("transaction_id", metavar="TX")
    watch.add_argument("--from-line", type=_line_number, default=1, metavar="N",
                       help="start at line N (1 is the first line; default 1)")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")


def _add_queries(add: Adder) -> None:
    for name, command, text in (("status", "GetJobStatus", "show a job's status"),
                                ("info", "GetJobInformation", "show a job's status and history")):
        parser = add(name, actions.formatted(command), text)
        parser.add_argument("transaction_id", metavar="TX")
        parser.add_argument("--format", choices=("text", "xml", "json"), default="text")
    for name, text in (("cancel", "cancel a queued or running job"),
                       ("suspend", "suspend a job (a running one pauses at its next checkpoint)"),
                       ("resume", "resume a suspended job"),
                       ("delete", "forget a job that has ended: its record and its lines")):
        add(name, actions.job_control(name), text).add_argument("transaction_id", metavar="TX")


# -- argument types ------------------------------------------------------------------


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
        endpoint = endpoint_from(args)
        where = f"{endpoint.host}:{endpoint.port}"
        if inspect.iscoroutinefunction(action):
            import asyncio

            status = asyncio.run(cast(StreamAction, action)(endpoint.client(), args))
        else:
            status = cast(AskAction, action)(endpoint, args)
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
