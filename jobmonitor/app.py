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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .config import Config
from .engine.handlers import Handler
from .engine.registry import HandlerRegistry
from .http import HttpServer, start_serving, stop_serving
from .loader import load_handlers
from .server.server import Server

__all__ = ["JobMonitor", "Controller"]


class JobMonitor(HandlerRegistry):
    """A set of job handlers, keyed by the ``ProjectName`` they answer to, and
    the servers that run them (``serve``, ``make_server``, ``Controller``)."""

    def make_server(self, config: Config) -> Server:
        """A server for these handlers and those of the ``config.jobs`` modules, not
        yet started (see ``Server.start``).  ``RestartServer`` re-imports the modules.

        Raises:
            ConfigError: a job module cannot be loaded, or a project is registered twice.
        """
        own = dict(self._handlers)

        def reload() -> dict[str, Handler]:
            return load_handlers(config.jobs, own, reload=True)

        return Server(load_handlers(config.jobs, own), config, reload=reload)

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

        ``host``, ``port`` and ``settings`` override fields of ``config``.  With an
        ``http_port``, the HTTP listener (``jobmonitor.http``) runs beside the server.

        Raises:
            ConfigError: an unknown setting or a bad value.
            OSError: the address cannot be bound.
        """
        config = (config or Config()).replace(host=host, port=port, **settings)
        server = self.make_server(config)
        http = await start_serving(server)  # (with config.http_port, its HTTP listener too)
        try:
            yield server
        finally:
            await stop_serving(server, http)


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
        self._http: HttpServer | None = None
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
    def http(self) -> HttpServer | None:
        """The HTTP listener (None unless ``http_port`` is set)."""
        return self._http

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
        """Shut the server down and join its thread (idempotent).  A job handler
        that did not stop when cancelled is left running in its thread (see
        ``Server.close``)."""
        if self._thread is None or self._loop is None or self._server is None:
            return
        self._loop.call_soon_threadsafe(self._close)
        self._thread.join(timeout_s)
        self._thread = None

    def run_coroutine(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _main(self) -> None:
        asyncio.run(self._serve())

    def _close(self) -> None:
        if self._http is not None:
            self._http.close()  # first: no new requests while the server stops
        if self._server is not None:
            self._server.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            server = self._app.make_server(self.config)
            self._http = await start_serving(server)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        await server.serve_forever()
        if self._http is not None:
            await self._http.wait_closed()

    def __enter__(self) -> "Controller":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
