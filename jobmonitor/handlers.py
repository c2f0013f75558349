"""A registered job handler: the function that runs jobs of one project."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .job import Job

__all__ = ["Handler", "HandlerFunc", "CheckFunc"]

HandlerFunc = Callable[[Job], Union[Awaitable[Any], Any]]
#: Checks a submit's job variables; raises ``RequestError`` to refuse the job.
CheckFunc = Callable[[Mapping[str, str]], None]


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

    #: True for an ``async def`` handler (run on the loop), False for a plain
    #: function (run in a thread); asked once per job, so worked out once here.
    is_async: bool = field(init=False)

    def retry_delay(self, failed_attempt: int) -> float:
        """Seconds from the failure of run ``failed_attempt`` (1 for the first) to
        the next run: ``retry_delay_s``, doubled for each failure before it."""
        return self.retry_delay_s * 2 ** (failed_attempt - 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.func))
