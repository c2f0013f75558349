"""The running server: a listener, its connections, the engine and the commands.

``Server`` mirrors ``asyncio.Server``: ``close()`` is idempotent and starts an
ordered shutdown, ``wait_closed()`` waits for it, ``async with`` does both.
Shutdown order: stop listening; let running jobs finish within the grace
period, then cancel them (their monitors get the cancelled and ended lines);
close the store; give connections ``linger_s`` to take their last lines, then
abort the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Mapping

from .commands import Commands
from .config import Config
from .connection import Connection
from .deadlines import Deadlines
from .parse_turns import ParseTurns
from .engine import Engine
from .handlers import Handler
from .loader import load_handlers
from .sockets import cork_listeners
from .store import open_store
from .auth import Authenticator
from .errors import ConfigError

__all__ = ["Server"]

log = logging.getLogger("jobmonitor.server")


class Server:
    """A jobmonitor server bound to a host and port."""

    def __init__(self, handlers: Mapping[str, Handler], config: Config) -> None:
        self.config = config
        self._own_handlers = dict(handlers)
        store = open_store(config.store or "memory://", data_dir=config.data_dir,
                           commit_interval_s=config.commit_interval_s,
                           synchronous=config.sqlite_synchronous)
        self.engine = Engine(self._handlers(reload=False), config, store)
        self.commands = Commands(self.engine, auth=Authenticator(config.users),
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
        #: The loop's budget for parsing big packets (set by start()).
        self.parse_turns: ParseTurns | None = None

    async def start(self) -> None:
        """Open the store and start listening.

        Raises:
            OSError: the address cannot be bound.
        """
        self._loop = asyncio.get_running_loop()
        self.deadlines = Deadlines(self._loop, _deadline_tick(self.config))
        self.parse_turns = ParseTurns(self._loop)
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

    def _handlers(self, *, reload: bool) -> dict[str, Handler]:
        """The embedding app's handlers plus those of the ``jobs`` modules.

        Raises:
            ConfigError: a module cannot be loaded, or a project is registered twice.
        """
        return load_handlers(self.config.jobs, self._own_handlers, reload=reload)

    async def restart_engine(self) -> None:
        """RestartServer: finish or cancel running jobs, reload job modules, go on.

        Raises:
            ConfigError: a job module no longer loads (the old handlers stay).
        """
        handlers = self._handlers(reload=True)
        log.info("restarting the job engine")
        await self.engine.restart(self.config.shutdown_grace_s, handlers)

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
        """Start an orderly shutdown (idempotent)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._shutdown())
            self._close_requested.set()

    def hurry(self) -> None:
        """During shutdown: cancel running jobs now instead of after the grace period."""
        self.engine.hurry()

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
        if self.deadlines is not None:
            self.deadlines.close()
        if self.parse_turns is not None:
            self.parse_turns.close()
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
