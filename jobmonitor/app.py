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
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from .config import Config
from .engine.handlers import Handler
from .engine.registry import HandlerRegistry
from .engine.schedule import Clock
from .errors import ConfigError
from .loader import load_handlers
from .server.server import Reloaded, Server

__all__ = ["JobMonitor", "Controller"]

#: How long ``Controller.stop`` waits for the server thread by default, and
#: ``start`` for a start it called off.
STOP_TIMEOUT_S = 60.0


class JobMonitor(HandlerRegistry):
    """A set of job handlers, keyed by the ``ProjectName`` they answer to, and
    the servers that run them (``serve``, ``make_server``, ``Controller``)."""

    def make_server(self, config: Config, *, projects: Mapping[str, Handler] | None = None,
                    reread: Callable[[], tuple[Config, Mapping[str, Handler]]] | None = None,
                    clock: Clock | None = None) -> Server:
        """A server for these handlers, ``projects`` (more handlers: a config file's
        program projects) and those of the ``config.jobs`` modules, not yet
        started (see ``Server.start``).

        A reload (``Server.reload``, ``RestartServer``) imports the modules
        again; with ``reread``, it first calls it for the settings and the
        ``projects`` to use from then on (``jobmonitor serve`` reads its config
        file again), and a ``ConfigError`` it raises keeps the old ones.
        ``clock``: what due times and schedules read the time from (see ``Engine``).

        Raises:
            ConfigError: a job module cannot be loaded, or a project is registered twice.
        """
        own = dict(self._handlers)

        def reload() -> Reloaded:
            fresh, fresh_projects = (config, projects) if reread is None else reread()
            return Reloaded(fresh, load_handlers(fresh.jobs, _merged(own, fresh_projects),
                                                 reload=True))

        return Server(load_handlers(config.jobs, _merged(own, projects)), config, reload=reload,
                      clock=clock)

    @asynccontextmanager
    async def serve(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        config: Config | None = None,
        clock: Clock | None = None,
        **settings: Any,
    ) -> AsyncIterator[Server]:
        """Run a server for the duration of an ``async with`` block.

        ``host``, ``port`` and ``settings`` override fields of ``config``;
        ``clock``: what due times and schedules read the time from (see ``Engine``).

        Raises:
            ConfigError: an unknown setting or a bad value.
            OSError: the address cannot be bound.
        """
        config = (config or Config()).replace(host=host, port=port, **settings)
        async with self.make_server(config, clock=clock) as server:
            yield server


def _merged(own: Mapping[str, Handler], projects: Mapping[str, Handler] | None
            ) -> dict[str, Handler]:
    """The app's handlers and ``projects``.

    Raises:
        ConfigError: a project is in both.
    """
    both = sorted(own.keys() & (projects or {}).keys())
    if both:
        raise ConfigError(f"job {both[0]!r} is registered twice")
    return {**own, **(projects or {})}


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
        # What start() needs to call off a start it gave up waiting for.
        self._lock = threading.Lock()
        self._called_off = False
        self._main_task: asyncio.Task[None] | None = None

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
        """Start the server thread; return once it listens.  A start that fails
        or times out leaves no thread behind, and may be tried again.

        Raises:
            OSError, ConfigError: the server could not start (raised here).
            TimeoutError: it did not start within ``timeout_s`` (its start is
            called off; an error that start ran into meanwhile is raised instead).
        """
        if self._thread is not None:
            raise RuntimeError("the controller is already started")
        self._ready.clear()
        self._error = self._server = self._loop = self._main_task = None
        self._called_off = False
        thread = self._thread = threading.Thread(target=self._main,
                                                 name="jobmonitor-controller", daemon=True)
        thread.start()
        started = self._ready.wait(timeout_s)
        if not started:
            self._call_off()
        if self._error is not None or not started:
            thread.join(STOP_TIMEOUT_S)
            self._thread = None
            if self._error is not None and not isinstance(self._error, asyncio.CancelledError):
                raise self._error
            self._server = None
            raise TimeoutError(f"the jobmonitor server did not start within {timeout_s:g} s"
                               + ("; its thread still runs" if thread.is_alive() else ""))

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Shut the server down and join its thread (idempotent).  A job handler
        that did not stop when cancelled is left running in its thread (see
        ``Server.close``)."""
        if self._thread is None or self._loop is None or self._server is None:
            return
        # RuntimeError: the loop has closed, the server has stopped already.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(timeout_s)
        self._thread = None

    def run_coroutine(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _call_off(self) -> None:
        """Cancel the server thread's work from start()'s thread: a start under
        way is undone, a server that has just started is closed."""
        with self._lock:
            self._called_off = True
            loop, task = self._loop, self._main_task
        if loop is not None and task is not None:
            # RuntimeError: the loop has closed, the thread is ending.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        with self._lock:
            if self._called_off:
                return
            self._loop = asyncio.get_running_loop()
            self._main_task = asyncio.current_task()
        try:
            server = self._app.make_server(self.config)
            await server.start()
        # start() raises the failure in its own thread (a CancelledError: start()
        # gave up waiting, and has nothing to raise).
        except BaseException as exc:  # noqa: BLE001 - handed on to start()
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        with contextlib.suppress(asyncio.CancelledError):  # (the close is done by then)
            await server.serve_forever()

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
