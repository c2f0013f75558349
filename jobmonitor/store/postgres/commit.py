"""The PostgreSQL store's group commit, fenced: a node writes only the jobs it
still holds.

``batching`` decides what to write and when; this writes a ``Batch`` in one
transaction, one statement per table (``sql``).  Every job this node has
written or holds has an entry in ``epochs``: the holder the row should name
(this node, or None for a job nobody holds) and its epoch.  A job row is
updated only where it still names them; a job whose update found no such row
was taken from this node (a takeover while it was cut off): its lines,
history and outputs are left out, whatever is pending for it is dropped, and
the engine is told (``hooks.lost``).  A new job row is inserted unless its
number or job token is taken: a number already there is this node's own from a
commit whose answer was lost (written again as an update); a job token taken
means another node's job won, and the ``add`` raises ``TokenTaken``.

Each commit notifies the other nodes (``sql.NOTIFY``): of new jobs nobody holds
and of jobs let go (``work``), and of the jobs whose lines or state it stored
(``lines``: ``number:line count:status`` entries, split under PostgreSQL's
8000-byte limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import asyncpg

from ...errors import StoreUnavailable
from ..base import Recordable
from ..batching import Batch, GroupCommitStore, Taken
from ..shared import Action, TokenTaken
from ..sqlite.rows import FINAL, number_of, schedule_marks_of, transaction_id_of
from . import sql
from .connect import STATEMENT_TIMEOUT_S, Settings, unavailable
from .node import Node

if TYPE_CHECKING:
    from ...wire.records import JobRecord
    from .sql import Db

__all__ = ["FencedCommits"]

log = logging.getLogger("jobmonitor.store")

#: Tries of a commit that PostgreSQL rolled back to break a deadlock (all of it
#: was undone, so it is written again as it was) before its submits are refused.
WRITE_TRIES = 3
#: Most bytes in one notification's payload (PostgreSQL's limit is 8000).
PAYLOAD_BYTES = 7900
#: The fields of a job row (``job_row``) that an update (``job_update``) sets.
_UPDATE_FIELDS = (0, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 12)
_WAITING = frozenset({"Queued", "Created"})


class FencedCommits(GroupCommitStore):
    """The writing half of the PostgreSQL store (see the module's text)."""

    settings: Settings
    node: Node
    _pool: asyncpg.Pool[asyncpg.Record] | None
    #: Per job this node has written or holds: (the node holding it as this node
    #: last knew, epoch); a write goes through only while the row still says so.
    epochs: dict[int, tuple[str | None, int]]
    #: Held jobs to let go of with the next commit: number -> epoch; those the
    #: commit under way lets go of; and those whose unread requests stay with
    #: the job for its next holder (``release``'s ``keep_requests``).
    _releases: dict[int, int]
    _releasing_now: dict[int, int]
    _kept_requests: set[int]
    #: New jobs the last commits did not store, another's job having their job
    #: token: number -> that job's transaction ID.
    _token_taken: dict[int, str]
    #: Adds of held jobs, claims and takes under way, and whether none may start
    #: (a heartbeat is looking for the jobs this node holds without knowing it).
    _holding_now: int
    _not_sweeping: asyncio.Event
    #: The actions other nodes asked of the jobs the last commit let go, which
    #: this node had not read: number -> actions (passed on by ``_written``).
    _asked_of_released: dict[int, str]
    #: True once this node let go of a job keeping its requests: it is stopping,
    #: and passes on no more of them (``Node._take_requests``).
    stopping: bool
    #: The committer's connection (``_writer``).
    _writing: asyncpg.Connection[asyncpg.Record] | None

    async def add(self, job: Recordable) -> None:
        await self._add(job, None, 0)

    async def add_held(self, job: Recordable) -> None:
        await self._add(job, self.node.node_id, 1)

    async def _add(self, job: Recordable, holder: str | None, epoch: int) -> None:
        number = int(job.transaction_id[1:])
        async with self._holding() if holder is not None else contextlib.nullcontext():
            self.epochs[number] = (holder, epoch)
            try:
                await super().add(job)
            except BaseException:
                if self.epochs.get(number) == (holder, epoch):
                    del self.epochs[number]
                raise
        winner = self._token_taken.pop(number, None)
        if winner is not None:
            raise TokenTaken(winner)
        if holder is None and self.epochs.get(number) == (None, 0):
            self.forget(number)  # anyone's to claim: this node writes no more of it

    @contextlib.asynccontextmanager
    async def _holding(self) -> AsyncIterator[None]:
        """Around an add of a held job, a claim or a take: none while a heartbeat
        looks for strays (a job held meanwhile would look like one)."""
        await self._not_sweeping.wait()
        self._holding_now += 1
        try:
            yield
        finally:
            self._holding_now -= 1

    def begin_sweep(self) -> bool:
        """Keep claims and takes from starting, if none is under way (else False)."""
        if self._holding_now:
            return False
        self._not_sweeping.clear()
        return True

    def end_sweep(self) -> None:
        self._not_sweeping.set()

    def forget(self, number: int) -> None:
        """Write nothing more of this job (pending writes included)."""
        transaction_id = transaction_id_of(number)
        self._taken.pop(transaction_id, None)
        self._dirty.pop(transaction_id, None)
        self.epochs.pop(number, None)

    def hold(self, record: JobRecord, epoch: int) -> None:
        """This node holds the job now (claimed, taken or taken over)."""
        self.epochs[record.number] = (self.node.node_id, epoch)
        self._taken[record.transaction_id] = Taken(
            record.line_count, len(record.history), len(record.outputs), row=True)

    def held(self) -> list[int]:
        """The jobs this node holds."""
        node_id = self.node.node_id
        return [number for number, (holder, _) in self.epochs.items() if holder == node_id]

    def _refusal(self, exc: Exception) -> StoreUnavailable | None:
        return unavailable(exc)

    async def _write_batch(self, batch: Batch) -> None:
        self._asked_of_released = {}
        releases, self._releases = self._releases, {}
        if not (batch.rows or batch.updates or releases):
            return
        self._releasing_now = dict(releases)
        try:
            db = await self._writer()
            for attempt in range(1, WRITE_TRIES + 1):
                try:
                    if releases:
                        async with db.transaction():
                            outcome = await self._write(db, batch, releases)
                    elif batch.updates:
                        outcome = await self._write_whole(db, batch)
                    else:
                        outcome = await self._write_new(db, batch)
                    break
                except asyncpg.TransactionRollbackError:
                    if attempt == WRITE_TRIES:
                        raise  # (a deadlock or a serialization failure each time)
        except BaseException:
            for number, epoch in releases.items():
                self._releases.setdefault(number, epoch)
            writer = self._writing
            if writer is not None and (writer.is_closed() or writer.is_in_transaction()):
                self._drop_writer()  # (the next commit connects anew)
            raise
        finally:
            self._releasing_now = {}
        self._kept_requests.difference_update(releases)
        self._written(batch, *outcome)
        for number, epoch in releases.items():
            if self.epochs.get(number, (None, -1))[1] == epoch:
                self.forget(number)  # (let go, or already someone else's: not ours now)

    async def _writer(self) -> asyncpg.Connection[asyncpg.Record]:
        """The committer's own connection (opened when missing): commits never wait
        for one of the pool's, which reads may keep busy."""
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        db = self._writing
        if db is None or db.is_closed():
            db = self._writing = await asyncpg.connect(
                command_timeout=STATEMENT_TIMEOUT_S, **self.settings.connect_kwargs())
        return db

    def _drop_writer(self) -> None:
        db, self._writing = self._writing, None
        if db is not None:
            db.terminate()

    def _new_rows(self, batch: Batch) -> list[tuple[Any, ...]]:
        """The batch's new job rows with who holds them (none for an ended job)."""
        epochs = self.epochs
        rows = []
        for row in batch.rows:
            holder, epoch = epochs.get(row[0], (None, 0))
            rows.append((*row, None if row[6] in FINAL else holder, epoch))
        if len(rows) > 1:
            # In job token order: two nodes inserting the same tokens wait for each
            # other in the same order, never in a circle (a deadlock fails a commit).
            rows.sort(key=_token_order)
        return rows

    async def _write_new(self, db: Db, batch: Batch
                         ) -> tuple[dict[int, str], set[int], list[int], dict[int, str]]:
        """A commit of new jobs only, in one statement (``sql.INSERT_NEW``); the rows
        it skipped (a job token taken, or a row already there) are sorted out in
        a transaction of their own, as ``_write`` does.  Returns what ``_write`` does."""
        rows = self._new_rows(batch)
        marks = [(row[22], row[21], row[0]) for row in batch.rows
                 if row[22] is not None and row[21] is not None]
        inserted = {r[0] for r in await db.fetch(
            sql.INSERT_NEW, *sql.columns(rows, 25), *sql.columns(batch.blocks, 4),
            *sql.columns(batch.history, 7), *sql.columns(batch.outputs, 5),
            *sql.columns(marks, 3), self.settings.channel("work"))}
        statuses = {row[0]: row[6] for row in rows if row[0] in inserted}
        if len(inserted) == len(rows):
            return {}, set(), [], statuses
        rest = Batch(rows=[row for row in batch.rows if row[0] not in inserted],
                     blocks=[item for item in batch.blocks if item[0] not in inserted],
                     history=[item for item in batch.history if item[0] not in inserted],
                     outputs=[item for item in batch.outputs if item[0] not in inserted],
                     stored=batch.stored)
        async with db.transaction():
            token_taken, fenced, released, more = await self._write(db, rest, {})
        statuses.update(more)
        return token_taken, fenced, released, statuses

    async def _write_whole(self, db: Db, batch: Batch
                           ) -> tuple[dict[int, str], set[int], list[int], dict[int, str]]:
        """A commit with updates, in one statement (``sql.WRITE_ALL``) when nothing
        in it is left out (no job token taken, no job fenced: the usual case);
        else in ``_write``'s transaction.  Returns what ``_write`` does."""
        rows = self._new_rows(batch)
        epochs = self.epochs
        updates = [(*update, *epochs.get(update[0], (None, 0))) for update in batch.updates]
        updated = {update[0]: update[1] for update in updates}
        work = any(row[23] is None and row[6] in _WAITING for row in rows)
        channels, payloads = self._notices(batch, updated, work)
        try:
            await db.fetchrow(
                sql.WRITE_ALL, *sql.columns(rows, 25), *sql.columns(updates, 16),
                sql.FINAL_STATES, *sql.columns(batch.blocks, 4), *sql.columns(batch.history, 7),
                *sql.columns(batch.outputs, 5), *sql.columns(schedule_marks_of(batch.rows), 2),
                channels, payloads, len(rows), len(updates))
        except asyncpg.DivisionByZeroError:  # (something left out: nothing was written)
            async with db.transaction():
                return await self._write(db, batch, {})
        statuses = {row[0]: row[6] for row in rows}
        statuses.update(updated)
        return {}, set(), [], statuses

    async def _write(self, db: Db, batch: Batch, releases: dict[int, int]
                     ) -> tuple[dict[int, str], set[int], list[int], dict[int, str]]:
        """One commit's statements.  Returns the new jobs left out for their job token
        (number -> the winner's transaction ID), the jobs fenced off, the jobs let
        go, and the status written of each job."""
        epochs = self.epochs
        rows = self._new_rows(batch)
        updates = [(*update, *epochs.get(update[0], (None, 0))) for update in batch.updates]
        token_taken: dict[int, str] = {}
        if rows:
            inserted = {r[0] for r in await db.fetch(sql.INSERT_JOBS, *sql.columns(rows))}
            if len(inserted) < len(rows):
                token_taken = await self._not_inserted(db, rows, inserted, updates)
        fenced: set[int] = set()
        if updates:
            written = {r[0] for r in await db.fetch(sql.UPDATE_JOBS, *sql.columns(updates),
                                                    sql.FINAL_STATES)}
            fenced = {update[0] for update in updates} - written
        left_out = fenced.union(token_taken)
        for statement, items in ((sql.UPSERT_BLOCKS, batch.blocks),
                                 (sql.INSERT_HISTORY, batch.history),
                                 (sql.INSERT_OUTPUTS, batch.outputs)):
            if left_out:
                items = [item for item in items if item[0] not in left_out]
            if items:
                await db.execute(statement, *sql.columns(items))
        marks = schedule_marks_of([row for row in batch.rows if row[0] not in left_out])
        if marks:
            await db.execute(sql.UPSERT_MARKS, *sql.columns(marks))
        released: list[int] = []
        if releases:
            kept = self._kept_requests
            let_go = await db.fetch(sql.RELEASE, list(releases), list(releases.values()),
                                    self.node.node_id, sql.RUNNING_STATES,
                                    [number in kept for number in releases])
            released = [r[0] for r in let_go if r[1]]
            self._asked_of_released = {r[0]: r[2] for r in let_go if r[1] and r[2]}
            for number in (r[0] for r in let_go if not r[1]):
                del releases[number]  # (still this node's: not forgotten)
                kept.discard(number)
        # (Nobody waits on the lines of a job new in this commit: no notice of them.)
        updated = {update[0]: update[1] for update in updates if update[0] not in left_out}
        statuses = {row[0]: row[6] for row in rows if row[0] not in left_out}
        statuses.update(updated)
        work = bool(released) or any(row[23] is None and row[6] in _WAITING for row in rows
                               if row[0] not in left_out)
        channels, payloads = self._notices(batch, updated, work)
        if channels:
            await db.execute(sql.NOTIFY, channels, payloads)
        return token_taken, fenced, released, statuses

    async def _not_inserted(self, db: Db, rows: list[tuple[Any, ...]], inserted: set[int],
                            updates: list[tuple[Any, ...]]) -> dict[int, str]:
        """Sort out the new rows an insert skipped: a row already there under its
        number is this node's from a commit whose answer was lost (written again as
        an update); the rest lost their job token to another node's job."""
        skipped = [row for row in rows if row[0] not in inserted]
        there = {r[0] for r in await db.fetch(
            "SELECT number FROM jobs WHERE number = ANY($1::integer[])", [r[0] for r in skipped])}
        updates.extend((*(row[i] for i in _UPDATE_FIELDS), None, row[23], row[24])
                       for row in skipped if row[0] in there)  # (None: its retry_at)
        lost = [row for row in skipped if row[0] not in there]
        token_taken: dict[int, str] = {}
        for _ in range(WRITE_TRIES):
            owners = await sql.token_owners(db, [_token_order(row) for row in lost])
            token_taken.update({row[0]: transaction_id_of(owners[_token_order(row)])
                                for row in lost if _token_order(row) in owners})
            # The job that had the token was deleted since: the token is free again,
            # and the new job is stored (as it would be had it come a moment later).
            free = [row for row in lost if _token_order(row) not in owners]
            if not free:
                return token_taken
            again = {r[0] for r in await db.fetch(sql.INSERT_JOBS, *sql.columns(free))}
            inserted.update(again)
            lost = [row for row in free if row[0] not in again]
            if not lost:
                return token_taken
        raise StoreUnavailable(f"the job token of {transaction_id_of(lost[0][0])} changed "
                               "hands too often while it was stored")

    def _notices(self, batch: Batch, statuses: dict[int, str],
                 work: bool) -> tuple[list[str], list[str]]:
        """The notifications of a commit: (channels, payloads)."""
        channels: list[str] = []
        payloads: list[str] = []
        if work:
            channels.append(self.settings.channel("work"))
            payloads.append("")
        entries = [f"{number}:{lines}:{statuses[number]}"
                   for number, lines in ((int(job.transaction_id[1:]), lines)
                                         for job, lines in batch.stored)
                   if number in statuses]
        channel = self.settings.channel("lines")
        while entries:
            size, count = 0, 0
            for entry in entries:
                if size + len(entry) + 1 > PAYLOAD_BYTES and count:
                    break
                size += len(entry) + 1
                count += 1
            channels.append(channel)
            payloads.append(",".join(entries[:count]))
            del entries[:count]
        return channels, payloads

    def _written(self, batch: Batch, token_taken: dict[int, str], fenced: set[int],
                 released: list[int], statuses: dict[int, str]) -> None:
        """After the commit (on the loop, before anyone is answered): forget the jobs
        it left out or let go, and tell the engine of those taken from it."""
        self._token_taken.update(token_taken)
        for number in (*token_taken, *fenced, *released):
            self.forget(number)
        if token_taken or fenced:
            left_out = fenced.union(token_taken)
            batch.stored[:] = [(job, lines) for job, lines in batch.stored
                               if int(job.transaction_id[1:]) not in left_out]
        for number, status in statuses.items():
            if status in FINAL and number in self.epochs:
                self.epochs[number] = (None, self.epochs[number][1])  # an ended job is let go
            if transaction_id_of(number) not in self._taken:
                self.epochs.pop(number, None)  # nothing more will be written
        asked, self._asked_of_released = self._asked_of_released, {}
        for number, actions in asked.items():  # (the engine passes them on: see settle)
            for action in actions.split(","):
                if action in ("cancel", "suspend", "resume"):
                    self.node.hooks.requested(transaction_id_of(number), cast(Action, action))
        if fenced:
            log.warning("jobs taken over by another node while this one was cut off: %s",
                        ", ".join(map(transaction_id_of, sorted(fenced))))
            asyncio.get_running_loop().call_soon(
                self.node.hooks.lost, [transaction_id_of(number) for number in sorted(fenced)])

    async def flush(self) -> None:
        # (Releases written by the commit under way: the next commit's end comes
        # after that one's.)
        if self._dirty or not (self._releases or self._releasing_now):
            await super().flush()
            return
        assert self._loop is not None  # (releases are written by a commit too)
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._start_commit()
        await waiter

    def release(self, transaction_id: str, *, keep_requests: bool = False) -> None:
        number = number_of(transaction_id)
        holding = self.epochs.get(number) if number is not None else None
        if number is None or holding is None or holding[0] != self.node.node_id:
            return
        self._releases[number] = holding[1]
        if keep_requests:
            self.stopping = True  # (only a node that stops keeps them with the job)
            self._kept_requests.add(number)
        else:
            self._kept_requests.discard(number)
        self._start_commit()

    def releasing(self) -> list[int]:
        """The jobs this node lets go of with its next commit, or the one under
        way: the actions asked of them are the release's to hand back or keep
        (``sql.RELEASE``), not a read of this node's requests."""
        return [*self._releases, *self._releasing_now]


def _token_order(row: tuple[Any, ...]) -> tuple[str, str]:
    return row[4], row[5] or ""
