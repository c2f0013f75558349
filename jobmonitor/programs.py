"""Program jobs: run an existing program as a job, without writing Python.

A ``Program`` is an argv template such as ``("make", "-C", "{dir}", "html")``.
Job variables fill ``{name}`` placeholders inside single argv items; the
program is started directly (never through a shell), so a value can never add,
split or remove an argument.  ``{{`` and ``}}`` stand for literal braces.

While it runs, each line the program writes to stdout becomes an information
line and each line on stderr an error line, as they are produced.  Exit status
0 is success; anything else, a timeout, or a failure to start fails the job.
Cancelling the job (its task is cancelled) sends SIGTERM to the program's
process group and SIGKILL after ``kill_grace_s``.  Suspending a running job
sends the group SIGSTOP (and stops its timeout); resuming it, SIGCONT.  With
an ``output_dir`` each job gets its own folder ``<output_dir>/<transaction
id>``; the files the program leaves there are recorded as the job's outputs.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

from .app import JobMonitor
from .codes import Reply
from .errors import ConfigError, JobFailed, RequestError
from .job import Job
from .lines import clip

__all__ = ["Program", "add_programs", "BUILTIN_PLACEHOLDERS", "STANDARD_VARIABLES"]

#: Placeholders every program may use besides its declared variables.
BUILTIN_PLACEHOLDERS = frozenset({"transaction_id", "output_dir"})
#: Variables every SubmitJob may carry (they fill placeholders only when declared).
STANDARD_VARIABLES = frozenset({"ProjectName", "JobName"})
#: A stdout/stderr line longer than this is sent in pieces.
MAX_LINE_BYTES = 64 * 1024
#: How long to keep reading a stopped program's output.
DRAIN_S = 2.0

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class _Slot:
    """A ``{name}`` placeholder inside an argv item."""

    name: str


_Template = tuple[Union[str, _Slot], ...]


@dataclass(frozen=True, slots=True)
class Program:
    """A program project: what to run, where, and which job variables it takes.

    Raises (on construction):
        ConfigError: a bad field; the message starts with the field's name.
    """

    project: str
    command: tuple[str, ...]
    variables: tuple[str, ...] = ()
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    output_dir: str | None = None
    kill_grace_s: float = 5.0
    allow_leading_dash: bool = False
    retry_on_restart: bool = False
    _templates: tuple[_Template, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "variables", tuple(self.variables))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        _check_fields(self)
        object.__setattr__(self, "_templates", tuple(
            _parse_template(item, f"command[{index}]", self._placeholder_names())
            for index, item in enumerate(self.command)))

    def _placeholder_names(self) -> frozenset[str]:
        builtins = BUILTIN_PLACEHOLDERS if self.output_dir else {"transaction_id"}
        return frozenset(self.variables) | builtins

    def check(self, params: Mapping[str, str]) -> None:
        """Refuse job variables this program does not take, or values it must not get.

        Raises:
            RequestError: INVALID_VALUE for an unknown variable or a bad value,
            MISSING_VARIABLE for a declared variable that is absent.
        """
        unknown = sorted(set(params) - set(self.variables) - STANDARD_VARIABLES)
        if unknown:
            accepted = ", ".join(self.variables) or "none"
            raise RequestError(Reply.INVALID_VALUE, f"{self.project!r} takes no variable "
                               f"{clip(', '.join(unknown), 80)} (it takes: {accepted})")
        for name in self.variables:
            if name not in params:
                raise RequestError(Reply.MISSING_VARIABLE, name)
            if "\x00" in params[name]:
                raise RequestError(Reply.INVALID_VALUE, f"{name} contains a NUL character")
        if not self.allow_leading_dash:
            for template in self._templates:
                first = template[0] if template else ""
                if isinstance(first, _Slot) and params.get(first.name, "").startswith("-"):
                    raise RequestError(Reply.INVALID_VALUE,
                                       f"{first.name} must not start with '-' (it starts "
                                       "an argument, where it could pass as an option)")

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The command with every placeholder filled from ``values``.

        Raises:
            KeyError: a placeholder has no value.
        """
        return ["".join(part if isinstance(part, str) else values[part.name]
                        for part in template) for template in self._templates]

    def job_output_dir(self, transaction_id: str) -> Path | None:
        """The folder of one job's outputs (None without ``output_dir``)."""
        if self.output_dir is None:
            return None
        return (Path(self.output_dir) / transaction_id).absolute()


def _check_fields(program: Program) -> None:
    if not program.command or not all(isinstance(item, str) for item in program.command):
        raise ConfigError("command: must be a non-empty list of strings")
    seen: set[str] = set()
    for name in program.variables:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"variables: {name!r} is not a valid name "
                              "(letters, digits and _, not starting with a digit)")
        if name in seen or name in BUILTIN_PLACEHOLDERS or name.startswith("_sys_"):
            raise ConfigError(f"variables: {name!r} is listed twice or is reserved")
        seen.add(name)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in program.env.items()):
        raise ConfigError("env: names and values must be strings")
    if program.timeout_s is not None and not program.timeout_s > 0:
        raise ConfigError(f"timeout_s: must be greater than 0, got {program.timeout_s}")
    if not program.kill_grace_s >= 0:
        raise ConfigError(f"kill_grace_s: must not be negative, got {program.kill_grace_s}")


