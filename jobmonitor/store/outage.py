"""A store's failures that are the environment's doing, and its spells of failing,
told in two log lines each: when one starts and when it ends.

A full disk, or another program holding the database's lock, makes every write
fail until it is dealt with, and every command that must write is refused
meanwhile.  A log line (let alone a traceback) per refused command would bury
the one line that says what is wrong, and fill the very disk that is full.  So
the first failure of a spell is logged with its reason; later ones are only
counted; the first write that works again logs that the store recovered, after
how long, and how many commands were refused in between.  A failure that is not
the environment's (a bug) is logged with its traceback, once per spell.

``unavailable`` tells SQLite's failures of the environment (a full disk, a
lock, an I/O error) from the rest: commands they touch are refused with
``StoreUnavailable`` instead of being answered as a server bug.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from ..errors import StoreUnavailable

__all__ = ["Outage", "unavailable", "UNAVAILABLE_CODES"]

#: SQLite's primary result codes for a database that cannot be used now through no
#: fault of the server's: busy or locked past the busy timeout, out of memory,
#: read-only, an I/O error, full, cannot be opened, a broken lock protocol.
UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL})


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The refusal for the commands a failure of the database touches, when the
    failure is the environment's doing (a full disk, a lock held by another
    program), not a bug; else None."""
    # (An error the sqlite3 module raises itself, such as for a closed connection,
    # has no SQLite code.)
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    if code is not None and code & 0xFF in UNAVAILABLE_CODES:
        refusal = StoreUnavailable(str(exc))
        refusal.__cause__ = exc
        return refusal
    return None


class Outage:
    """The current spell of failures of one store, if any."""

    def __init__(self, log: logging.Logger, name: str) -> None:
        self._log = log
        self._name = name  # what the log lines call the store
        self._since: float | None = None  # (time.monotonic()) while failing
        self._failures = 0
        self._refused = 0

    def failed(self, exc: BaseException, refused: int, *, expected: bool) -> None:
        """An operation on the store failed with ``exc`` and ``refused`` commands were
        refused for it.  ``expected``: the environment's doing (a full disk, a lock),
        which needs no traceback except at debug level."""
        self._failures += 1
        self._refused += refused
        if self._since is not None:
            return
        self._since = time.monotonic()
        self._log.error("%s failed (%s: %s): commands that need it are refused until it "
                        "works again; changes not yet stored wait in memory",
                        self._name, type(exc).__name__, exc,
                        exc_info=None if expected else exc)
        if expected:
            self._log.debug("the first failure of %s", self._name, exc_info=exc)

    def worked(self) -> None:
        """A write went through: log the end of the spell, if there was one."""
        if self._since is None:
            return
        self._log.warning("%s works again after %.1f s (failed tries: %d; commands refused "
                          "meanwhile: %d)", self._name, time.monotonic() - self._since,
                          self._failures, self._refused)
        self._since = None
        self._failures = self._refused = 0
