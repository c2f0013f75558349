"""Reaching PostgreSQL: the store URL, which failures are the environment's, and
the one connection each node listens on for notifications.

A store URL is ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME`` (or
``postgres://``), with ``?schema=NAME`` (default ``jobmonitor``) and, for a Unix
socket, ``?host=/folder``.  Every connection sets its ``search_path`` to the
schema, so the SQL names no schema; notification channels are database-wide, so
theirs carry the schema's name.

The listener is a connection of its own, never one of the pool's: it stays
subscribed between statements.  When it breaks (the database restarted, the
network failed) it reconnects with a growing pause, and says so
(``on_connected``), since the notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from ...errors import ConfigError, StoreUnavailable

__all__ = ["Settings", "parse_url", "unavailable", "Listener", "CONNECT_TIMEOUT_S",
           "STATEMENT_TIMEOUT_S"]

log = logging.getLogger("jobmonitor.store")

#: How long connecting may take, and one statement, before the operation fails
#: (and a command waiting on it is refused rather than left hanging).
CONNECT_TIMEOUT_S = 3.0
STATEMENT_TIMEOUT_S = 5.0
#: The listener's pauses between tries to reconnect: the first, and the longest.
FIRST_RETRY_S = 0.1
LONGEST_RETRY_S = 2.0
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
#: SQLSTATE classes of failures that are the environment's: a connection
#: failure, insufficient resources, operator intervention (a shutdown), a system
#: error, a transaction rolled back (serialization, deadlock).
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58", "40"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the store is."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    schema: str

    @property
    def where(self) -> str:
        """The store as log lines name it (no password)."""
        return f"PostgreSQL {self.user}@{self.host}:{self.port}/{self.database} " \
               f"(schema {self.schema})"

    def connect_kwargs(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user,
                "password": self.password, "database": self.database,
                "timeout": CONNECT_TIMEOUT_S,
                # (Quoted, as the schema was made: a name with capitals stays so.)
                "server_settings": {"search_path": f'"{self.schema}"',
                                    "application_name": "jobmonitor",
                                    "client_min_messages": "warning"}}

    def channel(self, name: str) -> str:
        """A notification channel of this store's schema."""
        return f"jm_{name}.{self.schema}"


def parse_url(url: str) -> Settings:
    """The settings a ``postgresql://`` or ``postgres://`` URL names.

    Raises:
        ConfigError: the URL is not one (one line, saying what is wrong).
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError as exc:
        raise ConfigError(f"store: bad PostgreSQL URL: {exc}") from None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"schema", "host"}
    if unknown:
        raise ConfigError(f"store: unknown PostgreSQL URL parameter {sorted(unknown)[0]!r} "
                          "(expected schema= or host=)")
    schema = query.get("schema", "jobmonitor")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(f"store: bad schema name {schema!r} in the PostgreSQL URL (letters, "
                          "digits and _, not starting with a digit, at most 48)")
    database = unquote(parts.path.removeprefix("/"))
    host = query.get("host") or unquote(parts.hostname or "") or "localhost"
    user = unquote(parts.username or "") or "postgres"
    if not database:
        raise ConfigError("store: the PostgreSQL URL names no database "
                          "(postgresql://USER@HOST/DBNAME)")
    return Settings(host, port, user, unquote(parts.password) if parts.password else None,
                    database, schema)


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The refusal for the commands a failure touches when it is the
    environment's (the database is down, unreachable, out of connections, shutting
    down, too slow), not a bug; else None."""
    reason: str | None = None
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError)):
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    elif isinstance(exc, asyncpg.PostgresError) and \
            (exc.sqlstate or "")[:2] in _UNAVAILABLE_CLASSES:
        reason = str(exc)
    if reason is None:
        return None
    refusal = StoreUnavailable(reason)
    refusal.__cause__ = exc
    return refusal


Callback = Callable[[str], None]


class Listener:
    """The node's own connection for notifications, kept open while the store is."""

    def __init__(self, settings: Settings, channels: dict[str, Callback],
                 on_connected: Callable[[], None]) -> None:
        self._settings = settings
        self._channels = channels  # channel -> what to call with each payload
        self._on_connected = on_connected
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection[asyncpg.Record] | None = None
        self._broken: asyncio.Event | None = None
        self._subscribed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def listening(self) -> bool:
        """Subscribed, on a connection not known to be broken: every notification
        sent from now on is heard."""
        broken = self._broken
        return self._subscribed and broken is not None and not broken.is_set()

    def check(self) -> None:
        """Notice a connection that closed without telling (called every heartbeat)."""
        connection, broken = self._connection, self._broken
        if connection is not None and broken is not None and connection.is_closed():
            broken.set()

    async def _run(self) -> None:
        pause = FIRST_RETRY_S
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: connect again
                log.debug("the PostgreSQL listener failed: %s", exc)
            else:
                pause = FIRST_RETRY_S  # it worked for a while
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_RETRY_S)

    async def _listen(self) -> None:
        """Subscribe, and return once the connection breaks."""
        connection = await asyncpg.connect(**self._settings.connect_kwargs())
        broken = self._broken = asyncio.Event()
        self._connection = connection
        try:
            connection.add_termination_listener(lambda _connection: broken.set())
            for channel, callback in self._channels.items():
                await connection.add_listener(channel, _payload_to(callback))
            self._subscribed = True
            self._on_connected()
            await broken.wait()
        finally:
            self._subscribed = False
            self._connection = self._broken = None
            connection.terminate()


def _payload_to(callback: Callback) -> Callable[[Any, int, str, str], None]:
    def on_notification(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            callback(payload)
        except Exception:  # one bad notification must not break the listener
            log.exception("handling a PostgreSQL notification failed")
    return on_notification
