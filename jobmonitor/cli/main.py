"""The ``jobmonitor`` command.  It only builds settings and calls the library.

``jobmonitor serve`` takes one option per ``Config`` field, generated from the
dataclass so the option list lives in one place, ``--config FILE`` (a TOML
file of the same settings plus program projects; flags override it), and
``--loop`` (the process's event loop: uvloop by default, which only the CLI
picks; the library runs on the loop it is given).  The client commands (submit,
watch, status, ...) live in ``client_commands``.  Only the CLI modules print,
exit, or install signal handlers.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import getpass
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import ConfigError
from .client_commands import add_client_commands
from .logs import check_level, setup_logging
from .signals import Stopper, exit_if_stuck

if TYPE_CHECKING:
    import asyncio

    from ..config import Config
    from ..engine.handlers import Handler
    from ..server.server import Server

# The server's side (the app, the engine, the store, the config file reader) and
# asyncio are imported by the commands that serve, not here: a client command
# such as `jobmonitor status` starts in a fraction of the time without lxml,
# sqlite3, the engine and an event loop (benchmarks/cli_startup.py).

__all__ = ["main", "build_parser"]

log = logging.getLogger("jobmonitor.cli")

#: Open files the server needs besides its connections (store, logs, modules, threads).
FILE_MARGIN = 64
#: Allocations between collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "str | None": str}
#: The event loops ``serve`` runs on (``--loop``).
LOOPS = ("uvloop", "asyncio")


def build_parser(*, serve_options: bool = True) -> argparse.ArgumentParser:
    """The ``jobmonitor`` parser.  Without ``serve_options``, ``serve`` lacks its
    options from the ``Config`` fields: what any other command runs without
    importing the server's settings (``main`` leaves them out for those)."""
    parser = argparse.ArgumentParser(
        prog="jobmonitor", description="Run jobs and stream their status over TCP."
    )
    parser.add_argument("--version", action="version", version=f"jobmonitor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the server",
                                description="Run the jobmonitor server until SIGINT/SIGTERM.")
    serve.add_argument("--config", metavar="FILE",
                       help="TOML file of settings and program projects (flags override it)")
    serve.add_argument("--loop", choices=LOOPS,
                       help="the event loop: uvloop (the default, where it is installed) "
                            "or asyncio")
    serve.add_argument("--check-store", action="store_true",
                       help="check the store's database (SQLite's quick_check, every job "
                            "row) instead of serving; exit 0 if sound, 1 if not")
    if serve_options:
        _add_config_options(serve)
    serve.set_defaults(run=_serve, command_parser=serve)
    hasher = commands.add_parser(
        "hash-password", help="hash a password for the config file",
        description="Ask for a password (twice, not shown) on a terminal, or read the first "
                    "line of standard input, and print the hash to put in a [users.NAME] "
                    "table of the config file.")
    hasher.set_defaults(run=_hash_password, command_parser=hasher)
    add_client_commands(commands)
    return parser


