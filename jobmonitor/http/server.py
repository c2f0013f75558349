"""The HTTP listener beside a ``Server``: the JSON API, live events, metrics, the page.

``HttpServer`` shares its ``Server``'s engine, commands (so its users, roles
and password throttling), TLS certificate and limits, and refuses, like it,
to serve an open server (no users) on an address other machines can reach.
Its life follows the server's: made before or after ``Server.start()`` (it
checks its settings at once), ``start()`` once the server has started (it
needs the server's engine and commands); ``close()`` before
``Server.close()`` stops listening and closes idle connections, so the
server's shutdown runs with no new requests coming; ``wait_closed()`` after
``Server.wait_closed()`` ends what is left (event streams of jobs that stay
queued for the next start, then anything slower than ``linger_s``).
``start_serving`` and ``stop_serving`` do all that for a server whose config
asks for an HTTP port.

Routes: ``/`` and ``/static/*`` (the page), ``/healthz``, ``/readyz``,
``/metrics``, and ``/api/v1/...`` (``api``).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

from ..config import Config
from ..errors import RequestError
from ..queueing import DEFAULT_QUEUE
from ..server.deadlines import Deadlines
from ..server.server import Server, check_exposure, tls_context
from ..wire.codes import Reply
from .api import PREFIX, JobsApi
from .connection import HttpConnection, Streamer
from .messages import HttpRefusal, HttpResponse, Request, text_response
from .metrics import CONTENT_TYPE, render_metrics

__all__ = ["HttpServer", "start_serving", "stop_serving"]

#: The ready line's logger: under "jobmonitor.server", whose ready line the CLI
#: lets through at any log level, so a script can wait for this one too.
ready_log = logging.getLogger("jobmonitor.server.http")

#: The page's files and their types (nothing else is served from the package).
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                ".json": "application/json"}


def _package_files() -> dict[str, bytes]:
    """The page's files and the OpenAPI document, read once."""
    folder = resources.files(__package__).joinpath("static")
    return {entry.name: entry.read_bytes() for entry in folder.iterdir()
            if entry.is_file() and any(entry.name.endswith(ext) for ext in STATIC_TYPES)}


