"""A store's spells of failing, told in two log lines each: when one starts and when it ends.

A full disk, or another program holding the database's lock, makes every write
fail until it is dealt with, and every command that must write is refused
meanwhile.  A log line (let alone a traceback) per refused command would bury
the one line that says what is wrong, and fill the very disk that is full.  So
the first failure of a spell is logged with its reason; later ones are only
counted; the first write that works again logs that the store recovered, after
how long, and how many commands were refused in between.  A failure that is not
the environment's (a bug) is logged with its traceback, once per spell.
"""

from __future__ import annotations

import logging
import time

__all__ = ["Outage"]


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
