"""The PostgreSQL store: one database several servers (the cluster's nodes) share.

Writing is ``batching``'s group commit, with fencing: a job this node holds is
written only while the database still says this node holds it by the same
epoch (``sql.UPDATE_JOBS``); a job taken from it meanwhile is dropped from what
is pending and the engine is told (``hooks.lost``).  A new job whose job token
another node's job took first is not stored, and its ``add`` raises
``TokenTaken``.  A commit notifies the other nodes: of new unheld jobs
(``work``), and of the jobs whose lines or state it stored (``lines``).

Being a node (``node``): a row in ``nodes``, its heartbeat, the reaper, and the
listener for notifications.  Every database failure that is the environment's
raises ``StoreUnavailable`` within the connect and statement timeouts; what was
pending stays pending and is written once the database is back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from ...errors import ConfigError, RequestError, StoreUnavailable
from ...wire.codes import Reply
from ...wire.records import JobRecord
from ...wire.variables import TASK_LOG_SIZE
from ..base import Recordable, Recovery, TaskEvent
from ..batching import Batch, GroupCommitStore, Taken
from ..outage import Outage
from ..shared import Action, NodeInfo, SharedStore, TokenTaken
from ..sqlite.rows import (
    FINAL,
    job_row,
    job_update,
    number_of,
    schedule_marks_of,
    transaction_id_of,
)
from . import sql
from .connect import CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_S, Settings, unavailable
from .node import Node

if TYPE_CHECKING:
    from .sql import Db

__all__ = ["PostgresStore"]

log = logging.getLogger("jobmonitor.store")

T = TypeVar("T")

#: Connections a node's pool keeps open at most (the listener's is its own).
POOL_SIZE = 4
#: Transaction numbers a node takes at a time; it takes more when half are used.
NUMBER_BLOCK = 100
#: Most bytes in one notification's payload (PostgreSQL's limit is 8000).
PAYLOAD_BYTES = 7900
#: The fields of a job row (``job_row``) that an update (``job_update``) sets.
_UPDATE_FIELDS = (0, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18)
_WAITING = frozenset({"Queued", "Created"})


class PostgresStore(GroupCommitStore, SharedStore):
    """Jobs in a PostgreSQL schema, shared by the nodes of a cluster."""

    job_row = staticmethod(job_row)
    job_update = staticmethod(job_update)

    def __init__(self, settings: Settings, *, commit_interval_s: float = 0.05,
                 node_name: str | None = None, address: str = "", heartbeat_s: float = 1.0,
                 lease_s: float = 3.0) -> None:
        super().__init__(commit_interval_s=commit_interval_s,
                         outage=Outage(log, f"the store at {settings.where}"))
        self.settings = settings
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self.node = Node(self, settings, node_name=node_name, address=address,
                         heartbeat_s=heartbeat_s, lease_s=lease_s)
        self.node_name = self.node.name
        #: Per job this node has written or holds: (the node holding it as this node
        #: last knew, epoch); a write goes through only while the row still says so.
        self.epochs: dict[int, tuple[str | None, int]] = {}
        #: Held jobs to let go of with the next commit: number -> epoch.
        self._releases: dict[int, int] = {}
        #: New jobs the last commits did not store, another's job having their job
        #: token: number -> that job's transaction ID.
        self._token_taken: dict[int, str] = {}
        self._numbers: collections.deque[int] = collections.deque()
        self._numbers_lock = asyncio.Lock()
        self._refill: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> Recovery:
        self._loop = asyncio.get_running_loop()
        where = self.settings.where
        try:
            self._pool = await asyncpg.create_pool(
                min_size=1, max_size=POOL_SIZE, command_timeout=STATEMENT_TIMEOUT_S,
                **self.settings.connect_kwargs())
        except Exception as exc:  # noqa: BLE001 - any failure: one line, then stop
            raise ConfigError(f"store: cannot connect to {where}: {_reason(exc)}") from None
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as db:
                recovery = await self._prepare(db)
        except BaseException as exc:
            await self._close_pool()
            if isinstance(exc, Exception) and not isinstance(exc, ConfigError):
                raise ConfigError(f"store: cannot open {where}: {_reason(exc)}") from None
            raise
        self._start_commits(recovery)
        self.node.start()
        return recovery

    async def _prepare(self, db: Db) -> Recovery:
        """Make or check the schema, join the cluster, and say what a new node
        recovers (nothing it holds: the recent events and the schedule marks)."""
        version = await sql.create_schema(db, self.settings.schema)
        if version > sql.SCHEMA_VERSION:
            raise ConfigError(
                f"store: schema {self.settings.schema} was made by a newer jobmonitor "
                f"(version {version}, this one knows {sql.SCHEMA_VERSION}): upgrade it")
        await self.node.register(db)
        return Recovery(await sql.last_number(db), [],
                        await sql.recent_events(db, TASK_LOG_SIZE), await sql.schedule_marks(db))

    async def close(self, *, keep_lock: bool = False) -> None:
        await self.node.stop()
        if self._refill is not None:
            self._refill.cancel()
        await self._stop_commits()
        if self._pool is not None:
            try:
                await self.call(self.node.leave)
            except (StoreUnavailable, asyncpg.PostgresError) as exc:
                log.warning("leaving the cluster failed (%s): the others take this node's "
                            "jobs once its lease ends", exc)
            await self._close_pool()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT_S)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    def release_lock(self) -> None:
        """No lock: nodes share the store (a job is fenced by its holder and epoch)."""

    # -- calling the database ----------------------------------------------------------

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """``await func(connection, *args)`` on one of the pool's connections.

        Raises:
            StoreUnavailable: the database cannot be used now (down, unreachable, slow).
        """
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT_S) as db:
                return await func(db, *args)
        except Exception as exc:
            refusal = unavailable(exc)
            if refusal is None:
                raise  # a bug: logged in full by whoever answers the command
            self._outage.failed(exc, 1, expected=True)
            raise refusal from exc

    def worked(self) -> None:
        """A statement went through (a heartbeat): a spell of failures has ended."""
        self._outage.worked()

    # -- writing ----------------------------------------------------------------------

    async def add(self, job: Recordable) -> None:
        await self._add(job, None, 0)

    async def add_held(self, job: Recordable) -> None:
        await self._add(job, self.node.node_id, 1)

    async def _add(self, job: Recordable, holder: str | None, epoch: int) -> None:
        number = int(job.transaction_id[1:])
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
        releases, self._releases = self._releases, {}
        if not (batch.rows or batch.updates or releases):
            return
        try:
            pool = self._pool
            if pool is None:
                raise StoreUnavailable("the store is closed")
            async with pool.acquire(timeout=CONNECT_TIMEOUT_S) as db, db.transaction():
                outcome = await self._write(db, batch, releases)
        except BaseException:
            for number, epoch in releases.items():
                self._releases.setdefault(number, epoch)
            raise
        self._written(batch, *outcome)

    async def _write(self, db: Db, batch: Batch, releases: dict[int, int]
                     ) -> tuple[dict[int, str], set[int], list[int], dict[int, str]]:
        """One commit's statements.  Returns the new jobs left out for their job token
        (number -> the winner's transaction ID), the jobs fenced off, the jobs let
        go, and the status written of each job."""
        epochs = self.epochs
        rows = []
        for row in batch.rows:
            holder, epoch = epochs.get(row[0], (None, 0))
            rows.append((*row, None if row[6] in FINAL else holder, epoch))
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
            released = [r[0] for r in await db.fetch(
                sql.RELEASE, list(releases), list(releases.values()), self.node.node_id)]
        statuses = {row[0]: row[6] for row in rows if row[0] not in left_out}
        statuses.update((update[0], update[1]) for update in updates
                        if update[0] not in left_out)
        work = bool(released) or any(row[23] is None and row[6] in _WAITING for row in rows
                               if row[0] not in left_out)
        channels, payloads = self._notices(batch, statuses, work)
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
        updates.extend((*(row[i] for i in _UPDATE_FIELDS), row[23], row[24])
                       for row in skipped if row[0] in there)
        lost = [row for row in skipped if row[0] not in there]
        owners = await sql.token_owners(db, [(row[4], row[5] or "") for row in lost])
        return {row[0]: transaction_id_of(owners.get((row[4], row[5] or ""), 0))
                for row in lost}

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
        if fenced:
            log.warning("jobs taken over by another node while this one was cut off: %s",
                        ", ".join(map(transaction_id_of, sorted(fenced))))
            asyncio.get_running_loop().call_soon(
                self.node.hooks.lost, [transaction_id_of(number) for number in sorted(fenced)])

    async def flush(self) -> None:
        if not self._releases or self._dirty:
            await super().flush()
            return
        assert self._loop is not None  # (releases are written by a commit too)
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._start_commit()
        await waiter

    def release(self, transaction_id: str) -> None:
        number = number_of(transaction_id)
        holding = self.epochs.get(number) if number is not None else None
        if number is None or holding is None or holding[0] != self.node.node_id:
            return
        self._releases[number] = holding[1]
        self._start_commit()

    # -- transaction numbers ------------------------------------------------------------

    def take_number(self) -> int | None:
        if len(self._numbers) <= NUMBER_BLOCK // 2 and self._refill is None \
                and self._loop is not None:
            self._refill = self._loop.create_task(self._refill_numbers())
        return self._numbers.popleft() if self._numbers else None

    async def _refill_numbers(self) -> None:
        try:
            await self.more_numbers()
        except (StoreUnavailable, RequestError) as exc:
            log.debug("taking transaction numbers ahead failed: %s", exc)
        finally:
            self._refill = None

    async def more_numbers(self) -> None:
        async with self._numbers_lock:
            if len(self._numbers) > NUMBER_BLOCK // 2:
                return
            try:
                numbers = await self.call(sql.take_numbers, NUMBER_BLOCK)
            except asyncpg.SequenceGeneratorLimitExceededError:
                raise RequestError(Reply.SERVER_BUSY,
                                   "the cluster has used up its transaction numbers") from None
            self._numbers.extend(numbers)

    # -- holding jobs, and asking their holders --------------------------------------------

    async def claim(self, limit: int, queues: Sequence[str] | None = None) -> list[JobRecord]:
        if limit <= 0 or (queues is not None and not queues):
            return []
        claimed = await self.call(sql.claim, self.node.node_id, limit, queues, time.time())
        for record, epoch in claimed:
            self.hold(record, epoch)
        return [record for record, _ in claimed]

    async def take(self, transaction_id: str) -> JobRecord | None:
        number = number_of(transaction_id)
        if number is None:
            return None
        taken = await self.call(sql.take, self.node.node_id, number, self.node.lease_s)
        if taken is None:
            return None
        record, epoch = taken
        self.hold(record, epoch)
        return record  # type: ignore[no-any-return]

    async def request(self, transaction_id: str, action: Action) -> bool:
        number = number_of(transaction_id)
        if number is None:
            return False
        holder = await self.call(sql.request, number, action, self.node.lease_s,
                                 self.settings.channel("control"))
        return holder is not None

    async def wait_lines(self, transaction_id: str, stored_lines: int, timeout: float) -> None:
        await self.node.wait_lines(transaction_id, stored_lines, timeout)

    def attach(self, hooks: Any) -> None:
        self.node.hooks = hooks

    async def nodes(self) -> list[NodeInfo]:
        rows = await self.call(sql.live_nodes, self.node.lease_s)
        return [NodeInfo(*row) for row in rows]

    # -- reading and deleting -------------------------------------------------------------

    async def load(self, transaction_id: str) -> JobRecord | None:
        number = number_of(transaction_id)
        if number is None:
            return None
        records = await self.call(sql.select_records, "number = $1", number)
        return records[0] if records else None

    async def find_token(self, identity: str, job_token: str) -> str | None:
        found: str | None = await self.call(sql.find_token, identity, job_token)
        return found

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        number = number_of(transaction_id)
        if number is None:
            return []
        lines: list[bytes] = await self.call(sql.read_lines, number, from_line, limit)
        return lines

    async def list_records(self, identity: str | None, after: int,
                           limit: int) -> Sequence[JobRecord]:
        records: list[JobRecord] = await self.call(sql.list_page, identity, after, limit)
        return records

    async def list_active(self, identity: str | None, after: int,
                          limit: int) -> Sequence[JobRecord]:
        async def page(db: Db) -> list[JobRecord]:
            return await sql.list_page(db, identity, after, limit, active=True)
        records: list[JobRecord] = await self.call(page)
        return records

    async def recent_events(self, limit: int) -> list[TaskEvent]:
        events: list[TaskEvent] = await self.call(sql.recent_events, limit)
        return events

    async def delete(self, transaction_id: str) -> None:
        number = number_of(transaction_id)
        if number is not None:
            await self.call(sql.delete_numbers, [number])
            self.worked()

    async def purge(self, finished_before: float) -> int:
        numbers: list[int] = await self.call(sql.finished_before_numbers, finished_before)
        if numbers:
            await self.call(sql.delete_numbers, numbers)
        return len(numbers)

    async def check(self) -> list[str]:
        from .check import check_schema  # (only the check command needs it)
        return await check_schema(self.settings)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
