"""The store layer: where jobs outlive the process.

``base`` is the interface the engine talks to (``Store``, ``Recordable``,
``Recovery``, ``TaskEvent``); ``memory`` keeps nothing, ``sqlite/`` is the
durable backend of one server, its writes in group commits (``batching``,
which does not depend on SQLite); ``postgres/`` is the store several servers
share (``shared``), loaded only when a URL names it (it needs asyncpg).
A store deals in ``JobRecord``s and encoded lines, never in running jobs.
``open_store`` makes the store a URL names; a new backend is a folder beside
``sqlite/`` (a ``batching.GroupCommitStore`` if durable) and one entry in
``BACKENDS``.

Rule: imports only the wire layer and ``errors``; never the engine, the server
or anything above them.  The backends import ``base``, never this package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .base import Store
from .memory import MemoryStore
from .sqlite.store import SqliteStore

__all__ = ["open_store", "BACKENDS", "StoreSettings"]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The server's store settings; each backend takes those it has a use for."""

    data_dir: str = "."
    commit_interval_s: float = 0.05
    synchronous: str = "full"
    #: A shared store's node: its name, the address it serves on, how often it
    #: says it is alive, and how long after its last word it is declared dead.
    node_name: str | None = None
    address: str = ""
    heartbeat_s: float = 1.0
    lease_s: float = 3.0


def _memory(url: str, settings: StoreSettings) -> Store:
    return MemoryStore()


def _sqlite(url: str, settings: StoreSettings) -> Store:
    path = url.partition("://")[2].removeprefix("/")
    if not path:
        path = str(Path(settings.data_dir) / "jobmonitor.db")
    return SqliteStore(path, commit_interval_s=settings.commit_interval_s,
                       synchronous=settings.synchronous)


def _postgres(url: str, settings: StoreSettings) -> Store:
    try:
        importlib.import_module("asyncpg")
    except ImportError:
        raise ConfigError("store: a postgresql:// store needs its driver: install the "
                          "PostgreSQL driver: pip install 'jobmonitor[postgres]'") from None
    from .postgres.connect import parse_url
    from .postgres.store import PostgresStore
    return PostgresStore(parse_url(url), commit_interval_s=settings.commit_interval_s,
                         node_name=settings.node_name, address=settings.address,
                         heartbeat_s=settings.heartbeat_s, lease_s=settings.lease_s)


#: A store URL's scheme -> what makes that store from the URL and the server's
#: store settings.
BACKENDS: dict[str, Callable[[str, StoreSettings], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def open_store(url: str, *, data_dir: str = ".", commit_interval_s: float = 0.05,
               synchronous: str = "full", node_name: str | None = None, address: str = "",
               heartbeat_s: float = 1.0, lease_s: float = 3.0) -> Store:
    """Make the store a URL names.

    ``memory://``; ``sqlite:///relative/path.db`` (relative to the working
    directory); ``sqlite:////absolute/path.db``; ``sqlite://`` alone means
    ``jobmonitor.db`` in ``data_dir``; ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME``
    (or ``postgres://``) with ``?schema=NAME`` (default ``jobmonitor``), a store
    the servers of a cluster share, each a node named ``node_name`` (the memory
    and SQLite stores ignore the node's settings).

    Raises:
        ConfigError: the URL names no known store, or a PostgreSQL store without
            its driver installed.
    """
    if url == "memory":
        url = "memory://"
    scheme, separator, rest = url.partition("://")
    make = BACKENDS.get(scheme) if separator else None
    if make is None or (scheme == "memory" and rest):
        raise ConfigError(
            f"store: unknown store URL {url!r} (expected memory://, sqlite:///PATH or "
            "postgresql://USER@HOST/DBNAME)")
    return make(url, StoreSettings(data_dir, commit_interval_s, synchronous, node_name,
                                   address, heartbeat_s, lease_s))
