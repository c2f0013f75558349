"""Program jobs: run an existing program as a job, without writing Python.

A ``Program`` is an argv template such as ``("make", "-C", "{dir}", "html")``.
Job variables fill ``{name}`` placeholders inside single argv items; the
program is started directly (never through a shell), so a value can never add,
split or remove an argument.  ``{{`` and ``}}`` stand for literal braces.

While it runs, each line the program writes to stdout becomes an information
line and each line on stderr an error line (an information line too with
``stderr="info"``, for programs such as tar, curl, git and ffmpeg that write
their progress there), as they are produced.  Exit status 0 is success;
anything else, a timeout, or a failure to start fails the job.  ``timeout_s``
is the handler's time limit, which the engine keeps as for any handler (time
suspended is not counted), with the program's own line: ``make timed out
after 60 s``.  Cancelling the job, or its time running out (its task is
cancelled), sends SIGTERM to the program's process group and, once
``kill_grace_s`` has passed, SIGKILL to whatever is left of the group, even if
the program itself has exited.  Suspending a running job sends the group
SIGSTOP; resuming it, SIGCONT.  With an ``output_dir`` each job gets its own folder
``<output_dir>/<transaction id>``; the files the program leaves there are
recorded as the job's outputs (``outputs``).  What a variable's value may be
(``Variable`` rules, paths under ``{output_dir}``) is ``args``'s part.
The program inherits the server's environment without its ``JOBMONITOR_*``
variables.  Starting, reading and stopping the process is ``process``'s part.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..engine.handlers import JOB_OPTIONS, TimeoutReason, check_job_options, check_seconds
from ..engine.history import START_EVENT, count_events
from ..engine.job import Job
from ..engine.registry import HandlerRegistry
from ..errors import ConfigError, JobFailed, RequestError
from ..wire.codes import Reply
from ..wire.lines import clip
from .args import (
    BUILTIN_PLACEHOLDERS,
    OutputPath,
    Template,
    Variable,
    Variables,
    leading_slot,
    output_path,
    parse_template,
    variable_rules,
)
from .outputs import make_output_dir, record_outputs
from .process import ProgramProcess, read_output, signal_group, start_program, stop_program

__all__ = ["Program", "Variable", "add_programs", "BUILTIN_PLACEHOLDERS", "STANDARD_VARIABLES",
           "SELF_CHECKED"]

#: The fields a ``Program`` checks itself, type and all, in the words a handler's
#: options get (a config file passes them on as they are).
SELF_CHECKED = (*JOB_OPTIONS, "kill_grace_s")

#: Variables every SubmitJob may carry (they fill placeholders only when declared).
STANDARD_VARIABLES = frozenset({"ProjectName", "JobName"})
#: What a program's stderr lines become: error lines (J0005000), or information
#: lines (J0000100) for programs that write their progress there.
STDERR_MODES = ("error", "info")


@dataclass(frozen=True, slots=True)
class Program:
    """A program project: what to run, where, and which job variables it takes.

    ``variables`` lists the variables' names, or maps each name to the
    ``Variable`` rules its values must keep; either way it reads back as a
    read-only mapping of each name to its ``Variable`` (``Variable()`` for a
    name given alone), in the order given.  ``timeout_s``, ``retries`` and
    ``retry_delay_s`` are checked as ``add_job`` checks a handler's
    (``check_job_options``: the same words).  ``stderr`` says what the
    program's stderr lines become: ``"error"`` lines (the default) or ``"info"``
    lines; either way only the exit status decides how the job ends.

    Raises (on construction):
        ConfigError: a bad field; the message starts with the field's name.
    """

    project: str
    command: tuple[str, ...]
    variables: Variables = ()
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    output_dir: str | None = None
    kill_grace_s: float = 5.0
    allow_leading_dash: bool = False
    retry_on_restart: bool = False
    retries: int = 0
    retry_delay_s: float = 0.0
    stderr: str = "error"
    #: The queue of its jobs that name none (None: ``default``).
    queue: str | None = None
    _rules: Mapping[str, Variable] = field(init=False, repr=False, compare=False)
    _templates: tuple[Template, ...] = field(init=False, repr=False, compare=False)
    _output_paths: tuple[OutputPath, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        rules = variable_rules(self.variables)
        object.__setattr__(self, "variables", rules)
        object.__setattr__(self, "_rules", rules)
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        _check_fields(self)
        names = self._placeholder_names()
        templates = tuple(parse_template(item, f"command[{index}]", names)
                          for index, item in enumerate(self.command))
        object.__setattr__(self, "_templates", templates)
        paths = (output_path(template, f"command[{index}]")
                 for index, template in enumerate(templates))
        object.__setattr__(self, "_output_paths", tuple(path for path in paths if path))

    def _placeholder_names(self) -> frozenset[str]:
        builtins = BUILTIN_PLACEHOLDERS if self.output_dir else {"transaction_id"}
        return frozenset(self._rules) | builtins

    def check(self, params: Mapping[str, str]) -> None:
        """Refuse job variables this program does not take, or values it must not get.

        Raises:
            RequestError: INVALID_VALUE for an unknown variable or a value that
            breaks a rule (``program_args``), MISSING_VARIABLE for a declared
            variable that is absent or blank (empty or only white space).
        """
        unknown = sorted(set(params) - set(self._rules) - STANDARD_VARIABLES)
        if unknown:
            accepted = ", ".join(self._rules) or "none"
            raise RequestError(Reply.INVALID_VALUE, f"{self.project!r} takes no variable "
                               f"{clip(', '.join(unknown), 80)} (it takes: {accepted})")
        for name, rule in self._rules.items():
            if name not in params:
                raise RequestError(Reply.MISSING_VARIABLE, name)
            if not params[name].strip():
                raise RequestError(Reply.MISSING_VARIABLE, f"{name} (its value is blank)")
            if "\x00" in params[name]:
                raise RequestError(Reply.INVALID_VALUE, f"{name} contains a NUL character")
            refusal = rule.refusal(params[name])
            if refusal is not None:
                raise RequestError(Reply.INVALID_VALUE, f"{name} {refusal}")
        self._check_arguments(params)

    def _check_arguments(self, params: Mapping[str, str]) -> None:
        """Refuse values that would start an argument with '-', or take a path
        under ``{output_dir}`` out of the job's folder."""
        if not self.allow_leading_dash:
            for template in self._templates:
                slot = leading_slot(template, params)
                if slot is not None and params[slot.name].startswith("-"):
                    raise RequestError(Reply.INVALID_VALUE,
                                       f"{slot.name} must not start with '-' (it starts "
                                       "an argument, where it could pass as an option)")
        for path in self._output_paths:
            refusal = path.refusal(params)
            if refusal is not None:
                raise RequestError(Reply.INVALID_VALUE, refusal)

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

    def link_refusal(self, values: Mapping[str, str], folder: Path) -> str | None:
        """Why a path under ``{output_dir}``, filled from ``values`` (every
        placeholder's), leads out of ``folder`` through a symbolic link; None
        when none does.  Made once the job's folder exists, before it starts."""
        for path in self._output_paths:
            refusal = path.link_refusal(values, folder)
            if refusal is not None:
                return refusal
        return None


