"""The running server: a listener, its connections, the engine and the commands.

``Server`` mirrors ``asyncio.Server``: the constructor does no I/O;
``start()`` (or ``start_serving()``, ``serve_forever()``, ``async with``) opens
the store and listens; ``close()`` is idempotent and starts an ordered
shutdown, ``wait_closed()`` waits for it, and cancelling ``serve_forever()``
does both.  Shutdown order: stop listening; let running jobs finish within the
grace period, then cancel them (their monitors get the cancelled and ended
lines), and abandon those that do not stop; close the store; give connections
``linger_s`` to take their last lines, then abort the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Mapping

from ..config import Config
from ..engine.engine import Engine
from ..engine.handlers import Handler
from ..engine.job import Job
from ..engine.schedule import Clock, check_queue_names
from ..errors import ConfigError
from ..store import open_store
from .auth import Authenticator
from .commands import Commands
from .connection import Connection, ConnectionContext
from .deadlines import Deadlines
from .parse_turns import ParseTurns
from .refusals import RefusalLog
from .reloading import Reloaded, changes, settings_to_use
from .sockets import cork_listeners

__all__ = ["Server", "Reloaded", "check_exposure", "tls_context"]

log = logging.getLogger("jobmonitor.server")


class Server:
    """A jobmonitor server bound to a host and port."""

    def __init__(self, handlers: Mapping[str, Handler], config: Config, *,
                 reload: Callable[[], Reloaded | Mapping[str, Handler]] | None = None,
                 clock: Clock | None = None) -> None:
        """Nothing is opened or read here: ``start`` does that, and raises what
        goes wrong.

        ``reload``, if given, is what a reload (``reload()``, ``RestartServer``)
        calls for the settings and handlers to use from then on, or the handlers
        alone (``JobMonitor.make_server`` passes one that re-imports the
        ``config.jobs`` modules, and reads a config file again when told how);
        it raises ``ConfigError`` to keep the old ones.  Without it a reload
        keeps ``handlers`` and ``config``.  ``clock``: what due times and
        schedules read the time from (default: the system's; see ``Engine``).

        Raises:
            ConfigError: the host is reachable from the network, no users are
            configured, and ``allow_anonymous_network`` is off; a schedule or a
            project names a project or a queue the server does not have.
        """
        check_queue_names(config, handlers)
        self.config = config
        self._own_handlers = dict(handlers)
        self._reload = reload
        #: Called with the settings after each reload that took effect (the CLI
        #: sets its logging and its open-file limit from them).
        self.on_reload: Callable[[Config], None] | None = None
        self._reloading = asyncio.Lock()
        #: The log of refused logins and permissions.
        self.refusals = RefusalLog(user.name for user in config.users)
        self._anonymous_network = check_exposure(config)
        self._started = False
        #: Set once start() has ended, well or not (what a shutdown waits for).
        self._start_ended = asyncio.Event()
        self._clock = clock
        self._engine: Engine | None = None
        self._commands: Commands | None = None
        self._auth: Authenticator | None = None
        self._listener: asyncio.Server | None = None
        self._context: ConnectionContext | None = None
        self._connections: set[Connection] = set()
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._closing: asyncio.Task[None] | None = None
        self._close_requested = asyncio.Event()
        self._bound: tuple[str, int] = (config.host, config.port)

    async def start(self) -> None:
        """Load the TLS files, open the store, recover its unfinished jobs, and
        listen.  A start that fails (or is cancelled) once the store is open
        closes it again.

        Raises:
            ConfigError: the TLS certificate or key cannot be loaded, or the store
            cannot be opened (see ``docs/configuration.md``).
            OSError: the address cannot be bound.
            RuntimeError: the server was started before, or closed.
        """
        if self._closing is not None:
            raise RuntimeError("the server is closed")
        if self._started:
            raise RuntimeError("start() was called already")
        self._started = True
        try:
            await self._start()
        finally:
            self._start_ended.set()
        log.info("jobmonitor listening on %s", self.address, extra={"ready": True})

    async def _start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        tls = tls_context(config)
        if self._anonymous_network:
            log.warning("serving %s without authentication: anyone who can reach it can "
                        "run jobs", config.host)
        store = open_store(config.store or "memory://", data_dir=config.data_dir,
                           commit_interval_s=config.commit_interval_s,
                           synchronous=config.sqlite_synchronous, **config.node_settings())
        engine = Engine(self._own_handlers, config, store, clock=self._clock)
        auth = Authenticator(config.users)
        commands = Commands(engine, auth=auth, restart=self.restart_engine,
                            max_monitors_per_job=config.max_monitors_per_job)
        await engine.start()
        deadlines = Deadlines(loop, _deadline_tick(config))
        turns = ParseTurns(loop)
        listener: asyncio.Server | None = None
        try:
            listener = await loop.create_server(
                self._new_connection, config.host, config.port,
                reuse_address=True, backlog=1024, ssl=tls, start_serving=False,
                # the handshake comes out of the time a client has for its packet
                ssl_handshake_timeout=config.packet_timeout_s if tls else None,
            )
            # Before the first accept: accepted sockets inherit the cork.
            corked = tls is None and cork_listeners(listener.sockets)
            self._context = ConnectionContext(
                loop, config, engine, commands, deadlines, accepts_corked=corked,
                refusals=self.refusals, parse_turns=turns,
                opened=self._connection_opened, closed=self._connection_closed,
                eager=not engine.clustered)
            self._engine, self._listener = engine, listener
            self._commands, self._auth = commands, auth
            self._bound = listener.sockets[0].getsockname()[:2]
            await engine.listening_at(self.address, config.node_address(self._bound[1]))
            if self._closing is None:  # (else close() came meanwhile: accept nothing)
                await listener.start_serving()
        except BaseException:
            self._engine = self._listener = self._context = None
            self._commands = self._auth = None
            if listener is not None:
                listener.close()
            await engine.stop(0)
            deadlines.close()
            turns.close()
            raise

    async def start_serving(self) -> None:
        """Start, unless started already (``asyncio.Server.start_serving``);
        return once the server listens.

        Raises:
            the errors of ``start``; RuntimeError: an earlier start failed.
        """
        if not self._started:
            await self.start()
            return
        await self._start_ended.wait()
        if self._listener is None and self._closing is None:
            raise RuntimeError("the server's start failed")

    def is_serving(self) -> bool:
        """True from the end of ``start`` until ``close``."""
        return self._closing is None and self._listener is not None

    def handler_names(self) -> list[str]:
        """The project names this server runs jobs for, sorted (after a
        ``RestartServer``, those of the reloaded modules)."""
        if self._engine is None:
            return sorted(self._own_handlers)
        return self._engine.handler_names()

    @property
    def engine(self) -> Engine:
        """The job engine (made by ``start``).

        Raises:
            RuntimeError: the server has not started.
        """
        if self._engine is None:
            raise RuntimeError("the server has not started")
        return self._engine

    @property
    def commands(self) -> Commands:
        """The commands the connections answer (made by ``start``).

        Raises:
            RuntimeError: the server has not started.
        """
        if self._commands is None:
            raise RuntimeError("the server has not started")
        return self._commands

    async def restart_engine(self) -> None:
        """RestartServer: reload (as ``reload`` does), then finish or cancel running
        jobs and start again with the reloaded handlers.

        Raises:
            ConfigError: the settings or a job module no longer load (nothing
            changes: the old ones stay, and no job is stopped).
        """
        async with self._reloading:
            try:
                config, handlers = self._reread()
            except ConfigError as exc:
                log.error("reload failed, nothing changed: %s", exc)
                raise
            self._log_changes(config, handlers)
            log.info("restarting the job engine")
            await self.engine.restart(config.shutdown_grace_s, handlers)
            self._configure(config)  # (after: no job starts only to be stopped)

    async def reload(self) -> bool:
        """Read the settings and the job modules again and use them from now on,
        without stopping anything (SIGHUP in ``jobmonitor serve``).  Running jobs
        go on with the handlers they started with; new and queued ones get the
        new ones.  Settings in ``config.NEEDS_RESTART`` keep their values.  Each
        change is logged; so is a failure, which changes nothing.  Returns
        whether the reload took effect."""
        async with self._reloading:
            try:
                config, handlers = self._reread()
            except ConfigError as exc:
                log.error("reload failed, nothing changed: %s", exc)
                return False
            self._log_changes(config, handlers)
            self.engine.replace_handlers(handlers)
            self._configure(config)
            return True

    def _reread(self) -> tuple[Config, dict[str, Handler]]:
        """The settings and handlers to use after a reload, checked.

        Raises:
            ConfigError: they cannot be loaded, or the settings are refused.
        """
        fresh = (self._reload() if self._reload is not None
                 else Reloaded(self.config, self._own_handlers))
        if not isinstance(fresh, Reloaded):  # a callback that gives the handlers alone
            fresh = Reloaded(self.config, fresh)
        config, kept = settings_to_use(self.config, fresh.config)
        check_exposure(config)
        check_queue_names(config, fresh.handlers)
        for warning in kept:
            log.warning("reload: %s", warning)
        return config, dict(fresh.handlers)

    def _log_changes(self, config: Config, handlers: Mapping[str, Handler]) -> None:
        lines = changes(self.config, config, self.engine.handler_names(), handlers)
        for line in lines:
            log.info("reload: %s", line)
        count = f"{len(lines)} change{'s' if len(lines) > 1 else ''}" if lines else "no change"
        log.info("reloaded the settings and the job modules: %s", count)

    def _configure(self, config: Config) -> None:
        """Take reloaded settings (the handlers are the engine's part)."""
        self.config = config
        self.engine.configure(config)
        self.commands.configure(config.users, config.max_monitors_per_job)
        self.refusals.users = frozenset(user.name for user in config.users)
        if self.on_reload is not None:
            self.on_reload(config)

    # -- addresses -----------------------------------------------------------------

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._listener.sockets) if self._listener else ()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._bound[1])

    @property
    def host(self) -> str:
        """The bound address."""
        return str(self._bound[0])

    @property
    def address(self) -> str:
        """``HOST:PORT``, with brackets around an IPv6 host."""
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    # -- connections -------------------------------------------------------------------

    def _new_connection(self) -> Connection:
        assert self._context is not None  # (made before the listener accepts)
        return Connection(self._context)

    def _connection_opened(self, connection: Connection) -> bool:
        room = len(self._connections) < self.config.max_connections
        self._connections.add(connection)
        self._no_connections.clear()
        return room

    def _connection_closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._no_connections.set()

    @property
    def connection_count(self) -> int:
        """The client connections open now (refused ones too, until they close)."""
        return len(self._connections)

    @property
    def accepts_corked(self) -> bool:
        """Whether accepted sockets start corked (see ``sockets.cork_listeners``)."""
        return self._context is not None and self._context.accepts_corked

    async def wait_connections_closed(self) -> None:
        """Return once no client connection is open (at once when none is).

        New connections may come right after, unless the server is closed.
        """
        await self._no_connections.wait()

    # -- life cycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and start an orderly shutdown (idempotent).

        Open connections are not cut at once.  A monitor of a running job gets
        ``J0000190: Server stopping``, its job's last lines and the ended line
        once the job stops (running jobs get ``shutdown_grace_s``, then are
        cancelled); a new command is answered ``R0005011: Server busy: the
        server is shutting down``.  Once the jobs have stopped and the store is
        closed, connections get ``linger_s`` to take their last bytes and close;
        those still open then are aborted (what their clients have not taken is
        dropped).

        It ends at most ``shutdown_grace_s`` + ``runner.CANCEL_WAIT_S`` (5 s) +
        ``linger_s`` later, plus the store's last commit.  A job whose handler
        has not stopped 5 s after it was cancelled (a plain function that never
        calls the ``Job`` API) is abandoned: it ends cancelled (or is left to
        the next start's recovery), but its thread runs on until the handler
        returns, since Python cannot stop a thread; meanwhile the store stays
        locked against other servers, and the interpreter's exit waits for the
        thread (``stuck_jobs`` lists such jobs).
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._shutdown())
            self._close_requested.set()

    def hurry(self) -> None:
        """During shutdown: cancel running jobs now instead of after the grace period."""
        if self._engine is not None:
            self._engine.hurry()

    def stuck_jobs(self) -> list[Job]:
        """Jobs whose handlers have not returned.  After ``wait_closed``: those
        abandoned in a thread that still runs (see ``close``).  Safe to call
        from any thread."""
        return self._engine.stuck_jobs() if self._engine is not None else []

    async def wait_closed(self) -> None:
        """Wait until the server is closed: ``close()`` has been called and the
        shutdown it started is complete (as ``asyncio.Server.wait_closed`` since
        Python 3.12).  Returns at once for a server that does not listen (never
        started, or its start failed) and is not closing."""
        if self._closing is None:
            if self._listener is None:
                return
            await self._close_requested.wait()
            assert self._closing is not None  # (set with _close_requested)
        await asyncio.shield(self._closing)

    async def serve_forever(self) -> None:
        """Start if need be, and serve until ``close()`` is called; cancelling it
        closes the server (and waits for that) before the ``CancelledError``
        goes on."""
        try:
            await self.start_serving()
            await self._close_requested.wait()
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise
        await self.wait_closed()

    async def _shutdown(self) -> None:
        if self._started:
            await self._start_ended.wait()  # a start under way ends first, well or not
        if self._engine is None:
            return  # never started, or the start failed (and undid itself)
        log.info("jobmonitor shutting down")
        assert self._listener is not None and self._context is not None  # (set with _engine)
        self._listener.close()
        for connection in list(self._connections):
            connection.stop_keeping()  # (a kept one waiting for its next packet closes)
        await self._engine.stop(self.config.shutdown_grace_s)
        try:
            await asyncio.wait_for(self._no_connections.wait(), self.config.linger_s)
        except TimeoutError:
            # Closing politely would wait for a client that stopped reading to take
            # our last bytes, and keep its socket past the end of the server.
            for connection in list(self._connections):
                connection.abort()
            await self._no_connections.wait()  # connection_lost comes on the next turn
        await self._listener.wait_closed()
        if self._auth is not None:
            await self._auth.close()  # (no connection is left to ask for a check)
        self._context.deadlines.close()
        self._context.parse_turns.close()
        self.refusals.flush()
        log.info("jobmonitor stopped")

    async def __aenter__(self) -> Server:
        """Start (unless started) and return the server.

        Raises:
            the errors of ``start``.
        """
        await self.start_serving()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


def _deadline_tick(config: Config) -> float:
    """How late a connection's reading deadline may fire: 50 ms, or a quarter
    of the shorter limit when that is under 0.2 s."""
    return min(0.05, min(config.idle_timeout_s, config.packet_timeout_s) / 4)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, or None without a certificate.

    Raises:
        ConfigError: the certificate or key cannot be loaded (never a silent
        fall back to plain text).
    """
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert: cannot load {config.tls_cert!r} with key "
                          f"{config.tls_key!r}: {exc}") from None
    return context


def check_exposure(config: Config) -> bool:
    """Refuse to serve an open (user-less) server beyond this machine unless told
    to; return whether it will be served so (``start`` logs a warning).

    Raises:
        ConfigError: no users, a non-loopback address, and no allow_anonymous_network.
    """
    if config.users or _is_loopback(config.host):
        return False
    if not config.allow_anonymous_network:
        raise ConfigError(
            f"host: {config.host!r} is reachable from the network and no users are "
            "configured; add [users] to the config file, or pass --allow-anonymous-network")
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