def _parse_template(item: str, where: str, names: frozenset[str]) -> _Template:
    """Split an argv item into literal text and placeholders.

    Raises:
        ConfigError: a lone brace, or a placeholder that names no variable.
    """
    parts: list[str | _Slot] = []
    position = 0
    for match in _TOKEN.finditer(item):
        parts.append(item[position:match.start()])
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif name is None:
            raise ConfigError(f"{where}: lone {token!r} in {item!r} (write {token * 2} for a brace)")
        elif name not in names:
            raise ConfigError(f"{where}: placeholder {{{name}}} is not a declared variable "
                              f"(variables: {', '.join(sorted(names))})")
        else:
            parts.append(_Slot(name))
        position = match.end()
    parts.append(item[position:])
    return tuple(part for part in parts if part != "")


# -- running -----------------------------------------------------------------------------


def add_programs(app: JobMonitor, programs: Iterable[Program]) -> None:
    """Register each program as a job handler of ``app``.

    Raises:
        ConfigError: a project is already registered.
    """
    for program in programs:
        app.add_job(program.project, _handler(program), check=program.check,
                    retry_on_restart=program.retry_on_restart)


def _handler(program: Program) -> Callable[[Job], Awaitable[None]]:
    async def run(job: Job) -> None:
        await run_program(program, job)

    run.__qualname__ = run.__name__ = f"program {program.project!r}"
    return run


async def run_program(program: Program, job: Job) -> None:
    """Run one job of ``program``; return on exit status 0.

    Raises:
        JobFailed: the variables are refused, the program cannot start, exits
        with another status, or runs longer than ``timeout_s``.
        asyncio.CancelledError: the job was cancelled (the program is stopped first).
    """
    try:
        program.check(job.params)
    except RequestError as exc:
        raise JobFailed(exc.reply_text) from None
    output_dir = program.job_output_dir(job.transaction_id)
    values = {**job.params, "transaction_id": job.transaction_id}
    env = {**os.environ, **program.env, "JOBMONITOR_TRANSACTION_ID": job.transaction_id}
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        values["output_dir"] = env["JOBMONITOR_OUTPUT_DIR"] = str(output_dir)
    argv = program.argv(values)
    process = await _start(argv, program.cwd, env)
    # Reading goes on while the program is being stopped: its last words count.
    output = asyncio.ensure_future(asyncio.gather(_pump(process.stdout, job.info),
                                                  _pump(process.stderr, job.error)))
    try:
        async with asyncio.timeout(program.timeout_s) as deadline:
            with job.pausable(*_pauser(process, deadline)):
                await asyncio.shield(output)
                await process.wait()
    except TimeoutError:
        await _stop(process, output, program.kill_grace_s)
        raise JobFailed(f"{argv[0]} timed out after {program.timeout_s:g} s") from None
    except BaseException:
        await asyncio.shield(_stop(process, output, program.kill_grace_s))
        raise
    finally:
        if output_dir is not None:
            _record_outputs(job, output_dir)
    _check_status(argv[0], process.returncode)


def _pauser(process: asyncio.subprocess.Process,
            deadline: asyncio.Timeout) -> tuple[Callable[[], None], Callable[[], None]]:
    """Pause and resume for ``Job.pausable``: SIGSTOP and SIGCONT to the program's
    process group, with its timeout stopped meanwhile (time suspended is not run)."""
    loop = asyncio.get_running_loop()
    left: list[float] = []

    def pause() -> None:
        _signal_group(process, signal.SIGSTOP)
        when = deadline.when()
        if when is not None:
            left.append(max(when - loop.time(), 0.0))
            deadline.reschedule(None)

    def resume() -> None:
        if left:
            deadline.reschedule(loop.time() + left.pop())
        _signal_group(process, signal.SIGCONT)

    return pause, resume


async def _start(argv: list[str], cwd: str | None,
                 env: dict[str, str]) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a stop reaches its children
        )
    except OSError as exc:
        raise JobFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None


async def _pump(stream: asyncio.StreamReader | None, say: Callable[[str], None]) -> None:
    """Send each line of ``stream`` to ``say`` as soon as it is complete."""
    if stream is None:
        return
    pending = b""
    while chunk := await stream.read(MAX_LINE_BYTES):
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            say(_decode(raw))
        while len(pending) >= MAX_LINE_BYTES:
            say(_decode(pending[:MAX_LINE_BYTES]))
            pending = pending[MAX_LINE_BYTES:]
    if pending:
        say(_decode(pending))


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").removesuffix("\r")


async def _stop(process: asyncio.subprocess.Process, output: asyncio.Future[Any],
                grace_s: float) -> None:
    """SIGTERM the program's process group, SIGKILL it if it outlives ``grace_s``,
    then read what it wrote meanwhile (for at most ``DRAIN_S``)."""
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            _signal_group(process, signal.SIGKILL)
            await process.wait()
    # A descendant that left the process group may hold the pipes open: stop waiting.
    await asyncio.wait([output], timeout=DRAIN_S)
    output.cancel()


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _check_status(program_name: str, status: int | None) -> None:
    if status == 0:
        return
    if status is not None and status < 0:
        raise JobFailed(f"{program_name} was killed by {signal.Signals(-status).name}")
    raise JobFailed(f"{program_name} exited with status {status}")


def _record_outputs(job: Job, folder: Path) -> None:
    """Record every file the program left in its output folder (sorted by path)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        job.add_output(path.relative_to(folder).as_posix(), path.as_uri(), media_type(path.name))


#: What a compressed file is, whatever it holds (``mimetypes`` names what it holds).
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
               "xz": "application/x-xz", "br": "application/x-brotli",
               "compress": "application/x-compress"}


def media_type(name: str) -> str | None:
    """A file's media type from its name: ``archive.tar.gz`` is ``application/gzip``
    (``mimetypes`` says ``application/x-tar``, what the gzip file holds)."""
    guessed, encoding = mimetypes.guess_type(name)
    if encoding is not None:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return guessed
