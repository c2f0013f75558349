"""The SQLite store: WAL mode, one database thread, group commits.

All database work runs on one thread with one connection, so the event loop
never waits on disk.  Changes are gathered on the loop: ``changed`` only marks
a job.  A committer task takes everything marked, copies from it on the loop
what the database needs (new lines, history and outputs since the last commit,
and the job row, as tuples) and writes that in one transaction.  A new job
(``add``) starts a commit at once if none is running; otherwise it rides the
next one, so many submits share one fsync.  Other changes wait at most
``commit_interval_s``.

A commit that fails (a full disk, a lock held by another program past
``BUSY_TIMEOUT_S``) stores nothing: the submits it carried are refused (their
jobs were never acknowledged), and for every other job the store goes back to
what it had taken before, so the next commit, ``RETRY_DELAY_S`` later, writes
it all again.  Monitors are told only of lines a commit stored.  A failure that
is the environment's (``unavailable``) refuses the commands it touches with
``StoreUnavailable``; ``Outage`` logs each spell of failures once, at its start
and at its end.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ...errors import ConfigError, StoreUnavailable
from ...wire.records import JobRecord
from .file import DatabaseFile, open_error, reclaim_space
from .rows import (FINAL, JOB_COLUMNS, SCHEMA, STATEMENT_CACHE, UNFINISHED, UPDATE_GROUP,
                          UPDATE_HEAD, UPDATE_TAIL, delete_numbers, find_token,
                          finished_before_numbers, insert_rows, job_row, job_update,
                          last_number, number_of, read_lines, recent_events, select_records,
                          transaction)
from ..base import Recordable, Recovery, Store
from ..outage import Outage, unavailable

__all__ = ["SqliteStore"]

log = logging.getLogger("jobmonitor.store")

T = TypeVar("T")

RECENT_EVENTS = 200
#: SQLite's page cache, in KiB (its default is 2000).  The store mostly appends
#: and reads back recent pages; the OS caches the file anyway, and every MiB
#: kept here is charged to a server holding thousands of waiting jobs.
CACHE_KIB = 1024
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
    blocks: list[tuple[int, int, int, bytes]] = field(default_factory=list)
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
        self._loop: asyncio.AbstractEventLoop | None = None  # set by open()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "jobmonitor-sqlite")
        self._dirty: dict[str, Recordable] = {}
        self._written: dict[str, _Written] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._when_stored: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._outage = Outage(log, f"the store at {path}")
        #: The file, its lock and its number mark (None for ":memory:").
        self._file = DatabaseFile(path) if path != ":memory:" else None
        #: The highest transaction number stored, or handed out before this start.
        self._highest = 0
        #: Numbers of job rows that did not decode, each logged once.
        self._bad_rows: set[int] = set()

    # -- life cycle -------------------------------------------------------------

    async def open(self) -> Recovery:
        self._loop = asyncio.get_running_loop()
        recovery = await self._call(self._open_db)
        for record in recovery.unfinished:
            self._written[record.transaction_id] = _Written(
                record.line_count, len(record.history), len(record.outputs), row=True)
        self._committer = self._loop.create_task(self._commit_loop())
        return recovery

    async def close(self, *, keep_lock: bool = False) -> None:
        if self._committer is not None:
            self._closing = True
            self._wake.set()
            self._urgent.set()
            await self._committer
            self._committer = None
        if self._db is not None:
            await self._call(self._close_db)
        self._thread.shutdown(wait=True)
        if not keep_lock:
            self._unlock()

    def release_lock(self) -> None:
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
                self._commit_failed(batch, waiters, exc)
            else:
                if batch.stored:  # (a retry with nothing left to write proves nothing)
                    self._outage.worked()
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
            # The stream hands them over as blocks, mostly its own (nothing copied).
            line = written.lines
            for count, data in stream.pieces(line, stream.flushed, BLOCK_LINES):
                blocks.append((number, line + 1, count, data))
                line += count
            written.lines = line
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

    def _commit_failed(self, batch: _Batch, waiters: list[asyncio.Future[None]],
                       exc: Exception) -> None:
        """Take back what the commit carried, refuse the commands that waited for it
        (with ``StoreUnavailable`` when the failure is the environment's), and tell
        the outage."""
        self._take_back(batch)
        refusal = unavailable(exc)
        refused = 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(refusal or exc)
                refused += 1
        self._outage.failed(exc, refused, expected=refusal is not None)

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
            db = self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                isolation_level=None, cached_statements=STATEMENT_CACHE)
            # Only a new database takes it (before its first table); see reclaim_space.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.executescript(SCHEMA)
            stored = last_number(db)
            last = stored if self._file is None else self._file.numbered_up_to(stored)
            if last > stored:  # the database keeps the mark too (and warns only once)
                db.execute("REPLACE INTO meta VALUES ('last_number', ?)", (str(last),))
            marks = ",".join("?" * len(UNFINISHED))
            unfinished = select_records(db, f"status IN ({marks}) ORDER BY number", UNFINISHED,
                                        self._bad_rows)
            events = recent_events(db, RECENT_EVENTS)
        except sqlite3.Error as exc:
            raise open_error(self.path, exc) from None
        self._highest = last
        return Recovery(last, unfinished, events)

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

    def _write(self, batch: _Batch) -> None:
        db = self._db
        assert db is not None
        newest = max(row[0] for row in batch.rows) if batch.rows else 0
        if newest > self._highest and self._file is not None:
            self._file.numbers.cover(newest)  # before any job may be stored under it
        with transaction(db):
            insert_rows(db, f"REPLACE INTO jobs ({JOB_COLUMNS})", batch.rows)
            insert_rows(db, UPDATE_HEAD, batch.updates, group=UPDATE_GROUP, tail=UPDATE_TAIL)
            insert_rows(db, "INSERT OR REPLACE INTO line_blocks", batch.blocks)
            insert_rows(db, "INSERT OR REPLACE INTO history", batch.history)
            insert_rows(db, "INSERT OR REPLACE INTO outputs", batch.outputs)
        self._highest = max(self._highest, newest)

    # -- reading ------------------------------------------------------------------------

    # (Each runs on the database thread, with the one connection.)

    async def load(self, transaction_id: str) -> JobRecord | None:
        number = number_of(transaction_id)
        if number is None:
            return None
        records = await self._call_db(select_records, "number = ?", (number,), self._bad_rows)
        return records[0] if records else None

    async def find_token(self, identity: str, job_token: str) -> str | None:
        return await self._call_db(find_token, identity, job_token)

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        number = number_of(transaction_id)
        if number is None:
            return []
        return await self._call_db(read_lines, number, from_line, limit)

    async def list_records(self, identity: str | None) -> Sequence[JobRecord]:
        if identity is None:
            return await self._call_db(select_records, "1 ORDER BY number", (), self._bad_rows)
        return await self._call_db(select_records, "identity = ? ORDER BY number", (identity,),
                                   self._bad_rows)

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


def _call_each(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # one bad callback must not keep the others waiting
            log.exception("a callback after a commit failed")
