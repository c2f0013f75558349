"""The SQLite store's database file: who may open it, whether it is fit to
open, the mark of transaction numbers kept beside it, and giving space back.

**One server per file.**  The lock is ``REAL.lock``, where ``REAL`` is the
database's path with every symbolic link and ``..`` resolved: every spelling
of the file through links, relative paths or a bind mount of its folder meets
the same lock file.  A database with a second name (a hard link) is refused
outright: SQLite names its ``-wal`` and ``-shm`` files after the name it was
given, so under another name it would miss the commits still in the log, even
with the first server stopped.  (Not a lock on the database file itself: on
the BSDs and macOS an ``flock`` there would collide with SQLite's own locks.)

**Numbers.**  The database holds its jobs' numbers, but damage SQLite does
not notice (an emptied file, a flipped byte in the write-ahead log, lost rows)
can take the newest jobs and their numbers with them; a new job would then get
the number an acknowledged job had.  So ``REAL.numbers`` holds a second copy
of the mark: before a commit stores a number above it, it is raised past that
number to the next multiple of ``NUMBER_BLOCK`` and synced.  A stopping store
writes the exact highest number; a crash leaves the block's end, and numbering
goes on after it (a gap of less than ``NUMBER_BLOCK``).  The next number is
above both the database's highest and this mark.

**Space.**  A new database uses ``auto_vacuum=INCREMENTAL``; after a purge that
leaves much of the file free, the free pages are given back to the file system
(for a database made before, by one ``VACUUM``, which also switches it over).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from ...errors import ConfigError
from .blocks import unreadable_blocks
from .rows import last_number, transaction_id_of, undecodable_jobs, upgrade_schema

__all__ = ["DatabaseFile", "NumberMark", "NUMBER_BLOCK", "STORE_DAMAGED", "open_error",
           "reclaim_space", "quick_check"]

try:
    import fcntl
except ImportError:  # not on this platform: no lock
    fcntl = None  # type: ignore[assignment]  # a module or None: checked before each use

log = logging.getLogger("jobmonitor.store")

#: Numbers reserved ahead in ``REAL.numbers``: one sync of that file per block.
NUMBER_BLOCK = 1000
#: Free space worth giving back after a purge, in bytes, if it is also at least
#: ``1 / RECLAIM_FRACTION`` of the file (less is soon reused by new jobs).
RECLAIM_MIN_BYTES = 1 << 20
RECLAIM_FRACTION = 4
#: Most problems ``quick_check`` lists.
CHECK_LIMIT = 20
_MOVE_AWAY = ("move it away with its -wal and -shm files (the next start makes a new "
              "database; keep the .numbers file beside it, so that numbers go on), or put "
              "back a backup")
#: What to do about a damaged database (after ``--check-store`` found problems).
STORE_DAMAGED = ("the server leaves out jobs that do not decode, but a damaged database "
                 "can lose more: stop the server and " + _MOVE_AWAY)
#: SQLite's error names, and what to do about each.
_ADVICE = {
    "SQLITE_CORRUPT": "the database is damaged (jobmonitor serve --check-store says more); "
                      + _MOVE_AWAY,
    "SQLITE_NOTADB": "it is not an SQLite database; " + _MOVE_AWAY,
    "SQLITE_FULL": "free some space on its disk, then start again",
    "SQLITE_IOERR": "its disk could not read or write it (is it full, or failing?); free "
                    "some space or check the disk, then start again",
}


class DatabaseFile:
    """The database's path as given (for messages), its real path, and its lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.real = os.path.realpath(path)
        self.numbers = NumberMark(self.real + ".numbers")
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take ``REAL.lock`` for this process, until ``unlock`` or the process ends.

        Raises:
            ConfigError: another server holds it.
        """
        if fcntl is None:
            return
        fd = os.open(self.real + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"store: {self.path} is in use by another jobmonitor server (process "
                f"{holder}); stop that one first, or give this one another --store or "
                f"--data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # (the file stays: removing it would race a new server)
            self._lock_fd = None

    def refuse_other_names(self) -> None:
        """Refuse a database that has more than one name.

        Raises:
            ConfigError: it has hard links.
        """
        try:
            links = os.stat(self.real).st_nlink
        except FileNotFoundError:
            return
        if links > 1:
            raise ConfigError(
                f"store: {self.path} has {links} names (hard links); SQLite keeps its "
                f"write-ahead log beside the name it is given, so under another name the "
                f"last commits could be missed: remove the other names (find -samefile "
                f"lists them) and use one")

    def refuse_empty(self) -> None:
        """Refuse an empty file (a path with nothing there is a new database).

        Raises:
            ConfigError: the file is empty.
        """
        try:
            size = os.stat(self.real).st_size
        except FileNotFoundError:
            return
        if size == 0:
            raise ConfigError(
                f"store: {self.path} is an empty file, not a database (if it held jobs, "
                f"they are gone); " + _MOVE_AWAY)

    def numbered_up_to(self, stored: int) -> int:
        """The highest number that may have been handed out: the database's
        ``stored``, or the mark beside it if that is higher."""
        mark, stopped = self.numbers.read()
        if stopped and mark > stored:
            log.warning("%s holds jobs up to %s, but the last stop recorded %s: the jobs "
                        "after %s are missing from it (damage?); numbering goes on after %s "
                        "(jobmonitor serve --check-store checks the database)", self.path,
                        transaction_id_of(stored), transaction_id_of(mark),
                        transaction_id_of(stored), transaction_id_of(mark))
        return max(stored, mark)

    def check(self, busy_timeout_s: float) -> list[str]:
        """What is wrong with the database (none: an empty list): SQLite's
        ``quick_check``, then every job that does not decode and every block of
        lines that does not read back, then numbers lost.

        Raises:
            ConfigError: there is no database, a server is using it, or SQLite
                cannot open it.
        """
        if not os.path.exists(self.real):
            raise ConfigError(f"store: there is no database at {self.path}")
        self.refuse_other_names()
        self.lock()
        try:
            self.refuse_empty()
            db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # its first page
                return self._problems(db)
            finally:
                db.close()
        except sqlite3.Error as exc:  # (opening it: _problems reports what comes after)
            raise open_error(self.path, exc) from None
        finally:
            self.unlock()

    def _problems(self, db: sqlite3.Connection) -> list[str]:
        try:
            problems = quick_check(db)
            if not problems:
                upgrade_schema(db)  # (what the next start would do: the jobs decode with it)
                problems = undecodable_jobs(db) + unreadable_blocks(db)
            stored = last_number(db)
        except sqlite3.DatabaseError as exc:  # damage that stops the check itself
            return [f"the check stopped: {exc}"]
        mark, stopped = self.numbers.read()
        if stopped and mark > stored:
            problems.append(f"the database holds jobs up to {transaction_id_of(stored)}, but "
                            f"the last stop recorded {transaction_id_of(mark)}: jobs are "
                            f"missing")
        return problems


class NumberMark:
    """The highest transaction number handed out, kept in a small file of its own.

    The file holds one line: the number, then ``reserved`` (numbers up to it may
    be in use) or ``stopped`` (the store stopped with this as its highest).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        #: Numbers up to this one may be stored without writing the file.
        self.reserved = 0

    def read(self) -> tuple[int, bool]:
        """The number in the file (0 for none), and whether the store stopped there."""
        try:
            text = Path(self.path).read_text("ascii")
        except FileNotFoundError:
            return 0, False
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read %s (%s); numbering goes on from the database's "
                        "highest number", self.path, exc)
            return 0, False
        number, _, state = text.strip().partition(" ")
        if not number.isdigit() or state not in ("reserved", "stopped"):
            log.warning("%s does not hold a transaction number (%r); numbering goes on from "
                        "the database's highest number", self.path, text[:40])
            return 0, False
        return int(number), state == "stopped"

    def cover(self, number: int) -> None:
        """Make sure the file allows ``number``, syncing it first if it did not.

        Raises:
            OSError: the file could not be written (nothing above the old mark may
                then be stored).
        """
        if number > self.reserved:
            reserved = (number // NUMBER_BLOCK + 1) * NUMBER_BLOCK
            self._write(f"{reserved} reserved\n")
            self.reserved = reserved

    def stopped(self, highest: int) -> None:
        """Record the exact highest number, at a stop.

        Raises:
            OSError: the file could not be written (it keeps its reserved mark).
        """
        self._write(f"{highest} stopped\n")
        self.reserved = highest

    def _write(self, text: str) -> None:
        # A new file renamed over the old one, both synced: a crash leaves
        # either mark whole, never an empty or torn file.
        new = self.path + ".new"
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(new, self.path)
        _sync_folder(os.path.dirname(self.path))


def _sync_folder(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # (not on every platform)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_error(path: str, exc: sqlite3.Error) -> ConfigError:
    """The one-line start-up error for an SQLite error while opening ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    advice = next((text for code, text in _ADVICE.items()
                   if name == code or name.startswith(code + "_")), None)
    suffix = f"; {advice}" if advice else ""
    return ConfigError(f"store: cannot open {path}: {exc}{suffix}")


def reclaim_space(db: sqlite3.Connection) -> int:
    """Give the database's free pages back to the file system, if there are many;
    return how many bytes were freed (0 when it was not worth it)."""
    page_size = _pragma_number(db, "page_size")
    free = _pragma_number(db, "freelist_count")
    pages = _pragma_number(db, "page_count")
    if free * page_size < RECLAIM_MIN_BYTES or free * RECLAIM_FRACTION < pages:
        return 0
    if _pragma_number(db, "auto_vacuum") == 0:  # made before: switch it over
        log.info("rebuilding the database once to give back %d MB (VACUUM); later "
                 "purges free their space as they go", free * page_size >> 20)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")
    else:
        # (executescript runs it to the end; execute would free one page.)
        db.executescript("PRAGMA incremental_vacuum")
    # The file shrinks when the log is written back into it.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return (pages - _pragma_number(db, "page_count")) * page_size


def _pragma_number(db: sqlite3.Connection, name: str) -> int:
    """The number an SQLite pragma ``name`` (one of ours, never a peer's) reads."""
    number: int = db.execute(f"PRAGMA {name}").fetchone()[0]
    return number


def quick_check(db: sqlite3.Connection) -> list[str]:
    """SQLite's ``quick_check``: the problems it finds (none: an empty list)."""
    rows = db.execute(f"PRAGMA quick_check({CHECK_LIMIT})").fetchall()
    found = [line for row in rows for line in str(row[0]).splitlines()
             if not line.startswith("*** in database")]
    return [] if found == ["ok"] else found