def _check_fields(program: Program) -> None:
    if not program.command or not all(isinstance(item, str) for item in program.command):
        raise ConfigError("command: must be a non-empty list of strings")
    if program.stderr not in STDERR_MODES:
        raise ConfigError(f"stderr: must be {' or '.join(map(repr, STDERR_MODES))}, "
                          f"got {program.stderr!r}")
    if not program.command[0].strip():
        raise ConfigError("command[0]: the program to run must not be empty")
    # The operating system cannot pass a NUL: refused here, not by every job.
    for index, item in enumerate(program.command):
        if "\x00" in item:
            raise ConfigError(f"command[{index}]: contains a NUL character")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in program.env.items()):
        raise ConfigError("env: names and values must be strings")
    for name, value in program.env.items():
        if not name or "=" in name or "\x00" in name:
            raise ConfigError(f"env: {name!r} is not a valid name "
                              "(it must not be empty or hold '=' or a NUL character)")
        if "\x00" in value:
            raise ConfigError(f"env: the value of {name!r} contains a NUL character")
    for key in ("cwd", "output_dir"):
        value = getattr(program, key)
        if value is not None and not str(value).strip():
            raise ConfigError(f"{key}: must not be empty (leave it out for none)")
        if "\x00" in str(value or ""):
            raise ConfigError(f"{key}: contains a NUL character")
    # The same check and words as a handler's (add_job); stored as the engine keeps them.
    timeout_s, retries, retry_delay_s = check_job_options(program.timeout_s, program.retries,
                                                          program.retry_delay_s)
    object.__setattr__(program, "timeout_s", timeout_s)
    object.__setattr__(program, "retries", retries)
    object.__setattr__(program, "retry_delay_s", retry_delay_s)
    object.__setattr__(program, "kill_grace_s", check_seconds("kill_grace_s",
                                                             program.kill_grace_s))


