"""The SQLite store: WAL mode, a writer thread, a reader thread; group commits
(``batching``).

Database work runs on two threads, each with its own connection, so the event
loop never waits on disk: one writes (every change, and deletes), one reads
(lookups, job lines, listings).  In WAL mode a reader sees the last commit and
neither waits for the other, so a long listing, read page by page, does not
hold up the commits that acknowledge submits.  What to write and when is
``batching``'s: this module
writes a ``Batch`` in one transaction, tells the failures that are the
environment's (``unavailable``: a full disk, a lock held by another program
past ``BUSY_TIMEOUT_S``) from bugs, and answers the reads.

A job's row is inserted whole once; later commits update only the columns
that can change (no parameters re-encoded).  Each table gets one statement
per commit (a few for a very large batch): every statement takes the
interpreter lock back when SQLite returns, and while the event loop is busy
each such handover is a wait.

The tables, how a row is written and the queries are ``rows``'s.

One server at a time: ``open`` takes an exclusive lock beside the database
file (``sqlite_file`` says how every spelling of the file finds it), so a second
server on the same file, which would hand out the same transaction IDs and run
the same jobs again, refuses to start instead.  The lock is let go by ``close``
or with the process, however it ends; a server that stops while a handler's
thread still runs keeps it until that thread returns (``close(keep_lock=True)``,
then ``release_lock``).  ``open`` refuses an empty or damaged
file in one line, and numbers jobs above the mark ``sqlite_file`` keeps beside
the database too (raised by ``_write`` before a commit goes past it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ...errors import StoreUnavailable
from ...wire.records import JobRecord
from ...wire.variables import TASK_LOG_SIZE
from ..base import Recovery
from ..batching import Batch, GroupCommitStore
from ..outage import Outage, unavailable
from .blocks import INSERT_BLOCKS, pack_blocks
from .file import DatabaseFile, open_error, reclaim_space
from .rows import (
    JOB_COLUMNS,
    SCHEDULE_MARK_HEAD,
    SCHEDULE_MARK_TAIL,
    SCHEMA,
    STATEMENT_CACHE,
    UNFINISHED,
    UPDATE_GROUP,
    UPDATE_HEAD,
    UPDATE_TAIL,
    delete_numbers,
    find_token,
    finished_before_numbers,
    insert_rows,
    job_row,
    job_update,
    last_number,
    list_page,
    number_of,
    read_lines,
    recent_events,
    schedule_marks_of,
    select_records,
    stored_schedule_marks,
    transaction,
    upgrade_schema,
)

__all__ = ["SqliteStore"]

log = logging.getLogger("jobmonitor.store")

T = TypeVar("T")

#: SQLite's page cache, in KiB (its default is 2000).  The store mostly appends
#: and reads back recent pages; the OS caches the file anyway, and every MiB
#: kept here is charged to a server holding thousands of waiting jobs.
CACHE_KIB = 1024
#: How long a statement waits for a lock another connection holds (SQLite's
#: busy timeout) before the commit fails.
BUSY_TIMEOUT_S = 5.0


class SqliteStore(GroupCommitStore):
    """Jobs in one SQLite file."""

    # A record as a new row of the jobs table, and as the update of a stored one.
    job_row = staticmethod(job_row)
    job_update = staticmethod(job_update)

    def __init__(self, path: str, *, commit_interval_s: float = 0.05,
                 synchronous: str = "full") -> None:
        super().__init__(commit_interval_s=commit_interval_s,
                         outage=Outage(log, f"the store at {path}"))
        self.path = path
        self.synchronous = "NORMAL" if synchronous == "normal" else "FULL"
        self._db: sqlite3.Connection | None = None
        #: The reading connection (None until open(), and for a ":memory:"
        #: database, which a second connection would not see: it reads with _db).
        self._reader: sqlite3.Connection | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "jobmonitor-sqlite")
        self._read_thread = concurrent.futures.ThreadPoolExecutor(1, "jobmonitor-sqlite-read")
        #: The file, its lock and its number mark (None for ":memory:").
        self._file = DatabaseFile(path) if path != ":memory:" else None
        #: The highest transaction number stored, or handed out before this start.
        self._highest = 0
        #: Numbers of job rows that did not decode, each logged once.
        self._bad_rows: set[int] = set()

    # -- life cycle -------------------------------------------------------------

    async def open(self) -> Recovery:
        self._loop = asyncio.get_running_loop()
        recovery: Recovery = await self._call(self._open_db)
        if self.path != ":memory:":
            try:
                self._reader = await self._call_reader(self._connect, True)
            except BaseException:
                await self.close()
                raise
        self._start_commits(recovery)
        return recovery

    async def close(self, *, keep_lock: bool = False) -> None:
        await self._stop_commits()
        if self._reader is not None:
            await self._call_reader(self._reader.close)
            self._reader = None
        self._read_thread.shutdown(wait=True)
        if self._db is not None:
            await self._call(self._close_db)
        self._thread.shutdown(wait=True)
        if not keep_lock:
            self._unlock()

    def release_lock(self) -> None:
        self._unlock()

    # -- writing (what batching asks of the backend) ----------------------------------

    async def _write_batch(self, batch: Batch) -> None:
        await self._call(self._write, batch)

    def _refusal(self, exc: Exception) -> StoreUnavailable | None:
        return unavailable(exc)

    # -- the database thread ----------------------------------------------------------

    async def _call(self, func: Any, *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._thread, func, *args)

    async def _call_reader(self, func: Any, *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._read_thread, func, *args)

    def _connect(self, reader: bool = False) -> sqlite3.Connection:
        """A connection to the database (``reader``: one that only reads).

        Raises:
            ConfigError: SQLite cannot open it (one line, saying what to do).
        """
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                 isolation_level=None, cached_statements=STATEMENT_CACHE)
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            if reader:
                db.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise open_error(self.path, exc) from None
        return db

    def _open_db(self) -> Recovery:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self._file is None:
            return self._open_locked()
        self._file.refuse_other_names()
        self._file.lock()
        try:
            self._file.refuse_empty()
            return self._open_locked()
        except BaseException:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._unlock()
            raise

    def _open_locked(self) -> Recovery:
        """Open the database, and say what is there.

        Raises:
            ConfigError: SQLite cannot open or read it (one line, saying what to do).
        """
        try:
            db = self._db = self._connect()
            # Only a new database takes it (before its first table); see reclaim_space.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(SCHEMA)
            upgrade_schema(db)  # (issue 20: a database of an earlier version)
            stored = last_number(db)
            last = stored if self._file is None else self._file.numbered_up_to(stored)
            if last > stored:  # the database keeps the mark too (and warns only once)
                db.execute("REPLACE INTO meta VALUES ('last_number', ?)", (str(last),))
            marks = ",".join("?" * len(UNFINISHED))
            unfinished = select_records(db, f"status IN ({marks}) ORDER BY number", UNFINISHED,
                                        self._bad_rows)
            events = recent_events(db, TASK_LOG_SIZE)
            schedule_marks = stored_schedule_marks(db)
        except sqlite3.Error as exc:
            raise open_error(self.path, exc) from None
        self._highest = last
        return Recovery(last, unfinished, events, schedule_marks)

    def _unlock(self) -> None:
        if self._file is not None:
            self._file.unlock()

    def _close_db(self) -> None:
        assert self._db is not None
        self._db.close()
        self._db = None
        if self._file is not None:
            try:
                self._file.numbers.stopped(self._highest)
            except OSError as exc:  # the file keeps its reserved mark, which is higher
                log.error("cannot write %s: %s", self._file.numbers.path, exc)

    def _write(self, batch: Batch) -> None:
        db = self._db
        assert db is not None
        newest = max(row[0] for row in batch.rows) if batch.rows else 0
        if newest > self._highest and self._file is not None:
            self._file.numbers.cover(newest)  # before any job may be stored under it
        blocks = pack_blocks(batch.blocks)  # (before the transaction: it takes the time)
        with transaction(db):
            insert_rows(db, f"REPLACE INTO jobs ({JOB_COLUMNS})", batch.rows)
            insert_rows(db, UPDATE_HEAD, batch.updates, group=UPDATE_GROUP, tail=UPDATE_TAIL)
            insert_rows(db, INSERT_BLOCKS, blocks)
            insert_rows(db, "INSERT OR REPLACE INTO history", batch.history)
            insert_rows(db, "INSERT OR REPLACE INTO outputs", batch.outputs)
            # (issue 20) a job a schedule made, and the schedule's mark: one commit
            insert_rows(db, SCHEDULE_MARK_HEAD, schedule_marks_of(batch.rows),
                        tail=SCHEDULE_MARK_TAIL)
        self._highest = max(self._highest, newest)

    # -- reading ------------------------------------------------------------------------

    # (Each runs on the reading thread, with the reading connection, in a read
    # transaction: one consistent view of the last commit.)

    async def load(self, transaction_id: str) -> JobRecord | None:
        number = number_of(transaction_id)
        if number is None:
            return None
        records = await self._read(select_records, "number = ?", (number,), self._bad_rows)
        return records[0] if records else None

    async def find_token(self, identity: str, job_token: str) -> str | None:
        return await self._read(find_token, identity, job_token)

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        number = number_of(transaction_id)
        if number is None:
            return []
        return await self._read(read_lines, number, from_line, limit)

    async def list_records(self, identity: str | None, after: int,
                           limit: int) -> Sequence[JobRecord]:
        return await self._read(list_page, identity, after, limit, self._bad_rows)

    # (Deleting runs on the writing thread.)

    async def delete(self, transaction_id: str) -> None:
        number = number_of(transaction_id)
        if number is not None:
            await self._call_db(delete_numbers, [number], writes=True)

    async def purge(self, finished_before: float) -> int:
        numbers = await self._call_db(finished_before_numbers, finished_before)
        if numbers:
            await self._call_db(delete_numbers, numbers, writes=True)
            try:
                freed = await self._call_db(reclaim_space, writes=True)
            except (StoreUnavailable, sqlite3.Error) as exc:  # the jobs are gone all the same
                log.warning("giving back the space of %d purged jobs failed: %s",
                            len(numbers), exc)
            else:
                if freed:
                    log.info("gave back %.1f MB of %s", freed / 1e6, self.path)
        return len(numbers)

    async def check(self) -> list[str]:
        if self._file is None:
            return []
        return await asyncio.to_thread(self._file.check, BUSY_TIMEOUT_S)

    async def _call_db(self, func: Callable[..., T], *args: Any, writes: bool = False) -> T:
        """``func(connection, *args)`` on the database thread (``writes``: it writes, so
        its success ends a spell of failures).

        Raises:
            StoreUnavailable: the database cannot be used now (see ``unavailable``).
        """
        def call() -> T:
            assert self._db is not None
            return func(self._db, *args)

        try:
            result: T = await self._call(call)
        except Exception as exc:
            refusal = unavailable(exc)
            if refusal is None:
                raise  # a bug: logged in full by whoever answers the command
            self._outage.failed(exc, 1, expected=True)
            raise refusal from exc
        if writes:
            self._outage.worked()
        return result

    async def _read(self, func: Callable[..., T], *args: Any) -> T:
        """``func(connection, *args)`` in a read transaction on the reading thread
        (on the writing one for a ":memory:" database).

        Raises:
            StoreUnavailable: the database cannot be read now (see ``unavailable``).
        """
        reader = self._reader

        def call() -> T:
            db = reader or self._db
            assert db is not None
            with transaction(db):
                return func(db, *args)

        try:
            result: T = await (self._call(call) if reader is None else self._call_reader(call))
        except Exception as exc:
            refusal = unavailable(exc)
            if refusal is None:
                raise  # a bug: logged in full by whoever answers the command
            self._outage.failed(exc, 1, expected=True)
            raise refusal from exc
        return result

