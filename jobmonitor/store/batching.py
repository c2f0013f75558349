"""Group commits: the writing half of a durable store, whatever its database.

``changed`` only marks a job.  A committer task takes everything marked, copies
from it on the loop what the database needs (new lines, history and outputs
since the last commit, and the job row, as tuples of immutable values: a
``Batch``) and hands that to the backend, which writes it in one transaction.
A new job (``add``) starts a commit at once if none is running; otherwise it
rides the next one, so many submits share one fsync.  Other changes wait at
most ``commit_interval_s``.

A commit that fails stores nothing: the submits it carried are refused (their
jobs were never acknowledged), and for every other job the store goes back to
what it had taken before, so the next commit, ``RETRY_DELAY_S`` later, writes
it all again.  Monitors are told only of lines a commit stored
(``on_persisted``).  A failure the backend calls the environment's (a full
disk, a lock: ``_refusal``) refuses the commands it touches with
``StoreUnavailable``; the ``Outage`` logs each spell of failures once, at its
start and at its end.

A backend built on ``GroupCommitStore`` supplies ``_write_batch`` (one
transaction, all or nothing), ``_refusal``, and ``job_row``/``job_update`` (a
record as the tuple its job table takes), besides the reads and its own
``open``/``close``, which call ``_start_commits`` and ``_stop_commits``.

Rule: no database here.  The live job is read only on the loop, through
``Recordable`` (its record, and its stream's lines up to ``flushed``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreUnavailable
from ..wire.records import JobRecord
from ..wire.states import JobState
from .base import Recordable, Recovery, Store
from .outage import Outage
from .timings import Durations

__all__ = ["GroupCommitStore", "Batch", "Taken", "BLOCK_LINES"]

log = logging.getLogger("jobmonitor.store")

#: Loop turns the committer lets pass between a commit and the next batch.
AFTER_COMMIT_TURNS = 2
#: Most lines in one stored block.
BLOCK_LINES = 2000
#: The pause after a failed commit before the next try.
RETRY_DELAY_S = 1.0
_FINAL = frozenset(state.value for state in JobState if state.is_final)


@dataclass(slots=True)
class Taken:
    """How much of one job the store has taken so far."""

    lines: int = 0
    history: int = 0
    outputs: int = 0
    #: The job's row is in the table: later writes update it.
    row: bool = False


@dataclass(slots=True)
class Batch:
    """What one commit writes: rows, each a tuple in its table's column order."""

    #: New jobs' rows (``job_row``), and updates of stored ones (``job_update``).
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    #: Runs of a job's consecutive lines: (number, first line, count, their bytes
    #: joined); every line ends with CRLF, so a block splits back exactly.
    blocks: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    #: (number, seq, stage, status, timestamp, date, info)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    #: (number, seq, name, uri, media_type)
    outputs: list[tuple[Any, ...]] = field(default_factory=list)
    #: Each job taken, and how many of its lines are stored once this commits.
    stored: list[tuple[Recordable, int]] = field(default_factory=list)
    #: Per job, what the store had taken before this batch (job, its Taken,
    #: lines, history, outputs, row), to go back to if the commit fails.
    before: list[tuple[Recordable, Taken, int, int, int, bool]] = field(
        default_factory=list)


