"""The handler registry: the projects a server runs, each with its handler.

``JobMonitor`` (the embedding API) is a registry that can also serve; program
projects (``programs``) register into one; the loader of ``--jobs`` modules
looks for one.  Defined here, under the engine that runs the handlers, so
that none of them needs to import the app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from ..errors import ConfigError
from ..queueing import queue_name_refusal
from .handlers import CheckFunc, Handler, HandlerFunc, TimeoutReason, check_job_options

__all__ = ["HandlerRegistry"]

F = TypeVar("F", bound=HandlerFunc)


class HandlerRegistry:
    """A set of job handlers, keyed by the ``ProjectName`` they answer to."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return dict(self._handlers)

    def job(self, project: str, *, retry_on_restart: bool = False,
            timeout_s: float | None = None, retries: int = 0,
            retry_delay_s: float = 0.0, queue: str | None = None) -> Callable[[F], F]:
        """Decorator: register a handler for jobs whose ``ProjectName`` is ``project``
        (see ``add_job`` for the options).

        Raises:
            ConfigError: ``project`` already has a handler, or a bad option.
        """

        def register(func: F) -> F:
            self.add_job(project, func, retry_on_restart=retry_on_restart, timeout_s=timeout_s,
                         retries=retries, retry_delay_s=retry_delay_s, queue=queue)
            return func

        return register

    def add_job(self, project: str, func: HandlerFunc, *, retry_on_restart: bool = False,
                check: CheckFunc | None = None, timeout_s: float | None = None,
                retries: int = 0, retry_delay_s: float = 0.0,
                timeout_reason: TimeoutReason | None = None, queue: str | None = None) -> None:
        """Register ``func`` for ``project`` (the decorator's plain form).

        ``retry_on_restart``: a job the server's restart interrupted runs again
        (else it fails).  ``check``, if given, sees each submit's job variables
        before the job is accepted; the ``RequestError`` it raises becomes the
        error reply.  ``timeout_s``: a job that runs longer (time suspended not
        counted) is stopped as a cancel stops it and fails with
        ``J0005000: Job timed out after N s`` (cancelled while it stops, it
        ends cancelled after that line); ``timeout_reason``, if given, makes
        that line's text from the job instead.  ``retries``: a job that fails
        (raises, or times out; not one that is cancelled or partial) is queued
        to run again, up to that many times, ``retry_delay_s`` after its first
        failure and twice as long after each one after it; its stream goes on,
        with ``J0000132`` saying so, and ``job.attempt`` counts the runs.  With
        a durable store the delay outlasts a restart of the server.  ``queue``: the
        queue of its jobs that name none with ``_sys_QueueName`` (default ``default``).

        Raises:
            ConfigError: ``project`` is empty or already has a handler, or an
            option is bad (``job 'NAME': retries: must be a whole number of 0 or
            more, got -1``: ``check_job_options``'s words, as for a program project).
        """
        if not project or not project.strip():
            raise ConfigError("a job's project name must not be empty")
        if project in self._handlers:
            raise ConfigError(f"job {project!r} is registered twice")
        if not callable(func):
            raise ConfigError(f"handler for {project!r} is not callable")
        try:
            timeout_s, retries, retry_delay_s = check_job_options(timeout_s, retries,
                                                                  retry_delay_s)
        except ConfigError as exc:
            raise ConfigError(f"job {project!r}: {exc}") from None
        if queue is not None and queue_name_refusal(queue) is not None:
            raise ConfigError(f"job {project!r}: queue: {queue_name_refusal(queue)}")
        self._handlers[project] = Handler(project, func, retry_on_restart, check, timeout_s,
                                          retries, retry_delay_s, timeout_reason, queue)

    def merge(self, other: HandlerRegistry) -> None:
        """Add every handler of ``other``.

        Raises:
            ConfigError: a project is registered in both.
        """
        for handler in other.handlers.values():
            self.add_job(handler.project, handler.func, retry_on_restart=handler.retry_on_restart,
                         check=handler.check, timeout_s=handler.timeout_s,
                         retries=handler.retries, retry_delay_s=handler.retry_delay_s,
                         timeout_reason=handler.timeout_reason, queue=handler.queue)
