"""The SQLite store: WAL mode, a writer thread with group commits, a reader thread.

Database work runs on two threads, each with its own connection, so the event
loop never waits on disk: one writes (every change, and deletes), one reads
(lookups, job lines, listings).  In WAL mode a reader sees the last commit and
neither waits for the other, so a long listing, read page by page, does not
hold up the commits that acknowledge submits.

Changes are gathered on the loop: ``changed`` only marks a job.  A committer
task takes everything marked, copies from it on the loop what the database
needs (new lines, history and outputs since the last commit, and the job row,
as tuples) and writes that in one transaction.  A new job
(``add``) starts a commit at once if none is running; otherwise it rides the
next one, so many submits share one fsync.  Other changes wait at most
``commit_interval_s``.

A commit that fails (a full disk, a lock held by another program past
``BUSY_TIMEOUT_S``) stores nothing: the submits it carried are refused (their
jobs were never acknowledged), and for every other job the store goes back to
what it had taken before, so the next commit, ``RETRY_DELAY_S`` later, writes
it all again.  Monitors are told only of lines a commit stored.

A job's row is inserted whole once; later commits update only the columns
that can change (no parameters re-encoded).  Each table gets one statement
per commit (a few for a very large batch): every statement takes the
interpreter lock back when SQLite returns, and while the event loop is busy
each such handover is a wait.

The tables, how a row is written and the queries are ``sqlite_rows``'s.

One server at a time: ``open`` takes an exclusive lock on ``PATH.lock`` (which
holds the server's process ID), so a second server on the same file, which
would hand out the same transaction IDs and run the same jobs again, refuses
to start instead.  The lock goes with the process, however it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .records import JobRecord
from .sqlite_rows import (FINAL, JOB_COLUMNS, SCHEMA, STATEMENT_CACHE, UNFINISHED, UPDATE_GROUP,
                          UPDATE_HEAD, UPDATE_TAIL, delete_numbers, find_token,
                          finished_before_numbers, insert_rows, job_row, job_update,
                          last_number, list_page, number_of, read_lines, recent_events,
                          select_records, transaction)
from .store import Recordable, Recovery, Store

__all__ = ["SqliteStore"]

try:
    import fcntl
except ImportError:  # not on this platform: no lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("jobmonitor.store")

T = TypeVar("T")

RECENT_EVENTS = 200
#: SQLite's page cache, in KiB (its default is 2000).  The store mostly appends
#: and reads back recent pages; the OS caches the file anyway, and every MiB
#: kept here is charged to a server holding thousands of waiting jobs.
CACHE_KIB = 1024
_EMPTY = bytearray()
#: Loop turns the committer lets pass between a commit and the next batch.
AFTER_COMMIT_TURNS = 2
#: Most lines in one stored block.
BLOCK_LINES = 2000
#: How long a statement waits for a lock another connection holds (SQLite's
#: busy timeout) before the commit fails.
BUSY_TIMEOUT_S = 5.0
#: The pause after a failed commit before the next try.
RETRY_DELAY_S = 1.0


@dataclass(slots=True)
class _Written:
    """How much of one job the store has taken so far."""

    lines: int = 0
    history: int = 0
    outputs: int = 0
    #: The job's row is in the table: later writes update it.
    row: bool = False


@dataclass(slots=True)
class _Batch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[tuple[int, int, int, bytearray]] = field(default_factory=list)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    outputs: list[tuple[Any, ...]] = field(default_factory=list)
    stored: list[tuple[Recordable, int]] = field(default_factory=list)
    #: Per job, what the store had taken before this batch (job, its _Written,
    #: lines, history, outputs, row), to go back to if the commit fails.
    before: list[tuple[Recordable, _Written, int, int, int, bool]] = field(
        default_factory=list)


class SqliteStore(Store):
    """Jobs in one SQLite file."""

    durable = True

    def __init__(self, path: str, *, commit_interval_s: float = 0.05,
                 synchronous: str = "full") -> None:
        self.path = path
        self.synchronous = "NORMAL" if synchronous == "normal" else "FULL"
        self.commit_interval_s = commit_interval_s
        self._db: sqlite3.Connection | None = None
        #: The reading connection (None until open(), and for a ":memory:"
        #: database, which a second connection would not see: it reads with _db).
        self._reader: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by open()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "jobmonitor-sqlite")
        self._read_thread = concurrent.futures.ThreadPoolExecutor(1, "jobmonitor-sqlite-read")
        self._dirty: dict[str, Recordable] = {}
        self._written: dict[str, _Written] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._when_stored: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._failures = 0  # commits that failed in a row
        self._lock_fd: int | None = None

    # -- life cycle -------------------------------------------------------------

    async def open(self) -> Recovery:
        self._loop = asyncio.get_running_loop()
        recovery = await self._call(self._open_db)
        if self.path != ":memory:":
            self._reader = await self._call_reader(self._connect, True)
        for record in recovery.unfinished:
            self._written[record.transaction_id] = _Written(
                record.line_count, len(record.history), len(record.outputs), row=True)
        self._committer = self._loop.create_task(self._commit_loop())
        return recovery

    async def close(self) -> None:
        if self._committer is not None:
            self._closing = True
            self._wake.set()
            self._urgent.set()
            await self._committer
            self._committer = None
        if self._reader is not None:
            await self._call_reader(self._reader.close)
            self._reader = None
        self._read_thread.shutdown(wait=True)
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)
        self._unlock()

    # -- writing ------------------------------------------------------------------

    async def add(self, job: Recordable) -> None:
        assert self._loop is not None  # (open() comes first)
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._written[job.transaction_id] = _Written()
        self._dirty[job.transaction_id] = job
        self._wake.set()
        self._urgent.set()
        await waiter

    def changed(self, job: Recordable, urgent: bool = False) -> None:
        if job.transaction_id in self._written:
            self._dirty[job.transaction_id] = job
            self._wake.set()
            if urgent:
                self._urgent.set()

    async def flush(self) -> None:
        if not self._dirty:
            return
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._wake.set()
        self._urgent.set()
        await waiter

    def call_when_stored(self, callback: Callable[[], None]) -> None:
        if not self._dirty or self._committer is None or self._closing:
            # Nothing to wait for, or no commit to come: now (at the end of the turn).
            assert self._loop is not None
            self._loop.call_soon(callback)
            return
        self._when_stored.append(callback)
        self._wake.set()
        self._urgent.set()

    async def _commit_loop(self) -> None:
        loop = self._loop
        assert loop is not None  # open() sets it before it starts this task
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                try:
                    await asyncio.wait_for(self._urgent.wait(), self.commit_interval_s)
                except asyncio.TimeoutError:
                    pass
            self._wake.clear()
            self._urgent.clear()
            waiters, self._waiters = self._waiters, []
            when_stored, self._when_stored = self._when_stored, []
            batch = self._take_batch()
            failed = False
            try:
                await self._call(self._write, batch)
            except Exception as exc:
                failed = True
                self._failures += 1
                if self._failures == 1:  # one line for a disk that stays broken
                    log.error("writing to %s failed (%s: %s); trying again every %g s",
                              self.path, type(exc).__name__, exc, RETRY_DELAY_S)
                self._take_back(batch)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                if self._failures:
                    log.warning("writing to %s works again, after %d failed commits",
                                self.path, self._failures)
                    self._failures = 0
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._after_commit(batch)
            if when_stored:  # after the flushes the commit scheduled (watchers' lines)
                loop.call_soon(_call_each, when_stored)
            del batch  # not kept while we wait: it may hold a row for every job
            if self._closing and (not self._dirty or failed):
                return  # (a server stopping does not wait for a broken disk)
            if failed:
                await asyncio.sleep(RETRY_DELAY_S)
                self._wake.set()
                self._urgent.set()
                continue
            # Two loop turns before the next batch: one for the submits just
            # acknowledged to start their jobs, one for those jobs to run.  A job
            # that ends at once then rides the next commit, not the one after it.
            for _ in range(AFTER_COMMIT_TURNS):
                await asyncio.sleep(0)

    def _take_batch(self) -> _Batch:
        # Read from the live jobs, not snapshots: this runs on the loop, where
        # jobs change, and keeps only tuples of immutable values.
        batch = _Batch()
        dirty, self._dirty = self._dirty, {}
        blocks, history, outputs = batch.blocks, batch.history, batch.outputs
        before = batch.before.append
        for transaction_id, job in dirty.items():
            record = job.record
            written = self._written[transaction_id]
            before((job, written, written.lines, written.history, written.outputs, written.row))
            number = int(transaction_id[1:])
            stream = job.stream
            # Only the lines already announced: a line said since then comes with
            # its flush's notice, which would otherwise start a commit for nothing.
            first = written.lines
            new = stream.lines[first - stream.base:stream.flushed - stream.base]
            if new:
                for start in range(0, len(new), BLOCK_LINES):
                    block = new[start:start + BLOCK_LINES]
                    # A bytearray: the sqlite3 module binds it as it is, where bytes
                    # (like None) first go through its adapter lookup.
                    blocks.append((number, first + start + 1, len(block), _EMPTY.join(block)))
                written.lines = first + len(new)
            events = record.history
            if len(events) > written.history:
                seq = written.history
                for event in events[seq:]:
                    history.append((number, seq, *event))
                    seq += 1
                written.history = seq
            if len(record.outputs) > written.outputs:
                outputs.extend((number, seq, o.name, o.uri, o.media_type)
                               for seq, o in enumerate(record.outputs[written.outputs:],
                                                       written.outputs))
                written.outputs = len(record.outputs)
            if written.row:
                batch.updates.append(job_update(record, number, written.lines))
            else:
                batch.rows.append(job_row(record, number, written.lines))
                written.row = True
            batch.stored.append((job, written.lines))
            if record.status._value_ in FINAL and written.lines == len(stream):
                del self._written[transaction_id]  # nothing more will change
        return batch

    def _take_back(self, batch: _Batch) -> None:
        """After a failed commit: forget the jobs it would have inserted (their
        submits are refused), and take the others from where they were before."""
        for job, written, lines, history, outputs, row in batch.before:
            transaction_id = job.transaction_id
            if not row:
                self._written.pop(transaction_id, None)
                self._dirty.pop(transaction_id, None)
                continue
            written.lines, written.history, written.outputs = lines, history, outputs
            self._written[transaction_id] = written  # a job that ended was let go
            self._dirty.setdefault(transaction_id, job)

    def _after_commit(self, batch: _Batch) -> None:
        if self.on_persisted is not None:
            for job, lines in batch.stored:
                self.on_persisted(job, lines)

    # -- the database thread ----------------------------------------------------------

    async def _call(self, func: Any, *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._thread, func, *args)

    async def _call_reader(self, func: Any, *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._read_thread, func, *args)

    def _open_db(self) -> Recovery:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            return self._open_locked()
        except BaseException:
            self._unlock()
            raise

    def _connect(self, reader: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                             isolation_level=None, cached_statements=STATEMENT_CACHE)
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        if reader:
            db.execute("PRAGMA query_only=1")
        return db

    def _open_locked(self) -> Recovery:
        db = self._connect()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.executescript(SCHEMA)
        self._db = db
        last = last_number(db)
        marks = ",".join("?" * len(UNFINISHED))
        unfinished = select_records(db, f"status IN ({marks}) ORDER BY number", UNFINISHED)
        return Recovery(last, unfinished, recent_events(db, RECENT_EVENTS))

    def _lock(self) -> None:
        """Take ``PATH.lock`` for this process, or refuse to open the store.

        Raises:
            ConfigError: another server holds it.
        """
        if fcntl is None or self.path == ":memory:":
            return
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
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

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # (the file stays: removing it would race a new server)
            self._lock_fd = None

    def _write(self, batch: _Batch) -> None:
        db = self._db
        assert db is not None
        with transaction(db):
            insert_rows(db, f"REPLACE INTO jobs ({JOB_COLUMNS})", batch.rows)
            insert_rows(db, UPDATE_HEAD, batch.updates, group=UPDATE_GROUP, tail=UPDATE_TAIL)
            insert_rows(db, "INSERT OR REPLACE INTO line_blocks", batch.blocks)
            insert_rows(db, "INSERT OR REPLACE INTO history", batch.history)
            insert_rows(db, "INSERT OR REPLACE INTO outputs", batch.outputs)

    # -- reading ------------------------------------------------------------------------

    # (Each runs on the reading thread, with the reading connection, in a read
    # transaction: one consistent view of the last commit.)

    async def load(self, transaction_id: str) -> JobRecord | None:
        number = number_of(transaction_id)
        if number is None:
            return None
        records = await self._read(select_records, "number = ?", (number,))
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
        return await self._read(list_page, identity, after, limit)

    # (Deleting runs on the writing thread.)

    async def delete(self, transaction_id: str) -> None:
        number = number_of(transaction_id)
        if number is not None:
            await self._call_db(delete_numbers, [number])

    async def purge(self, finished_before: float) -> int:
        numbers = await self._call_db(finished_before_numbers, finished_before)
        if numbers:
            await self._call_db(delete_numbers, numbers)
        return len(numbers)

    async def _call_db(self, func: Callable[..., T], *args: Any) -> T:
        """``func(connection, *args)`` on the writing thread."""
        def call() -> T:
            assert self._db is not None
            return func(self._db, *args)

        return await self._call(call)  # type: ignore[no-any-return]

    async def _read(self, func: Callable[..., T], *args: Any) -> T:
        """``func(connection, *args)`` in a read transaction on the reading thread
        (on the writing one for a ":memory:" database)."""
        reader = self._reader

        def call() -> T:
            db = reader or self._db
            assert db is not None
            with transaction(db):
                return func(db, *args)

        if reader is None:
            return await self._call(call)  # type: ignore[no-any-return]
        return await self._call_reader(call)  # type: ignore[no-any-return]


def _call_each(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # one bad callback must not keep the others waiting
            log.exception("a callback after a commit failed")