class HttpServer:
    """An HTTP/1.1 listener for a ``Server``."""

    def __init__(self, server: Server, *, host: str | None = None,
                 port: int | None = None) -> None:
        """``host`` and ``port`` default to the config's ``http_host`` (or ``host``) and
        ``http_port``; port 0 here picks a free port.

        Raises:
            ConfigError: an open server on an address others can reach, or a
            TLS certificate that cannot be loaded.
        """
        config = server.config
        self.server = server
        self._host = host or config.http_host or config.host
        self._port = config.http_port if port is None else port
        check_exposure(config.replace(host=self._host))
        self._ssl = tls_context(config)
        self._files = _package_files()
        self._api: JobsApi | None = None  # (start() makes it: the server's engine is needed)
        self._listener: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._bound: tuple[str, int] = (self._host, self._port)
        #: True once ``close()`` was called: answers say ``Connection: close``.
        self.closing = False
        self._deadlines: Deadlines | None = None  # (made by start(): it needs the loop)

    @property
    def config(self) -> Config:
        """The server's settings (a reload's, once it took effect)."""
        return self.server.config

    @property
    def deadlines(self) -> Deadlines:
        """The connections' reading deadlines (made by ``start``)."""
        if self._deadlines is None:
            raise RuntimeError("the HTTP listener has not started")
        return self._deadlines

    async def start(self) -> None:
        """Start listening, once the server has started.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: the server has not started.
        """
        server, config = self.server, self.config
        self._api = JobsApi(server.commands, server.engine, server.refusals,
                            self._files["openapi.json"])
        loop = asyncio.get_running_loop()
        # Our own: the server's stop with its shutdown, before our last streams end.
        deadlines = self._deadlines = Deadlines(
            loop, min(0.05, min(config.idle_timeout_s, config.packet_timeout_s) / 4))
        try:
            self._listener = await loop.create_server(
                lambda: HttpConnection(self), self._host, self._port, reuse_address=True,
                backlog=1024, ssl=self._ssl,
                ssl_handshake_timeout=config.packet_timeout_s if self._ssl else None)
        except BaseException:
            deadlines.close()
            raise
        self._bound = self._listener.sockets[0].getsockname()[:2]
        ready_log.info("jobmonitor HTTP listening on %s", self.url, extra={"ready": True})

    @property
    def port(self) -> int:
        return int(self._bound[1])

    @property
    def host(self) -> str:
        return str(self._bound[0])

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:7401/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}/"

    # -- connections --------------------------------------------------------------------

    def connection_opened(self, connection: HttpConnection) -> bool:
        """Count a connection in; False when there are already ``max_connections``."""
        self._connections.add(connection)
        self._no_connections.clear()
        return len(self._connections) <= self.config.max_connections

    def connection_closed(self, connection: HttpConnection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._no_connections.set()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and close idle connections (idempotent); answers under
        way finish, event streams go on until their jobs end."""
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        for connection in list(self._connections):
            connection.shutdown()

    async def wait_closed(self) -> None:
        """End the event streams still open, give every connection ``linger_s``
        to finish, then drop the rest.  Call it after the ``Server``'s."""
        self.close()
        for connection in list(self._connections):
            connection.end_stream()
        try:
            await asyncio.wait_for(self._no_connections.wait(), self.config.linger_s)
        except TimeoutError:
            for connection in list(self._connections):
                connection.abort()
            await self._no_connections.wait()  # connection_lost comes on the next turn
        if self._listener is not None:
            await self._listener.wait_closed()
        if self._deadlines is not None:
            self._deadlines.close()

    # -- requests -------------------------------------------------------------------------

    async def handle(self, request: Request) -> HttpResponse | Streamer:
        """Answer one request (``connection`` turns refusals into problems)."""
        path, method = request.path, request.method
        api = self._api
        assert api is not None  # (made by start(), before any connection)
        if path.startswith(PREFIX):
            return await api.handle(request)
        if method not in ("GET", "HEAD"):
            raise HttpRefusal(Reply.UNKNOWN_COMMAND, f"{method[:10]} is not allowed here", 405,
                              (("Allow", "GET, HEAD"),))
        if path == "/healthz":
            return text_response("ok\n")
        if path == "/readyz":
            return await self._ready()
        if path == "/metrics":
            await api.run(request, "GetJobQueueLen", {})  # the same users as the API
            return text_response(self._metrics(), CONTENT_TYPE)
        if path == "/":
            await api.run(request, "GetBuildString", {})  # asks a browser to log in
            return self._file("index.html", "no-cache")
        name = path.removeprefix("/static/")
        if name != path and name in self._files and "/" not in name:
            return self._file(name, "no-cache")
        raise HttpRefusal(Reply.UNKNOWN_COMMAND, f"no such resource: {path[:80]}", 404)

    def _file(self, name: str, cache: str) -> HttpResponse:
        kind = STATIC_TYPES[name[name.rindex("."):]]
        return HttpResponse(200, [("Content-Type", kind), ("Cache-Control", cache)],
                            self._files[name])

    async def _ready(self) -> HttpResponse:
        """200 when the store answers a read and the server is not stopping."""
        if self.closing:
            return text_response("stopping\n", status=503)
        try:
            await self.server.engine.jobs.record("T0000000")  # no such job: a store read
        except RequestError as exc:
            if exc.code is not Reply.UNKNOWN_TRANSACTION:
                return text_response(f"store unavailable: {exc.reply_text}\n", status=503)
        return text_response("ready\n")

    def _metrics(self) -> str:
        engine = self.server.engine
        return render_metrics(engine, engine.store.commit_durations,
                              tcp_connections=self.server.connection_count,
                              http_connections=self.connection_count,
                              queues=(DEFAULT_QUEUE, *(q.name for q in self.config.queues)))


async def start_serving(server: Server) -> HttpServer | None:
    """Start ``server`` and, when its config has an ``http_port``, its HTTP
    listener (returned; else None).  The listener's settings are checked before
    the server starts; if it cannot listen, the server is stopped again.

    Raises:
        ConfigError, OSError: as ``Server``, ``HttpServer`` and their ``start``.
    """
    http = HttpServer(server) if server.config.http_port else None
    await server.start_serving()  # (a server started already is left as it is)
    if http is not None:
        try:
            await http.start()
        except BaseException:
            server.close()
            await server.wait_closed()
            raise
    return http


async def stop_serving(server: Server, http: HttpServer | None) -> None:
    """Stop what ``start_serving`` started: the HTTP listener takes no more
    requests first, and ends its last streams once the server has stopped."""
    if http is not None:
        http.close()
    server.close()
    await server.wait_closed()
    if http is not None:
        await http.wait_closed()
