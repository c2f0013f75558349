"""A registered job handler: the function that runs jobs of one project."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Union

from .job import Job

__all__ = ["Handler", "HandlerFunc"]

HandlerFunc = Callable[[Job], Union[Awaitable[Any], Any]]


@dataclass(frozen=True, slots=True)
class Handler:
    """A job handler and how the engine treats its jobs."""

    project: str
    func: HandlerFunc
    #: Run a job again when the server restarts while it runs (instead of failing it).
    retry_on_restart: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)
