"""The store layer: where jobs outlive the process.

``base`` is the interface the engine talks to (``Store``, ``Recordable``,
``Recovery``, ``TaskEvent``); ``memory`` keeps nothing, ``sqlite/`` is the
durable backend, its writes in group commits (``batching``, which does not
depend on SQLite).  A store deals in ``JobRecord``s and encoded lines, never in
running jobs.  ``open_store`` makes the store a URL names; a new backend is a
folder beside ``sqlite/`` (a ``batching.GroupCommitStore`` if durable) and one
entry in ``BACKENDS``.

Rule: imports only the wire layer and ``errors``; never the engine, the server
or anything above them.  The backends import ``base``, never this package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .base import Store
from .memory import MemoryStore
from .sqlite.store import SqliteStore

__all__ = ["open_store", "BACKENDS"]


def _memory(path: str, data_dir: str, commit_interval_s: float, synchronous: str) -> Store:
    return MemoryStore()


def _sqlite(path: str, data_dir: str, commit_interval_s: float, synchronous: str) -> Store:
    path = path.removeprefix("/")
    if not path:
        path = str(Path(data_dir) / "jobmonitor.db")
    return SqliteStore(path, commit_interval_s=commit_interval_s, synchronous=synchronous)


#: A store URL's scheme -> what makes that store from the rest of the URL (after
#: ``scheme://``) and the server's store settings.
BACKENDS: dict[str, Callable[[str, str, float, str], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
}


def open_store(url: str, *, data_dir: str = ".", commit_interval_s: float = 0.05,
               synchronous: str = "full") -> Store:
    """Make the store a URL names.

    ``memory://``; ``sqlite:///relative/path.db`` (relative to the working
    directory); ``sqlite:////absolute/path.db``; ``sqlite://`` alone means
    ``jobmonitor.db`` in ``data_dir``.

    Raises:
        ConfigError: the URL names no known store.
    """
    if url == "memory":
        url = "memory://"
    scheme, separator, rest = url.partition("://")
    make = BACKENDS.get(scheme) if separator else None
    if make is None or (scheme == "memory" and rest):
        raise ConfigError(
            f"store: unknown store URL {url!r} (expected memory:// or sqlite:///PATH)")
    return make(rest, data_dir, commit_interval_s, synchronous)
