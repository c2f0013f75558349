"""The embedding API: ``JobMonitor`` holds job handlers and serves them.

For asyncio code::

    async with app.serve(host="127.0.0.1", port=0) as server:
        print(server.port)

For synchronous code (and tests), ``Controller`` runs the same server on an
event loop in a background thread; ``start()`` raises start-up errors in the
caller's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from .config import Config
from .engine.handlers import CheckFunc, Handler, HandlerFunc, check_job_options
from .errors import ConfigError
from .server.server import Server

__all__ = ["JobMonitor", "Controller"]

F = TypeVar("F", bound=HandlerFunc)


class JobMonitor:
    """A set of job handlers, keyed by the ``ProjectName`` they answer to."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return dict(self._handlers)

    def job(self, project: str, *, retry_on_restart: bool = False,
            timeout_s: float | None = None, retries: int = 0,
            retry_delay_s: float = 0.0) -> Callable[[F], F]:
        """Decorator: register a handler for jobs whose ``ProjectName`` is ``project``
        (see ``add_job`` for the options).

        Raises:
            ConfigError: ``project`` already has a handler, or a bad option.
        """

        def register(func: F) -> F:
            self.add_job(project, func, retry_on_restart=retry_on_restart, timeout_s=timeout_s,
                         retries=retries, retry_delay_s=retry_delay_s)
            return func

        return register

    def add_job(self, project: str, func: HandlerFunc, *, retry_on_restart: bool = False,
                check: CheckFunc | None = None, timeout_s: float | None = None,
                retries: int = 0, retry_delay_s: float = 0.0) -> None:
        """Register ``func`` for ``project`` (the decorator's plain form).

        ``retry_on_restart``: a job the server's restart interrupted runs again
        (else it fails).  ``check``, if given, sees each submit's job variables
        before the job is accepted; the ``RequestError`` it raises becomes the
        error reply.  ``timeout_s``: a job that runs longer (time suspended not
        counted) is stopped as a cancel stops it and fails with
        ``J0005000: Job timed out after N s`` (cancelled while it stops, it
        ends cancelled after that line).  ``retries``: a job that fails
        (raises, or times out; not one that is cancelled or partial) is queued
        to run again, up to that many times, ``retry_delay_s`` after its first
        failure and twice as long after each one after it; its stream goes on,
        with ``J0000132`` saying so, and ``job.attempt`` counts the runs.  With
        a durable store the delay outlasts a restart of the server.

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
        self._handlers[project] = Handler(project, func, retry_on_restart, check, timeout_s,
                                          retries, retry_delay_s)

    def merge(self, other: "JobMonitor") -> None:
        """Add every handler of ``other``.

        Raises:
            ConfigError: a project is registered in both.
        """
        for handler in other._handlers.values():
            self.add_job(handler.project, handler.func, retry_on_restart=handler.retry_on_restart,
                         check=handler.check, timeout_s=handler.timeout_s,
                         retries=handler.retries, retry_delay_s=handler.retry_delay_s)

    def make_server(self, config: Config) -> Server:
        """A server for these handlers, not yet started (see ``Server.start``)."""
        return Server(self._handlers, config)

    @asynccontextmanager
    async def serve(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        config: Config | None = None,
        **settings: Any,
    ) -> AsyncIterator[Server]:
        """Run a server for the duration of an ``async with`` block.

        ``host``, ``port`` and ``settings`` override fields of ``config``.

        Raises:
            ConfigError: an unknown setting or a bad value.
            OSError: the address cannot be bound.
        """
        config = (config or Config()).replace(host=host, port=port, **settings)
        server = self.make_server(config)
        await server.start()
        try:
            yield server
        finally:
            server.close()
            await server.wait_closed()


class Controller:
    """Runs a ``JobMonitor`` server in a background thread, for synchronous code.

    ::

        with Controller(app, port=0) as controller:
            print(controller.port)
    """

    def __init__(self, app: JobMonitor, host: str | None = None, port: int | None = None,
                 *, config: Config | None = None, **settings: Any) -> None:
        self.config = (config or Config()).replace(host=host, port=port, **settings)
        self._app = app
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the controller is not started")
        return self._server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def host(self) -> str:
        return self.server.host

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server thread; return once it listens.

        Raises:
            OSError, ConfigError: the server could not start (raised here).
            TimeoutError: it did not start within ``timeout_s``.
        """
        if self._thread is not None:
            raise RuntimeError("the controller is already started")
        self._thread = threading.Thread(target=self._main, name="jobmonitor-controller",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the jobmonitor server did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self, timeout_s: float = 60.0) -> None:
        """Shut the server down and join its thread (idempotent)."""
        if self._thread is None or self._loop is None or self._server is None:
            return
        self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(timeout_s)
        self._thread = None

    def run_coroutine(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            server = self._app.make_server(self.config)
            await server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        await server.serve_forever()

    def __enter__(self) -> "Controller":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