# -- running -----------------------------------------------------------------------------


def add_programs(app: HandlerRegistry, programs: Iterable[Program]) -> None:
    """Register each program as a job handler of ``app``.

    Raises:
        ConfigError: a project is already registered.
    """
    for program in programs:
        app.add_job(program.project, _handler(program), check=program.check,
                    retry_on_restart=program.retry_on_restart, timeout_s=program.timeout_s,
                    timeout_reason=_timeout_reason(program), retries=program.retries,
                    retry_delay_s=program.retry_delay_s, queue=program.queue)


def _handler(program: Program) -> Callable[[Job], Awaitable[None]]:
    async def run(job: Job) -> None:
        await run_program(program, job)

    run.__qualname__ = run.__name__ = f"program {program.project!r}"
    return run


def _timeout_reason(program: Program) -> TimeoutReason | None:
    """The line of a job stopped for ``timeout_s``: it names the program."""
    if program.timeout_s is None:
        return None
    seconds = program.timeout_s

    def reason(job: Job) -> str:
        try:
            name = program.argv(_values(program, job))[0]
        except KeyError:  # (a job refused by ``check`` before it started the program)
            name = program.command[0]
        return f"{name} timed out after {seconds:g} s"

    return reason


def _values(program: Program, job: Job) -> dict[str, str]:
    """What fills the placeholders: the job variables and the built-in ones."""
    values = {**job.params, "transaction_id": job.transaction_id}
    output_dir = program.job_output_dir(job.transaction_id)
    if output_dir is not None:
        values["output_dir"] = str(output_dir)
    return values


async def run_program(program: Program, job: Job) -> None:
    """Run one job of ``program``; return on exit status 0.

    Raises:
        JobFailed: the variables are refused, the program cannot start, or
        exits with another status.
        asyncio.CancelledError: the job was cancelled, or ran out of its time
        limit (the program is stopped first).
    """
    try:
        program.check(job.params)
    except RequestError as exc:
        raise JobFailed(exc.reply_text) from None
    output_dir = program.job_output_dir(job.transaction_id)
    values = _values(program, job)
    env = _environment(program, job.transaction_id)
    if output_dir is not None:
        make_output_dir(output_dir, job.transaction_id, first_run=_first_run(job))
        env["JOBMONITOR_OUTPUT_DIR"] = str(output_dir)
        refusal = program.link_refusal(values, output_dir)
        if refusal is not None:
            raise JobFailed(refusal)
    argv = program.argv(values)
    process = await start_program(argv, program.cwd, env)
    # Reading goes on while the program is being stopped: its last words count.
    on_stderr = job.info if program.stderr == "info" else job.error
    output = asyncio.ensure_future(read_output(process, job.info, on_stderr))
    try:
        with job.pausable(*_pauser(process)):
            await asyncio.shield(output)
            await process.wait()
    except BaseException:
        await asyncio.shield(stop_program(process, output, program.kill_grace_s))
        raise
    finally:
        if output_dir is not None:
            await record_outputs(job, output_dir)
    _check_status(argv[0], process.returncode)


def _environment(program: Program, transaction_id: str) -> dict[str, str]:
    """The program's environment: the server's without its ``JOBMONITOR_*``
    variables (a password exported for the client CLI, or a stale
    ``JOBMONITOR_OUTPUT_DIR``, is no program's business), then ``env``, then the
    job's own."""
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("JOBMONITOR_")}
    return {**inherited, **program.env, "JOBMONITOR_TRANSACTION_ID": transaction_id}


def _first_run(job: Job) -> bool:
    """True unless the job has started before (``retries``, ``retry_on_restart``)."""
    return count_events(job.record, START_EVENT) <= 1


def _pauser(process: ProgramProcess) -> tuple[Callable[[], None], Callable[[], None]]:
    """Pause and resume for ``Job.pausable``: SIGSTOP and SIGCONT to the program's
    process group (the run's time limit stands still meanwhile)."""
    return (lambda: signal_group(process, signal.SIGSTOP),
            lambda: signal_group(process, signal.SIGCONT))


def _check_status(program_name: str, status: int | None) -> None:
    if status == 0:
        return
    if status is not None and status < 0:
        raise JobFailed(f"{program_name} was killed by {_signal_name(-status)}")
    raise JobFailed(f"{program_name} exited with status {status}")


def _signal_name(signum: int) -> str:
    """``SIGSEGV``, or ``signal 40`` for one Python has no name for (real-time signals)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