class GroupCommitStore(Store):
    """A durable store that writes what changed in group commits."""

    durable = True

    def __init__(self, *, commit_interval_s: float, outage: Outage) -> None:
        self.commit_interval_s = commit_interval_s
        self._outage = outage
        self._loop: asyncio.AbstractEventLoop | None = None  # set by open()
        self._dirty: dict[str, Recordable] = {}
        self._taken: dict[str, Taken] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._when_stored: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self.commit_durations: Durations | None = Durations()

    # -- what a backend supplies ------------------------------------------------------

    @staticmethod
    @abc.abstractmethod
    def job_row(record: JobRecord, number: int, line_count: int, /) -> tuple[Any, ...]:
        """A new job's row in the job table."""

    @staticmethod
    @abc.abstractmethod
    def job_update(record: JobRecord, number: int, line_count: int, /) -> tuple[Any, ...]:
        """What a later write sets in a stored job's row."""

    @abc.abstractmethod
    async def _write_batch(self, batch: Batch) -> None:
        """Write ``batch`` in one transaction: all of it, or (raising) none of it."""

    @abc.abstractmethod
    def _refusal(self, exc: Exception) -> StoreUnavailable | None:
        """The refusal for the commands a failed write touches, when the failure is
        the environment's (a full disk, a lock), not a bug; else None."""

    # -- starting and stopping (from the backend's open and close) ------------------------

    def _start_commits(self, recovery: Recovery) -> None:
        """Start the committer, on the loop; ``recovery``'s unfinished jobs are stored
        as they are, and go on from there."""
        self._loop = asyncio.get_running_loop()
        for record in recovery.unfinished:
            self._taken[record.transaction_id] = Taken(
                record.line_count, len(record.history), len(record.outputs), row=True)
        self._committer = self._loop.create_task(self._commit_loop())

    async def _stop_commits(self) -> None:
        """Write what is pending (one try, if the store is failing) and stop."""
        if self._committer is not None:
            self._closing = True
            self._start_commit()
            await self._committer
            self._committer = None

    # -- what the engine calls ------------------------------------------------------------

    async def add(self, job: Recordable) -> None:
        assert self._loop is not None  # (open() comes first)
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._taken[job.transaction_id] = Taken()
        self._dirty[job.transaction_id] = job
        self._start_commit()
        await waiter

    def changed(self, job: Recordable, urgent: bool = False) -> None:
        if job.transaction_id in self._taken:
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
        self._start_commit()
        await waiter

    def call_when_stored(self, callback: Callable[[], None]) -> None:
        if not self._dirty or self._committer is None or self._closing:
            # Nothing to wait for, or no commit to come: now (at the end of the turn).
            asyncio.get_running_loop().call_soon(callback)
            return
        self._when_stored.append(callback)
        self._start_commit()

    def _start_commit(self) -> None:
        """Commit now, not ``commit_interval_s`` after the first change."""
        self._wake.set()
        self._urgent.set()

    # -- the committer ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._batch_due()
            failed = await self._commit_once()
            if self._closing and (not self._dirty or failed):
                return  # (a server stopping does not wait for a broken disk)
            if failed:
                await asyncio.sleep(RETRY_DELAY_S)
                self._start_commit()
                continue
            # Two loop turns before the next batch: one for the submits just
            # acknowledged to start their jobs, one for those jobs to run.  A job
            # that ends at once then rides the next commit, not the one after it.
            for _ in range(AFTER_COMMIT_TURNS):
                await asyncio.sleep(0)

    async def _batch_due(self) -> None:
        """Wait for a change, then up to ``commit_interval_s`` for an urgent one."""
        await self._wake.wait()
        if not self._urgent.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), self.commit_interval_s)
        self._wake.clear()
        self._urgent.clear()

    async def _commit_once(self) -> bool:
        """Take everything marked, write it in one commit and answer whoever waited
        for it; True when the commit failed (and what it carried was taken back).
        The batch is not kept past this: it may hold a row for every job."""
        waiters, self._waiters = self._waiters, []
        when_stored, self._when_stored = self._when_stored, []
        batch = self._take_batch()
        failed = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._write_batch(batch)
        except Exception as exc:  # noqa: BLE001 - any failure is answered to each waiter
            failed = True
            self._commit_failed(batch, waiters, exc)
        else:
            self._committed(batch, waiters, loop.time() - started)
        if when_stored:  # after the flushes the commit scheduled (watchers' lines)
            asyncio.get_running_loop().call_soon(_call_each, when_stored)
        return failed

    def _take_batch(self) -> Batch:
        """Take what the store has not yet taken of each job marked since the last
        batch."""
        # Read from the live jobs, not snapshots: this runs on the loop, where
        # jobs change, and keeps only tuples of immutable values.
        batch = Batch()
        dirty, self._dirty = self._dirty, {}
        blocks, history, outputs = batch.blocks, batch.history, batch.outputs
        before, stored = batch.before.append, batch.stored.append
        job_row, job_update = self.job_row, self.job_update
        for transaction_id, job in dirty.items():
            record = job.record
            taken = self._taken[transaction_id]
            before((job, taken, taken.lines, taken.history, taken.outputs, taken.row))
            number = int(transaction_id[1:])
            stream = job.stream
            # Only the lines already announced: a line said since then comes with
            # its flush's notice, which would otherwise start a commit for nothing.
            # The stream hands them over as blocks, mostly its own (nothing copied).
            line = taken.lines
            for count, data in stream.pieces(line, stream.flushed, BLOCK_LINES):
                blocks.append((number, line + 1, count, data))
                line += count
            taken.lines = line
            events = record.history
            if len(events) > taken.history:
                seq = taken.history
                for event in events[seq:]:
                    history.append((number, seq, *event))
                    seq += 1
                taken.history = seq
            if len(record.outputs) > taken.outputs:
                taken.outputs = _take_numbered(outputs, number, record.outputs, taken.outputs)
            if taken.row:
                batch.updates.append(job_update(record, number, taken.lines))
            else:
                batch.rows.append(job_row(record, number, taken.lines))
                taken.row = True
            stored((job, taken.lines))
            if record.status._value_ in _FINAL and taken.lines == len(stream):
                del self._taken[transaction_id]  # nothing more will change
        return batch

    def _committed(self, batch: Batch, waiters: list[asyncio.Future[None]],
                   took_s: float) -> None:
        """Answer the commands that waited for the commit (which took ``took_s``),
        and tell the engine which lines are stored."""
        if batch.stored:  # (a retry with nothing left to write proves nothing)
            self._outage.worked()
            if self.commit_durations is not None:
                self.commit_durations.observe(took_s)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.on_persisted is not None:
            for job, lines in batch.stored:
                self.on_persisted(job, lines)

    def _commit_failed(self, batch: Batch, waiters: list[asyncio.Future[None]],
                       exc: Exception) -> None:
        """Take back what the commit carried, refuse the commands that waited for it
        (with ``StoreUnavailable`` when the failure is the environment's), and tell
        the outage."""
        self._take_back(batch)
        refusal = self._refusal(exc)
        refused = 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(refusal or exc)
                refused += 1
        self._outage.failed(exc, refused, expected=refusal is not None)

    def _take_back(self, batch: Batch) -> None:
        """After a failed commit: forget the jobs it would have inserted (their
        submits are refused), and take the others from where they were before."""
        for job, taken, lines, history, outputs, row in batch.before:
            transaction_id = job.transaction_id
            if not row:
                self._taken.pop(transaction_id, None)
                self._dirty.pop(transaction_id, None)
                continue
            taken.lines, taken.history, taken.outputs = lines, history, outputs
            self._taken[transaction_id] = taken  # a job that ended was let go
            self._dirty.setdefault(transaction_id, job)


def _take_numbered(rows: list[tuple[Any, ...]], number: int, items: Sequence[tuple[Any, ...]],
                   first: int) -> int:
    """Add ``items`` from index ``first`` on as rows (number, seq, *item); return
    how many are taken now."""
    seq = first
    for item in items[first:]:
        rows.append((number, seq, *item))
        seq += 1
    return seq


def _call_each(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # one bad callback must not keep the others waiting
            log.exception("a callback after a commit failed")
