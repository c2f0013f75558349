"""A registered job handler: the function that runs jobs of one project."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .job import Job

__all__ = ["Handler", "HandlerFunc", "CheckFunc", "TimeoutReason", "JOB_OPTIONS",
           "check_job_options", "check_seconds"]

HandlerFunc = Callable[[Job], Awaitable[Any] | Any]
#: Checks a submit's job variables; raises ``RequestError`` to refuse the job.
CheckFunc = Callable[[Mapping[str, str]], None]
#: Says why a job was stopped for its time limit (the text of its error line).
TimeoutReason = Callable[[Job], str]


@dataclass(frozen=True, slots=True)
class Handler:
    """A job handler and how the engine treats its jobs."""

    project: str
    func: HandlerFunc
    #: Run a job again when the server restarts while it runs (instead of failing it).
    retry_on_restart: bool = False
    #: Called with the job variables at submit time; its ``RequestError`` is the reply.
    check: CheckFunc | None = None
    #: Seconds a job may run (time suspended not counted) before it is stopped and
    #: fails; None: no limit.
    timeout_s: float | None = None
    #: Times a failed job is run again (0: never).
    retries: int = 0
    #: Seconds before the first run again; doubled for each one after it.
    retry_delay_s: float = 0.0
    #: The error line of a job stopped for ``timeout_s``, made from the job;
    #: None: ``Job timed out after N s``.
    timeout_reason: TimeoutReason | None = None
    #: The queue of its jobs that name none (None: ``default``).
    queue: str | None = None

    #: True for an ``async def`` handler (run on the loop), False for a plain
    #: function (run in a thread); asked once per job, so worked out once here.
    is_async: bool = field(init=False)

    def retry_delay(self, failed_attempt: int) -> float:
        """Seconds from the failure of run ``failed_attempt`` (1 for the first) to
        the next run: ``retry_delay_s``, doubled for each failure before it.

        Doubled at most 63 times: ``retries`` has no bound, and from 2 ** 1024 on
        the power is too large for a float (a delay of 0 s too would raise).
        """
        return self.retry_delay_s * 2.0 ** min(failed_attempt - 1, 63)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.func))


#: The options ``check_job_options`` checks, type and all: a handler's (``add_job``,
#: ``@app.job``) and a program project's (``Program``, a config file's project table).
JOB_OPTIONS = ("timeout_s", "retries", "retry_delay_s")


def check_job_options(timeout_s: object = None, retries: object = 0,
                      retry_delay_s: object = 0.0) -> tuple[float | None, int, float]:
    """The options of a project, checked: one check and one wording, wherever they
    were set (the caller puts where in front of the message).  Returns them as the
    engine keeps them (seconds as floats).

    Raises:
        ConfigError: ``<option>: must be ..., got <value>`` for the first bad one.
    """
    timeout = None if timeout_s is None else check_seconds("timeout_s", timeout_s, zero=False)
    if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
        raise ConfigError(f"retries: must be a whole number of 0 or more, got {retries!r}")
    return timeout, retries, check_seconds("retry_delay_s", retry_delay_s)


def check_seconds(name: str, value: object, *, zero: bool = True) -> float:
    """A number of seconds, checked (finite; more than 0 unless ``zero``) and
    returned as a float.

    Raises:
        ConfigError: ``<name>: must be a finite number of 0 or more, got <value>``
        (``greater than 0`` when not ``zero``).
    """
    seconds = _seconds(value)
    if seconds is None or not (seconds >= 0 if zero else seconds > 0) or seconds == math.inf:
        bound = "of 0 or more" if zero else "greater than 0"
        raise ConfigError(f"{name}: must be a finite number {bound}, got {value!r}")
    return seconds


def _seconds(value: object) -> float | None:
    """An int or a float as a float (too large an int: inf); None for anything
    else, True and False too."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf
