"""The running server: a listener, its connections, the engine and the commands.

``Server`` mirrors ``asyncio.Server``: ``close()`` is idempotent and starts an
ordered shutdown, ``wait_closed()`` waits for it, ``async with`` does both.
Shutdown order: stop listening; let running jobs finish within the grace
period, then cancel them (their monitors get the cancelled and ended lines),
and abandon those that do not stop; close the store; give connections ``linger_s`` to take their last lines, then
abort the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Mapping

from .commands import Commands
from ..config import Config
from .connection import Connection
from .deadlines import Deadlines
from ..engine.engine import Engine
from ..engine.handlers import Handler
from ..engine.job import Job
from .sockets import cork_listeners
from ..store import open_store
from .auth import Authenticator
from .refusals import RefusalLog
from .reloading import Reloaded, changes, settings_to_use
from ..errors import ConfigError
from ..engine.schedule import Clock, check_queue_names

__all__ = ["Server", "Reloaded"]

log = logging.getLogger("jobmonitor.server")


class Server:
    """A jobmonitor server bound to a host and port."""

    def __init__(self, handlers: Mapping[str, Handler], config: Config, *,
                 reload: Callable[[], Reloaded | Mapping[str, Handler]] | None = None,
                 clock: Clock | None = None) -> None:
        """``reload``, if given, is what a reload (``reload()``, ``RestartServer``)
        calls for the settings and handlers to use from then on, or the handlers
        alone (``JobMonitor.make_server`` passes one that re-imports the
        ``config.jobs`` modules, and reads a config file again when told how);
        it raises ``ConfigError`` to keep the old ones.  Without it a reload
        keeps ``handlers`` and ``config``.  ``clock``: what due times and
        schedules read the time from (default: the system's; see ``Engine``).

        Raises:
            ConfigError: a schedule or a project names a project or a queue the
            server does not have.
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
        store = open_store(config.store or "memory://", data_dir=config.data_dir,
                           commit_interval_s=config.commit_interval_s,
                           synchronous=config.sqlite_synchronous)
        self.engine = Engine(self._own_handlers, config, store, clock=clock)
        self._auth = Authenticator(config.users)
        self.commands = Commands(self.engine, auth=self._auth,
                                 restart=self.restart_engine,
                                 max_monitors_per_job=config.max_monitors_per_job)
        self._ssl = _tls_context(config)
        _check_exposure(config)
        self._listener: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._closing: asyncio.Task[None] | None = None
        self._close_requested = asyncio.Event()
        self._bound: tuple[str, int] = (config.host, config.port)
        #: Whether accepted sockets start corked (see ``sockets.cork_listeners``).
        self.accepts_corked = False
        # The loop, for connections (asyncio.get_running_loop is a system call each time).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The connections' reading deadlines (set by start()).
        self.deadlines: Deadlines | None = None

    async def start(self) -> None:
        """Open the store and start listening.

        Raises:
            OSError: the address cannot be bound.
        """
        self._loop = asyncio.get_running_loop()
        self.deadlines = Deadlines(self._loop, _deadline_tick(self.config))
        await self.engine.start()
        try:
            self._listener = await self._loop.create_server(
                lambda: Connection(self), self.config.host, self.config.port,
                reuse_address=True, backlog=1024, ssl=self._ssl,
                # the handshake comes out of the time a client has for its packet
                ssl_handshake_timeout=self.config.packet_timeout_s if self._ssl else None,
            )
        except BaseException:
            await self.engine.stop(0)
            raise
        self._bound = self._listener.sockets[0].getsockname()[:2]
        if self._ssl is None:
            self.accepts_corked = cork_listeners(self._listener.sockets)
        log.info("jobmonitor listening on %s", self.address, extra={"ready": True})

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
        _check_exposure(config)
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

    def _connection_opened(self, connection: Connection) -> None:
        self._connections.add(connection)
        self._no_connections.clear()

    def _connection_closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._no_connections.set()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- life cycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Start an orderly shutdown (idempotent).

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
        self.engine.hurry()

    def stuck_jobs(self) -> list[Job]:
        """Jobs whose handlers have not returned.  After ``wait_closed``: those
        abandoned in a thread that still runs (see ``close``).  Safe to call
        from any thread."""
        return self.engine.stuck_jobs()

    async def wait_closed(self) -> None:
        """Wait until a shutdown started by ``close()`` is complete."""
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def serve_forever(self) -> None:
        """Serve until ``close()`` is called."""
        await self._close_requested.wait()
        await self.wait_closed()

    async def _shutdown(self) -> None:
        log.info("jobmonitor shutting down")
        if self._listener is not None:
            self._listener.close()
        await self.engine.stop(self.config.shutdown_grace_s)
        try:
            await asyncio.wait_for(self._no_connections.wait(), self.config.linger_s)
        except asyncio.TimeoutError:
            # Closing politely would wait for a client that stopped reading to take
            # our last bytes, and keep its socket past the end of the server.
            for connection in list(self._connections):
                connection.abort()
            await self._no_connections.wait()  # connection_lost comes on the next turn
        if self._listener is not None:
            await self._listener.wait_closed()
        await self._auth.close()  # (no connection is left to ask for a check)
        if self.deadlines is not None:
            self.deadlines.close()
        self.refusals.flush()
        log.info("jobmonitor stopped")

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


def _deadline_tick(config: Config) -> float:
    """How late a connection's reading deadline may fire: 50 ms, or a quarter
    of the shorter limit when that is under 0.2 s."""
    return min(0.05, min(config.idle_timeout_s, config.packet_timeout_s) / 4)


def _tls_context(config: Config) -> ssl.SSLContext | None:
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


def _check_exposure(config: Config) -> None:
    """Refuse to serve an open (user-less) server beyond this machine unless told to.

    Raises:
        ConfigError: no users, a non-loopback address, and no allow_anonymous_network.
    """
    if config.users or _is_loopback(config.host):
        return
    if not config.allow_anonymous_network:
        raise ConfigError(
            f"host: {config.host!r} is reachable from the network and no users are "
            "configured; add [users] to the config file, or pass --allow-anonymous-network")
    log.warning("serving %s without authentication: anyone who can reach it can run jobs",
                config.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