def _hash_password(args: argparse.Namespace) -> int:
    from ..users import hash_password

    if sys.stdin.isatty():  # a person: ask without echoing, twice
        try:
            password = getpass.getpass("Password: ")
            if password and getpass.getpass("Again: ") != password:
                print("jobmonitor: the passwords differ", file=sys.stderr)
                return 2
        except EOFError:  # Ctrl-D at a prompt: end its line, then say why we stop
            print(file=sys.stderr)
            password = ""
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("jobmonitor: no password on standard input", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from ..config import Config

    for field in dataclasses.fields(Config):
        if not field.metadata.get("flag"):
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        if field.type == "tuple[str, ...]":
            parser.add_argument(flag, dest=field.name, action="append", metavar="SPEC",
                                help=help_text)
        elif field.type == "bool" and field.default:  # on unless --no-...
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        elif field.type == "bool":
            parser.add_argument(flag, dest=field.name, action="store_const", const=True,
                                help=help_text)
        else:
            default = field.default
            shown = f" (default: {default})" if default not in (None, ()) else ""
            parser.add_argument(flag, dest=field.name, type=_TYPES[str(field.type)],
                                metavar=field.name.upper(), help=help_text + shown)


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """Build the server settings from parsed options (unset options keep ``base``'s).

    Raises:
        ConfigError: a bad value.
    """
    from ..config import Config

    changes = {}
    for field in dataclasses.fields(Config):
        value = getattr(args, field.name, None)
        if value is not None:
            changes[field.name] = tuple(value) if isinstance(value, list) else value
    return (base or Config()).replace(**changes)


def _serve(args: argparse.Namespace) -> int:
    from ..app import JobMonitor

    config, projects = _settings(args)
    setup_logging(config.log_level, config.log_format)
    if args.check_store:
        return _check_store(config)
    runner, loop_name = _runner(args.loop)  # (first: a missing uvloop is said first)
    # `--jobs mymodule:app` finds mymodule.py in the working folder, as it does
    # under `python -m jobmonitor` (which puts that folder first on the path).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    # (loads config.jobs; may raise ConfigError)
    server = JobMonitor().make_server(config, projects=projects,
                                      reread=lambda: _settings(args))
    server.on_reload = _reloaded
    if not server.handler_names():
        log.warning("no jobs loaded: every SubmitJob will be refused (use --jobs)")
    with runner:
        runner.run(_serve_until_signal(server, loop_name))
    exit_if_stuck(server)
    return 0


def _settings(args: argparse.Namespace) -> tuple[Config, Mapping[str, Handler]]:
    """The server's settings (the config file's, the options over them) and the
    config file's program projects; read again at each reload.

    Raises:
        ConfigError: the file cannot be read or has a bad value.
    """
    from ..config_file import load_config_file
    from ..engine.registry import HandlerRegistry
    from ..programs.program import add_programs

    file = load_config_file(args.config) if args.config else None
    config = config_from_args(args, file.config if file else None)
    if config.store is None:
        config = config.replace(store="sqlite://")  # jobmonitor.db in data_dir
    check_level(config.log_level)  # (a reload that would fail to set it fails)
    programs = HandlerRegistry()
    if file is not None:
        add_programs(programs, file.programs)
    return config, programs.handlers


def _reloaded(config: Config) -> None:
    """After a reload: the log and the open-file limit follow the new settings."""
    setup_logging(config.log_level, config.log_format)
    _fit_open_file_limit(config.max_connections)


def _check_store(config: Config) -> int:
    """``serve --check-store``: one line per problem, then a summary; 0 when
    nothing is wrong, 1 otherwise."""
    import asyncio

    from ..store import open_store
    from ..store.sqlite.file import STORE_DAMAGED

    assert config.store is not None
    store = open_store(config.store, data_dir=config.data_dir)
    problems = asyncio.run(store.check())
    # (a file's path; a PostgreSQL store as its log lines name it: not its password)
    settings = getattr(store, "settings", None)
    where = getattr(store, "path", None) or getattr(settings, "where", None) or config.store
    for problem in problems:
        print(f"{where}: {problem}")
    if not problems:
        print(f"{where}: no problems found")
        return 0
    advice = f"; {STORE_DAMAGED}" if hasattr(store, "path") else ""  # (a SQLite file's)
    print(f"{where}: {len(problems)} problem{'s' if len(problems) > 1 else ''} found{advice}")
    return 1


def _runner(loop: str | None) -> tuple[asyncio.Runner, str]:
    """The runner of ``serve``'s event loop, and what to call that loop in the log:
    uvloop unless ``--loop asyncio`` (or uvloop is not installed, as on Windows,
    when no loop was asked for).

    Raises:
        ConfigError: ``--loop uvloop`` without uvloop.
    """
    import asyncio

    if loop == "asyncio":
        return asyncio.Runner(), "asyncio"
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed "
                              "(pip install uvloop)") from None
        return asyncio.Runner(), "asyncio (uvloop is not installed)"
    version = getattr(uvloop, "__version__", "")  # (its stubs do not export it)
    return asyncio.Runner(loop_factory=uvloop.new_event_loop), f"uvloop {version}".rstrip()


async def _serve_until_signal(server: Server, loop_name: str) -> None:
    # Handlers go in before the server starts: a script that signals us as soon
    # as it sees the ready line must get an orderly stop, not a default death.
    from ..http import start_serving, stop_serving

    stopper = Stopper(server)
    stopper.install()
    http = await start_serving(server)  # (and its HTTP listener, with --http-port)
    log.info("event loop: %s", loop_name)  # (after the start: its errors stay one line)
    _tune_gc()
    _fit_open_file_limit(server.config.max_connections)
    await stopper.stopping.wait()
    await stop_serving(server, http)


def _tune_gc() -> None:
    """A server keeps many objects alive (jobs, their lines, connections): move what
    start-up made out of the collector's way, and collect young objects less often,
    so that each job does not pay for scanning the ones before it.  Process-wide,
    so the CLI does it, never the library."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _fit_open_file_limit(max_connections: int) -> None:
    """Each connection is an open file: raise the soft limit (up to the hard one)
    so that max_connections can be reached, and say so when it cannot."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    wanted = max_connections + FILE_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new - FILE_MARGIN < max_connections * 0.9:  # a few short is not worth a word
            log.warning("the open-file limit is %d: about %d connections at most, not "
                        "max_connections=%d", new, new - FILE_MARGIN, max_connections)


def _option_before_command(argv: Sequence[str]) -> str | None:
    """The first option given before the command's name (only --help and --version
    belong there), or None."""
    for arg in argv:
        if not arg.startswith("-"):
            return None
        if arg not in ("-h", "--help", "--version"):
            return arg.partition("=")[0]
    return None


def _unknown_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The error line for a first argument that names no command, with the
    nearest command's name when one is close; None when it names one (or is an
    option: argparse deals with those)."""
    if not argv or argv[0].startswith("-"):
        return None
    names = [name for action in parser._actions
             if isinstance(action, argparse._SubParsersAction) for name in action.choices]
    if argv[0] in names:
        return None
    import difflib

    close = difflib.get_close_matches(argv[0], names, n=1)
    hint = f"did you mean {close[0]}?" if close else f"the commands are {', '.join(names)}"
    return f"jobmonitor: unknown command {argv[0]!r}: {hint} (see jobmonitor --help)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser(serve_options=bool(arguments) and arguments[0] == "serve")
    early = _option_before_command(arguments)
    if early is not None:  # argparse would take the option's value for the command's name
        print(f"jobmonitor: options go after the command's name: jobmonitor COMMAND {early} "
              f"... (see jobmonitor --help)", file=sys.stderr)
        return 2
    unknown_command = _unknown_command(parser, arguments)
    if unknown_command is not None:  # argparse would list every command, and suggest none
        print(unknown_command, file=sys.stderr)
        return 2
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's parser says so (the main one would print its own usage)
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"jobmonitor: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jobmonitor: cannot start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
